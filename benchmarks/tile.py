"""Whole Sentinel-2 tiles: seconds and peak memory of a 10980 x 10980 px scene, end to end.

A generated tile (the sample's 12 L2A bands and SCL, and its L1C twin with 13 bands, each at
its native resolution) goes through ``stac2cube.run`` from a local item collection, each
measurement in its own subprocess under a memory cap (``--cap-gib``; a run that does not fit is
recorded as failed with its peak, never left to exhaust the machine):

* four configurations, on the whole tile and on its sixteenth (a centred AOI of a quarter of
  the side): ``none`` (no step), ``cloudmask_global`` (cloud mask + global co-registration),
  ``cloudmask_local`` (cloud mask + local co-registration), and ``cloudmask_global_native``
  (the second with every band written at its native resolution, ``output.native_resolution``;
  its sixteenth's grid grows to the next 60 m: 2748 px for 2745);
* the floor: rio-cogeo alone on the same bands, grid and profile (``benchmarks/ingest.py``);
* two tile scenes on a local Dask cluster of 2 workers against 1 (no step), with the CPU
  seconds of each run split between the client's process (client and scheduler) and the
  workers, and the speedup the two-worker run's CPU work allows on this machine's cores;
* ``reference``: the co-registration reference built from candidate scenes (``clearest`` of
  the two tile scenes, each masked by the cloud step), as a first run builds it on the client,
  on the whole tile and on its sixteenth.

``none``, the floor and the Dask runs are repeated (``--repeat``, medians). The tile is
generated block by block (``--gen-block`` px squares, each a sample scene of its own seed and
cloud cover) and streamed into full-size COGs, so generating it needs the memory of one block;
it is kept under ``--data-dir`` for the next run. Keys, figures and limits: docs/benchmarks.md.

    python benchmarks/tile.py --quick   # a quarter tile (2745 px): ~5 min on 2 cores (+2 min once)
    python benchmarks/tile.py           # the full tile: about an hour and more (+20 min once)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from _common import peak_rss_mb

RESULTS = Path(__file__).parent / "results" / "tile.json"
BANDS = ["B02", "B03", "B04", "B08", "B05", "B8A", "B11", "B12", "SCL"]
TILE_PX = 10980
"""A Sentinel-2 MGRS tile: 109.8 km at 10 m."""
QUICK_PX = TILE_PX // 4
GEN_BLOCK_PX = 1098
"""Side of a generated block: a multiple of 6 (the 20 m and 60 m grids tile it exactly) that
divides the tile (10 x 10 blocks)."""
ORIGIN = (499980.0, 5300040.0)
"""Upper-left corner of the generated tile: on the 60 m lattice, as real tiles are."""
REFERENCE_SHIFT_M = (3.5, -2.5)
"""How far the co-registration reference is moved (0.35 px east, 0.25 px south): the step then
measures and applies a shift, as it does on real scenes."""
CONFIGS: dict[str, dict[str, Any]] = {
    "none": {},
    "cloudmask_global": {"cloudmask": {}, "coreg": {"mode": "global"}},
    "cloudmask_local": {"cloudmask": {}, "coreg": {"mode": "local"}},
    "cloudmask_global_native": {"cloudmask": {}, "coreg": {"mode": "global"}},
}
OUTPUT: dict[str, dict[str, Any]] = {"cloudmask_global_native": {"native_resolution": True}}
"""The ``output`` settings of a configuration, where not the defaults."""
SECONDS_PER_MPX = {
    "none": 0.62,
    "cloudmask_global": 1.83,
    "cloudmask_local": 6.46,
    "cloudmask_global_native": 1.83,
    "floor": 0.64,
}
"""Seconds per million pixels on 2 cores (the full tile in ``tile.json``, streamed), for the
estimate printed at the start when no earlier result of this script is at hand."""
DASK_SCENES = 2
REFERENCE_STEPS: dict[str, Any] = {
    "cloudmask": {},
    "coreg": {"mode": "global", "reference": "clearest"},
}
"""The ``reference`` part: a reference built from candidate scenes, not from the file the
configurations match against."""
MIN_AVAILABLE_MB = 2048
"""A measurement is stopped when the machine's available memory falls below this (others work
on it too), whatever its own cap."""


# ------------------------------------------------------------------------------ generation
def worker_generate(root: str, grid_px: int, block_px: int, seed: int) -> dict[str, Any]:
    """Write the tile under ``root``: a ``grid_px`` square scene made of sample scenes of
    ``block_px`` (each of its own seed and cloud cover) streamed block by block into full-size
    COGs, the items made by the sample's own functions, and later dates sharing its pixels."""
    import numpy as np
    import rasterio
    from odc.geo.geobox import GeoBox
    from rasterio.windows import Window

    from stac2cube.io.cog import CogWriter
    from stac2cube.sample import BAND_NAMES, SampleSpec, generate_sample
    from stac2cube.sample.geometry import grid_shape, grid_transform, lonlat, lonlat_bbox
    from stac2cube.sample.stac import date_meta, make_collection, make_item
    from stac2cube.sample.write import write_json

    t0 = time.perf_counter()
    out = Path(root)
    spec = SampleSpec(
        n_dates=1,
        width=grid_px,
        height=grid_px,
        seed=seed,
        origin=ORIGIN,
        cloud_cover=(0.2,),
        nodata_date=None,
    )
    lon_c, lat_c = lonlat(spec, [(grid_px / 2, grid_px / 2)])[0]
    meta = date_meta(spec, 0, lon_c, lat_c)
    first = {
        lv: f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_{lv.upper()}"
        for lv in ("l2a", "l1c")
    }
    writers: dict[tuple[str, str], CogWriter] = {}

    def write(level: str, key: str, res: int, data: np.ndarray, col: int, row: int) -> None:
        """Write ``data`` at 10 m pixel ``(col, row)`` of the ``res`` m COG ``level/key``."""
        if (level, key) not in writers:
            transform = grid_transform(spec, res)
            path = out / level / first.get(level, "") / f"{key}.tif"
            if level == "reference":
                dx, dy = REFERENCE_SHIFT_M
                transform = rasterio.Affine(res, 0, ORIGIN[0] + dx, 0, -res, ORIGIN[1] + dy)
                path = out / "reference_b08.tif"
            writers[level, key] = CogWriter(
                path,
                GeoBox(grid_shape(spec, res), transform, f"EPSG:{spec.epsg}"),
                data.dtype.name,
                nodata=None if level == "reference" else 0,
                blocksize=256,  # as the sample writes its COGs
                overview_resampling="nearest" if key == "scl" else "average",
            )
        f = res // 10
        writers[level, key].write(data, Window(col // f, row // f, data.shape[1], data.shape[0]))

    n = grid_px // block_px
    covers = np.random.default_rng((seed, 17)).uniform(0.0, 0.4, n * n)
    with tempfile.TemporaryDirectory(prefix="tile-block-", dir=out) as tmp:
        for k in range(n * n):
            row, col = (block_px * v for v in divmod(k, n))
            bspec = dataclasses.replace(
                spec,
                width=block_px,
                height=block_px,
                seed=seed * 10_007 + k,
                origin=(ORIGIN[0] + 10.0 * col, ORIGIN[1] - 10.0 * row),
                cloud_cover=(round(float(covers[k]), 3),),
            )
            scene = generate_sample(Path(tmp) / "block", bspec, overwrite=True).scenes[0]
            for level, item in (("l1c", scene.l1c_item), ("l2a", scene.l2a_item)):
                for key, asset in item["assets"].items():
                    if "data" not in asset.get("roles", []):
                        continue
                    with rasterio.open(asset["href"]) as src:
                        write(level, key, int(asset["gsd"]), src.read(1), col, row)
            with rasterio.open(scene.surface_path) as src:
                write("reference", "B08", 10, src.read(BAND_NAMES.index("B08") + 1), col, row)
            shutil.rmtree(Path(tmp) / "block")
            print(f"  block {k + 1}/{n * n} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    for w in writers.values():
        w.close()

    with rasterio.open(out / "l2a" / first["l2a"] / "scl.tif") as src:
        scl = src.read(1)
    cover = 100.0 * float(np.isin(scl, (8, 9, 10)).sum()) / max(int((scl != 0).sum()), 1)
    items: dict[str, list[dict[str, Any]]] = {"l2a": [], "l1c": []}
    for d in range(DASK_SCENES):
        # a later date is the first one's pixels (hard links) under its own date and ids
        m = dataclasses.replace(meta, sensing=meta.sensing + dt.timedelta(days=5 * d))
        l1c_id = f"{m.short}_{spec.tile}_{m.sensing:%Y%m%d}_0_L1C"
        for level in ("l2a", "l1c"):
            layer = scl if level == "l2a" else None
            item = make_item(spec, m, level.upper(), out, layer, False, cover, l1c_id)
            if d:
                (out / level / item["id"]).mkdir(exist_ok=True)
                for p in (out / level / first[level]).iterdir():
                    if not (out / level / item["id"] / p.name).exists():
                        os.link(p, out / level / item["id"] / p.name)
            write_json(out / level / f"{item['id']}.json", item)
            items[level].append(item)
    dates = [it["properties"]["datetime"] for it in items["l2a"]]
    for level in ("l2a", "l1c"):
        coll = make_collection(spec, out, level.upper(), lonlat_bbox(spec), (dates[0], dates[-1]))
        write_json(out / "collections" / f"{coll['id']}.json", coll)
        for count in (1, DASK_SCENES):
            write_json(
                out / f"{level}_items_{count}.json",
                {"type": "FeatureCollection", "features": items[level][:count]},
            )
    inodes = {(s.st_dev, s.st_ino): s.st_size for s in (p.stat() for p in out.rglob("*.tif"))}
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "grid_px": grid_px,
        "block_px": block_px,
        "blocks": n * n,
        "seed": seed,
        "epsg": spec.epsg,
        "origin": list(ORIGIN),
        "scl_cloud_cover_pct": round(cover, 2),
        "dates": dates,
        "disk_mb": round(sum(inodes.values()) / 2**20, 1),
    }


def lonlat_aoi(epsg: int, box: tuple[float, float, float, float]) -> list[float]:
    """A lon/lat bbox whose bounding box in ``epsg`` (as ``stac2cube.grid.target_geobox``
    computes it) snaps to ``box`` (west, south, east, north, metres on the 10 m lattice)."""
    from pyproj import Transformer

    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    w, s, e, n = box
    target = (w + 1.0, s + 1.0, e - 1.0, n - 1.0)  # just inside: the grid snaps outward
    ll = list(to_ll.transform_bounds(*target, densify_pts=21))
    for _ in range(100):
        got = to_utm.transform_bounds(ll[0], ll[1], ll[2], ll[3], densify_pts=21)
        err = [t - g for t, g in zip(target, got, strict=True)]
        if max(map(abs, err)) < 0.01:
            break
        m_lon = 111_320.0 * math.cos(math.radians((ll[1] + ll[3]) / 2))
        ll = [
            v + d / m for v, d, m in zip(ll, err, (m_lon, 110_574.0, m_lon, 110_574.0), strict=True)
        ]
    return [round(v, 9) for v in ll]


# ------------------------------------------------------------------------------ workers
def worker_run(config: str) -> dict[str, Any]:
    """``stac2cube.run`` of ``config`` in this (fresh) process, with what the run did."""
    from stac2cube import load_config, run
    from stac2cube.catalog import CatalogStore

    cfg = load_config(config)
    block_calls = _count_block_path()
    built = _LogLines("stac2cube.references", "built from")
    main0, kids0 = _cpu_split()
    t0 = time.perf_counter()
    summary = run(cfg)
    seconds = time.perf_counter() - t0
    main1, kids1 = _cpu_split()
    cpu = main1 - main0 + kids1 - kids0
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    docs = [
        json.loads(store.item_path(o.item_id).read_text())
        for o in summary.outcomes
        if o.status == "written"
    ]
    block_path, source = _block_path(cfg, docs, block_calls)
    cogs = [f for d in docs for f in store.item_dir(d["id"]).glob("*.tif")]
    return {
        "seconds": seconds,
        "output_mb": round(sum(f.stat().st_size for f in cogs) / 2**20, 1),
        "cpu_seconds": cpu,
        "cpu_seconds_main": main1 - main0,
        "peak_rss_mb": peak_rss_mb(),
        "written": summary.written,
        "failed": summary.failed,
        "outcomes": [
            {
                "id": o.item_id,
                "status": o.status,
                "stage": o.stage,
                "seconds": round(o.seconds, 2),  # the scene's own, on its worker
                "message": o.message[:400],
            }
            for o in summary.outcomes
        ],
        "coreg": summary.coreg_statuses(),
        "coreg_results": [_coreg_brief(d) for d in docs if _coreg_brief(d)],
        "block_size": getattr(cfg.run, "block_size", None),
        "native_resolution": getattr(cfg.output, "native_resolution", None),
        "block_path": block_path,
        "block_path_from": source,
        "references_built_in_run": built.lines,
    }


COREG_BRIEF = (
    "status",
    "reason",
    "placement",
    "shift_px",
    "applied_shift_px",
    "tiepoints_total",
    "tiepoints_valid",
    "tiles_failed",
    "correlation_before",
    "correlation_after",
)
"""What a run record keeps of each scene's co-registration record."""


def _coreg_brief(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The co-registration record of an item, reduced to :data:`COREG_BRIEF`."""
    for step in doc["properties"].get("stac2cube:steps", []):
        if step.get("name") == "coreg":
            res = step.get("results", {})
            return {k: res[k] for k in COREG_BRIEF if k in res}
    return {}


def worker_reference(config: str) -> dict[str, Any]:
    """Build the co-registration reference of ``config`` into its catalog, as a first run
    does, so that the timed run finds it: a reference is built once per catalog, not per
    scene. ``reference: file`` reads the file onto the grid; no scene is read."""
    from stac2cube import load_config
    from stac2cube.catalog import CatalogStore
    from stac2cube.grid import load_aoi, target_geobox
    from stac2cube.references.build import coreg_reference_spec, ensure_reference

    cfg = load_config(config)
    spec = coreg_reference_spec(cfg, target_geobox(load_aoi(cfg.aoi, cfg.base_dir), cfg.grid))
    assert spec is not None and spec.mode == "file", "the benchmark prebuilds a file reference"
    about = {k: getattr(cfg.output, k) for k in ("title", "description", "license")}
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id, **about)
    store.create()
    t0 = time.perf_counter()
    ensure_reference(spec, cfg, [], store, "tile-benchmark", _no_candidates)
    assert store.reference_versions(spec.key), "the reference was not built (see the log)"
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def worker_candidates(config: str) -> dict[str, Any]:
    """Build the co-registration reference of ``config`` from its candidate scenes, as the
    first run over a catalog does (search, L1C twins, the candidates read and masked by the
    cloud step, the best kept, the reference written)."""
    from stac2cube import load_config
    from stac2cube.catalog import CatalogStore
    from stac2cube.grid import load_aoi, target_geobox
    from stac2cube.pipeline import active_steps, find_l1c_twins
    from stac2cube.pipeline.candidates import candidates_in_blocks, reference_reader
    from stac2cube.references.build import coreg_reference_spec, ensure_reference
    from stac2cube.search import search

    cfg = load_config(config)
    aoi = load_aoi(cfg.aoi, cfg.base_dir)
    geobox = target_geobox(aoi, cfg.grid)
    spec = coreg_reference_spec(cfg, geobox)
    assert spec is not None and spec.mode == "clearest"
    about = {k: getattr(cfg.output, k) for k in ("title", "description", "license")}
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id, **about)
    store.create()
    usage0 = _cpu_seconds()
    t0 = time.perf_counter()
    items = search(cfg.source, aoi, cfg.time, base_dir=cfg.base_dir).items
    twins = find_l1c_twins(cfg, aoi, items, store, "tile-benchmark")
    ensure_reference(
        spec, cfg, items, store, "tile-benchmark", reference_reader(cfg, twins, spec.band)
    )
    seconds = time.perf_counter() - t0
    versions = store.reference_versions(spec.key)
    assert versions, "the reference was not built (see the log)"
    cloud = [(s, c) for s, c in active_steps(cfg) if s.name == "cloudmask"]
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - usage0,
        "peak_rss_mb": peak_rss_mb(),
        "written": 1,
        "candidates": len(items),
        "twins": len(twins),
        "sources": versions[0][2]["stac2cube:reference"]["sources"],
        "streamed": candidates_in_blocks(cfg, cloud, geobox.shape.yx),
        "block_size": cfg.run.block_size,
    }


def _no_candidates(item: Any) -> Any:
    raise AssertionError("a file reference reads no candidate scene")


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (a run's Dask workers)."""
    return sum(_cpu_split())


def _steal_seconds() -> float | None:
    """CPU seconds the hypervisor has given to other machines since boot (``steal`` in
    ``/proc/stat``, all cores together); None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _cpu_split() -> tuple[float, float]:
    """CPU time of this process (with a local cluster: the client and the scheduler) and of
    its children that ended (the nannies and their workers)."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


class _LogLines(logging.Handler):
    """Keeps the messages of ``logger`` (and below) that contain ``text``."""

    def __init__(self, logger: str, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.lines = text, list[str]()
        lg = logging.getLogger(logger)
        lg.setLevel(logging.INFO)
        lg.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if self.text in msg:
            self.lines.append(msg[:300])


def _count_block_path() -> list[int]:
    """Calls of the pipeline's block-by-block scene writer in this process (serial runs)."""
    import stac2cube.pipeline.task as task

    calls: list[int] = []
    for name in ("write_scene_in_blocks", "write_scene_with_steps_in_blocks"):
        inner = getattr(task, name, None)
        if inner is not None:
            setattr(task, name, _counted(inner, calls))
    return calls


def _counted(inner: Any, calls: list[int]) -> Any:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return inner(*args, **kwargs)

    return counted


def _block_path(cfg: Any, docs: list[dict[str, Any]], calls: list[int]) -> tuple[Any, str]:
    """Whether the scenes went through the block path, and how that is known: the calls seen
    in this process where the scenes ran here, else what the items' provenance says of blocks,
    else what the configuration implies (Dask workers are other processes)."""
    try:
        from stac2cube.pipeline.blocks import in_blocks
    except ImportError:
        return False, "this version has no block path"
    if cfg.run.executor == "serial" or (cfg.run.executor == "local" and len(docs) == 1):
        return bool(calls), "observed"
    found = {k: v for d in docs for k, v in _walk(d.get("properties", {})) if "block" in k.lower()}
    if found:
        return found, "provenance"
    return in_blocks(cfg), "configuration"


def _walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield f"{prefix}{k}", v
            yield from _walk(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}{i}.")


# ------------------------------------------------------------------------------ capped runs
_RUNNING: set[int] = set()
"""The process group of the measurement running (``run_capped``)."""


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM: kill the measurement running and stop the benchmark (as Ctrl-C does), even if
    the exit raised here is swallowed (a signal during a fork hook), then by ``run_capped``."""
    for pgid in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    _RUNNING.add(-1)  # no new measurement starts
    sys.exit(128 + signum)


TIME_LIMIT_S: list[float | None] = [None]
"""Wall-clock limit of one measurement (``--time-limit-min``); None: none."""


def run_capped(args: list[str], cap_mb: float, logs: Path) -> dict[str, Any]:
    """Run this script's worker mode ``args`` in a fresh process group under a memory cap.

    Each process gets ``RLIMIT_AS`` = the cap (an allocation beyond it fails inside the run,
    which records the scene as failed), and the group is killed when the RSS of all its
    processes together passes the cap or the machine's available memory runs low. Returns the
    worker's JSON with ``ok`` True, or ``ok`` False and why; both with the wall and CPU time
    of the process tree and the peak RSS (VmHWM) of each of its processes.
    """
    cap = int(cap_mb * 2**20)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    if -1 in _RUNNING:
        raise SystemExit("the benchmark was stopped")
    logs.mkdir(parents=True, exist_ok=True)
    name = f"{args[1]}-{Path(args[3]).stem}"  # worker mode and config (or tile)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    steal0 = _steal_seconds()
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=limit,
        )
    _RUNNING.add(proc.pid)
    peaks: dict[int, tuple[str, float]] = {}
    vm_peak = 0.0
    stopped = ""
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            total = 0.0
            for p in _tree(proc.pid):
                vm = _vm_mb(p.pid)
                if vm is None:
                    continue
                kind, hwm = peaks.get(p.pid) or (_kind(p, proc.pid), 0.0)
                peaks[p.pid] = (kind, max(hwm, vm["VmHWM"]))
                vm_peak = max(vm_peak, vm["VmPeak"])
                total += vm["VmRSS"]
            avail = _mem_available_mb()
            if not stopped and (total > cap_mb or avail < MIN_AVAILABLE_MB):
                why = "memory cap" if total > cap_mb else "machine's available memory low"
                stopped = f"stopped by the benchmark: {why} ({total:.0f} MB used, {avail:.0f} free)"
                os.killpg(proc.pid, signal.SIGKILL)
            limit_s = TIME_LIMIT_S[0]
            if not stopped and limit_s and time.perf_counter() - t0 > limit_s:
                stopped = (
                    f"stopped by the benchmark: time limit of {limit_s / 60:g} min "
                    f"(--time-limit-min; {total:.0f} MB used)"
                )
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.25)
    except BaseException:  # the benchmark itself stopped: its measurement goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        raise
    finally:
        _RUNNING.discard(proc.pid)
    if -1 in _RUNNING:  # stopped while the exit was swallowed: record nothing
        raise SystemExit("the benchmark was stopped")
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    steal1 = _steal_seconds()
    workers = [mb for kind, mb in peaks.values() if kind == "worker"]
    rec: dict[str, Any] = {
        "ok": proc.returncode == 0 and not stopped,
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "tree_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb_main": round(peaks.get(proc.pid, ("main", 0.0))[1], 1),
        "peak_rss_mb_workers": [round(v, 1) for v in workers],
        "worker_processes_seen": len(workers),
        "stopped": stopped,
        "vm_peak_mb": round(vm_peak, 1),
        "memory_cap_mb": cap_mb,
        "loadavg": round(os.getloadavg()[0], 2),  # of the last minute: others' work shows here
        # cores the hypervisor gave to other machines meanwhile (None: not Linux)
        "steal_cores": round((steal1 - steal0) / wall, 3)
        if steal0 is not None and steal1 is not None
        else None,
    }
    if rec["ok"]:
        rec.update(json.loads(out_path.read_text().strip().splitlines()[-1]))
    else:
        tail = err_path.read_text()[-3000:].strip().splitlines()
        rc = proc.returncode
        killed = f"killed by signal {-rc}, not by the benchmark" if rc < 0 else ""
        rec["error"] = stopped or killed or (tail[-1] if tail else f"exit status {rc}")
        rec["stderr_tail"] = "\n".join(tail[-15:])
    return rec


def _tree(pid: int) -> list[Any]:
    """The process ``pid`` and its descendants (psutil), or nothing once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _vm_mb(pid: int) -> dict[str, float] | None:
    """VmHWM, VmRSS and VmPeak (peak address space) of a process, MB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    vals = {
        k: int(v.split()[0]) / 1024
        for k, _, v in (ln.partition(":") for ln in text.splitlines())
        if k in ("VmHWM", "VmRSS", "VmPeak")
    }
    return vals if len(vals) == 3 else None


def _kind(p: Any, main: int) -> str:
    """``main`` (the worker mode), ``worker`` (a Dask worker it spawned) or ``helper``."""
    if p.pid == main:
        return "main"
    try:
        cmd = " ".join(p.cmdline())
    except Exception:
        return "helper"
    return "worker" if "spawn_main" in cmd and "resource_tracker" not in cmd else "helper"


def _mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return math.inf  # pragma: no cover


# ------------------------------------------------------------------------------ the benchmark
@dataclasses.dataclass(frozen=True)
class Tile:
    """A generated tile on disk and the AOIs measured on it."""

    root: Path
    info: Mapping[str, Any]
    """What :func:`worker_generate` returned (grid, blocks, dates, memory)."""
    px: int
    """Side of the measured tile (the target grid), pixels; centred in the generated grid."""

    def box(self, px: int) -> tuple[float, float, float, float]:
        """(west, south, east, north) of a ``px`` square centred in the generated grid, its
        corner on the 60 m lattice as a tile's is."""
        off = 6 * ((self.info["grid_px"] - px) // 12)
        x0, y0 = ORIGIN[0] + 10.0 * off, ORIGIN[1] - 10.0 * off
        return x0, y0 - 10.0 * px, x0 + 10.0 * px, y0


def ensure_tile(
    root: Path, grid_px: int, block_px: int, seed: int, cap_mb: float
) -> dict[str, Any]:
    """The generated tile under ``root``: reused when complete, else generated (subprocess)."""
    marker = root / "generated.json"
    if marker.exists():
        return {**json.loads(marker.read_text()), "reused": True}
    if root.exists():
        shutil.rmtree(root)  # an interrupted generation
    root.mkdir(parents=True)
    say(f"generating a {grid_px} px tile in {block_px} px blocks under {root}")
    args = ["--root", root, "--grid-px", grid_px, "--gen-block", block_px, "--seed", seed]
    rec = run_capped(["--worker", "generate", *map(str, args)], cap_mb, root.parent / "logs")
    if not rec["ok"]:
        raise SystemExit(f"generating the tile failed: {rec['error']}\n{rec['stderr_tail']}")
    info = {k: v for k, v in rec.items() if k not in ("ok", "rc", "stopped")}
    marker.write_text(json.dumps(info, indent=1) + "\n")
    return {**info, "reused": False}


def write_config(
    path: Path,
    tile: Tile,
    px: int,
    steps: Mapping[str, Any],
    run: Mapping[str, Any],
    scenes: int = 1,
    output: Mapping[str, Any] | None = None,
) -> Path:
    """A run config over ``scenes`` scenes of ``tile``, its target grid exactly the centred
    ``px`` square (with ``output.native_resolution``: that square grown to the next 60 m, whose
    corner it shares); the catalog is ``path`` without its suffix."""
    import yaml

    from stac2cube import load_config
    from stac2cube.grid import NATIVE_ALIGNMENT, load_aoi, target_geobox

    steps = {k: dict(v) for k, v in steps.items()}
    if "coreg" in steps and "reference" not in steps["coreg"]:
        steps["coreg"].update(reference="file", reference_path=str(tile.root / "reference_b08.tif"))
    dates = [d[:10] for d in tile.info["dates"][:scenes]]
    box = tile.box(px)
    cfg = {
        "source": {
            "path": str(tile.root / f"l2a_items_{scenes}.json"),
            "l1c_path": str(tile.root / f"l1c_items_{scenes}.json"),
            "collection": "sentinel-2-l2a",
            "l1c_collection": "sentinel-2-l1c",
        },
        "aoi": {"bbox": lonlat_aoi(tile.info["epsg"], box)},
        "time": {"start": dates[0], "end": dates[-1]},
        "bands": BANDS,
        "grid": {"crs": f"EPSG:{tile.info['epsg']}", "resolution": 10.0},
        "steps": steps,
        "output": {
            "catalog": str(path.with_suffix("")),
            "collection_id": "sentinel-2-l2a-ard",
            **(output or {}),
        },
        "run": dict(run),
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_config(path)
    native = loaded.output.native_resolution
    align = NATIVE_ALIGNMENT if native else None
    gbox = target_geobox(load_aoi(loaded.aoi, loaded.base_dir), loaded.grid, align=align)
    got = (gbox.shape.x, gbox.shape.y, gbox.transform.c, gbox.transform.f)
    cell = round(NATIVE_ALIGNMENT / loaded.grid.resolution)  # target pixels a 60 m pixel spans
    side = cell * math.ceil(px / cell) if native else px
    assert got == (side, side, box[0], box[3]), f"the AOI's grid {got} is not the {side} px square"
    return path


def summarise(rec: Mapping[str, Any], expected: int) -> dict[str, Any]:
    """One measurement: status, seconds (when every scene was written), CPU seconds, peak RSS
    per worker (the process itself with ``run.executor: serial``), and what the run did."""
    if not rec["ok"]:
        status = f"failed: {rec['error']}"
    elif rec.get("written", expected) == expected:
        status = "written"
    else:
        bad = [o for o in rec["outcomes"] if o["status"] != "written"]
        status = "; ".join(f"{o['status']} at {o['stage']}: {o['message']}" for o in bad)
    # a failure of the worker itself (not a kill) near RLIMIT_AS is an allocation that failed
    near_cap = rec["vm_peak_mb"] > 0.75 * rec["memory_cap_mb"] and rec["rc"] >= 0
    if status != "written" and not rec["stopped"] and near_cap:
        status += f" (address space {rec['vm_peak_mb']:.0f} MB: near the cap, out of memory)"
    workers = rec["peak_rss_mb_workers"] or [rec.get("peak_rss_mb", rec["peak_rss_mb_main"])]
    out = {
        "status": status,
        "seconds": round(rec["seconds"], 1) if status == "written" else None,
        "wall_s": rec["wall_s"],
        "cpu_s": round(rec.get("cpu_seconds", rec["tree_cpu_s"]), 1),
        # with a local cluster: the client's and scheduler's share (the rest: the workers)
        "cpu_s_main": round(rec["cpu_seconds_main"], 1) if "cpu_seconds_main" in rec else None,
        "peak_rss_mb_per_worker": round(max(workers), 1),
        "peak_rss_mb_workers": [round(v, 1) for v in workers],
        "loadavg": rec["loadavg"],
        "steal_cores": rec.get("steal_cores"),
        "worker_processes": rec["worker_processes_seen"],
        # each scene's own seconds on its worker: the rest of `seconds` is the run's overhead
        "scene_seconds": [o["seconds"] for o in rec.get("outcomes", []) if "seconds" in o],
    }
    keep = (
        "candidates",
        "sources",
        "streamed",
        "block_size",
        "block_path",
        "block_path_from",
        "native_resolution",
        "output_mb",
        "coreg",
        "coreg_results",
    )
    out.update({k: rec[k] for k in keep if k in rec})
    if rec.get("references_built_in_run"):
        out["references_built_in_run"] = rec["references_built_in_run"]
    return out


class Bench:
    """The measurements over one tile, each kept (and saved) as it ends, so that a long run
    that is stopped leaves what it measured."""

    def __init__(self, tile: Tile, work: Path, cap_mb: float, out: Path, results: dict[str, Any]):
        self.tile, self.work, self.cap_mb, self.out = tile, work, cap_mb, out
        self.results = results
        self.runs: dict[str, dict[str, Any]] = {}
        self.t0 = time.perf_counter()

    def capped(self, *args: str) -> dict[str, Any]:
        return run_capped(list(args), self.cap_mb, self.work / "logs")

    def run(
        self,
        label: str,
        steps: Mapping[str, Any],
        px: int,
        run: Mapping[str, Any],
        scenes: int = 1,
        output: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``stac2cube.run`` over ``scenes`` scenes on the centred ``px`` square; a
        co-registration reference is built before the clock (once per catalog, not per scene)."""
        say(f"{label} ...")
        path = self.work / f"{label}.yaml"
        cfg = str(write_config(path, self.tile, px, steps, run, scenes, output))
        ref = self.capped("--worker", "reference", "--config", cfg) if "coreg" in steps else None
        if ref is not None and not ref["ok"]:
            rec = summarise({**ref, "error": f"reference: {ref['error']}"}, scenes)
        else:
            rec = summarise(self.capped("--worker", "run", "--config", cfg), scenes)
        if "workers" in run:  # a Dask worker that died and was replaced is one more process
            rec["workers_restarted"] = max(0, rec["worker_processes"] - run["workers"])
        if ref is not None and ref["ok"]:
            rec["reference_build_s"] = round(ref["seconds"], 1)
            rec["reference_build_peak_rss_mb"] = round(ref["peak_rss_mb"], 1)
        shutil.rmtree(self.work / label, ignore_errors=True)
        return self.said(rec)

    def reference(self, label: str, px: int, run: Mapping[str, Any]) -> dict[str, Any]:
        """The co-registration reference of :data:`REFERENCE_STEPS` built from the
        :data:`DASK_SCENES` scenes over the centred ``px`` square (:func:`worker_candidates`)."""
        say(f"{label} ...")
        cfg = write_config(
            self.work / f"{label}.yaml", self.tile, px, REFERENCE_STEPS, run, DASK_SCENES
        )
        rec = summarise(self.capped("--worker", "candidates", "--config", str(cfg)), 1)
        shutil.rmtree(self.work / label, ignore_errors=True)
        return self.said(rec)

    def floor(self, px: int) -> dict[str, Any]:
        """rio-cogeo alone on the same bands, grid and profile (``benchmarks/ingest.py``)."""
        say("floor (rio-cogeo alone) ...")
        cfg = str(write_config(self.work / "floor.yaml", self.tile, px, {}, {}))
        rec = self.capped("--worker", "cogeo", "--config", cfg, "--root", str(self.work / "cogs"))
        shutil.rmtree(self.work / "cogs", ignore_errors=True)
        return self.said(summarise(rec, 1))

    @staticmethod
    def said(rec: dict[str, Any]) -> dict[str, Any]:
        say(f"  {rec['status']}, {rec['seconds']} s, {rec['peak_rss_mb_per_worker']} MB")
        return rec

    def keep(self, label: str, recs: list[dict[str, Any]]) -> None:
        """Keep the repeats of one measurement: the median seconds, the largest peak."""
        self.runs[label] = merge(recs)
        self.save()

    def save(self, complete: bool = False) -> None:
        self.results.update(
            figures(self.runs, self.tile.px, self.results.get("machine", {}).get("cpus"))
        )
        self.results["complete"] = complete
        self.results["runs"] = self.runs
        self.results["measurement_seconds"] = round(time.perf_counter() - self.t0)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=2) + "\n")


def merge(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of a measurement as one: median seconds (None unless every repeat wrote its
    scenes), median CPU seconds, the largest peak, and each repeat's figures."""
    worst = max(recs, key=lambda r: r["peak_rss_mb_per_worker"])
    failed = [r["status"] for r in recs if r["status"] != "written"]
    out = {**worst, "status": failed[0] if failed else "written"}
    out["seconds"] = None if failed else round(statistics.median(r["seconds"] for r in recs), 2)
    out["cpu_s"] = round(statistics.median(r["cpu_s"] for r in recs), 2)
    if all(r.get("steal_cores") is not None for r in recs):
        out["steal_cores"] = round(statistics.median(r["steal_cores"] for r in recs), 3)
    if all(r.get("cpu_s_main") is not None for r in recs):
        out["cpu_s_main"] = round(statistics.median(r["cpu_s_main"] for r in recs), 2)
    out["wall_s"] = round(statistics.median(r["wall_s"] for r in recs), 2)
    if "workers_restarted" in worst:
        out["workers_restarted"] = sum(r["workers_restarted"] for r in recs)
    if len(recs) > 1:
        keys = (
            "seconds",
            "cpu_s",
            "cpu_s_main",
            "peak_rss_mb_per_worker",
            "loadavg",
            "steal_cores",
        )
        out["repeats"] = {k: [r.get(k) for r in recs] for k in keys}
    return out


def figures(
    runs: Mapping[str, Mapping[str, Any]], px: int, cpus: int | None = None
) -> dict[str, Any]:
    """The keys issue 17 names, from the measurements so far: per configuration, figures of
    the whole tile (``seconds`` None where a run failed; its peak is where it stopped).
    ``cpus``: the cores of the machine that measured the runs (None: this one's)."""
    cpus = cpus or os.cpu_count()

    def per(key: str, size: str = "tile") -> dict[str, Any]:
        return {c: runs[f"{c}-{size}"].get(key) for c in CONFIGS if f"{c}-{size}" in runs}

    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 3) if x and y else None

    def dask(key: str) -> dict[str, Any]:
        return {str(w): runs[f"dask-{w}"].get(key) for w in (1, 2) if f"dask-{w}" in runs}

    seconds, peaks = per("seconds"), per("peak_rss_mb_per_worker")
    six = per("peak_rss_mb_per_worker", "sixteenth")
    cpu = {c: s for c, s in per("cpu_s").items() if seconds[c]}  # of the runs that wrote
    floor = runs.get("floor", {}).get("seconds")
    floor_cpu = runs.get("floor", {}).get("cpu_s") if floor else None
    t, dask_cpu = dask("seconds"), dask("cpu_s")
    ref = {
        size: runs[f"reference-{size}"]
        for size in ("tile", "sixteenth")
        if f"reference-{size}" in runs
    }
    ref_peak = {size: r.get("peak_rss_mb_per_worker") for size, r in ref.items()}
    return {
        "seconds": seconds,
        "peak_rss_mb_per_worker": peaks,
        "status": per("status"),
        "rss_tile_vs_sixteenth_ratio": {c: ratio(peaks[c], six.get(c)) for c in peaks},
        "sixteenth_seconds": per("seconds", "sixteenth"),
        "output_mb": per("output_mb"),
        "sixteenth_peak_rss_mb_per_worker": six,
        "floor_seconds": floor,
        "floor_peak_rss_mb": runs.get("floor", {}).get("peak_rss_mb_per_worker"),
        "ingest_floor_ratio": ratio(seconds.get("none"), floor),
        "steps_floor_ratio": ratio(seconds.get("cloudmask_global"), floor),
        # the same on CPU seconds: less sensitive to other work on the machine
        "ingest_floor_cpu_ratio": ratio(cpu.get("none"), floor_cpu),
        "steps_floor_cpu_ratio": ratio(cpu.get("cloudmask_global"), floor_cpu),
        # megapixels of the target grid (all bands) per second of one core's work
        "mpx_per_s_per_core": {c: ratio(px * px / 1e6, s) for c, s in cpu.items()},
        "dask_tile_speedup": ratio(t.get("1"), t.get("2")),
        # the most two workers could give: the two-worker run's CPU work spread evenly over
        # the machine's cores, against the one-worker run's seconds (which used more than one
        # core: the client, the scheduler and the nanny run beside the worker)
        "dask_speedup_bound": ratio(
            t.get("1"), dask_cpu["2"] / (cpus or 1) if dask_cpu.get("2") else None
        ),
        "dask_cores_used": {w: ratio(dask_cpu.get(w), s) for w, s in t.items()},
        "dask_cpu_s": dask_cpu,
        "dask_cpu_s_main": dask("cpu_s_main"),
        # the hypervisor's share of the cores during each run: a machine lent by a host
        "dask_steal_cores": dask("steal_cores"),
        "dask_seconds": t,
        "dask_status": dask("status"),
        "dask_peak_rss_mb_per_worker": dask("peak_rss_mb_workers"),
        "dask_workers_restarted": dask("workers_restarted"),
        # the co-registration reference built from the candidate scenes, on the client
        "reference_seconds": {size: r.get("seconds") for size, r in ref.items()},
        "reference_peak_rss_mb": ref_peak,
        "reference_rss_tile_vs_sixteenth_ratio": ratio(
            ref_peak.get("tile"), ref_peak.get("sixteenth")
        ),
        "run_block_size": next((r["block_size"] for r in runs.values() if "block_size" in r), None),
        "block_path": per("block_path"),
        "goals": {
            "rss_tile_vs_sixteenth_ratio": 1.2,
            "ingest_floor_ratio": 1.15,
            "steps_floor_ratio": 1.5,
            "dask_tile_speedup": 1.85,
        },
    }


def estimate_seconds(
    px: int, parts: list[str], repeat: int, prior: Mapping[str, Any] | None
) -> float:
    """Seconds the measurements ``parts`` of a ``px`` tile should take: an earlier result of
    this script scaled by area, else :data:`SECONDS_PER_MPX`."""
    rate = dict(SECONDS_PER_MPX)
    if prior and prior.get("tile_px"):
        mpx = prior["tile_px"] ** 2 / 1e6
        measured = {**(prior.get("seconds") or {}), "floor": prior.get("floor_seconds")}
        rate.update({k: s / mpx for k, s in measured.items() if s})
    mpx = px * px / 1e6
    runs = {c: rate[c] * (1 + 1 / 16 + (repeat - 1) * (c == "none")) for c in CONFIGS}
    runs.update(floor=rate["floor"] * repeat, dask=rate["none"] * DASK_SCENES * 1.6 * repeat)
    # two candidates read and masked: about the cloud step's share of a scene each
    runs["reference"] = rate["cloudmask_global"] * DASK_SCENES * (1 + 1 / 16)
    return sum(v for k, v in runs.items() if k in parts) * mpx


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"a quarter tile ({QUICK_PX} px)")
    ap.add_argument("--tile-px", type=int, help=f"side of the tile (default {TILE_PX})")
    ap.add_argument("--data-dir", help="where the generated tile is kept (default: a temp dir)")
    ap.add_argument("--gen-block", type=int, default=GEN_BLOCK_PX, help="generated block side")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--cap-gib", type=float, default=18.0, help="memory cap of a measurement")
    ap.add_argument("--block-size", type=int, help="run.block_size (default: the config's)")
    ap.add_argument(
        "--only", help="comma-separated: " + ", ".join([*CONFIGS, "floor", "dask", "reference"])
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs of none, floor and dask (median)")
    ap.add_argument("--out", default=str(RESULTS), help="the results file")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="measure the --only parts again and keep the results file's other measurements "
        "(recorded under 'remeasured')",
    )
    ap.add_argument(
        "--time-limit-min",
        type=float,
        help="stop a measurement after this many minutes (recorded as stopped)",
    )
    ap.add_argument(
        "--worker",
        choices=["generate", "run", "reference", "candidates", "cogeo"],
        help=argparse.SUPPRESS,
    )
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--grid-px", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        if a.worker == "generate":
            res = worker_generate(a.root, a.grid_px, a.gen_block, a.seed)
        elif a.worker == "run":
            res = worker_run(a.config)
        elif a.worker == "reference":
            res = worker_reference(a.config)
        elif a.worker == "candidates":
            res = worker_candidates(a.config)
        else:
            import rio_cogeo.cogeo  # noqa: F401  (imported before the clock, as a run's are)
            from ingest import worker_cogeo

            import stac2cube.search  # noqa: F401

            usage0 = _cpu_seconds()
            res = worker_cogeo(a.config, a.root)
            res["cpu_seconds"] = _cpu_seconds() - usage0
        print(json.dumps(res))
        return

    signal.signal(signal.SIGTERM, _terminate)
    TIME_LIMIT_S[0] = a.time_limit_min * 60 if a.time_limit_min else None
    px = a.tile_px or (QUICK_PX if a.quick else TILE_PX)
    if a.gen_block % 6:
        raise SystemExit("--gen-block must be a multiple of 6 (so that the 60 m grid tiles it)")
    grid_px = a.gen_block * math.ceil(px / a.gen_block)
    parts = a.only.split(",") if a.only else [*CONFIGS, "floor", "dask", "reference"]
    cap_mb = a.cap_gib * 1024
    out = Path(a.out)
    prior = next((json.loads(p.read_text()) for p in (out, RESULTS) if p.exists()), None)
    data_dir = Path(a.data_dir or Path(tempfile.gettempdir()) / "stac2cube-tile-data").resolve()
    root = data_dir / f"tile-{grid_px}px-b{a.gen_block}-s{a.seed}"
    est = estimate_seconds(px, parts, a.repeat, prior)
    gen_est = 0 if (root / "generated.json").exists() else grid_px**2 / 1e6 * 9.0
    say(
        f"tile of {px} x {px} px: the measurements take about {est / 60:.0f} min on 2 cores "
        f"(runs stopped by the {a.cap_gib:g} GiB memory cap end sooner), generating the tile "
        f"(once) about {gen_est / 60:.0f} min"
    )
    tile = Tile(root, ensure_tile(root, grid_px, a.gen_block, a.seed, cap_mb), px)
    serial: dict[str, Any] = {"executor": "serial"}  # the process is the worker
    if a.block_size is not None:
        serial["block_size"] = a.block_size
    results: dict[str, Any] = {
        "tile_px": px,
        "sixteenth_px": round(px / 4),
        "quick": a.quick,
        "complete": False,
        "configurations": CONFIGS,
        "memory_cap_mb": cap_mb,
        "time_limit_min": a.time_limit_min,
        "dask_memory_limit_per_worker": f"{a.cap_gib / 2:g}GiB",
        "bands": BANDS,
        "generation": tile.info,
        "repeats": a.repeat,
        "estimated_seconds": round(est),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "machine": {
            "cpus": os.cpu_count(),
            "memory_mb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    earlier = json.loads(out.read_text()) if a.merge and out.exists() else None
    if a.merge and (earlier is None or earlier.get("tile_px") != px or not a.only):
        raise SystemExit(f"--merge needs --only and an earlier {out} of a {px} px tile")
    with tempfile.TemporaryDirectory(prefix="work-", dir=data_dir) as work:
        bench = Bench(tile, Path(work), cap_mb, out, results)
        if earlier is not None:
            measured = {f"{c}-{size}" for c in parts for size in ("tile", "sixteenth")}
            measured |= {"floor"} & set(parts) | (
                {"dask-1", "dask-2"} if "dask" in parts else set()
            )
            if "reference" in parts:
                measured |= {"reference-sixteenth", "reference-tile"}
            bench.runs = {k: v for k, v in earlier["runs"].items() if k not in measured}
            results["remeasured"] = {
                "parts": parts,
                "date": dt.date.today().isoformat(),
                "kept_from_earlier_run": sorted(bench.runs),
                "earlier_complete": earlier.get("complete"),
                "earlier_loadavg_start": earlier.get("loadavg_start"),
            }
        configs = [c for c in CONFIGS if c in parts]
        for name in configs:  # the cheap ones first
            label = f"{name}-sixteenth"
            side = round(px / 4)
            rec = bench.run(label, CONFIGS[name], side, serial, output=OUTPUT.get(name))
            bench.keep(label, [rec])
        for name in configs:
            label = f"{name}-tile"
            if name != "none":
                rec = bench.run(label, CONFIGS[name], px, serial, output=OUTPUT.get(name))
                bench.keep(label, [rec])
                continue
            tiles: list[dict[str, Any]] = []
            floors: list[dict[str, Any]] = []
            for _ in range(a.repeat):  # alternating, as in benchmarks/ingest.py
                tiles.append(bench.run(label, CONFIGS[name], px, serial))
                bench.keep(label, tiles)
                if "floor" in parts:
                    floors.append(bench.floor(px))
                    bench.keep("floor", floors)
        if "floor" in parts and "none" not in configs:  # the floor alone, as often
            floors = []
            for _ in range(a.repeat):
                floors.append(bench.floor(px))
                bench.keep("floor", floors)
        if "dask" in parts:
            dask: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for _ in range(a.repeat):
                for workers in (1, 2):
                    # the same limit per worker with one worker as with two: half the cap
                    limit = {"workers": workers, "memory_limit": f"{a.cap_gib / 2:g}GiB"}
                    opts = {**serial, "executor": "local", **limit}
                    label = f"dask-{workers}"
                    dask[workers].append(bench.run(label, CONFIGS["none"], px, opts, DASK_SCENES))
                    bench.keep(label, dask[workers])
        if "reference" in parts:
            for size, side in (("sixteenth", round(px / 4)), ("tile", px)):
                label = f"reference-{size}"
                bench.keep(label, [bench.reference(label, side, serial)])
        bench.save(complete=True)
    brief = ("runs", "generation", "configurations", "machine")
    print(json.dumps({k: v for k, v in results.items() if k not in brief}, indent=2))


if __name__ == "__main__":
    main()
