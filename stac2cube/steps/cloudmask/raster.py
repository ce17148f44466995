"""Array helpers of the cloud step: disks with sizes in metres (mean and dilation, as
s2cloudless' post-processing uses them) and bilinear upsampling of a coarse layer onto the
output grid."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...errors import StepError

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


def disk(radius: int) -> BoolA:
    """The disk of ``radius`` pixels (s2cloudless' ``cv2_disk``)."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    d: BoolA = (x * x + y * y) <= radius * radius
    return d


def radius_px(metres: float, pixel: float) -> int:
    """A radius in metres as whole pixels of size ``pixel`` (m)."""
    return round(metres / pixel)


def disk_mean(a: F32, valid: BoolA, radius: int) -> F32:
    """Mean of ``a`` over a disk, ignoring invalid pixels (normalised convolution)."""
    if radius <= 0:
        return a
    from scipy import ndimage

    k = disk(radius).astype(np.float32)
    w = valid.astype(np.float32)
    num = ndimage.correlate(np.where(valid, a, 0.0).astype(np.float32), k, mode="reflect")
    den = ndimage.correlate(w, k, mode="reflect")
    out = np.full(a.shape, np.nan, dtype=np.float32)
    np.divide(num, den, out=out, where=(den > 0) & valid)
    return out


def dilate(mask: BoolA, radius: int) -> BoolA:
    """``mask`` dilated by the disk of ``radius`` pixels."""
    if radius <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    out: BoolA = ndimage.binary_dilation(mask, structure=disk(radius))
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
