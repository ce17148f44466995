"""Nadir BRDF-adjusted reflectance (NBAR) by the c-factor method of Roy et al. (2016, 2017), as
in sen2nbar: each band's reflectance times ``R(target) / R(observed)`` of a kernel-driven BRDF
with fixed per-band coefficients, from the scene's per-pixel sun and view angles.

:mod:`.kernels` (the RossThick and LiSparse-Reciprocal kernels, the coefficients, the c-factor),
:mod:`.config` (``steps.nbar``) and :mod:`.step` (:class:`NbarStep`, whole and in blocks,
imported when first used). What it does and what it gives: ``docs/nbar.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ..registry import StepPlugin
from .config import NbarConfig, SunZenithMode
from .kernels import (
    COEFFICIENTS,
    COEFFICIENTS_SOURCE,
    BrdfCoefficients,
    c_factor,
    kernels,
    li_sparse_reciprocal,
    ross_thick,
)

if TYPE_CHECKING:
    from ...config import Config
    from ..base import Step
    from .step import NbarPlan, NbarStep


def _nbar(cfg: NbarConfig, config: Config) -> tuple[Step[Any], NbarConfig]:
    from .step import NbarStep

    return NbarStep(), cfg


def _check(cfg: NbarConfig, config: Config) -> None:
    if cfg.bands is not None:
        absent = [b for b in cfg.bands if b not in config.bands]
        if absent:
            raise ConfigError(
                f"steps.nbar.bands {absent} are not in `bands` {list(config.bands)}; add them "
                "there or leave them out of steps.nbar.bands"
            )
    if not any(cfg.selects(b) for b in config.bands):
        raise ConfigError(
            f"steps.nbar: none of `bands` {list(config.bands)} has c-factor coefficients; add "
            f"some of {list(COEFFICIENTS)} or remove the step"
        )


PLUGIN: StepPlugin[NbarConfig] = StepPlugin(
    name="nbar",
    config=NbarConfig,
    factory=_nbar,
    order=25,  # after co-registration (20), before super-resolution (30)
    doc=(
        "Nadir BRDF-adjusted reflectance by the c-factor method (Roy et al. 2016, 2017) from "
        "per-pixel sun and view angles; scenes without angles are left as they are "
        "(see docs/nbar.md)."
    ),
    validate=_check,
)


def __getattr__(name: str) -> Any:
    if name in ("NbarPlan", "NbarStep"):
        value = getattr(importlib.import_module(".step", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COEFFICIENTS",
    "COEFFICIENTS_SOURCE",
    "PLUGIN",
    "BrdfCoefficients",
    "NbarConfig",
    "NbarPlan",
    "NbarStep",
    "SunZenithMode",
    "c_factor",
    "kernels",
    "li_sparse_reciprocal",
    "ross_thick",
]
