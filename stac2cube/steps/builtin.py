"""The plug-ins of stac2cube's cloud-masking and co-registration steps.

Declared in the ``stac2cube.steps`` entry-point group of stac2cube's ``pyproject.toml``, like any
third-party step (super-resolution declares its own, :data:`stac2cube.steps.superres.PLUGIN`).
The step classes are imported only when a run builds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .cloudmask import CloudMaskConfig
from .coreg import CoregConfig
from .registry import StepPlugin

if TYPE_CHECKING:
    from ..config import Config
    from .base import Step


def _cloudmask(cfg: CloudMaskConfig, config: Config) -> tuple[Step[Any], CloudMaskConfig]:
    from .cloudmask import CloudMaskStep

    # co-registration follows: the multi-temporal test waits for its pixels
    return CloudMaskStep(defer_temporal=config.steps.coreg is not None), cfg


def _check_cloudmask(cfg: CloudMaskConfig, config: Config) -> None:
    if cfg.uses_scl and "SCL" not in config.bands:
        raise ConfigError(
            f"steps.cloudmask: method {cfg.method!r} with shadows {cfg.shadows!r} needs SCL: "
            "add SCL to `bands`, or use method: s2cloudless with shadows: geometric or none"
        )
    if cfg.temporal_threshold is not None and "B02" not in config.bands:
        raise ConfigError(
            "steps.cloudmask.temporal_threshold: the multi-temporal cloud test compares the "
            f"blue band B02 with a clear-sky reference; add B02 to `bands` {list(config.bands)} "
            "or set temporal_threshold: null"
        )


def _coreg(cfg: CoregConfig, config: Config) -> tuple[Step[Any], CoregConfig]:
    from .coreg import CoregStep

    return CoregStep(), cfg


def _check_coreg(cfg: CoregConfig, config: Config) -> None:
    if cfg.match_band not in config.bands:
        raise ConfigError(
            f"steps.coreg.match_band {cfg.match_band} is not in `bands` {list(config.bands)}; "
            "add it there or choose another matching band"
        )


CLOUDMASK: StepPlugin[CloudMaskConfig] = StepPlugin(
    name="cloudmask",
    config=CloudMaskConfig,
    factory=_cloudmask,
    order=10,
    doc="Cloud and shadow masking with s2cloudless and/or SCL (see docs/cloudmask.md).",
    validate=_check_cloudmask,
)
COREG: StepPlugin[CoregConfig] = StepPlugin(
    name="coreg",
    config=CoregConfig,
    factory=_coreg,
    order=20,
    doc=(
        "Co-registration of every band and mask to the catalog's reference image with AROSICS "
        "(see docs/coreg.md). Runs after cloud masking, whose mask keeps matching windows off "
        "clouds."
    ),
    validate=_check_coreg,
)

__all__ = ["CLOUDMASK", "COREG"]
