"""Where the global mode matches: up to :data:`MAX_WINDOWS` windows, most textured first, off
bad pixels, overlapping each other by at most half; and the sub-image around a window that is
handed to AROSICS."""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

MAX_WINDOWS: Final = 5
"""Global mode: matching windows (most textured first, overlapping by at most half) whose
refined estimates are combined; their spread is the estimate's noise floor."""
MIN_FALLBACK_WINDOW: Final = 64
"""Global mode: when no ``window_size`` window is clear enough, halved windows are tried down to
this size (px)."""

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


def window_bad_fraction(bad: BoolA, window: int) -> F32:
    """Fraction of bad pixels among the in-image pixels of the ``window`` box around each pixel."""
    from scipy import ndimage

    size = min(window, *bad.shape)
    num = ndimage.uniform_filter(bad.astype(np.float32), size=size, mode="constant", cval=0.0)
    den = ndimage.uniform_filter(np.ones(bad.shape, np.float32), size=size, mode="constant")
    out: F32 = (num / np.maximum(den, 1e-6)).astype(np.float32)
    return out


def pick_windows(
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


def region(shape: tuple[int, int], r: int, c: int, half: int, pad: int) -> tuple[slice, slice]:
    """The window of half-size ``half`` centred on ``(r, c)`` plus ``pad`` pixels, clipped to
    ``shape``."""
    h, w = shape
    return (
        slice(max(r - half - pad, 0), min(r + half + pad, h)),
        slice(max(c - half - pad, 0), min(c + half + pad, w)),
    )
