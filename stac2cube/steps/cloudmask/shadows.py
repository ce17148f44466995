"""Cloud shadows: SCL class 3 and/or a geometric search. Each connected cloud object is
projected away from the sun by ``h·tan(zenith)`` for the heights ``h`` of ``shadow_heights``;
the height whose projection lands on the largest fraction of dark-NIR, cloud-free pixels is
kept, and the shadow is the projection ∩ dark NIR ∩ not cloud. Dark NIR is L2A B08 (else B8A,
else the TOA B08 upsampled) below ``dark_nir``; objects smaller than :data:`MIN_SEARCH_PIXELS`
are projected at the scene's median height."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...bands import SCL_SHADOW
from ...errors import StepError
from ..base import Scene
from .config import CloudMaskConfig

MIN_SEARCH_PIXELS: Final = 9
"""Cloud objects smaller than this (output-grid pixels) get the scene's median shadow height."""
MAX_SEARCH_SAMPLES: Final = 2000
"""Pixels of a cloud object sampled (on a regular stride) to score each shadow height."""

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


def sun_angles(props: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(azimuth, zenith)`` in degrees from item properties (``view:sun_*`` or
    ``s2:mean_solar_*``), or None when the item has neither."""
    az = props.get("view:sun_azimuth", props.get("s2:mean_solar_azimuth"))
    if "view:sun_elevation" in props:
        zen: Any = 90.0 - float(props["view:sun_elevation"])
    else:
        zen = props.get("s2:mean_solar_zenith")
    if az is None or zen is None:
        return None
    return float(az), float(zen)


def shadow_offsets(
    heights: NDArray[np.float64], azimuth: float, zenith: float, geobox: GeoBox
) -> NDArray[np.intp]:
    """``(len(heights), 2)`` pixel offsets ``(rows, cols)`` of the shadow of a cloud at each height.

    The shadow lies ``h·tan(zenith)`` away from the sun: towards azimuth + 180° (azimuth clockwise
    from north), converted to pixel offsets with the grid's affine (rows grow southward on a
    north-up grid).
    """
    d = heights * math.tan(math.radians(zenith))
    az = math.radians(azimuth)
    dx, dy = -d * math.sin(az), -d * math.cos(az)  # east, north (CRS units)
    a = geobox.affine
    inv = np.linalg.inv(np.array([[a.a, a.b], [a.d, a.e]], dtype=np.float64))
    dc = inv[0, 0] * dx + inv[0, 1] * dy
    dr = inv[1, 0] * dx + inv[1, 1] * dy
    return np.stack([np.rint(dr), np.rint(dc)], axis=1).astype(np.intp)


@dataclass(frozen=True)
class ShadowSearch:
    """Result of the geometric shadow search."""

    shadow: BoolA
    """Projected cloud ∩ dark NIR ∩ not cloud ∩ valid."""
    height_m: float | None
    """Pixel-weighted median of the per-object heights (None without cloud objects)."""
    n_objects: int
    projected: BoolA
    """The cloud objects projected at their heights, before the intersection with dark,
    cloud-free pixels (what a search on a coarse grid hands to the finer one)."""


def geometric_shadows(
    cloud: BoolA,
    dark: BoolA,
    valid: BoolA,
    offsets: NDArray[np.intp],
    heights: NDArray[np.float64],
    min_pixels: int = MIN_SEARCH_PIXELS,
) -> ShadowSearch:
    """Per connected cloud object, the height whose projection covers the largest fraction of
    dark, cloud-free pixels; the shadow is the union of the projections ∩ dark ∩ not cloud.
    Objects of fewer than ``min_pixels`` pixels get the median height of the others."""
    from scipy import ndimage

    h, w = cloud.shape
    labels, n = ndimage.label(cloud, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ShadowSearch(np.zeros_like(cloud), None, 0, np.zeros_like(cloud))
    candidate = valid & ~cloud
    dark_cand = dark & candidate
    best = np.full(n, -1, dtype=np.intp)
    sizes = np.zeros(n, dtype=np.intp)
    objects = ndimage.find_objects(labels)
    pixels: list[tuple[NDArray[np.intp], NDArray[np.intp]]] = []
    for i, sl in enumerate(objects):
        assert sl is not None
        rr, cc = np.nonzero(labels[sl] == i + 1)
        rr = rr + sl[0].start
        cc = cc + sl[1].start
        pixels.append((rr, cc))
        sizes[i] = rr.size
        if rr.size < min_pixels:
            continue
        step = -(-rr.size // MAX_SEARCH_SAMPLES)
        sr, sc = rr[::step], cc[::step]
        r = sr[None, :] + offsets[:, 0:1]
        c = sc[None, :] + offsets[:, 1:2]
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        rc, cclip = np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)
        n_cand = (candidate[rc, cclip] & inside).sum(axis=1)
        n_dark = (dark_cand[rc, cclip] & inside).sum(axis=1)
        # a projection that mostly falls off the grid or onto other clouds is not evidence
        enough = n_cand >= max(1, sr.size // 4)
        score = np.where(enough, n_dark / np.maximum(n_cand, 1), -1.0)
        if score.max() > 0:
            best[i] = int(np.argmax(score))
    searched = best >= 0
    if searched.any():
        idx = np.repeat(best[searched], sizes[searched])
        median_k = int(np.median(idx))
        height: float | None = float(heights[median_k])
    else:
        median_k, height = len(heights) // 2, None
    projected = np.zeros_like(cloud)
    for i, (rr, cc) in enumerate(pixels):
        k = best[i] if best[i] >= 0 else median_k
        if best[i] < 0 and sizes[i] >= min_pixels:
            continue  # searched, but no height put it on a dark pixel
        r, c = rr + offsets[k, 0], cc + offsets[k, 1]
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        projected[r[ok], c[ok]] = True
    return ShadowSearch(projected & dark_cand, height, n, projected)


def nir_source(bands: Collection[str], has_toa_nir: bool) -> str:
    """Which NIR band the dark-pixel test takes, given the scene's ``bands``: ``l2a:B08``,
    else ``l2a:B8A``, else ``toa:B08`` (when s2cloudless read the TOA bands)."""
    for b in ("B08", "B8A"):
        if b in bands:
            return f"l2a:{b}"
    if has_toa_nir:
        return "toa:B08"
    raise StepError(
        "geometric cloud shadows need a NIR band: add B08 or B8A to `bands`, or set "
        "steps.cloudmask.shadows to scl or none"
    )


def _nir(scene: Scene, toa_nir: F32 | None) -> tuple[F32, str]:
    """The NIR band of the dark-pixel test and where it came from."""
    src = nir_source(scene.bands, toa_nir is not None)
    if src == "toa:B08":
        assert toa_nir is not None
        return toa_nir, src
    return np.asarray(scene.bands[src.removeprefix("l2a:")], dtype=np.float32), src


def require_sun_angles(item_id: str, props: Mapping[str, Any]) -> tuple[float, float]:
    """:func:`sun_angles` of an item, which the geometric search cannot do without."""
    angles = sun_angles(props)
    if angles is None:
        raise StepError(
            f"{item_id}: geometric shadows need the sun angles, but the item has "
            "neither view:sun_azimuth/view:sun_elevation nor "
            "s2:mean_solar_azimuth/s2:mean_solar_zenith; use shadows: scl or none"
        )
    return angles


def shadow_mask(
    scene: Scene,
    cfg: CloudMaskConfig,
    cloud: BoolA,
    known: BoolA,
    toa_nir: F32 | None,
    results: dict[str, Any],
) -> BoolA:
    """The cloud shadows of ``scene`` (``cfg.shadows``) on its ``known`` pixels, off ``cloud``;
    what the geometric search found goes into ``results``."""
    gbox = scene.geobox
    shape = gbox.shape.yx
    scl = scene.classes.get("SCL")
    shadow = np.zeros(shape, dtype=bool)
    if cfg.shadows in ("scl", "both"):
        assert scl is not None
        shadow |= scl == SCL_SHADOW
    if cfg.shadows in ("geometric", "both"):
        angles = require_sun_angles(scene.item_id, scene.source_properties)
        nir, nir_src = _nir(scene, toa_nir)
        dark = np.less(nir, cfg.dark_nir, where=np.isfinite(nir), out=np.zeros(shape, bool))
        heights = cfg.heights()
        offsets = shadow_offsets(heights, angles[0], angles[1], gbox)
        search = geometric_shadows(cloud, dark, known, offsets, heights)
        shadow |= search.shadow
        results.update(
            shadow_height_m=search.height_m,
            shadow_objects=search.n_objects,
            shadow_nir=nir_src,
            sun_azimuth=angles[0],
            sun_zenith=angles[1],
        )
    shadow &= known & ~cloud
    return shadow
