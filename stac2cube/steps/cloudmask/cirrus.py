"""The optional cirrus test of the cloud step: L1C B10 (1375 nm) above ``cirrus_threshold`` is
cirrus, except on snow and ice, which reflect enough at 1375 nm above the dry air of high
terrain to pass the threshold."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ...bands import SCL_SNOW
from ..base import Scene
from .raster import dilate

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]

NDSI_SNOW: Final = 0.4
"""Normalised difference snow index ``(B03 - B11) / (B03 + B11)`` above which a pixel is snow
(Dozier 1989; the MODIS SNOMAP threshold, Hall et al. 1995), together with NIR (B08) > 0.11."""


def snow_mask(scene: Scene) -> tuple[BoolA | None, str]:
    """Snow and ice pixels of ``scene``, where the cirrus test must not run: NDSI > 0.4 and
    B08 > 0.11 (Hall et al. 1995) from the L2A bands when B03, B08 and B11 are loaded, else SCL
    class 11 (Sen2Cor's snow), else None."""
    if all(b in scene.bands for b in ("B03", "B08", "B11")):
        g = np.asarray(scene.bands["B03"], dtype=np.float32)
        n = np.asarray(scene.bands["B08"], dtype=np.float32)
        sw = np.asarray(scene.bands["B11"], dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndsi = (g - sw) / (g + sw)
        ok = np.isfinite(ndsi) & np.isfinite(n)
        out: BoolA = ok & (np.where(ok, ndsi, 0.0) > NDSI_SNOW) & (np.where(ok, n, 0.0) > 0.11)
        return out, "ndsi"
    scl = scene.classes.get("SCL")
    if scl is not None:
        return np.asarray(scl) == SCL_SNOW, "scl"
    return None, ""


def cirrus_mask(
    scene: Scene,
    b10: F32,
    valid: BoolA,
    threshold: float,
    dilation_px: int,
    results: dict[str, Any],
) -> BoolA:
    """Cirrus: ``b10`` (TOA reflectance on the scene's grid) above ``threshold`` where ``valid``,
    snow (:func:`snow_mask`) left out, dilated by ``dilation_px``; the fractions it flagged and
    left out go into ``results``."""
    thin = np.greater(
        b10, threshold, where=np.isfinite(b10) & valid, out=np.zeros(valid.shape, dtype=bool)
    )
    snow, snow_from = snow_mask(scene)
    if snow is not None:
        # clear snow and ice reflect enough at 1375 nm, above the dry air of high terrain, to
        # pass the cirrus threshold: the cirrus test is not used there
        results["cirrus_snow_excluded_fraction"] = round(
            float((thin & snow).sum()) / max(int(valid.sum()), 1), 6
        )
        results["cirrus_snow_from"] = snow_from
        thin &= ~snow
    cirrus: BoolA = dilate(thin, dilation_px) & valid
    results["cirrus_fraction"] = round(float(cirrus.sum()) / max(int(valid.sum()), 1), 6)
    return cirrus
