""":func:`generate_sample`: the forward model run date by date (surface, terrain, clouds,
atmosphere, sensor), written as L1C and L2A COGs and items with the truth beside them."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..errors import CatalogError
from .arrays import block_mean, stream_rng
from .atmosphere import DIFFUSE, PATH_REFLECTANCE, TRANSMITTANCE, Air, band_atmosphere, haze_field
from .clouds import (
    CIRRUS_SPECTRUM,
    CLOUD_SPECTRUM,
    Clouds,
    apparent_clouds,
    make_clouds,
    truth_map,
)
from .geometry import grid_shape, lonlat, lonlat_bbox, wedge_mask
from .granule import granule_angles, write_granule
from .landcover import make_landscape, surface_reflectance
from .manifest import MANIFEST_NAME, write_manifest
from .msi import (
    ALONG_TRACK_DEG,
    BAND_INDEX,
    BAND_NAMES,
    BANDS,
    NOISE_SIGMA,
    detector_gains,
    view_angles,
)
from .scl import scl_from_truth, scl_stats
from .spec import Sample, SampleScene, SampleSpec
from .stac import L1C_COLLECTION, L2A_COLLECTION, date_meta, make_collection, make_item
from .terrain import add_terrain, illumination
from .write import encode_dn, write_cog, write_json

logger = logging.getLogger(__name__)

_B10: Final = BAND_INDEX["B10"]
_DEFAULT_SPEC: Final = SampleSpec()


def generate_sample(
    root: str | Path,
    spec: SampleSpec = _DEFAULT_SPEC,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Sample:
    """Write a synthetic Sentinel-2 sample under ``root`` and return its description.

    ``root`` is created if needed. An existing sample there (a ``sample.json``) is only replaced
    with ``overwrite=True``. ``progress(done, total)`` is called after each date.
    """
    t_start = time.perf_counter()
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if manifest.exists() and not overwrite:
        raise CatalogError(
            f"{manifest} already exists; pass overwrite=True or choose an empty directory"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create sample directory {root}: {exc}") from exc
    root = root.resolve()

    hp, wp = 6 * -(-spec.height // 6), 6 * -(-spec.width // 6)
    land, dem = add_terrain(spec, make_landscape(spec, (hp, wp)))
    level = np.isin(land.lc, (1, 2))  # water surfaces are level
    write_cog(
        root / "landcover.tif",
        land.lc[: spec.height, : spec.width],
        spec,
        10,
        nodata=0,
        resampling="nearest",
    )
    write_cog(root / "dem.tif", dem[: spec.height, : spec.width], spec, 10, nodata=None)
    air = Air.above(dem)
    bbox = lonlat_bbox(spec)
    lon_c, lat_c = lonlat(spec, [(spec.width / 2, spec.height / 2)])[0]
    wedge_date = None
    if spec.nodata_date is not None:
        wedge_date = spec.nodata_date % spec.n_dates

    scenes: list[SampleScene] = []
    l2a_items: list[dict[str, Any]] = []
    l1c_items: list[dict[str, Any]] = []
    scene_records: list[dict[str, Any]] = []
    for i in range(spec.n_dates):
        t0 = time.perf_counter()
        meta = date_meta(spec, i, lon_c, lat_c)
        active = wedge_date == i
        intrinsic = surface_reflectance(land, 5.0 * i, stream_rng(spec.seed, 3, i))
        direct, sky = illumination(dem, level, meta.sun_zenith, meta.sun_azimuth)
        k_diffuse = DIFFUSE[:, None, None]
        surf = np.clip(intrinsic * ((1 - k_diffuse) * direct + k_diffuse * sky), 0.0, 1.0)
        view_zenith, view_azimuth = view_angles(i)
        pad = 0
        if spec.parallax:
            reach = 4000.0 * (
                math.tan(math.radians(view_zenith))
                + math.tan(math.radians(float(np.abs(ALONG_TRACK_DEG).max())))
            )
            pad = math.ceil(reach / 10.0) + 2
        true_clouds = make_clouds(
            spec, i, (hp, wp), (spec.height, spec.width), meta.sun_zenith, meta.sun_azimuth, pad
        )
        if spec.parallax:
            looks = [
                apparent_clouds(true_clouds, pad, view_zenith, view_azimuth, bi)
                for bi in range(len(BANDS))
            ]
        else:
            looks = [true_clouds] * len(BANDS)
        # a pixel is clear only where no band sees any cloud
        seen = Clouds(
            alpha=np.max([c.alpha for c in looks], axis=0),
            rho=looks[0].rho,
            height=looks[0].height,
            shadow=looks[0].shadow,
            cirrus=np.max([c.cirrus for c in looks], axis=0),
        )
        nod10 = wedge_mask(spec, 10, active)
        truth = truth_map(seen, np.zeros((hp, wp), bool))[: spec.height, : spec.width]
        truth[nod10] = 255

        arng = stream_rng(spec.seed, 4, i)
        aerosol = arng.uniform(0.7, 1.4)
        vapour = arng.uniform(0.85, 1.15)
        path = PATH_REFLECTANCE * np.float32(aerosol)
        trans = (1.0 - (1.0 - TRANSMITTANCE) * np.float32(aerosol)).astype(np.float32)
        trans[BAND_INDEX["B09"]] = np.float32(TRANSMITTANCE[BAND_INDEX["B09"]] / vapour)
        trans[_B10] = np.float32(TRANSMITTANCE[_B10] / vapour)
        haze, haze_found = haze_field(spec, i, (hp, wp))
        gains = detector_gains(spec, i) if spec.striping else None

        nrng = stream_rng(spec.seed, 5, i)
        l2a_id = f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_L2A"
        l1c_id = f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_L1C"
        for bi, b in enumerate(BANDS):
            cl = looks[bi]
            k = DIFFUSE[bi]
            lit = intrinsic[bi] * ((1 - k) * direct * (1.0 - cl.shadow) + k * sky)
            p_true, t_true = band_atmosphere(bi, haze, path, trans, aerosol, air)
            if bi == _B10:
                cloud_b10 = cl.rho * (0.008 + 0.012 * cl.height / 1000.0)
                toa = p_true + t_true * (1.0 - cl.alpha) * lit + cl.alpha * cloud_b10 + cl.cirrus
            else:
                boa = (
                    (1.0 - cl.alpha) * lit
                    + cl.alpha * cl.rho * CLOUD_SPECTRUM[bi]
                    + cl.cirrus * CIRRUS_SPECTRUM[bi]
                )
                toa = p_true + t_true * boa
            shape = grid_shape(spec, b.res)
            f = b.res // 10
            native = block_mean(toa.astype(np.float32), f, shape)
            if gains is not None:
                native *= gains[bi]
            native += nrng.standard_normal(shape, dtype=np.float32) * NOISE_SIGMA[bi]
            nod = wedge_mask(spec, b.res, active)
            l1c_dn = encode_dn(native, meta.l1c_dn_offset, nod)
            write_cog(root / "l1c" / l1c_id / f"{b.key}.tif", l1c_dn, spec, b.res, nodata=0)
            if bi != _B10:
                # the L2A correction knows the DEM but only the smooth part of the haze
                p_found, t_found = band_atmosphere(bi, haze_found, path, trans, aerosol, air)
                p_n, t_n = block_mean(p_found, f, shape), block_mean(t_found, f, shape)
                boa_native = ((native - p_n) / t_n).astype(np.float32)
                l2a_dn = encode_dn(boa_native, meta.l2a_dn_offset, nod)
                write_cog(root / "l2a" / l2a_id / f"{b.key}.tif", l2a_dn, spec, b.res, nodata=0)

        nod20 = wedge_mask(spec, 20, active)
        visible_shadow = (seen.shadow > 0) & (seen.alpha == 0) & (seen.cirrus == 0)
        scl = scl_from_truth(
            spec, i, seen.alpha, seen.cirrus, visible_shadow, land.lc, surf, direct, nod20
        )
        write_cog(root / "l2a" / l2a_id / "scl.tif", scl, spec, 20, nodata=0, resampling="nearest")
        n_valid20 = max(int((scl != 0).sum()), 1)
        cover = 100.0 * float(np.isin(scl, (8, 9, 10)).sum()) / n_valid20

        truth_path = root / "truth" / f"{l2a_id}_truth.tif"
        surface_path = root / "surface" / f"{l2a_id}_surface.tif"
        write_cog(truth_path, truth, spec, 10, nodata=255, resampling="nearest")
        write_cog(
            surface_path,
            surf[:, : spec.height, : spec.width],
            spec,
            10,
            nodata=None,
            descriptions=BAND_NAMES,
        )

        l1c = make_item(spec, meta, "L1C", root, None, active, cover, l1c_id)
        l2a = make_item(spec, meta, "L2A", root, scl, active, cover, l1c_id)
        write_json(root / "l2a" / f"{l2a_id}.json", l2a)
        write_json(root / "l1c" / f"{l1c_id}.json", l1c)
        angles = granule_angles(spec, meta)
        for item, level_name in ((l2a, "L2A"), (l1c, "L1C")):
            href = item["assets"]["granule_metadata"]["href"]
            write_granule(Path(href), angles, level_name, item["properties"])
        valid = truth != 255
        n_valid = max(int(valid.sum()), 1)
        cloud_fraction = float(np.isin(truth, (1, 2, 3)).sum()) / n_valid
        shadow_fraction = float((truth == 4).sum()) / n_valid
        stats = scl_stats(scl, truth)
        scene = SampleScene(
            l2a_item=l2a,
            l1c_item=l1c,
            truth_path=truth_path,
            surface_path=surface_path,
            cloud_fraction=cloud_fraction,
            l2a_dn_offset=meta.l2a_dn_offset,
            l1c_dn_offset=meta.l1c_dn_offset,
            shadow_fraction=shadow_fraction,
            nodata_fraction=float((~valid).mean()),
            scl_stats=stats,
        )
        scenes.append(scene)
        l2a_items.append(l2a)
        l1c_items.append(l1c)
        scene_records.append(
            {
                "l2a_item": f"l2a/{l2a_id}.json",
                "l1c_item": f"l1c/{l1c_id}.json",
                "truth": truth_path.relative_to(root).as_posix(),
                "surface": surface_path.relative_to(root).as_posix(),
                "cloud_fraction": cloud_fraction,
                "shadow_fraction": shadow_fraction,
                "nodata_fraction": scene.nodata_fraction,
                "l2a_dn_offset": meta.l2a_dn_offset,
                "l1c_dn_offset": meta.l1c_dn_offset,
                "processing_baseline": meta.baseline,
                "boa_offset_applied": meta.boa_applied,
                "scl_stats": stats,
            }
        )
        logger.info(
            "sample date %d/%d %s: cloud %.1f %%, shadow %.1f %%, eo:cloud_cover %.1f %% (%.2f s)",
            i + 1,
            spec.n_dates,
            l2a_id,
            100 * cloud_fraction,
            100 * shadow_fraction,
            cover,
            time.perf_counter() - t0,
        )
        if progress is not None:
            progress(i + 1, spec.n_dates)

    interval = (l2a_items[0]["properties"]["datetime"], l2a_items[-1]["properties"]["datetime"])
    l2a_coll = root / "collections" / f"{L2A_COLLECTION}.json"
    l1c_coll = root / "collections" / f"{L1C_COLLECTION}.json"
    write_json(l2a_coll, make_collection(spec, root, "L2A", bbox, interval))
    write_json(l1c_coll, make_collection(spec, root, "L1C", bbox, interval))
    l2a_fc, l1c_fc = root / "l2a_items.json", root / "l1c_items.json"
    write_json(l2a_fc, {"type": "FeatureCollection", "features": l2a_items})
    write_json(l1c_fc, {"type": "FeatureCollection", "features": l1c_items})
    sample = Sample(
        root=root,
        spec=spec,
        scenes=tuple(scenes),
        l2a_collection_path=l2a_coll,
        l1c_collection_path=l1c_coll,
        l2a_items_path=l2a_fc,
        l1c_items_path=l1c_fc,
        bbox=bbox,
        landcover_path=root / "landcover.tif",
        dem_path=root / "dem.tif",
    )
    write_manifest(sample, scene_records)
    logger.info("sample written to %s in %.2f s", root, time.perf_counter() - t_start)
    return sample
