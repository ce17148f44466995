"""AROSICS as the co-registration step calls it: quietly (its prints and warnings are logged
at debug level; this redirects process-global ``sys.stdout`` and warning filters, so two coreg
steps must not run in threads of one process at once), its errors turned into
:class:`CoregFailure`, arrays handed over as GeoArrays on the scene's grid, and the correction
applied once onto exactly that grid: a global shift (a translation of the grid) resampled band
by band as ``DESHIFTER`` warps it (GDAL's warp, or GDAL's cubic kernel in two separable passes
on a band without nodata), a local tie-point warp by ``DESHIFTER``."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from ...errors import StepError
from ...io.threads import map_layers, scene_threads
from ..base import Scene
from .config import CoregConfig

log = logging.getLogger(__name__)

FILL: Final = -9999.0
"""Nodata of the float arrays handed to AROSICS (it does not take NaN)."""
WARP_THREADS: Final = 2
"""GDAL warper threads per layer of a global shift (1.8x faster on two cores)."""
WARP_MEM_MB: Final = 4
"""GDAL warper chunk size of a global shift: small chunks away from nodata skip the validity
mask (lanczos 1.5x faster around holes); the output does not depend on it."""

T = TypeVar("T")


class CoregFailure(Exception):
    """Matching did not give a trustworthy result (internal; becomes the failure policy)."""


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


def arosics_call(what: str, fn: Callable[[], T]) -> T:
    """Run an AROSICS call quietly; its errors become :class:`CoregFailure`."""
    try:
        with _quiet():
            return fn()
    except (StepError, CoregFailure):
        raise
    except Exception as exc:  # AROSICS raises bare RuntimeError/AssertionError/ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CoregFailure(f"AROSICS {what} failed: {msg}") from exc


def crs(geobox: GeoBox) -> Any:
    """The grid's CRS (co-registration needs one)."""
    if geobox.crs is None:
        raise StepError("the scene grid has no CRS; co-registration needs a georeferenced grid")
    return geobox.crs


def geoarray(data: np.ndarray, geobox: GeoBox, nodata: float | None) -> Any:
    """``data`` as an AROSICS GeoArray on ``geobox``."""
    from geoarray import GeoArray

    return GeoArray(
        np.ascontiguousarray(data), geobox.affine.to_gdal(), crs(geobox).to_wkt(), nodata=nodata
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
        geoarray(stack, geobox, nodata),
        info,
        target_xyGrid=[[x0, x0 + res_x], [y0, y0 + res_y]],
        clipextent=[bounds.left, bounds.bottom, bounds.right, bounds.top],
        resamp_alg=resampling,
        nodata=nodata,
        CPUs=1,
        progress=False,
        q=True,
    )
    res = arosics_call("shift correction", ds.correct_shifts)
    arr = np.asarray(res["arr_shifted"])
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return _paste(arr, tuple(res["updated geotransform"]), geobox, nodata)


def translation(coreg_info: Mapping[str, Any], geobox: GeoBox) -> Affine | None:
    """Where ``coreg_info`` moves the grid ``geobox`` when the correction is a pure translation
    (AROSICS' global shift: the ``updated map info`` is the grid moved in map units): the moved
    grid's affine, as ``DESHIFTER`` builds it (the updated origin, the grid's pixel size).

    None where ``DESHIFTER`` would do anything else: a tie-point warp (``GCPList``, also when
    too few points make it fall back to the mean shift), no updated map info, a reference
    projection other than the grid's (it would reproject) or a rotated grid."""
    if "GCPList" in coreg_info or not coreg_info.get("updated map info"):
        return None
    from py_tools_ds.geo.map_info import mapinfo2geotransform
    from py_tools_ds.geo.projection import prj_equal

    gt = geobox.affine.to_gdal()
    ref_prj = coreg_info.get("reference projection")
    if gt[2] != 0 or gt[4] != 0 or not ref_prj or not prj_equal(ref_prj, crs(geobox).to_wkt()):
        return None
    moved = mapinfo2geotransform(list(coreg_info["updated map info"]))
    if moved is None or moved[2] != 0 or moved[4] != 0:
        return None
    return Affine.from_gdal(moved[0], gt[1], 0.0, moved[3], 0.0, gt[5])


