"""AROSICS as the co-registration step calls it: quietly (its prints and warnings are logged
at debug level; this redirects process-global ``sys.stdout`` and warning filters, so two coreg
steps must not run in threads of one process at once), its errors turned into
:class:`CoregFailure`, arrays handed over as GeoArrays on the scene's grid, and the correction
applied once by ``DESHIFTER`` onto exactly that grid."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import numpy as np
from odc.geo.geobox import GeoBox

from ...errors import StepError
from ..base import Scene
from .config import CoregConfig

log = logging.getLogger(__name__)

FILL: Final = -9999.0
"""Nodata of the float arrays handed to AROSICS (it does not take NaN)."""

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


def apply_correction(scene: Scene, coreg_info: Mapping[str, Any], cfg: CoregConfig) -> Scene:
    """The scene with every band and class layer corrected once, on its own grid."""
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
