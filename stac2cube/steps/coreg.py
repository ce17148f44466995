"""Co-registration of a scene onto the catalog's reference image with AROSICS.

Per scene: the match band is compared with ``scene.aux["reference"]`` (read by the pipeline onto
the scene's grid) away from bad pixels (mask layers, nodata) and anomalies
(:func:`anomaly_mask`); ``global`` mode matches up to :data:`MAX_WINDOWS` windows with AROSICS
``COREG`` and refines each estimate (:func:`_refine`), ``local`` mode uses AROSICS
``COREG_LOCAL`` tie points. A correction is applied, once, with AROSICS' ``DESHIFTER`` onto the
scene's own grid, only when it is significant against the noise measured in the scene and
raises the correlation with the reference on clear pixels; otherwise the estimate is recorded
with status ``not_significant`` or ``no_improvement`` and the pixels are left alone. A match
that cannot be trusted is ``failed`` and ``on_failure`` decides. Why each choice, and what it
gives on real and generated pixels: ``docs/coreg.md``.

Sign conventions in the record
------------------------------
``shift_px`` is the displacement ``(dx, dy)`` of the scene's content relative to the reference
in pixels, x to the east (columns) and y to the south (rows): a feature at reference pixel
``(c, r)`` appears at ``(c + dx, r + dy)`` in the scene. ``shift_m`` is the same displacement in
map units with y to the north. The correction moves the content by ``-shift``. (AROSICS'
``x_shift_px``/``y_shift_px`` are the correction, i.e. ``-dx``/``-dy``.)

AROSICS prints to stdout in a few places even when quiet and emits warnings; both are captured
around its calls and logged at debug level. That redirection touches process-global state
(``sys.stdout``, the warnings filters), so two coreg steps should not run in threads of one
process at the same time; the pipeline's process-based Dask workers are fine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ..errors import ConfigError, StepError
from ..fields import doc
from ..provenance import StepRecord
from ..reference import texture_score, texture_snr
from .base import AuxLayer, AuxRequest, Scene, Sidecar, StepResult

log = logging.getLogger(__name__)

Mode = Literal["global", "local"]
ReferenceMode = Literal["clearest", "median", "file"]
Resampling = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos"]
OnFailure = Literal["keep", "skip", "fail"]

MATCH_BAND_FALLBACK: Final = ("B08", "B8A", "B04", "B03", "B02")
"""Bands tried, in order, when the scene has no ``match_band``."""
SCL_BAD: Final = (0, 1, 3, 8, 9, 10, 11)
"""SCL classes that are bad data for matching when there is no ``CLOUD_MASK``: no data,
saturated/defective, cloud shadow, cloud medium/high probability, thin cirrus, snow."""
CLOUD_MASK_CLEAR: Final = 1
"""The ``CLOUD_MASK`` value of clear pixels (see :mod:`stac2cube.steps.cloudmask`)."""
MAX_WINDOWS: Final = 5
"""Global mode: matching windows (most textured first, overlapping by at most half) whose
refined estimates are combined; their spread is the estimate's noise floor."""
SIGNIFICANCE: Final = 3.0
"""A shift is applied only when its length exceeds this many standard errors (measured per
scene from the spread of the windows' or tie points' estimates)."""
MIN_SE_PX: Final = 0.005
"""Smallest standard error (px) a significance test uses: windows of noise-free data can agree
exactly, which is no reason to trust a shift of a thousandth of a pixel."""
ANOMALY_MADS: Final = 5.0
"""Robust standard deviations of the scene-minus-reference difference beyond which a pixel is an
anomaly (cloud, haze, shadow or change) that must not drive the matching."""
REFINE_PASSES: Final = 3
"""Most passes of the sub-pixel refinement of each window's estimate (see ``_refine``)."""
DEFAULT_WINDOW_SIGMA_PX: Final = 0.1
"""Noise (px) assumed for one window's estimate when fewer than 3 windows match and their
quadrants cannot be matched either: a conservative figure (real Sentinel-2 windows of 256 px
scatter by 0.01-0.05 px, see ``benchmarks/results/coreg.json``), so that only a shift of more
than 0.3 px is applied on the evidence of a single window."""
REFINE_LOWPASS_PX: Final = 0.7
"""Standard deviation (px) of the Gaussian low-pass applied before the refinement."""
MAX_REFINEMENT_PX: Final = 0.5
"""A refinement that moves a window's estimate by more than this means two peaks: rejected."""
ANOMALY_MIN_DIFF: Final = 0.02
"""Smallest difference (reflectance, after the box average) an anomaly has: below the 0.03 of
the multi-temporal cloud test (Hagolle et al. 2010), above what a sub-pixel misregistration
makes of a smoothed edge."""
DEFAULT_MIN_TEXTURE_SNR: Final = 4.0
"""Default ``min_texture_snr``: a window must have 4x the texture its own noise gives."""
MIN_FALLBACK_WINDOW: Final = 64
"""Global mode: when no ``window_size`` window is clear enough, halved windows are tried down to
this size (px)."""
TIEPOINTS_SIDECAR: Final = "coreg_tiepoints"
"""Key of the tie-point sidecar in ``scene.sidecars`` (local mode)."""
DEFAULT_WINDOW: Final[Mapping[str, int]] = {"global": 256, "local": 128}
"""``window_size`` when it is not set: AROSICS' default 256 px for the single global window;
128 px for local tie points (smaller windows follow a varying field more closely; below 64 px
AROSICS warns that accuracy suffers)."""

_FILL: Final = -9999.0  # nodata of the float arrays handed to AROSICS (it does not take NaN)
_RESAMPLINGS: Final = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos")

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]
T = TypeVar("T")


