"""A deterministic, realistic synthetic Sentinel-2 sample: STAC items, COGs and known truth.

:func:`generate_sample` writes a small archive of Sentinel-2 L2A scenes and their L1C twins, shaped
like Element84 Earth Search v1 (``sentinel-2-l2a`` / ``sentinel-2-l1c``), together with the truth
that produced them: the noise-free, cloud-free surface reflectance of every date, a per-pixel cloud
and shadow truth map, and a static land-cover map. ``stac2cube demo``, the tests and the accuracy
benchmarks (cloud masking, co-registration, super-resolution) use it. Nothing in it is tuned to make
any detector look good: the scene is built from a physical-ish forward model (landscape, clouds,
shadows, atmosphere, sensor) and the provider's products (SCL, ``eo:cloud_cover``) are *derived from
the pixels* by simple Sen2Cor-like rules, with the errors such rules make.

The output is synthetic. It is not Copernicus data and is labelled so in every item
(``properties.description``) and collection.

Files under ``root``
--------------------
``sample.json``
    manifest read by :func:`load_sample` (spec, paths, per-scene truth statistics, SCL error rates).
``collections/sentinel-2-l2a.json``, ``collections/sentinel-2-l1c.json``
    STAC 1.0.0 collections.
``l2a/<id>.json``, ``l2a/<id>/<asset key>.tif`` (and the same under ``l1c/``)
    items and their COGs (deflate, 256 px blocks), ``uint16`` with nodata 0 (``scl``: ``uint8``),
    each band at its native resolution on a grid whose upper-left corner is ``spec.origin``:
    10 m ``blue green red nir``; 20 m ``rededge1-3 nir08 swir16 swir22 scl``; 60 m ``coastal nir09``
    and, L1C only, ``cirrus``. A grid has ``ceil(height / f)`` rows and ``ceil(width / f)`` columns
    (``f`` = 1, 2, 6), so coarse grids may extend up to 50 m beyond the 10 m grid; their pixels are
    true block means of the underlying 10 m field there as well.
``l2a_items.json``, ``l1c_items.json``
    GeoJSON FeatureCollections (ItemCollections) of all items.
``truth/<l2a id>_truth.tif``
    ``uint8`` on the 10 m grid: 0 clear, 1 thick cloud, 2 thin cloud, 3 cirrus, 4 cloud shadow,
    255 nodata (see *Truth* below).
``surface/<l2a id>_surface.tif``
    ``float32``, 13 bands ``B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12`` on the 10 m grid:
    the true surface reflectance of that date (phenology and the date's illumination/BRDF factor
    included; noise-free, cloud-free, shadow-free), everywhere including the nodata wedge. ``B10``
    holds the *surface* reflectance at 1375 nm, which the sensor practically never sees.
``landcover.tif``
    ``uint8`` on the 10 m grid, codes in :data:`LANDCOVER_CLASSES`.

DN encoding per date (reflectance ``r`` -> digital number ``DN``)
-----------------------------------------------------------------
Date ``i`` uses radiometry variant ``i % 3``:

==========  ===========  =================  =======================  =====================
variant     baseline     L2A pixels         L2A item metadata        L1C (TOA ``t``)
==========  ===========  =================  =======================  =====================
0           ``03.01``    ``round(r*1e4)``   scale 1e-4, offset 0,    ``round(t*1e4)``,
                                            boa_offset_applied       offset 0
                                            false
1           ``05.09``    ``round(r*1e4)``   scale 1e-4, offset       ``round(t*1e4)+1000``,
                         ``+ 1000``         -0.1, boa_offset_applied offset -0.1
                                            false
2           ``05.10``    ``round(r*1e4)``   scale 1e-4, offset       ``round(t*1e4)+1000``,
                                            -0.1, boa_offset_applied offset -0.1
                                            **true**
==========  ===========  =================  =======================  =====================

So ``r = DN * 1e-4 + offset`` holds for variants 0 and 1 and for every L1C item, while for variant 2
(Element84 already removed the +1000, the item still lists ``offset -0.1``, as real ES v1 items do)
``r = DN * 1e-4``. Valid DNs are clipped to ``[1, 32767]``; 0 is nodata only, so negative noisy
reflectances of dark water clip to ``1e-4`` in variants 0 and 2 (as in pre-04.00 products).
:attr:`SampleScene.l2a_dn_offset` / :attr:`SampleScene.l1c_dn_offset` give the DN added (0/1000).

Forward model
-------------
* **Surface** (10 m): Voronoi field parcels (~220 m), forest zones, a lake with a turbid shore and a
  sandy beach, a meandering turbid river with riparian trees, a village (roofs, concrete, asphalt,
  gardens), roads and grass field margins. Each pixel is a linear mixture of 13 endmember spectra
  (:data:`ENDMEMBERS`: textbook-typical surface reflectances at the Sentinel-2 band centres, of
  the magnitude found in the USGS splib07 / ECOSTRESS libraries; approximate, not convolved from
  a library, and never fitted to any detector) with multi-scale 1/f texture in brightness, green
  cover and soil moisture; a 3x3 point-spread function mixes neighbouring pixels. Crops follow
  per-parcel phenology (cereals senesce, maize greens up, meadows may be mown between dates).
  Each date multiplies the surface by a small illumination/BRDF factor (+-1-2 %, plus a
  cross-track gradient).
* **Clouds**: cumulus cells (power-law sizes, fractal edges, flat-ish cloud-top reflectance
  0.45-0.8, lower in SWIR, top height 500-3000 m each), a semi-transparent stratiform layer
  (opacity <= 0.55) and anisotropic cirrus (B10 TOA 0.006-0.05, 1.1-1.35x that added to VNIR,
  no shadow). Per date the target cloud cover cycles through :attr:`SampleSpec.cloud_cover`.
* **Shadows**: each cloud's opacity is projected away from the sun by ``height * tan(zenith)``;
  shadowed surface is multiplied by ``1 - (1 - k_b) * opacity``, with the diffuse-light fraction
  ``k_b`` 0.55 (coastal) ... 0.18 (B12), i.e. 0.2-0.5 of the direct light remains.
* **Atmosphere** (L1C): ``TOA_b = path_b + T_b * BOA_b`` with path reflectance strongest in
  coastal/blue, ``T_b < 1`` (B09 ~0.45, water vapour), an aerosol and water-vapour factor per date;
  B10 sees the surface through ``T ~ 0.015`` only, plus cirrus and high cloud tops.
* **Sensor**: 10 m fields are block-averaged to each band's native grid, then Gaussian noise of
  ``sigma`` 0.001-0.004 (TOA reflectance, :data:`NOISE_SIGMA`) is added per native pixel. L2A is the
  exact inversion of the noisy TOA (``(TOA - path) / T``), so L2A noise is ``sigma / T``.
* **Nodata**: one date (:attr:`SampleSpec.nodata_date`) has a swath-edge wedge in the upper right;
  every band (at its own pixel centres) and SCL are 0 there, truth is 255.

Truth (10 m) is exact with respect to the pixels: 1 where cloud opacity >= 0.6, 2 where
0 < opacity < 0.6, 3 where only cirrus is present, 4 where a shadow of opacity >= 0.3 darkens an
otherwise clear pixel, 0 where none of the above touches the pixel (clear pixels carry no cloud,
cirrus or shadow contribution at all), 255 in the nodata wedge.

SCL (20 m) is produced from the noisy L1C/L2A pixels by simplified Sen2Cor rules: a cloud
probability ``p`` = red-brightness ramp (TOA B04 0.07-0.25) x spectral-flatness ramp
(B11/B03 1.45-1.0) x NDVI ramp (0.45-0.25); 9 if ``p >= 0.65``, 8 if ``p >= 0.35`` or TOA
B10 > 0.035, 10 if TOA B10 > 0.012, 7 if ``p >= 0.2``; water (NDWI > 0.05, B8A < 0.06,
B11 < 0.05) 6; cloud shadow 3 where
dark (B8A < 0.16, B11 < 0.12) inside the projection of the SCL clouds over 500-3500 m heights;
vegetation (NDVI >= 0.4) 4; else 5. It therefore misses faint cloud edges and faint cirrus, flags
some bright roofs/soils, labels shadows on water as water and dark roads near clouds as shadow.
The resulting error rates are measured against the truth and stored per scene in ``sample.json``
(``scl_stats``) and in :attr:`SampleScene.scl_stats`. ``eo:cloud_cover`` is the SCL percentage of
classes 8, 9 and 10 over valid pixels, as the provider reports it.

Determinism: every random draw comes from ``numpy.random.default_rng((seed, stream, date))``, so the
same spec gives byte-identical rasters and JSON, and the first dates do not depend on ``n_dates``.
"""

