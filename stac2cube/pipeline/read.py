"""Reading a scene: every configured band harmonised onto the target grid, and the
auxiliary inputs its steps ask for (L1C TOA of the twin, L2A bands, catalog references)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.errors
from odc.geo.geobox import GeoBox

from .. import __version__
from ..angles import ANGLE_BANDS, granule_metadata_asset, read_granule_metadata
from ..bands import S2_BANDS
from ..catalog import (
    CLOUD_REFERENCE_ASSET,
    REFERENCE_ASSET,
)
from ..config import Config
from ..errors import (
    AssetAccessError,
    NoOverlapError,
    Stac2CubeError,
)
from ..io.read import BandRead, href_without_credentials, read_band
from ..io.threads import map_layers, scene_threads
from ..provenance import InputRecord, StepRecord
from ..radiometry import (
    RadiometryOverride,
    processing_baseline,
)
from ..references.store import read_reference
from ..steps.base import AuxLayer, AuxRequest, Scene, Step
from .twins import l1c_env

log = logging.getLogger(__name__)


def read_scene(
    item: pystac.Item, config: Config, geobox: GeoBox
) -> tuple[Scene, tuple[InputRecord, ...], tuple[StepRecord, ...]]:
    """Read and harmonise every configured band of ``item`` onto ``geobox`` (coarser bands
    repeated with ``output.native_resolution``: :func:`native_reads`)."""
    override = radiometry_override(item, config)
    repeat = native_reads(config)
    reads: dict[str, BandRead] = {}
    with source_env():
        for band in config.bands:
            reads[band] = read_band(item, band, geobox, override=override, repeat=repeat)
    scene = scene_from_reads(item, geobox, reads)
    valid = valid_pixels(reads)
    n_valid = int(valid.sum())
    check_overlap(item, n_valid)
    inputs = tuple(input_record(b, r, item) for b, r in reads.items())
    return scene, inputs, (harmonise_record(item, geobox, reads, n_valid / valid.size),)


def scene_from_reads(item: pystac.Item, geobox: GeoBox, reads: Mapping[str, BandRead]) -> Scene:
    """The :class:`Scene` of ``reads`` on ``geobox``: reflectance bands and class layers."""
    kind = {b: S2_BANDS[b].kind for b in reads}
    return Scene(
        item_id=item.id,
        geobox=geobox,
        bands={b: r.data for b, r in reads.items() if kind[b] != "classification"},
        classes={b: r.data for b, r in reads.items() if kind[b] == "classification"},
        source_properties=dict(item.properties),
    )


def native_reads(config: Config) -> bool:
    """Whether a scene's bands are read onto the target grid for steps and then written on
    their native grids (``output.native_resolution``): a coarser band is then repeated (nearest)
    rather than interpolated, so that the mean over each of its pixels
    (:func:`~stac2cube.grid.to_native`) gives back the source's pixels wherever no step changed
    them."""
    return config.output.native_resolution


def radiometry_override(item: pystac.Item, config: Config) -> RadiometryOverride | None:
    """The configured radiometry of ``item``'s collection, if any (``radiometry.overrides``)."""
    ov_cfg = config.radiometry.overrides.get(item.collection_id or "")
    return RadiometryOverride(ov_cfg.scale, ov_cfg.offset) if ov_cfg else None


def source_env(**options: Any) -> rasterio.Env:
    """GDAL's settings while a scene's bands are read, and ``options``."""
    return rasterio.Env(
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="3", **options
    )


def counts_for_validity(band: str, bands: Sequence[str]) -> bool:
    """Whether ``band`` decides which pixels are valid: every reflectance band, or every class
    band (SCL) when no reflectance band is read."""
    reflectance = [b for b in bands if S2_BANDS[b].kind != "classification"]
    return band in reflectance if reflectance else True


