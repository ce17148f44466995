"""Run the pipeline: search, then for each scene read → harmonise → steps → COGs → STAC item.

Each scene is an independent unit whose output is one STAC item. A scene that fails (missing
asset, unreadable COG, no overlap with the AOI, ...) is recorded in the catalog's failure log and
the run goes on. A re-run processes only what is missing, failed or stale (other source version
or other processing configuration); complete items are left untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pystac
import rasterio
import shapely.geometry
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension

from . import __version__
from .bands import S2_BANDS
from .config import Config
from .errors import NoOverlapError, SearchError, Stac2CubeError
from .grid import footprint_lonlat, load_aoi, target_geobox
from .io.catalog import CatalogStore, load_template
from .io.cog import CogFile, write_cog
from .io.read import BandRead, read_band
from .provenance import InputRecord, Provenance, SourceRecord, StepRecord, software_versions
from .radiometry import RadiometryOverride, from_reflectance, processing_baseline, storage_encoding
from .search import search
from .steps.base import Scene

log = logging.getLogger(__name__)

Status = Literal["written", "skipped", "failed", "rejected"]

SCL_CLASSES = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene in a run."""

    item_id: str
    status: Status
    stage: str = ""
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the ``progress`` callback after each scene (and once with ``total`` first)."""

    done: int
    total: int
    outcome: SceneOutcome | None


@dataclass(frozen=True)
class RunSummary:
    """The result of :func:`run`."""

    run_id: str
    catalog: str
    search_method: str
    outcomes: tuple[SceneOutcome, ...] = field(default_factory=tuple)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def written(self) -> int:
        return self.count("written")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count("failed") + self.count("rejected")


ProgressCallback = Callable[[ProgressEvent], None]


def run(config: Config, *, progress: ProgressCallback | None = None) -> RunSummary:
    """Search the source and write every new, failed or stale scene into the catalog."""
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    aoi = load_aoi(config.aoi, config.base_dir)
    geobox = target_geobox(aoi, config.grid)
    out = config.output
    store = CatalogStore(
        config.catalog_dir,
        out.collection_id,
        title=out.title,
        description=out.description,
        license=out.license,
    )
    lock = store.lock()
    lock.acquire()  # CatalogLockedError if another run writes this catalog
    try:
        store.create()
        removed = store.clean_temporaries()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", len(removed))
        try:
            found = search(config.source, aoi, config.time, base_dir=config.base_dir)
        except SearchError as exc:
            store.record_failure("<search>", "search", exc, run_id=run_id)
            raise
        outcomes: list[SceneOutcome] = []
        for rej in found.rejected:
            store.record_failure(
                rej.item_id, rej.stage, _Recorded(rej.error, rej.message), run_id=run_id
            )
            outcomes.append(SceneOutcome(rej.item_id, "rejected", rej.stage, rej.message))
        total = len(found.items)
        if progress:
            progress(ProgressEvent(0, total, None))
        failed_before = {f.item_id for f in store.failures()}
        for i, item in enumerate(found.items, 1):
            outcome = _run_one(item, config, geobox, store, run_id, failed_before)
            outcomes.append(outcome)
            if progress:
                progress(ProgressEvent(i, total, outcome))
        return RunSummary(run_id, str(store.root), found.method, tuple(outcomes))
    finally:
        lock.release()


class _Recorded(Exception):
    """Carries an error already described elsewhere into the failure log."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _run_one(
    item: pystac.Item,
    config: Config,
    geobox: GeoBox,
    store: CatalogStore,
    run_id: str,
    failed_before: set[str],
) -> SceneOutcome:
    t0 = time.perf_counter()
    reason = needs_processing(item, store.read_item(item.id), config)
    if reason is None:
        return SceneOutcome(item.id, "skipped", "plan", "up to date")
    if reason == "failed before" and not config.run.reprocess_failed:
        return SceneOutcome(item.id, "skipped", "plan", "failed before")
    if item.id in failed_before and reason == "new":
        reason = "failed before"
    log.info("processing %s (%s)", item.id, reason)
    stage = "read"
    try:
        scene, inputs, records = read_scene(item, config, geobox)
        stage = "write"
        doc = write_scene(scene, item, inputs, records, config, store, started=t0)
        store.add_item(doc)
    except Stac2CubeError as exc:
        store.record_failure(item.id, stage, exc, run_id=run_id)
        log.warning("%s failed at %s: %s", item.id, stage, exc)
        return SceneOutcome(item.id, "failed", stage, str(exc), time.perf_counter() - t0)
    except Exception as exc:  # an unexpected bug must not lose the other scenes
        log.exception("%s failed unexpectedly at %s", item.id, stage)
        store.record_failure(item.id, stage, exc, run_id=run_id)
        return SceneOutcome(
            item.id, "failed", stage, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
        )
    return SceneOutcome(item.id, "written", "done", reason, time.perf_counter() - t0)


