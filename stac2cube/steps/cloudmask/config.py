"""The cloud step's configuration, ``steps.cloudmask``: one documented field per parameter,
checked when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ...bands import SCL_SHADOW, SCL_VALID
from ...errors import ConfigError
from ...fields import doc
from .layers import threshold_layer_name

Method = Literal["s2cloudless", "scl", "union", "intersection"]
Shadows = Literal["none", "scl", "geometric", "both"]
L1CMode = Literal["auto", "require", "never"]


@dataclass(frozen=True)
class CloudMaskConfig:
    """Cloud and cloud-shadow masking (``steps.cloudmask``)."""

    method: Method = doc(
        "Which cloud mask: `s2cloudless` (the model's probability), `scl` (the Sen2Cor scene "
        "classification), `union` (cloud where either says so) or `intersection` (where both "
        "do). `scl`, `union` and `intersection` need `SCL` in `bands`.",
        "union",
    )
    threshold: float = doc(
        "s2cloudless cloud-probability threshold (0-1) after averaging; the s2cloudless authors "
        "recommend 0.4.",
        0.4,
    )
    thresholds: tuple[float, ...] = doc(
        "Extra thresholds: one more uint8 layer per value, named `CLOUD_T030` for 0.3, with "
        "0 clear, 1 cloud (s2cloudless with the same averaging and dilation), 255 nodata.",
        (),
    )
    average_over: float = doc(
        "Radius in metres of the disk the probability is averaged over before thresholding, "
        "applied on the output grid (the authors' 4 pixels at 10 m = 40 m); 0: no averaging.",
        40.0,
    )
    dilation_size: float = doc(
        "Radius in metres of the disk the cloud mask is dilated by, on the output grid (the "
        "authors' 2 pixels at 10 m = 20 m); 0: no dilation. Applies to the s2cloudless mask.",
        20.0,
    )
    resolution: float = doc(
        "Pixel size (m) at which the L1C bands are read and the s2cloudless probability is "
        "computed; it is then upsampled bilinearly to the output grid. 60 m (the native grid "
        "of B01/B09/B10) is ~30x faster than 10 m; see benchmarks/results/cloudmask.json.",
        60.0,
    )
    scl_classes: tuple[int, ...] = doc(
        "SCL classes that are masked: 3 (cloud shadow) marks shadow, the others cloud "
        "(8 cloud medium probability, 9 cloud high probability, 10 thin cirrus).",
        (3, 8, 9, 10),
    )
    cirrus_threshold: float | None = doc(
        "TOA reflectance of the L1C cirrus band B10 (1375 nm) above which a pixel is cirrus "
        "cloud, added to the s2cloudless mask (after the same dilation). 0.012 is Sen2Cor's "
        "lower thin-cirrus threshold: water vapour absorbs the surface signal at 1375 nm, so "
        "clear skies stay below it except over high, dry terrain and snow. Snow and ice "
        "pixels (NDSI > 0.4 and B08 > 0.11 when B03, B08 and B11 are loaded, else SCL class "
        "11) are left out of this test. Used only with an L1C twin (L2A products carry no "
        "B10). Off (null) by default: s2cloudless already takes B10 as an input, SCL's "
        "class 10 (in the default `scl_classes`) is Sen2Cor's own cirrus test, and a fixed "
        "threshold flags clear high, dry terrain (over half of the bright rock above 2,000 m "
        "in the benchmark's mountain scenes); turn it on (0.012) for lowland scenes where thin "
        "cirrus matters more.",
        None,
    )
    shadows: Shadows = doc(
        "Cloud shadows: `none`, `scl` (SCL class 3), `geometric` (the cloud mask projected "
        "away from the sun over `shadow_heights`, on dark-NIR pixels) or `both`.",
        "both",
    )
    shadow_heights: tuple[float, float, float] = doc(
        "Cloud heights searched by the geometric shadow projection: `[min, max, step]` in "
        "metres (one height per connected cloud object).",
        (200.0, 6000.0, 100.0),
    )
    dark_nir: float = doc(
        "Reflectance below which a NIR (L2A B08, else B8A) pixel is dark enough to be a cloud "
        "shadow in the geometric search (0.15 as in the Earth Engine s2cloudless tutorial).",
        0.15,
    )
    max_cloud_fraction: float | None = doc(
        "Scenes whose cloud fraction over the valid AOI pixels exceeds this (0-1) are not "
        "written (recorded as filtered); None writes every scene.",
        None,
    )
    l1c: L1CMode = doc(
        "Input of s2cloudless, which was trained on L1C top-of-atmosphere reflectance. `auto`: "
        "the L1C twin; a scene without one (or whose L1C read is refused) is masked without "
        "s2cloudless, by SCL (plus the multi-temporal test when `temporal_threshold` is set), "
        "and its record says `s2cloudless: not run` and why. `require`: a scene without a "
        "readable twin fails. `never`: an explicit opt-in to run s2cloudless on the L2A bands "
        "(surface reflectance, B10 set to a clear-sky constant), outside what the model was "
        "trained on: it detects little cloud (recorded as `input: l2a surface reflectance`).",
        "auto",
    )
    temporal_threshold: float | None = doc(
        "Multi-temporal cloud test (Hagolle et al. 2010, as in MAJA): a pixel whose L2A blue "
        "reflectance (B02) exceeds the catalog's clear-sky reference by more than this is cloud "
        "and joins the mask of `method` (undilated; SCL snow pixels are left out). The "
        "threshold grows with the time between scene and reference (`temporal_days`). 0.03 is "
        "the value of Hagolle et al.; null turns the test off. Needs B02 in `bands`. The "
        "reference is the per-pixel median of the `temporal_scenes` clearest scenes of the "
        "first run, clouds masked without this test, stored as the collection asset "
        "`cloud-reference` and reused by every update, with new versions for scenes far from "
        "it in time (`temporal_refresh_days`). When `coreg` also runs, the test compares the "
        "co-registered pixels.",
        None,
        since="0.2.0",
    )
    temporal_days: float = doc(
        "Time scale of the multi-temporal test: the threshold used is `temporal_threshold * "
        "(1 + days / temporal_days)`, `days` being the gap between the scene and the median "
        "date of the reference's scenes, so that surface change over longer gaps is not taken "
        "for cloud (30 days as in Hagolle et al. 2010).",
        30.0,
        since="0.2.0",
    )
    temporal_scenes: int = doc(
        "Number of clearest scenes (clear pixels counted after cloud masking) whose per-pixel "
        "median is the clear-sky reference of the multi-temporal test; twice as many "
        "candidates with the lowest provider cloud cover are read.",
        5,
        since="0.2.0",
    )
    temporal_refresh_days: float | None = doc(
        "Refresh of the clear-sky reference as the archive grows: a scene farther than this "
        "many days from every stored reference version gets a new version, built before the "
        "scenes are dispatched from the clearest scenes of the run within this many days after "
        "the first such scene, and stored beside the old ones (which are never changed); each "
        "scene is tested against the version nearest in time. 30 days is the test's time scale "
        "(`temporal_days`, Hagolle et al. 2010): at that gap the threshold has doubled. A scene "
        "whose new version could not be built is masked without the test (recorded). null "
        "keeps the first reference for every scene, however far.",
        30.0,
        since="0.2.0",
    )

    def __post_init__(self) -> None:
        k = "steps.cloudmask"
        if self.method not in ("s2cloudless", "scl", "union", "intersection"):
            raise ConfigError(
                f"{k}.method {self.method!r} is not one of s2cloudless, scl, union, intersection"
            )
        if self.shadows not in ("none", "scl", "geometric", "both"):
            raise ConfigError(
                f"{k}.shadows {self.shadows!r} is not one of none, scl, geometric, both"
            )
        if self.l1c not in ("auto", "require", "never"):
            raise ConfigError(f"{k}.l1c {self.l1c!r} is not one of auto, require, never")
        if self.cirrus_threshold is not None and not 0.0 < self.cirrus_threshold < 1.0:
            raise ConfigError(
                f"{k}.cirrus_threshold must be a TOA reflectance between 0 and 1 (or null), "
                f"got {self.cirrus_threshold}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"{k}.threshold must be between 0 and 1 (exclusive), got {self.threshold}"
            )
        names = set()
        for t in self.thresholds:
            if not 0.0 < t < 1.0:
                raise ConfigError(f"{k}.thresholds: {t} is not between 0 and 1 (exclusive)")
            name = threshold_layer_name(t)
            if name in names:
                raise ConfigError(
                    f"{k}.thresholds: {t} gives the same layer name {name} as another value; "
                    "use thresholds that differ in the second decimal"
                )
            names.add(name)
        for f in ("average_over", "dilation_size"):
            v = getattr(self, f)
            if not (math.isfinite(v) and 0.0 <= v <= 5000.0):
                raise ConfigError(f"{k}.{f} must be a radius in metres between 0 and 5000, got {v}")
        if not (math.isfinite(self.resolution) and 10.0 <= self.resolution <= 1000.0):
            raise ConfigError(
                f"{k}.resolution must be a pixel size in metres between 10 and 1000 "
                f"(e.g. 60 or 10), got {self.resolution}"
            )
        bad = [c for c in self.scl_classes if c not in SCL_VALID]
        if bad:
            raise ConfigError(f"{k}.scl_classes: {bad} are not SCL classes (0-11)")
        if self.method in ("scl", "union", "intersection") and not any(
            c != SCL_SHADOW for c in self.scl_classes
        ):
            raise ConfigError(
                f"{k}.scl_classes lists no cloud class, but method {self.method!r} takes clouds "
                "from SCL; add 8, 9 and/or 10"
            )
        if self.shadows in ("scl", "both") and SCL_SHADOW not in self.scl_classes:
            raise ConfigError(
                f"{k}.shadows {self.shadows!r} takes shadows from SCL class 3, which "
                f"{k}.scl_classes does not list; add 3 or use shadows: geometric / none"
            )
        lo, hi, step = self.shadow_heights
        if not (0.0 <= lo <= hi <= 20000.0 and step > 0.0):
            raise ConfigError(
                f"{k}.shadow_heights must be [min, max, step] metres with "
                f"0 <= min <= max <= 20000 and step > 0, got {list(self.shadow_heights)}"
            )
        if (hi - lo) / step > 1000:
            raise ConfigError(f"{k}.shadow_heights: more than 1000 heights; use a larger step")
        if not 0.0 < self.dark_nir < 1.0:
            raise ConfigError(
                f"{k}.dark_nir must be a reflectance between 0 and 1, got {self.dark_nir}"
            )
        if self.temporal_threshold is not None and not 0.0 < self.temporal_threshold < 1.0:
            raise ConfigError(
                f"{k}.temporal_threshold must be a reflectance difference between 0 and 1 "
                f"(0.03 in Hagolle et al. 2010), or null; got {self.temporal_threshold}"
            )
        if not (math.isfinite(self.temporal_days) and self.temporal_days > 0.0):
            raise ConfigError(f"{k}.temporal_days must be > 0 days, got {self.temporal_days}")
        if self.temporal_refresh_days is not None and not (
            math.isfinite(self.temporal_refresh_days) and self.temporal_refresh_days >= 1.0
        ):
            raise ConfigError(
                f"{k}.temporal_refresh_days must be >= 1 day (or null: never refresh), got "
                f"{self.temporal_refresh_days}"
            )
        if not 1 <= self.temporal_scenes <= 100:
            raise ConfigError(
                f"{k}.temporal_scenes must be between 1 and 100, got {self.temporal_scenes}"
            )
        if self.max_cloud_fraction is not None and not 0.0 <= self.max_cloud_fraction <= 1.0:
            raise ConfigError(
                f"{k}.max_cloud_fraction must be a fraction between 0 and 1 (not a percentage), "
                f"got {self.max_cloud_fraction}"
            )

    @property
    def uses_s2cloudless(self) -> bool:
        """Whether the s2cloudless probability is computed (and the TOA bands read)."""
        return self.method != "scl" or bool(self.thresholds)

    @property
    def uses_scl(self) -> bool:
        """Whether the SCL layer is needed."""
        return self.method != "s2cloudless" or self.shadows in ("scl", "both")

    def heights(self) -> NDArray[np.float64]:
        """The cloud heights (m) searched by the geometric shadow projection."""
        lo, hi, step = self.shadow_heights
        return np.arange(lo, hi + 0.5 * step, step, dtype=np.float64)
