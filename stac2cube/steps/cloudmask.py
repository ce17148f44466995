"""Cloud and cloud-shadow masking: s2cloudless and/or SCL, SCL or geometric shadows.

What the step does, per scene
-----------------------------
1. **Cloud probability** (methods ``s2cloudless``, ``union``, ``intersection``, or when extra
   ``thresholds`` are asked for): the shipped s2cloudless LightGBM model
   (``pixel_s2_cloud_detector_lightGBM_v0.1``) runs on the ten TOA bands
   :data:`S2CLOUDLESS_BANDS` that the pipeline reads at ``resolution`` into ``scene.aux["toa"]``
   from the L1C twin (what the model was trained on). Without a twin, or when its read was
   refused (``scene.missing_aux``), s2cloudless does **not** run: with ``l1c: auto`` the scene is
   masked by the L2A method, SCL (plus the multi-temporal test), and the results say
   ``s2cloudless: {status: not run, reason: ...}`` and ``method_used: scl``; ``l1c: require``
   fails the scene. Only ``l1c: never`` runs the model on the L2A bands (surface reflectance, no
   B10, which is then :data:`B10_FALLBACK_REFLECTANCE`), an explicit opt-in recorded as such.
2. The probability is upsampled **bilinearly** to the output grid (``CLOUD_PROB``, percent) and
   the s2cloudless post-processing (:func:`s2cloudless_mask`) runs there, with sizes in metres so
   they mean the same at every probability resolution: mean over a disk of radius
   ``average_over``, ``> threshold``, dilation by a disk of radius ``dilation_size`` (radii in
   pixels of the output grid are ``round(metres / pixel size)``).
   With an L1C twin, pixels whose B10 TOA reflectance exceeds ``cirrus_threshold`` (Sen2Cor's
   thin-cirrus threshold 0.012) join the s2cloudless mask, dilated the same way.
3. **SCL clouds**: the SCL classes listed in ``scl_classes`` other than 3 count as cloud.
4. **Combination** (``method``): ``s2cloudless``, ``scl``, ``union`` or ``intersection`` of the two.
   With ``temporal_threshold`` set, the **multi-temporal test** (:func:`temporal_cloud_test`,
   Hagolle et al. 2010) adds the pixels whose L2A blue reflectance exceeds the catalog's clear-sky
   reference (``scene.aux["clear_reference"]``: the version nearest in time of those the
   pipeline builds as the archive grows, see ``temporal_refresh_days``) by more
   than ``temporal_threshold * (1 + days / temporal_days)``. Clouds brighten the blue band over
   every surface, while surface change (harvest, green-up) moves blue far less; the time term
   allows for more change over longer gaps. SCL snow (class 11) is left out, as is any pixel the
   reference has no clear value for. Without a reference, or with one farther in time than
   ``temporal_refresh_days``, the test is skipped and recorded. With ``defer_temporal`` (the
   pipeline sets it when co-registration follows) :meth:`CloudMaskStep.run` leaves the test to
   :meth:`CloudMaskStep.apply_deferred_temporal`, which applies it to the co-registered pixels.
5. **Shadows** (``shadows``): SCL class 3 (when listed in ``scl_classes``) and/or a geometric
   search: every connected cloud object is projected away from the sun by ``h·tan(zenith)`` for
   ``h`` over ``shadow_heights``; the height whose projection lands on the largest fraction of
   dark-NIR, cloud-free pixels is kept, and the shadow is the projection ∩ dark NIR ∩ not cloud.
   Dark NIR is L2A ``B08 < dark_nir`` (``B8A`` when B08 is not loaded, else the TOA B08 of the
   aux layer upsampled bilinearly). Objects smaller than :data:`MIN_SEARCH_PIXELS` pixels are
   projected at the scene's median height. The sun's azimuth is clockwise from north, shadows fall
   on the side away from the sun; grid convergence (the angle between grid north and true north,
   < 3° in a UTM zone) and the view-angle parallax of the cloud are neglected.
6. **Mask** ``CLOUD_MASK``: :data:`MASK_NODATA`, :data:`MASK_CLEAR`, :data:`MASK_CLOUD`,
   :data:`MASK_SHADOW` (cloud wins over shadow). The cloud, shadow, clear and valid fractions and
   ``eo:cloud_cover`` (percent of valid pixels that are cloud, over the AOI) are recomputed from it.

The defaults follow the s2cloudless authors (threshold 0.4, averaging over 4 and dilation by 2
pixels at 10 m, i.e. 40 m and 20 m) and the dark-NIR threshold 0.15 of the Earth Engine
s2cloudless tutorial; see ``docs/cloudmask.md`` and ``benchmarks/cloudmask.py`` for what they give.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ..errors import ConfigError, StepError
from ..fields import doc
from ..provenance import StepRecord
from .base import AuxLayer, AuxRequest, LayerInfo, Scene, StepResult

log = logging.getLogger(__name__)

Method = Literal["s2cloudless", "scl", "union", "intersection"]
Shadows = Literal["none", "scl", "geometric", "both"]
L1CMode = Literal["auto", "require", "never"]

MASK_NODATA: Final = 0
"""``CLOUD_MASK`` value: no valid reflectance (outside the swath or the AOI)."""
MASK_CLEAR: Final = 1
"""``CLOUD_MASK`` value: clear (neither cloud nor cloud shadow)."""
MASK_CLOUD: Final = 2
"""``CLOUD_MASK`` value: cloud (thick, thin or cirrus), dilated."""
MASK_SHADOW: Final = 3
"""``CLOUD_MASK`` value: cloud shadow."""
MASK_CLASSES: Final[Mapping[int, str]] = {
    MASK_NODATA: "nodata",
    MASK_CLEAR: "clear",
    MASK_CLOUD: "cloud",
    MASK_SHADOW: "shadow",
}
"""Values of the ``CLOUD_MASK`` layer → names (STAC classification extension)."""

PROB_NODATA: Final = 255
"""Nodata of the ``CLOUD_PROB`` layer (valid values are 0-100 %)."""
THRESHOLD_LAYER_NODATA: Final = 255
"""Nodata of the extra ``CLOUD_Txxx`` layers (valid values 0 clear, 1 cloud)."""

S2CLOUDLESS_BANDS: Final = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
"""The ten L1C bands the s2cloudless model takes, in its order."""
S2CLOUDLESS_MODEL: Final = "pixel_s2_cloud_detector_lightGBM_v0.1"
"""The model shipped with the s2cloudless package and used here."""
B10_FALLBACK_REFLECTANCE: Final = 0.002
"""TOA reflectance put in place of a missing B10 (s2cloudless on L2A, ``l1c: never``): a
clear-sky value (the 1375 nm band sees the surface through ~1-2 % transmittance; Sen2Cor flags
thin cirrus from 0.012)."""
MIN_SEARCH_PIXELS: Final = 9
"""Cloud objects smaller than this (output-grid pixels) get the scene's median shadow height."""
MAX_SEARCH_SAMPLES: Final = 2000
"""Pixels of a cloud object sampled (on a regular stride) to score each shadow height."""

