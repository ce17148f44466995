"""The layers the cloud step writes (``CLOUD_MASK``, ``CLOUD_PROB``, ``CLOUD_Txxx``) and what a
mask says about its scene: the cloud, shadow, clear and valid fractions, ``eo:cloud_cover`` and
whether the scene is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from .config import CloudMaskConfig

from ...bands import (
    MASK_CLASSES,
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_NODATA,
    MASK_SHADOW,
)
from ..base import LayerInfo, Skip

BoolA = NDArray[np.bool_]

THRESHOLD_LAYER_NODATA: Final = 255
"""Nodata of the extra ``CLOUD_Txxx`` layers (valid values 0 clear, 1 cloud)."""


def threshold_layer_name(t: float) -> str:
    """Name of the extra layer of threshold ``t``: ``CLOUD_T030`` for 0.3."""
    return f"CLOUD_T{round(t * 100):03d}"


@dataclass(frozen=True)
class MaskCounts:
    """Pixels of a ``CLOUD_MASK`` by class: all :func:`summarise_counts` needs, so that a mask
    written block by block is summarised as the whole mask is (counts add up)."""

    total: int = 0
    known: int = 0
    """Pixels that are not nodata."""
    cloud: int = 0
    shadow: int = 0
    clear: int = 0

    @classmethod
    def of(cls, mask: NDArray[np.uint8]) -> MaskCounts:
        """The counts of ``mask``."""
        return cls(
            total=int(mask.size),
            known=int((mask != MASK_NODATA).sum()),
            cloud=int((mask == MASK_CLOUD).sum()),
            shadow=int((mask == MASK_SHADOW).sum()),
            clear=int((mask == MASK_CLEAR).sum()),
        )

    def __add__(self, other: MaskCounts) -> MaskCounts:
        return MaskCounts(
            self.total + other.total,
            self.known + other.known,
            self.cloud + other.cloud,
            self.shadow + other.shadow,
            self.clear + other.clear,
        )


def cloud_mask_layer(known: BoolA, shadow: BoolA, cloud: BoolA) -> NDArray[np.uint8]:
    """The ``CLOUD_MASK`` layer: nodata, clear where ``known``, then shadow, then cloud."""
    mask = np.full(known.shape, MASK_NODATA, dtype=np.uint8)
    mask[known] = MASK_CLEAR
    mask[shadow] = MASK_SHADOW
    mask[cloud] = MASK_CLOUD
    return mask


def cloud_mask_info(method_used: str, cfg: CloudMaskConfig) -> LayerInfo:
    """How ``CLOUD_MASK`` is written, its description naming what made it."""
    return LayerInfo(
        nodata=MASK_NODATA,
        classes=dict(MASK_CLASSES),
        description=(
            f"cloud and shadow mask ({method_used}"
            + (" + multi-temporal test" if cfg.temporal_threshold is not None else "")
            + f"; shadows {cfg.shadows})"
        ),
    )


def cloud_tests(cfg: CloudMaskConfig, results: Mapping[str, Any]) -> dict[str, str]:
    """Each configured cloud test (``s2cloudless``, ``scl``, ``temporal``) → ``run`` or
    ``not run: <why>``, as the step's ``results`` say (a deferred temporal test counts as run:
    it is applied after co-registration)."""
    tests: dict[str, str] = {}
    if cfg.method != "scl":
        s2c = results.get("s2cloudless", {})
        ran = s2c.get("status") == "run"
        why = s2c.get("reason") or s2c.get("status", "not run")
        tests["s2cloudless"] = "run" if ran else f"not run: {why}"
    if cfg.method != "s2cloudless":
        tests["scl"] = "run"
    if cfg.temporal_threshold is not None:
        status = str(results.get("temporal", {}).get("status", "not run"))
        ran = status == "applied" or status.startswith("deferred")
        tests["temporal"] = "run" if ran else f"not run: {status}"
    return tests


def summarise(
    mask: NDArray[np.uint8], cfg: CloudMaskConfig, results: dict[str, Any], props: dict[str, Any]
) -> Skip | None:
    """Record the cloud, shadow, clear and valid fractions of a ``CLOUD_MASK`` in ``results``
    and its cloud cover as ``eo:cloud_cover`` in ``props``; why the scene is not written
    (``max_cloud_fraction``; never without a valid pixel), or None."""
    return summarise_counts(MaskCounts.of(mask), cfg, results, props)


def summarise_counts(
    counts: MaskCounts, cfg: CloudMaskConfig, results: dict[str, Any], props: dict[str, Any]
) -> Skip | None:
    """:func:`summarise` from the counts of a mask (e.g. added up over its blocks)."""
    n_total = max(counts.total, 1)
    n_known = counts.known
    if not n_known:
        results.update(
            cloud_fraction=0.0,
            shadow_fraction=0.0,
            clear_fraction=0.0,
            valid_fraction=0.0,
        )
        return Skip("no-valid-pixel", "no valid pixel in the AOI: scene not written")
    cloud_fraction = counts.cloud / n_known
    results.update(
        cloud_fraction=cloud_fraction,
        shadow_fraction=counts.shadow / n_known,
        clear_fraction=counts.clear / n_known,
        valid_fraction=n_known / n_total,
    )
    props["eo:cloud_cover"] = round(100.0 * cloud_fraction, 4)
    if cfg.max_cloud_fraction is not None and cloud_fraction > cfg.max_cloud_fraction:
        return Skip(
            "too-cloudy",
            f"cloud fraction {cloud_fraction:.3f} over the AOI exceeds "
            f"max_cloud_fraction {cfg.max_cloud_fraction}",
        )
    return None