@dataclass(frozen=True)
class CoregConfig:
    """Co-registration onto the catalog's reference image with AROSICS (``steps.coreg``).

    The default mode is ``global``: Sentinel-2 multi-temporal misregistration is dominated by
    a sub-pixel translation per acquisition, which five refined 256 px windows measure to a
    few thousandths of a pixel on real texture in about a second, while the local tie-point
    warp costs several times more and passes the noise of every tie point into the image. Use
    ``local`` where the displacement varies over the scene (relief with DEM errors, detector
    boundaries, large AOIs); see ``benchmarks/results/coreg.json``.
    """

    mode: Mode = doc(
        "`global`: one X/Y shift from up to five matching windows (AROSICS COREG, refined); "
        "`local`: a tie-point grid and a warp through the valid tie points (AROSICS "
        "COREG_LOCAL). Either is applied only when significant and improving the alignment.",
        "global",
    )
    reference: ReferenceMode = doc(
        "Which reference the pipeline builds: `clearest` (the clearest textured scene of the "
        "catalog), `median` (per-pixel median of the `reference_scenes` clearest, clouds "
        "masked) or `file` (`reference_path`).",
        "clearest",
    )
    reference_path: str | None = doc(
        "Path or GDAL-readable URL of the reference raster for `reference: file` (any CRS; "
        "read onto each scene's grid).",
        None,
    )
    reference_band_index: int = doc(
        "Band of `reference_path` to match against (1-based).",
        1,
    )
    reference_scenes: int = doc(
        "Number of clearest scenes that are reference candidates (`clearest` picks one of "
        "them; `median` composites them).",
        5,
    )
    match_band: str = doc(
        "Band matched against the reference (and the band the reference is built from). "
        "If the scene lacks it: the first of B08, B8A, B04, B03, B02 it has.",
        "B08",
    )
    window_size: int | None = doc(
        "Matching window size in pixels (AROSICS rounds down to a power of 2). None: 256 for "
        "`global`, 128 for `local`.",
        None,
    )
    grid_res: int = doc(
        "Tie-point spacing in pixels (`local`); a 1000 px scene at 50 px has 441 points.",
        50,
    )
    max_shift: float = doc(
        "Largest shift in pixels accepted (AROSICS max_shift, per axis); larger ones are "
        "treated as false matches.",
        5.0,
    )
    min_reliability: float = doc(
        "Smallest AROSICS shift reliability (percent, 0-100) accepted: for the global match, "
        "and for each tie point at `tiepoint_filter_level` >= 1.",
        60.0,
    )
    tiepoint_filter_level: int = doc(
        "AROSICS tie-point filtering (`local`): 0 none, 1 reliability, 2 also SSIM "
        "improvement, 3 also RANSAC outliers.",
        3,
    )
    min_valid_tiepoints: int = doc(
        "Fewest valid tie points (after filtering) for a local correction; fewer fail.",
        10,
    )
    resampling: Resampling = doc(
        "Kernel that applies the correction to reflectance bands (class and mask layers always "
        "use `nearest`): nearest, bilinear, cubic, cubic_spline or lanczos.",
        "cubic",
    )
    max_bad_fraction: float = doc(
        "Largest fraction (0-1) of cloud, shadow or nodata pixels in a matching window; "
        "windows and tie points with more are not used.",
        0.2,
    )
    min_texture: float = doc(
        "Smallest absolute texture (RMS gradient of the 3x3-averaged band, reflectance per "
        "pixel) of the matching window in the scene and in the reference; a floor under "
        "`min_texture_snr` for noise-free data. Real 10 m Sentinel-2 farmland scores "
        "0.002-0.006 in B03 and 0.01-0.02 in B08.",
        0.0005,
    )
    min_texture_snr: float = doc(
        "Smallest texture of the matching window relative to the texture the band's own noise "
        "gives (noise estimated per window, Immerkaer 1996): about 1 for a flat window "
        "(water, haze), 10-30 for real farmland even in B02/B03. Flatter windows are not "
        "matched.",
        DEFAULT_MIN_TEXTURE_SNR,
        since="0.2.0",
    )
    on_failure: OnFailure = doc(
        "When matching fails: `keep` writes the scene unshifted (status failed in the "
        "provenance), `skip` does not write it, `fail` stops with an error.",
        "keep",
    )

    def __post_init__(self) -> None:
        k = "steps.coreg"

        def one_of(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in allowed:
                raise ConfigError(f"{k}.{name} {v!r} is not one of {', '.join(allowed)}")

        one_of("mode", ("global", "local"))
        one_of("reference", ("clearest", "median", "file"))
        one_of("resampling", _RESAMPLINGS)
        one_of("on_failure", ("keep", "skip", "fail"))
        if self.reference == "file" and not self.reference_path:
            raise ConfigError(
                f"{k}.reference is 'file' but {k}.reference_path is not set; give the path or "
                "URL of the reference raster, or use reference: clearest / median"
            )
        if self.reference != "file" and self.reference_path:
            raise ConfigError(
                f"{k}.reference_path is only used with reference: file (reference is "
                f"{self.reference!r}); remove it or set reference: file"
            )
        if self.reference_band_index < 1:
            raise ConfigError(
                f"{k}.reference_band_index is 1-based, got {self.reference_band_index}"
            )
        if not 1 <= self.reference_scenes <= 100:
            raise ConfigError(
                f"{k}.reference_scenes must be between 1 and 100, got {self.reference_scenes}"
            )
        if not self.match_band:
            raise ConfigError(f"{k}.match_band must name a band, e.g. B08")
        if self.window_size is not None and not 32 <= self.window_size <= 4096:
            raise ConfigError(
                f"{k}.window_size must be between 32 and 4096 pixels (or null for the mode's "
                f"default), got {self.window_size}"
            )
        if not 4 <= self.grid_res <= 10000:
            raise ConfigError(
                f"{k}.grid_res must be between 4 and 10000 pixels, got {self.grid_res}"
            )
        if not (math.isfinite(self.max_shift) and 0.0 < self.max_shift <= 500.0):
            raise ConfigError(
                f"{k}.max_shift must be a number of pixels in (0, 500], got {self.max_shift}"
            )
        if not 0.0 <= self.min_reliability <= 100.0:
            raise ConfigError(
                f"{k}.min_reliability is a percentage between 0 and 100, got {self.min_reliability}"
            )
        if self.tiepoint_filter_level not in (0, 1, 2, 3):
            raise ConfigError(
                f"{k}.tiepoint_filter_level must be 0, 1, 2 or 3, got {self.tiepoint_filter_level}"
            )
        if self.min_valid_tiepoints < 5:
            raise ConfigError(
                f"{k}.min_valid_tiepoints must be >= 5 (a warp through fewer points is not "
                f"meaningful), got {self.min_valid_tiepoints}"
            )
        if not 0.0 <= self.max_bad_fraction < 1.0:
            raise ConfigError(
                f"{k}.max_bad_fraction must be a fraction in [0, 1), got {self.max_bad_fraction}"
            )
        if not (math.isfinite(self.min_texture) and self.min_texture >= 0.0):
            raise ConfigError(f"{k}.min_texture must be >= 0, got {self.min_texture}")
        if not (math.isfinite(self.min_texture_snr) and self.min_texture_snr >= 0.0):
            raise ConfigError(f"{k}.min_texture_snr must be >= 0, got {self.min_texture_snr}")

    @property
    def window(self) -> int:
        """The matching window size in pixels (``window_size`` or the mode's default)."""
        return self.window_size if self.window_size is not None else DEFAULT_WINDOW[self.mode]


class CoregFailure(Exception):
    """Matching did not give a trustworthy result (internal; becomes the failure policy)."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Capture AROSICS' stdout and warnings and log them at debug level."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            out = buf.getvalue().strip()
            if out:
                log.debug("arosics: %s", out)
            for w in caught:
                log.debug("arosics warning: %s", w.message)


def _arosics_call(what: str, fn: Callable[[], T]) -> T:
    """Run an AROSICS call quietly; its errors become :class:`CoregFailure`."""
    try:
        with _quiet():
            return fn()
    except (StepError, CoregFailure):
        raise
    except Exception as exc:  # AROSICS raises bare RuntimeError/AssertionError/ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CoregFailure(f"AROSICS {what} failed: {msg}") from exc


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


def _window_bad_fraction(bad: BoolA, window: int) -> F32:
    """Fraction of bad pixels among the in-image pixels of the ``window`` box around each pixel."""
    from scipy import ndimage

    size = min(window, *bad.shape)
    num = ndimage.uniform_filter(bad.astype(np.float32), size=size, mode="constant", cval=0.0)
    den = ndimage.uniform_filter(np.ones(bad.shape, np.float32), size=size, mode="constant")
    out: F32 = (num / np.maximum(den, 1e-6)).astype(np.float32)
    return out


def _pick_windows(
    target: F32, bad: BoolA, frac: F32, window: int, max_bad: float, n: int
) -> list[tuple[int, int]]:
    """Centres ``(row, col)`` of up to ``n`` global matching windows, most texture first: on a
    ``window/4`` lattice, at most ``max_bad`` bad pixels, a clear centre, overlapping each other
    by at most half a window. Empty when no position qualifies."""
    from scipy import ndimage

    h, w = target.shape
    half = window // 2
    step = max(window // 4, 1)

    def axis(n: int) -> list[int]:
        if n <= window:
            return [n // 2]
        return list(range(half, n - half + 1, step)) or [n // 2]

    # local texture energy: squared gradient of the 3x3 mean, bad pixels left out
    ok = np.isfinite(target) & ~bad
    a = np.where(ok, target, 0.0).astype(np.float32)
    s = ndimage.uniform_filter(a, size=3)
    okb = ndimage.uniform_filter(ok.astype(np.float32), size=3) > 0.999
    g2 = np.zeros_like(s)
    gx = np.diff(s, axis=1) ** 2
    gy = np.diff(s, axis=0) ** 2
    g2[:, 1:] += np.where(okb[:, 1:] & okb[:, :-1], gx, 0.0)
    g2[1:, :] += np.where(okb[1:, :] & okb[:-1, :], gy, 0.0)
    energy = ndimage.uniform_filter(g2, size=min(window, h, w), mode="constant")
    cands = [
        (float(energy[r, c]), r, c)
        for r in axis(h)
        for c in axis(w)
        if not bad[r, c] and frac[r, c] <= max_bad
    ]
    cands.sort(reverse=True)
    picked: list[tuple[int, int]] = []
    for _, r, c in cands:
        # windows that overlap a picked one by more than half are not new evidence
        if all(abs(r - pr) >= half or abs(c - pc) >= half for pr, pc in picked):
            picked.append((r, c))
        if len(picked) == n:
            break
    return picked


def _crs(geobox: GeoBox) -> Any:
    if geobox.crs is None:
        raise StepError("the scene grid has no CRS; co-registration needs a georeferenced grid")
    return geobox.crs


def _geoarray(data: np.ndarray, geobox: GeoBox, nodata: float | None) -> Any:
    from geoarray import GeoArray

    return GeoArray(
        np.ascontiguousarray(data), geobox.affine.to_gdal(), _crs(geobox).to_wkt(), nodata=nodata
    )


def _paste(arr: np.ndarray, gt: tuple[float, ...], geobox: GeoBox, fill: float) -> np.ndarray:
    """Put AROSICS' output (array + GDAL geotransform on the grid's lattice) on ``geobox``."""
    x0, res_x, _, y0, _, res_y = geobox.affine.to_gdal()
    fc = (gt[0] - x0) / res_x
    fr = (gt[3] - y0) / res_y
    if abs(gt[1] - res_x) > 1e-6 * abs(res_x) or abs(gt[5] - res_y) > 1e-6 * abs(res_y):
        raise StepError(f"AROSICS returned pixel size {gt[1]}/{gt[5]}, expected {res_x}/{res_y}")
    if abs(fc - round(fc)) > 1e-3 or abs(fr - round(fr)) > 1e-3:
        raise StepError(
            f"AROSICS returned a grid offset by {fc:.4f}/{fr:.4f} px from the scene grid; "
            "this is a bug, please report it"
        )
    oc, orow = round(fc), round(fr)
    h, w = geobox.shape.yx
    out = np.full((h, w, *arr.shape[2:]), fill, dtype=arr.dtype)
    r0, c0 = max(orow, 0), max(oc, 0)
    r1, c1 = min(orow + arr.shape[0], h), min(oc + arr.shape[1], w)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = arr[r0 - orow : r1 - orow, c0 - oc : c1 - oc]
    return out


def _deshift(
    stack: np.ndarray,
    geobox: GeoBox,
    coreg_info: Mapping[str, Any],
    resampling: str,
    nodata: float,
) -> np.ndarray:
    """Apply AROSICS' correction to a ``(y, x, n)`` stack, output on exactly ``geobox``."""
    from arosics import DESHIFTER

    x0, res_x, _, y0, _, res_y = geobox.affine.to_gdal()
    bounds = geobox.extent.boundingbox
    info = dict(coreg_info)  # DESHIFTER may rewrite entries
    ds = DESHIFTER(
        _geoarray(stack, geobox, nodata),
        info,
        target_xyGrid=[[x0, x0 + res_x], [y0, y0 + res_y]],
        clipextent=[bounds.left, bounds.bottom, bounds.right, bounds.top],
        resamp_alg=resampling,
        nodata=nodata,
        CPUs=1,
        progress=False,
        q=True,
    )
    res = _arosics_call("shift correction", ds.correct_shifts)
    arr = np.asarray(res["arr_shifted"])
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return _paste(arr, tuple(res["updated geotransform"]), geobox, nodata)