_B10 = S2CLOUDLESS_BANDS.index("B10")
_B08 = S2CLOUDLESS_BANDS.index("B08")
_SCL_SHADOW = 3
_SCL_SNOW = 11
TEMPORAL_BAND: Final = "B02"
"""The band of the multi-temporal cloud test (the clear-sky reference is built from it)."""
TEMPORAL_DEFERRED: Final = "deferred: applied after co-registration"
"""``results["temporal"]["status"]`` of a step run with ``defer_temporal`` (until
:meth:`CloudMaskStep.apply_deferred_temporal` replaces it)."""
_SCL_CLASSES = frozenset(range(12))

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]
BoolA = NDArray[np.bool_]


@dataclass(frozen=True)
class CloudMaskConfig:
    """Cloud and cloud-shadow masking (``steps.cloudmask``)."""

    method: Method = doc(
        "Which cloud mask: `s2cloudless` (the model's probability), `scl` (the Sen2Cor scene "
        "classification), `union` (cloud where either says so) or `intersection` (where both "
        "do). `scl`, `union` and `intersection` need `SCL` in `bands`.",
        "union",
    )
    threshold: float = doc(
        "s2cloudless cloud-probability threshold (0-1) after averaging; the s2cloudless authors "
        "recommend 0.4.",
        0.4,
    )
    thresholds: tuple[float, ...] = doc(
        "Extra thresholds: one more uint8 layer per value, named `CLOUD_T030` for 0.3, with "
        "0 clear, 1 cloud (s2cloudless with the same averaging and dilation), 255 nodata.",
        (),
    )
    average_over: float = doc(
        "Radius in metres of the disk the probability is averaged over before thresholding, "
        "applied on the output grid (the authors' 4 pixels at 10 m = 40 m); 0: no averaging.",
        40.0,
    )
    dilation_size: float = doc(
        "Radius in metres of the disk the cloud mask is dilated by, on the output grid (the "
        "authors' 2 pixels at 10 m = 20 m); 0: no dilation. Applies to the s2cloudless mask.",
        20.0,
    )
    resolution: float = doc(
        "Pixel size (m) at which the L1C bands are read and the s2cloudless probability is "
        "computed; it is then upsampled bilinearly to the output grid. 60 m (the native grid "
        "of B01/B09/B10) is ~30x faster than 10 m; see benchmarks/results/cloudmask.json.",
        60.0,
    )
    scl_classes: tuple[int, ...] = doc(
        "SCL classes that are masked: 3 (cloud shadow) marks shadow, the others cloud "
        "(8 cloud medium probability, 9 cloud high probability, 10 thin cirrus).",
        (3, 8, 9, 10),
    )
    cirrus_threshold: float | None = doc(
        "TOA reflectance of the L1C cirrus band B10 (1375 nm) above which a pixel is cirrus "
        "cloud, added to the s2cloudless mask (after the same dilation). 0.012 is Sen2Cor's "
        "lower thin-cirrus threshold: water vapour absorbs the surface signal at 1375 nm, so "
        "clear skies stay below it except over high, dry terrain and snow. Snow and ice "
        "pixels (NDSI > 0.4 and B08 > 0.11 when B03, B08 and B11 are loaded, else SCL class "
        "11) are left out of this test. Used only with an L1C twin (L2A products carry no "
        "B10). Off (null) by default: s2cloudless already takes B10 as an input, SCL's "
        "class 10 (in the default `scl_classes`) is Sen2Cor's own cirrus test, and a fixed "
        "threshold flags clear high, dry terrain (over half of the bright rock above 2,000 m "
        "in the benchmark's mountain scenes); turn it on (0.012) for lowland scenes where thin "
        "cirrus matters more.",
        None,
    )
    shadows: Shadows = doc(
        "Cloud shadows: `none`, `scl` (SCL class 3), `geometric` (the cloud mask projected "
        "away from the sun over `shadow_heights`, on dark-NIR pixels) or `both`.",
        "both",
    )
    shadow_heights: tuple[float, float, float] = doc(
        "Cloud heights searched by the geometric shadow projection: `[min, max, step]` in "
        "metres (one height per connected cloud object).",
        (200.0, 6000.0, 100.0),
    )
    dark_nir: float = doc(
        "Reflectance below which a NIR (L2A B08, else B8A) pixel is dark enough to be a cloud "
        "shadow in the geometric search (0.15 as in the Earth Engine s2cloudless tutorial).",
        0.15,
    )
    max_cloud_fraction: float | None = doc(
        "Scenes whose cloud fraction over the valid AOI pixels exceeds this (0-1) are not "
        "written (recorded as filtered); None writes every scene.",
        None,
    )
    l1c: L1CMode = doc(
        "Input of s2cloudless, which was trained on L1C top-of-atmosphere reflectance. `auto`: "
        "the L1C twin; a scene without one (or whose L1C read is refused) is masked without "
        "s2cloudless, by SCL (plus the multi-temporal test when `temporal_threshold` is set), "
        "and its record says `s2cloudless: not run` and why. `require`: a scene without a "
        "readable twin fails. `never`: an explicit opt-in to run s2cloudless on the L2A bands "
        "(surface reflectance, B10 set to a clear-sky constant), outside what the model was "
        "trained on: it detects little cloud (recorded as `input: l2a surface reflectance`).",
        "auto",
    )
    temporal_threshold: float | None = doc(
        "Multi-temporal cloud test (Hagolle et al. 2010, as in MAJA): a pixel whose L2A blue "
        "reflectance (B02) exceeds the catalog's clear-sky reference by more than this is cloud "
        "and joins the mask of `method` (undilated; SCL snow pixels are left out). The "
        "threshold grows with the time between scene and reference (`temporal_days`). 0.03 is "
        "the value of Hagolle et al.; null turns the test off. Needs B02 in `bands`. The "
        "reference is the per-pixel median of the `temporal_scenes` clearest scenes of the "
        "first run, clouds masked without this test, stored as the collection asset "
        "`cloud-reference` and reused by every update, with new versions for scenes far from "
        "it in time (`temporal_refresh_days`). When `coreg` also runs, the test compares the "
        "co-registered pixels.",
        None,
        since="0.2.0",
    )
    temporal_days: float = doc(
        "Time scale of the multi-temporal test: the threshold used is `temporal_threshold * "
        "(1 + days / temporal_days)`, `days` being the gap between the scene and the median "
        "date of the reference's scenes, so that surface change over longer gaps is not taken "
        "for cloud (30 days as in Hagolle et al. 2010).",
        30.0,
        since="0.2.0",
    )
    temporal_scenes: int = doc(
        "Number of clearest scenes (clear pixels counted after cloud masking) whose per-pixel "
        "median is the clear-sky reference of the multi-temporal test; twice as many "
        "candidates with the lowest provider cloud cover are read.",
        5,
        since="0.2.0",
    )
    temporal_refresh_days: float | None = doc(
        "Refresh of the clear-sky reference as the archive grows: a scene farther than this "
        "many days from every stored reference version gets a new version, built before the "
        "scenes are dispatched from the clearest scenes of the run within this many days after "
        "the first such scene, and stored beside the old ones (which are never changed); each "
        "scene is tested against the version nearest in time. 30 days is the test's time scale "
        "(`temporal_days`, Hagolle et al. 2010): at that gap the threshold has doubled. A scene "
        "whose new version could not be built is masked without the test (recorded). null "
        "keeps the first reference for every scene, however far.",
        30.0,
        since="0.2.0",
    )

    def __post_init__(self) -> None:
        k = "steps.cloudmask"
        if self.method not in ("s2cloudless", "scl", "union", "intersection"):
            raise ConfigError(
                f"{k}.method {self.method!r} is not one of s2cloudless, scl, union, intersection"
            )
        if self.shadows not in ("none", "scl", "geometric", "both"):
            raise ConfigError(
                f"{k}.shadows {self.shadows!r} is not one of none, scl, geometric, both"
            )
        if self.l1c not in ("auto", "require", "never"):
            raise ConfigError(f"{k}.l1c {self.l1c!r} is not one of auto, require, never")
        if self.cirrus_threshold is not None and not 0.0 < self.cirrus_threshold < 1.0:
            raise ConfigError(
                f"{k}.cirrus_threshold must be a TOA reflectance between 0 and 1 (or null), "
                f"got {self.cirrus_threshold}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"{k}.threshold must be between 0 and 1 (exclusive), got {self.threshold}"
            )
        names = set()
        for t in self.thresholds:
            if not 0.0 < t < 1.0:
                raise ConfigError(f"{k}.thresholds: {t} is not between 0 and 1 (exclusive)")
            name = threshold_layer_name(t)
            if name in names:
                raise ConfigError(
                    f"{k}.thresholds: {t} gives the same layer name {name} as another value; "
                    "use thresholds that differ in the second decimal"
                )
            names.add(name)
        for f in ("average_over", "dilation_size"):
            v = getattr(self, f)
            if not (math.isfinite(v) and 0.0 <= v <= 5000.0):
                raise ConfigError(f"{k}.{f} must be a radius in metres between 0 and 5000, got {v}")
        if not (math.isfinite(self.resolution) and 10.0 <= self.resolution <= 1000.0):
            raise ConfigError(
                f"{k}.resolution must be a pixel size in metres between 10 and 1000 "
                f"(e.g. 60 or 10), got {self.resolution}"
            )
        bad = [c for c in self.scl_classes if c not in _SCL_CLASSES]
        if bad:
            raise ConfigError(f"{k}.scl_classes: {bad} are not SCL classes (0-11)")
        if self.method in ("scl", "union", "intersection") and not any(
            c != _SCL_SHADOW for c in self.scl_classes
        ):
            raise ConfigError(
                f"{k}.scl_classes lists no cloud class, but method {self.method!r} takes clouds "
                "from SCL; add 8, 9 and/or 10"
            )
        if self.shadows in ("scl", "both") and _SCL_SHADOW not in self.scl_classes:
            raise ConfigError(
                f"{k}.shadows {self.shadows!r} takes shadows from SCL class 3, which "
                f"{k}.scl_classes does not list; add 3 or use shadows: geometric / none"
            )
        lo, hi, step = self.shadow_heights
        if not (0.0 <= lo <= hi <= 20000.0 and step > 0.0):
            raise ConfigError(
                f"{k}.shadow_heights must be [min, max, step] metres with "
                f"0 <= min <= max <= 20000 and step > 0, got {list(self.shadow_heights)}"
            )
        if (hi - lo) / step > 1000:
            raise ConfigError(f"{k}.shadow_heights: more than 1000 heights; use a larger step")
        if not 0.0 < self.dark_nir < 1.0:
            raise ConfigError(
                f"{k}.dark_nir must be a reflectance between 0 and 1, got {self.dark_nir}"
            )
        if self.temporal_threshold is not None and not 0.0 < self.temporal_threshold < 1.0:
            raise ConfigError(
                f"{k}.temporal_threshold must be a reflectance difference between 0 and 1 "
                f"(0.03 in Hagolle et al. 2010), or null; got {self.temporal_threshold}"
            )
        if not (math.isfinite(self.temporal_days) and self.temporal_days > 0.0):
            raise ConfigError(f"{k}.temporal_days must be > 0 days, got {self.temporal_days}")
        if self.temporal_refresh_days is not None and not (
            math.isfinite(self.temporal_refresh_days) and self.temporal_refresh_days >= 1.0
        ):
            raise ConfigError(
                f"{k}.temporal_refresh_days must be >= 1 day (or null: never refresh), got "
                f"{self.temporal_refresh_days}"
            )
        if not 1 <= self.temporal_scenes <= 100:
            raise ConfigError(
                f"{k}.temporal_scenes must be between 1 and 100, got {self.temporal_scenes}"
            )
        if self.max_cloud_fraction is not None and not 0.0 <= self.max_cloud_fraction <= 1.0:
            raise ConfigError(
                f"{k}.max_cloud_fraction must be a fraction between 0 and 1 (not a percentage), "
                f"got {self.max_cloud_fraction}"
            )

    @property
    def uses_s2cloudless(self) -> bool:
        """Whether the s2cloudless probability is computed (and the TOA bands read)."""
        return self.method != "scl" or bool(self.thresholds)

    @property
    def uses_scl(self) -> bool:
        """Whether the SCL layer is needed."""
        return self.method != "s2cloudless" or self.shadows in ("scl", "both")

    def heights(self) -> NDArray[np.float64]:
        """The cloud heights (m) searched by the geometric shadow projection."""
        lo, hi, step = self.shadow_heights
        return np.arange(lo, hi + 0.5 * step, step, dtype=np.float64)


