"""Typed, frozen configuration of a stac2cube run.

One root :class:`Config` with one class per part. Each field carries its documentation in
``metadata["doc"]``; :func:`config_reference` renders those into the configuration reference
(``docs/configuration.md`` is generated from it and checked by the tests).

A config is loaded from one YAML (or JSON) file with :func:`load_config`; unknown keys, wrong
types and invalid values raise :class:`~stac2cube.errors.ConfigError` naming the key and what is
allowed. ``--set section.key=value`` overrides from the CLI go through :func:`apply_overrides`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError
from .fields import FrozenMap, build, coerce, doc, to_dict, type_name
from .steps.cloudmask import CloudMaskConfig
from .steps.coreg import CoregConfig
from .steps.registry import StepPlugin, get_step, registered_steps
from .steps.superres import SuperResConfig

T = TypeVar("T")

OutputDType = Literal["int16", "uint16", "float32"]
GroupBy = Literal["scene", "solar_day"]


@dataclass(frozen=True)
class SourceConfig:
    """Where the Sentinel-2 scenes come from."""

    api: str | None = doc(
        "URL of a STAC API (any pystac-client endpoint), e.g. "
        "`https://earth-search.aws.element84.com/v1`. Exactly one of `api` and `path` is set.",
        None,
    )
    path: str | None = doc(
        "A local static STAC catalog (`catalog.json`/`collection.json`), an ItemCollection / "
        "FeatureCollection JSON file, or a single item JSON file.",
        None,
    )
    collection: str = doc("Collection of the L2A scenes.", "sentinel-2-l2a")
    l1c_collection: str | None = doc(
        "Collection of the matching L1C scenes (the cloud-masking step pairs each L2A scene with "
        "its L1C twin: same MGRS tile, acquired within a minute). None: no L1C.",
        "sentinel-2-l1c",
    )
    l1c_path: str | None = doc(
        "With `path`: a local catalog / item collection holding the L1C twins (default: search "
        "`path` itself for `l1c_collection`).",
        None,
    )
    l1c_requester_pays: bool | None = doc(
        "Read the L1C twins' assets with GDAL's `AWS_REQUEST_PAYER=requester` (S3 buckets where "
        "the reader pays the transfer, such as Earth Search v1's `s3://sentinel-s2-l1c`; needs "
        "AWS credentials in the environment). None: on when the twin says "
        "`storage:requester_pays: true` or lies in a known requester-pays bucket. Applies to the "
        "L1C reads only.",
        None,
        since="0.2.0",
    )
    max_cloud_cover: float | None = doc(
        "Optional search-time prefilter on the provider's scene-level `eo:cloud_cover` (%). "
        "Sent as CQL2 `filter` where the API declares it, else as `query`, and always re-checked "
        "on the client.",
        None,
    )
    max_items: int | None = doc("Stop after this many scenes (None: all).", None)
    timeout: float = doc("Seconds before an HTTP request to the API times out.", 60.0)
    max_retries: int = doc("Retries of a failed HTTP request (with back-off).", 3)
    headers: Mapping[str, str] = doc(
        "Extra HTTP headers for the API (e.g. an auth token).", default_factory=dict
    )
    sign: Literal["planetary-computer"] | None = doc(
        "Sign asset hrefs of found items: `planetary-computer` uses the `planetary-computer` "
        "package (Planetary Computer's blob storage needs signed URLs).",
        None,
    )

    def __post_init__(self) -> None:
        if (self.api is None) == (self.path is None):
            raise ConfigError(
                "source: set exactly one of `api` (a STAC API URL) and `path` (a local catalog "
                "or item collection file)"
            )
        if self.max_cloud_cover is not None and not 0 <= self.max_cloud_cover <= 100:
            raise ConfigError("source.max_cloud_cover must be a percentage between 0 and 100")
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError("source.max_items must be at least 1")


@dataclass(frozen=True)
class AOIConfig:
    """The area of interest."""

    bbox: tuple[float, float, float, float] | None = doc(
        "`[west, south, east, north]` in degrees (EPSG:4326). Exactly one of `bbox` and "
        "`geojson` is set.",
        None,
    )
    geojson: str | None = doc(
        "Path of a GeoJSON file (Geometry, Feature or FeatureCollection, EPSG:4326); the union "
        "of its geometries is the AOI. Relative paths are relative to the config file.",
        None,
    )

    def __post_init__(self) -> None:
        if (self.bbox is None) == (self.geojson is None):
            raise ConfigError("aoi: set exactly one of `bbox` and `geojson`")
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ConfigError(
                    f"aoi.bbox {list(self.bbox)} is not [west, south, east, north] in degrees "
                    "with west < east and south < north"
                )


@dataclass(frozen=True)
class TimeConfig:
    """The time range of the search (inclusive)."""

    start: dt.date = doc("First day (YYYY-MM-DD).")
    end: dt.date = doc("Last day (YYYY-MM-DD), inclusive.")

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ConfigError(f"time: end {self.end} is before start {self.start}")

    @property
    def interval(self) -> str:
        """The RFC 3339 interval string for STAC searches."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"


