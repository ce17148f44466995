"""How the co-registration step ends, whole or in blocks: the status and reason in the results,
the log line, the failure policy ``on_failure`` and the step's result (record, the
``stac2cube:coreg_status`` property, whether the scene is written)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Final

from ...errors import StepError
from ...provenance import StepRecord, jsonable
from ..base import Scene, Sidecar, Skip, StepResult
from .config import CoregConfig

log = logging.getLogger(__name__)


def parameters(cfg: CoregConfig) -> dict[str, Any]:
    """The configuration as the record's ``parameters``."""
    return {f.name: jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def no_reference(missing: Mapping[str, str]) -> str:
    """The failure reason when the pipeline could not provide the reference (``missing``:
    the inputs it could not provide, with why)."""
    return f"no co-registration reference: {missing.get('reference', 'not provided')}"


def conclude(
    item_id: str, cfg: CoregConfig, results: dict[str, Any], status: str, reason: str | None
) -> None:
    """Put ``status`` and ``reason`` into ``results`` and log them; a failure under
    ``on_failure: fail`` raises :class:`StepError`."""
    results["status"] = status
    if reason is not None:
        results["reason"] = reason
    if status == "ok":
        log.info(
            "%s: co-registered (%s), shift %.3f/%.3f px, reliability %s",
            item_id,
            cfg.mode,
            results["shift_px"][0],
            results["shift_px"][1],
            results.get("reliability"),
        )
    elif status != "failed":
        log.info("%s: co-registration %s: %s", item_id, cfg.mode, reason)
    else:
        log.warning(
            "%s: co-registration failed: %s (on_failure: %s)", item_id, reason, cfg.on_failure
        )
        if cfg.on_failure == "fail":
            raise StepError(
                f"{item_id}: co-registration failed: {reason}; set "
                "steps.coreg.on_failure to keep (write unshifted) or skip to go on"
            )


FAILED_SKIP: Final = "coreg-failed"
"""The :attr:`Skip.code` of a scene not written because co-registration failed under
``on_failure: skip``."""


def skip_of(results: Mapping[str, Any], cfg: CoregConfig) -> Skip | None:
    """Why a scene whose co-registration ended with ``results`` is not written: a failure
    under ``on_failure: skip``; None: it is written."""
    if results["status"] != "failed" or cfg.on_failure != "skip":
        return None
    return Skip(FAILED_SKIP, f"co-registration failed: {results.get('reason')} (on_failure: skip)")


def step_result(
    name: str,
    version: str,
    cfg: CoregConfig,
    scene: Scene,
    results: Mapping[str, Any],
    sidecars: Mapping[str, Sidecar],
) -> StepResult:
    """The step's result: ``scene`` (the input, corrected or not) with the status property and
    ``sidecars``, the record (``results`` concluded, plus the layers on other grids that were
    not corrected) and whether it is written (:func:`skip_of`)."""
    results = dict(results)
    if scene.layers:
        results["layers_not_corrected"] = sorted(scene.layers)
    record = StepRecord(name, version, parameters=parameters(cfg), results=results)
    props = dict(scene.properties)
    props["stac2cube:coreg_status"] = results["status"]
    new = scene.replace(properties=props, sidecars=dict(sidecars))
    return StepResult(new, record, skip=skip_of(results, cfg))