def threshold_layer_name(t: float) -> str:
    """Name of the extra layer of threshold ``t``: ``CLOUD_T030`` for 0.3."""
    return f"CLOUD_T{round(t * 100):03d}"


# --------------------------------------------------------------------------------------------
# Small array helpers
# --------------------------------------------------------------------------------------------


def _disk(radius: int) -> BoolA:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    d: BoolA = (x * x + y * y) <= radius * radius
    return d


def _radius_px(metres: float, pixel: float) -> int:
    return round(metres / pixel)


def _disk_mean(a: F32, valid: BoolA, radius: int) -> F32:
    """Mean of ``a`` over a disk, ignoring invalid pixels (normalised convolution)."""
    if radius <= 0:
        return a
    from scipy import ndimage

    k = _disk(radius).astype(np.float32)
    w = valid.astype(np.float32)
    num = ndimage.correlate(np.where(valid, a, 0.0).astype(np.float32), k, mode="reflect")
    den = ndimage.correlate(w, k, mode="reflect")
    out = np.full(a.shape, np.nan, dtype=np.float32)
    np.divide(num, den, out=out, where=(den > 0) & valid)
    return out


def _dilate(mask: BoolA, radius: int) -> BoolA:
    if radius <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    out: BoolA = ndimage.binary_dilation(mask, structure=_disk(radius))
    return out


