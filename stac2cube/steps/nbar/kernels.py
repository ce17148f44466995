"""The kernel-driven BRDF model of the c-factor method, and the c-factor itself.

The reflectance of a surface seen from view zenith ``vz`` under sun zenith ``sz`` at relative
azimuth ``raa`` is modelled as ``f_iso + f_vol * K_vol + f_geo * K_geo`` (Roujean et al. 1992;
Wanner et al. 1995), with the RossThick volume-scattering kernel and the LiSparse-Reciprocal
geometric-optical kernel in the forms of the MODIS BRDF/albedo product (Lucht et al. 2000:
crown shape ``b/r = 1``, relative height ``h/b = 2``). The c-factor method (Roy et al. 2008,
2016) applies one fixed set of coefficients per band to every pixel:
``c = R(target geometry) / R(observed geometry)`` and ``NBAR = c * reflectance``.

Angles are in degrees; the relative azimuth is the sun azimuth minus the view azimuth (both
clockwise from north, the view azimuth pointing from the pixel to the sensor), so ``raa = 0``
puts the sensor on the sun's side (backscatter, the hot spot at ``sz == vz``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]

CROWN_HEIGHT: Final = 2.0
"""``h/b`` of the LiSparse-Reciprocal kernel (MODIS: crown centre height over vertical radius)."""
CROWN_SHAPE: Final = 1.0
"""``b/r`` of the LiSparse-Reciprocal kernel (MODIS: spherical crowns)."""


@dataclass(frozen=True)
class BrdfCoefficients:
    """The weights of the isotropic, volume and geometric kernels of one band."""

    iso: float
    vol: float
    geo: float

    def reflectance(self, k_vol: ArrayLike, k_geo: ArrayLike) -> F64:
        """The modelled reflectance for kernel values ``k_vol`` and ``k_geo``."""
        out: F64 = (
            self.iso
            + self.vol * np.asarray(k_vol, np.float64)
            + self.geo * np.asarray(k_geo, np.float64)
        )
        return out


# Roy, D.P. et al. (2016), "A general method to normalize Landsat reflectance data to nadir
# BRDF adjusted reflectance", Remote Sensing of Environment 176, 255-271, Table 1 (blue, green,
# red, NIR, SWIR 1, SWIR 2; derived from a year of global MODIS BRDF/albedo parameters), applied
# to the Sentinel-2 bands of the same regions by Roy et al. (2017), "Examination of Sentinel-2A
# multi-spectral instrument (MSI) reflectance anisotropy and the suitability of a general method
# to normalize MSI reflectance to nadir BRDF adjusted reflectance", Remote Sensing of
# Environment 199, 25-38; the red-edge bands B05-B07 from Roy et al. (2017), "Adjustment of
# Sentinel-2 multi-spectral instrument (MSI) red-edge band reflectance to nadir BRDF adjusted
# reflectance (NBAR) and quantification of red-edge band BRDF effects", Remote Sensing 9, 1325.
# These are the values sen2nbar uses (its ``axioms`` module: B02-B08, B11, B12); the narrow NIR
# band B8A takes the NIR values, as HLS does for its NIR band (B8A) and mapchete-eo for B8A.
COEFFICIENTS: Final[Mapping[str, BrdfCoefficients]] = MappingProxyType(
    {
        "B02": BrdfCoefficients(iso=0.0774, vol=0.0372, geo=0.0079),
        "B03": BrdfCoefficients(iso=0.1306, vol=0.0580, geo=0.0178),
        "B04": BrdfCoefficients(iso=0.1690, vol=0.0574, geo=0.0227),
        "B05": BrdfCoefficients(iso=0.2085, vol=0.0845, geo=0.0256),
        "B06": BrdfCoefficients(iso=0.2316, vol=0.1003, geo=0.0273),
        "B07": BrdfCoefficients(iso=0.2599, vol=0.1197, geo=0.0294),
        "B08": BrdfCoefficients(iso=0.3093, vol=0.1535, geo=0.0330),
        "B8A": BrdfCoefficients(iso=0.3093, vol=0.1535, geo=0.0330),
        "B11": BrdfCoefficients(iso=0.3430, vol=0.1154, geo=0.0453),
        "B12": BrdfCoefficients(iso=0.2658, vol=0.0639, geo=0.0387),
    }
)
"""Fixed kernel weights per Sentinel-2 band (Roy et al. 2016, 2017): the bands the step can
correct."""
COEFFICIENTS_SOURCE: Final = "Roy et al. 2016 (RSE 176), 2017 (RSE 199; Remote Sens. 9, 1325)"
"""Where :data:`COEFFICIENTS` come from, as the record names it."""


def _radians(a: ArrayLike) -> F64:
    out: F64 = np.radians(np.asarray(a, dtype=np.float64))
    return out


def ross_thick(sun_zenith: ArrayLike, view_zenith: ArrayLike, relative_azimuth: ArrayLike) -> F64:
    """The RossThick volume-scattering kernel (0 at ``sz = vz = 0``)."""
    ti, tv, phi = _radians(sun_zenith), _radians(view_zenith), _radians(relative_azimuth)
    cos_xi = np.clip(np.cos(ti) * np.cos(tv) + np.sin(ti) * np.sin(tv) * np.cos(phi), -1.0, 1.0)
    xi = np.arccos(cos_xi)
    out: F64 = ((np.pi / 2.0 - xi) * cos_xi + np.sin(xi)) / (np.cos(ti) + np.cos(tv)) - np.pi / 4.0
    return out


def li_sparse_reciprocal(
    sun_zenith: ArrayLike, view_zenith: ArrayLike, relative_azimuth: ArrayLike
) -> F64:
    """The LiSparse-Reciprocal geometric-optical kernel with ``h/b = 2``, ``b/r = 1`` (0 at
    ``sz = vz = 0``)."""
    phi = _radians(relative_azimuth)
    # equivalent angles of spheroidal crowns (the identity for b/r = 1)
    ti = np.arctan(CROWN_SHAPE * np.tan(_radians(sun_zenith)))
    tv = np.arctan(CROWN_SHAPE * np.tan(_radians(view_zenith)))
    tan_i, tan_v = np.tan(ti), np.tan(tv)
    sec_i, sec_v = 1.0 / np.cos(ti), 1.0 / np.cos(tv)
    cos_xi = np.cos(ti) * np.cos(tv) + np.sin(ti) * np.sin(tv) * np.cos(phi)
    d2 = np.maximum(tan_i**2 + tan_v**2 - 2.0 * tan_i * tan_v * np.cos(phi), 0.0)
    sec_sum = sec_i + sec_v
    cos_t = np.clip(
        CROWN_HEIGHT * np.sqrt(d2 + (tan_i * tan_v * np.sin(phi)) ** 2) / sec_sum, -1.0, 1.0
    )
    t = np.arccos(cos_t)
    overlap = (t - np.sin(t) * cos_t) * sec_sum / np.pi
    out: F64 = overlap - sec_sum + 0.5 * (1.0 + cos_xi) * sec_i * sec_v
    return out


def kernels(
    sun_zenith: ArrayLike, view_zenith: ArrayLike, relative_azimuth: ArrayLike
) -> tuple[F64, F64]:
    """``(K_vol, K_geo)`` for the geometry given (broadcast together)."""
    return (
        ross_thick(sun_zenith, view_zenith, relative_azimuth),
        li_sparse_reciprocal(sun_zenith, view_zenith, relative_azimuth),
    )


def c_factor(
    coefficients: BrdfCoefficients,
    sun_zenith: ArrayLike,
    view_zenith: ArrayLike,
    relative_azimuth: ArrayLike,
    *,
    target_sun_zenith: ArrayLike | None = None,
    target_view_zenith: float = 0.0,
) -> F64:
    """``R(target) / R(observed)`` for a band's coefficients: the factor that takes a
    reflectance observed at ``(sun_zenith, view_zenith, relative_azimuth)`` to the target view
    zenith (nadir by default) and sun zenith (the observed one when None), at the same relative
    azimuth (which does not matter at nadir)."""
    observed = coefficients.reflectance(*kernels(sun_zenith, view_zenith, relative_azimuth))
    target_sz = sun_zenith if target_sun_zenith is None else target_sun_zenith
    target = coefficients.reflectance(*kernels(target_sz, target_view_zenith, relative_azimuth))
    out: F64 = target / observed
    return out


def valid_geometry(sun_zenith: F64, view_zenith: F64, *azimuths: F64) -> NDArray[np.bool_]:
    """Where the angles describe a geometry the kernels take: all finite, the sun above the
    horizon (zenith in [0, 90)) and the view zenith in [0, 90)."""
    ok: NDArray[np.bool_] = np.isfinite(sun_zenith) & np.isfinite(view_zenith)
    for a in azimuths:
        ok &= np.isfinite(a)
    with np.errstate(invalid="ignore"):
        ok &= (sun_zenith >= 0.0) & (sun_zenith < 90.0) & (view_zenith >= 0.0)
        ok &= view_zenith < 90.0
    return ok


__all__ = [
    "COEFFICIENTS",
    "COEFFICIENTS_SOURCE",
    "CROWN_HEIGHT",
    "CROWN_SHAPE",
    "BrdfCoefficients",
    "c_factor",
    "kernels",
    "li_sparse_reciprocal",
    "ross_thick",
    "valid_geometry",
]
