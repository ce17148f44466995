"""Consistency of the super-resolved bands with their input under block averaging.

:func:`consistency_error` measures how far the 2.5 m output, averaged over each 10 m (or 20 m)
input pixel, is from the input; :func:`back_project` corrects the output so that it is exact.
Why SEN2SR's hard constraint alone is not: docs/superres.md.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def block_mean(a: F32, f: int) -> F32:
    """Mean over ``f x f`` blocks (trailing rows/columns that do not fill a block dropped)."""
    if f == 1:
        return a
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    out: F32 = a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float64)
    return out.astype(np.float32)


BACK_PROJECTION_ITERATIONS: Final = 3
"""Bicubic back-projection passes before the final per-block one (see :func:`back_project`)."""


def back_project(sr: F32, target: F32, f: int, iterations: int = BACK_PROJECTION_ITERATIONS) -> F32:
    """Correct ``sr`` in place so that its ``f x f`` block means equal ``target``.

    Iterative back-projection (Irani & Peleg): the residual ``target - block mean`` is upsampled
    bicubically and added ``iterations`` times (a smooth correction), then what is left is added
    per block, which makes the block means equal to ``target`` up to float rounding. Blocks with
    NaN in ``sr`` or ``target`` are not corrected; rows and columns that do not fill a block get
    the correction of the nearest block.
    """
    import torch

    hb, wb = min(sr.shape[0] // f, target.shape[0]), min(sr.shape[1] // f, target.shape[1])
    if hb == 0 or wb == 0:
        return sr
    goal = target[:hb, :wb]
    for k in range(iterations + 1):
        resid = np.nan_to_num(goal - block_mean(sr, f)[:hb, :wb], nan=0.0).astype(np.float32)
        if k < iterations:
            t = torch.from_numpy(resid)[None, None]
            up = torch.nn.functional.interpolate(t, scale_factor=f, mode="bicubic")[0, 0].numpy()
        else:
            up = np.repeat(np.repeat(resid, f, axis=0), f, axis=1)
        pad = ((0, sr.shape[0] - hb * f), (0, sr.shape[1] - wb * f))
        sr += np.pad(up, pad, mode="edge") if any(p[1] for p in pad) else up
    return sr


def consistency_error(sr: F32, lr: F32, scale: int, native: int = 1) -> float | None:
    """Mean |block mean of ``sr`` − ``lr``| / mean |``lr``| over pixels valid in both, with
    blocks of ``scale`` output pixels per ``lr`` pixel, coarsened by ``native`` (2 for a 20 m
    band on the 10 m grid: both compared over 20 m blocks). None without valid pixels."""
    down = block_mean(sr, scale * native)
    ref = block_mean(lr, native)
    h, w = min(down.shape[0], ref.shape[0]), min(down.shape[1], ref.shape[1])
    down, ref = down[:h, :w], ref[:h, :w]
    ok = np.isfinite(down) & np.isfinite(ref)
    if not ok.any():
        return None
    den = float(np.abs(ref[ok]).mean())
    if den == 0.0:
        return None
    return float(np.abs(down[ok] - ref[ok]).mean()) / den


__all__ = ["BACK_PROJECTION_ITERATIONS", "back_project", "block_mean", "consistency_error"]