NDSI_SNOW: Final = 0.4
"""Normalised difference snow index ``(B03 - B11) / (B03 + B11)`` above which a pixel is snow
(Dozier 1989; the MODIS SNOMAP threshold, Hall et al. 1995), together with NIR (B08) > 0.11."""


def snow_mask(scene: Scene) -> tuple[BoolA | None, str]:
    """Snow and ice pixels of ``scene``, where the cirrus test must not run: NDSI > 0.4 and
    B08 > 0.11 (Hall et al. 1995) from the L2A bands when B03, B08 and B11 are loaded, else SCL
    class 11 (Sen2Cor's snow), else None."""
    if all(b in scene.bands for b in ("B03", "B08", "B11")):
        g = np.asarray(scene.bands["B03"], dtype=np.float32)
        n = np.asarray(scene.bands["B08"], dtype=np.float32)
        sw = np.asarray(scene.bands["B11"], dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndsi = (g - sw) / (g + sw)
        ok = np.isfinite(ndsi) & np.isfinite(n)
        out: BoolA = ok & (np.where(ok, ndsi, 0.0) > NDSI_SNOW) & (np.where(ok, n, 0.0) > 0.11)
        return out, "ndsi"
    scl = scene.classes.get("SCL")
    if scl is not None:
        return np.asarray(scl) == _SCL_SNOW, "scl"
    return None, ""


def s2cloudless_mask(
    prob: F32,
    valid: BoolA,
    pixel_m: float,
    threshold: float = 0.4,
    average_over_m: float = 40.0,
    dilation_m: float = 20.0,
) -> BoolA:
    """The s2cloudless post-processing of a cloud probability field, with sizes in metres.

    The mean of ``prob`` over a disk of radius ``round(average_over_m / pixel_m)`` pixels,
    ``> threshold``, dilated by a disk of radius ``round(dilation_m / pixel_m)`` pixels; False
    where ``valid`` is False or ``prob`` is NaN. Invalid pixels are left out of the mean
    (normalised convolution); edges are mirrored as OpenCV's ``BORDER_REFLECT`` does; the disks
    are s2cloudless' own. On a fully valid field this is
    ``S2PixelCloudDetector(threshold, average_over=r_avg, dilation_size=r_dil).get_mask_from_prob``
    (at 10 m with the defaults: 4 and 2 pixels), up to float rounding of the mean (< 1e-6).
    """
    ok = valid & np.isfinite(prob)
    avg = _disk_mean(prob, ok, _radius_px(average_over_m, pixel_m))
    m = np.greater(avg, threshold, where=ok, out=np.zeros(prob.shape, dtype=bool))
    out: BoolA = _dilate(m, _radius_px(dilation_m, pixel_m)) & ok
    return out


def _axis_coords(
    n: int, dst0: float, dst_step: float, src0: float, src_step: float, src_n: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], F32]:
    """For each destination pixel centre along one axis: source index and weight (bilinear)."""
    centre = dst0 + (np.arange(n, dtype=np.float64) + 0.5) * dst_step
    f = (centre - src0) / src_step - 0.5
    f = np.clip(f, 0.0, src_n - 1.0)
    i0 = np.minimum(np.floor(f).astype(np.intp), max(src_n - 2, 0))
    wt = (f - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, src_n - 1)
    return i0, i1, wt


def upsample_bilinear(a: F32, src: GeoBox, dst: GeoBox) -> F32:
    """Bilinear resampling of ``a`` (on ``src``, NaN = nodata) onto ``dst``, both axis-aligned
    grids of the same CRS. NaN neighbours are left out and the weights renormalised; a pixel with
    no valid neighbour is NaN. Edges are clamped (no extrapolation)."""
    if src.crs != dst.crs:
        raise StepError(
            f"the TOA layer's CRS {src.crs} differs from the scene's {dst.crs}; the pipeline must "
            "read auxiliary layers on the scene's CRS"
        )
    sa, da = src.affine, dst.affine
    if sa.b != 0 or sa.d != 0 or da.b != 0 or da.d != 0:
        raise StepError("rotated grids are not supported for the cloud probability")
    if src.shape.yx == dst.shape.yx and sa.almost_equals(da):
        return a
    r0, r1, wr = _axis_coords(dst.shape.y, da.f, da.e, sa.f, sa.e, src.shape.y)
    c0, c1, wc = _axis_coords(dst.shape.x, da.c, da.a, sa.c, sa.a, src.shape.x)
    valid = np.isfinite(a)
    filled = np.where(valid, a, 0.0).astype(np.float32)
    w = valid.astype(np.float32)

    def interp(z: F32) -> F32:
        rows = z[r0, :] * (1.0 - wr)[:, None] + z[r1, :] * wr[:, None]
        out: F32 = (rows[:, c0] * (1.0 - wc)[None, :] + rows[:, c1] * wc[None, :]).astype(
            np.float32
        )
        return out

    num, den = interp(filled), interp(w)
    out = np.full(dst.shape.yx, np.nan, dtype=np.float32)
    np.divide(num, den, out=out, where=den > 1e-6)
    return out