def needs_processing(
    source: pystac.Item, existing: Mapping[str, Any] | None, config: Config
) -> str | None:
    """Why ``source`` must be processed (``new``, ``stale: ...``), or None if up to date."""
    if existing is None:
        return "new"
    props = existing.get("properties", {})
    if props.get("stac2cube:config_hash") != config.config_hash:
        return "stale: other processing configuration"
    src = props.get("stac2cube:source", {})
    if src.get("updated") != source.properties.get("updated"):
        return "stale: source item updated"
    if src.get("processing_baseline") != processing_baseline(source):
        return "stale: new processing baseline"
    return None


# --------------------------------------------------------------------------------- read


def read_scene(
    item: pystac.Item, config: Config, geobox: GeoBox
) -> tuple[Scene, tuple[InputRecord, ...], tuple[StepRecord, ...]]:
    """Read and harmonise every configured band of ``item`` onto ``geobox``."""
    ov_cfg = config.radiometry.overrides.get(item.collection_id or "")
    override = RadiometryOverride(ov_cfg.scale, ov_cfg.offset) if ov_cfg else None
    reads: dict[str, BandRead] = {}
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="3"):
        for band in config.bands:
            reads[band] = read_band(item, band, geobox, override=override)
    bands = {b: r.data for b, r in reads.items() if S2_BANDS[b].kind != "classification"}
    classes = {b: r.data for b, r in reads.items() if S2_BANDS[b].kind == "classification"}
    scene = Scene(
        item_id=item.id,
        geobox=geobox,
        bands=bands,
        classes=classes,
        source_properties=dict(item.properties),
    )
    valid = (
        scene.valid_mask() if bands else np.logical_and.reduce([a > 0 for a in classes.values()])
    )
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise NoOverlapError(
            f"{item.id} has no valid pixel inside the AOI (all bands are nodata there); the "
            "scene's footprint only touches the AOI's bounding box or lies on a swath edge"
        )
    inputs = tuple(InputRecord(b, r.asset_key, r.href, item.id) for b, r in reads.items())
    harmonise = StepRecord(
        name="harmonise",
        version=__version__,
        parameters={
            "grid": {
                "crs": str(geobox.crs),
                "resolution": float(geobox.resolution.x),
                "shape": list(geobox.shape.yx),
            },
        },
        results={
            "processing_baseline": processing_baseline(item),
            "bands": {
                b: {
                    "scale": r.radiometry.scale,
                    "offset": r.radiometry.offset,
                    "source": r.radiometry.source,
                    **({"note": r.radiometry.note} if r.radiometry.note else {}),
                    "resampling": r.resampling,
                    "source_resolution": r.source_resolution,
                }
                for b, r in reads.items()
            },
            "valid_fraction": round(n_valid / valid.size, 6),
        },
    )
    return scene, inputs, (harmonise,)


# -------------------------------------------------------------------------------- write


def write_scene(
    scene: Scene,
    source: pystac.Item,
    inputs: tuple[InputRecord, ...],
    records: tuple[StepRecord, ...],
    config: Config,
    store: CatalogStore,
    *,
    started: float,
) -> dict[str, Any]:
    """Write the scene's COGs into its item directory and return the output item's JSON."""
    t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=time.perf_counter() - started)
    out = config.output
    item_dir = store.item_dir(scene.item_id)
    scale, offset, nodata = storage_encoding(out.dtype)
    cogs: dict[str, tuple[CogFile, str, float, float, float | None]] = {}
    for band, refl in scene.bands.items():
        dn = from_reflectance(refl, dtype=out.dtype)
        cogs[band] = (
            write_cog(
                dn,
                scene.geobox,
                item_dir / f"{band}.tif",
                nodata=nodata,
                scale=scale,
                offset=offset,
                profile=out.cog_profile,
                blocksize=out.blocksize,
                overview_resampling=out.overview_resampling,
                description=band,
            ),
            out.dtype,
            scale,
            offset,
            nodata,
        )
    for band, classes in scene.classes.items():
        cogs[band] = (
            write_cog(
                classes,
                scene.geobox,
                item_dir / f"{band}.tif",
                nodata=0,
                profile=out.cog_profile,
                blocksize=out.blocksize,
                overview_resampling="nearest",
                description=band,
            ),
            "uint8",
            1.0,
            0.0,
            0,
        )
    prov = Provenance(
        source=SourceRecord(
            id=source.id,
            href=source.get_self_href(),
            collection=source.collection_id,
            processing_baseline=processing_baseline(source),
            updated=source.properties.get("updated"),
        ),
        inputs=inputs,
        steps=records,
        config_hash=config.config_hash,
        software=software_versions(),
        started=t_start,
        finished=dt.datetime.now(dt.UTC),
    )
    return build_item(scene, source, cogs, prov)


