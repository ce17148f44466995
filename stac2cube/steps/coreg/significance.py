"""A correction is applied only when it helps: the estimate must be significant against the
noise measured in the scene (the spread of the windows' or their quadrants' estimates; an F test
of the tie points' shift field in local mode) and must raise the correlation with the reference
on clear pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..base import Scene
from .backend import rounded
from .config import CoregConfig
from .estimate import WindowMatch, move, quadrant_sigma
from .inputs import MatchInputs, WindowCrop, for_matching

SIGNIFICANCE: Final = 3.0
"""A shift is applied only when its length exceeds this many standard errors (measured per
scene from the spread of the windows' or tie points' estimates)."""
MIN_SE_PX: Final = 0.005
"""Smallest standard error (px) a significance test uses: windows of noise-free data can agree
exactly, which is no reason to trust a shift of a thousandth of a pixel."""
DEFAULT_WINDOW_SIGMA_PX: Final = 0.1
"""Noise (px) assumed for one window's estimate when fewer than 3 windows match and their
quadrants cannot be matched either: a conservative figure (real Sentinel-2 windows of 256 px
scatter by 0.01-0.05 px, see ``benchmarks/results/coreg.json``), so that only a shift of more
than 0.3 px is applied on the evidence of a single window."""

BoolA = NDArray[np.bool_]


def _ncc(a: np.ndarray, b: np.ndarray, ok: BoolA) -> float | None:
    if int(ok.sum()) < 64:
        return None
    x = a[ok].astype(np.float64)
    y = b[ok].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y)) / den if den > 0 else None


def standard_error(
    cfg: CoregConfig,
    used: Sequence[tuple[WindowCrop, WindowMatch]],
    du: NDArray[np.float64],
    win: int,
) -> tuple[float, str]:
    """Standard error (px) of the mean of the windows' estimates ``du`` and where its noise
    figure comes from: their spread (3 or more windows), else the spread of each window's
    quadrants (matched on the window's crop), else :data:`DEFAULT_WINDOW_SIGMA_PX` per
    window."""
    if len(used) >= 3:
        se = float(math.hypot(*np.std(du, axis=0, ddof=1))) / math.sqrt(len(used))
        noise_from = "windows"
    else:
        sig = [
            s
            for crop, m in used
            if (s := quadrant_sigma(crop.inp, crop.geobox, cfg, m, win)) is not None
        ]
        if sig:
            se = float(np.mean(sig)) / math.sqrt(len(used))
            noise_from = "quadrants"
        else:
            se = DEFAULT_WINDOW_SIGMA_PX / math.sqrt(len(used))
            noise_from = f"not measurable: {DEFAULT_WINDOW_SIGMA_PX} px per window assumed"
    return se, noise_from


def shift_helps(
    used: Sequence[tuple[WindowCrop, WindowMatch]],
    dx: float,
    dy: float,
    se: float,
    results: dict[str, Any],
) -> bool:
    """Global mode: whether the shift ``(dx, dy)`` px with standard error ``se`` is significant
    and moving the scene back by it raises the correlation with the reference over the clear
    pixels of the sub-images the ``used`` windows were matched on; ``results`` get the figures
    and the decision."""
    length = math.hypot(dx, dy)
    se = max(se, MIN_SE_PX)
    results["shift_se_px"] = round(se, 4)
    results["significance"] = round(length / se, 2)
    if length <= SIGNIFICANCE * se:
        results["status_if_not_applied"] = "not_significant"
        results["decision"] = (
            f"not applied: the shift {length:.3f} px is within {SIGNIFICANCE:g} x its standard "
            f"error {se:.3f} px"
        )
        return False
    ncc0, ncc1 = _alignment_gain([(crop.inp, m.region) for crop, m in used], dx, dy)
    results["correlation_before"] = rounded(ncc0, 5)
    results["correlation_after"] = rounded(ncc1, 5)
    if ncc0 is None or ncc1 is None or ncc1 <= ncc0:
        results["status_if_not_applied"] = "no_improvement"
        results["decision"] = (
            "not applied: correcting the shift does not raise the correlation with the reference "
            f"over the clear pixels of the matched windows ({ncc0} -> {ncc1})"
        )
        return False
    results["decision"] = "applied"
    return True


def _alignment_gain(
    regions: list[tuple[MatchInputs, tuple[slice, slice]]], dx: float, dy: float
) -> tuple[float | None, float | None]:
    """Correlation of the scene with the reference over the clear pixels of ``regions`` (each
    a region of its own inputs), before and after moving the scene's content back by
    ``(dx, dy)`` with an exact Fourier shift (no smoothing, so a shift that only blurs noise
    away cannot win)."""
    from scipy import ndimage

    before: list[tuple[np.ndarray, np.ndarray]] = []
    after: list[tuple[np.ndarray, np.ndarray]] = []
    for inp, reg in regions:
        tgt = for_matching(inp.target[reg], inp.bad_tgt[reg])
        moved = move(tgt, -dx, -dy)
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


def field_significance(
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


CORRELATION_REACH_PX: Final = 8
"""Pixels around a region that its clear-pixel correlation reads: the low-pass's reach (4
sigma) and the erosion of the clear pixels (3 px), rounded up."""


@dataclass
class CorrelationSums:
    """The sums a correlation over many regions adds up, so that the correlation of a scene
    read in blocks is the one of the scene read whole."""

    n: int = 0
    sa: float = 0.0
    sb: float = 0.0
    saa: float = 0.0
    sbb: float = 0.0
    sab: float = 0.0

    def add(self, a: NDArray[np.float64], b: NDArray[np.float64]) -> None:
        """Add the pixel pairs ``(a, b)``."""
        self.n += int(a.size)
        self.sa += float(a.sum())
        self.sb += float(b.sum())
        self.saa += float(np.dot(a, a))
        self.sbb += float(np.dot(b, b))
        self.sab += float(np.dot(a, b))

    def extend(self, other: CorrelationSums) -> None:
        """Add the pairs ``other`` summed."""
        self.n += other.n
        self.sa += other.sa
        self.sb += other.sb
        self.saa += other.saa
        self.sbb += other.sbb
        self.sab += other.sab

    def ncc(self) -> float | None:
        """Pearson correlation of the pairs added (None under 64 pairs or without spread)."""
        if self.n < 64:
            return None
        cov = self.sab - self.sa * self.sb / self.n
        va = self.saa - self.sa * self.sa / self.n
        vb = self.sbb - self.sb * self.sb / self.n
        den = math.sqrt(va * vb) if va > 0 and vb > 0 else 0.0
        return cov / den if den > 0 else None


def clear_correlation_sums(
    a: np.ndarray, b: np.ndarray, ok: BoolA, core: tuple[slice, slice] | None = None
) -> CorrelationSums:
    """The sums of the correlation of two bands over ``ok`` after the same Gaussian low-pass
    (sigma 1 px), so that the resampling's own smoothing of a corrected band does not count as
    alignment; only pixels in ``core`` count (the rest is the halo the low-pass reads)."""
    from scipy import ndimage

    def lp(x: np.ndarray) -> NDArray[np.float64]:
        fill = np.where(ok & np.isfinite(x), x, 0.0).astype(np.float64)
        w = ndimage.gaussian_filter(ok.astype(np.float64), 1.0)
        out: NDArray[np.float64] = ndimage.gaussian_filter(fill, 1.0) / np.maximum(w, 1e-6)
        return out

    inner = ndimage.binary_erosion(ok, iterations=3)
    if core is not None:
        keep = np.zeros_like(inner)
        keep[core] = True
        inner &= keep
    sums = CorrelationSums()
    sums.add(lp(a)[inner], lp(b)[inner])
    return sums


def improves(before: float | None, after: float | None, results: dict[str, Any]) -> bool:
    """Local mode: whether the warp raised the clear-pixel correlation with the reference from
    ``before`` to ``after``; records both, and why not when it did not."""
    results["correlation_before"] = rounded(before, 5)
    results["correlation_after"] = rounded(after, 5)
    if before is not None and after is not None and after > before:
        return True
    results["status_if_not_applied"] = "no_improvement"
    results["decision"] = (
        "not applied: the warp does not raise the correlation with the reference over the "
        f"clear pixels ({before} -> {after})"
    )
    return False


def warp_improves(inp: MatchInputs, warped: Scene, usable: BoolA, results: dict[str, Any]) -> bool:
    """Local mode: whether the warped match band correlates better with the reference over the
    clear pixels than the input did (both low-passed alike); records why not when it does not."""
    after = np.asarray(warped.bands[inp.band], dtype=np.float32)
    ok = usable & np.isfinite(after)
    ncc0 = clear_correlation_sums(inp.target, inp.reference, ok).ncc()
    ncc1 = clear_correlation_sums(after, inp.reference, ok).ncc()
    return improves(ncc0, ncc1, results)
