"""The multi-temporal cloud test (Hagolle et al. 2010, as in MAJA): a pixel whose L2A blue
reflectance exceeds the catalog's clear-sky reference by more than
``temporal_threshold * (1 + days / temporal_days)`` is cloud. Clouds brighten the blue band over
every surface while surface change moves it far less; the time term allows for more change over
longer gaps. SCL snow and pixels the reference has no clear value for are left out."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ...bands import SCL_SNOW
from ...errors import StepError
from ..base import Scene
from .config import CloudMaskConfig

log = logging.getLogger(__name__)

TEMPORAL_BAND: Final = "B02"
"""The band of the multi-temporal cloud test (the clear-sky reference is built from it)."""
TEMPORAL_DEFERRED: Final = "deferred: applied after co-registration"
"""``results["temporal"]["status"]`` of a step run with ``defer_temporal`` (until
:meth:`~stac2cube.steps.cloudmask.CloudMaskStep.apply_deferred_temporal` replaces it)."""

BoolA = NDArray[np.bool_]


def temporal_cloud_test(
    blue: np.ndarray,
    reference: np.ndarray,
    threshold: float,
    gap_days: float = 0.0,
    days_scale: float = 30.0,
) -> tuple[BoolA, float]:
    """The multi-temporal cloud test of Hagolle et al. (2010, MAJA): where the blue reflectance
    of the scene exceeds the clear-sky ``reference`` by more than
    ``threshold * (1 + gap_days / days_scale)``. Returns the mask (False where either is NaN)
    and the threshold used."""
    thr = float(threshold) * (1.0 + max(float(gap_days), 0.0) / float(days_scale))
    b = np.asarray(blue, dtype=np.float32)
    r = np.asarray(reference, dtype=np.float32)
    ok = np.isfinite(b) & np.isfinite(r)
    out: BoolA = np.greater(b - np.where(ok, r, 0.0), thr, where=ok, out=np.zeros(b.shape, bool))
    return out, thr


def _parse_time(value: Any) -> dt.datetime | None:
    """An item's ``datetime`` (UTC when it has no zone), or None when there is none."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        return None
    from pystac.utils import str_to_datetime

    try:
        t = str_to_datetime(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def temporal_test(
    scene: Scene, cfg: CloudMaskConfig, candidates: BoolA, results: dict[str, Any]
) -> BoolA:
    """Pixels of ``candidates`` the multi-temporal test calls cloud, against the clear-sky
    reference nearest in time (``scene.aux["clear_reference"]``); skipped (and recorded) without
    one, or when it is farther than ``temporal_refresh_days``. ``results["temporal"]`` says
    what it did."""
    assert cfg.temporal_threshold is not None
    ref = scene.aux.get("clear_reference")
    if ref is None:
        log.warning(
            "%s: the catalog has no clear-sky reference; multi-temporal cloud test skipped",
            scene.item_id,
        )
        results["temporal"] = {"status": "skipped: the catalog has no clear-sky reference"}
        return np.zeros(candidates.shape, dtype=bool)
    if TEMPORAL_BAND not in scene.bands:
        raise StepError(
            f"{scene.item_id}: the multi-temporal cloud test needs {TEMPORAL_BAND} in "
            "`bands`, or set steps.cloudmask.temporal_threshold: null"
        )
    t_scene = _parse_time(scene.source_properties.get("datetime"))
    gap: float | None = None
    if t_scene is not None and ref.datetime is not None:
        gap = abs((t_scene - ref.datetime).total_seconds()) / 86400.0
    version = {"reference_version": ref.version} if ref.version else {}
    refresh = cfg.temporal_refresh_days
    if gap is not None and refresh is not None and gap > refresh:
        log.warning(
            "%s: the nearest clear-sky reference is %.0f days away; multi-temporal cloud "
            "test skipped",
            scene.item_id,
            gap,
        )
        results["temporal"] = {
            "status": f"skipped: the nearest clear-sky reference is {gap:.0f} days from the "
            f"scene, more than temporal_refresh_days ({refresh:g}), and no newer version "
            "could be built (see the failure log, stage cloud-reference)",
            "reference": ref.source,
            **version,
            "gap_days": round(gap, 3),
        }
        return np.zeros(candidates.shape, dtype=bool)
    # an unknown gap counts as none: the base threshold
    hit, thr = temporal_cloud_test(
        scene.bands[TEMPORAL_BAND],
        ref.data[0],
        cfg.temporal_threshold,
        gap or 0.0,
        cfg.temporal_days,
    )
    hit &= candidates
    scl = scene.classes.get("SCL")
    if scl is not None:
        hit &= scl != SCL_SNOW
    n = max(int(candidates.sum()), 1)
    results["temporal"] = {
        "status": "applied",
        "reference": ref.source,
        **version,
        "gap_days": None if gap is None else round(gap, 3),
        "threshold": round(thr, 6),
        "added_fraction": round(float(hit.sum()) / n, 6),
    }
    return hit
