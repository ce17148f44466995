"""Co-registration of a scene onto the catalog's reference image with AROSICS.

What the step does, per scene
-----------------------------
1. **Inputs.** The pipeline reads the catalog's reference image (one band, ``match_band``) onto
   the scene's own grid into ``scene.aux["reference"]`` (see :meth:`CoregStep.required_aux`).
   The scene's band matched against it is ``match_band``, or the first of
   :data:`MATCH_BAND_FALLBACK` the scene has.
2. **Bad data.** Pixels that must not drive the matching: NaN in either image, and in the scene
   ``CLOUD_MASK`` values other than clear (1) when the cloud-mask step ran, else the SCL classes
   :data:`SCL_BAD` (no data, saturated, shadow, cloud, cirrus, snow). Around every pixel the
   fraction of bad pixels in a ``window_size`` window is computed; windows with more than
   ``max_bad_fraction`` are rejected. AROSICS gets both masks (``mask_baddata_ref`` /
   ``mask_baddata_tgt``), with the window rejection folded into the target's.
3. **Matching** (AROSICS phase correlation, sub-pixel):

   * ``global``: :class:`arosics.COREG` in one window of ``window_size`` px whose position is
     chosen here (AROSICS only looks at the window centre): among positions on a ``window/4``
     lattice with at most ``max_bad_fraction`` bad pixels, the one with the most texture
     (:func:`stac2cube.reference.texture_score`); when AROSICS fails there or a check below
     rejects the match, the next best of up to :data:`MAX_WINDOW_TRIES` windows that overlap
     each other by at most half is tried. When no position qualifies, windows of half the
     size are tried, down to :data:`MIN_FALLBACK_WINDOW` px (smaller windows are less precise,
     but a cloudy scene still gets a shift from its clear patches).
   * ``local``: :class:`arosics.COREG_LOCAL` on a tie-point grid of ``grid_res`` px with
     ``window_size`` windows, AROSICS' tie-point filtering (``tiepoint_filter_level``: reliability
     below ``min_reliability``, SSIM not improved, RANSAC outliers).

4. **Fake-success checks** (AROSICS can report success on a flat or cloudy window): the match
   fails when the matching window's texture is below ``min_texture`` in the scene or the
   reference, the reliability is below ``min_reliability``, the shift exceeds ``max_shift``,
   (global) correcting a shift of at least :data:`SIMILARITY_CHECK_MIN_SHIFT` px lowers the
   normalised cross-correlation of scene and reference over the window's clear pixels (below
   that shift the change is within interpolation noise), or (local) fewer than
   ``min_valid_tiepoints`` tie points survive the filtering. AROSICS' own SSIM check of the
   global window is recorded but not used: it runs over cloudy pixels as well and misjudged
   correct shifts in cloudy windows of the benchmark.
5. **Correction**, applied once, with AROSICS' :class:`arosics.DESHIFTER` (GDAL warp): all
   reflectance bands in one warp with the ``resampling`` kernel, all class layers with
   ``nearest``, both onto exactly the scene's grid (``target_xyGrid`` = the grid's lattice,
   ``clipextent`` = its bounds; an integer shift that AROSICS applies by moving the geotransform
   is pasted back on the grid). Global mode shifts; local mode warps through the tie points
   (GDAL thin-plate spline through the valid tie points, AROSICS' choice). Pixels that come from
   outside the scene become NaN (reflectance) or the layer's nodata (classes, 0 by default).
   Layers on other grids (``scene.layers``) are left as they are and listed in the record.
6. **Failure policy** (``on_failure``): ``keep`` writes the scene unshifted, ``skip`` does not
   write it, ``fail`` raises :class:`~stac2cube.errors.StepError`; the reason is in the record.

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
from ..reference import MIN_TEXTURE, texture_score
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
SIMILARITY_CHECK_MIN_SHIFT: Final = 0.5
"""Global mode: shifts (px) from which a lower correlation after correction makes the match
fail."""
MAX_WINDOW_TRIES: Final = 3
"""Global mode: matching windows tried, most textured first, until one gives a trusted shift."""
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
    a sub-pixel translation per acquisition, which one 256 px window measures to a few
    hundredths of a pixel in well under a second, while the local tie-point warp costs 10-30x
    more time and passes the noise of every tie point (~0.1-0.15 px each) into the image. Use
    ``local`` where the displacement varies over the scene (relief with DEM errors, detector
    boundaries, large AOIs); see ``benchmarks/results/coreg.json``.
    """

    mode: Mode = doc(
        "`global`: one X/Y shift from one matching window (AROSICS COREG); `local`: a "
        "tie-point grid and a warp through the valid tie points (AROSICS COREG_LOCAL).",
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
        "Smallest texture (RMS gradient of the 3x3-averaged band, reflectance per pixel) of "
        "the matching window in the scene and in the reference; flatter windows fail as "
        "unmatchable (sensor noise alone gives ~0.001, farmland in B08 ~0.02).",
        MIN_TEXTURE,
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

    @property
    def bad_any(self) -> BoolA:
        out: BoolA = self.bad_tgt | self.bad_ref
        return out


def _ncc(a: F32, b: F32, ok: BoolA) -> float | None:
    if int(ok.sum()) < 64:
        return None
    x = a[ok].astype(np.float64)
    y = b[ok].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y)) / den if den > 0 else None


