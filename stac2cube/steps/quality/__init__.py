"""The quality step (``steps.quality``): the per-pixel quality layers CEOS-ARD asks for, from
the cloud step's mask, the source's SCL, the DN saturation value and the granule metadata's
angles, plus one bit-packed ``QA`` layer (docs/ard.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..registry import StepPlugin
from .config import QualityConfig
from .layers import QA_BITS, QA_NODATA, QaBit, quality_layers, saturation_reflectance

if TYPE_CHECKING:
    from ...config import Config
    from ..base import Step


def _quality(cfg: QualityConfig, config: Config) -> tuple[Step[Any], QualityConfig]:
    from .step import QualityStep

    return QualityStep(), cfg


PLUGIN: StepPlugin[QualityConfig] = StepPlugin(
    name="quality",
    config=QualityConfig,
    factory=_quality,
    order=90,
    doc=(
        "Per-pixel quality layers of CEOS-ARD (cloud, shadow, saturation, incomplete testing, "
        "snow/ice, land/water, bit-packed QA, optional angles); runs last (see docs/ard.md)."
    ),
)

__all__ = [
    "PLUGIN",
    "QA_BITS",
    "QA_NODATA",
    "QaBit",
    "QualityConfig",
    "quality_layers",
    "saturation_reflectance",
]
