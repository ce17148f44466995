"""One scene as a unit of work: the task a worker receives, what it returns, and
:func:`process_scene`, which reads, runs the steps and writes the scene's files."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pystac

from ..catalog import (
    CatalogStore,
)
from ..catalog.item import write_scene
from ..config import Config
from ..errors import (
    Stac2CubeError,
)
from ..grid import NATIVE_ALIGNMENT, load_aoi, target_geobox
from ..steps.base import StepResult
from .blocks import in_blocks, write_scene_in_blocks
from .blocksteps import steps_in_blocks, write_scene_with_steps_in_blocks
from .read import read_aux, read_scene
from .steps import prepared_steps, temporal_test_after_coreg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneTask:
    """Everything a worker needs to process one scene; it pickles to Dask workers (the items as
    their JSON, the configuration as itself)."""

    item_id: str
    item: dict[str, Any]
    item_href: str | None
    twin: dict[str, Any] | None
    twin_href: str | None
    config: Config
    reason: str

    @classmethod
    def create(
        cls, item: pystac.Item, twin: pystac.Item | None, config: Config, reason: str
    ) -> SceneTask:
        def as_dict(it: pystac.Item) -> dict[str, Any]:
            return it.to_dict(include_self_link=False, transform_hrefs=False)

        return cls(
            item.id,
            as_dict(item),
            item.get_self_href(),
            as_dict(twin) if twin is not None else None,
            twin.get_self_href() if twin is not None else None,
            config,
            reason,
        )


@dataclass(frozen=True)
class SceneResult:
    """What a worker returns: the item JSON (its COGs are in the staging directory), or why the
    scene was filtered or failed."""

    item_id: str
    status: Literal["written", "filtered", "failed"]
    stage: str
    message: str
    seconds: float
    doc: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    error: str = ""


def _item(d: Mapping[str, Any], href: str | None) -> pystac.Item:
    it = pystac.Item.from_dict(dict(d), preserve_dict=False)
    if href is not None:
        it.set_self_href(href)
    return it


def process_scene(task: SceneTask) -> SceneResult:
    """Read, harmonise, run the steps and write the COGs of one scene (on any worker).

    Writes only into the scene's staging directory; the catalog itself is changed by the client
    (:func:`run`) when it commits the result. Never raises: failures come back as results.
    """
    t0 = time.perf_counter()
    stage = "read"
    try:
        config = task.config
        item = _item(task.item, task.item_href)
        twin = _item(task.twin, task.twin_href) if task.twin is not None else None
        aoi = load_aoi(config.aoi, config.base_dir)
        native = config.output.native_resolution
        geobox = target_geobox(aoi, config.grid, align=NATIVE_ALIGNMENT if native else None)
        store = CatalogStore(config.catalog_dir, config.output.collection_id)

        def at(name: str) -> None:
            nonlocal stage
            stage = name

        steps = prepared_steps(config, at)  # once per worker: a failure is the step's
        stage = "read"
        if not steps and in_blocks(config):
            doc = write_scene_in_blocks(item, config, geobox, store, started=t0, at=at)
            return SceneResult(
                item.id, "written", "done", task.reason, time.perf_counter() - t0, doc=doc
            )
        if steps and steps_in_blocks(config, steps, geobox.shape.yx):
            streamed, skipped = write_scene_with_steps_in_blocks(
                item, twin, config, geobox, store, steps, started=t0, at=at
            )
            if skipped is not None:
                return _filtered(item.id, skipped, t0)
            return SceneResult(
                item.id, "written", "done", task.reason, time.perf_counter() - t0, doc=streamed
            )
        scene, inputs, records = read_scene(item, config, geobox)
        if steps:
            scene, aux_inputs = read_aux(item, twin, scene, steps, config)
            inputs += aux_inputs
        for step, step_cfg in steps:
            stage = step.name
            result = step.run(scene, step_cfg)
            scene, records = result.scene, (*records, result.record)
            filtered = None if result.skip is None else result
            if step.name == "coreg" and filtered is None:
                scene, records, filtered = temporal_test_after_coreg(scene, records, steps)
            if filtered is not None:
                return _filtered(item.id, filtered, t0)
        stage = "write"
        doc = write_scene(scene, item, inputs, records, config, store, started=t0)
    except Stac2CubeError as exc:
        log.warning("%s failed at %s: %s", task.item_id, stage, exc)
        return SceneResult(
            task.item_id,
            "failed",
            stage,
            str(exc),
            time.perf_counter() - t0,
            error=type(exc).__name__,
        )
    except Exception as exc:  # an unexpected bug must not lose the other scenes
        log.exception("%s failed unexpectedly at %s", task.item_id, stage)
        return SceneResult(
            task.item_id,
            "failed",
            stage,
            f"{type(exc).__name__}: {exc}",
            time.perf_counter() - t0,
            error=type(exc).__name__,
        )
    return SceneResult(item.id, "written", "done", task.reason, time.perf_counter() - t0, doc=doc)


def _filtered(item_id: str, result: StepResult, t0: float) -> SceneResult:
    """The result of a scene a step decided not to write (``result.skip``)."""
    assert result.skip is not None
    return SceneResult(
        item_id,
        "filtered",
        result.record.name,
        result.skip.message,
        time.perf_counter() - t0,
        results=dict(result.record.results),
    )