def _apply(scene: Scene, coreg_info: Mapping[str, Any], cfg: CoregConfig) -> Scene:
    """The scene with every band and class layer corrected once, on its own grid."""
    gbox = scene.geobox
    bands: dict[str, np.ndarray] = dict(scene.bands)
    if scene.bands:
        names = list(scene.bands)
        stack = np.stack(
            [np.nan_to_num(np.asarray(scene.bands[n], np.float32), nan=_FILL) for n in names],
            axis=-1,
        )
        out = _deshift(stack, gbox, coreg_info, cfg.resampling, _FILL)
        for i, n in enumerate(names):
            a = out[:, :, i].astype(np.float32)
            a[a <= _FILL + 1.0] = np.nan
            bands[n] = a
    classes: dict[str, np.ndarray] = dict(scene.classes)
    groups: dict[tuple[int, str], list[str]] = {}
    for n, a in scene.classes.items():
        info = scene.layer_info.get(n)
        nodata = info.nodata if info is not None else 0
        groups.setdefault((nodata, np.asarray(a).dtype.str), []).append(n)
    for (nodata, _), names in groups.items():
        stack = np.stack([np.asarray(scene.classes[n]) for n in names], axis=-1)
        out = _deshift(stack, gbox, coreg_info, "nearest", float(nodata))
        for i, n in enumerate(names):
            classes[n] = np.ascontiguousarray(out[:, :, i]).astype(scene.classes[n].dtype)
    return scene.replace(bands=bands, classes=classes)


def _match_band(scene: Scene, cfg: CoregConfig) -> str:
    for b in (cfg.match_band, *MATCH_BAND_FALLBACK):
        if b in scene.bands:
            return b
    raise StepError(
        f"{scene.item_id}: co-registration needs a band to match; the scene has none of "
        f"{cfg.match_band}, {', '.join(MATCH_BAND_FALLBACK)}; add steps.coreg.match_band to `bands`"
    )


