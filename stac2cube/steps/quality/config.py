"""The quality step's configuration, ``steps.quality``."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from ...fields import doc


@dataclass(frozen=True)
class QualityConfig:
    """Per-pixel quality layers of the CEOS-ARD Surface Reflectance specification
    (``steps.quality``): cloud, cloud shadow, saturation, incomplete testing, snow/ice,
    land/water, the bit-packed ``QA`` layer and, optionally, the sun and view angles."""

    angles: bool = doc(
        "Also write the per-pixel sun elevation, sun azimuth, view incidence and view azimuth "
        "(uint16, 0.01 degree), interpolated from the granule metadata's 5 km angle grids.",
        False,
    )
    saturation_dn: int = doc(
        "The DN Sentinel-2 gives a saturated pixel (65535). A reflectance at or above what "
        "this DN means under ESA's encodings (DN × 0.0001 - 0.1) is flagged saturated, as is "
        "SCL class 1 (saturated or defective).",
        65535,
    )
    low_sun_zenith: float = doc(
        "Sun zenith angle (degrees) above which a pixel is flagged low sun in `QA` (needs the "
        "granule metadata's angles).",
        75.0,
    )

    def __post_init__(self) -> None:
        if not 0 < self.saturation_dn <= 65535:
            raise ConfigError(
                f"steps.quality.saturation_dn must be in 1..65535, got {self.saturation_dn}"
            )
        if not 0.0 < self.low_sun_zenith < 90.0:
            raise ConfigError(
                f"steps.quality.low_sun_zenith must be between 0 and 90 degrees, got "
                f"{self.low_sun_zenith}"
            )