@dataclass(frozen=True)
class GridConfig:
    """The one target grid every band of every scene is written on."""

    crs: str = doc(
        "Target CRS (e.g. `EPSG:32633`), or `auto`: the UTM zone that covers most of the AOI.",
        "auto",
    )
    resolution: float = doc("Pixel size in CRS units (metres for UTM).", 10.0)

    def __post_init__(self) -> None:
        if self.resolution <= 0:
            raise ConfigError("grid.resolution must be positive")


@dataclass(frozen=True)
class RadiometryOverrideConfig:
    """Force scale/offset for one source collection (when its metadata is known to be wrong)."""

    scale: float | None = doc("reflectance = DN × scale + offset; None keeps the item's.", None)
    offset: float | None = doc("Offset in reflectance units (e.g. -0.1 for -1000 DN).", None)


@dataclass(frozen=True)
class RadiometryConfig:
    """Radiometric harmonisation to surface reflectance, decided per item."""

    overrides: Mapping[str, RadiometryOverrideConfig] = doc(
        "Per source collection id, a forced scale/offset. Use only for providers whose metadata "
        "is wrong (see docs/radiometry.md).",
        default_factory=dict,
    )


@dataclass(frozen=True)
class OutputConfig:
    """The static STAC catalog and COGs that are written."""

    catalog: str = doc(
        "Directory of the output catalog (created if missing). Relative paths are relative to "
        "the config file.",
        "./stac2cube-catalog",
    )
    collection_id: str = doc("Id of the output collection.", "sentinel-2-l2a-ard")
    title: str = doc("Title of the output collection.", "Sentinel-2 L2A analysis-ready data")
    description: str = doc(
        "Description of the output collection.",
        "Sentinel-2 L2A surface reflectance harmonised per item and written as COGs by stac2cube.",
    )
    license: str = doc("License of the output collection (SPDX id or `other`).", "other")
    dtype: OutputDType = doc(
        "Storage type of reflectance COGs: `int16` (scale 1e-4, offset 0, nodata -32768), "
        "`uint16` (ESA's >= 04.00 encoding: scale 1e-4, offset -0.1, nodata 0; reflectance below "
        "-0.0999 clips), or `float32` (reflectance itself, nodata NaN). Scale/offset/nodata are "
        "recorded in each asset's `raster:bands` and in the GeoTIFF.",
        "int16",
    )
    cog_profile: str = doc("rio-cogeo profile name (deflate, zstd, lzw, ...).", "deflate")
    blocksize: int = doc("COG internal tile size in pixels.", 512)
    overview_resampling: str = doc("Resampling for the reflectance overviews.", "average")
    native_resolution: bool = doc(
        "Write each band at its native resolution (10 m bands at 10 m, 20 m bands and SCL at "
        "20 m, 60 m bands at 60 m; never finer than `grid.resolution`: 10, 20, 30 or 60 m) "
        "instead of all on the target grid. The target grid's edges are then snapped outward to "
        "multiples of 60 m, so that the 20 m and 60 m grids cover it exactly; each asset carries "
        "its own `proj:shape` and `proj:transform` and `open_cube` loads them onto one grid "
        "(docs/cube.md). With steps, they run on the target grid, coarser bands repeated (not "
        "interpolated), and each band is written as the mean over its own pixels (nodata where "
        "any target pixel is: a source pixel no step changed comes back as it was); the layers "
        "steps add stay on the target grid. `run.block_size` must then cover whole pixels of "
        "every band (a multiple of 6 at 10 m with 60 m bands, e.g. 1536).",
        False,
        since="0.2.0",
    )
    virtual_cube: bool = doc(
        "Commit one Icechunk snapshot of the virtual Zarr cube per run (`<catalog>/_cube/`), "
        "opened, at HEAD or at any earlier run, by `stac2cube.open_virtual_cube` (docs/cube.md).",
        True,
        since="0.3.0",
    )
    kerchunk: bool = doc(
        "Write kerchunk references per item (`<catalog>/_kerchunk/<item>.json`), the kerchunk "
        "export of the virtual cube that `stac2cube.open_kerchunk_cube` opens.",
        True,
    )

    def __post_init__(self) -> None:
        from rio_cogeo.profiles import cog_profiles

        if self.cog_profile not in cog_profiles:
            raise ConfigError(
                f"output.cog_profile {self.cog_profile!r} is not a rio-cogeo profile; "
                f"choose one of {sorted(cog_profiles)}"
            )
        if self.blocksize % 16 or not 64 <= self.blocksize <= 4096:
            raise ConfigError("output.blocksize must be a multiple of 16 between 64 and 4096")


