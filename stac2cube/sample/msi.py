"""The MultiSpectral Instrument as the generator sees it: the 13 bands (Earth Search v1 asset
keys), sensor noise, the view geometry with its per-band parallax, and detector striping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..bands import S2_BANDS
from .arrays import F32, stream_rng
from .geometry import grid_shape
from .spec import SampleSpec

_f = np.float32


@dataclass(frozen=True)
class _Band:
    name: str
    key: str
    common_name: str
    center: float
    fwhm: float
    res: int
    title: str


# Earth Search v1 asset key and title per band; wavelengths and resolutions come from bands.py
_ES_ASSETS: Final[dict[str, tuple[str, str]]] = {
    "B01": ("coastal", "Coastal - 60m"),
    "B02": ("blue", "Blue - 10m"),
    "B03": ("green", "Green - 10m"),
    "B04": ("red", "Red - 10m"),
    "B05": ("rededge1", "Red Edge 1 - 20m"),
    "B06": ("rededge2", "Red Edge 2 - 20m"),
    "B07": ("rededge3", "Red Edge 3 - 20m"),
    "B08": ("nir", "NIR 1 - 10m"),
    "B8A": ("nir08", "NIR 2 - 20m"),
    "B09": ("nir09", "NIR 3 - 60m"),
    "B10": ("cirrus", "Cirrus - 60m"),
    "B11": ("swir16", "SWIR 1.6μm - 20m"),
    "B12": ("swir22", "SWIR 2.2μm - 20m"),
}


def _band(name: str) -> _Band:
    info = S2_BANDS[name]
    key, title = _ES_ASSETS[name]
    assert info.common_name and info.center_wavelength and info.fwhm
    common = "rededge" if info.common_name.startswith("rededge") else info.common_name  # eo v1.1
    return _Band(name, key, common, info.center_wavelength, info.fwhm, info.resolution, title)


BANDS: Final[tuple[_Band, ...]] = tuple(_band(n) for n in _ES_ASSETS)
"""The 13 MSI bands in file order, with Earth Search v1 asset keys and native resolutions."""

BAND_NAMES: Final = tuple(b.name for b in BANDS)
"""``B01`` ... ``B12`` in file order (the order of the per-band tables)."""
BAND_INDEX: Final = {b.name: i for i, b in enumerate(BANDS)}
"""Position of a band name in :data:`BANDS`."""

NOISE_SIGMA: Final = np.array(
    [0.0030, 0.0025, 0.0020, 0.0020, 0.0025, 0.0025, 0.0025, 0.0020, 0.0025, 0.0040, 0.0010, 0.0030,
     0.0030], _f
)  # fmt: skip
"""Sensor noise (standard deviation, TOA reflectance) per native pixel and band."""
TRACK_HEADING: Final = 193.0  # degrees from north, descending Sentinel-2 track near 47 N
ALONG_TRACK_DEG: Final = np.array(
    [0.40, -0.30, -0.05, 0.10, 0.20, 0.25, 0.30, -0.20, 0.35, 0.45, -0.40, -0.10, 0.0]
)  # per band B01..B12: along-track viewing-angle offset (approximate, not the MSI layout)


def view_angles(index: int) -> tuple[float, float]:
    """(view zenith, view azimuth) in degrees of date ``index``, as its items state them."""
    return 6.1 + 0.4 * (index % 3), 104.3 + 2.0 * (index % 3)


def parallax_px(
    height_m: float, view_zenith: float, view_azimuth: float, band: int
) -> tuple[float, float]:
    """Apparent displacement (rows, columns) of an object ``height_m`` above ground in ``band``."""
    tv, va = math.tan(math.radians(view_zenith)), math.radians(view_azimuth)
    ta, ha = math.tan(math.radians(float(ALONG_TRACK_DEG[band]))), math.radians(TRACK_HEADING)
    east = height_m * (tv * math.sin(va) + ta * math.sin(ha)) / 10.0
    north = height_m * (tv * math.cos(va) + ta * math.cos(ha)) / 10.0
    return -north, east


def across_track(spec: SampleSpec) -> tuple[float, float, float, float]:
    """``(ue, un, u_min, u_boundary)``: the across-track unit vector (east, north), the smallest
    across-track position ``u = x·ue + y·un`` on the grid (``x, y`` metres from the grid's
    upper-left corner, ``y`` northward) and the position of the boundary between its two
    detectors (the same for every date)."""
    ps = math.radians(TRACK_HEADING)
    ue, un = math.cos(ps), -math.sin(ps)
    corners = [
        x * ue + y * un for x in (0.0, 10.0 * spec.width) for y in (0.0, -10.0 * spec.height)
    ]
    u_min, u_max = min(corners), max(corners)
    u_boundary = u_min + stream_rng(spec.seed, 8).uniform(0.3, 0.7) * (u_max - u_min)
    return ue, un, u_min, u_boundary


def detector_gains(spec: SampleSpec, date: int) -> list[F32]:
    """Per band, the relative gain of every native pixel: one gain per detector (a detector
    boundary crosses the grid along track) times small column-to-column residuals."""
    ue, un, u_min, u_boundary = across_track(spec)
    rng = stream_rng(spec.seed, 8, date + 1)
    out = []
    for b in BANDS:
        shape = grid_shape(spec, b.res)
        gains = 1.0 + np.clip(rng.normal(0.0, 0.004, 2), -0.01, 0.01)
        x = (np.arange(shape[1], dtype=np.float64) + 0.5) * b.res
        y = -(np.arange(shape[0], dtype=np.float64) + 0.5) * b.res
        u = x[None, :] * ue + y[:, None] * un
        column = np.floor((u - u_min) / b.res).astype(np.intp)
        residual = rng.normal(0.0, 0.0007, int(column.max()) + 1)
        gain = np.where(u > u_boundary, gains[1], gains[0]) * (1.0 + residual[column])
        out.append(gain.astype(np.float32))
    return out