def _shift(mask: BoolA, dr: int, dc: int) -> BoolA:
    """``out[r + dr, c + dc] = mask[r, c]`` (what leaves the grid is dropped)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dr) >= h or abs(dc) >= w:
        return out
    src = mask[max(-dr, 0) : h - max(dr, 0), max(-dc, 0) : w - max(dc, 0)]
    out[max(dr, 0) : h - max(-dr, 0), max(dc, 0) : w - max(-dc, 0)] = src
    return out


# --------------------------------------------------------------------------------------------
# s2cloudless
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    try:
        from s2cloudless.cloud_detector import S2PixelCloudDetector
    except ImportError as exc:
        raise StepError(
            "the cloudmask step needs the s2cloudless package for methods s2cloudless, union and "
            "intersection: pip install 'stac2cube[cloud]' (or use steps.cloudmask.method: scl)"
        ) from exc
    return S2PixelCloudDetector(all_bands=False, average_over=None, dilation_size=None)


def s2cloudless_version() -> str:
    """Version of the installed s2cloudless package (``unknown`` when it is missing)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("s2cloudless")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cloud_probability(toa: F32) -> tuple[F32, str]:
    """s2cloudless probability (0-1, NaN nodata) of ``toa`` ``(10, y, x)`` TOA reflectance in
    the order of :data:`S2CLOUDLESS_BANDS`, and how B10 was handled.

    A pixel is nodata where any band other than B10 is NaN. Where B10 is NaN but the others are
    not (s2cloudless on L2A bands, ``l1c: never``), B10 is set to
    :data:`B10_FALLBACK_REFLECTANCE`.
    """
    if toa.ndim != 3 or toa.shape[0] != len(S2CLOUDLESS_BANDS):
        raise StepError(
            f"the TOA layer has shape {toa.shape}; expected ({len(S2CLOUDLESS_BANDS)}, y, x) "
            f"with bands {', '.join(S2CLOUDLESS_BANDS)}"
        )
    others = [i for i in range(toa.shape[0]) if i != _B10]
    valid = np.logical_and.reduce([np.isfinite(toa[i]) for i in others])
    prob = np.full(toa.shape[1:], np.nan, dtype=np.float32)
    n = int(valid.sum())
    b10_ok = np.isfinite(toa[_B10]) & valid
    n_filled = n - int(b10_ok.sum())
    if n_filled == 0:
        how = "l1c"
    elif n_filled == n:
        how = f"constant {B10_FALLBACK_REFLECTANCE} (no B10 in the input: cirrus not seen)"
    else:
        how = (
            f"l1c; constant {B10_FALLBACK_REFLECTANCE} where B10 was nodata "
            f"({100.0 * n_filled / max(n, 1):.1f} % of pixels)"
        )
    if n == 0:
        return prob, how
    px = toa[:, valid].T.astype(np.float32)  # (n, 10)
    px[:, _B10] = np.where(np.isfinite(px[:, _B10]), px[:, _B10], B10_FALLBACK_REFLECTANCE)
    p = _detector().get_cloud_probability_maps(px[None, :, None, :])
    prob[valid] = p.reshape(-1)
    return prob, how


# --------------------------------------------------------------------------------------------
# Geometric shadows
# --------------------------------------------------------------------------------------------


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