from __future__ import annotations

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
    """float32 GeoTIFF, 10 m grid, 13 bands B01..B12 (with B8A, B10): true surface reflectance."""
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
    """uint8 GeoTIFF, 10 m grid, land-cover codes of :data:`LANDCOVER_CLASSES`."""


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
}
"""Codes of ``landcover.tif``."""

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


def _ramp(x: F32, lo: float, hi: float) -> F32:
    """0 at ``lo``, 1 at ``hi``, linear in between (``lo > hi`` gives a decreasing ramp)."""
    return np.asarray(np.clip((x - lo) / (hi - lo), 0.0, 1.0), dtype=np.float32)


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
    [0.0, 0.04, 0.05, 0.14, 0.16, 0.06, 0.07, 0.06, 0.06, 0.07, 0.06, 0.05, 0.15, 0.05, 0.12, 0.06],
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
) -> _Clouds:
    """Cloud opacity, cloud-top reflectance/height, shadow opacity and cirrus on the padded grid."""
    rng = _rng(spec.seed, 2, date)
    h, w = shape
    target = spec.cloud_cover[date % len(spec.cloud_cover)]
    zeros = np.zeros(shape, np.float32)
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
    margin = math.ceil(3000.0 * tan_z / 10.0) + 2 * r_max
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
    crop = (slice(margin, margin + h), slice(margin, margin + w))
    logger.debug("date %d: %d cumulus cells, target cover %.3f", date, n_cells, target)
    return _Clouds(
        alpha=np.ascontiguousarray(alpha[crop]),
        rho=np.ascontiguousarray(rho[crop]),
        height=np.ascontiguousarray(top[crop]),
        shadow=np.ascontiguousarray(shadow[crop]),
        cirrus=np.ascontiguousarray(cirrus[crop]),
    )


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
# SCL (Sen2Cor-like, imperfect)
# --------------------------------------------------------------------------------------------