def valid_pixels(reads: Mapping[str, BandRead]) -> np.ndarray:
    """Pixels where every band of :func:`counts_for_validity` has data (on one grid)."""
    masks = [has_data(r) for b, r in reads.items() if counts_for_validity(b, list(reads))]
    valid: np.ndarray = np.logical_and.reduce(masks)
    return valid


def has_data(read: BandRead) -> np.ndarray:
    """Where a read has data (:func:`band_has_data`)."""
    return band_has_data(read.band, read.data)


def band_has_data(band: str, data: np.ndarray) -> np.ndarray:
    """Where ``data`` of ``band`` has data: finite reflectance, a class other than 0 (SCL's
    nodata)."""
    if S2_BANDS[band].kind == "classification":
        out: np.ndarray = np.asarray(data) > 0
        return out
    mask: np.ndarray = np.isfinite(data)
    return mask


def check_overlap(item: pystac.Item, n_valid: int) -> None:
    """A :class:`~stac2cube.errors.NoOverlapError` when the scene has no valid pixel."""
    if n_valid == 0:
        raise NoOverlapError(
            f"{item.id} has no valid pixel inside the AOI (all bands are nodata there); the "
            "scene's footprint only touches the AOI's bounding box or lies on a swath edge"
        )


def harmonise_record(
    item: pystac.Item, geobox: GeoBox, reads: Mapping[str, BandRead], valid_fraction: float
) -> StepRecord:
    """The record of reading and harmonising ``item``'s bands onto ``geobox`` (the pixels of
    ``reads`` are not looked at)."""
    return StepRecord(
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
            "valid_fraction": round(valid_fraction, 6),
        },
    )


def read_aux(
    item: pystac.Item,
    twin: pystac.Item | None,
    scene: Scene,
    steps: Sequence[tuple[Step[Any], Any]],
    config: Config,
) -> tuple[Scene, tuple[InputRecord, ...]]:
    """Read what the steps ask for (e.g. L1C TOA bands at 60 m) into ``scene.aux``.

    L1C bands come from the twin only: without one, or when the storage refuses the read
    (:class:`~stac2cube.errors.AssetAccessError`), ``scene.missing_aux`` says why and the step
    decides (the cloud step masks with SCL, or fails with ``l1c: require``)."""
    aux = dict(scene.aux)
    missing = dict(scene.missing_aux)
    inputs: list[InputRecord] = []
    for step, cfg in steps:
        for name, req in step.required_aux(cfg).items():
            gbox = aux_geobox(scene.geobox, req)
            layer, why, got = read_aux_layer(item, twin, name, req, gbox, config)
            if layer is None:
                missing[name] = why
            else:
                aux[name] = layer
            inputs += got
    return scene.replace(aux=aux, missing_aux=missing), tuple(inputs)


def aux_geobox(geobox: GeoBox, req: AuxRequest) -> GeoBox:
    """The grid an auxiliary input is read on: ``geobox`` (resolution 0 or the same), else a
    grid of ``req.resolution`` over its extent."""
    if req.resolution <= 0 or req.resolution == geobox.resolution.x:
        return geobox
    return GeoBox.from_bbox(
        geobox.extent.boundingbox, geobox.crs, resolution=req.resolution, tight=False
    )


def read_aux_layer(
    item: pystac.Item,
    twin: pystac.Item | None,
    name: str,
    req: AuxRequest,
    gbox: GeoBox,
    config: Config,
) -> tuple[AuxLayer | None, str, list[InputRecord]]:
    """One auxiliary input on ``gbox``: the layer (None when it cannot be provided), why not,
    and the records of what was read."""
    if req.level in _REFERENCE_LEVELS:
        key = _REFERENCE_LEVELS[req.level]
        ref = read_reference(config, gbox, req.bands, key, when=item.datetime)
        if ref is None:
            return (
                None,
                f"the catalog has no {key} (its build failed or found no clear scene: "
                f"see <catalog>/_stac2cube/failures.jsonl, stage {key})",
                [],
            )
        asset_key = ref.version or key
        return ref, "", [InputRecord(f"{name}:{req.bands[0]}", asset_key, *_ref_src(ref, key))]
    if req.level == "angles":
        return read_angles(item, name, gbox)
    if req.level == "l1c":
        # never replaced by L2A bands: the step decides what a missing twin means
        if twin is None:
            return None, "no L1C twin", []
        try:
            with l1c_env(twin, config):
                layer, got = _read_aux_bands(
                    twin, name, req, gbox, config, item_href=twin.get_self_href()
                )
        except AssetAccessError as exc:
            log.warning("%s: L1C read refused: %s", item.id, exc)
            return None, f"L1C read refused: {exc}", []
        return dataclasses.replace(layer, source=f"l1c:{twin.id}"), "", got
    layer, got = _read_aux_bands(item, name, req, gbox, config, l2a=True)
    return layer, "", got


