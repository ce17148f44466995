"""The NBAR step's configuration, ``steps.nbar``: one documented field per parameter, checked
when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from ...bands import normalize_band_names
from ...errors import ConfigError
from ...fields import doc
from .kernels import COEFFICIENTS

SunZenithMode = Literal["observed", "scene"]

MAX_TARGET_VIEW_ZENITH: Final = 45.0
"""Largest target view zenith (degrees) accepted; Sentinel-2 views at most ~11.5° off nadir."""
MAX_TARGET_SUN_ZENITH: Final = 80.0
"""Largest fixed target sun zenith (degrees) accepted: the kernels grow steeply towards the
horizon, and the fixed coefficients were derived for moderate sun zeniths."""


@dataclass(frozen=True)
class NbarConfig:
    """Nadir BRDF-adjusted reflectance by the c-factor method (``steps.nbar``)."""

    view_zenith: float = doc(
        "View zenith (degrees) the reflectance is normalised to; 0 is nadir (NBAR). The "
        "relative azimuth of each pixel is kept (it does not matter at nadir).",
        0.0,
    )
    sun_zenith: SunZenithMode | float = doc(
        "Sun zenith the reflectance is normalised to: `observed` (each pixel's own, as "
        "sen2nbar and Roy et al. 2016 do: only the view angle is changed), `scene` (the "
        "item's mean sun zenith, `s2:mean_solar_zenith` or 90 - `view:sun_elevation`, for "
        "every pixel; the observed one where the item has neither, recorded) or a number of "
        "degrees (0-80), the same for every scene, e.g. to compare dates of different "
        "seasons (the farther from the observed sun zenith, the less the fixed coefficients "
        "hold).",
        "observed",
    )
    bands: tuple[str, ...] | None = doc(
        "Bands to correct; null: every loaded band with published c-factor coefficients "
        "(B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12). B01, B09 and B10 have none and "
        "are always left as they are.",
        None,
    )

    def __post_init__(self) -> None:
        k = "steps.nbar"
        if not (
            math.isfinite(self.view_zenith) and 0.0 <= self.view_zenith <= MAX_TARGET_VIEW_ZENITH
        ):
            raise ConfigError(
                f"{k}.view_zenith must be degrees between 0 (nadir) and "
                f"{MAX_TARGET_VIEW_ZENITH:g}, got {self.view_zenith}"
            )
        sz = self.sun_zenith
        if isinstance(sz, str):
            if sz not in ("observed", "scene"):
                raise ConfigError(
                    f"{k}.sun_zenith {sz!r} is not one of observed, scene, or a number of degrees"
                )
        elif isinstance(sz, bool) or not (
            isinstance(sz, int | float) and math.isfinite(sz) and 0.0 <= sz <= MAX_TARGET_SUN_ZENITH
        ):
            raise ConfigError(
                f"{k}.sun_zenith must be observed, scene or degrees between 0 and "
                f"{MAX_TARGET_SUN_ZENITH:g}, got {sz!r}"
            )
        else:
            object.__setattr__(self, "sun_zenith", float(sz))
        if self.bands is not None:
            names = normalize_band_names(self.bands)
            bad = [b for b in names if b not in COEFFICIENTS]
            if bad:
                raise ConfigError(
                    f"{k}.bands: {bad} have no published c-factor coefficients; choose among "
                    f"{list(COEFFICIENTS)} or null for all of them"
                )
            if not names:
                raise ConfigError(f"{k}.bands is empty; list bands or use null for all of them")
            object.__setattr__(self, "bands", names)

    def selects(self, band: str) -> bool:
        """Whether ``band`` is to be corrected (it has coefficients and is selected)."""
        return band in COEFFICIENTS and (self.bands is None or band in self.bands)