def _scl(
    toa: Mapping[str, F32],
    boa: Mapping[str, F32],
    nodata: BoolA,
    sun_zenith: float,
    sun_azimuth: float,
) -> U8:
    """Scene classification at 20 m from the (noisy) 20 m TOA/BOA reflectances."""
    eps = np.float32(1e-6)
    b03, b04, b8a, b11 = toa["B03"], toa["B04"], toa["B8A"], toa["B11"]
    ndvi_toa = (b8a - b04) / (b8a + b04 + eps)
    p = (
        _ramp(b04, 0.07, 0.25)
        * _ramp((b11 / (b03 + eps)).astype(np.float32), 1.45, 1.0)
        * _ramp(ndvi_toa.astype(np.float32), 0.45, 0.25)
    )
    b10 = toa["B10"]
    ndvi = (boa["B8A"] - boa["B04"]) / (boa["B8A"] + boa["B04"] + eps)
    ndwi = (boa["B03"] - boa["B8A"]) / (boa["B03"] + boa["B8A"] + eps)
    water = (ndwi > 0.05) & (boa["B8A"] < 0.06) & (boa["B11"] < 0.05)
    cloud = p >= 0.35
    # Geometric shadow region: SCL clouds projected for heights 500..3500 m.
    geo = np.zeros(nodata.shape, bool)
    tan_z = math.tan(math.radians(sun_zenith))
    az = math.radians(sun_azimuth)
    cf = cloud.astype(np.float32)
    for hgt in np.arange(500.0, 3501.0, 250.0):
        d = hgt * tan_z / 20.0
        geo |= _shift(cf, round(d * math.cos(az)), round(-d * math.sin(az))) > 0
    dark = (boa["B8A"] < 0.16) & (boa["B11"] < 0.12)
    scl = np.full(nodata.shape, 5, np.uint8)
    scl[ndvi >= 0.4] = 4
    scl[geo & dark & ~water] = 3
    scl[water] = 6
    scl[p >= 0.2] = 7
    scl[b10 > 0.012] = 10
    scl[cloud | (b10 > 0.035)] = 8
    scl[p >= 0.65] = 9
    scl[nodata] = 0
    return scl


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
        "view:azimuth": 104.3 + 2.0 * (meta.index % 3),
        "view:incidence_angle": 6.1 + 0.4 * (meta.index % 3),
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
    land = _landscape(spec, (hp, wp))
    _write_cog(
        root / "landcover.tif",
        land.lc[: spec.height, : spec.width],
        spec,
        10,
        nodata=0,
        resampling="nearest",
    )
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
        surf = _surface(land, 5.0 * i, _rng(spec.seed, 3, i))
        clouds = _clouds(
            spec, i, (hp, wp), (spec.height, spec.width), meta.sun_zenith, meta.sun_azimuth
        )
        nod10 = _wedge_mask(spec, 10, active)
        truth = _truth(clouds, np.zeros((hp, wp), bool))[: spec.height, : spec.width]
        truth[nod10] = 255

        arng = _rng(spec.seed, 4, i)
        aerosol = arng.uniform(0.7, 1.4)
        vapour = arng.uniform(0.85, 1.15)
        path = PATH_REFLECTANCE * np.float32(aerosol)
        trans = (1.0 - (1.0 - TRANSMITTANCE) * np.float32(aerosol)).astype(np.float32)
        trans[_BI["B09"]] = np.float32(TRANSMITTANCE[_BI["B09"]] / vapour)
        trans[_B10] = np.float32(TRANSMITTANCE[_B10] / vapour)

        nrng = _rng(spec.seed, 5, i)
        one_minus_a = 1.0 - clouds.alpha
        toa_native: dict[str, F32] = {}
        l2a_id = f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_L2A"
        l1c_id = f"{meta.short}_{spec.tile}_{meta.sensing:%Y%m%d}_0_L1C"
        for bi, b in enumerate(BANDS):
            shade = 1.0 - (1.0 - _DIFFUSE[bi]) * clouds.shadow
            if bi == _B10:
                cloud_b10 = clouds.rho * (0.008 + 0.012 * clouds.height / 1000.0)
                toa = (
                    path[bi]
                    + trans[bi] * one_minus_a * surf[bi] * shade
                    + clouds.alpha * cloud_b10
                    + clouds.cirrus
                )
            else:
                boa = (
                    one_minus_a * surf[bi] * shade
                    + clouds.alpha * clouds.rho * _CLOUD_SPECTRUM[bi]
                    + clouds.cirrus * _CIRRUS_SPECTRUM[bi]
                )
                toa = path[bi] + trans[bi] * boa
            shape = _grid_shape(spec, b.res)
            native = _block_mean(toa.astype(np.float32), b.res // 10, shape)
            native += nrng.standard_normal(shape, dtype=np.float32) * NOISE_SIGMA[bi]
            toa_native[b.name] = native
            nod = _wedge_mask(spec, b.res, active)
            _write_cog(
                root / "l1c" / l1c_id / f"{b.key}.tif",
                _encode(native, meta.l1c_dn_offset, nod),
                spec,
                b.res,
                nodata=0,
            )
            if bi != _B10:
                boa_native = ((native - path[bi]) / trans[bi]).astype(np.float32)
                _write_cog(
                    root / "l2a" / l2a_id / f"{b.key}.tif",
                    _encode(boa_native, meta.l2a_dn_offset, nod),
                    spec,
                    b.res,
                    nodata=0,
                )

        # SCL from the noisy pixels at 20 m (10 m bands averaged, B10 nearest from 60 m).
        s20 = _grid_shape(spec, 20)
        toa20: dict[str, F32] = {}
        boa20: dict[str, F32] = {}
        for name in ("B03", "B04", "B8A", "B11", "B10"):
            res = BANDS[_BI[name]].res
            a = toa_native[name]
            if res == 10:
                pad = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2)), mode="edge")
                a = _block_mean(pad, 2, s20)
            elif res == 60:
                a = np.repeat(np.repeat(a, 3, axis=0), 3, axis=1)[: s20[0], : s20[1]]
            toa20[name] = a
            boa20[name] = ((a - path[_BI[name]]) / trans[_BI[name]]).astype(np.float32)
        nod20 = _wedge_mask(spec, 20, active)
        scl = _scl(toa20, boa20, nod20, meta.sun_zenith, meta.sun_azimuth)
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
    )


__all__ = [
    "BANDS",
    "BAND_NAMES",
    "ENDMEMBERS",
    "LANDCOVER_CLASSES",
    "NOISE_SIGMA",
    "PATH_REFLECTANCE",
    "TRANSMITTANCE",
    "TRUTH_CLASSES",
    "Sample",
    "SampleScene",
    "SampleSpec",
    "generate_sample",
    "load_sample",
]