def read_angles(
    item: pystac.Item, name: str, gbox: GeoBox
) -> tuple[AuxLayer | None, str, list[InputRecord]]:
    """The per-pixel sun and view angles of ``item`` on ``gbox`` (:data:`ANGLE_BANDS`),
    interpolated from its granule metadata's 5 km grids; None and why when it has none or it
    cannot be read."""
    found = granule_metadata_asset(item)
    if found is None:
        return None, "the source item has no granule metadata (MTD_TL.xml) asset", []
    try:
        got = read_granule_metadata(item)
    except Stac2CubeError as exc:
        log.warning("%s: granule metadata not read: %s", item.id, exc)
        return None, f"granule metadata not read: {exc}", []
    assert got is not None  # the item has the asset
    grids, _ = got
    layer = AuxLayer(grids.on(gbox), gbox, ANGLE_BANDS, grids.source)
    key, asset = found  # the href as the item gives it, as for every input
    return layer, "", [InputRecord(f"{name}:granule_metadata", key, asset.href, item.id)]


def _read_aux_bands(
    src_item: pystac.Item,
    name: str,
    req: AuxRequest,
    gbox: GeoBox,
    config: Config,
    *,
    l2a: bool = False,
    item_href: str | None = None,
) -> tuple[AuxLayer, list[InputRecord]]:
    """The bands of ``req`` from ``src_item`` on ``gbox``; of an L2A item (``l2a``), B10, which
    L2A products do not carry, is a NaN plane. ``item_href``: where ``src_item`` was read from,
    when it is not the source item (for the inputs' records)."""
    override = radiometry_override(src_item, config)
    wanted = [b for b in req.bands if not (b == "B10" and l2a)]
    got = map_layers(
        lambda b: read_band(src_item, b, gbox, override=override), wanted, scene_threads()
    )
    reads = dict(zip(wanted, got, strict=True))
    planes = [
        reads[b].data if b in reads else np.full(gbox.shape.yx, np.nan, dtype="float32")
        for b in req.bands
    ]
    inputs = [input_record(f"{name}:{b}", r, src_item, item_href) for b, r in reads.items()]
    return AuxLayer(np.stack(planes), gbox, tuple(req.bands), "l2a"), inputs


def input_record(
    band: str, read: BandRead, item: pystac.Item, item_href: str | None = None
) -> InputRecord:
    """The record of ``read``: its asset's href as ``item`` gives it (a relative one stays
    relative: the reader resolves it, but a local path it resolved to never reaches the
    output item), without the credentials of a signed href (Planetary Computer)."""
    href = href_without_credentials(item.assets[read.asset_key].href)
    return InputRecord(band, read.asset_key, href, item.id, item_href)


_REFERENCE_LEVELS: Mapping[str, str] = {
    "reference": REFERENCE_ASSET,
    "cloud-reference": CLOUD_REFERENCE_ASSET,
}
"""``AuxRequest.level`` of a catalog reference -> its collection asset."""


def _ref_src(ref: AuxLayer, key: str) -> tuple[str, str]:
    href, _, ident = ref.source.partition("#")
    return href, ident or key