def _num(v: Any) -> float | None:
    """A finite float or None (AROSICS uses None, NaN and -9999 for 'no value')."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f != -9999.0 else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
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
        out: BoolA = self.bad_tgt | self.bad_ref | self.anomaly
        return out


def _ncc(a: np.ndarray, b: np.ndarray, ok: BoolA) -> float | None:
    if int(ok.sum()) < 64:
        return None
    x = a[ok].astype(np.float64)
    y = b[ok].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y)) / den if den > 0 else None


def _move(a: np.ndarray, mx: float, my: float) -> NDArray[np.float64]:
    """``a`` with its content moved by ``mx`` px east and ``my`` px south: an exact sub-pixel
    translation (Fourier shift theorem) of the mirror-padded array, so the result is neither
    smoothed nor wrapped at the edges. ``a`` must be finite."""
    from scipy import ndimage

    pad = math.ceil(max(abs(mx), abs(my))) + 16
    p = np.pad(np.asarray(a, dtype=np.float64), pad, mode="symmetric")
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(p), (my, mx))).real
    out: NDArray[np.float64] = moved[pad:-pad, pad:-pad]
    return out


def _for_matching(band: F32, bad: BoolA) -> F32:
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


# --------------------------------------------------------------------------------------------
# Global matching: several windows, a refined estimate each, one significant shift
# --------------------------------------------------------------------------------------------


@dataclass
class _WindowMatch:
    dx: float
    dy: float
    reliability: float | None
    ssim_before: float | None
    ssim_after: float | None
    info: dict[str, Any]
    region: tuple[slice, slice]


def _region(shape: tuple[int, int], r: int, c: int, half: int, pad: int) -> tuple[slice, slice]:
    h, w = shape
    return (
        slice(max(r - half - pad, 0), min(r + half + pad, h)),
        slice(max(c - half - pad, 0), min(c + half + pad, w)),
    )


def _arosics_window(
    ref: F32,
    tgt: F32,
    bad_ref: BoolA,
    bad_tgt: BoolA,
    gbox: GeoBox,
    cfg: CoregConfig,
    win: int,
    centre_xy: tuple[float, float],
) -> Any:
    """AROSICS COREG on one window of two (sub-)images already prepared for matching."""
    from arosics import COREG

    def run() -> Any:
        cr = COREG(
            _geoarray(ref, gbox, _FILL),
            _geoarray(tgt, gbox, _FILL),
            wp=centre_xy,
            ws=(win, win),
            max_shift=cfg.max_shift,
            nodata=(_FILL, _FILL),
            mask_baddata_ref=_geoarray(bad_ref, gbox, None),
            mask_baddata_tgt=_geoarray(bad_tgt, gbox, None),
            CPUs=1,
            progress=False,
            q=True,
            ignore_errors=True,
        )
        cr.calculate_spatial_shifts()
        return cr

    cr = _arosics_call("matching", run)
    if not cr.success or cr.x_shift_px is None or cr.y_shift_px is None:
        err = cr.tracked_errors[-1] if cr.tracked_errors else "no match found"
        msg = str(err).strip().splitlines()[0] if str(err).strip() else "no match found"
        raise CoregFailure(f"AROSICS found no valid shift: {msg}")
    return cr


def _match_window(
    inp: _Inputs, gbox: GeoBox, cfg: CoregConfig, win: int, r: int, c: int, rec: dict[str, Any]
) -> _WindowMatch:
    """AROSICS COREG in the ``win`` px window centred on pixel ``(r, c)`` (on a sub-image of the
    window plus ``max_shift``), with the texture, ``max_shift`` and reliability checks, then
    refined by :func:`_refine`. Raises :class:`CoregFailure` when the window gives no trusted
    estimate; ``rec`` gets the window's record."""
    half = win // 2
    sl = (slice(max(r - half, 0), r + half), slice(max(c - half, 0), c + half))
    bad_win = inp.bad_tgt[sl] | inp.bad_ref[sl]
    snr_t = texture_snr(inp.target[sl], bad_win)
    snr_r = texture_snr(inp.reference[sl], bad_win)
    tex_t = texture_score(inp.target[sl], bad_win)
    tex_r = texture_score(inp.reference[sl], bad_win)
    rec["texture"] = {"scene": round(tex_t, 5), "reference": round(tex_r, 5)}
    rec["texture_snr"] = {
        "scene": round(snr_t, 2) if math.isfinite(snr_t) else None,
        "reference": round(snr_r, 2) if math.isfinite(snr_r) else None,
    }
    if min(tex_t, tex_r) < cfg.min_texture or min(snr_t, snr_r) < cfg.min_texture_snr:
        which = "scene" if (tex_t, snr_t) < (tex_r, snr_r) else "reference"
        raise CoregFailure(
            f"flat texture: the {which} has texture {min(tex_t, tex_r):.4f} "
            f"({min(snr_t, snr_r):.1f} x its noise's) in the matching window, below min_texture "
            f"{cfg.min_texture} or min_texture_snr {cfg.min_texture_snr}; nothing to match"
        )
    pad = math.ceil(cfg.max_shift) + 8
    reg = _region(inp.target.shape, r, c, half, pad)
    sub = gbox[reg]
    ref = _for_matching(inp.reference[reg], inp.bad_ref[reg])
    tgt = _for_matching(inp.target[reg], inp.bad_tgt[reg])
    bad_r, bad_t = inp.bad_ref[reg], inp.bad_tgt[reg]
    x, y = gbox.affine * (c + 0.5, r + 0.5)
    cr = _arosics_window(ref, tgt, bad_r, bad_t, sub, cfg, win, (x, y))
    dx, dy = -float(cr.x_shift_px), -float(cr.y_shift_px)
    rel = _num(cr.shift_reliability)
    rec.update(first_estimate_px=[round(dx, 4), round(dy, 4)], reliability=_round(rel, 2))
    if max(abs(dx), abs(dy)) > cfg.max_shift:
        raise CoregFailure(f"shift {dx:.2f}/{dy:.2f} px is larger than max_shift {cfg.max_shift}")
    if rel is not None and rel < cfg.min_reliability:
        raise CoregFailure(
            f"shift reliability {rel:.1f} % is below min_reliability {cfg.min_reliability} %"
        )
    info: dict[str, Any] = dict(cr.coreg_info)
    ssim0, ssim1 = _num(cr.ssim_orig), _num(cr.ssim_deshifted)
    inner = (
        slice(sl[0].start - reg[0].start, sl[0].stop - reg[0].start),
        slice(sl[1].start - reg[1].start, sl[1].stop - reg[1].start),
    )
    rx, ry = _refine(ref, tgt, inner, dx, dy)
    if math.hypot(rx - dx, ry - dy) > MAX_REFINEMENT_PX:
        raise CoregFailure(
            f"AROSICS' shift {dx:.2f}/{dy:.2f} px and the refined cross-correlation "
            f"{rx:.2f}/{ry:.2f} px disagree by more than {MAX_REFINEMENT_PX} px: no clear peak"
        )
    rec["refinement_px"] = [round(rx - dx, 4), round(ry - dy, 4)]
    dx, dy = rx, ry
    rec["shift_px"] = [round(dx, 4), round(dy, 4)]
    return _WindowMatch(dx, dy, rel, ssim0, ssim1, info, reg)


def _hann(shape: tuple[int, ...]) -> NDArray[np.float64]:
    """2-D Hann window: tapers a matching window to zero at its edges, which do not move with
    the content and would otherwise pull the correlation peak towards zero shift."""
    out: NDArray[np.float64] = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    return out


