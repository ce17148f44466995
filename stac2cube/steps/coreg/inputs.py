"""What the matching sees: the scene's match band and the reference on the scene's grid, the
pixels that must not drive the matching (mask layers, nodata) and the anomalies no mask layer
flags (clouds, haze, shadows and changed surfaces, found against the reference)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...bands import MASK_CLEAR, SCL_BAD
from ...errors import StepError
from ..base import AuxLayer, Scene
from .backend import CoregFailure
from .config import CoregConfig
from .windows import window_bad_fraction

MATCH_BAND_FALLBACK: Final = ("B08", "B8A", "B04", "B03", "B02")
"""Bands tried, in order, when the scene has no ``match_band``."""
CLOUD_MASK_CLEAR: Final = MASK_CLEAR
"""The ``CLOUD_MASK`` value of clear pixels (see :mod:`stac2cube.steps.cloudmask`)."""
ANOMALY_MADS: Final = 5.0
"""Robust standard deviations of the scene-minus-reference difference beyond which a pixel is an
anomaly (cloud, haze, shadow or change) that must not drive the matching."""
ANOMALY_MIN_DIFF: Final = 0.02
"""Smallest difference (reflectance, after the box average) an anomaly has: below the 0.03 of
the multi-temporal cloud test (Hagolle et al. 2010), above what a sub-pixel misregistration
makes of a smoothed edge."""

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


@dataclass
class MatchInputs:
    """The pixels the matching works on, all on the scene's grid."""

    target: F32
    reference: F32
    bad_tgt: BoolA
    bad_ref: BoolA
    frac: F32
    band: str
    anomaly: BoolA
    """:func:`anomaly_mask`: kept out of the windows' placement, tie points and the alignment
    check, but not filled (a strong edge the misregistration itself makes can be flagged)."""
    anomalies: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def bad_any(self) -> BoolA:
        """Bad in the scene or the reference, or an anomaly."""
        out: BoolA = self.bad_tgt | self.bad_ref | self.anomaly
        return out

    def cut(self, sl: tuple[slice, slice]) -> MatchInputs:
        """These inputs over the region ``sl`` (views, no copy)."""
        return MatchInputs(
            self.target[sl],
            self.reference[sl],
            self.bad_tgt[sl],
            self.bad_ref[sl],
            self.frac[sl],
            self.band,
            self.anomaly[sl],
            self.anomalies,
        )


@dataclass(frozen=True)
class WindowCrop:
    """What one global matching window is matched on: the inputs cut to the pixels its
    matching can touch (:func:`~stac2cube.steps.coreg.estimate.window_support`), their grid,
    and the window's centre on the crop and on the scene."""

    inp: MatchInputs
    geobox: GeoBox
    row: int
    """The window's centre on the crop."""
    col: int
    center_px: tuple[int, int]
    """The window's centre on the scene, ``(col, row)``, for the record."""
    reject: str | None = None
    """Why the window is not matched although it was placed (None: match it)."""


def bad_data_mask(scene: Scene) -> BoolA:
    """Pixels of ``scene`` that must not drive the matching: not clear in ``CLOUD_MASK`` when
    present, else SCL classes :data:`SCL_BAD` when present (no mask layer: none)."""
    shape = scene.geobox.shape.yx
    if "CLOUD_MASK" in scene.classes:
        bad: BoolA = np.asarray(scene.classes["CLOUD_MASK"]) != CLOUD_MASK_CLEAR
        return bad
    if "SCL" in scene.classes:
        bad = np.isin(np.asarray(scene.classes["SCL"]), SCL_BAD)
        return bad
    return np.zeros(shape, dtype=bool)


def match_band(scene: Scene, cfg: CoregConfig) -> str:
    """``match_band`` when the scene has it, else the first of :data:`MATCH_BAND_FALLBACK`."""
    return first_match_band(scene.item_id, scene.bands, cfg)


def first_match_band(item_id: str, bands: Collection[str], cfg: CoregConfig) -> str:
    """``match_band`` when it is among ``bands``, else the first of
    :data:`MATCH_BAND_FALLBACK` that is."""
    for b in (cfg.match_band, *MATCH_BAND_FALLBACK):
        if b in bands:
            return b
    raise StepError(
        f"{item_id}: co-registration needs a band to match; the scene has none of "
        f"{cfg.match_band}, {', '.join(MATCH_BAND_FALLBACK)}; add steps.coreg.match_band to `bands`"
    )


def for_matching(band: F32, bad: BoolA) -> F32:
    """The band as AROSICS should see it: its own bad pixels (NaN, and for the scene its cloud,
    shadow and nodata mask; not the anomalies) set to the band's mean over its good pixels.

    AROSICS uses the bad-data masks only to place its window, then correlates whatever the window
    holds: a cloud hole filled with ``-9999`` swamps the spectrum with its edges and the match
    fails. Each image is filled with its *own* mask only: filling the union in both would put an
    identical patch at the same place in both and pull the peak towards zero shift."""
    out = np.array(band, dtype=np.float32, copy=True)
    good = np.isfinite(out) & ~bad
    out[~good] = np.float32(out[good].mean()) if good.any() else np.float32(0.0)
    return out


