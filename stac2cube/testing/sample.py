"""A deterministic synthetic Sentinel-2 sample: STAC items, COGs and the truth behind them.

:func:`generate_sample` writes a small archive of L2A scenes and their L1C twins shaped like
Element84 Earth Search v1, together with the truth that produced them: the surface reflectance of
every date, a per-pixel cloud/shadow truth map, a land-cover map (:data:`SURFACE_TYPES` groups its
codes) and a DEM. ``stac2cube demo``, the tests and the benchmarks use it.

The scene comes from a forward model (landscape, terrain, clouds seen with view parallax, shadows
cast from their true position, an atmosphere with haze and altitude, a sensor with detector
striping and noise); the provider's products are derived from the truth with documented errors
(the SCL), never with the rules :mod:`stac2cube.steps.cloudmask` tests. What it models, what it
does not, the file layout and the sources: ``docs/sample.md``. The output is synthetic, not
Copernicus data, and says so in every item. The same spec gives byte-identical outputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import rasterio
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.transform import Affine

from stac2cube.bands import S2_BANDS
from stac2cube.errors import CatalogError, ConfigError

logger = logging.getLogger(__name__)

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]
BoolA = NDArray[np.bool_]

MANIFEST_NAME: Final = "sample.json"
MANIFEST_FORMAT: Final = "stac2cube-sample/1"
L2A_COLLECTION: Final = "sentinel-2-l2a"
L1C_COLLECTION: Final = "sentinel-2-l1c"


# --------------------------------------------------------------------------------------------
# Specification and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSpec:
    """What sample to generate. The defaults give a 2.4 km x 2.0 km, 4-date sample in seconds."""

    n_dates: int = 4
    """Number of acquisition dates (one L2A + one L1C item each)."""
    width: int = 240
    """Columns of the 10 m grid (x)."""
    height: int = 200
    """Rows of the 10 m grid (y)."""
    seed: int = 0
    """Seed of every random draw; the same spec gives byte-identical outputs."""
    epsg: int = 32633
    """EPSG code of the UTM zone of the grid (326xx north, 327xx south); must match ``tile``."""
    origin: tuple[float, float] = (500000.0, 5300000.0)
    """Upper-left corner ``(x, y)`` shared by the 10/20/60 m grids, metres; multiples of 10 m."""
    start: str = "2023-06-01"
    """ISO date of the first acquisition; dates follow every 5 days, alternating S2B/S2A."""
    tile: str = "33TWN"
    """MGRS tile id used in item ids and ``mgrs:*`` properties."""
    cloud_cover: tuple[float, ...] = (0.05, 0.20, 0.40, 0.0)
    """Target true cloud fraction per date (cycled); the realised fraction is within a few %."""
    nodata_date: int | None = -1
    """Index of the date with a swath-edge nodata wedge (negative: from the end); None: no wedge."""
    terrain: bool = True
    """Rolling relief (a smooth DEM): slopes modulate the direct sunlight, hills cast shadows."""
    mountain: float = 0.0
    """Share of the grid (0-0.6) taken by a limestone massif: a rock wall, then a karst plateau
    rising from ~2000 m with bare bright rock and, above ~2100 m, old snow; there the dry air lets
    the 1375 nm band (B10) see the surface. 0 (the bundled sample): none."""
    haze: float = 0.3
    """Standard deviation of the relative aerosol amount over a 25.6 km domain around the grid
    (path radiance strongest in blue); the L2A correction removes only its smooth part (1 km).
    0: spatially uniform aerosol."""
    parallax: bool = True
    """Clouds are seen displaced by height x tan(view zenith) along the view azimuth, slightly
    differently per band; their shadows are cast from the true position."""
    striping: bool = True
    """Per-band, per-detector gain differences (a detector boundary crosses the grid along track)
    and small column-to-column gain residuals."""

    def __post_init__(self) -> None:
        if self.n_dates < 1:
            raise ConfigError(f"SampleSpec.n_dates must be >= 1, got {self.n_dates}")
        if self.width < 12 or self.height < 12:
            raise ConfigError(
                f"SampleSpec width/height must be >= 12 pixels (two 60 m pixels), got "
                f"{self.width}x{self.height}"
            )
        if any(abs(v / 10.0 - round(v / 10.0)) > 1e-9 for v in self.origin):
            raise ConfigError(
                f"SampleSpec.origin {self.origin} must be multiples of 10 m (the Sentinel-2 UTM "
                "lattice); round it"
            )
        try:
            dt.date.fromisoformat(self.start)
        except ValueError as exc:
            raise ConfigError(
                f"SampleSpec.start {self.start!r} is not an ISO date (YYYY-MM-DD)"
            ) from exc
        m = re.fullmatch(r"(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})", self.tile)
        if m is None:
            raise ConfigError(f"SampleSpec.tile {self.tile!r} is not an MGRS tile id like '33TWN'")
        zone = int(m.group(1))
        north = m.group(2) >= "N"
        expected = (32600 if north else 32700) + zone
        if self.epsg != expected:
            raise ConfigError(
                f"SampleSpec.epsg {self.epsg} does not match tile {self.tile} (expected {expected})"
            )
        if not self.cloud_cover or any(not 0.0 <= c <= 0.9 for c in self.cloud_cover):
            raise ConfigError(
                f"SampleSpec.cloud_cover {self.cloud_cover} must be non-empty fractions in [0, 0.9]"
            )
        if not 0.0 <= self.mountain <= 0.6:
            raise ConfigError(
                f"SampleSpec.mountain {self.mountain} must be a share of the grid in [0, 0.6]"
            )
        if not 0.0 <= self.haze <= 1.0:
            raise ConfigError(f"SampleSpec.haze {self.haze} must be in [0, 1] (0: no haze)")
        if self.nodata_date is not None and not -self.n_dates <= self.nodata_date < self.n_dates:
            raise ConfigError(
                f"SampleSpec.nodata_date {self.nodata_date} is not a date index for "
                f"n_dates={self.n_dates}; use None for no nodata wedge"
            )


@dataclass(frozen=True)
class SampleScene:
    """One acquisition date: the L2A item, its L1C twin and the truth behind them."""

    l2a_item: dict[str, Any]
    """STAC item (dict) shaped like an Earth Search v1 ``sentinel-2-l2a`` item."""
    l1c_item: dict[str, Any]
    """Its L1C twin (same tile and datatake), shaped like Earth Search v1 ``sentinel-2-l1c``."""
    truth_path: Path
    """uint8 GeoTIFF, 10 m grid: 0 clear, 1 thick, 2 thin cloud, 3 cirrus, 4 shadow, 255 nodata."""
    surface_path: Path
    """float32 GeoTIFF, 10 m grid, 13 bands B01..B12 (with B8A, B10): the ground's reflectance
    without clouds, cloud shadows and atmosphere (terrain illumination included)."""
    cloud_fraction: float
    """True cloud fraction (truth classes 1, 2, 3) over valid pixels."""
    l2a_dn_offset: int = 0
    """DN added to ``round(reflectance * 1e4)`` in the L2A pixels (0 or 1000)."""
    l1c_dn_offset: int = 0
    """DN added to ``round(TOA reflectance * 1e4)`` in the L1C pixels (0 or 1000)."""
    shadow_fraction: float = 0.0
    """True cloud-shadow fraction (truth class 4) over valid pixels."""
    nodata_fraction: float = 0.0
    """Fraction of the 10 m grid in the nodata wedge."""
    scl_stats: Mapping[str, float | None] = field(default_factory=dict)
    """Agreement of the generated SCL with the truth (recall / false-alarm rates, 20 m)."""


@dataclass(frozen=True)
class Sample:
    """A generated sample on disk."""

    root: Path
    """Directory holding everything (see the module docstring for the layout)."""
    spec: SampleSpec
    """The specification it was generated from."""
    scenes: tuple[SampleScene, ...]
    """One scene per date, in time order."""
    l2a_collection_path: Path
    """Collection JSON ``sentinel-2-l2a``."""
    l1c_collection_path: Path
    """Collection JSON ``sentinel-2-l1c``."""
    l2a_items_path: Path
    """FeatureCollection (ItemCollection) JSON of all L2A items."""
    l1c_items_path: Path
    """FeatureCollection JSON of all L1C items."""
    bbox: tuple[float, float, float, float]
    """Longitude/latitude bounding box of the 10 m grid."""
    landcover_path: Path | None = None
    """uint8 GeoTIFF, 10 m grid, land-cover codes of :data:`LANDCOVER_CLASSES` (grouped by
    :data:`SURFACE_TYPES`)."""
    dem_path: Path | None = None
    """float32 GeoTIFF, 10 m grid: elevation above sea level (m)."""


# --------------------------------------------------------------------------------------------
# Sentinel-2 bands and spectral tables
# --------------------------------------------------------------------------------------------


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
_BI: Final = {b.name: i for i, b in enumerate(BANDS)}
_B10: Final = _BI["B10"]

_ENDMEMBERS_PERMIL: Final[dict[str, tuple[int, ...]]] = {
    #               B01  B02  B03  B04  B05  B06  B07  B08  B8A  B09  B10  B11  B12
    "green_veg":    ( 30,  35,  75,  35, 110, 300, 400, 440, 460, 450, 100, 230, 110),
    "broadleaf":    ( 20,  25,  50,  25,  80, 230, 320, 350, 370, 360,  80, 190,  85),
    "conifer":      ( 15,  18,  35,  18,  55, 150, 210, 230, 240, 235,  50, 120,  55),
    "grass":        ( 35,  40,  80,  50, 120, 270, 330, 360, 375, 365, 100, 250, 140),
    "dry_veg":      ( 70,  85, 130, 170, 210, 240, 260, 280, 295, 300, 250, 380, 290),
    "soil_dark":    ( 50,  60,  80, 100, 120, 135, 145, 155, 165, 170, 180, 230, 200),
    "soil_bright":  (130, 160, 220, 280, 310, 325, 335, 345, 355, 360, 370, 420, 380),
    "sand":         (180, 210, 280, 330, 350, 360, 370, 380, 385, 385, 380, 420, 370),
    "water_clear":  ( 50,  45,  38,  20,  15,  10,   9,   8,   7,   5,   3,   4,   3),
    "water_turbid": ( 70,  75, 100,  85,  75,  45,  35,  30,  26,  15,   6,   9,   6),
    "concrete":     (150, 170, 190, 210, 220, 225, 230, 235, 240, 240, 240, 260, 240),
    "asphalt":      ( 60,  70,  80,  90,  95, 100, 105, 110, 112, 115, 120, 130, 125),
    "roof_tile":    ( 60,  65,  90, 190, 230, 250, 260, 270, 275, 280, 300, 340, 300),
    "snow_old":     (820, 830, 820, 800, 780, 760, 740, 720, 690, 560, 300,  60,  50),
    "limestone":    (230, 260, 300, 340, 360, 370, 380, 390, 395, 400, 420, 440, 380),
}  # fmt: skip
ENDMEMBERS: Final[dict[str, tuple[float, ...]]] = {
    k: tuple(x / 1000.0 for x in v) for k, v in _ENDMEMBERS_PERMIL.items()
}
"""Surface reflectance of the endmembers at the 13 band centres (approximate typical values)."""

_E: Final = {k: np.asarray(v, dtype=np.float32) for k, v in ENDMEMBERS.items()}

LANDCOVER_CLASSES: Final[dict[int, str]] = {
    1: "water, lake (clear, turbid near the shore)",
    2: "water, river (turbid)",
    3: "broadleaf forest",
    4: "coniferous forest",
    5: "winter cereal (senescing)",
    6: "maize (greening up)",
    7: "summer crop (near peak)",
    8: "meadow (may be mown between dates)",
    9: "bare soil, moist/dark",
    10: "bare soil, dry/bright",
    11: "sand/gravel (beach)",
    12: "built-up (roofs, concrete)",
    13: "road (asphalt)",
    14: "urban green (gardens, trees)",
    15: "field margin (grass strip)",
    16: "snow (old, granular; massif above the snowline)",
    17: "bare rock, bright (limestone wall and karst plateau)",
}
"""Codes of ``landcover.tif``."""

SURFACE_TYPES: Final[dict[str, tuple[int, ...]]] = {
    "snow": (16,),
    "bright_rock": (17,),
    "bright_soil": (10, 11),
    "urban": (12, 13),
    "water": (1, 2),
    "vegetation": (3, 4, 5, 6, 7, 8, 14, 15),
    "dark_soil": (9,),
}
"""Surface types (groups of :data:`LANDCOVER_CLASSES` codes) that benchmarks report per type."""

TRUTH_CLASSES: Final[dict[int, str]] = {
    0: "clear",
    1: "thick cloud",
    2: "thin cloud",
    3: "cirrus",
    4: "cloud shadow",
    255: "nodata",
}
"""Codes of the ``truth`` rasters."""

_f = np.float32
PATH_REFLECTANCE: Final = np.array(
    [0.085, 0.065, 0.040, 0.025, 0.020, 0.016, 0.013, 0.011, 0.010, 0.007, 0.0005, 0.004, 0.002], _f
)
"""Atmospheric path reflectance per band at aerosol factor 1."""
TRANSMITTANCE: Final = np.array(
    [0.72, 0.78, 0.85, 0.89, 0.90, 0.91, 0.92, 0.93, 0.93, 0.45, 0.015, 0.94, 0.90], _f
)
"""Two-way atmospheric transmittance per band at aerosol/water-vapour factor 1."""
NOISE_SIGMA: Final = np.array(
    [0.0030, 0.0025, 0.0020, 0.0020, 0.0025, 0.0025, 0.0025, 0.0020, 0.0025, 0.0040, 0.0010, 0.0030,
     0.0030], _f
)  # fmt: skip
"""Sensor noise (standard deviation, TOA reflectance) per native pixel and band."""
_DIFFUSE: Final = np.array(
    [0.55, 0.50, 0.42, 0.36, 0.33, 0.30, 0.28, 0.26, 0.25, 0.25, 0.25, 0.20, 0.18], _f
)
_CLOUD_SPECTRUM: Final = np.array(
    [1.0, 1.0, 1.0, 1.0, 0.99, 0.99, 0.98, 0.97, 0.97, 0.93, 0.0, 0.72, 0.50], _f
)
_CIRRUS_SPECTRUM: Final = np.array(
    [1.35, 1.30, 1.25, 1.20, 1.18, 1.16, 1.15, 1.12, 1.12, 1.10, 1.0, 0.80, 0.60], _f
)

# Radiometry variants: (processing baseline, L2A DN offset, item raster offset, boa_offset_applied)
_VARIANTS: Final[tuple[tuple[str, int, float, bool], ...]] = (
    ("03.01", 0, 0.0, False),
    ("05.09", 1000, -0.1, False),
    ("05.10", 0, -0.1, True),
)

_ES_EXTENSIONS: Final = [
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
]
_COG_TYPE: Final = "image/tiff; application=geotiff; profile=cloud-optimized"
_LICENSE: Final = "CC0-1.0"
_LICENSE_HREF: Final = "https://creativecommons.org/publicdomain/zero/1.0/"
_SYNTHETIC_NOTE: Final = (
    "Synthetic Sentinel-2 {level} scene generated by stac2cube.testing.sample "
    "(not Copernicus data)."
)

# --------------------------------------------------------------------------------------------
# Small array helpers
# --------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, date: int = 0) -> np.random.Generator:
    return np.random.default_rng((seed, stream, date))


def _fractal_noise(
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


def _block_mean(a: F32, f: int, shape: tuple[int, int]) -> F32:
    """Mean over ``f x f`` blocks of ``a`` (shape a multiple of ``f``), cropped to ``shape``."""
    h, w = a.shape
    out = a.reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)
    return np.ascontiguousarray(out[: shape[0], : shape[1]])


def _shift(a: F32, dr: int, dc: int) -> F32:
    """``out[r, c] = a[r - dr, c - dc]``, zero where that falls outside."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(dr) >= h or abs(dc) >= w:
        return out
    rs, rd = (slice(0, h - dr), slice(dr, h)) if dr >= 0 else (slice(-dr, h), slice(0, h + dr))
    cs, cd = (slice(0, w - dc), slice(dc, w)) if dc >= 0 else (slice(-dc, w), slice(0, w + dc))
    out[rd, cd] = a[rs, cs]
    return out