def _refine(
    ref: F32, tgt: F32, inner: tuple[slice, slice], dx: float, dy: float
) -> tuple[float, float]:
    """The displacement ``(dx, dy)`` refined by upsampled cross-correlation (the DFT method of
    Guizar-Sicairos et al. 2008, scikit-image, to 1/100 px) of the reference's window against
    the scene's window moved back by the current estimate (exact Fourier shift), until the
    residual is below 0.01 px or after :data:`REFINE_PASSES` passes.

    AROSICS' own sub-pixel estimate is a two-point peak fit that is never near zero for small
    shifts (it always takes a side maximum: 0.1 px found for 0). Three choices keep the refined
    estimate unbiased on aliased, real-looking data (``benchmarks/results/coreg.json``): both
    windows are low-passed (Gaussian, :data:`REFINE_LOWPASS_PX`), which leaves out the upper
    half of the spectrum where aliasing makes a sub-pixel shift ambiguous; they are correlated
    without spectral whitening (phase-only correlation weighs exactly those frequencies as
    much as the rest, and underestimated 0.25 px shifts by 30 %); and they are tapered by a
    Hann window, since their edges do not move with the content."""
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    ref_lp = ndimage.gaussian_filter(np.asarray(ref, dtype=np.float64), REFINE_LOWPASS_PX)
    tgt_lp = ndimage.gaussian_filter(np.asarray(tgt, dtype=np.float64), REFINE_LOWPASS_PX)
    ref_w = ref_lp[inner]
    taper = _hann(ref_w.shape)
    ref_w = (ref_w - ref_w.mean()) * taper
    for _ in range(REFINE_PASSES):
        moved = _move(tgt_lp, -dx, -dy)[inner]
        moved = (moved - moved.mean()) * taper
        (ry, rx), _, _ = phase_cross_correlation(  # type: ignore[no-untyped-call]
            moved, ref_w, upsample_factor=100, normalization=None
        )
        dx, dy = dx + float(rx), dy + float(ry)
        if math.hypot(float(rx), float(ry)) < 0.01:
            break
    return dx, dy


def _global_info(template: Mapping[str, Any], gbox: GeoBox, dx: float, dy: float) -> dict[str, Any]:
    """AROSICS' ``coreg_info`` for a global correction of the displacement ``(dx, dy)`` px."""
    from py_tools_ds.geo.map_info import geotransform2mapinfo

    _x0, res_x, _, _y0, _, res_y = gbox.affine.to_gdal()
    xm, ym = -dx * res_x, dy * abs(res_y)  # the correction in map units (AROSICS' convention)
    info = dict(template)
    prj = _crs(gbox).to_wkt()
    original = geotransform2mapinfo(gbox.affine.to_gdal(), prj)
    updated = list(original)
    updated[3] = str(float(original[3]) + xm)
    updated[4] = str(float(original[4]) + ym)
    info.update(
        corrected_shifts_px={"x": -dx, "y": -dy},
        corrected_shifts_map={"x": xm, "y": ym},
        **{"original map info": original, "updated map info": updated},
    )
    return info


