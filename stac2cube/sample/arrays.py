"""Seeded random fields and small array helpers shared by the generator's models."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]
BoolA = NDArray[np.bool_]


def stream_rng(seed: int, stream: int, date: int = 0) -> np.random.Generator:
    """The generator of one random stream of one date (streams: see ``docs/sample.md``)."""
    return np.random.default_rng((seed, stream, date))


def fractal_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    beta: float,
    *,
    stretch: float = 1.0,
    angle: float = 0.0,
) -> F32:
    """Zero-mean, unit-std noise with a 1/f^beta power spectrum, elongated by ``stretch``."""
    h, w = shape
    white = rng.standard_normal((h, w), dtype=np.float32)
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    if stretch != 1.0:
        ca, sa = math.cos(angle), math.sin(angle)
        fu = fx * ca + fy * sa
        fv = -fx * sa + fy * ca
        f2 = (fu * stretch) ** 2 + fv**2
    else:
        f2 = fx**2 + fy**2
    f2[0, 0] = 1.0
    spec *= f2 ** (-beta / 4.0)
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    sd = float(out.std())
    out /= sd if sd > 0 else 1.0
    return out


def block_mean(a: F32, f: int, shape: tuple[int, int]) -> F32:
    """Mean over ``f x f`` blocks of ``a`` (shape a multiple of ``f``), cropped to ``shape``."""
    h, w = a.shape
    out = a.reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)
    return np.ascontiguousarray(out[: shape[0], : shape[1]])


def shifted(a: F32, dr: int, dc: int) -> F32:
    """``out[r, c] = a[r - dr, c - dc]``, zero where that falls outside."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(dr) >= h or abs(dc) >= w:
        return out
    rs, rd = (slice(0, h - dr), slice(dr, h)) if dr >= 0 else (slice(-dr, h), slice(0, h + dr))
    cs, cd = (slice(0, w - dc), slice(dc, w)) if dc >= 0 else (slice(-dc, w), slice(0, w + dc))
    out[rd, cd] = a[rs, cs]
    return out


def blur3(a: F32, side: float = 0.18) -> F32:
    """Separable 3-tap PSF ``[side, 1 - 2 side, side]`` on the last two axes, edges replicated."""
    c = 1.0 - 2.0 * side
    p = np.concatenate([a[..., :1, :], a, a[..., -1:, :]], axis=-2)
    a = (c * p[..., 1:-1, :] + side * (p[..., :-2, :] + p[..., 2:, :])).astype(np.float32)
    p = np.concatenate([a[..., :1], a, a[..., -1:]], axis=-1)
    return np.asarray(c * p[..., 1:-1] + side * (p[..., :-2] + p[..., 2:]), dtype=np.float32)


def voronoi(rng: np.random.Generator, shape: tuple[int, int], spacing: int) -> NDArray[np.int32]:
    """Label map of a jittered-grid Voronoi tessellation with cells of about ``spacing`` px."""
    h, w = shape
    ny, nx = h // spacing + 3, w // spacing + 3
    sy = ((np.arange(ny)[:, None] - 1 + rng.random((ny, nx))) * spacing).astype(np.float32)
    sx = ((np.arange(nx)[None, :] - 1 + rng.random((ny, nx))) * spacing).astype(np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    ci = (yy // spacing).astype(np.int32) + 1
    cj = (xx // spacing).astype(np.int32) + 1
    best = np.full(shape, np.inf, dtype=np.float32)
    label = np.zeros(shape, dtype=np.int32)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ii = np.broadcast_to(ci + di, shape)
            jj = np.broadcast_to(cj + dj, shape)
            d2 = (yy - sy[ii, jj]) ** 2 + (xx - sx[ii, jj]) ** 2
            better = d2 < best
            best = np.where(better, d2, best)
            label = np.where(better, ii * nx + jj, label)
    return label


def segment_distance(yy: F32, xx: F32, p0: tuple[float, float], p1: tuple[float, float]) -> F32:
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    return np.sqrt((yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2).astype(np.float32)


def uniform_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> F32:
    """A smooth random field with uniform marginals on (0, 1): patchy, not salt-and-pepper."""
    x = fractal_noise(rng, shape, beta).ravel()
    rank = np.empty(x.size, np.float32)
    rank[np.argsort(x, kind="stable")] = np.arange(x.size, dtype=np.float32)
    out: F32 = ((rank + np.float32(0.5)) / np.float32(x.size)).astype(np.float32)
    return out.reshape(shape)
