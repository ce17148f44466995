"""The co-registration step's configuration, ``steps.coreg``: one documented field per
parameter, checked when it is built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ...errors import ConfigError
from ...fields import doc

Mode = Literal["global", "local"]
ReferenceMode = Literal["clearest", "median", "file"]
Resampling = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos"]
OnFailure = Literal["keep", "skip", "fail"]

DEFAULT_MIN_TEXTURE_SNR: Final = 4.0
"""Default ``min_texture_snr``: a window must have 4x the texture its own noise gives."""
DEFAULT_WINDOW: Final[Mapping[str, int]] = {"global": 256, "local": 128}
"""``window_size`` when it is not set: AROSICS' default 256 px for the single global window;
128 px for local tie points (smaller windows follow a varying field more closely; below 64 px
AROSICS warns that accuracy suffers)."""

_RESAMPLINGS: Final = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos")


@dataclass(frozen=True)
class CoregConfig:
    """Co-registration onto the catalog's reference image with AROSICS (``steps.coreg``).

    The default mode is ``global``: Sentinel-2 multi-temporal misregistration is dominated by
    a sub-pixel translation per acquisition, which five refined 256 px windows measure to a
    few thousandths of a pixel on real texture in about a second, while the local tie-point
    warp costs several times more and passes the noise of every tie point into the image. Use
    ``local`` where the displacement varies over the scene (relief with DEM errors, detector
    boundaries, large AOIs); see ``benchmarks/results/coreg.json``.
    """

    mode: Mode = doc(
        "`global`: one X/Y shift from up to five matching windows (AROSICS COREG, refined); "
        "`local`: a tie-point grid and a warp through the valid tie points (AROSICS "
        "COREG_LOCAL). Either is applied only when significant and improving the alignment.",
        "global",
    )
    reference: ReferenceMode = doc(
        "Which reference the pipeline builds: `clearest` (the clearest textured scene of the "
        "catalog), `median` (per-pixel median of the `reference_scenes` clearest, clouds "
        "masked) or `file` (`reference_path`).",
        "clearest",
    )
    reference_path: str | None = doc(
        "Path or GDAL-readable URL of the reference raster for `reference: file` (any CRS; "
        "read onto each scene's grid).",
        None,
    )
    reference_band_index: int = doc(
        "Band of `reference_path` to match against (1-based).",
        1,
    )
    reference_scenes: int = doc(
        "Number of clearest scenes that are reference candidates (`clearest` picks one of "
        "them; `median` composites them).",
        5,
    )
    match_band: str = doc(
        "Band matched against the reference (and the band the reference is built from). "
        "If the scene lacks it: the first of B08, B8A, B04, B03, B02 it has.",
        "B08",
    )
    window_size: int | None = doc(
        "Matching window size in pixels (AROSICS rounds down to a power of 2). None: 256 for "
        "`global`, 128 for `local`.",
        None,
    )
    grid_res: int = doc(
        "Tie-point spacing in pixels (`local`); a 1000 px scene at 50 px has 441 points.",
        50,
    )
    max_shift: float = doc(
        "Largest shift in pixels accepted (AROSICS max_shift, per axis); larger ones are "
        "treated as false matches.",
        5.0,
    )
    min_reliability: float = doc(
        "Smallest AROSICS shift reliability (percent, 0-100) accepted: for the global match, "
        "and for each tie point at `tiepoint_filter_level` >= 1.",
        60.0,
    )
    tiepoint_filter_level: int = doc(
        "AROSICS tie-point filtering (`local`): 0 none, 1 reliability, 2 also SSIM "
        "improvement, 3 also RANSAC outliers.",
        3,
    )
    min_valid_tiepoints: int = doc(
        "Fewest valid tie points (after filtering) for a local correction; fewer fail.",
        10,
    )
    resampling: Resampling = doc(
        "Kernel that applies the correction to reflectance bands (class and mask layers always "
        "use `nearest`): nearest, bilinear, cubic, cubic_spline or lanczos.",
        "cubic",
    )
    max_bad_fraction: float = doc(
        "Largest fraction (0-1) of cloud, shadow or nodata pixels in a matching window; "
        "windows and tie points with more are not used.",
        0.2,
    )
    min_texture: float = doc(
        "Smallest absolute texture (RMS gradient of the 3x3-averaged band, reflectance per "
        "pixel) of the matching window in the scene and in the reference; a floor under "
        "`min_texture_snr` for noise-free data. Real 10 m Sentinel-2 farmland scores "
        "0.002-0.006 in B03 and 0.01-0.02 in B08.",
        0.0005,
    )
    min_texture_snr: float = doc(
        "Smallest texture of the matching window relative to the texture the band's own noise "
        "gives (noise estimated per window, Immerkaer 1996): about 1 for a flat window "
        "(water, haze), 10-30 for real farmland even in B02/B03. Flatter windows are not "
        "matched.",
        DEFAULT_MIN_TEXTURE_SNR,
        since="0.2.0",
    )
    on_failure: OnFailure = doc(
        "When matching fails: `keep` writes the scene unshifted (status failed in the "
        "provenance), `skip` does not write it, `fail` stops with an error.",
        "keep",
    )

    def __post_init__(self) -> None:
        k = "steps.coreg"

        def one_of(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in allowed:
                raise ConfigError(f"{k}.{name} {v!r} is not one of {', '.join(allowed)}")

        one_of("mode", ("global", "local"))
        one_of("reference", ("clearest", "median", "file"))
        one_of("resampling", _RESAMPLINGS)
        one_of("on_failure", ("keep", "skip", "fail"))
        if self.reference == "file" and not self.reference_path:
            raise ConfigError(
                f"{k}.reference is 'file' but {k}.reference_path is not set; give the path or "
                "URL of the reference raster, or use reference: clearest / median"
            )
        if self.reference != "file" and self.reference_path:
            raise ConfigError(
                f"{k}.reference_path is only used with reference: file (reference is "
                f"{self.reference!r}); remove it or set reference: file"
            )
        if self.reference_band_index < 1:
            raise ConfigError(
                f"{k}.reference_band_index is 1-based, got {self.reference_band_index}"
            )
        if not 1 <= self.reference_scenes <= 100:
            raise ConfigError(
                f"{k}.reference_scenes must be between 1 and 100, got {self.reference_scenes}"
            )
        if not self.match_band:
            raise ConfigError(f"{k}.match_band must name a band, e.g. B08")
        if self.window_size is not None and not 32 <= self.window_size <= 4096:
            raise ConfigError(
                f"{k}.window_size must be between 32 and 4096 pixels (or null for the mode's "
                f"default), got {self.window_size}"
            )
        if not 4 <= self.grid_res <= 10000:
            raise ConfigError(
                f"{k}.grid_res must be between 4 and 10000 pixels, got {self.grid_res}"
            )
        if not (math.isfinite(self.max_shift) and 0.0 < self.max_shift <= 500.0):
            raise ConfigError(
                f"{k}.max_shift must be a number of pixels in (0, 500], got {self.max_shift}"
            )
        if not 0.0 <= self.min_reliability <= 100.0:
            raise ConfigError(
                f"{k}.min_reliability is a percentage between 0 and 100, got {self.min_reliability}"
            )
        if self.tiepoint_filter_level not in (0, 1, 2, 3):
            raise ConfigError(
                f"{k}.tiepoint_filter_level must be 0, 1, 2 or 3, got {self.tiepoint_filter_level}"
            )
        if self.min_valid_tiepoints < 5:
            raise ConfigError(
                f"{k}.min_valid_tiepoints must be >= 5 (a warp through fewer points is not "
                f"meaningful), got {self.min_valid_tiepoints}"
            )
        if not 0.0 <= self.max_bad_fraction < 1.0:
            raise ConfigError(
                f"{k}.max_bad_fraction must be a fraction in [0, 1), got {self.max_bad_fraction}"
            )
        if not (math.isfinite(self.min_texture) and self.min_texture >= 0.0):
            raise ConfigError(f"{k}.min_texture must be >= 0, got {self.min_texture}")
        if not (math.isfinite(self.min_texture_snr) and self.min_texture_snr >= 0.0):
            raise ConfigError(f"{k}.min_texture_snr must be >= 0, got {self.min_texture_snr}")

    @property
    def window(self) -> int:
        """The matching window size in pixels (``window_size`` or the mode's default)."""
        return self.window_size if self.window_size is not None else DEFAULT_WINDOW[self.mode]