def _correlation_gain(
    inp: _Inputs, sl: tuple[slice, slice], dx: float, dy: float
) -> tuple[float | None, float | None]:
    """Normalised cross-correlation of the scene's and the reference's matching window over
    their clear pixels, before and after moving the scene's content by ``(-dx, -dy)`` (cubic
    spline on a padded window; for this check only, the output is resampled once by AROSICS)."""
    from scipy import ndimage

    h, w = inp.target.shape
    pad = math.ceil(max(abs(dx), abs(dy))) + 4
    r0, r1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)
    c0, c1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)
    tgt = inp.target[r0:r1, c0:c1]
    bad = inp.bad_tgt[r0:r1, c0:c1] | ~np.isfinite(tgt)
    fill = float(np.mean(tgt[~bad])) if (~bad).any() else 0.0
    tgt = np.where(bad, fill, tgt).astype(np.float32)
    moved = ndimage.shift(tgt, (-dy, -dx), order=3, mode="nearest")
    moved_bad = ndimage.shift(bad.astype(np.float32), (-dy, -dx), order=1, mode="constant", cval=1)
    inner = (slice(sl[0].start - r0, sl[0].stop - r0), slice(sl[1].start - c0, sl[1].stop - c0))
    ref = inp.reference[sl]
    ref_ok = ~inp.bad_ref[sl] & np.isfinite(ref)
    ok0 = ref_ok & ~bad[inner]
    ok1 = ref_ok & (moved_bad[inner] < 0.01) & ok0
    return _ncc(tgt[inner], ref, ok1), _ncc(moved[inner], ref, ok1)


def _for_matching(band: F32, bad: BoolA) -> F32:
    """The band as AROSICS should see it: its own bad pixels (NaN, and for the scene its cloud,
    shadow and nodata mask) set to the band's mean over its good pixels.

    AROSICS uses the bad-data masks only to place its window, then correlates whatever the window
    holds: a cloud hole filled with ``-9999`` swamps the spectrum with its edges and the match
    fails. Each image is filled with its *own* mask only: filling the union in both would put an
    identical patch at the same place in both and pull the peak towards zero shift."""
    out = np.array(band, dtype=np.float32, copy=True)
    good = np.isfinite(out) & ~bad
    out[~good] = np.float32(out[good].mean()) if good.any() else np.float32(0.0)
    return out


def _match_global(
    inp: _Inputs, gbox: GeoBox, cfg: CoregConfig, results: dict[str, Any]
) -> dict[str, Any]:
    win = cfg.window
    centres: list[tuple[int, int]] = []
    while not centres:
        frac = inp.frac if win == cfg.window else _window_bad_fraction(inp.bad_any, win)
        centres = _pick_windows(
            inp.target, inp.bad_any, frac, win, cfg.max_bad_fraction, MAX_WINDOW_TRIES
        )
        if not centres:
            if win // 2 < MIN_FALLBACK_WINDOW:
                raise CoregFailure(
                    f"no matching window of {cfg.window} down to {win} px has at most "
                    f"{cfg.max_bad_fraction:.0%} cloud, shadow or nodata pixels"
                )
            win //= 2
    failures: list[str] = []
    for k, (r, c) in enumerate(centres):
        attempt: dict[str, Any] = {}
        try:
            info = _match_window(inp, gbox, cfg, win, r, c, attempt)
        except CoregFailure as exc:
            failures.append(str(exc))
            log.debug("matching window %d at col %d row %d failed: %s", k + 1, c, r, exc)
            if k == len(centres) - 1:
                results.update(attempt)
                results["windows_tried"] = k + 1
                if len(set(failures)) > 1:
                    raise CoregFailure(
                        f"{len(failures)} matching windows failed: " + "; ".join(failures)
                    ) from exc
                raise
            continue
        results.update(attempt)
        results["windows_tried"] = k + 1
        return info
    raise AssertionError("unreachable")  # pragma: no cover