def geometric_shadows(
    cloud: BoolA,
    dark: BoolA,
    valid: BoolA,
    offsets: NDArray[np.intp],
    heights: NDArray[np.float64],
) -> ShadowSearch:
    """Per connected cloud object, the height whose projection covers the largest fraction of
    dark, cloud-free pixels; the shadow is the union of the projections ∩ dark ∩ not cloud."""
    from scipy import ndimage

    h, w = cloud.shape
    labels, n = ndimage.label(cloud, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ShadowSearch(np.zeros_like(cloud), None, 0)
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
        if rr.size < MIN_SEARCH_PIXELS:
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
        if best[i] < 0 and sizes[i] >= MIN_SEARCH_PIXELS:
            continue  # searched, but no height put it on a dark pixel
        r, c = rr + offsets[k, 0], cc + offsets[k, 1]
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        projected[r[ok], c[ok]] = True
    return ShadowSearch(projected & dark_cand, height, n)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


def _nir(scene: Scene, toa_nir: F32 | None) -> tuple[F32, str]:
    for b in ("B08", "B8A"):
        if b in scene.bands:
            return np.asarray(scene.bands[b], dtype=np.float32), f"l2a:{b}"
    if toa_nir is not None:
        return toa_nir, "toa:B08"
    raise StepError(
        "geometric cloud shadows need a NIR band: add B08 or B8A to `bands`, or set "
        "steps.cloudmask.shadows to scl or none"
    )


def temporal_cloud_test(
    blue: np.ndarray,
    reference: np.ndarray,
    threshold: float,
    gap_days: float = 0.0,
    days_scale: float = 30.0,
) -> tuple[BoolA, float]:
    """The multi-temporal cloud test of Hagolle et al. (2010, MAJA): where the blue reflectance
    of the scene exceeds the clear-sky ``reference`` by more than
    ``threshold * (1 + gap_days / days_scale)``. Returns the mask (False where either is NaN)
    and the threshold used."""
    thr = float(threshold) * (1.0 + max(float(gap_days), 0.0) / float(days_scale))
    b = np.asarray(blue, dtype=np.float32)
    r = np.asarray(reference, dtype=np.float32)
    ok = np.isfinite(b) & np.isfinite(r)
    out: BoolA = np.greater(b - np.where(ok, r, 0.0), thr, where=ok, out=np.zeros(b.shape, bool))
    return out, thr


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        return None
    from pystac.utils import str_to_datetime

    try:
        t = str_to_datetime(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class S2cloudlessInput:
    """Whether s2cloudless runs on a scene, on what, and if not, why."""

    status: Literal["run", "not run", "not used"]
    toa: AuxLayer | None = None
    """The TOA layer it runs on (None when it does not run)."""
    input: str = ""
    """``l1c`` or ``l2a surface reflectance`` (``l1c: never``)."""
    reason: str = ""
    """Why it does not run: ``no L1C twin``, ``L1C read refused: ...``, ``method: scl``."""

    def record(self) -> dict[str, str]:
        """The ``s2cloudless`` entry of the step's results."""
        out: dict[str, str] = {"status": self.status}
        if self.input:
            out["input"] = self.input
        if self.reason:
            out["reason"] = self.reason
        return out


def _summarise(
    mask: U8, cfg: CloudMaskConfig, results: dict[str, Any], props: dict[str, Any]
) -> bool:
    """Record the cloud, shadow, clear and valid fractions of a ``CLOUD_MASK`` in ``results``,
    its cloud cover as ``eo:cloud_cover`` in ``props``, and whether the scene is written
    (``max_cloud_fraction``; never without a valid pixel)."""
    n_total = max(int(mask.size), 1)
    n_known = int((mask != MASK_NODATA).sum())
    if not n_known:
        results.update(
            cloud_fraction=0.0,
            shadow_fraction=0.0,
            clear_fraction=0.0,
            valid_fraction=0.0,
            note="no valid pixel in the AOI: scene not written",
        )
        return False
    cloud_fraction = int((mask == MASK_CLOUD).sum()) / n_known
    results.update(
        cloud_fraction=cloud_fraction,
        shadow_fraction=int((mask == MASK_SHADOW).sum()) / n_known,
        clear_fraction=int((mask == MASK_CLEAR).sum()) / n_known,
        valid_fraction=n_known / n_total,
    )
    props["eo:cloud_cover"] = round(100.0 * cloud_fraction, 4)
    if cfg.max_cloud_fraction is not None and cloud_fraction > cfg.max_cloud_fraction:
        results["note"] = (
            f"cloud fraction {cloud_fraction:.3f} over the AOI exceeds "
            f"max_cloud_fraction {cfg.max_cloud_fraction}"
        )
        return False
    return True


class CloudMaskStep:
    """Cloud and cloud-shadow masking (see the module docstring)."""

    name = "cloudmask"
    version = "1.2.0"

    def __init__(self, *, defer_temporal: bool = False) -> None:
        self.defer_temporal = defer_temporal
        """Leave the multi-temporal test out of :meth:`run` (recorded as deferred) for
        :meth:`apply_deferred_temporal` to apply later: the pipeline sets it when the scene is
        co-registered after masking, so that the test compares co-registered pixels."""

    @staticmethod
    def _s2cloudless_input(scene: Scene, cfg: CloudMaskConfig, has_scl: bool) -> S2cloudlessInput:
        """Decide whether s2cloudless runs: on the L1C twin; on the L2A bands only with
        ``l1c: never``; otherwise not at all, and SCL (plus the temporal test) masks the scene."""
        if not cfg.uses_s2cloudless:
            return S2cloudlessInput("not used", reason=f"method: {cfg.method}")
        toa = scene.aux.get("toa")
        if cfg.l1c == "never":
            if toa is None:
                raise StepError(
                    f"{scene.item_id}: the cloudmask step got no TOA layer (scene.aux['toa']); "
                    "the pipeline must read what CloudMaskStep.required_aux asks for"
                )
            log.info(
                "%s: s2cloudless runs on L2A surface reflectance (steps.cloudmask.l1c: never), "
                "outside what it was trained on",
                scene.item_id,
            )
            return S2cloudlessInput("run", toa, "l2a surface reflectance (l1c: never)")
        if toa is not None and toa.source.startswith("l1c:"):
            return S2cloudlessInput("run", toa, "l1c")
        why = scene.missing_aux.get("toa") or (
            "no L1C twin" if toa is None else f"no L1C twin (TOA layer from {toa.source})"
        )
        if cfg.l1c == "require":
            raise StepError(
                f"{scene.item_id}: steps.cloudmask.l1c is 'require' but s2cloudless has no L1C "
                f"input: {why}. Check source.l1c_collection / source.l1c_path and access to the "
                "L1C assets, or set l1c: auto to mask such scenes with SCL"
            )
        if not has_scl:
            raise StepError(
                f"{scene.item_id}: s2cloudless cannot run ({why}) and the L2A method that "
                "replaces it needs the SCL layer: add SCL to `bands`, provide readable L1C twins, "
                "or set steps.cloudmask.l1c: never to run s2cloudless on L2A surface reflectance"
            )
        log.info("%s: s2cloudless not run (%s); clouds from SCL", scene.item_id, why)
        return S2cloudlessInput("not run", reason=why)

    def required_aux(self, cfg: CloudMaskConfig) -> Mapping[str, AuxRequest]:
        """The TOA bands of s2cloudless at ``cfg.resolution`` (none for ``method: scl``) and, for
        the multi-temporal test, the catalog's clear-sky reference on the output grid."""
        out: dict[str, AuxRequest] = {}
        if cfg.uses_s2cloudless:
            level = "l2a" if cfg.l1c == "never" else "l1c"
            out["toa"] = AuxRequest(S2CLOUDLESS_BANDS, resolution=cfg.resolution, level=level)
        if cfg.temporal_threshold is not None:
            out["clear_reference"] = AuxRequest((TEMPORAL_BAND,), 0.0, level="cloud-reference")
        return out

    def _temporal(
        self, scene: Scene, cfg: CloudMaskConfig, candidates: BoolA, results: dict[str, Any]
    ) -> BoolA:
        """Pixels of ``candidates`` the multi-temporal test calls cloud (see the module doc)."""
        assert cfg.temporal_threshold is not None
        ref = scene.aux.get("clear_reference")
        if ref is None:
            log.warning(
                "%s: the catalog has no clear-sky reference; multi-temporal cloud test skipped",
                scene.item_id,
            )
            results["temporal"] = {"status": "skipped: the catalog has no clear-sky reference"}
            return np.zeros(candidates.shape, dtype=bool)
        if TEMPORAL_BAND not in scene.bands:
            raise StepError(
                f"{scene.item_id}: the multi-temporal cloud test needs {TEMPORAL_BAND} in "
                "`bands`, or set steps.cloudmask.temporal_threshold: null"
            )
        t_scene = _parse_time(scene.source_properties.get("datetime"))
        gap: float | None = None
        if t_scene is not None and ref.datetime is not None:
            gap = abs((t_scene - ref.datetime).total_seconds()) / 86400.0
        version = {"reference_version": ref.version} if ref.version else {}
        refresh = cfg.temporal_refresh_days
        if gap is not None and refresh is not None and gap > refresh:
            log.warning(
                "%s: the nearest clear-sky reference is %.0f days away; multi-temporal cloud "
                "test skipped",
                scene.item_id,
                gap,
            )
            results["temporal"] = {
                "status": f"skipped: the nearest clear-sky reference is {gap:.0f} days from the "
                f"scene, more than temporal_refresh_days ({refresh:g}), and no newer version "
                "could be built (see the failure log, stage cloud-reference)",
                "reference": ref.source,
                **version,
                "gap_days": round(gap, 3),
            }
            return np.zeros(candidates.shape, dtype=bool)
        # an unknown gap counts as none: the base threshold
        hit, thr = temporal_cloud_test(
            scene.bands[TEMPORAL_BAND],
            ref.data[0],
            cfg.temporal_threshold,
            gap or 0.0,
            cfg.temporal_days,
        )
        hit &= candidates
        scl = scene.classes.get("SCL")
        if scl is not None:
            hit &= scl != _SCL_SNOW
        n = max(int(candidates.sum()), 1)
        results["temporal"] = {
            "status": "applied",
            "reference": ref.source,
            **version,
            "gap_days": None if gap is None else round(gap, 3),
            "threshold": round(thr, 6),
            "added_fraction": round(float(hit.sum()) / n, 6),
        }
        return hit

    def run(self, scene: Scene, cfg: CloudMaskConfig) -> StepResult:
        """Mask clouds and shadows of ``scene``; pure (no I/O)."""
        gbox = scene.geobox
        shape = gbox.shape.yx
        pixel = float(abs(gbox.resolution.x))
        valid = scene.valid_mask()
        scl = scene.classes.get("SCL")
        if cfg.uses_scl and scl is None:
            needs = f"method {cfg.method!r}" if cfg.method != "s2cloudless" else ""
            if cfg.shadows in ("scl", "both"):
                needs = (needs + " and " if needs else "") + f"shadows {cfg.shadows!r}"
            raise StepError(
                f"{scene.item_id}: steps.cloudmask {needs} needs the SCL layer; add SCL to "
                "`bands` (or use method: s2cloudless with shadows: geometric / none)"
            )
        if cfg.uses_scl and scl is not None:
            valid = (valid & (scl != 0)) if scene.bands else (scl != 0)
        results: dict[str, Any] = {"method": cfg.method}
        classes: dict[str, np.ndarray] = dict(scene.classes)
        infos: dict[str, LayerInfo] = dict(scene.layer_info)

        # --- s2cloudless probability on the output grid
        prob_up: F32 | None = None
        toa_nir: F32 | None = None
        s2c_cloud: BoolA | None = None
        s2c = self._s2cloudless_input(scene, cfg, scl is not None)
        results["method_used"] = cfg.method if s2c.status == "run" else "scl"
        results["s2cloudless"] = s2c.record()
        if s2c.status != "run" and scl is not None:  # SCL decides: its nodata is nodata
            valid = (valid & (scl != 0)) if scene.bands else (scl != 0)
        if s2c.toa is not None:
            toa = s2c.toa
            if tuple(toa.bands) != S2CLOUDLESS_BANDS:
                raise StepError(
                    f"{scene.item_id}: the TOA layer has bands {toa.bands}, expected "
                    f"{S2CLOUDLESS_BANDS}"
                )
            prob, b10 = cloud_probability(np.asarray(toa.data, dtype=np.float32))
            results["toa_source"] = toa.source
            results["b10_handling"] = b10
            results["probability_resolution_m"] = float(abs(toa.geobox.resolution.x))
            results["model"] = f"s2cloudless {s2cloudless_version()} {S2CLOUDLESS_MODEL}"
            prob_up = upsample_bilinear(prob, toa.geobox, gbox)
            prob_ok = np.isfinite(prob_up) & valid
            prob_u8 = np.full(shape, PROB_NODATA, dtype=np.uint8)
            prob_u8[prob_ok] = np.rint(np.clip(prob_up[prob_ok], 0.0, 1.0) * 100).astype(np.uint8)
            classes["CLOUD_PROB"] = prob_u8
            infos["CLOUD_PROB"] = LayerInfo(
                nodata=PROB_NODATA,
                classes={PROB_NODATA: "no_data"},  # 0-100 are percentages, not classes
                overview_resampling="average",
                description=(
                    f"s2cloudless cloud probability (%), {S2CLOUDLESS_MODEL}, computed at "
                    f"{results['probability_resolution_m']:g} m from {toa.source} and "
                    "upsampled bilinearly"
                ),
            )
            r_dil = _radius_px(cfg.dilation_size, pixel)
            s2c_mask = functools.partial(
                s2cloudless_mask,
                prob_up,
                prob_ok,
                pixel,
                average_over_m=cfg.average_over,
                dilation_m=cfg.dilation_size,
            )

            s2c_cloud = s2c_mask(cfg.threshold)
            b10_toa = np.asarray(toa.data[_B10], np.float32)
            if cfg.cirrus_threshold is not None and np.isfinite(b10_toa).any():
                b10_up = upsample_bilinear(b10_toa, toa.geobox, gbox)
                thin = np.greater(
                    b10_up,
                    cfg.cirrus_threshold,
                    where=np.isfinite(b10_up) & prob_ok,
                    out=np.zeros(shape, dtype=bool),
                )
                snow, snow_from = snow_mask(scene)
                if snow is not None:
                    # clear snow and ice reflect enough at 1375 nm, above the dry air of high
                    # terrain, to pass the cirrus threshold: the cirrus test is not used there
                    results["cirrus_snow_excluded_fraction"] = round(
                        float((thin & snow).sum()) / max(int(prob_ok.sum()), 1), 6
                    )
                    results["cirrus_snow_from"] = snow_from
                    thin &= ~snow
                cirrus = _dilate(thin, r_dil) & prob_ok
                results["cirrus_fraction"] = round(
                    float(cirrus.sum()) / max(int(prob_ok.sum()), 1), 6
                )
                s2c_cloud = s2c_cloud | cirrus
            for t in cfg.thresholds:
                name = threshold_layer_name(t)
                layer = np.full(shape, THRESHOLD_LAYER_NODATA, dtype=np.uint8)
                layer[prob_ok] = s2c_mask(t)[prob_ok]
                classes[name] = layer
                infos[name] = LayerInfo(
                    nodata=THRESHOLD_LAYER_NODATA,
                    classes={0: "clear", 1: "cloud"},
                    description=f"s2cloudless cloud mask at threshold {t:g}",
                )
            valid_prob = prob_ok
            toa_nir = upsample_bilinear(np.asarray(toa.data[_B08], np.float32), toa.geobox, gbox)
        else:
            valid_prob = valid

        # --- SCL clouds and the combination
        scl_cloud_classes = [c for c in cfg.scl_classes if c != _SCL_SHADOW]
        scl_cloud = np.isin(scl, scl_cloud_classes) & valid if scl is not None else None
        method_used = results["method_used"]
        if method_used == "s2cloudless":
            assert s2c_cloud is not None
            cloud, known = s2c_cloud, valid_prob
        elif method_used == "scl":
            assert scl_cloud is not None
            cloud, known = scl_cloud, valid
        else:
            assert s2c_cloud is not None and scl_cloud is not None
            # where s2cloudless has no value, the SCL alone decides
            if method_used == "union":
                cloud = s2c_cloud | scl_cloud
            else:
                cloud = np.where(valid_prob, s2c_cloud & scl_cloud, scl_cloud)
            known = valid
        cloud = cloud & known
        if cfg.temporal_threshold is not None and self.defer_temporal:
            results["temporal"] = {"status": TEMPORAL_DEFERRED}
        elif cfg.temporal_threshold is not None:
            cloud = cloud | self._temporal(scene, cfg, known & ~cloud, results)

        # --- shadows
        shadow = np.zeros(shape, dtype=bool)
        if cfg.shadows in ("scl", "both"):
            assert scl is not None
            shadow |= scl == _SCL_SHADOW
        if cfg.shadows in ("geometric", "both"):
            angles = sun_angles(scene.source_properties)
            if angles is None:
                raise StepError(
                    f"{scene.item_id}: geometric shadows need the sun angles, but the item has "
                    "neither view:sun_azimuth/view:sun_elevation nor "
                    "s2:mean_solar_azimuth/s2:mean_solar_zenith; use shadows: scl or none"
                )
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

        mask = np.full(shape, MASK_NODATA, dtype=np.uint8)
        mask[known] = MASK_CLEAR
        mask[shadow] = MASK_SHADOW
        mask[cloud] = MASK_CLOUD
        classes["CLOUD_MASK"] = mask
        infos["CLOUD_MASK"] = LayerInfo(
            nodata=MASK_NODATA,
            classes=dict(MASK_CLASSES),
            description=(
                f"cloud and shadow mask ({results['method_used']}"
                + (" + multi-temporal test" if cfg.temporal_threshold is not None else "")
                + f"; shadows {cfg.shadows})"
            ),
        )

        props = dict(scene.properties)
        write = _summarise(mask, cfg, results, props)
        n_known = int(known.sum())
        log.info(
            "%s: cloud %.1f %%, shadow %.1f %% of %d valid pixels (%s)",
            scene.item_id,
            100.0 * results["cloud_fraction"],
            100.0 * results["shadow_fraction"],
            n_known,
            results.get("toa_source", "scl"),
        )
        params = {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
        record = StepRecord(self.name, self.version, parameters=params, results=results)
        new = scene.replace(classes=classes, layer_info=infos, properties=props)
        return StepResult(new, record, write=write)

    def apply_deferred_temporal(
        self, scene: Scene, cfg: CloudMaskConfig, record: StepRecord, *, coregistered: bool
    ) -> StepResult:
        """The multi-temporal test that :meth:`run` deferred (``defer_temporal``), on ``scene``
        as it is now, e.g. after co-registration moved its pixels onto the reference's grid;
        pure (no I/O).

        ``record`` is this step's record from :meth:`run`. Pixels of ``CLOUD_MASK`` that are
        clear or shadow and that the test flags become cloud; the cloud, shadow and clear
        fractions, ``eo:cloud_cover`` and the ``max_cloud_fraction`` decision are recomputed
        from the new mask, and the record gets the test's results with
        ``on_coregistered_pixels`` (``coregistered``: whether the scene was co-registered).
        Shadows of the clouds only this test finds are not searched. A record whose test was
        not deferred is returned as it is."""
        results = dict(record.results)
        if cfg.temporal_threshold is None or results.get("temporal", {}).get("status") != (
            TEMPORAL_DEFERRED
        ):
            return StepResult(scene, record)
        mask = np.array(scene.classes["CLOUD_MASK"], dtype=np.uint8, copy=True)
        hit = self._temporal(scene, cfg, (mask == MASK_CLEAR) | (mask == MASK_SHADOW), results)
        results["temporal"] = {**results["temporal"], "on_coregistered_pixels": coregistered}
        mask[hit] = MASK_CLOUD
        props = dict(scene.properties)
        write = _summarise(mask, cfg, results, props)
        new = scene.replace(classes={**scene.classes, "CLOUD_MASK": mask}, properties=props)
        return StepResult(new, dataclasses.replace(record, results=results), write=write)


__all__ = [
    "B10_FALLBACK_REFLECTANCE",
    "MASK_CLASSES",
    "MASK_CLEAR",
    "MASK_CLOUD",
    "MASK_NODATA",
    "MASK_SHADOW",
    "PROB_NODATA",
    "S2CLOUDLESS_BANDS",
    "TEMPORAL_BAND",
    "TEMPORAL_DEFERRED",
    "THRESHOLD_LAYER_NODATA",
    "CloudMaskConfig",
    "CloudMaskStep",
    "cloud_probability",
    "geometric_shadows",
    "s2cloudless_mask",
    "shadow_offsets",
    "snow_mask",
    "sun_angles",
    "temporal_cloud_test",
    "threshold_layer_name",
    "upsample_bilinear",
]