@dataclass(frozen=True)
class StepsConfig:
    """Processing steps, run after harmonisation in the order below (steps of other packages
    by their plug-in's rank, see docs/steps.md); a step runs when its section is present
    (``steps: {cloudmask: {}}`` runs cloud masking with its defaults)."""

    cloudmask: CloudMaskConfig | None = doc("The `cloudmask` step; None: not run.", None)
    coreg: CoregConfig | None = doc("The `coreg` step; None: not run.", None)
    superres: SuperResConfig | None = doc("The `superres` step; None: not run.", None)
    plugins: Mapping[str, Any] = field(default_factory=FrozenMap, metadata={"internal": True})
    """The sections of the other registered steps (:mod:`stac2cube.steps.registry`), by name,
    each of its plug-in's config class; written as ``steps.<name>`` like the three above."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", FrozenMap(self.plugins))
        for name, cfg in self.plugins.items():
            if name in _typed_fields(StepsConfig):
                raise ConfigError(f"steps.{name} is a field of its own, not one of `plugins`")
            plugin = get_step(name)
            if not isinstance(cfg, plugin.config):
                raise ConfigError(
                    f"steps.{name}: expected a {plugin.config.__name__}, got {type(cfg).__name__}"
                )

    @classmethod
    def from_section(cls, data: Mapping[str, Any], where: str = "steps") -> StepsConfig:
        """The ``steps`` section: each key a registered step, parsed into its plug-in's config
        class (null: the step does not run)."""
        typed: dict[str, Any] = {}
        plugins: dict[str, Any] = {}
        for name, value in data.items():
            plugin = get_step(str(name))
            if value is not None:
                cfg = coerce(value, plugin.config, f"{where}.{name}")
                (typed if name in _typed_fields(cls) else plugins)[str(name)] = cfg
        return cls(**typed, plugins=plugins)

    def sections(self) -> dict[str, Any]:
        """Every step's section by name, the three typed ones first (None: not run)."""
        return {name: getattr(self, name) for name in _typed_fields(self)} | dict(self.plugins)

    def configured(self) -> list[tuple[StepPlugin[Any], Any]]:
        """``(plugin, section)`` of every step that runs, in run order."""
        steps = [(get_step(n), cfg) for n, cfg in self.sections().items() if cfg is not None]
        return sorted(steps, key=lambda step: (step[0].order, step[0].name))


def _typed_fields(cls: Any) -> tuple[str, ...]:
    """The configuration keys of a config class (internal fields left out)."""
    return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


