"""Nearest-neighbour lookups between a coarse grid and a finer one of the same CRS, for steps
that analyse a scene on a coarse grid and apply the result block by block, and where a block
lies on its scene's grid."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox


def pixel_cells(fine: GeoBox, coarse: GeoBox) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The row and column of ``coarse`` (a coarser axis-aligned grid of the same CRS) that the
    centre of each row and column of ``fine`` falls in (clamped at the edges)."""
    fa, ca = fine.affine, coarse.affine

    def index(n: int, f0: float, f_step: float, c0: float, c_step: float, c_n: int) -> Any:
        centre = f0 + (np.arange(n, dtype=np.float64) + 0.5) * f_step
        return np.clip(np.floor((centre - c0) / c_step).astype(np.intp), 0, c_n - 1)

    rows = index(fine.shape.y, fa.f, fa.e, ca.f, ca.e, coarse.shape.y)
    cols = index(fine.shape.x, fa.c, fa.a, ca.c, ca.a, coarse.shape.x)
    return rows, cols


def upsample_nearest(a: np.ndarray, src: GeoBox, dst: GeoBox) -> np.ndarray:
    """``a`` (on ``src``) on ``dst``, a finer grid, by nearest neighbour: each pixel takes the
    value of the ``src`` pixel its centre falls in."""
    rows, cols = pixel_cells(dst, src)
    out: np.ndarray = a[rows[:, None], cols[None, :]]
    return out


def offset_in(outer: GeoBox, inner: GeoBox) -> tuple[int, int]:
    """Row and column of ``inner``'s first pixel on ``outer`` (same CRS and resolution, pixel
    edges aligned); ValueError otherwise."""
    a, b = outer.affine, inner.affine
    if abs(a.a - b.a) > 1e-9 * abs(a.a) or abs(a.e - b.e) > 1e-9 * abs(a.e):
        raise ValueError(f"{inner} is not on the grid of {outer}")
    col = (b.c - a.c) / a.a
    row = (b.f - a.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise ValueError(f"{inner} is not aligned with {outer}")
    return round(row), round(col)