def _match_window(
    inp: _Inputs, gbox: GeoBox, cfg: CoregConfig, win: int, r: int, c: int, results: dict[str, Any]
) -> dict[str, Any]:
    """AROSICS COREG in the ``win`` px window centred on pixel ``(r, c)``, with the checks."""
    from arosics import COREG

    results["window_center_px"] = [c, r]
    half = win // 2
    sl = (slice(max(r - half, 0), r + half), slice(max(c - half, 0), c + half))
    bad_win = inp.bad_tgt[sl] | inp.bad_ref[sl]
    tex_t = texture_score(inp.target[sl], bad_win)
    tex_r = texture_score(inp.reference[sl], bad_win)
    results["texture"] = {"scene": round(tex_t, 5), "reference": round(tex_r, 5)}
    if min(tex_t, tex_r) < cfg.min_texture:
        which = "scene" if tex_t < tex_r else "reference"
        raise CoregFailure(
            f"flat texture: the {which} has texture {min(tex_t, tex_r):.4f} < min_texture "
            f"{cfg.min_texture} in the matching window; nothing to match"
        )
    x, y = gbox.affine * (c + 0.5, r + 0.5)

    def run() -> Any:
        cr = COREG(
            _geoarray(_for_matching(inp.reference, inp.bad_ref), gbox, _FILL),
            _geoarray(_for_matching(inp.target, inp.bad_tgt), gbox, _FILL),
            wp=(x, y),
            ws=(win, win),
            max_shift=cfg.max_shift,
            nodata=(_FILL, _FILL),
            mask_baddata_ref=_geoarray(inp.bad_ref, gbox, None),
            mask_baddata_tgt=_geoarray(inp.bad_tgt, gbox, None),
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
    dx, dy = -float(cr.x_shift_px), -float(cr.y_shift_px)
    rel = _num(cr.shift_reliability)
    ssim0, ssim1 = _num(cr.ssim_orig), _num(cr.ssim_deshifted)
    results.update(
        shift_px=[round(dx, 4), round(dy, 4)],
        shift_m=[round(-float(cr.x_shift_map), 3), round(-float(cr.y_shift_map), 3)],
        reliability=None if rel is None else round(rel, 2),
        ssim_before=None if ssim0 is None else round(ssim0, 4),
        ssim_after=None if ssim1 is None else round(ssim1, 4),
        window_size_px=[int(v) for v in cr.matchBox.imDimsYX[::-1]] if cr.matchBox else None,
    )
    length = math.hypot(dx, dy)
    if max(abs(dx), abs(dy)) > cfg.max_shift:
        raise CoregFailure(f"shift {dx:.2f}/{dy:.2f} px is larger than max_shift {cfg.max_shift}")
    if rel is not None and rel < cfg.min_reliability:
        raise CoregFailure(
            f"shift reliability {rel:.1f} % is below min_reliability {cfg.min_reliability} %"
        )
    if length >= SIMILARITY_CHECK_MIN_SHIFT:
        ncc0, ncc1 = _correlation_gain(inp, sl, dx, dy)
        results["correlation_before"] = None if ncc0 is None else round(ncc0, 4)
        results["correlation_after"] = None if ncc1 is None else round(ncc1, 4)
        if ncc0 is not None and ncc1 is not None and ncc1 < ncc0:
            raise CoregFailure(
                f"correcting the {length:.2f} px shift lowers the correlation with the reference "
                f"over the window's clear pixels ({ncc0:.4f} -> {ncc1:.4f}): a false match"
            )
    info: dict[str, Any] = cr.coreg_info
    return info


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
) -> dict[str, Any]:
    from arosics import COREG_LOCAL

    win = cfg.window
    # tie points whose window has too many bad pixels are rejected through the target's mask
    tgt_mask = inp.bad_tgt | (inp.frac > cfg.max_bad_fraction)

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
    out: dict[str, Any] = info
    return out


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


class CoregStep:
    """Co-registration onto the catalog's reference image (see the module docstring)."""

    name = "coreg"
    version = "1.0.0"

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
        frac = _window_bad_fraction(bad_tgt | bad_ref, cfg.window)
        return _Inputs(target, reference, bad_tgt, bad_ref, frac, band)

    def run(self, scene: Scene, cfg: CoregConfig) -> StepResult:
        """Co-register ``scene`` onto ``scene.aux["reference"]``; pure (no I/O)."""
        ref = scene.aux.get("reference")
        if ref is None:
            raise StepError(
                f"{scene.item_id}: the coreg step got no reference image (scene.aux"
                "['reference']); the pipeline must read what CoregStep.required_aux asks for"
            )
        params = {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
        results: dict[str, Any] = {"mode": cfg.mode, "reference": ref.source}
        sidecars: dict[str, Sidecar] = dict(scene.sidecars)
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
        usable = ~(inp.bad_tgt | inp.bad_ref)
        results["clear_overlap_fraction"] = round(float(usable.mean()), 4)
        new = scene
        try:
            if not usable.any():
                if not np.isfinite(inp.reference).any():
                    raise CoregFailure("the reference has no valid pixel over the scene")
                raise CoregFailure("the scene and the reference share no clear valid pixel")
            if cfg.mode == "global":
                info = _match_global(inp, scene.geobox, cfg, results)
            else:
                info = _match_local(inp, scene.geobox, cfg, results, sidecars)
            new = _apply(scene, info, cfg)
            status, reason = "ok", None
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
    "MAX_WINDOW_TRIES",
    "MIN_FALLBACK_WINDOW",
    "SCL_BAD",
    "SIMILARITY_CHECK_MIN_SHIFT",
    "TIEPOINTS_SIDECAR",
    "CoregConfig",
    "CoregStep",
    "bad_data_mask",
]
