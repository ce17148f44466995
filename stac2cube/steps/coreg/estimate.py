"""One window's estimate of the displacement, for the global mode: AROSICS ``COREG`` finds the
peak in a window whose texture is checked against its own noise, then the estimate is refined
by upsampled cross-correlation of the low-passed, tapered windows, the scene's moved back by an
exact Fourier shift (AROSICS' own sub-pixel fit is biased; see ``docs/coreg.md``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...references import texture_score, texture_snr
from .backend import FILL, CoregFailure, arosics_call, geoarray, num, rounded
from .config import CoregConfig
from .inputs import MatchInputs, for_matching
from .windows import region

REFINE_PASSES: Final = 3
"""Most passes of the sub-pixel refinement of each window's estimate (see ``_refine``)."""
REFINE_LOWPASS_PX: Final = 0.7
"""Standard deviation (px) of the Gaussian low-pass applied before the refinement."""
MAX_REFINEMENT_PX: Final = 0.5
"""A refinement that moves a window's estimate by more than this means two peaks: rejected."""

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


@dataclass
class WindowMatch:
    """One window's refined estimate: the displacement ``(dx, dy)`` px, AROSICS' reliability
    and SSIM, its correction info and the sub-image it was matched on."""

    dx: float
    dy: float
    reliability: float | None
    ssim_before: float | None
    ssim_after: float | None
    info: dict[str, Any]
    region: tuple[slice, slice]


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
            geoarray(ref, gbox, FILL),
            geoarray(tgt, gbox, FILL),
            wp=centre_xy,
            ws=(win, win),
            max_shift=cfg.max_shift,
            nodata=(FILL, FILL),
            mask_baddata_ref=geoarray(bad_ref, gbox, None),
            mask_baddata_tgt=geoarray(bad_tgt, gbox, None),
            CPUs=1,
            progress=False,
            q=True,
            ignore_errors=True,
        )
        cr.calculate_spatial_shifts()
        return cr

    cr = arosics_call("matching", run)
    if not cr.success or cr.x_shift_px is None or cr.y_shift_px is None:
        err = cr.tracked_errors[-1] if cr.tracked_errors else "no match found"
        msg = str(err).strip().splitlines()[0] if str(err).strip() else "no match found"
        raise CoregFailure(f"AROSICS found no valid shift: {msg}")
    return cr


def match_window(
    inp: MatchInputs, gbox: GeoBox, cfg: CoregConfig, win: int, r: int, c: int, rec: dict[str, Any]
) -> WindowMatch:
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
    reg = region(inp.target.shape, r, c, half, match_pad(cfg))
    sub = gbox[reg]
    ref = for_matching(inp.reference[reg], inp.bad_ref[reg])
    tgt = for_matching(inp.target[reg], inp.bad_tgt[reg])
    bad_r, bad_t = inp.bad_ref[reg], inp.bad_tgt[reg]
    x, y = gbox.affine * (c + 0.5, r + 0.5)
    cr = _arosics_window(ref, tgt, bad_r, bad_t, sub, cfg, win, (x, y))
    dx, dy = -float(cr.x_shift_px), -float(cr.y_shift_px)
    rel = num(cr.shift_reliability)
    rec.update(first_estimate_px=[round(dx, 4), round(dy, 4)], reliability=rounded(rel, 2))
    if max(abs(dx), abs(dy)) > cfg.max_shift:
        raise CoregFailure(f"shift {dx:.2f}/{dy:.2f} px is larger than max_shift {cfg.max_shift}")
    if rel is not None and rel < cfg.min_reliability:
        raise CoregFailure(
            f"shift reliability {rel:.1f} % is below min_reliability {cfg.min_reliability} %"
        )
    info: dict[str, Any] = dict(cr.coreg_info)
    ssim0, ssim1 = num(cr.ssim_orig), num(cr.ssim_deshifted)
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
    return WindowMatch(dx, dy, rel, ssim0, ssim1, info, reg)


def match_pad(cfg: CoregConfig) -> int:
    """Pixels around a matching window that :func:`match_window` hands to AROSICS too."""
    return math.ceil(cfg.max_shift) + 8


def _quadrant_centres(reg: tuple[slice, slice], win: int) -> list[tuple[int, int]]:
    """Centres of the four quadrant windows (``win // 2`` px) of the window matched on the
    sub-image ``reg``, as :func:`quadrant_sigma` matches them."""
    half = win // 2
    r_mid = (reg[0].start + reg[0].stop) // 2
    c_mid = (reg[1].start + reg[1].stop) // 2
    offsets = (-half // 2, half // 2)
    return [(r_mid + dr, c_mid + dc) for dr in offsets for dc in offsets]


def window_support(
    shape: tuple[int, int], r: int, c: int, win: int, cfg: CoregConfig
) -> tuple[slice, slice]:
    """The pixels matching the ``win`` px window centred on ``(r, c)`` of a grid of ``shape``
    can touch: the sub-image :func:`match_window` hands to AROSICS and those of the quadrant
    windows :func:`quadrant_sigma` may match. A crop of these pixels gives the same estimates
    as the whole grid (every sub-image is clipped where the grid is)."""
    pad = match_pad(cfg)
    reg = region(shape, r, c, win // 2, pad)
    regs = [reg] + [region(shape, qr, qc, win // 4, pad) for qr, qc in _quadrant_centres(reg, win)]
    return (
        slice(min(g[0].start for g in regs), max(g[0].stop for g in regs)),
        slice(min(g[1].start for g in regs), max(g[1].stop for g in regs)),
    )


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
        moved = move(tgt_lp, -dx, -dy)[inner]
        moved = (moved - moved.mean()) * taper
        (ry, rx), _, _ = phase_cross_correlation(  # type: ignore[no-untyped-call]
            moved, ref_w, upsample_factor=100, normalization=None
        )
        dx, dy = dx + float(rx), dy + float(ry)
        if math.hypot(float(rx), float(ry)) < 0.01:
            break
    return dx, dy


def move(a: np.ndarray, mx: float, my: float) -> NDArray[np.float64]:
    """``a`` with its content moved by ``mx`` px east and ``my`` px south: an exact sub-pixel
    translation (Fourier shift theorem) of the mirror-padded array, so the result is neither
    smoothed nor wrapped at the edges. ``a`` must be finite."""
    from scipy import ndimage

    pad = math.ceil(max(abs(mx), abs(my))) + 16
    p = np.pad(np.asarray(a, dtype=np.float64), pad, mode="symmetric")
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(p), (my, mx))).real
    out: NDArray[np.float64] = moved[pad:-pad, pad:-pad]
    return out


def quadrant_sigma(
    inp: MatchInputs, gbox: GeoBox, cfg: CoregConfig, m: WindowMatch, win: int
) -> float | None:
    """Noise of one window's estimate from the spread of its four quadrants' estimates (each
    from a quarter of the pixels, so twice as noisy): per-axis standard deviation / 2."""
    half = win // 2
    if half < 32:
        return None
    est = []
    for r, c in _quadrant_centres(m.region, win):
        try:
            q = match_window(inp, gbox, cfg, half, r, c, {})
        except CoregFailure:
            continue
        est.append((q.dx, q.dy))
    if len(est) < 3:
        return None
    a = np.asarray(est)
    return float(math.hypot(*np.std(a, axis=0, ddof=1))) / 2.0