def _translate(
    arr: np.ndarray,
    geobox: GeoBox,
    moved: Affine,
    resampling: str,
    nodata: float,
    threads: int = WARP_THREADS,
) -> np.ndarray:
    """One 2-D layer lying on ``moved`` resampled onto ``geobox``, as ``DESHIFTER`` does it
    (GDAL warp, ``nodata`` as source and destination nodata, pixels no source pixel reaches
    are ``nodata``), but per layer: a layer's own nodata never enters another's kernel.

    A layer without a ``nodata`` pixel (a block inside the swath: most of a tile) is warped
    without nodata and into a destination already filled with it, which takes GDAL's path
    without validity masks: the same pixels, bit for bit, about 3x faster for cubic. A
    float32 layer without nodata under the cubic kernel is resampled as two passes of
    GDAL's 4-tap kernel (:func:`_cubic_shift`), with about half the CPU time, GDAL warping only the
    frame where its kernel would reach past the layer's edge."""
    src = np.ascontiguousarray(arr)
    out = np.full(geobox.shape.yx, nodata, dtype=arr.dtype)
    prj = crs(geobox).to_wkt()
    holes = np.isnan(src) if np.isnan(nodata) else src == nodata
    if holes.any():
        _gdal_translate(src, out, geobox.affine, moved, prj, resampling, threads, nodata)
    elif resampling == "cubic" and src.dtype == np.float32:
        _cubic_shift(src, out, geobox.affine, moved, prj, threads)
    else:
        _gdal_translate(src, out, geobox.affine, moved, prj, resampling, threads)
    return out


def _gdal_translate(
    src: np.ndarray,
    out: np.ndarray,
    dst_affine: Affine,
    src_affine: Affine,
    prj: str,
    resampling: str,
    threads: int,
    nodata: float | None = None,
) -> None:
    """GDAL's warp of ``src`` (on ``src_affine``) into ``out`` (on ``dst_affine``, both in CRS
    ``prj``; ``out`` already filled with the layer's nodata): with ``nodata`` as source and
    destination nodata, or, without, GDAL's path without validity masks."""
    from rasterio.errors import RasterioError
    from rasterio.warp import Resampling, reproject

    masks: dict[str, Any] = (
        {"src_nodata": nodata, "dst_nodata": nodata}
        if nodata is not None
        else {"init_dest_nodata": False}
    )
    try:
        reproject(
            src,
            out,
            src_transform=src_affine,
            src_crs=prj,
            dst_transform=dst_affine,
            dst_crs=prj,
            resampling=Resampling[resampling],
            num_threads=threads,
            warp_mem_limit=WARP_MEM_MB,
            **masks,
        )
    except RasterioError as exc:
        raise CoregFailure(f"shift correction failed: {exc}") from exc


CUBIC_A: Final = -0.5
"""The parameter of GDAL's cubic convolution kernel (Keys)."""
_FRAME_MARGIN: Final = 4
"""Source pixels kept beyond a kernel's reach where :func:`_cubic_shift` hands GDAL a strip,
so that the strip's cut edges are never an edge for GDAL's kernel."""


def _cubic_taps(offset: float) -> tuple[int, np.ndarray]:
    """For a target pixel ``j`` whose centre lies at source pixel coordinate ``j + offset +
    0.5``: the first source pixel of its 4-tap cubic kernel (``j + first``) and the taps'
    weights, as GDAL's cubic warp computes them."""
    base = math.floor(offset)
    t = offset - base
    x = np.array([1.0 + t, t, 1.0 - t, 2.0 - t])
    a = CUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    weights = np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))
    return base - 1, weights


