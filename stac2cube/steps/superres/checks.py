"""Is the input reflectance? Checks run on the bands before super-resolution.

SEN2SR's models take reflectance as ``DN / 10000`` and apply no scaling of their own (what
upstream states, and what it leaves open about the baseline-04.00 offset: docs/superres.md);
the step hands over the harmonised scene bands (:data:`INPUT_RADIOMETRY`). Raw digital numbers
and a doubly removed offset are refused; a likely left-in +0.1 offset is logged and flagged
(``steps.superres.check_inputs``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ...errors import StepError

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]

INPUT_RADIOMETRY: Final = (
    "surface reflectance: DN x 1e-4 with the processing-baseline offset removed (the "
    "harmonised scene bands), as DN / 10000 of a product before baseline 04.00"
)
"""What the model is handed, as recorded in the step's provenance."""
DN_LIMIT: Final = 2.0
"""Reflectance above which (99th percentile of a band) the input is taken for raw DN."""
DOUBLE_OFFSET_LIMIT: Final = -0.05
"""1st percentile of a band below which the -0.1 baseline offset was applied twice."""
OFFSET_LEFT_IN_LIMIT: Final = 0.1
"""1st percentile that even the darkest band exceeds when the +0.1 offset was left in."""


def check_reflectance(bands: Mapping[str, F32], item_id: str = "") -> dict[str, Any]:
    """Refuse raw DN and doubly offset reflectance; flag a likely left-in +0.1 offset.

    Returns ``{"input_p01": {...}, "input_p99": {...}, "suspect_offset_left_in": bool}``.
    """
    p01: dict[str, float] = {}
    p99: dict[str, float] = {}
    for b, a in bands.items():
        v = a[np.isfinite(a)]
        if v.size == 0:
            continue
        if v.size > 200_000:
            v = v[:: v.size // 200_000]
        lo, hi = np.percentile(v, [1.0, 99.0])
        p01[b], p99[b] = round(float(lo), 5), round(float(hi), 5)
    where = f"{item_id}: " if item_id else ""
    dn = {b: v for b, v in p99.items() if v > DN_LIMIT}
    if dn:
        raise StepError(
            f"{where}the super-resolution input looks like raw digital numbers, not reflectance "
            f"(99th percentile {dn}); SEN2SR needs DN / 10000 after the baseline offset. Check "
            "the radiometry settings (or set steps.superres.check_inputs: false)"
        )
    neg = {b: v for b, v in p01.items() if v < DOUBLE_OFFSET_LIMIT}
    if neg:
        raise StepError(
            f"{where}the super-resolution input has many reflectances below "
            f"{DOUBLE_OFFSET_LIMIT} (1st percentile {neg}): the processing-baseline 04.00 offset "
            "(-0.1) was probably applied twice. Check the radiometry settings (or set "
            "steps.superres.check_inputs: false)"
        )
    suspect = bool(p01) and min(p01.values()) > OFFSET_LEFT_IN_LIMIT
    if suspect:
        log.warning(
            "%sno band of the super-resolution input goes below %.2f (1st percentiles %s): the "
            "baseline +0.1 offset may have been left in (or the scene is all cloud or snow)",
            where,
            OFFSET_LEFT_IN_LIMIT,
            p01,
        )
    return {"input_p01": p01, "input_p99": p99, "suspect_offset_left_in": suspect}


__all__ = [
    "DN_LIMIT",
    "DOUBLE_OFFSET_LIMIT",
    "INPUT_RADIOMETRY",
    "OFFSET_LEFT_IN_LIMIT",
    "check_reflectance",
]