@dataclass(frozen=True)
class SlurmConfig:
    """A SLURM cluster through dask-jobqueue (``run.executor: slurm``). The catalog directory must
    be on a filesystem the compute nodes share (workers write each scene's files there)."""

    queue: str | None = doc("SLURM partition (`#SBATCH -p`).", None)
    account: str | None = doc("Account/project to charge (`#SBATCH -A`).", None)
    cores: int = doc("Cores per job.", 8)
    processes: int | None = doc(
        "Dask worker processes per job (default: one single-threaded worker per core).", None
    )
    memory: str = doc(
        "Memory per job, e.g. `32GiB`: what each job asks SLURM for (`#SBATCH --mem`). With "
        "`run.memory_limit: auto` it is split evenly between the job's worker processes, each "
        "one's Dask memory limit (`32GiB` and 8 processes: 4 GiB per worker).",
        "32GiB",
    )
    walltime: str = doc("Wall time per job, `HH:MM:SS`.", "02:00:00")
    jobs: int = doc("Jobs to start; the cluster has `jobs × processes` workers.", 4)
    job_extra_directives: tuple[str, ...] = doc(
        "Extra `#SBATCH` options, e.g. `--gres=gpu:1` or `--constraint=...`.", ()
    )
    job_script_prologue: tuple[str, ...] = doc(
        "Shell lines run before each worker starts (`module load ...`, "
        "`source venv/bin/activate`).",
        (),
    )
    local_directory: str | None = doc("Node-local scratch directory of the workers.", None)
    log_directory: str | None = doc("Directory for the SLURM output/error files.", None)
    python: str | None = doc(
        "Python on the compute nodes (default: the interpreter running stac2cube).", None
    )
    interface: str | None = doc("Network interface of the scheduler, e.g. `ib0`.", None)

    def __post_init__(self) -> None:
        if self.cores < 1 or self.jobs < 1:
            raise ConfigError("run.slurm.cores and run.slurm.jobs must be at least 1")
        if self.processes is not None and not 1 <= self.processes <= self.cores:
            raise ConfigError("run.slurm.processes must be between 1 and run.slurm.cores")
        parse_size(self.memory, "run.slurm.memory")

    def cluster_kwargs(self, worker_memory: int | None = None) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster``. ``worker_memory``: each worker's
        memory limit in bytes (``run.memory_limit``; None: ``memory`` split between the
        processes); the jobs still ask SLURM for ``memory``."""
        import sys

        processes = self.processes or self.cores
        kw: dict[str, Any] = {
            "cores": self.cores,
            "processes": processes,
            "memory": self.memory,
            "walltime": self.walltime,
            "job_extra_directives": list(self.job_extra_directives),
            "job_script_prologue": list(self.job_script_prologue),
            "python": self.python or sys.executable,
            "scheduler_options": {"dashboard": False, "dashboard_address": ":0"},
        }
        for key in ("queue", "account", "local_directory", "log_directory", "interface"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if worker_memory is not None:
            # dask-jobqueue gives each worker `memory / processes`; `job_mem` is the request
            kw["memory"] = f"{worker_memory * processes}B"
            kw["job_mem"] = f"{-(-parse_size(self.memory, 'run.slurm.memory') // 2**20)}M"
        return kw


@dataclass(frozen=True)
class RunConfig:
    """How a run behaves."""

    strict: bool = doc(
        "Exit non-zero if any scene failed (default: only if none succeeded).", False
    )
    reprocess_failed: bool = doc("Retry scenes recorded as failed in earlier runs.", True)
    executor: str = doc(
        "Where scenes run: `local` (a Dask LocalCluster on this machine: one single-threaded "
        "worker process per core, never more than there are scenes; a single scene runs in this "
        "process), `serial` (one after the other in this process), `slurm` "
        "(a SLURM cluster through dask-jobqueue, see `run.slurm`) or the address of a running "
        "Dask scheduler (`tcp://host:8786`). The catalog is always written by the client alone.",
        "local",
    )
    workers: int | None = doc("Workers of the `local` cluster (default: the CPU count).", None)
    memory_limit: str | int = doc(
        "Memory limit of each Dask worker: a size (`4GiB` = 4 × 2³⁰ bytes, `4GB` = 4 × 10⁹, "
        "`800MB`) or a number of bytes, at least 256 MiB; or `auto`. `local`: `auto` divides the "
        "machine's memory between the workers; a set limit also puts a run with one scene on a "
        "one-worker cluster, so that it holds. `slurm`: `auto` divides `run.slurm.memory` "
        "between a job's worker processes; a set limit times `run.slurm.processes` must fit in "
        "`run.slurm.memory`. A running scheduler: its workers' own limits apply. Dask kills a "
        "worker above 95 % of its limit; its scene fails as out of memory (docs/hpc.md).",
        "auto",
    )
    block_size: int = doc(
        "A scene is read, harmonised, processed and written in blocks of this many pixels "
        "square (of the grid each band is written on), so a worker's memory depends on it, not "
        "on the AOI: about 25 MB per million pixels of a block (100 MB at 2048) without steps. "
        "A multiple of `output.blocksize`; 0: each scene is held whole. Without steps the pixels "
        "written are the same (docs/catalog.md). A scene with steps is streamed when it is "
        "larger than one block and every step can run in blocks (cloudmask, coreg; not "
        "superres): its scene-wide analyses then read coarse grids, windows and tiles "
        '(docs/architecture.md, "Steps in blocks"); else it is held whole. There the '
        "geometric shadows and the global shift's windows come from coarse grids and the "
        "local tie points' anomalies from tiles, so such a scene can differ slightly from one "
        "held whole; its provenance says it was streamed (the harmonise record's "
        "`parameters.blocks`).",
        2048,
        execution=True,
    )
    slurm: SlurmConfig = doc("The SLURM cluster (`executor: slurm`).", default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        ok = self.executor in ("serial", "local", "slurm") or self.executor.startswith(
            ("tcp://", "tls://", "inproc://", "ucx://")
        )
        if not ok:
            raise ConfigError(
                f"run.executor {self.executor!r}: use serial, local, slurm or a Dask scheduler "
                "address "
                "such as tcp://host:8786"
            )
        if self.workers is not None and self.workers < 1:
            raise ConfigError("run.workers must be at least 1")
        limit = self.memory_limit_bytes
        if limit is not None and limit < MIN_WORKER_MEMORY:
            raise ConfigError(
                f"run.memory_limit {self.memory_limit!r} is {limit / 2**20:.0f} MiB: give at "
                "least 256MiB (a worker takes about 200 MB with the pipeline loaded), e.g. 4GiB"
            )
        if self.executor == "slurm" and limit is not None:
            processes = self.slurm.processes or self.slurm.cores
            job = parse_size(self.slurm.memory, "run.slurm.memory")
            if limit * processes > job:
                raise ConfigError(
                    f"run.memory_limit {self.memory_limit} × {processes} worker processes per "
                    f"job is more than run.slurm.memory {self.slurm.memory}: raise "
                    f"run.slurm.memory to {-(-limit * processes // 2**30)}GiB or lower "
                    "run.memory_limit or run.slurm.processes"
                )

    @property
    def memory_limit_bytes(self) -> int | None:
        """``memory_limit`` in bytes; None for ``auto``."""
        if self.memory_limit == "auto":
            return None
        return parse_size(self.memory_limit, "run.memory_limit")


MIN_WORKER_MEMORY = 256 * 2**20
"""The smallest ``run.memory_limit`` (a smaller one is a typo: a worker cannot even start)."""


def parse_size(value: str | int, key: str) -> int:
    """A size in Dask's syntax (``4GiB``, ``800 MB``) or a number of bytes, in bytes; a
    ConfigError naming ``key`` when it is none."""
    from dask.utils import parse_bytes

    try:
        size = int(parse_bytes(value))
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise ConfigError(
            f"{key}: {value!r} is not a size: write e.g. 4GiB (4 × 2³⁰ bytes), 4GB (4 × 10⁹), "
            "800MB, or a number of bytes"
        )
    return size


DEFAULT_BANDS: tuple[str, ...] = (
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B11",
    "B12",
    "SCL",
)


@dataclass(frozen=True)
class Config:
    """Root configuration of a stac2cube run."""

    source: SourceConfig = doc("Where the scenes come from.")
    aoi: AOIConfig = doc("The area of interest.")
    time: TimeConfig = doc("The time range.")
    bands: tuple[str, ...] = doc(
        "Bands to write, by ESA name (`B04`, `B8A`, `SCL`) or common name (`red`, `nir08`).",
        DEFAULT_BANDS,
    )
    grid: GridConfig = doc("Target grid.", default_factory=GridConfig)
    radiometry: RadiometryConfig = doc(
        "Radiometric harmonisation.", default_factory=RadiometryConfig
    )
    steps: StepsConfig = doc("Processing steps.", default_factory=StepsConfig)
    output: OutputConfig = doc("Output catalog and COGs.", default_factory=OutputConfig)
    run: RunConfig = doc("Run behaviour.", default_factory=RunConfig)
    base_dir: Path = field(default=Path("."), metadata={"internal": True}, compare=False)

    def __post_init__(self) -> None:
        from .bands import S2_BANDS, normalize_band_names

        if not self.bands:
            raise ConfigError("bands: list at least one band")
        object.__setattr__(self, "bands", tuple(normalize_band_names(self.bands)))
        for plugin, section in self.steps.configured():
            if plugin.validate is not None:
                plugin.validate(section, self)
        block, tile = self.run.block_size, self.output.blocksize
        if block < 0 or block % tile:
            raise ConfigError(
                f"run.block_size {block} must be a multiple of output.blocksize ({tile}), e.g. "
                f"{4 * tile}, or 0 to hold each scene whole"
            )
        if self.output.native_resolution:
            res = self.grid.resolution
            ratios = [60 / res] + [max(res, S2_BANDS[b].resolution) / res for b in self.bands]
            if any(abs(r - round(r)) > 1e-9 for r in ratios):
                raise ConfigError(
                    f"output.native_resolution needs a grid.resolution whose pixels tile the "
                    f"native grids of the bands (10, 20, 30 or 60 m), not {res:g} m"
                )
            # with steps, the blocks are on the target grid: each must cover whole band pixels
            cell = math.lcm(*(round(r) for r in ratios[1:]))
            if block % cell and any(True for _ in self.steps.configured()):
                fits = math.lcm(cell, tile)
                raise ConfigError(
                    f"run.block_size {block} must be a multiple of {cell} with "
                    "output.native_resolution and steps (a block must cover whole pixels of "
                    f"every band's own grid), e.g. {fits * max(1, round(block / fits))}"
                )

    def resolve_path(self, p: str) -> Path:
        """A path of the config, made absolute against the config file's directory."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def catalog_dir(self) -> Path:
        """Absolute directory of the output catalog."""
        return self.resolve_path(self.output.catalog)

    def processing_dict(self, *, legacy: bool = False) -> dict[str, Any]:
        """The parts of the config that determine the pixels of an output item: options added
        later while they keep their default, execution-only settings and paths hashed by
        content are left out (see :func:`to_dict`); each step section's ``content_for_hash``
        adds what those paths hold (:attr:`hashed_content`). ``legacy``: as the earlier rule
        made it (:attr:`legacy_config_hash`)."""
        d = to_dict(self, for_hash=True, legacy=legacy)
        out = {k: d[k] for k in ("aoi", "bands", "grid", "radiometry", "steps")} | {
            "output": {k: v for k, v in d["output"].items() if k in _PIXEL_OUTPUT_KEYS}
        }
        if not legacy:
            for name, content in self.hashed_content.items():
                out["steps"][name] = {**out["steps"][name], "content_for_hash": dict(content)}
        return out

    @functools.cached_property
    def hashed_content(self) -> Mapping[str, Mapping[str, Any]]:
        """Per step section with a ``content_for_hash(resolve)`` hook (``superres``: the SHA-256
        of the model's weight files), what it puts into the hash in place of its paths. Read
        once per config; a ConfigError when the files cannot be read."""
        out: dict[str, Mapping[str, Any]] = {}
        for name, section in self.steps.sections().items():
            hook = getattr(section, "content_for_hash", None)
            if section is not None and hook is not None:
                content = hook(self.resolve_path)
                if content:
                    out[name] = content
        return out

    @functools.cached_property
    def config_hash(self) -> str:
        """sha256 of :meth:`processing_dict`; an item built with other parameters is stale.

        Computed once per config (it is frozen): a run compares it with every catalog item."""
        return _sha256_json(self.processing_dict())

    @functools.cached_property
    def legacy_config_hash(self) -> str:
        """The hash the earlier rule gave this config, which items written before it carry:
        every field's value in, execution-only settings and model paths included, the model's
        files not. A configuration without such fields hashes the same under both rules; the
        planner (:mod:`stac2cube.pipeline.plan`) accepts either (docs/updates.md)."""
        return _sha256_json(self.processing_dict(legacy=True))