def eo_common_name(name: str | None) -> str | None:
    """The eo v1.1 common name (which knows only ``rededge`` for B05-B07)."""
    return "rededge" if name and name.startswith("rededge") else name


def build_item(
    scene: Scene,
    source: pystac.Item,
    cogs: Mapping[str, tuple[CogFile, str, float, float, float | None]],
    prov: Provenance,
) -> dict[str, Any]:
    """The output STAC item (proj, eo, raster, file, classification, processing, stac2cube)."""
    gbox = scene.geobox
    footprint = footprint_lonlat(gbox)
    if source.geometry is not None:
        inter = footprint.intersection(shapely.geometry.shape(source.geometry))
        if not inter.is_empty and inter.area > 0:
            footprint = inter
    geom = shapely.geometry.mapping(footprint)
    tmpl = load_template("item.json")
    props = dict(tmpl.get("properties", {}))
    for key in (
        "platform",
        "constellation",
        "instruments",
        "gsd",
        "view:sun_azimuth",
        "view:sun_elevation",
        "mgrs:utm_zone",
        "mgrs:latitude_band",
        "mgrs:grid_square",
        "s2:processing_baseline",
        "sat:relative_orbit",
        "sat:orbit_state",
    ):
        if key in source.properties:
            props[key] = source.properties[key]
    props.update(scene.properties)
    props.update(prov.to_properties())
    props["created"] = props["stac2cube:finished"]
    props["updated"] = props["stac2cube:finished"]
    assert source.datetime is not None
    item = pystac.Item(
        id=scene.item_id,
        geometry=geom,
        bbox=list(footprint.bounds),
        datetime=source.datetime,
        properties=props,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = gbox.crs
    assert crs is not None
    proj.code = f"EPSG:{crs.epsg}" if crs.epsg else None
    if crs.epsg is None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = list(gbox.shape.yx)
    proj.transform = list(gbox.transform)[:6]
    proj.bbox = list(gbox.extent.boundingbox)
    for band, (cog, dtype, scale, offset, nodata) in cogs.items():
        info = S2_BANDS[band]
        is_class = info.kind == "classification"
        asset = pystac.Asset(
            href=f"./{band}.tif",
            media_type=pystac.MediaType.COG,
            title=f"{band}" + (f" ({info.common_name})" if info.common_name else ""),
            roles=["data"] if is_class else ["data", "reflectance"],
        )
        item.add_asset(band, asset)
        rb = RasterBand.create(
            nodata=nodata if nodata is None or not np.isnan(nodata) else NoDataStrings.NAN,
            data_type=DataType(dtype),
            spatial_resolution=float(gbox.resolution.x),
        )
        if not is_class:
            rb.scale, rb.offset = scale, offset
        RasterExtension.ext(asset, add_if_missing=True).bands = [rb]
        if is_class:
            ClassificationExtension.ext(asset, add_if_missing=True).classes = [
                Classification.create(value=v, name=n, nodata=v == 0 or None)
                for v, n in SCL_CLASSES.items()
            ]
        else:
            EOExtension.ext(asset, add_if_missing=True).bands = [
                Band.create(
                    name=band,
                    common_name=eo_common_name(info.common_name),
                    center_wavelength=info.center_wavelength,
                    full_width_half_max=info.fwhm,
                )
            ]
        fe = FileExtension.ext(asset, add_if_missing=True)
        fe.size = cog.size
        fe.checksum = cog.checksum
    for uri in prov.schema_uris():
        if uri not in item.stac_extensions:
            item.stac_extensions.append(uri)
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    return doc