def _quadrant_sigma(
    inp: _Inputs, gbox: GeoBox, cfg: CoregConfig, m: _WindowMatch, win: int
) -> float | None:
    """Noise of one window's estimate from the spread of its four quadrants' estimates (each
    from a quarter of the pixels, so twice as noisy): per-axis standard deviation / 2."""
    half = win // 2
    if half < 32:
        return None
    r_mid = (m.region[0].start + m.region[0].stop) // 2
    c_mid = (m.region[1].start + m.region[1].stop) // 2
    est = []
    for dr in (-half // 2, half // 2):
        for dc in (-half // 2, half // 2):
            try:
                q = _match_window(inp, gbox, cfg, half, r_mid + dr, c_mid + dc, {})
            except CoregFailure:
                continue
            est.append((q.dx, q.dy))
    if len(est) < 3:
        return None
    a = np.asarray(est)
    return float(math.hypot(*np.std(a, axis=0, ddof=1))) / 2.0


def _match_global(
    inp: _Inputs, gbox: GeoBox, cfg: CoregConfig, results: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Match up to :data:`MAX_WINDOWS` windows, combine their refined estimates and decide
    whether the shift is significant and improves the alignment. Returns AROSICS' correction
    info for the combined shift and whether to apply it (the reason is in ``results``)."""
    win = cfg.window
    centres: list[tuple[int, int]] = []
    while not centres:
        frac = inp.frac if win == cfg.window else _window_bad_fraction(inp.bad_any, win)
        centres = _pick_windows(
            inp.target, inp.bad_any, frac, win, cfg.max_bad_fraction, MAX_WINDOWS
        )
        if not centres:
            if win // 2 < MIN_FALLBACK_WINDOW:
                raise CoregFailure(
                    f"no matching window of {cfg.window} down to {win} px has at most "
                    f"{cfg.max_bad_fraction:.0%} cloud, shadow, anomaly or nodata pixels"
                )
            win //= 2
    windows: list[dict[str, Any]] = []
    matches: list[_WindowMatch] = []
    for r, c in centres:
        rec: dict[str, Any] = {"center_px": [c, r]}
        try:
            matches.append(_match_window(inp, gbox, cfg, win, r, c, rec))
            rec["status"] = "matched"
        except CoregFailure as exc:
            rec.update(status="rejected", reason=str(exc))
            log.debug("matching window at col %d row %d: %s", c, r, exc)
        windows.append(rec)
    results.update(window_size_px=[win, win], windows_tried=len(windows), windows=windows)
    if not matches:
        reasons = sorted({w["reason"] for w in windows})
        raise CoregFailure(
            f"{len(windows)} matching window(s) failed: " + "; ".join(reasons)
            if len(reasons) > 1
            else reasons[0]
        )
    first = next(w for w in windows if w["status"] == "matched")
    results["window_center_px"] = first["center_px"]
    results["texture"] = first["texture"]
    d = np.asarray([(m.dx, m.dy) for m in matches], dtype=np.float64)
    inlier = np.ones(len(matches), dtype=bool)
    if len(matches) >= 3:
        dist = np.hypot(*(d - np.median(d, axis=0)).T)
        inlier = dist <= 3.0 * 1.4826 * float(np.median(dist)) + 0.02
        for w, m_ok in zip((w for w in windows if w["status"] == "matched"), inlier, strict=True):
            if not m_ok:
                w["status"] = "outlier"
    used = [m for m, ok in zip(matches, inlier, strict=True) if ok]
    du = d[inlier]
    mdx, mdy = (float(v) for v in du.mean(axis=0))
    if len(used) >= 3:
        se = float(math.hypot(*np.std(du, axis=0, ddof=1))) / math.sqrt(len(used))
        noise_from = "windows"
    else:
        sig = [s for m in used if (s := _quadrant_sigma(inp, gbox, cfg, m, win)) is not None]
        if sig:
            se = float(np.mean(sig)) / math.sqrt(len(used))
            noise_from = "quadrants"
        else:
            se = DEFAULT_WINDOW_SIGMA_PX / math.sqrt(len(used))
            noise_from = f"not measurable: {DEFAULT_WINDOW_SIGMA_PX} px per window assumed"
    rels = [m.reliability for m in used if m.reliability is not None]
    ssim0 = [m.ssim_before for m in used if m.ssim_before is not None]
    ssim1 = [m.ssim_after for m in used if m.ssim_after is not None]
    res_x, res_y = gbox.affine.a, abs(gbox.affine.e)
    results.update(
        shift_px=[round(mdx, 4), round(mdy, 4)],
        shift_m=[round(mdx * res_x, 3), round(-mdy * res_y, 3)],
        windows_used=len(used),
        reliability=round(float(np.mean(rels)), 2) if rels else None,
        ssim_before=round(float(np.mean(ssim0)), 4) if ssim0 else None,
        ssim_after=round(float(np.mean(ssim1)), 4) if ssim1 else None,
        noise_floor_from=noise_from,
    )
    info = _global_info(used[0].info, gbox, mdx, mdy)
    length = math.hypot(mdx, mdy)
    se = max(se, MIN_SE_PX)
    results["shift_se_px"] = round(se, 4)
    results["significance"] = round(length / se, 2)
    if length <= SIGNIFICANCE * se:
        results["status_if_not_applied"] = "not_significant"
        results["decision"] = (
            f"not applied: the shift {length:.3f} px is within {SIGNIFICANCE:g} x its standard "
            f"error {se:.3f} px"
        )
        return info, False
    ncc0, ncc1 = _alignment_gain(inp, [m.region for m in used], mdx, mdy)
    results["correlation_before"] = _round(ncc0, 5)
    results["correlation_after"] = _round(ncc1, 5)
    if ncc0 is None or ncc1 is None or ncc1 <= ncc0:
        results["status_if_not_applied"] = "no_improvement"
        results["decision"] = (
            "not applied: correcting the shift does not raise the correlation with the reference "
            f"over the clear pixels of the matched windows ({ncc0} -> {ncc1})"
        )
        return info, False
    results["decision"] = "applied"
    return info, True


def _alignment_gain(
    inp: _Inputs, regions: list[tuple[slice, slice]], dx: float, dy: float
) -> tuple[float | None, float | None]:
    """Correlation of the scene with the reference over the clear pixels of ``regions``, before
    and after moving the scene's content back by ``(dx, dy)`` with an exact Fourier shift (no
    smoothing, so a shift that only blurs noise away cannot win)."""
    from scipy import ndimage

    before: list[tuple[np.ndarray, np.ndarray]] = []
    after: list[tuple[np.ndarray, np.ndarray]] = []
    for reg in regions:
        tgt = _for_matching(inp.target[reg], inp.bad_tgt[reg])
        moved = _move(tgt, -dx, -dy)
        bad = inp.bad_any[reg] | ~np.isfinite(inp.reference[reg])
        # pixels the move pulled from bad or outside pixels are left out of both
        pad = math.ceil(max(abs(dx), abs(dy))) + 2
        ok = ~ndimage.binary_dilation(bad, iterations=pad)
        ok[:pad] = ok[-pad:] = False
        ok[:, :pad] = ok[:, -pad:] = False
        ref = inp.reference[reg]
        before.append((tgt[ok], ref[ok]))
        after.append((moved[ok], ref[ok]))

    def ncc(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
        a = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0)
        b = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0)
        return _ncc(a, b, np.ones(a.shape, dtype=bool))

    return ncc(before), ncc(after)


def _round(v: float | None, n: int) -> float | None:
    return None if v is None else round(v, n)


def _tiepoints_geojson(tbl: Any, gbox: GeoBox, valid: NDArray[np.bool_]) -> bytes:
    """The tie-point table as a GeoJSON FeatureCollection (lon/lat, WGS 84)."""
    from pyproj import Transformer

    x = np.asarray(tbl["X_MAP"], dtype=np.float64)
    y = np.asarray(tbl["Y_MAP"], dtype=np.float64)
    tr = Transformer.from_crs(_crs(gbox).to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    cols = set(tbl.columns)

    def col(name: str, i: int) -> Any:
        return tbl[name].iloc[i] if name in cols else None

    def flag(name: str, i: int) -> bool | None:
        v = col(name, i)
        if v is None or (_num(v) is None and not isinstance(v, bool | np.bool_)):
            return None
        return bool(v)

    feats = []
    for i in range(len(tbl)):
        sx, sy = _num(col("X_SHIFT_PX", i)), _num(col("Y_SHIFT_PX", i))
        mx, my = _num(col("X_SHIFT_M", i)), _num(col("Y_SHIFT_M", i))
        matched = sx is not None and sy is not None
        props = {
            "point_id": int(col("POINT_ID", i)),
            "col": float(col("X_IM", i)),
            "row": float(col("Y_IM", i)),
            "x": float(x[i]),
            "y": float(y[i]),
            "matched": matched,
            "dx_px": None if sx is None else round(-sx, 4),
            "dy_px": None if sy is None else round(-sy, 4),
            "dx_m": None if mx is None else round(-mx, 3),
            "dy_m": None if my is None else round(-my, 3),
            "reliability": _num(col("RELIABILITY", i)),
            "ssim_before": _num(col("SSIM_BEFORE", i)),
            "ssim_after": _num(col("SSIM_AFTER", i)),
            "outlier_reliability": flag("L1_OUTLIER", i) if matched else None,
            "outlier_ssim": flag("L2_OUTLIER", i) if matched else None,
            "outlier_ransac": flag("L3_OUTLIER", i) if matched else None,
            "valid": bool(valid[i]),
        }
        feats.append(
            {
                "type": "Feature",
                "id": props["point_id"],
                "geometry": {"type": "Point", "coordinates": [float(lon[i]), float(lat[i])]},
                "properties": props,
            }
        )
    doc_: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": feats,
        # foreign member (RFC 7946 section 6.1): the CRS of the x/y properties
        "stac2cube:crs": str(_crs(gbox)),
        "stac2cube:convention": (
            "dx/dy: displacement of the scene's content relative to the reference; px with x to "
            "the east and y to the south, m with y to the north"
        ),
    }
    return json.dumps(doc_, allow_nan=False, separators=(",", ":")).encode()


def _match_local(
    inp: _Inputs,
    gbox: GeoBox,
    cfg: CoregConfig,
    results: dict[str, Any],
    sidecars: dict[str, Sidecar],
) -> tuple[dict[str, Any], bool]:
    from arosics import COREG_LOCAL

    win = cfg.window
    # tie points whose window has too many bad pixels are rejected through the target's mask
    tgt_mask = inp.bad_tgt | inp.anomaly | (inp.frac > cfg.max_bad_fraction)

    def run() -> tuple[Any, Any, Any]:
        cl = COREG_LOCAL(
            _geoarray(_for_matching(inp.reference, inp.bad_ref), gbox, _FILL),
            _geoarray(_for_matching(inp.target, inp.bad_tgt), gbox, _FILL),
            grid_res=cfg.grid_res,
            window_size=(win, win),
            max_shift=cfg.max_shift,
            tieP_filter_level=cfg.tiepoint_filter_level,
            min_reliability=cfg.min_reliability,
            nodata=(_FILL, _FILL),
            mask_baddata_ref=_geoarray(inp.bad_ref, gbox, None),
            mask_baddata_tgt=_geoarray(tgt_mask, gbox, None),
            CPUs=1,
            progress=False,
            q=True,
            ignore_errors=True,
        )
        tbl = cl.CoRegPoints_table
        return cl, tbl, cl.coreg_info

    _, tbl, info = _arosics_call("tie-point matching", run)
    n_grid = int(np.ceil((gbox.shape.x + cfg.grid_res) / cfg.grid_res)) * int(
        np.ceil((gbox.shape.y + cfg.grid_res) / cfg.grid_res)
    )
    cols = set(getattr(tbl, "columns", ()))
    if len(tbl) == 0 or "ABS_SHIFT" not in cols:
        results.update(tiepoints_grid=n_grid, tiepoints_total=len(tbl), tiepoints_matched=0)
        results["tiepoints_valid"] = 0
        raise CoregFailure(
            f"no tie point could be placed on clear, textured pixels ({len(tbl)} of {n_grid} "
            "grid points are off cloud and nodata)"
        )
    matched = np.asarray(tbl["ABS_SHIFT"], dtype=np.float64) != -9999.0
    outlier = (
        np.asarray(tbl["OUTLIER"]).astype(bool)
        if "OUTLIER" in cols and cfg.tiepoint_filter_level > 0
        else np.zeros(len(tbl), bool)
    )
    valid = matched & ~outlier
    sidecars[TIEPOINTS_SIDECAR] = Sidecar(
        filename="coreg_tiepoints.geojson",
        data=_tiepoints_geojson(tbl, gbox, valid),
        media_type="application/geo+json",
        title="Co-registration tie points",
        roles=("metadata",),
    )
    n_valid = int(valid.sum())
    counts: dict[str, Any] = {
        "tiepoints_grid": n_grid,
        "tiepoints_total": len(tbl),
        "tiepoints_matched": int(matched.sum()),
        "tiepoints_valid": n_valid,
    }
    for lvl, name in ((1, "L1_OUTLIER"), (2, "L2_OUTLIER"), (3, "L3_OUTLIER")):
        if name in cols:
            v = np.asarray(tbl[name])
            counts[f"tiepoints_outliers_l{lvl}"] = int(np.sum(matched & (v == True)))  # noqa: E712
    results.update(counts)
    if n_valid < cfg.min_valid_tiepoints and "L2_OUTLIER" in cols:
        # AROSICS' SSIM filter drops every tie point whose correction does not improve the
        # similarity, which is what a well-registered scene looks like: test the points the
        # other filters kept for a significant field before calling the match failed.
        kept = matched.copy()
        for name in ("L1_OUTLIER", "L3_OUTLIER"):
            if name in cols:
                kept &= ~(np.asarray(tbl[name]) == True)  # noqa: E712
        if int(kept.sum()) >= cfg.min_valid_tiepoints:
            kdx = -np.asarray(tbl["X_SHIFT_PX"], dtype=np.float64)[kept]
            kdy = -np.asarray(tbl["Y_SHIFT_PX"], dtype=np.float64)[kept]
            kcol = np.asarray(tbl["X_IM"], dtype=np.float64)[kept]
            krow = np.asarray(tbl["Y_IM"], dtype=np.float64)[kept]
            k_eff = int(kept.sum()) * min(1.0, (cfg.grid_res / win) ** 2)
            f_stat, f_crit = _field_significance(kcol, krow, kdx, kdy, k_eff)
            if f_stat is not None and f_crit is not None and f_stat <= f_crit:
                results.update(
                    shift_px=[round(float(kdx.mean()), 4), round(float(kdy.mean()), 4)],
                    field_f=round(f_stat, 2),
                    field_f_critical=round(f_crit, 2),
                    tiepoints_effective=round(k_eff, 1),
                    window_size_px=[win, win],
                    status_if_not_applied="not_significant",
                    decision=(
                        f"not applied: AROSICS' SSIM check rejected {int(kept.sum())} tie "
                        "points because correcting them would not improve the similarity, and "
                        "their shift field is not distinguishable from noise (F "
                        f"{f_stat:.2f} <= {f_crit:.2f} at p = 0.01): no misregistration found"
                    ),
                )
                return info, False
    if n_valid == 0:
        raise CoregFailure("no tie point survived AROSICS' filtering")
    dx = -np.asarray(tbl["X_SHIFT_PX"], dtype=np.float64)[valid]
    dy = -np.asarray(tbl["Y_SHIFT_PX"], dtype=np.float64)[valid]
    mx = -np.asarray(tbl["X_SHIFT_M"], dtype=np.float64)[valid]
    my = -np.asarray(tbl["Y_SHIFT_M"], dtype=np.float64)[valid]
    rel = np.asarray(tbl["RELIABILITY"], dtype=np.float64)[valid]
    mdx, mdy = float(dx.mean()), float(dy.mean())
    results.update(
        shift_px=[round(mdx, 4), round(mdy, 4)],
        shift_m=[round(float(mx.mean()), 3), round(float(my.mean()), 3)],
        shift_std_px=[round(float(dx.std()), 4), round(float(dy.std()), 4)],
        shift_rmse_px=round(float(np.sqrt(np.mean(dx**2 + dy**2))), 4),
        residual_rmse_px=round(float(np.sqrt(np.mean((dx - mdx) ** 2 + (dy - mdy) ** 2))), 4),
        reliability=round(float(rel.mean()), 2),
        window_size_px=[win, win],
    )
    if n_valid < cfg.min_valid_tiepoints:
        raise CoregFailure(
            f"only {n_valid} valid tie point(s) of {len(tbl)} (min_valid_tiepoints "
            f"{cfg.min_valid_tiepoints}); the scene is too cloudy or too flat for a local warp"
        )
    if float(np.median(rel)) < cfg.min_reliability:
        raise CoregFailure(
            f"median tie-point reliability {float(np.median(rel)):.1f} % is below "
            f"min_reliability {cfg.min_reliability} %"
        )
    if max(abs(mdx), abs(mdy)) > cfg.max_shift:
        raise CoregFailure(
            f"mean shift {mdx:.2f}/{mdy:.2f} px is larger than max_shift {cfg.max_shift}"
        )
    col = np.asarray(tbl["X_IM"], dtype=np.float64)[valid]
    row = np.asarray(tbl["Y_IM"], dtype=np.float64)[valid]
    n_eff = n_valid * min(1.0, (cfg.grid_res / win) ** 2)
    f_stat, f_crit = _field_significance(col, row, dx, dy, n_eff)
    results["field_f"] = None if f_stat is None else round(f_stat, 2)
    results["field_f_critical"] = None if f_crit is None else round(f_crit, 2)
    results["tiepoints_effective"] = round(n_eff, 1)
    out: dict[str, Any] = info
    if f_stat is None or f_crit is None:
        results["status_if_not_applied"] = "not_significant"
        results["decision"] = (
            f"not applied: {n_valid} tie points are only {n_eff:.1f} independent ones (their "
            f"{win} px windows overlap at a {cfg.grid_res} px spacing), too few to tell a shift "
            "field from noise; use a larger grid_res or a smaller window_size"
        )
        return out, False
    if f_stat <= f_crit:
        results["status_if_not_applied"] = "not_significant"
        results["decision"] = (
            "not applied: the tie points' shift field (mean and affine trend) is not "
            f"distinguishable from their noise (F {f_stat:.2f} <= {f_crit:.2f} at p = 0.01 with "
            f"{n_eff:.0f} effective tie points)"
        )
        return out, False
    results["decision"] = "applied"
    return out, True


def _field_significance(
    col: NDArray[np.float64],
    row: NDArray[np.float64],
    dx: NDArray[np.float64],
    dy: NDArray[np.float64],
    n_eff: float,
) -> tuple[float | None, float | None]:
    """F test of an affine shift field (``d = a + b col + c row`` per axis) fitted to the tie
    points against no displacement at all. The tie-point windows overlap, so their errors are
    correlated: the statistic is scaled by ``n_eff / n`` and the test uses ``n_eff`` degrees of
    freedom. Returns ``(F, F critical at p = 0.01)``, None when there are too few points."""
    from scipy import stats

    n = dx.size
    if n < 4 or n_eff < 4:
        return None, None
    span_c = max(float(np.ptp(col)), 1.0)
    span_r = max(float(np.ptp(row)), 1.0)
    a = np.column_stack([np.ones(n), (col - col.mean()) / span_c, (row - row.mean()) / span_r])
    k = int(np.linalg.matrix_rank(a))
    if n - k < 2:
        return None, None
    pred_ss = 0.0
    rss = 0.0
    for d in (dx, dy):
        coef, *_ = np.linalg.lstsq(a, d, rcond=None)
        p = a @ coef
        pred_ss += float(np.sum(p**2))
        rss += float(np.sum((d - p) ** 2))
    df1, df2 = 2 * k, 2 * max(n_eff - k, 1.0)
    sigma2 = max(rss / (2 * (n - k)), MIN_SE_PX**2)
    f_stat = (pred_ss / df1) / sigma2 * (n_eff / n)
    return float(f_stat), float(stats.f.ppf(0.99, df1, df2))


def _clear_correlation(a: np.ndarray, b: np.ndarray, ok: BoolA) -> float | None:
    """Correlation of two bands over ``ok`` after the same Gaussian low-pass (sigma 1 px), so
    that the resampling's own smoothing of a corrected band does not count as alignment."""
    from scipy import ndimage

    def lp(x: np.ndarray) -> NDArray[np.float64]:
        fill = np.where(ok & np.isfinite(x), x, 0.0).astype(np.float64)
        w = ndimage.gaussian_filter(ok.astype(np.float64), 1.0)
        out: NDArray[np.float64] = ndimage.gaussian_filter(fill, 1.0) / np.maximum(w, 1e-6)
        return out

    inner = ndimage.binary_erosion(ok, iterations=3)
    return _ncc(lp(a), lp(b), inner)


def _warp_improves(inp: _Inputs, warped: Scene, usable: BoolA, results: dict[str, Any]) -> bool:
    """Local mode: whether the warped match band correlates better with the reference over the
    clear pixels than the input did (both low-passed alike); records why not when it does not."""
    after = np.asarray(warped.bands[inp.band], dtype=np.float32)
    ok = usable & np.isfinite(after)
    ncc0 = _clear_correlation(inp.target, inp.reference, ok)
    ncc1 = _clear_correlation(after, inp.reference, ok)
    results["correlation_before"] = _round(ncc0, 5)
    results["correlation_after"] = _round(ncc1, 5)
    if ncc0 is not None and ncc1 is not None and ncc1 > ncc0:
        return True
    results["status_if_not_applied"] = "no_improvement"
    results["decision"] = (
        "not applied: the warp does not raise the correlation with the reference over the "
        f"clear pixels ({ncc0} -> {ncc1})"
    )
    return False


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


class CoregStep:
    """Co-registration onto the catalog's reference image (see the module docstring)."""

    name = "coreg"
    version = "1.1.0"

    def required_aux(self, cfg: CoregConfig) -> Mapping[str, AuxRequest]:
        """``"reference"``: the catalog's reference image, band ``cfg.match_band``
        (``level="reference"``), on the scene's own grid: ``resolution=0.0`` means "the scene's
        grid" (same shape and transform as the ``scene.bands`` arrays), not a pixel size."""
        return {"reference": AuxRequest(bands=(cfg.match_band,), resolution=0.0, level="reference")}

    def _inputs(self, scene: Scene, ref: AuxLayer, cfg: CoregConfig) -> _Inputs:
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
        band = _match_band(scene, cfg)
        target = np.asarray(scene.bands[band], dtype=np.float32)
        reference = np.asarray(data[0], dtype=np.float32)
        bad_tgt = bad_data_mask(scene) | ~np.isfinite(target)
        bad_ref = ~np.isfinite(reference)
        anomaly, info = anomaly_mask(scene, target, reference, bad_tgt | bad_ref, cfg.max_shift)
        frac = _window_bad_fraction(bad_tgt | bad_ref | anomaly, cfg.window)
        return _Inputs(target, reference, bad_tgt, bad_ref, frac, band, anomaly, info)

    def _match(
        self,
        scene: Scene,
        ref: AuxLayer,
        cfg: CoregConfig,
        results: dict[str, Any],
        sidecars: dict[str, Sidecar],
    ) -> tuple[Scene, str, str | None]:
        """Estimate, decide and (when it helps) apply the correction: ``(scene, status,
        reason)``. Raises :class:`CoregFailure` when there is no trustworthy match."""
        inp = self._inputs(scene, ref, cfg)
        results["match_band"] = inp.band
        results["reference_band"] = ref.bands[0] if ref.bands else None
        if ref.bands and ref.bands[0] != inp.band:
            log.warning(
                "%s: matching scene band %s against reference band %s",
                scene.item_id,
                inp.band,
                ref.bands[0],
            )
        results["anomalies"] = inp.anomalies
        usable = ~inp.bad_any
        results["clear_overlap_fraction"] = round(float(usable.mean()), 4)
        if not usable.any():
            if not np.isfinite(inp.reference).any():
                raise CoregFailure("the reference has no valid pixel over the scene")
            raise CoregFailure("the scene and the reference share no clear valid pixel")
        if cfg.mode == "global":
            info, apply = _match_global(inp, scene.geobox, cfg, results)
        else:
            info, apply = _match_local(inp, scene.geobox, cfg, results, sidecars)
        if apply:
            new = _apply(scene, info, cfg)
            if cfg.mode == "global" or _warp_improves(inp, new, usable, results):
                results["applied_shift_px"] = list(results["shift_px"])
                return new, "ok", None
        return scene, str(results.pop("status_if_not_applied")), str(results["decision"])

    def run(self, scene: Scene, cfg: CoregConfig) -> StepResult:
        """Co-register ``scene`` onto ``scene.aux["reference"]``; pure (no I/O)."""
        ref = scene.aux.get("reference")
        if ref is None and "reference" not in scene.missing_aux:
            raise StepError(
                f"{scene.item_id}: the coreg step got no reference image (scene.aux"
                "['reference']); the pipeline must read what CoregStep.required_aux asks for"
            )
        params = {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
        results: dict[str, Any] = {
            "mode": cfg.mode,
            "reference": None if ref is None else ref.source,
            "applied_shift_px": [0.0, 0.0],
        }
        sidecars: dict[str, Sidecar] = dict(scene.sidecars)
        new: Scene = scene
        reason: str | None
        try:
            if ref is None:  # the pipeline says why it could not provide one
                raise CoregFailure(
                    f"no co-registration reference: {scene.missing_aux['reference']}"
                )
            new, status, reason = self._match(scene, ref, cfg, results, sidecars)
        except CoregFailure as exc:
            status, reason = "failed", str(exc)
        results["status"] = status
        if reason is not None:
            results["reason"] = reason
        if scene.layers:
            results["layers_not_corrected"] = sorted(scene.layers)
        record = StepRecord(self.name, self.version, parameters=params, results=results)
        if status == "ok":
            log.info(
                "%s: co-registered (%s), shift %.3f/%.3f px, reliability %s",
                scene.item_id,
                cfg.mode,
                results["shift_px"][0],
                results["shift_px"][1],
                results.get("reliability"),
            )
        elif status != "failed":
            log.info("%s: co-registration %s: %s", scene.item_id, cfg.mode, reason)
        else:
            log.warning(
                "%s: co-registration failed: %s (on_failure: %s)",
                scene.item_id,
                reason,
                cfg.on_failure,
            )
            if cfg.on_failure == "fail":
                raise StepError(
                    f"{scene.item_id}: co-registration failed: {reason}; set "
                    "steps.coreg.on_failure to keep (write unshifted) or skip to go on"
                )
        props = dict(scene.properties)
        props["stac2cube:coreg_status"] = status
        new = new.replace(properties=props, sidecars=sidecars)
        write = not (status == "failed" and cfg.on_failure == "skip")
        return StepResult(new, record, write=write)


__all__ = [
    "CLOUD_MASK_CLEAR",
    "DEFAULT_WINDOW",
    "MATCH_BAND_FALLBACK",
    "MAX_WINDOWS",
    "MIN_FALLBACK_WINDOW",
    "SCL_BAD",
    "SIGNIFICANCE",
    "TIEPOINTS_SIDECAR",
    "CoregConfig",
    "CoregStep",
    "anomaly_mask",
    "bad_data_mask",
]
