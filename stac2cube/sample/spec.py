"""What sample to generate (:class:`SampleSpec`) and what was generated (:class:`Sample`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


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
    """Directory holding everything (the layout: ``docs/sample.md``)."""
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
