"""The layers the cloud step writes (``CLOUD_MASK``, ``CLOUD_PROB``, ``CLOUD_Txxx``) and what a
mask says about its scene: the cloud, shadow, clear and valid fractions, ``eo:cloud_cover`` and
whether the scene is written."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from .config import CloudMaskConfig

from ...bands import MASK_CLEAR, MASK_CLOUD, MASK_NODATA, MASK_SHADOW
from ..base import Skip

PROB_NODATA: Final = 255
"""Nodata of the ``CLOUD_PROB`` layer (valid values are 0-100 %)."""
THRESHOLD_LAYER_NODATA: Final = 255
"""Nodata of the extra ``CLOUD_Txxx`` layers (valid values 0 clear, 1 cloud)."""


def threshold_layer_name(t: float) -> str:
    """Name of the extra layer of threshold ``t``: ``CLOUD_T030`` for 0.3."""
    return f"CLOUD_T{round(t * 100):03d}"


def summarise(
    mask: NDArray[np.uint8], cfg: CloudMaskConfig, results: dict[str, Any], props: dict[str, Any]
) -> Skip | None:
    """Record the cloud, shadow, clear and valid fractions of a ``CLOUD_MASK`` in ``results``
    and its cloud cover as ``eo:cloud_cover`` in ``props``; why the scene is not written
    (``max_cloud_fraction``; never without a valid pixel), or None."""
    n_total = max(int(mask.size), 1)
    n_known = int((mask != MASK_NODATA).sum())
    if not n_known:
        results.update(
            cloud_fraction=0.0,
            shadow_fraction=0.0,
            clear_fraction=0.0,
            valid_fraction=0.0,
        )
        return Skip("no-valid-pixel", "no valid pixel in the AOI: scene not written")
    cloud_fraction = int((mask == MASK_CLOUD).sum()) / n_known
    results.update(
        cloud_fraction=cloud_fraction,
        shadow_fraction=int((mask == MASK_SHADOW).sum()) / n_known,
        clear_fraction=int((mask == MASK_CLEAR).sum()) / n_known,
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
