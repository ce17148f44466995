"""The cloud step, :class:`CloudMaskStep`: s2cloudless and/or SCL clouds combined by
``method``, the multi-temporal test, shadows, and the ``CLOUD_MASK`` layer they make."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...bands import (
    CLOUD_TESTS_PROPERTY,
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_SHADOW,
    SCL_NODATA,
    SCL_SHADOW,
)
from ...errors import StepError
from ...provenance import StepRecord, jsonable
from ..base import AuxRequest, LayerInfo, Scene, SceneSource, StepPlan, StepResult
from .config import CloudMaskConfig
from .layers import (
    cloud_mask_info,
    cloud_mask_layer,
    cloud_tests,
    summarise,
)
from .probability import S2CLOUDLESS_BANDS, s2cloudless_input, s2cloudless_layers
from .shadows import shadow_mask
from .temporal import TEMPORAL_BAND, TEMPORAL_DEFERRED, temporal_test

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


def require_scl(item_id: str, cfg: CloudMaskConfig, has_scl: bool) -> None:
    """Fail, saying what to change, when ``cfg`` needs the SCL layer and the scene lacks it."""
    if not cfg.uses_scl or has_scl:
        return
    needs = f"method {cfg.method!r}" if cfg.method != "s2cloudless" else ""
    if cfg.shadows in ("scl", "both"):
        needs = (needs + " and " if needs else "") + f"shadows {cfg.shadows!r}"
    raise StepError(
        f"{item_id}: steps.cloudmask {needs} needs the SCL layer; add SCL to "
        "`bands` (or use method: s2cloudless with shadows: geometric / none)"
    )


def scl_valid(valid: BoolA, scl: np.ndarray, has_bands: bool) -> BoolA:
    """``valid`` without SCL nodata (SCL's valid pixels alone for a scene without bands)."""
    out: BoolA = (valid & (scl != SCL_NODATA)) if has_bands else (scl != SCL_NODATA)
    return out


def scl_clouds(scl: np.ndarray, cfg: CloudMaskConfig, valid: BoolA) -> BoolA:
    """The SCL cloud classes of ``cfg.scl_classes`` (shadow left out) on ``valid`` pixels."""
    scl_cloud_classes = [c for c in cfg.scl_classes if c != SCL_SHADOW]
    out: BoolA = np.isin(scl, scl_cloud_classes) & valid
    return out


def combine_clouds(
    method_used: str,
    s2c_cloud: BoolA | None,
    valid_prob: BoolA,
    scl_cloud: BoolA | None,
    valid: BoolA,
) -> tuple[BoolA, BoolA]:
    """The clouds of ``method_used`` and the pixels they are known on: s2cloudless on
    ``valid_prob``, SCL on ``valid``, or their union or intersection on ``valid`` (where
    s2cloudless has no value, the SCL alone decides)."""
    if method_used == "s2cloudless":
        assert s2c_cloud is not None
        cloud, known = s2c_cloud, valid_prob
    elif method_used == "scl":
        assert scl_cloud is not None
        cloud, known = scl_cloud, valid
    else:
        assert s2c_cloud is not None and scl_cloud is not None
        if method_used == "union":
            cloud = s2c_cloud | scl_cloud
        else:
            cloud = np.where(valid_prob, s2c_cloud & scl_cloud, scl_cloud)
        known = valid
    return cloud & known, known


def parameters(cfg: CloudMaskConfig) -> dict[str, Any]:
    """The record's parameters: every field of ``cfg``, as JSON."""
    return {f.name: jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


class CloudMaskStep:
    """Cloud and cloud-shadow masking (see ``docs/cloudmask.md``)."""

    name = "cloudmask"
    version = "1.2.0"

    def __init__(self, *, defer_temporal: bool = False) -> None:
        self.defer_temporal = defer_temporal
        """Leave the multi-temporal test out of :meth:`run` (recorded as deferred) for
        :meth:`apply_deferred_temporal` to apply later: the pipeline sets it when the scene is
        co-registered after masking, so that the test compares co-registered pixels."""

    def prepare(self, cfg: CloudMaskConfig) -> None:
        """Nothing to read ahead: the s2cloudless model ships with its package and is loaded
        (once per process) when a scene first needs it."""

    def required_aux(self, cfg: CloudMaskConfig) -> Mapping[str, AuxRequest]:
        """The TOA bands of s2cloudless at ``cfg.resolution`` (none for ``method: scl``) and, for
        the multi-temporal test, the catalog's clear-sky reference on the output grid."""
        out: dict[str, AuxRequest] = {}
        if cfg.uses_s2cloudless:
            level = "l2a" if cfg.l1c == "never" else "l1c"
            out["toa"] = AuxRequest(S2CLOUDLESS_BANDS, resolution=cfg.resolution, level=level)
        if cfg.temporal_threshold is not None:
            out["clear_reference"] = AuxRequest((TEMPORAL_BAND,), 0.0, level="cloud-reference")
        return out

    def in_blocks(self, cfg: CloudMaskConfig) -> bool:
        """Every configuration runs in blocks (see :class:`~.blocks.CloudPlan` for how the
        geometric shadow search differs)."""
        return True

    def plan(self, source: SceneSource, cfg: CloudMaskConfig) -> StepPlan:
        """The scene-wide analysis of the step run in blocks (:func:`~.blocks.plan_cloudmask`):
        the s2cloudless probability on its coarse grid, read in strips, and the decisions
        :meth:`run` takes scene-wide; raises as :meth:`run` does."""
        from .blocks import plan_cloudmask  # blocks builds on this module's helpers

        return plan_cloudmask(self, source, cfg)

    def run(self, scene: Scene, cfg: CloudMaskConfig) -> StepResult:
        """Mask clouds and shadows of ``scene``; pure (no I/O)."""
        valid = scene.valid_mask()
        scl = scene.classes.get("SCL")
        require_scl(scene.item_id, cfg, scl is not None)
        if cfg.uses_scl and scl is not None:
            valid = scl_valid(valid, scl, bool(scene.bands))
        results: dict[str, Any] = {"method": cfg.method}
        classes: dict[str, np.ndarray] = dict(scene.classes)
        infos: dict[str, LayerInfo] = dict(scene.layer_info)

        # --- s2cloudless probability on the output grid
        toa_nir: F32 | None = None
        s2c_cloud: BoolA | None = None
        s2c = s2cloudless_input(scene, cfg, scl is not None)
        results["method_used"] = cfg.method if s2c.status == "run" else "scl"
        results["s2cloudless"] = s2c.record()
        if s2c.status != "run" and scl is not None:  # SCL decides: its nodata is nodata
            valid = scl_valid(valid, scl, bool(scene.bands))
        valid_prob = valid
        if s2c.toa is not None:
            s2l = s2cloudless_layers(scene, cfg, s2c.toa, valid, results)
            for name, (layer, info) in s2l.layers.items():
                classes[name] = layer
                infos[name] = info
            s2c_cloud, valid_prob, toa_nir = s2l.cloud, s2l.valid, s2l.toa_nir

        # --- SCL clouds and the combination
        scl_cloud = scl_clouds(scl, cfg, valid) if scl is not None else None
        cloud, known = combine_clouds(
            results["method_used"], s2c_cloud, valid_prob, scl_cloud, valid
        )
        if cfg.temporal_threshold is not None and self.defer_temporal:
            results["temporal"] = {"status": TEMPORAL_DEFERRED}
        elif cfg.temporal_threshold is not None:
            cloud = cloud | temporal_test(scene, cfg, known & ~cloud, results)

        shadow = shadow_mask(scene, cfg, cloud, known, toa_nir, results)

        mask = cloud_mask_layer(known, shadow, cloud)
        classes["CLOUD_MASK"] = mask
        infos["CLOUD_MASK"] = cloud_mask_info(results["method_used"], cfg)

        props = dict(scene.properties)
        props[CLOUD_TESTS_PROPERTY] = cloud_tests(cfg, results)
        skip = summarise(mask, cfg, results, props)
        n_known = int(known.sum())
        log.info(
            "%s: cloud %.1f %%, shadow %.1f %% of %d valid pixels (%s)",
            scene.item_id,
            100.0 * results["cloud_fraction"],
            100.0 * results["shadow_fraction"],
            n_known,
            results.get("toa_source", "scl"),
        )
        record = StepRecord(self.name, self.version, parameters=parameters(cfg), results=results)
        new = scene.replace(classes=classes, layer_info=infos, properties=props)
        return StepResult(new, record, skip=skip)

    def apply_deferred_temporal(
        self, scene: Scene, cfg: CloudMaskConfig, record: StepRecord, *, coregistered: bool
    ) -> StepResult:
        """The multi-temporal test that :meth:`run` deferred (``defer_temporal``), on ``scene``
        as it is now, e.g. after co-registration moved its pixels onto the reference's grid;
        pure (no I/O).

        ``record`` is this step's record from :meth:`run`. Pixels of ``CLOUD_MASK`` that are
        clear or shadow and that the test flags become cloud; the cloud, shadow and clear
        fractions, ``eo:cloud_cover`` and the ``max_cloud_fraction`` decision are recomputed
        from the new mask, and the record gets the test's results with
        ``on_coregistered_pixels`` (``coregistered``: whether the scene was co-registered).
        Shadows of the clouds only this test finds are not searched. A record whose test was
        not deferred is returned as it is."""
        results = dict(record.results)
        if cfg.temporal_threshold is None or results.get("temporal", {}).get("status") != (
            TEMPORAL_DEFERRED
        ):
            return StepResult(scene, record)
        mask = np.array(scene.classes["CLOUD_MASK"], dtype=np.uint8, copy=True)
        hit = temporal_test(scene, cfg, (mask == MASK_CLEAR) | (mask == MASK_SHADOW), results)
        results["temporal"] = {**results["temporal"], "on_coregistered_pixels": coregistered}
        mask[hit] = MASK_CLOUD
        props = dict(scene.properties)
        props[CLOUD_TESTS_PROPERTY] = cloud_tests(cfg, results)
        skip = summarise(mask, cfg, results, props)
        new = scene.replace(classes={**scene.classes, "CLOUD_MASK": mask}, properties=props)
        return StepResult(new, dataclasses.replace(record, results=results), skip=skip)