def _blur3(a: F32, side: float = 0.18) -> F32:
    """Separable 3-tap PSF ``[side, 1 - 2 side, side]`` on the last two axes, edges replicated."""
    c = 1.0 - 2.0 * side
    p = np.concatenate([a[..., :1, :], a, a[..., -1:, :]], axis=-2)
    a = (c * p[..., 1:-1, :] + side * (p[..., :-2, :] + p[..., 2:, :])).astype(np.float32)
    p = np.concatenate([a[..., :1], a, a[..., -1:]], axis=-1)
    return np.asarray(c * p[..., 1:-1] + side * (p[..., :-2] + p[..., 2:]), dtype=np.float32)


def _voronoi(rng: np.random.Generator, shape: tuple[int, int], spacing: int) -> NDArray[np.int32]:
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


def _segment_distance(yy: F32, xx: F32, p0: tuple[float, float], p1: tuple[float, float]) -> F32:
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    return np.sqrt((yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Landscape (static) and surface reflectance (per date)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Landscape:
    lc: U8
    parcel: NDArray[np.int32]
    mix: F32
    texture_fine: F32
    texture_mid: F32
    parcel_gain: F32
    g0: F32
    rate: F32
    mow_day: F32
    meadow: BoolA


_TEXTURE_AMP: Final = np.array(
    [
        0.0,
        0.04,
        0.05,
        0.14,
        0.16,
        0.06,
        0.07,
        0.06,
        0.06,
        0.07,
        0.06,
        0.05,
        0.15,
        0.05,
        0.12,
        0.06,
        0.04,
        0.10,
    ],
    _f,
)


def _landscape(spec: SampleSpec, shape: tuple[int, int]) -> _Landscape:
    rng = _rng(spec.seed, 1)
    h, w = shape
    size = min(h, w)
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * np.ones((1, w), np.float32)
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * np.ones((h, 1), np.float32)
    n_low = _fractal_noise(rng, shape, 3.6)
    n_low2 = _fractal_noise(rng, shape, 3.6)
    n_mid = _fractal_noise(rng, shape, 2.4)
    n_fine = _fractal_noise(rng, shape, 1.6)

    # Agricultural parcels.
    parcel = _voronoi(rng, shape, 22)
    n_parcels = int(parcel.max()) + 1
    kinds = np.array([5, 6, 7, 8, 9, 10, 3], dtype=np.uint8)
    probs = np.array([0.24, 0.20, 0.12, 0.24, 0.10, 0.07, 0.03])
    parcel_kind = kinds[rng.choice(len(kinds), size=n_parcels, p=probs)]
    lc = parcel_kind[parcel]
    mix = np.zeros(shape, np.float32)
    soil_m = rng.uniform(0.0, 1.0, n_parcels).astype(np.float32)
    mix[:] = soil_m[parcel]
    edge = (parcel != np.roll(parcel, 1, axis=0)) | (parcel != np.roll(parcel, 1, axis=1))
    has_margin = rng.random(n_parcels) < 0.5
    lc = np.where(edge & has_margin[parcel] & (lc != 3), np.uint8(15), lc)

    # Forest zones (broadleaf or coniferous by a second low-frequency field).
    forest = n_low > np.quantile(n_low, 0.80)
    lc = np.where(forest, np.where(n_low2 > 0.3, np.uint8(4), np.uint8(3)), lc)
    canopy = np.clip(0.88 + 0.08 * n_mid, 0.55, 1.0).astype(np.float32)
    mix = np.where((lc == 3) | (lc == 4), canopy, mix)

    # Village: small Voronoi blocks of roofs, concrete, streets and gardens.
    uy, ux = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    ur = 0.13 * size
    r_u = np.sqrt((yy - uy) ** 2 + (xx - ux) ** 2) / ur
    urban = r_u < 1.0 + 0.3 * n_low2
    block = _voronoi(rng, shape, 4)
    n_blocks = int(block.max()) + 1
    bkind = rng.choice(5, size=n_blocks, p=[0.35, 0.25, 0.15, 0.15, 0.10])
    bk = bkind[block]
    ulc = np.select([bk <= 1, bk == 2], [np.uint8(12), np.uint8(13)], np.uint8(14)).astype(np.uint8)
    umix = np.select([bk == 0, bk == 1, bk == 3], [1.0, 0.0, 0.2], 0.8).astype(np.float32)
    lc = np.where(urban, ulc, lc)
    mix = np.where(urban, umix, mix)

    # Lake with a turbid shore and a sandy beach.
    ly, lx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    lr = rng.uniform(0.08, 0.12) * size
    r_l = np.sqrt((yy - ly) ** 2 + (xx - lx) ** 2) / lr
    shore = 1.0 + 0.25 * n_low
    lake = (r_l < shore) & ~urban
    beach = (r_l >= shore) & (r_l < shore + 0.12) & (n_mid > 0.2) & ~urban
    lc = np.where(beach, np.uint8(11), lc)
    lc = np.where(lake, np.uint8(1), lc)
    turb = np.clip(0.1 + 0.8 * (r_l / np.maximum(shore, 1e-3)) ** 4 + 0.05 * n_mid, 0.0, 1.0)
    mix = np.where(lake, turb.astype(np.float32), mix)

    # Meandering river with riparian trees.
    ang = rng.uniform(0, math.pi)
    cu, cv = h / 2.0, w / 2.0
    u = (yy - cu) * math.cos(ang) + (xx - cv) * math.sin(ang)
    v = -(yy - cu) * math.sin(ang) + (xx - cv) * math.cos(ang)
    amp, lam, phase = 0.08 * size, rng.uniform(0.5, 0.8) * size, rng.uniform(0, 2 * math.pi)
    v0 = rng.uniform(-0.3, 0.3) * size
    vc = v0 + amp * np.sin(2 * math.pi * u / lam + phase)
    slope = amp * 2 * math.pi / lam * np.cos(2 * math.pi * u / lam + phase)
    dist = np.abs(v - vc) / np.sqrt(1.0 + slope**2)
    half = rng.uniform(1.2, 2.0)
    riparian = (dist < half + 3.0) & (n_mid > -0.3) & ~urban & ~lake
    river = (dist < half) & ~lake
    lc = np.where(riparian, np.uint8(3), lc)
    mix = np.where(riparian, np.float32(0.85), mix)
    lc = np.where(river, np.uint8(2), lc)
    mix = np.where(river, np.float32(0.85), mix)

    # Roads from the village to the edges (bridges over the river, none over the lake).
    road = np.zeros(shape, bool)
    for _ in range(3):
        side = rng.integers(4)
        t = rng.uniform(0.1, 0.9)
        end = [(0.0, t * w), (h, t * w), (t * h, 0.0), (t * h, w)][side]
        road |= _segment_distance(yy, xx, (uy, ux), end) < 0.75
    lc = np.where(road & ~lake, np.uint8(13), lc)

    gain = rng.normal(1.0, 0.04, n_parcels).astype(np.float32)
    g0 = np.zeros(n_parcels, np.float32)
    rate = np.zeros(n_parcels, np.float32)
    g0[:] = rng.uniform(0.45, 0.80, n_parcels)  # cereals: start green, senesce
    rate[:] = -rng.uniform(0.010, 0.025, n_parcels)
    maize = parcel_kind == 6
    g0[maize] = rng.uniform(0.10, 0.35, int(maize.sum()))
    rate[maize] = rng.uniform(0.010, 0.020, int(maize.sum()))
    crop = parcel_kind == 7
    g0[crop] = rng.uniform(0.60, 0.90, int(crop.sum()))
    rate[crop] = rng.uniform(-0.004, 0.006, int(crop.sum()))
    meadow = parcel_kind == 8
    g0[meadow] = rng.uniform(0.65, 0.90, int(meadow.sum()))
    rate[meadow] = 0.0  # meadows: g0 until mown, then 0.25 regrowing by 0.02 per day
    soils = (parcel_kind == 9) | (parcel_kind == 10)
    g0[soils] = rng.uniform(0.0, 0.08, int(soils.sum()))
    rate[soils] = 0.0
    mow = rng.uniform(-10.0, 40.0, n_parcels).astype(np.float32)
    return _Landscape(
        lc=np.ascontiguousarray(lc, dtype=np.uint8),
        parcel=parcel,
        mix=mix.astype(np.float32),
        texture_fine=n_fine,
        texture_mid=n_mid,
        parcel_gain=gain,
        g0=g0,
        rate=rate,
        mow_day=mow,
        meadow=meadow,
    )


def _greenness(land: _Landscape, day: float) -> F32:
    """Green-vegetation cover fraction of every pixel on ``day`` (days since the first date)."""
    g = land.g0 + land.rate * day
    mown = np.minimum(0.25 + 0.02 * (day - land.mow_day), land.g0)
    g = np.where(land.meadow & (day >= land.mow_day), mown, np.where(land.meadow, land.g0, g))
    gp = np.clip(g, 0.0, 0.95).astype(np.float32)[land.parcel]
    out = np.clip(gp + 0.07 * land.texture_mid + 0.02 * land.texture_fine, 0.0, 1.0)
    return np.asarray(out, dtype=np.float32)


def _surface(land: _Landscape, day: float, rng: np.random.Generator) -> F32:
    """True 13-band surface reflectance ``(13, h, w)`` on ``day``, with the date's BRDF factor."""
    lc, mix = land.lc, land.mix
    h, w = lc.shape
    g = _greenness(land, day)
    s = np.zeros((len(BANDS), h, w), np.float32)

    def put(mask: BoolA, parts: list[tuple[str, F32 | float]]) -> None:
        if not mask.any():
            return
        acc = np.zeros((len(BANDS), int(mask.sum())), np.float32)
        for name, weight in parts:
            wv = weight[mask] if isinstance(weight, np.ndarray) else np.float32(weight)
            acc += _E[name][:, None] * wv
        s[:, mask] = acc

    m = mix
    put(lc == 1, [("water_clear", 1 - m), ("water_turbid", m)])
    put(lc == 2, [("water_turbid", m), ("water_clear", 1 - m)])
    put(lc == 3, [("broadleaf", m), ("grass", 1 - m)])
    put(lc == 4, [("conifer", m), ("grass", (1 - m) * 0.5), ("soil_dark", (1 - m) * 0.5)])
    put(lc == 5, [("green_veg", g), ("dry_veg", (1 - g) * 0.8), ("soil_dark", (1 - g) * 0.2)])
    put(lc == 6, [("green_veg", g), ("soil_dark", (1 - g) * m), ("soil_bright", (1 - g) * (1 - m))])
    put(lc == 7, [("green_veg", g), ("soil_dark", 1 - g)])
    put(lc == 8, [("grass", g), ("dry_veg", 1 - g)])
    put(
        lc == 9,
        [
            ("green_veg", g),
            ("soil_dark", (1 - g) * (0.7 + 0.3 * m)),
            ("soil_bright", (1 - g) * 0.3 * (1 - m)),
        ],
    )
    put(
        lc == 10,
        [
            ("green_veg", g),
            ("soil_bright", (1 - g) * (0.75 + 0.25 * m)),
            ("soil_dark", (1 - g) * 0.25 * (1 - m)),
        ],
    )
    put(lc == 11, [("sand", 0.9), ("soil_bright", 0.1)])
    put(lc == 12, [("roof_tile", m), ("concrete", 1 - m)])
    put(lc == 13, [("asphalt", 0.8), ("grass", 0.2)])
    put(lc == 14, [("broadleaf", m), ("grass", 1 - m)])
    put(lc == 15, [("grass", 0.8), ("dry_veg", 0.2)])
    put(lc == 16, [("snow_old", m), ("limestone", 1 - m)])
    put(lc == 17, [("limestone", 1 - m), ("grass", m)])

    agri = (lc >= 5) & (lc <= 10)
    gain = np.where(agri, land.parcel_gain[land.parcel], np.float32(1.0))
    tex = 1.0 + _TEXTURE_AMP[lc] * land.texture_fine
    s *= (gain * np.clip(tex, 0.5, 1.6)).astype(np.float32)[None]
    s = _blur3(s)
    # Per-date illumination / BRDF: a common and a per-band factor, plus a cross-track gradient.
    common = 1.0 + rng.normal(0.0, 0.012)
    per_band = 1.0 + rng.normal(0.0, 0.005, len(BANDS))
    grad = rng.uniform(-0.03, 0.03)
    across = 1.0 + grad * ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5)
    s *= (common * per_band).astype(np.float32)[:, None, None]
    s *= across.astype(np.float32)[None, None, :]
    return np.asarray(np.clip(s, 0.0, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Clouds, shadows, cirrus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clouds:
    alpha: F32
    rho: F32
    height: F32
    shadow: F32
    cirrus: F32


def _clouds(
    spec: SampleSpec,
    date: int,
    shape: tuple[int, int],
    valid_hw: tuple[int, int],
    sun_zenith: float,
    sun_azimuth: float,
    pad: int = 0,
) -> _Clouds:
    """Cloud opacity, cloud-top reflectance/height, shadow opacity and cirrus on the padded grid,
    at their true ground positions; ``pad`` pixels more on every side (for the view parallax)."""
    rng = _rng(spec.seed, 2, date)
    h, w = shape
    target = spec.cloud_cover[date % len(spec.cloud_cover)]
    zeros = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    if target <= 0.0:
        return _Clouds(zeros, zeros, zeros, zeros, zeros)
    target *= rng.uniform(0.9, 1.1)
    if target <= 0.08:
        f_cu, f_thin, f_cir = target, 0.0, 0.0
    else:
        share_thin, share_cir = rng.uniform(0.12, 0.25), rng.uniform(0.12, 0.3)
        f_cu = target * (1.0 - share_thin - share_cir)
        f_thin, f_cir = target * share_thin * 1.25, target * share_cir * 1.25

    tan_z = math.tan(math.radians(sun_zenith))
    az = math.radians(sun_azimuth)

    def offset(height_m: float) -> tuple[int, int]:
        d = height_m * tan_z / 10.0  # pixels, shadow away from the sun
        return round(d * math.cos(az)), round(-d * math.sin(az))

    r_max = 60
    margin = max(math.ceil(3000.0 * tan_z / 10.0) + 2 * r_max, pad)
    eh, ew = h + 2 * margin, w + 2 * margin
    n_edge = _fractal_noise(rng, (eh, ew), 2.0)
    n_tex = _fractal_noise(rng, (eh, ew), 2.6)
    alpha = np.zeros((eh, ew), np.float32)
    rho = np.zeros((eh, ew), np.float32)
    top = np.zeros((eh, ew), np.float32)
    shadow = np.zeros((eh, ew), np.float32)
    inner = (slice(margin, margin + valid_hw[0]), slice(margin, margin + valid_hw[1]))
    n_valid = valid_hw[0] * valid_hw[1]

    # Cumulus cells until their union covers f_cu of the grid; a cell that would overshoot the
    # target by more than 10 % (of the target) is redrawn.
    n_cells = n_tries = 0
    covered = 0
    goal = f_cu * n_valid
    iy0, ix0, iy1, ix1 = margin, margin, margin + valid_hw[0], margin + valid_hw[1]
    # Cells are placed over the grid and where a cloud would cast its shadow into it.
    dr_max, dc_max = offset(3000.0)
    rows = (margin - r_max + min(0, -dr_max), margin + h + r_max + max(0, -dr_max))
    cols = (margin - r_max + min(0, -dc_max), margin + w + r_max + max(0, -dc_max))
    if f_cu > 0:
        while covered < 0.98 * goal and n_tries < 50000:
            n_tries += 1
            radius = min(6.0 * (1.0 - rng.random()) ** (-1.0 / 1.6), float(r_max))
            ry = radius * rng.uniform(0.7, 1.3)
            rx = radius * rng.uniform(0.7, 1.3)
            th = rng.uniform(0, math.pi)
            cy = rng.uniform(*rows)
            cx = rng.uniform(*cols)
            ext = int(1.7 * max(ry, rx)) + 2
            y0, y1 = max(int(cy) - ext, 0), min(int(cy) + ext, eh)
            x0, x1 = max(int(cx) - ext, 0), min(int(cx) + ext, ew)
            if y1 <= y0 or x1 <= x0:
                continue
            py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
            px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
            uu = (py * math.cos(th) + px * math.sin(th)) / ry
            vv = (-py * math.sin(th) + px * math.cos(th)) / rx
            r = np.sqrt(uu**2 + vv**2)
            edge = np.maximum(1.0 + 0.35 * n_edge[y0:y1, x0:x1], 0.2)
            a = np.clip((edge - r) / (0.3 * edge), 0.0, 1.0).astype(np.float32)
            a[a < 0.03] = 0.0
            if not a.any():
                continue
            rho_c = rng.uniform(0.45, 0.8)
            hgt = rng.uniform(500.0, 3000.0)
            win = (slice(y0, y1), slice(x0, x1))
            wy0, wy1, wx0, wx1 = max(y0, iy0), min(y1, iy1), max(x0, ix0), min(x1, ix1)
            gain = 0
            if wy1 > wy0 and wx1 > wx0:
                old_in = alpha[wy0:wy1, wx0:wx1] > 0
                new_in = old_in | (a[wy0 - y0 : wy1 - y0, wx0 - x0 : wx1 - x0] > 0)
                gain = int(new_in.sum()) - int(old_in.sum())
            if covered + gain > 1.1 * goal and n_tries < 40000:
                continue
            covered += gain
            n_cells += 1
            better = a > alpha[win]
            tex = rho_c * (0.85 + 0.15 * a) * (1.0 + 0.08 * n_tex[win])
            rho[win] = np.where(better, tex, rho[win])
            top[win] = np.where(better, np.float32(hgt), top[win])
            alpha[win] = np.maximum(alpha[win], a)
            dr, dc = offset(hgt)
            sy0, sy1, sx0, sx1 = y0 + dr, y1 + dr, x0 + dc, x1 + dc
            cy0, cy1, cx0, cx1 = max(sy0, 0), min(sy1, eh), max(sx0, 0), min(sx1, ew)
            if cy1 > cy0 and cx1 > cx0:
                part = a[cy0 - sy0 : cy1 - sy0, cx0 - sx0 : cx1 - sx0]
                shadow[cy0:cy1, cx0:cx1] = np.maximum(shadow[cy0:cy1, cx0:cx1], part)

    # A semi-transparent stratiform layer.
    if f_thin > 0:
        n_thin = _fractal_noise(rng, (eh, ew), 3.2)
        thr = float(np.quantile(n_thin[inner], 1.0 - f_thin))
        a_t = (0.55 * np.clip((n_thin - thr) / 0.8, 0.0, 1.0)).astype(np.float32)
        a_t[a_t < 0.03] = 0.0
        hgt = rng.uniform(2000.0, 4000.0)
        dr, dc = offset(min(hgt, 3000.0 + 0.5 * (hgt - 3000.0)))
        shadow = np.maximum(shadow, _shift(a_t, dr, dc))
        thin_wins = a_t > alpha
        rho = np.where(thin_wins, np.float32(0.5) * (1.0 + 0.05 * n_tex), rho)
        top = np.where(thin_wins, np.float32(hgt), top)
        alpha = (1.0 - (1.0 - alpha) * (1.0 - a_t)).astype(np.float32)

    # Cirrus: elongated streaks; B10 TOA reflectance 0.006-0.05, no shadow.
    cirrus = np.zeros((eh, ew), np.float32)
    if f_cir > 0:
        n_cir = _fractal_noise(rng, (eh, ew), 3.0, stretch=5.0, angle=rng.uniform(0, math.pi))
        thr = float(np.quantile(n_cir[inner], 1.0 - f_cir))
        cirrus = np.where(
            n_cir > thr, 0.006 + 0.044 * np.clip((n_cir - thr) / 1.2, 0.0, 1.0), 0.0
        ).astype(np.float32)

    shadow[shadow < 0.3] = 0.0
    crop = (slice(margin - pad, margin + h + pad), slice(margin - pad, margin + w + pad))
    logger.debug("date %d: %d cumulus cells, target cover %.3f", date, n_cells, target)
    return _Clouds(
        alpha=np.ascontiguousarray(alpha[crop]),
        rho=np.ascontiguousarray(rho[crop]),
        height=np.ascontiguousarray(top[crop]),
        shadow=np.ascontiguousarray(shadow[crop]),
        cirrus=np.ascontiguousarray(cirrus[crop]),
    )


# --------------------------------------------------------------------------------------------
# Terrain, haze, view parallax, detector striping
# --------------------------------------------------------------------------------------------

VALLEY_ELEVATION: Final = 600.0
"""Mean elevation of the valley floor (m): the level the date's atmosphere is given for."""
SNOWLINE: Final = 2100.0
"""Mean elevation (m) above which the massif keeps old snow (early summer, northern Alps)."""
_WALL_WIDTH: Final = 400.0  # m: horizontal extent of the massif's rock wall
_PLATEAU_GRADE: Final = 0.2  # rise of the karst plateau per metre inland
_WATER_VAPOUR_SCALE: Final = 2000.0  # m, scale height of atmospheric water vapour
_AEROSOL_SCALE: Final = 2000.0  # m, scale height of boundary-layer aerosol
_RAYLEIGH_SCALE: Final = 8000.0  # m, scale height of air (molecular scattering)
_AOT_SMOOTHING: Final = 1000.0  # m, Gaussian sigma of the aerosol field the L2A correction finds
_TRACK_HEADING: Final = 193.0  # degrees from north, descending Sentinel-2 track near 47 N
_CIRRUS_HEIGHT: Final = 9000.0  # m
_ALONG_TRACK_DEG: Final = np.array(
    [0.40, -0.30, -0.05, 0.10, 0.20, 0.25, 0.30, -0.20, 0.35, 0.45, -0.40, -0.10, 0.0]
)  # per band B01..B12: along-track viewing-angle offset (approximate, not the MSI layout)
AEROSOL_PATH: Final = np.minimum(
    0.02 * (np.array([b.center for b in BANDS]) / 0.56) ** -1.3, 0.6 * PATH_REFLECTANCE
).astype(np.float32) * (np.arange(len(BANDS)) != _B10)
"""Aerosol part of :data:`PATH_REFLECTANCE` per band (Angstrom exponent 1.3; none at 1375 nm)."""
_SCL_COMMISSION: Final[dict[int, float]] = {12: 0.06, 11: 0.05, 10: 0.03, 17: 0.04, 16: 0.03}
"""Share of the clear pixels of a land-cover code that the simulated SCL calls cloud (class 8)."""


def _uniform_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> F32:
    """A smooth random field with uniform marginals on (0, 1): patchy, not salt-and-pepper."""
    x = _fractal_noise(rng, shape, beta).ravel()
    rank = np.empty(x.size, np.float32)
    rank[np.argsort(x, kind="stable")] = np.arange(x.size, dtype=np.float32)
    out: F32 = ((rank + np.float32(0.5)) / np.float32(x.size)).astype(np.float32)
    return out.reshape(shape)


def _terrain(spec: SampleSpec, land: _Landscape) -> tuple[_Landscape, F32]:
    """The DEM (m) of the padded grid, and the landscape with the massif's rock and snow."""
    rng = _rng(spec.seed, 6)
    h, w = land.lc.shape
    shape = (h, w)
    hills = _fractal_noise(rng, shape, 4.0)
    n_rim = _fractal_noise(rng, shape, 3.0)
    n_karst = _fractal_noise(rng, shape, 3.0)
    n_snow = _fractal_noise(rng, shape, 2.8)
    n_cover = _fractal_noise(rng, shape, 2.2)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    z = np.full(shape, VALLEY_ELEVATION, np.float32)
    if spec.terrain:
        z += np.float32(40.0) * hills
    if spec.mountain <= 0.0:
        return land, z
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    size = min(spec.height, spec.width)
    s = (yy - h / 2) * math.cos(theta) + (xx - w / 2) * math.sin(theta) + 0.04 * size * n_rim
    s0 = float(np.quantile(s[: spec.height, : spec.width], 1.0 - spec.mountain))
    d = (s - s0) * 10.0  # metres into the massif
    massif = d > 0.0
    rim = 2000.0 + 50.0 * n_rim
    t = np.clip(d / _WALL_WIDTH, 0.0, 1.0)
    wall = z + (rim - z) * (t * t * (3.0 - 2.0 * t))
    inland = d - _WALL_WIDTH
    plateau = rim + _PLATEAU_GRADE * inland + 40.0 * n_karst * np.clip(inland / 200.0, 0.0, 1.0)
    z = np.where(massif, np.where(inland < 0.0, wall, plateau), z).astype(np.float32)
    snowline = SNOWLINE + 80.0 * n_snow
    snow = massif & (z > snowline)
    lc = np.where(snow, np.uint8(16), np.where(massif, np.uint8(17), land.lc)).astype(np.uint8)
    grass = np.clip(0.2 + 0.2 * n_cover, 0.0, 0.6) * (inland > 0.0)  # alpine grass in the karst
    snow_cover = np.clip(0.6 + (z - snowline) / 100.0 + 0.1 * n_cover, 0.5, 1.0)
    mix = np.where(snow, snow_cover, np.where(massif, grass, land.mix)).astype(np.float32)
    return dataclasses.replace(land, lc=np.ascontiguousarray(lc), mix=mix), z


def _cast_shadow(dem: F32, sun_zenith: float, sun_azimuth: float) -> BoolA:
    """Pixels that terrain hides from the sun (a ray towards the sun meets higher ground)."""
    tan_elev = 1.0 / math.tan(math.radians(sun_zenith))
    relief = float(dem.max() - dem.min())
    out = np.zeros(dem.shape, bool)
    if relief <= 0.0:
        return out
    az = math.radians(sun_azimuth)
    dr, dc = -math.cos(az), math.sin(az)  # towards the sun, in rows (down = south) and columns
    n = min(int(relief / (10.0 * tan_elev)) + 2, max(dem.shape))
    seen: set[tuple[int, int]] = set()
    for k in range(1, n + 1):
        r, c = round(k * dr), round(k * dc)
        if (r, c) in seen:
            continue
        seen.add((r, c))
        ahead = _shift(dem, -r, -c)  # ahead[x] = dem[x + (r, c)]; 0 (below all) outside
        out |= ahead > dem + np.float32(10.0 * math.hypot(r, c) * tan_elev)
    return out


def _illumination(dem: F32, level: BoolA, sun_zenith: float, sun_azimuth: float) -> tuple[F32, F32]:
    """Direct-sunlight factor ``cos(incidence) / cos(zenith)`` (0 where the terrain casts a
    shadow) and sky-view factor ``(1 + cos(slope)) / 2``; both 1 on ``level`` (water) pixels."""
    gy, gx = np.gradient(dem.astype(np.float64), 10.0)
    dzdx, dzdy = gx, -gy  # towards east and north
    norm = np.sqrt(1.0 + dzdx**2 + dzdy**2)
    sz, az = math.radians(sun_zenith), math.radians(sun_azimuth)
    cos_i = (
        math.cos(sz) - dzdx * math.sin(sz) * math.sin(az) - dzdy * math.sin(sz) * math.cos(az)
    ) / norm
    direct = np.clip(cos_i, 0.0, None) / math.cos(sz)
    direct[_cast_shadow(dem, sun_zenith, sun_azimuth)] = 0.0
    sky = 0.5 * (1.0 + 1.0 / norm)
    direct[level] = 1.0
    sky[level] = 1.0
    return direct.astype(np.float32), sky.astype(np.float32)


def _haze(spec: SampleSpec, date: int, shape: tuple[int, int]) -> tuple[F32, F32]:
    """Relative aerosol amount per 10 m pixel (mean ~1) and the smooth part an L2A correction
    finds. The field is drawn on a fixed physical domain (200 m cells, at least 25.6 km wide,
    Kolmogorov-like spectrum), so a small grid sees gradients and a large one more variation."""
    if spec.haze <= 0.0:
        ones = np.ones(shape, np.float32)
        return ones, ones
    from scipy import ndimage

    cell = 200.0
    n = max(128, math.ceil(10.0 * max(shape) / cell) + 8)
    rng = _rng(spec.seed, 7, date)
    field = np.clip(1.0 + spec.haze * _fractal_noise(rng, (n, n), 8.0 / 3.0), 0.2, None)
    found = ndimage.gaussian_filter(field, sigma=_AOT_SMOOTHING / cell, mode="nearest")
    # the grid's 10 m pixel centres in domain cells (the grid sits in the domain's centre)
    off = n / 2.0 - 10.0 * np.array(shape, dtype=np.float64) / (2.0 * cell)
    rows = off[0] + (np.arange(shape[0]) + 0.5) * 10.0 / cell - 0.5
    cols = off[1] + (np.arange(shape[1]) + 0.5) * 10.0 / cell - 0.5
    coords = np.meshgrid(rows, cols, indexing="ij")
    out = [ndimage.map_coordinates(f, coords, order=1, mode="nearest") for f in (field, found)]
    return out[0].astype(np.float32), out[1].astype(np.float32)


@dataclass(frozen=True)
class _Air:
    """How much of the valley floor's atmosphere lies above each pixel (1 at the floor)."""

    scattering: F32
    """Molecules and aerosol (scale heights 8 km and 2 km, half each)."""
    aerosol: F32
    """Boundary-layer aerosol."""
    vapour_root: F32
    """Square root of the water-vapour column."""

    @classmethod
    def above(cls, dem: F32) -> _Air:
        dz = dem.astype(np.float64) - VALLEY_ELEVATION
        scattering = 0.5 * np.exp(-dz / _RAYLEIGH_SCALE) + 0.5 * np.exp(-dz / _AEROSOL_SCALE)
        return cls(
            scattering=scattering.astype(np.float32),
            aerosol=np.exp(-dz / _AEROSOL_SCALE).astype(np.float32),
            vapour_root=np.sqrt(np.exp(-dz / _WATER_VAPOUR_SCALE)).astype(np.float32),
        )


def _atmosphere(
    bi: int, haze: F32, path: F32, trans: F32, aerosol: float, air: _Air
) -> tuple[F32, F32]:
    """Path reflectance and two-way transmittance of band ``bi`` per pixel, for the date's
    valley-floor ``path`` and ``trans``, its ``aerosol`` factor and the relative aerosol ``haze``.
    The water-vapour bands follow the strong-line law ``T = T0 ** sqrt(W / W0)``."""
    extra = np.float32(AEROSOL_PATH[bi] * aerosol) * (haze - np.float32(1.0)) * air.aerosol
    p = path[bi] * air.scattering + extra
    if bi in (_BI["B09"], _B10):
        t = trans[bi] ** air.vapour_root
    else:
        t = (1.0 - (1.0 - trans[bi]) * air.scattering) * (1.0 - 2.0 * extra)
    return p.astype(np.float32), t.astype(np.float32)


def _view_angles(index: int) -> tuple[float, float]:
    """(view zenith, view azimuth) in degrees of date ``index``, as its items state them."""
    return 6.1 + 0.4 * (index % 3), 104.3 + 2.0 * (index % 3)


def _parallax_px(
    height_m: float, view_zenith: float, view_azimuth: float, band: int
) -> tuple[float, float]:
    """Apparent displacement (rows, columns) of an object ``height_m`` above ground in ``band``."""
    tv, va = math.tan(math.radians(view_zenith)), math.radians(view_azimuth)
    ta, ha = math.tan(math.radians(float(_ALONG_TRACK_DEG[band]))), math.radians(_TRACK_HEADING)
    east = height_m * (tv * math.sin(va) + ta * math.sin(ha)) / 10.0
    north = height_m * (tv * math.cos(va) + ta * math.cos(ha)) / 10.0
    return -north, east


def _apparent(cl: _Clouds, pad: int, view_zenith: float, view_azimuth: float, band: int) -> _Clouds:
    """The clouds as ``band`` sees them: each pixel moved by its height's parallax (the highest
    opacity wins where two land on one pixel); the shadow stays where the sun cast it. Cirrus,
    which casts no shadow here, moves by the band's along-track part only."""
    hh, ww = cl.alpha.shape
    alpha = np.zeros_like(cl.alpha)
    rho = np.zeros_like(cl.rho)
    height = np.zeros_like(cl.height)
    rr, cc = np.nonzero(cl.alpha > 0)
    if rr.size:
        unit_r, unit_c = _parallax_px(1.0, view_zenith, view_azimuth, band)
        hgt = cl.height[rr, cc].astype(np.float64)
        tr = rr + np.rint(hgt * unit_r).astype(np.intp)
        tc = cc + np.rint(hgt * unit_c).astype(np.intp)
        ok = (tr >= 0) & (tr < hh) & (tc >= 0) & (tc < ww)
        rr, cc, tr, tc = rr[ok], cc[ok], tr[ok], tc[ok]
        order = np.argsort(cl.alpha[rr, cc], kind="stable")[::-1]  # highest opacity first
        flat = (tr * ww + tc)[order]
        _, first = np.unique(flat, return_index=True)
        keep = order[first]
        alpha[tr[keep], tc[keep]] = cl.alpha[rr[keep], cc[keep]]
        rho[tr[keep], tc[keep]] = cl.rho[rr[keep], cc[keep]]
        height[tr[keep], tc[keep]] = cl.height[rr[keep], cc[keep]]
    ta = math.tan(math.radians(float(_ALONG_TRACK_DEG[band])))
    ha = math.radians(_TRACK_HEADING)
    d = _CIRRUS_HEIGHT * ta / 10.0
    cirrus = _shift(cl.cirrus, round(-d * math.cos(ha)), round(d * math.sin(ha)))
    crop = (slice(pad, hh - pad), slice(pad, ww - pad))
    return _Clouds(
        alpha=np.ascontiguousarray(alpha[crop]),
        rho=np.ascontiguousarray(rho[crop]),
        height=np.ascontiguousarray(height[crop]),
        shadow=np.ascontiguousarray(cl.shadow[crop]),
        cirrus=np.ascontiguousarray(cirrus[crop]),
    )


def _stripes(spec: SampleSpec, date: int) -> list[F32]:
    """Per band, the relative gain of every native pixel: one gain per detector (a detector
    boundary crosses the grid along track) times small column-to-column residuals."""
    ps = math.radians(_TRACK_HEADING)
    ue, un = math.cos(ps), -math.sin(ps)  # across-track unit vector (east, north)
    corners = [
        x * ue + y * un for x in (0.0, 10.0 * spec.width) for y in (0.0, -10.0 * spec.height)
    ]
    u_min, u_max = min(corners), max(corners)
    u_boundary = u_min + _rng(spec.seed, 8).uniform(0.3, 0.7) * (u_max - u_min)
    rng = _rng(spec.seed, 8, date + 1)
    out = []
    for b in BANDS:
        shape = _grid_shape(spec, b.res)
        gains = 1.0 + np.clip(rng.normal(0.0, 0.004, 2), -0.01, 0.01)
        x = (np.arange(shape[1], dtype=np.float64) + 0.5) * b.res
        y = -(np.arange(shape[0], dtype=np.float64) + 0.5) * b.res
        u = x[None, :] * ue + y[:, None] * un
        column = np.floor((u - u_min) / b.res).astype(np.intp)
        residual = rng.normal(0.0, 0.0007, int(column.max()) + 1)
        gain = np.where(u > u_boundary, gains[1], gains[0]) * (1.0 + residual[column])
        out.append(gain.astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------
# SCL: derived from the truth with Sen2Cor's documented kinds of error
# --------------------------------------------------------------------------------------------


def _scl_from_truth(
    spec: SampleSpec,
    date: int,
    alpha: F32,
    cirrus: F32,
    shadow: BoolA,
    lc: U8,
    surf: F32,
    direct: F32,
    nodata: BoolA,
) -> U8:
    """Scene classification at 20 m from the 10 m truth (padded grid), see docs/sample.md."""
    s20 = nodata.shape
    rng = _rng(spec.seed, 9, date)
    u_cloud, u_cirrus, u_shadow, u_unclassified, u_bright = (
        _uniform_field(rng, s20, 3.0) for _ in range(5)
    )
    a20 = _block_mean(alpha, 2, s20)
    c20 = _block_mean(cirrus, 2, s20)
    sh20 = _block_mean(shadow.astype(np.float32), 2, s20)
    dark20 = _block_mean((direct < 0.2).astype(np.float32), 2, s20) > 0.5
    nir, red = _block_mean(surf[_BI["B08"]], 2, s20), _block_mean(surf[_BI["B04"]], 2, s20)
    ndvi = (nir - red) / (nir + red + np.float32(1e-6))
    lc20 = lc[::2, ::2][: s20[0], : s20[1]]
    snow = lc20 == 16
    scl = np.full(s20, 5, np.uint8)
    scl[ndvi >= 0.4] = 4
    scl[dark20] = 2
    scl[np.isin(lc20, (1, 2))] = 6
    scl[snow] = 11
    clear = (a20 == 0) & (c20 == 0)
    for code, rate in _SCL_COMMISSION.items():
        sel = clear & (lc20 == code)
        if sel.any():
            scl[sel & (u_bright <= np.quantile(u_bright[sel], rate))] = 8
    scl[(sh20 >= 0.5) & (u_shadow < 0.5)] = 3
    detect = np.float32(0.15) + np.float32(0.30) * u_cloud
    cloud = a20 > detect
    scl[(a20 > 0.05) & ~cloud & (u_unclassified < 0.5)] = 7
    scl[cloud] = 8
    scl[a20 >= 0.6] = 9
    scl[cloud & snow & (a20 < 0.6)] = 11
    scl[(c20 > np.float32(0.006) + np.float32(0.014) * u_cirrus) & ~cloud] = 10
    scl[nodata] = 0
    return scl


def _truth(clouds: _Clouds, nodata: BoolA) -> U8:
    t = np.zeros(clouds.alpha.shape, np.uint8)
    t[clouds.shadow > 0] = 4
    t[clouds.cirrus > 0] = 3
    t[clouds.alpha > 0] = 2
    t[clouds.alpha >= 0.6] = 1
    t[nodata] = 255
    return t


# --------------------------------------------------------------------------------------------
# Geometry: grids, wedge, sun
# --------------------------------------------------------------------------------------------


def _grid_shape(spec: SampleSpec, res: int) -> tuple[int, int]:
    f = res // 10
    return -(-spec.height // f), -(-spec.width // f)


def _transform(spec: SampleSpec, res: int) -> Affine:
    return Affine(float(res), 0.0, spec.origin[0], 0.0, -float(res), spec.origin[1])


def _wedge_vertices(spec: SampleSpec) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two points (x, y in 10 m pixel units) on the swath edge; the upper-right side is nodata."""
    return (0.55 * spec.width, 0.0), (float(spec.width), 0.6 * spec.height)


def _wedge_mask(spec: SampleSpec, res: int, active: bool) -> BoolA:
    shape = _grid_shape(spec, res)
    if not active:
        return np.zeros(shape, bool)
    f = res / 10.0
    (x1, y1), (x2, y2) = _wedge_vertices(spec)
    yy = (np.arange(shape[0], dtype=np.float64)[:, None] + 0.5) * f
    xx = (np.arange(shape[1], dtype=np.float64)[None, :] + 0.5) * f
    cross = (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1)
    return np.asarray(cross < 0)


def _solar_angles(lon: float, lat: float, when: dt.datetime) -> tuple[float, float]:
    """(zenith, azimuth from north clockwise) in degrees, NOAA approximation (~0.1 deg)."""
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60.0 + when.second / 3600.0
    g = 2.0 * math.pi / 365.0 * (doy - 1 + (hour - 12.0) / 24.0)
    eqt = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )  # fmt: skip
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )  # fmt: skip
    tst = hour * 60.0 + eqt + 4.0 * lon
    ha = math.radians(tst / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_z = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.degrees(math.acos(max(-1.0, min(1.0, cos_z))))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return zen, (az + 180.0) % 360.0


# --------------------------------------------------------------------------------------------
# SCL agreement with the truth
# --------------------------------------------------------------------------------------------


def _scl_stats(scl: U8, truth10: U8) -> dict[str, float | None]:
    t = truth10[::2, ::2][: scl.shape[0], : scl.shape[1]]
    s = scl[: t.shape[0], : t.shape[1]]
    valid = t != 255
    scl_cloud = np.isin(s, (8, 9, 10))

    def rate(num: BoolA, den: BoolA) -> float | None:
        n = int(den.sum())
        return None if n == 0 else round(float((num & den).sum()) / n, 4)

    tc = np.isin(t, (1, 2, 3)) & valid
    clear = (t == 0) & valid
    return {
        "cloud_recall": rate(scl_cloud, tc),
        "thick_cloud_recall": rate(np.isin(s, (8, 9)), t == 1),
        "thin_cloud_recall": rate(scl_cloud, t == 2),
        "cirrus_recall": rate(scl_cloud, t == 3),
        "cloud_false_alarm": rate(scl_cloud, clear | ((t == 4) & valid)),
        "shadow_recall": rate(s == 3, (t == 4) & valid),
        "shadow_false_alarm": rate(s == 3, clear),
        "unclassified_rate": rate(s == 7, valid),
    }


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _write_cog(
    path: Path,
    data: NDArray[Any],
    spec: SampleSpec,
    res: int,
    *,
    nodata: float | None,
    resampling: str = "average",
    descriptions: tuple[str, ...] | None = None,
) -> None:
    arr = data if data.ndim == 3 else data[None]
    predictor = "FLOATING_POINT" if arr.dtype.kind == "f" else "STANDARD"
    if arr.dtype == np.uint8:
        predictor = "NO"
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "COG",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": f"EPSG:{spec.epsg}",
        "transform": _transform(spec, res),
        "compress": "deflate",
        "predictor": predictor,
        "blocksize": 256,
        "overview_resampling": resampling,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)


def _encode(refl: F32, dn_offset: int, nodata: BoolA) -> U16:
    dn: U16 = np.clip(np.rint(refl * 10000.0) + dn_offset, 1, 32767).astype(np.uint16)
    dn[nodata] = 0
    return dn


def _lonlat(spec: SampleSpec, pts: list[tuple[float, float]]) -> list[list[float]]:
    """Pixel (x, y) positions on the 10 m grid to [lon, lat]."""
    tr = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    out = []
    for px, py in pts:
        lon, lat = tr.transform(spec.origin[0] + 10.0 * px, spec.origin[1] - 10.0 * py)
        out.append([round(lon, 9), round(lat, 9)])
    return out


def _bbox(spec: SampleSpec) -> tuple[float, float, float, float]:
    tr = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    x0, y1 = spec.origin
    x1, y0 = x0 + 10.0 * spec.width, y1 - 10.0 * spec.height
    b = tr.transform_bounds(x0, y0, x1, y1, densify_pts=21)
    return (round(b[0], 7), round(b[1], 7), round(b[2], 7), round(b[3], 7))


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}Z"


@dataclass(frozen=True)
class _DateMeta:
    index: int
    sensing: dt.datetime
    platform: str
    baseline: str
    l2a_dn_offset: int
    l2a_raster_offset: float
    boa_applied: bool
    l1c_dn_offset: int
    l1c_raster_offset: float
    sun_zenith: float
    sun_azimuth: float

    @property
    def short(self) -> str:
        return "S2A" if self.platform == "sentinel-2a" else "S2B"


def _date_meta(spec: SampleSpec, i: int, lon: float, lat: float) -> _DateMeta:
    day0 = dt.date.fromisoformat(spec.start)
    d = day0 + dt.timedelta(days=5 * i)
    sensing = dt.datetime(d.year, d.month, d.day, 10, 5, 59, 24000 + 1000 * (i % 7), dt.UTC)
    baseline, dn_off, r_off, applied = _VARIANTS[i % len(_VARIANTS)]
    new = float(baseline) >= 4.0
    zen, az = _solar_angles(lon, lat, sensing)
    return _DateMeta(
        index=i,
        sensing=sensing,
        platform="sentinel-2b" if i % 2 == 0 else "sentinel-2a",
        baseline=baseline,
        l2a_dn_offset=dn_off,
        l2a_raster_offset=r_off,
        boa_applied=applied,
        l1c_dn_offset=1000 if new else 0,
        l1c_raster_offset=-0.1 if new else 0.0,
        sun_zenith=zen,
        sun_azimuth=az,
    )


def _item(
    spec: SampleSpec,
    meta: _DateMeta,
    level: str,
    root: Path,
    scl: U8 | None,
    nodata_active: bool,
    l2a_cover: float,
    l1c_id: str,
) -> dict[str, Any]:
    """Earth Search v1 shaped item for ``level`` ("L2A" or "L1C")."""
    zone, band, square = re.fullmatch(r"(\d+)(\w)(\w\w)", spec.tile).groups()  # type: ignore[union-attr]
    date_s = meta.sensing.strftime("%Y%m%d")
    item_id = f"{meta.short}_{spec.tile}_{date_s}_0_{level}"
    coll = L2A_COLLECTION if level == "L2A" else L1C_COLLECTION
    sub = level.lower()
    gen = meta.sensing + dt.timedelta(hours=2, minutes=58, seconds=11 + meta.index)
    created = gen + dt.timedelta(minutes=23, seconds=7)
    bl = meta.baseline.replace(".", "")
    stamp = meta.sensing.strftime("%Y%m%dT%H%M%S")
    launch = dt.date(2015, 6, 23) if meta.short == "S2A" else dt.date(2017, 3, 7)
    orbit = 1 + int((meta.sensing.date() - launch).days * 14.3)
    gen_s = gen.strftime("%Y%m%dT%H%M%S")
    ptype = "S2MSI2A" if level == "L2A" else "S2MSI1C"
    if spec.nodata_date is None or not nodata_active:
        footprint = [(0.0, 0.0), (spec.width, 0.0), (spec.width, spec.height), (0.0, spec.height)]
    else:
        (x1, y1), (x2, y2) = _wedge_vertices(spec)
        footprint = [(0.0, 0.0), (x1, y1), (x2, y2), (spec.width, spec.height), (0.0, spec.height)]
    ring = _lonlat(spec, [*footprint[::-1], footprint[-1]])  # counter-clockwise, closed
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    centre = _lonlat(spec, [(spec.width / 2, spec.height / 2)])[0]
    props: dict[str, Any] = {
        "created": _iso(created)[:-4] + "Z",
        "platform": meta.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": round(l2a_cover, 6),
        "proj:epsg": spec.epsg,
        "proj:centroid": {"lat": round(centre[1], 5), "lon": round(centre[0], 5)},
        "mgrs:utm_zone": int(zone),
        "mgrs:latitude_band": band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{spec.tile}",
        "view:azimuth": _view_angles(meta.index)[1],
        "view:incidence_angle": _view_angles(meta.index)[0],
        "view:sun_azimuth": round(meta.sun_azimuth, 6),
        "view:sun_elevation": round(90.0 - meta.sun_zenith, 6),
        "s2:mean_solar_zenith": round(meta.sun_zenith, 6),
        "s2:mean_solar_azimuth": round(meta.sun_azimuth, 6),
        "s2:tile_id": f"{meta.short}_OPER_MSI_{level}_TL_2{meta.short[-1]}PS_{gen_s}_A{orbit:06d}"
        f"_T{spec.tile}_N{meta.baseline}",
        "s2:degraded_msi_data_percentage": 0,
        "s2:product_type": ptype,
        "s2:processing_baseline": meta.baseline,
        "s2:product_uri": f"{meta.short}_MSI{level}_{stamp}_N{bl}_R022_T{spec.tile}_{gen_s}.SAFE",
        "s2:generation_time": _iso(gen),
        "s2:datatake_id": f"G{meta.short}_{stamp}_{orbit:06d}_N{meta.baseline}",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": f"{meta.short}_OPER_MSI_{level}_DS_2{meta.short[-1]}PS_{gen_s}"
        f"_S{stamp}_N{meta.baseline}",
        "s2:reflectance_conversion_factor": round(
            1.0 / (1.0 - 0.01673 * math.cos(0.0172 * (meta.sensing.timetuple().tm_yday - 4))) ** 2,
            12,
        ),
        "datetime": _iso(meta.sensing),
        "processing:software": {"sentinel2-to-stac": "0.1.1"},
        "updated": _iso(created)[:-4] + "Z",
        "description": _SYNTHETIC_NOTE.format(level=level),
    }
    if scl is not None:
        valid = scl != 0
        n_valid = max(int(valid.sum()), 1)

        def pct(*classes: int) -> float:
            return round(100.0 * float(np.isin(scl, classes).sum()) / n_valid, 6)

        props.update(
            {
                "s2:nodata_pixel_percentage": round(100.0 * float((~valid).mean()), 6),
                "s2:saturated_defective_pixel_percentage": 0,
                "s2:dark_features_percentage": pct(2),
                "s2:cloud_shadow_percentage": pct(3),
                "s2:vegetation_percentage": pct(4),
                "s2:not_vegetated_percentage": pct(5),
                "s2:water_percentage": pct(6),
                "s2:unclassified_percentage": pct(7),
                "s2:medium_proba_clouds_percentage": pct(8),
                "s2:high_proba_clouds_percentage": pct(9),
                "s2:thin_cirrus_percentage": pct(10),
                "s2:snow_ice_percentage": pct(11),
                "earthsearch:boa_offset_applied": meta.boa_applied,
            }
        )
    raster_offset = meta.l2a_raster_offset if level == "L2A" else meta.l1c_raster_offset
    assets: dict[str, Any] = {}
    for b in BANDS:
        if b.name == "B10" and level == "L2A":
            continue
        assets[b.key] = {
            "href": str((root / sub / item_id / f"{b.key}.tif").resolve()),
            "type": _COG_TYPE,
            "title": b.title,
            "eo:bands": [
                {
                    "name": b.name,
                    "common_name": b.common_name,
                    "center_wavelength": b.center,
                    "full_width_half_max": b.fwhm,
                }
            ],
            "gsd": b.res,
            "proj:shape": list(_grid_shape(spec, b.res)),
            "proj:transform": list(_transform(spec, b.res))[:6],
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": b.res,
                    "scale": 0.0001,
                    "offset": raster_offset,
                }
            ],
            "roles": ["data", "reflectance"],
        }
    if level == "L2A":
        assets["scl"] = {
            "href": str((root / sub / item_id / "scl.tif").resolve()),
            "type": _COG_TYPE,
            "title": "Scene classification map (SCL)",
            "gsd": 20,
            "proj:shape": list(_grid_shape(spec, 20)),
            "proj:transform": list(_transform(spec, 20))[:6],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            "roles": ["data"],
        }
    coll_path = (root / "collections" / f"{coll}.json").resolve()
    self_path = (root / sub / f"{item_id}.json").resolve()
    links: list[dict[str, str]] = [
        {"rel": "self", "type": "application/geo+json", "href": str(self_path)},
        {"rel": "parent", "type": "application/json", "href": str(coll_path)},
        {"rel": "collection", "type": "application/json", "href": str(coll_path)},
        {"rel": "license", "href": _LICENSE_HREF},
    ]
    if level == "L2A":
        links.append(
            {
                "rel": "derived_from",
                "type": "application/geo+json",
                "href": str((root / "l1c" / f"{l1c_id}.json").resolve()),
            }
        )
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(_ES_EXTENSIONS),
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": props,
        "links": links,
        "assets": assets,
        "collection": coll,
    }


def _collection(
    spec: SampleSpec,
    root: Path,
    level: str,
    bbox: tuple[float, float, float, float],
    interval: tuple[str, str],
) -> dict[str, Any]:
    coll = L2A_COLLECTION if level == "L2A" else L1C_COLLECTION
    path = (root / "collections" / f"{coll}.json").resolve()
    items_path = (root / f"{level.lower()}_items.json").resolve()
    bands = [b for b in BANDS if not (level == "L2A" and b.name == "B10")]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": coll,
        "title": f"Sentinel-2 Level-{level[1:]} (synthetic sample)",
        "description": (
            f"Synthetic Sentinel-2 {level} scenes shaped like Element84 Earth Search v1 "
            f"'{coll}', generated by stac2cube.testing.sample with seed {spec.seed}. "
            "Not Copernicus data."
        ),
        "keywords": ["sentinel", "earth observation", "esa", "synthetic"],
        "license": _LICENSE,
        "providers": [
            {
                "name": "stac2cube",
                "roles": ["producer", "processor", "host"],
                "url": "https://github.com/stac2cube/stac2cube",
            }
        ],
        "extent": {
            "spatial": {"bbox": [list(bbox)]},
            "temporal": {"interval": [list(interval)]},
        },
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10, 20, 60],
            "eo:bands": [
                {
                    "name": b.name,
                    "common_name": b.common_name,
                    "center_wavelength": b.center,
                    "full_width_half_max": b.fwhm,
                }
                for b in bands
            ],
        },
        "links": [
            {"rel": "self", "type": "application/json", "href": str(path)},
            {"rel": "root", "type": "application/json", "href": str(path)},
            {"rel": "items", "type": "application/geo+json", "href": str(items_path)},
            {"rel": "license", "href": _LICENSE_HREF},
        ],
    }


def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def generate_sample(
    root: str | Path,
    spec: SampleSpec = SampleSpec(),
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Sample:
    """Write a synthetic Sentinel-2 sample under ``root`` and return its description.

    ``root`` is created if needed. An existing sample there (a ``sample.json``) is only replaced
    with ``overwrite=True``. ``progress(done, total)`` is called after each date.
    """
    t_start = time.perf_counter()
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if manifest.exists() and not overwrite:
        raise CatalogError(
            f"{manifest} already exists; pass overwrite=True or choose an empty directory"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create sample directory {root}: {exc}") from exc
    root = root.resolve()

    hp, wp = 6 * -(-spec.height // 6), 6 * -(-spec.width // 6)
    land, dem = _terrain(spec, _landscape(spec, (hp, wp)))
    level = np.isin(land.lc, (1, 2))  # water surfaces are level
    _write_cog(
        root / "landcover.tif",
        land.lc[: spec.height, : spec.width],
        spec,
        10,
        nodata=0,
        resampling="nearest",
    )
    _write_cog(root / "dem.tif", dem[: spec.height, : spec.width], spec, 10, nodata=None)
    air = _Air.above(dem)
    bbox = _bbox(spec)
    lon_c, lat_c = _lonlat(spec, [(spec.width / 2, spec.height / 2)])[0]
    wedge_date = None
    if spec.nodata_date is not None:
        wedge_date = spec.nodata_date % spec.n_dates

    scenes: list[SampleScene] = []
    l2a_items: list[dict[str, Any]] = []
    l1c_items: list[dict[str, Any]] = []
    scene_records: list[dict[str, Any]] = []
    for i in range(spec.n_dates):
        t0 = time.perf_counter()
        meta = _date_meta(spec, i, lon_c, lat_c)
        active = wedge_date == i
        intrinsic = _surface(land, 5.0 * i, _rng(spec.seed, 3, i))
        direct, sky = _illumination(dem, level, meta.sun_zenith, meta.sun_azimuth)
        k_diffuse = _DIFFUSE[:, None, None]
        surf = np.clip(intrinsic * ((1 - k_diffuse) * direct + k_diffuse * sky), 0.0, 1.0)
        view_zenith, view_azimuth = _view_angles(i)
        pad = 0
        if spec.parallax:
            reach = 4000.0 * (
                math.tan(math.radians(view_zenith))
                + math.tan(math.radians(float(np.abs(_ALONG_TRACK_DEG).max())))
            )
            pad = math.ceil(reach / 10.0) + 2
        true_clouds = _clouds(
            spec, i, (hp, wp), (spec.height, spec.width), meta.sun_zenith, meta.sun_azimuth, pad
        )
        if spec.parallax:
            looks = [
                _apparent(true_clouds, pad, view_zenith, view_azimuth, bi)
                for bi in range(len(BANDS))
            ]
        else:
            looks = [true_clouds] * len(BANDS)
        # a pixel is clear only where no band sees any cloud
        seen = _Clouds(
            alpha=np.max([c.alpha for c in looks], axis=0),
            rho=looks[0].rho,
            height=looks[0].height,
            shadow=looks[0].shadow,
            cirrus=np.max([c.cirrus for c in looks], axis=0),
        )
        nod10 = _wedge_mask(spec, 10, active)
        truth = _truth(seen, np.zeros((hp, wp), bool))[: spec.height, : spec.width]
        truth[nod10] = 255

        arng = _rng(spec.seed, 4, i)
        aerosol = arng.uniform(0.7, 1.4)
        vapour = arng.uniform(0.85, 1.15)
        path = PATH_REFLECTANCE * np.float32(aerosol)
        trans = (1.0 - (1.0 - TRANSMITTANCE) * np.float32(aerosol)).astype(np.float32)
        trans[_BI["B09"]] = np.float32(TRANSMITTANCE[_BI["B09"]] / vapour)
        trans[_B10] = np.float32(TRANSMITTANCE[_B10] / vapour)
        haze, haze_found = _haze(spec, i, (hp, wp))
        gains = _stripes(spec, i) if spec.striping else None

        nrng = _rng(spec.seed, 5, i)
        l2a_id = f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_L2A"
        l1c_id = f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_L1C"
        for bi, b in enumerate(BANDS):
            cl = looks[bi]
            k = _DIFFUSE[bi]
            lit = intrinsic[bi] * ((1 - k) * direct * (1.0 - cl.shadow) + k * sky)
            p_true, t_true = _atmosphere(bi, haze, path, trans, aerosol, air)
            if bi == _B10:
                cloud_b10 = cl.rho * (0.008 + 0.012 * cl.height / 1000.0)
                toa = p_true + t_true * (1.0 - cl.alpha) * lit + cl.alpha * cloud_b10 + cl.cirrus
            else:
                boa = (
                    (1.0 - cl.alpha) * lit
                    + cl.alpha * cl.rho * _CLOUD_SPECTRUM[bi]
                    + cl.cirrus * _CIRRUS_SPECTRUM[bi]
                )
                toa = p_true + t_true * boa
            shape = _grid_shape(spec, b.res)
            f = b.res // 10
            native = _block_mean(toa.astype(np.float32), f, shape)
            if gains is not None:
                native *= gains[bi]
            native += nrng.standard_normal(shape, dtype=np.float32) * NOISE_SIGMA[bi]
            nod = _wedge_mask(spec, b.res, active)
            _write_cog(
                root / "l1c" / l1c_id / f"{b.key}.tif",
                _encode(native, meta.l1c_dn_offset, nod),
                spec,
                b.res,
                nodata=0,
            )
            if bi != _B10:
                # the L2A correction knows the DEM but only the smooth part of the haze
                p_found, t_found = _atmosphere(bi, haze_found, path, trans, aerosol, air)
                p_n, t_n = _block_mean(p_found, f, shape), _block_mean(t_found, f, shape)
                boa_native = ((native - p_n) / t_n).astype(np.float32)
                _write_cog(
                    root / "l2a" / l2a_id / f"{b.key}.tif",
                    _encode(boa_native, meta.l2a_dn_offset, nod),
                    spec,
                    b.res,
                    nodata=0,
                )

        nod20 = _wedge_mask(spec, 20, active)
        visible_shadow = (seen.shadow > 0) & (seen.alpha == 0) & (seen.cirrus == 0)
        scl = _scl_from_truth(
            spec, i, seen.alpha, seen.cirrus, visible_shadow, land.lc, surf, direct, nod20
        )
        _write_cog(root / "l2a" / l2a_id / "scl.tif", scl, spec, 20, nodata=0, resampling="nearest")
        n_valid20 = max(int((scl != 0).sum()), 1)
        cover = 100.0 * float(np.isin(scl, (8, 9, 10)).sum()) / n_valid20

        truth_path = root / "truth" / f"{l2a_id}_truth.tif"
        surface_path = root / "surface" / f"{l2a_id}_surface.tif"
        _write_cog(truth_path, truth, spec, 10, nodata=255, resampling="nearest")
        _write_cog(
            surface_path,
            surf[:, : spec.height, : spec.width],
            spec,
            10,
            nodata=None,
            descriptions=BAND_NAMES,
        )

        l1c = _item(spec, meta, "L1C", root, None, active, cover, l1c_id)
        l2a = _item(spec, meta, "L2A", root, scl, active, cover, l1c_id)
        _dump(root / "l2a" / f"{l2a_id}.json", l2a)
        _dump(root / "l1c" / f"{l1c_id}.json", l1c)
        valid = truth != 255
        n_valid = max(int(valid.sum()), 1)
        cloud_fraction = float(np.isin(truth, (1, 2, 3)).sum()) / n_valid
        shadow_fraction = float((truth == 4).sum()) / n_valid
        stats = _scl_stats(scl, truth)
        scene = SampleScene(
            l2a_item=l2a,
            l1c_item=l1c,
            truth_path=truth_path,
            surface_path=surface_path,
            cloud_fraction=cloud_fraction,
            l2a_dn_offset=meta.l2a_dn_offset,
            l1c_dn_offset=meta.l1c_dn_offset,
            shadow_fraction=shadow_fraction,
            nodata_fraction=float((~valid).mean()),
            scl_stats=stats,
        )
        scenes.append(scene)
        l2a_items.append(l2a)
        l1c_items.append(l1c)
        scene_records.append(
            {
                "l2a_item": f"l2a/{l2a_id}.json",
                "l1c_item": f"l1c/{l1c_id}.json",
                "truth": truth_path.relative_to(root).as_posix(),
                "surface": surface_path.relative_to(root).as_posix(),
                "cloud_fraction": cloud_fraction,
                "shadow_fraction": shadow_fraction,
                "nodata_fraction": scene.nodata_fraction,
                "l2a_dn_offset": meta.l2a_dn_offset,
                "l1c_dn_offset": meta.l1c_dn_offset,
                "processing_baseline": meta.baseline,
                "boa_offset_applied": meta.boa_applied,
                "scl_stats": stats,
            }
        )
        logger.info(
            "sample date %d/%d %s: cloud %.1f %%, shadow %.1f %%, eo:cloud_cover %.1f %% (%.2f s)",
            i + 1,
            spec.n_dates,
            l2a_id,
            100 * cloud_fraction,
            100 * shadow_fraction,
            cover,
            time.perf_counter() - t0,
        )
        if progress is not None:
            progress(i + 1, spec.n_dates)

    interval = (l2a_items[0]["properties"]["datetime"], l2a_items[-1]["properties"]["datetime"])
    l2a_coll = root / "collections" / f"{L2A_COLLECTION}.json"
    l1c_coll = root / "collections" / f"{L1C_COLLECTION}.json"
    _dump(l2a_coll, _collection(spec, root, "L2A", bbox, interval))
    _dump(l1c_coll, _collection(spec, root, "L1C", bbox, interval))
    l2a_fc, l1c_fc = root / "l2a_items.json", root / "l1c_items.json"
    _dump(l2a_fc, {"type": "FeatureCollection", "features": l2a_items})
    _dump(l1c_fc, {"type": "FeatureCollection", "features": l1c_items})
    spec_json = asdict(spec)
    _dump(
        manifest,
        {
            "format": MANIFEST_FORMAT,
            "spec": spec_json,
            "bbox": list(bbox),
            "l2a_collection": l2a_coll.relative_to(root).as_posix(),
            "l1c_collection": l1c_coll.relative_to(root).as_posix(),
            "l2a_items": l2a_fc.name,
            "l1c_items": l1c_fc.name,
            "landcover": "landcover.tif",
            "landcover_classes": {str(k): v for k, v in LANDCOVER_CLASSES.items()},
            "surface_types": {k: list(v) for k, v in SURFACE_TYPES.items()},
            "dem": "dem.tif",
            "truth_classes": {str(k): v for k, v in TRUTH_CLASSES.items()},
            "bands": list(BAND_NAMES),
            "scenes": scene_records,
        },
    )
    logger.info("sample written to %s in %.2f s", root, time.perf_counter() - t_start)
    return Sample(
        root=root,
        spec=spec,
        scenes=tuple(scenes),
        l2a_collection_path=l2a_coll,
        l1c_collection_path=l1c_coll,
        l2a_items_path=l2a_fc,
        l1c_items_path=l1c_fc,
        bbox=bbox,
        landcover_path=root / "landcover.tif",
        dem_path=root / "dem.tif",
    )


def load_sample(root: str | Path) -> Sample:
    """Re-open a sample written by :func:`generate_sample` from its ``sample.json``."""
    root = Path(root).resolve()
    manifest = root / MANIFEST_NAME
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(
            f"cannot read sample manifest {manifest}: {exc}; generate the sample first"
        ) from exc
    if doc.get("format") != MANIFEST_FORMAT:
        raise CatalogError(f"{manifest} is not a {MANIFEST_FORMAT} manifest; regenerate the sample")
    raw = dict(doc["spec"])
    raw["origin"] = tuple(raw["origin"])
    raw["cloud_cover"] = tuple(raw["cloud_cover"])
    spec = SampleSpec(**raw)
    scenes = []
    for rec in doc["scenes"]:
        try:
            l2a = json.loads((root / rec["l2a_item"]).read_text(encoding="utf-8"))
            l1c = json.loads((root / rec["l1c_item"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read sample item under {root}: {exc}") from exc
        scenes.append(
            SampleScene(
                l2a_item=l2a,
                l1c_item=l1c,
                truth_path=root / rec["truth"],
                surface_path=root / rec["surface"],
                cloud_fraction=float(rec["cloud_fraction"]),
                l2a_dn_offset=int(rec["l2a_dn_offset"]),
                l1c_dn_offset=int(rec["l1c_dn_offset"]),
                shadow_fraction=float(rec["shadow_fraction"]),
                nodata_fraction=float(rec["nodata_fraction"]),
                scl_stats=dict(rec["scl_stats"]),
            )
        )
    b = doc["bbox"]
    return Sample(
        root=root,
        spec=spec,
        scenes=tuple(scenes),
        l2a_collection_path=root / doc["l2a_collection"],
        l1c_collection_path=root / doc["l1c_collection"],
        l2a_items_path=root / doc["l2a_items"],
        l1c_items_path=root / doc["l1c_items"],
        bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        landcover_path=root / doc["landcover"],
        dem_path=root / doc["dem"] if "dem" in doc else None,
    )


__all__ = [
    "AEROSOL_PATH",
    "BANDS",
    "BAND_NAMES",
    "ENDMEMBERS",
    "LANDCOVER_CLASSES",
    "NOISE_SIGMA",
    "PATH_REFLECTANCE",
    "SURFACE_TYPES",
    "TRANSMITTANCE",
    "TRUTH_CLASSES",
    "Sample",
    "SampleScene",
    "SampleSpec",
    "generate_sample",
    "load_sample",
]