def _cubic_shift(
    src: np.ndarray,
    out: np.ndarray,
    dst_affine: Affine,
    src_affine: Affine,
    prj: str,
    threads: int,
) -> None:
    """``src`` (float32 without nodata, on ``src_affine``: ``dst_affine`` translated) cubic
    resampled into ``out`` (same shape, filled with nodata). Where the 4 x 4 kernel lies
    inside ``src`` the result is two separable passes of the kernel's weights (the two
    passes round to float32 once each, GDAL once: the values agree to about 1e-7 relative);
    the frame where it does not (GDAL falls back to bilinear there and leaves nodata where no
    source pixel is) is warped by GDAL itself, strip by strip."""
    from scipy.ndimage import correlate1d

    h, w = src.shape
    # a target pixel's centre in source pixel coordinates: (j + ox + 0.5, i + oy + 0.5)
    ox = (dst_affine.c - src_affine.c) / src_affine.a
    oy = (dst_affine.f - src_affine.f) / src_affine.e
    fx, wx = _cubic_taps(ox)
    fy, wy = _cubic_taps(oy)
    # target rows [r0, r1) and columns [c0, c1) whose kernel lies inside the source
    r0, r1 = max(0, -fy), min(h, h - fy - 3)
    c0, c1 = max(0, -fx), min(w, w - fx - 3)
    if r1 - r0 < 1 or c1 - c0 < 1:
        _gdal_translate(src, out, dst_affine, src_affine, prj, "cubic", threads)
        return
    rows = src[r0 + fy : r1 + fy + 3]
    # correlate1d's 4 weights at origin -2 read x[k], ..., x[k + 3] into position k
    across = correlate1d(rows, wx, axis=1, origin=-2)[:, c0 + fx : c1 + fx]
    out[r0:r1, c0:c1] = correlate1d(across, wy, axis=0, origin=-2)[: r1 - r0]
    frame = [(0, r0, 0, w), (r1, h, 0, w), (r0, r1, 0, c0), (r0, r1, c1, w)]
    for t0, t1, l0, l1 in frame:
        if t1 <= t0 or l1 <= l0:
            continue
        m = _FRAME_MARGIN
        s0, s1 = max(0, t0 + fy - m), min(h, t1 + fy + 3 + m)
        k0, k1 = max(0, l0 + fx - m), min(w, l1 + fx + 3 + m)
        strip = np.ascontiguousarray(out[t0:t1, l0:l1])
        _gdal_translate(
            np.ascontiguousarray(src[s0:s1, k0:k1]),
            strip,
            dst_affine * Affine.translation(l0, t0),
            src_affine * Affine.translation(k0, s0),
            prj,
            "cubic",
            1,
        )
        out[t0:t1, l0:l1] = strip


def apply_correction(scene: Scene, coreg_info: Mapping[str, Any], cfg: CoregConfig) -> Scene:
    """The scene with every band and class layer corrected once, on its own grid.

    A global shift is resampled band by band (:func:`translation`, :func:`_translate`, the
    layers in the scene's threads): the pixels ``DESHIFTER`` gives each band (to float32
    rounding where :func:`_cubic_shift` does it), without stacking the bands. Warping each band
    alone also keeps a band's fill value out of its valid neighbours where the bands' nodata
    differ (a band's own hole, the 20 m bands' footprint); ``DESHIFTER``'s stack does not, as
    GDAL counts a stacked pixel as nodata only where every band is. A local tie-point warp
    goes through ``DESHIFTER``."""
    gbox = scene.geobox
    moved = translation(coreg_info, gbox)
    if moved is None:
        return _apply_deshifter(scene, coreg_info, cfg)
    threads = scene_threads()
    warp_threads = WARP_THREADS if threads <= 1 else 1

    def band(a: np.ndarray) -> np.ndarray:
        src = np.asarray(a, np.float32)
        nan = np.isnan(src)
        if nan.any():  # NaN as FILL: a block without a hole (most of a tile) needs no copy
            src = np.where(nan, np.float32(FILL), src)
        out = _translate(src, gbox, moved, cfg.resampling, FILL, warp_threads)
        out[out <= FILL + 1.0] = np.nan
        return out

    def layer(n: str) -> np.ndarray:
        info = scene.layer_info.get(n)
        nodata = info.nodata if info is not None else 0
        a = np.asarray(scene.classes[n])
        return _translate(a, gbox, moved, "nearest", nodata, warp_threads)

    bands = dict(zip(scene.bands, map_layers(band, scene.bands.values(), threads), strict=True))
    classes = dict(zip(scene.classes, map_layers(layer, scene.classes, threads), strict=True))
    return scene.replace(bands=bands, classes=classes)


def _apply_deshifter(scene: Scene, coreg_info: Mapping[str, Any], cfg: CoregConfig) -> Scene:
    """:func:`apply_correction` through ``DESHIFTER``: the bands stacked and warped at once
    (NaN as :data:`FILL`), the class layers stacked by nodata value and dtype."""
    gbox = scene.geobox
    bands: dict[str, np.ndarray] = dict(scene.bands)
    if scene.bands:
        names = list(scene.bands)
        stack = np.stack(
            [np.nan_to_num(np.asarray(scene.bands[n], np.float32), nan=FILL) for n in names],
            axis=-1,
        )
        out = _deshift(stack, gbox, coreg_info, cfg.resampling, FILL)
        for i, n in enumerate(names):
            a = out[:, :, i].astype(np.float32)
            a[a <= FILL + 1.0] = np.nan
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


def num(v: Any) -> float | None:
    """A finite float or None (AROSICS uses None, NaN and -9999 for 'no value')."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f != -9999.0 else None


def rounded(v: float | None, n: int) -> float | None:
    """``v`` rounded to ``n`` decimals, None as None."""
    return None if v is None else round(v, n)
