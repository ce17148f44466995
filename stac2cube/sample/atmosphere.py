"""The atmosphere between ground and sensor: path reflectance and transmittance per band, their
change with altitude, water vapour, and the spatially varying haze."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from .arrays import F32, fractal_noise, stream_rng
from .msi import BAND_INDEX, BANDS
from .spec import SampleSpec
from .terrain import VALLEY_ELEVATION

_f = np.float32
_B10: Final = BAND_INDEX["B10"]

PATH_REFLECTANCE: Final = np.array(
    [0.085, 0.065, 0.040, 0.025, 0.020, 0.016, 0.013, 0.011, 0.010, 0.007, 0.0005, 0.004, 0.002], _f
)
"""Atmospheric path reflectance per band at aerosol factor 1."""
TRANSMITTANCE: Final = np.array(
    [0.72, 0.78, 0.85, 0.89, 0.90, 0.91, 0.92, 0.93, 0.93, 0.45, 0.015, 0.94, 0.90], _f
)
"""Two-way atmospheric transmittance per band at aerosol/water-vapour factor 1."""
DIFFUSE: Final = np.array(
    [0.55, 0.50, 0.42, 0.36, 0.33, 0.30, 0.28, 0.26, 0.25, 0.25, 0.25, 0.20, 0.18], _f
)
"""Diffuse (sky) share of the ground's illumination per band; the rest is direct sunlight."""

_WATER_VAPOUR_SCALE: Final = 2000.0  # m, scale height of atmospheric water vapour
_AEROSOL_SCALE: Final = 2000.0  # m, scale height of boundary-layer aerosol
_RAYLEIGH_SCALE: Final = 8000.0  # m, scale height of air (molecular scattering)
_AOT_SMOOTHING: Final = 1000.0  # m, Gaussian sigma of the aerosol field the L2A correction finds
AEROSOL_PATH: Final = np.minimum(
    0.02 * (np.array([b.center for b in BANDS]) / 0.56) ** -1.3, 0.6 * PATH_REFLECTANCE
).astype(np.float32) * (np.arange(len(BANDS)) != _B10)
"""Aerosol part of :data:`PATH_REFLECTANCE` per band (Angstrom exponent 1.3; none at 1375 nm)."""


def haze_field(spec: SampleSpec, date: int, shape: tuple[int, int]) -> tuple[F32, F32]:
    """Relative aerosol amount per 10 m pixel (mean ~1) and the smooth part an L2A correction
    finds. The field is drawn on a fixed physical domain (200 m cells, at least 25.6 km wide,
    Kolmogorov-like spectrum), so a small grid sees gradients and a large one more variation."""
    if spec.haze <= 0.0:
        ones = np.ones(shape, np.float32)
        return ones, ones
    from scipy import ndimage

    cell = 200.0
    n = max(128, math.ceil(10.0 * max(shape) / cell) + 8)
    rng = stream_rng(spec.seed, 7, date)
    field = np.clip(1.0 + spec.haze * fractal_noise(rng, (n, n), 8.0 / 3.0), 0.2, None)
    found = ndimage.gaussian_filter(field, sigma=_AOT_SMOOTHING / cell, mode="nearest")
    # the grid's 10 m pixel centres in domain cells (the grid sits in the domain's centre)
    off = n / 2.0 - 10.0 * np.array(shape, dtype=np.float64) / (2.0 * cell)
    rows = off[0] + (np.arange(shape[0]) + 0.5) * 10.0 / cell - 0.5
    cols = off[1] + (np.arange(shape[1]) + 0.5) * 10.0 / cell - 0.5
    coords = np.meshgrid(rows, cols, indexing="ij")
    out = [ndimage.map_coordinates(f, coords, order=1, mode="nearest") for f in (field, found)]
    return out[0].astype(np.float32), out[1].astype(np.float32)


@dataclass(frozen=True)
class Air:
    """How much of the valley floor's atmosphere lies above each pixel (1 at the floor)."""

    scattering: F32
    """Molecules and aerosol (scale heights 8 km and 2 km, half each)."""
    aerosol: F32
    """Boundary-layer aerosol."""
    vapour_root: F32
    """Square root of the water-vapour column."""

    @classmethod
    def above(cls, dem: F32) -> Air:
        dz = dem.astype(np.float64) - VALLEY_ELEVATION
        scattering = 0.5 * np.exp(-dz / _RAYLEIGH_SCALE) + 0.5 * np.exp(-dz / _AEROSOL_SCALE)
        return cls(
            scattering=scattering.astype(np.float32),
            aerosol=np.exp(-dz / _AEROSOL_SCALE).astype(np.float32),
            vapour_root=np.sqrt(np.exp(-dz / _WATER_VAPOUR_SCALE)).astype(np.float32),
        )


def band_atmosphere(
    bi: int, haze: F32, path: F32, trans: F32, aerosol: float, air: Air
) -> tuple[F32, F32]:
    """Path reflectance and two-way transmittance of band ``bi`` per pixel, for the date's
    valley-floor ``path`` and ``trans``, its ``aerosol`` factor and the relative aerosol ``haze``.
    The water-vapour bands follow the strong-line law ``T = T0 ** sqrt(W / W0)``."""
    extra = np.float32(AEROSOL_PATH[bi] * aerosol) * (haze - np.float32(1.0)) * air.aerosol
    p = path[bi] * air.scattering + extra
    if bi in (BAND_INDEX["B09"], _B10):
        t = trans[bi] ** air.vapour_root
    else:
        t = (1.0 - (1.0 - trans[bi]) * air.scattering) * (1.0 - 2.0 * extra)
    return p.astype(np.float32), t.astype(np.float32)
