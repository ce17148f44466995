"""The configured processing steps of a run, in order, and the hook that runs the cloud
step's deferred multi-temporal test on co-registered pixels."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..config import Config
from ..fields import to_dict
from ..provenance import StepRecord
from ..steps.base import Scene, Step, StepPlan, StepResult

log = logging.getLogger(__name__)


def active_steps(config: Config) -> list[tuple[Step[Any], Any]]:
    """The configured steps with the configurations they run with, in run order, built by their
    plug-ins (:mod:`stac2cube.steps.registry`); not prepared."""
    return [plugin.build(section, config) for plugin, section in config.steps.configured()]


_PREPARED: dict[str, list[tuple[Step[Any], Any]]] = {}
_PREPARED_LOCK = threading.Lock()


def prepared_steps(
    config: Config, at: Callable[[str], None] | None = None
) -> list[tuple[Step[Any], Any]]:
    """:func:`active_steps`, each prepared (:meth:`~stac2cube.steps.base.Step.prepare`: a model
    loaded) once per process: a Dask worker keeps them for every scene of the run. ``at`` is
    told which step is being prepared (a failure is that step's)."""
    key = json.dumps([str(config.base_dir), to_dict(config.steps)], sort_keys=True, default=str)
    with _PREPARED_LOCK:
        steps = _PREPARED.get(key)
        if steps is None:
            steps = active_steps(config)
            for step, step_cfg in steps:
                if at is not None:
                    at(step.name)
                step.prepare(step_cfg)
            _PREPARED.clear()  # one configuration at a time: a model can be large
            _PREPARED[key] = steps
    return steps


def temporal_test_after_coreg(
    scene: Scene, records: tuple[StepRecord, ...], steps: Sequence[tuple[Step[Any], Any]]
) -> tuple[Scene, tuple[StepRecord, ...], StepResult | None]:
    """The hook that runs the cloud step's multi-temporal test on co-registered pixels.

    When co-registration follows cloud masking, :func:`active_steps` makes the cloud step defer
    the test (its shifted field edges would look like cloud against the clear-sky reference);
    called right after the coreg step, this applies it to ``scene`` as co-registered
    (:meth:`~stac2cube.steps.cloudmask.CloudMaskStep.apply_deferred_temporal`, pure) and puts
    the updated cloud record in place of the old one. Returns the scene, the records, and the
    cloud step's result when the scene has become too cloudy to write (``max_cloud_fraction``)."""
    from ..steps.cloudmask import CloudMaskStep

    deferred = [(s, c) for s, c in steps if isinstance(s, CloudMaskStep) and s.defer_temporal]
    i = next((k for k, r in enumerate(records) if r.name == CloudMaskStep.name), None)
    if not deferred or i is None:
        return scene, records, None
    step, cfg = deferred[0]
    # a scene the step left alone (no significant or no improving shift) is registered as well
    coregistered = records[-1].name == "coreg" and records[-1].results.get("status") != "failed"
    result = step.apply_deferred_temporal(scene, cfg, records[i], coregistered=coregistered)
    records = (*records[:i], result.record, *records[i + 1 :])
    return result.scene, records, None if result.skip is None else result


def tell_cloud_plan_coregistered(
    steps: Sequence[tuple[Step[Any], Any]], plans: Sequence[StepPlan]
) -> None:
    """In blocks, what :func:`temporal_test_after_coreg` knows of a scene held whole: whether
    the scene the cloud plan's deferred multi-temporal test sees is co-registered (the coreg
    plan did not fail)."""
    from ..steps.cloudmask.blocks import CloudPlan
    from ..steps.coreg.blocks import CoregPlan

    cloud = [p for p in plans if isinstance(p, CloudPlan)]
    coreg = [p for p in plans if isinstance(p, CoregPlan)]
    if cloud and coreg:
        cloud[0].coregistered = coreg[0].status != "failed"