def anomaly_mask(
    scene: Scene, target: F32, reference: F32, bad: BoolA, max_shift: float
) -> tuple[BoolA, dict[str, Any]]:
    """Pixels that must not drive the matching although no mask layer flags them: clouds, haze
    and shadows the mask missed (or all of them when no mask step ran) and changed surfaces.

    * **Difference to the reference**: both bands are averaged over boxes of ``2 max_shift + 1``
      px (so that a misregistration of up to ``max_shift`` px barely changes them), the scene is
      fitted to the reference by a line (gain and offset, two passes leaving out > 3 MAD), and
      pixels whose residual is more than :data:`ANOMALY_MADS` robust standard deviations, and
      at least :data:`ANOMALY_MIN_DIFF`, from the median are flagged.
    * **Haze-optimised transform** (Zhang et al. 2002, the first test of Fmask, Zhu & Woodcock
      2012) when the scene has B02 and B04: ``B02 - 0.5 B04 - 0.08 > 0``. Made for TOA
      reflectance; on L2A surface reflectance it flags less, never more.

    The union is dilated by the box radius. Returns the mask and a record of what it found."""
    from scipy import ndimage

    shape = target.shape
    ok = ~bad & np.isfinite(target) & np.isfinite(reference)
    info: dict[str, Any] = {}
    out = np.zeros(shape, dtype=bool)
    size = int(min(max(2 * math.ceil(max_shift) + 1, 5), 21))
    if int(ok.sum()) >= 1000:
        w = ok.astype(np.float32)
        den = np.maximum(ndimage.uniform_filter(w, size), 1e-6)
        ts = ndimage.uniform_filter(np.where(ok, target, 0.0).astype(np.float32), size) / den
        rs = ndimage.uniform_filter(np.where(ok, reference, 0.0).astype(np.float32), size) / den
        x, y = rs[ok].astype(np.float64), ts[ok].astype(np.float64)
        keep = np.ones(x.size, dtype=bool)
        gain, offset = 1.0, 0.0
        for _ in range(2):
            if keep.sum() < 100 or float(np.ptp(x[keep])) <= 0.0:
                break
            gain, offset = (float(v) for v in np.polyfit(x[keep], y[keep], 1))
            r = y - (gain * x + offset)
            med = float(np.median(r[keep]))
            mad = 1.4826 * float(np.median(np.abs(r[keep] - med)))
            keep = np.abs(r - med) <= 3.0 * mad
        res = ts - (gain * rs + offset)
        med = float(np.median(res[ok]))
        mad = 1.4826 * float(np.median(np.abs(res[ok] - med)))
        out |= ok & (np.abs(res - med) > max(ANOMALY_MADS * mad, ANOMALY_MIN_DIFF))
        info["difference_fraction"] = round(float(out.sum()) / max(int(ok.sum()), 1), 4)
    if "B02" in scene.bands and "B04" in scene.bands:
        blue = np.asarray(scene.bands["B02"], dtype=np.float32)
        red = np.asarray(scene.bands["B04"], dtype=np.float32)
        valid = np.isfinite(blue) & np.isfinite(red)
        hot = np.greater(blue - 0.5 * red - 0.08, 0.0, where=valid, out=np.zeros(shape, bool))
        info["hot_fraction"] = round(float(hot.mean()), 4)
        out |= hot
    if out.any():
        out = ndimage.binary_dilation(out, iterations=size // 2)
    info["fraction"] = round(float(out.mean()), 4)
    return out, info


def match_inputs(
    scene: Scene,
    ref: AuxLayer,
    cfg: CoregConfig,
    anomalies: tuple[BoolA, dict[str, Any]] | None = None,
) -> MatchInputs:
    """The match band, the reference and the bad pixels and anomalies of both: those
    :func:`anomaly_mask` finds in ``scene``, or ``anomalies`` (the mask on the scene's grid and
    its record) when found elsewhere."""
    shape = scene.geobox.shape.yx
    data = np.asarray(ref.data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1:] != shape:
        raise StepError(
            f"{scene.item_id}: the co-registration reference has shape {data.shape}, "
            f"expected (1, {shape[0]}, {shape[1]}) on the scene's grid; the pipeline must "
            "read it as CoregStep.required_aux asks (resolution 0 = the scene grid)"
        )
    band = match_band(scene, cfg)
    target = np.asarray(scene.bands[band], dtype=np.float32)
    reference = np.asarray(data[0], dtype=np.float32)
    bad_tgt = bad_data_mask(scene) | ~np.isfinite(target)
    bad_ref = ~np.isfinite(reference)
    if anomalies is None:
        anomalies = anomaly_mask(scene, target, reference, bad_tgt | bad_ref, cfg.max_shift)
    anomaly, info = anomalies
    frac = window_bad_fraction(bad_tgt | bad_ref | anomaly, cfg.window)
    return MatchInputs(target, reference, bad_tgt, bad_ref, frac, band, anomaly, info)


def clear_overlap(inp: MatchInputs, results: dict[str, Any]) -> BoolA:
    """The pixels clear and valid in both the scene and the reference; ``results`` get their
    fraction. Raises :class:`CoregFailure` when there is none."""
    usable: BoolA = ~inp.bad_any
    results["clear_overlap_fraction"] = round(float(usable.mean()), 4)
    if not usable.any():
        if not np.isfinite(inp.reference).any():
            raise CoregFailure("the reference has no valid pixel over the scene")
        raise CoregFailure("the scene and the reference share no clear valid pixel")
    return usable