_PIXEL_OUTPUT_KEYS = ("dtype", "cog_profile", "blocksize", "native_resolution")
"""The keys of ``output`` that shape what is written (in the hash; ``native_resolution`` only
when set, see ``since``)."""


def _sha256_json(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Loading (dict -> dataclass with strict checking) and dumping
# --------------------------------------------------------------------------------------------


def config_from_dict(data: Mapping[str, Any], *, base_dir: Path | str = ".") -> Config:
    """Build a :class:`Config` from a plain mapping (as read from YAML)."""
    if not isinstance(data, Mapping):
        raise ConfigError("the config file must hold a mapping of sections (source, aoi, ...)")
    cfg = build(Config, data, "")
    return dataclasses.replace(cfg, base_dir=Path(base_dir).resolve())


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML/JSON config file and apply ``section.key=value`` overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    data = apply_overrides(data, overrides)
    return config_from_dict(data, base_dir=path.parent)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides (values parsed as YAML)."""
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    for ov in overrides:
        key, sep, raw = ov.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {ov!r} is not of the form section.key=value")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return out


_HASH_NOTES: Mapping[Any, str] = {
    "execution": " *Execution only: not in the configuration hash.*",
    "content": " *In the configuration hash by the content of its files, not the path.*",
}


def config_reference() -> str:
    """Markdown reference of every config key, generated from the field docs."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `stac2cube.config.config_reference()`; do not edit by hand. -->",
        "",
        "A run is configured by one YAML file. Every key below is optional unless its default "
        "is *required*. Override any key from the CLI with `--set section.key=value`.",
        "",
    ]

    def section(cls: Any, prefix: str, level: int) -> None:
        lines.extend([f"{'#' * level} `{prefix or 'top level'}`", "", (cls.__doc__ or "").strip()])
        lines.extend(["", "| key | type | default | meaning |", "|---|---|---|---|"])
        if cls is StepsConfig:  # a row per registered step, documented by its plug-in
            for p in registered_steps():
                tname = f"{type_name(p.config)} or None"
                lines.append(f"| `{prefix}.{p.name}` | {tname} | `null` | {p.doc} |")
            lines.append("")
            return
        hints = typing.get_type_hints(cls)
        nested = []
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            key = f"{prefix}.{f.name}" if prefix else f.name
            if dataclasses.is_dataclass(tp):
                nested.append((tp, key))
                default = "see below"
            elif f.default is not dataclasses.MISSING:
                default = f"`{json.dumps(to_dict(f.default))}`"
            elif f.default_factory is not dataclasses.MISSING:
                default = f"`{json.dumps(to_dict(f.default_factory()))}`"
            else:
                default = "*required*"
            tname = type_name(tp).replace("|", "or")
            meaning = f.metadata.get("doc", "") + _HASH_NOTES.get(f.metadata.get("hash"), "")
            lines.append(f"| `{key}` | {tname} | {default} | {meaning} |")
        lines.append("")
        for tp, key in nested:
            section(tp, key, 2)

    section(Config, "", 2)
    section(RadiometryOverrideConfig, "radiometry.overrides.<collection>", 2)
    for plugin in registered_steps():
        section(plugin.config, f"steps.{plugin.name}", 2)
    return "\n".join(lines).rstrip() + "\n"
