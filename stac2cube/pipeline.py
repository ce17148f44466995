"""Run the pipeline: search, then for each scene read → harmonise → steps → COGs → STAC item.

Each scene is an independent unit whose output is one STAC item. A scene that fails (missing
asset, unreadable COG, no overlap with the AOI, ...) is recorded in the catalog's failure log and
the run goes on. A re-run processes only what is missing, failed or stale (other source version
or other processing configuration); complete items are left untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pystac
import rasterio
import rasterio.errors
import shapely.geometry
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension

from . import __version__
from .bands import S2_BANDS, find_asset
from .config import Config, config_from_dict, to_dict
from .cube.index import (
    index_path,
    invalidate_index,
    read_index_table,
    set_aside_index,
    write_index,
)
from .errors import (
    AssetAccessError,
    ConfigError,
    EmptySearchError,
    ItemError,
    NoOverlapError,
    SearchError,
    Stac2CubeError,
)
from .grid import footprint_lonlat, load_aoi, target_geobox
from .io.atomic import write_bytes_atomic
from .io.catalog import (
    CLOUD_REFERENCE_ASSET,
    REFERENCE_ASSET,
    REFERENCE_DIRS,
    CatalogStore,
    load_template,
    reference_base_key,
    reference_version_key,
)
from .io.cog import CogFile, file_checksum, write_cog
from .io.read import BandRead, asset_href, read_band, requester_pays
from .provenance import InputRecord, Provenance, SourceRecord, StepRecord, software_versions
from .radiometry import (
    RadiometryOverride,
    baseline_from_properties,
    from_reflectance,
    processing_baseline,
    storage_encoding,
)
from .search import search
from .steps.base import AuxLayer, AuxRequest, LayerInfo, Scene, Sidecar, Step
from .steps.cloudmask import S2CLOUDLESS_BANDS, TEMPORAL_BAND, CloudMaskConfig

if TYPE_CHECKING:
    from .steps.coreg import CoregConfig

log = logging.getLogger(__name__)

Status = Literal["written", "skipped", "filtered", "failed", "rejected"]

SCL_CLASSES = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene in a run."""

    item_id: str
    status: Status
    stage: str = ""
    message: str = ""
    seconds: float = 0.0
    s2cloudless_not_run: str = ""
    """Why the configured s2cloudless did not run on this scene (``no L1C twin``, ``L1C read
    refused: ...``); empty when it ran or was not configured."""
    cloud_method: str = ""
    """The cloud masking that ran instead (``scl``, ``scl + multi-temporal test``)."""
    coreg_status: str = ""
    """The co-registration step's status (``ok``, ``not_significant``, ``no_improvement``,
    ``failed``); empty when it did not run."""
    coreg_reason: str = ""
    """Why a correction was not applied or the match failed (empty when applied)."""


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the ``progress`` callback after each scene (and once with ``total`` first)."""

    done: int
    total: int
    outcome: SceneOutcome | None


@dataclass(frozen=True)
class RunSummary:
    """The result of :func:`run`."""

    run_id: str
    catalog: str
    search_method: str
    outcomes: tuple[SceneOutcome, ...] = field(default_factory=tuple)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def written(self) -> int:
        return self.count("written")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def filtered(self) -> int:
        return self.count("filtered")

    @property
    def failed(self) -> int:
        return self.count("failed") + self.count("rejected")

    def coreg_statuses(self) -> dict[str, int]:
        """Scenes of this run counted by co-registration status (empty without the step)."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            if o.coreg_status:
                out[o.coreg_status] = out.get(o.coreg_status, 0) + 1
        return out

    def without_s2cloudless(self) -> dict[tuple[str, str], int]:
        """Scenes of this run masked without the configured s2cloudless, counted by why (the
        reason up to its first colon: ``no L1C twin``, ``L1C read refused``) and by the cloud
        masking used instead (``scl``, ``scl + multi-temporal test``)."""
        out: dict[tuple[str, str], int] = {}
        for o in self.outcomes:
            if o.s2cloudless_not_run:
                key = (o.s2cloudless_not_run.partition(":")[0], o.cloud_method)
                out[key] = out.get(key, 0) + 1
        return out


ProgressCallback = Callable[[ProgressEvent], None]


def run(config: Config, *, progress: ProgressCallback | None = None) -> RunSummary:
    """Search the source and write every new, failed or stale scene into the catalog."""
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    aoi = load_aoi(config.aoi, config.base_dir)
    target_geobox(aoi, config.grid)  # fail early on a bad grid, before any work
    out = config.output
    store = CatalogStore(
        config.catalog_dir,
        out.collection_id,
        title=out.title,
        description=out.description,
        license=out.license,
    )
    lock = store.lock()
    lock.acquire()  # CatalogLockedError if another run writes this catalog
    try:
        # a run that ended normally left nothing to recover; taking its mark first means that
        # if this run is killed, the next one recovers in full
        after_clean_exit = store.take_clean_mark()
        store.create()
        recovered = store.recover(after_clean_exit=after_clean_exit)
        if recovered:
            log.info("cleaned up %d leftover(s) of an interrupted run", len(recovered))
        if config.output.kerchunk:
            from .cube.kerchunk import build_references

            # a run killed between committing an item and writing its references
            rebuilt = build_references(store.root)
            if rebuilt:
                log.info("wrote %d missing kerchunk reference file(s)", len(rebuilt))
        steps = active_steps(config)
        need_twins = any(r.level == "l1c" for s, c in steps for r in s.required_aux(c).values())
        # what the catalog holds, from its index when current (a few columns, not the items)
        plan_index = read_index_table(store, columns=_PLAN_COLUMNS)
        try:
            found = search(
                config.source,
                aoi,
                config.time,
                base_dir=config.base_dir,
                # items the catalog holds up to date are not even parsed (an update of a large
                # catalog); the L1C twin search needs every item parsed
                unchanged=None if need_twins else _unchanged_check(config, store, plan_index),
            )
        except SearchError as exc:
            store.record_failure("<search>", "search", exc, run_id=run_id)
            raise
        outcomes: list[SceneOutcome] = []
        for rej in found.rejected:
            store.record_failure(rej.item_id, rej.stage, ItemError(rej.message), run_id=run_id)
            outcomes.append(SceneOutcome(rej.item_id, "rejected", rej.stage, rej.message))
        twins: dict[str, pystac.Item] = {}
        if need_twins:
            twins = find_l1c_twins(config, aoi, found.items, store, run_id)
        total = len(found.items) + len(found.unchanged)
        if progress:
            progress(ProgressEvent(0, total, None))
        done = 0

        def report(outcome: SceneOutcome) -> None:
            nonlocal done
            done += 1
            outcomes.append(outcome)
            if progress:
                progress(ProgressEvent(done, total, outcome))

        for item_id in found.unchanged:
            report(SceneOutcome(item_id, "skipped", "plan", "up to date"))
        planned: dict[str, tuple[SceneTask, pystac.Item, Mapping[str, Any] | None]] = {}
        failed_before = {f.item_id for f in store.failures()}
        filtered_before = store.filtered()  # read the logs once, not once per scene
        probe = l1c_access_probe(config)  # asked only if an item's L1C read was refused
        for item in found.items:
            twin = twins.get(item.id)
            skip, reason, existing = _plan(
                item, twin, config, store, failed_before, filtered_before.get(item.id), probe
            )
            if skip is not None:
                report(skip)
            else:
                assert reason is not None
                task = SceneTask.create(item, twin, config, reason)
                planned[item.id] = (task, item, existing)
        if planned:
            new_items = [it for _, it, _ in planned.values()]
            cm = config.steps.cloudmask
            if cm is not None and cm.temporal_threshold is not None:
                ensure_cloud_reference(config, new_items, twins, store, run_id)
            if config.steps.coreg is not None:
                ensure_reference(config, new_items, twins, store, run_id)
        previous_index = None
        if planned:
            # the stac-geoparquet index is rewritten after the commits; until then (or after a
            # crash) readers fall back to the item JSON files. A current one is kept aside: its
            # rows of the items this run leaves alone go into the new one
            if plan_index is not None:
                previous_index = set_aside_index(store)
            invalidate_index(store)
        for result in execute(config, [t for t, _, _ in planned.values()]):
            task, item, existing = planned[result.item_id]
            report(_commit(result, task, item, existing, config, store, run_id))
        if planned or not index_path(store).exists():
            try:
                write_index(store, reuse=previous_index, changed=planned)
            except Stac2CubeError as exc:  # a missing index only slows reading
                log.warning("catalog index not written: %s", exc)
            finally:
                if previous_index is not None:
                    previous_index.unlink(missing_ok=True)
        store.set_clean_mark()
        return RunSummary(run_id, str(store.root), found.method, tuple(outcomes))
    finally:
        lock.release()


def _plan(
    item: pystac.Item,
    twin: pystac.Item | None,
    config: Config,
    store: CatalogStore,
    failed_before: set[str],
    filtered: Mapping[str, Any] | None,
    l1c_readable: Callable[[pystac.Item], bool] | None = None,
) -> tuple[SceneOutcome | None, str | None, Mapping[str, Any] | None]:
    """Decide on the client whether a scene needs work: (skip outcome | None, reason, existing)."""
    if filtered is not None and _same_source_and_config(item, filtered, config):
        return (
            SceneOutcome(item.id, "skipped", "plan", f"filtered: {filtered['reason']}"),
            None,
            None,
        )
    existing = store.read_item(item.id)
    reason = needs_processing(item, existing, config, twin=twin, l1c_readable=l1c_readable)
    if reason is None:
        return SceneOutcome(item.id, "skipped", "plan", "up to date"), None, None
    if item.id in failed_before and reason == "new":
        if not config.run.reprocess_failed:
            return SceneOutcome(item.id, "skipped", "plan", "failed before"), None, None
        reason = "failed before"
    if reason.startswith("stale"):
        log.info("%s is %s: it will be replaced", item.id, reason)
    return None, reason, existing


@dataclass(frozen=True)
class SceneTask:
    """Everything a worker needs to process one scene; plain data, so it pickles to Dask workers
    (the config travels as its dict and is rebuilt there)."""

    item_id: str
    item: dict[str, Any]
    item_href: str | None
    twin: dict[str, Any] | None
    twin_href: str | None
    config: dict[str, Any]
    base_dir: str
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
            to_dict(config),
            str(config.base_dir),
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
        config = config_from_dict(task.config, base_dir=task.base_dir)
        item = _item(task.item, task.item_href)
        twin = _item(task.twin, task.twin_href) if task.twin is not None else None
        aoi = load_aoi(config.aoi, config.base_dir)
        geobox = target_geobox(aoi, config.grid)
        store = CatalogStore(config.catalog_dir, config.output.collection_id)
        steps = active_steps(config)
        scene, inputs, records = read_scene(item, config, geobox)
        if steps:
            scene, aux_inputs = read_aux(item, twin, scene, steps, config)
            inputs += aux_inputs
        for step, step_cfg in steps:
            stage = step.name
            result = step.run(scene, step_cfg)
            scene, records = result.scene, (*records, result.record)
            filtered_by = None if result.write else result.record
            if step.name == "coreg" and result.write:
                scene, records, filtered_by = temporal_test_after_coreg(scene, records, steps)
            if filtered_by is not None:
                note = str(
                    filtered_by.results.get("note", f"{filtered_by.name} filtered the scene")
                )
                return SceneResult(
                    item.id,
                    "filtered",
                    filtered_by.name,
                    note,
                    time.perf_counter() - t0,
                    results=dict(filtered_by.results),
                )
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


def temporal_test_after_coreg(
    scene: Scene, records: tuple[StepRecord, ...], steps: Sequence[tuple[Step[Any], Any]]
) -> tuple[Scene, tuple[StepRecord, ...], StepRecord | None]:
    """The hook that runs the cloud step's multi-temporal test on co-registered pixels.

    When co-registration follows cloud masking, :func:`active_steps` makes the cloud step defer
    the test (its shifted field edges would look like cloud against the clear-sky reference);
    called right after the coreg step, this applies it to ``scene`` as co-registered
    (:meth:`~stac2cube.steps.cloudmask.CloudMaskStep.apply_deferred_temporal`, pure) and puts
    the updated cloud record in place of the old one. Returns the scene, the records, and the
    cloud record when the scene has become too cloudy to write (``max_cloud_fraction``)."""
    from .steps.cloudmask import CloudMaskStep

    deferred = [(s, c) for s, c in steps if isinstance(s, CloudMaskStep) and s.defer_temporal]
    i = next((k for k, r in enumerate(records) if r.name == CloudMaskStep.name), None)
    if not deferred or i is None:
        return scene, records, None
    step, cfg = deferred[0]
    # a scene the step left alone (no significant or no improving shift) is registered as well
    coregistered = records[-1].name == "coreg" and records[-1].results.get("status") != "failed"
    result = step.apply_deferred_temporal(scene, cfg, records[i], coregistered=coregistered)
    records = (*records[:i], result.record, *records[i + 1 :])
    return result.scene, records, None if result.write else result.record


def _commit(
    result: SceneResult,
    task: SceneTask,
    source: pystac.Item,
    existing: Mapping[str, Any] | None,
    config: Config,
    store: CatalogStore,
    run_id: str,
) -> SceneOutcome:
    """Apply a scene's result to the catalog (client side: the only writer of catalog JSON)."""
    outcome = SceneOutcome(
        result.item_id,
        result.status,
        result.stage,
        result.message,
        result.seconds,
        **_cloud_outcome(result),
        **_coreg_outcome(result),
    )
    if result.status == "failed":
        store.record_failure(
            result.item_id,
            result.stage,
            _ReportedError(result.error, result.message),
            run_id=run_id,
        )
        shutil.rmtree(store.staging_dir(result.item_id), ignore_errors=True)
    elif result.status == "filtered":
        from .cube.kerchunk import remove_item_references

        store.record_filtered(source, config.config_hash, result.message, result.results or {})
        store.remove_item(result.item_id)
        remove_item_references(store, result.item_id)
    else:
        assert result.doc is not None
        doc = result.doc
        if existing is not None:
            doc["properties"]["stac2cube:replaces"] = replaced_versions(existing, task.reason)
        store.add_item(doc)
        if config.output.kerchunk:
            from .cube.kerchunk import write_item_references

            try:
                write_item_references(store, doc)
            except Exception as exc:  # the item is fine; only its virtual-view entry is missing
                log.warning("kerchunk references of %s failed: %s", result.item_id, exc)
                store.record_failure(result.item_id, "kerchunk", exc, run_id=run_id)
    return outcome


def _coreg_outcome(result: SceneResult) -> dict[str, str]:
    """``SceneOutcome`` fields of the co-registration step's outcome."""
    if result.doc is None:
        return {}
    steps = result.doc.get("properties", {}).get("stac2cube:steps", [])
    found = [s.get("results", {}) for s in steps if s.get("name") == "coreg"]
    if not found:
        return {}
    status = str(found[0].get("status", ""))
    return {
        "coreg_status": status,
        "coreg_reason": "" if status == "ok" else str(found[0].get("reason", "")),
    }


def _cloud_outcome(result: SceneResult) -> dict[str, str]:
    """``SceneOutcome`` fields of a scene masked without the configured s2cloudless."""
    if result.doc is not None:
        steps = result.doc.get("properties", {}).get("stac2cube:steps", [])
        found = [s.get("results", {}) for s in steps if s.get("name") == "cloudmask"]
        res: Mapping[str, Any] = found[0] if found else {}
    else:  # filtered by the cloud step: its results came back
        res = result.results or {}
    s2c = res.get("s2cloudless")
    if not isinstance(s2c, Mapping) or s2c.get("status") != "not run":
        return {}
    method = str(res.get("method_used", "scl"))
    if res.get("temporal", {}).get("status") == "applied":
        method += " + multi-temporal test"
    return {"s2cloudless_not_run": str(s2c.get("reason", "")), "cloud_method": method}


class _ReportedError(Exception):
    """An error that happened on a worker, carried to the failure log under its own name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.error_name = name


def execute(config: Config, tasks: Sequence[SceneTask]) -> Iterator[SceneResult]:
    """Run the tasks in this process (``run.executor: serial``) or on a Dask cluster, yielding
    results as they complete. A worker that dies (e.g. out of memory) fails only its scene."""
    if not tasks:
        return
    if config.run.executor == "serial" or (config.run.executor == "local" and len(tasks) == 1):
        for task in tasks:
            yield process_scene(task)
        return
    from distributed import as_completed

    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(dask_client(config, n_tasks=len(tasks)))
    except (RuntimeError, OSError, TimeoutError) as exc:
        if config.run.executor != "local":
            raise ConfigError(
                f"cannot reach the Dask cluster of run.executor {config.run.executor!r}: {exc}"
            ) from exc
        log.warning(
            "could not start a local Dask cluster (%s); running the scenes in this process. "
            "Scripts that call stac2cube.run() need an `if __name__ == '__main__':` guard for "
            "the cluster's worker processes (or set run.executor: serial)",
            exc,
        )
        for task in tasks:
            yield process_scene(task)
        return
    with stack:
        futures = {
            client.submit(process_scene, t, key=f"stac2cube-scene-{t.item_id}", pure=False): t
            for t in tasks
        }
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # KilledWorker, lost connection: the scene fails, run goes on
                yield SceneResult(
                    task.item_id,
                    "failed",
                    "worker",
                    f"{type(exc).__name__}: {exc}",
                    0.0,
                    error=type(exc).__name__,
                )


@contextlib.contextmanager
def dask_client(config: Config, n_tasks: int | None = None) -> Iterator[Any]:
    """A Dask client: a LocalCluster (``local``) or the scheduler at ``run.executor``."""
    from distributed import Client, LocalCluster

    rc = config.run
    # the in-process scheduler logs its start-up at INFO (dask's default): keep it quiet
    dlog = logging.getLogger("distributed")
    if dlog.level in (logging.NOTSET, logging.INFO):
        dlog.setLevel(logging.WARNING)
    if rc.executor == "local":
        with (
            LocalCluster(
                n_workers=min(rc.workers or os.cpu_count() or 1, n_tasks or 1 << 16),
                threads_per_worker=1,
                processes=True,
                memory_limit=rc.memory_limit,
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False},
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    elif rc.executor == "slurm":
        with slurm_cluster(config) as cluster, Client(cluster) as client:
            cluster.scale(jobs=rc.slurm.jobs)
            yield client
    else:
        with Client(rc.executor) as client:
            yield client


def slurm_cluster(config: Config) -> Any:
    """The ``dask_jobqueue.SLURMCluster`` of ``run.slurm`` (no job is submitted until scaled)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError(
            "run.executor slurm needs dask-jobqueue: `pip install 'stac2cube[hpc]'`"
        ) from None
    return SLURMCluster(**config.run.slurm.cluster_kwargs())


def slurm_job_script(config: Config) -> str:
    """The ``sbatch`` script each SLURM job of ``run.slurm`` runs (to check before a big run)."""
    with slurm_cluster(config) as cluster:
        script: str = cluster.job_script()
    return script


def replaced_versions(existing: Mapping[str, Any], reason: str) -> list[dict[str, Any]]:
    """The ``stac2cube:replaces`` record of a new item version: what it replaced and why
    (the last 10 versions)."""
    props = existing.get("properties", {})
    prev = {
        "reason": reason,
        "config_hash": props.get("stac2cube:config_hash"),
        "source": props.get("stac2cube:source"),
        "finished": props.get("stac2cube:finished"),
        "software": props.get("processing:software", {}).get("stac2cube"),
    }
    return [prev, *props.get("stac2cube:replaces", [])][:10]


def _same_source_and_config(source: pystac.Item, record: Mapping[str, Any], config: Config) -> bool:
    return bool(
        record.get("config_hash") == config.config_hash
        and record.get("source_updated") == source.properties.get("updated")
        and record.get("processing_baseline") == processing_baseline(source)
    )


def active_steps(config: Config) -> list[tuple[Step[Any], Any]]:
    """The configured steps with their configs, in run order."""
    steps: list[tuple[Step[Any], Any]] = []
    if config.steps.cloudmask is not None:
        from .steps.cloudmask import CloudMaskStep

        # co-registration follows: the temporal test waits for its pixels
        defer = config.steps.coreg is not None
        steps.append((CloudMaskStep(defer_temporal=defer), config.steps.cloudmask))
    if config.steps.coreg is not None:
        from .steps.coreg import CoregStep

        steps.append((CoregStep(), config.steps.coreg))
    if config.steps.superres is not None:
        from .steps.superres import SuperResStep

        sr = config.steps.superres

        def local(p: str | None) -> str | None:
            return p if p is None or "://" in p else str(config.resolve_path(p))

        sr = dataclasses.replace(
            sr, bundle=local(sr.bundle), weights=local(sr.weights), cache_dir=local(sr.cache_dir)
        )
        steps.append((SuperResStep(), sr))
    return steps


def needs_processing(
    source: pystac.Item,
    existing: Mapping[str, Any] | None,
    config: Config,
    *,
    twin: pystac.Item | None = None,
    l1c_readable: Callable[[pystac.Item], bool] | None = None,
) -> str | None:
    """Why ``source`` must be processed (``new``, ``stale: ...``), or None if up to date.

    ``twin`` is the L1C twin found in this run (if a step needs one): an item built without it
    (masked without s2cloudless) or with another twin is stale. An item masked without it
    because reading this very twin was refused is stale only when ``l1c_readable(twin)`` says
    the storage serves it now (an update without L1C credentials must not redo every scene).
    """
    reason = _staleness(source.id, source.properties, existing, config)
    if reason is not None or existing is None:
        return reason
    props = existing.get("properties", {})
    if twin is not None:
        used = {
            i["item"] for i in props.get("stac2cube:inputs", []) if i["band"].startswith("toa:")
        }
        if used != {twin.id}:
            if not _l1c_refused(props, twin.id):
                return "stale: L1C twin now available"
            if l1c_readable is not None and l1c_readable(twin):
                return "stale: L1C twin readable now"
    return None


def l1c_access_probe(config: Config) -> Callable[[pystac.Item], bool]:
    """``probe(twin)``: whether the storage serves the L1C twin's assets now (opens one asset,
    reads no pixels). Asked once per run, on the first twin: the twins of a run share a store
    and the credentials."""
    answer: list[bool] = []

    def probe(twin: pystac.Item) -> bool:
        if not answer:
            try:
                _, asset = find_asset(twin, S2CLOUDLESS_BANDS[0], resolution=60)
                with l1c_env(twin, config), rasterio.open(asset_href(asset)):
                    answer.append(True)
            except (Stac2CubeError, rasterio.errors.RasterioError, OSError) as exc:
                log.info("L1C twins still not readable: %s", exc)
                answer.append(False)
        return answer[0]

    return probe


def _l1c_refused(props: Mapping[str, Any], twin_id: str) -> bool:
    """Whether the item (its properties) was masked without s2cloudless because reading the L1C
    twin ``twin_id`` was refused."""
    for step in props.get("stac2cube:steps", []):
        s2c = step.get("results", {}).get("s2cloudless")
        if step.get("name") == "cloudmask" and isinstance(s2c, Mapping):
            reason = str(s2c.get("reason", ""))
            return reason.startswith("L1C read refused") and twin_id in reason
    return False


def _staleness(
    source_id: str,
    source_props: Mapping[str, Any],
    existing: Mapping[str, Any] | None,
    config: Config,
) -> str | None:
    """:func:`needs_processing` without the L1C twin, from the source's id and properties."""
    if existing is None:
        return "new"
    props = existing.get("properties", {})
    if props.get("stac2cube:config_hash") != config.config_hash:
        return "stale: other processing configuration"
    src = props.get("stac2cube:source", {})
    if src.get("updated") != source_props.get("updated"):
        return "stale: source item updated"
    if src.get("processing_baseline") != baseline_from_properties(source_id, source_props):
        return "stale: new processing baseline"
    return None


_PLAN_COLUMNS = ("id", "stac2cube:config_hash", "stac2cube:source")


def _unchanged_check(
    config: Config, store: CatalogStore, index: Any = None
) -> Callable[[Mapping[str, Any]], bool]:
    """What ``search(unchanged=...)`` asks about each raw source item: does the catalog already
    hold it, up to date? (Only used when no step needs an L1C twin, whose search needs the
    parsed items.) With the catalog's current index (:func:`read_index_table`) the answer comes
    from its columns, without reading one item JSON per scene."""
    known: dict[str, dict[str, Any]] | None = None
    if index is not None and set(_PLAN_COLUMNS) <= set(index.column_names):
        ids, hashes, sources = (index.column(c).to_pylist() for c in _PLAN_COLUMNS)
        known = {
            str(i): {"properties": {_PLAN_COLUMNS[1]: h, _PLAN_COLUMNS[2]: src or {}}}
            for i, h, src in zip(ids, hashes, sources, strict=True)
        }

    def check(feat: Mapping[str, Any]) -> bool:
        item_id = str(feat["id"])
        existing = known.get(item_id) if known is not None else store.read_item(item_id)
        return (
            existing is not None
            and _staleness(item_id, feat["properties"], existing, config) is None
        )

    return check


# --------------------------------------------------------------------------------- read


def read_scene(
    item: pystac.Item, config: Config, geobox: GeoBox
) -> tuple[Scene, tuple[InputRecord, ...], tuple[StepRecord, ...]]:
    """Read and harmonise every configured band of ``item`` onto ``geobox``."""
    ov_cfg = config.radiometry.overrides.get(item.collection_id or "")
    override = RadiometryOverride(ov_cfg.scale, ov_cfg.offset) if ov_cfg else None
    reads: dict[str, BandRead] = {}
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="3"):
        for band in config.bands:
            reads[band] = read_band(item, band, geobox, override=override)
    bands = {b: r.data for b, r in reads.items() if S2_BANDS[b].kind != "classification"}
    classes = {b: r.data for b, r in reads.items() if S2_BANDS[b].kind == "classification"}
    scene = Scene(
        item_id=item.id,
        geobox=geobox,
        bands=bands,
        classes=classes,
        source_properties=dict(item.properties),
    )
    valid = (
        scene.valid_mask() if bands else np.logical_and.reduce([a > 0 for a in classes.values()])
    )
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise NoOverlapError(
            f"{item.id} has no valid pixel inside the AOI (all bands are nodata there); the "
            "scene's footprint only touches the AOI's bounding box or lies on a swath edge"
        )
    inputs = tuple(InputRecord(b, r.asset_key, r.href, item.id) for b, r in reads.items())
    harmonise = StepRecord(
        name="harmonise",
        version=__version__,
        parameters={
            "grid": {
                "crs": str(geobox.crs),
                "resolution": float(geobox.resolution.x),
                "shape": list(geobox.shape.yx),
            },
        },
        results={
            "processing_baseline": processing_baseline(item),
            "bands": {
                b: {
                    "scale": r.radiometry.scale,
                    "offset": r.radiometry.offset,
                    "source": r.radiometry.source,
                    **({"note": r.radiometry.note} if r.radiometry.note else {}),
                    "resampling": r.resampling,
                    "source_resolution": r.source_resolution,
                }
                for b, r in reads.items()
            },
            "valid_fraction": round(n_valid / valid.size, 6),
        },
    )
    return scene, inputs, (harmonise,)


# --------------------------------------------------------------------------- L1C twins

_TILE_RE = re.compile(r"_T?(\d{2}[C-X][A-Z]{2})_")


def mgrs_tile(item: pystac.Item) -> str | None:
    """The MGRS tile of a Sentinel-2 item (``33TWN``) from its properties or id."""
    p = item.properties
    if p.get("mgrs:utm_zone") and p.get("mgrs:latitude_band") and p.get("mgrs:grid_square"):
        return f"{int(p['mgrs:utm_zone']):02d}{p['mgrs:latitude_band']}{p['mgrs:grid_square']}"
    for key in ("s2:mgrs_tile", "sentinel:mgrs_tile", "grid:code"):
        if p.get(key):
            return str(p[key]).removeprefix("MGRS-")
    m = _TILE_RE.search(item.id + "_")
    return m.group(1) if m else None


def find_l1c_twins(
    config: Config,
    aoi: Any,
    items: Sequence[pystac.Item],
    store: CatalogStore,
    run_id: str,
) -> dict[str, pystac.Item]:
    """Pair each L2A item with its L1C twin: same MGRS tile, acquired within 60 s.

    A failing L1C search is logged (stage ``search-l1c``); the cloud step then masks without
    s2cloudless (SCL), and its provenance says so. Dates are never mismatched.
    """
    src = config.source
    coll = src.l1c_collection
    if coll is None:
        log.info("source.l1c_collection is null: cloud masking runs without s2cloudless (SCL)")
        return {}
    l1c_source = dataclasses.replace(
        src,
        max_cloud_cover=None,
        max_items=None,
        path=src.l1c_path if src.l1c_path is not None else src.path,
    )
    try:
        found = search(l1c_source, aoi, config.time, collection=coll, base_dir=config.base_dir)
    except EmptySearchError:
        log.info("no %s twins found; cloud masking runs without s2cloudless (SCL)", coll)
        return {}
    except SearchError as exc:
        store.record_failure("<search-l1c>", "search-l1c", exc, run_id=run_id)
        log.warning("L1C search failed (%s); cloud masking runs without s2cloudless (SCL)", exc)
        return {}
    twins: dict[str, pystac.Item] = {}
    for item in items:
        tile, t = mgrs_tile(item), item.datetime
        best: tuple[float, pystac.Item] | None = None
        for cand in found.items:
            if cand.datetime is None or t is None or mgrs_tile(cand) != tile:
                continue
            gap = abs((cand.datetime - t).total_seconds())
            if gap <= 60 and (best is None or gap < best[0]):
                best = (gap, cand)
        if best is not None:
            twins[item.id] = best[1]
    log.info("paired %d of %d scenes with an L1C twin", len(twins), len(items))
    return twins


def read_aux(
    item: pystac.Item,
    twin: pystac.Item | None,
    scene: Scene,
    steps: Sequence[tuple[Step[Any], Any]],
    config: Config,
) -> tuple[Scene, tuple[InputRecord, ...]]:
    """Read what the steps ask for (e.g. L1C TOA bands at 60 m) into ``scene.aux``.

    L1C bands come from the twin only: without one, or when the storage refuses the read
    (:class:`~stac2cube.errors.AssetAccessError`), ``scene.missing_aux`` says why and the step
    decides (the cloud step masks with SCL, or fails with ``l1c: require``)."""
    aux = dict(scene.aux)
    missing = dict(scene.missing_aux)
    inputs: list[InputRecord] = []
    crs = scene.geobox.crs
    for step, cfg in steps:
        for name, req in step.required_aux(cfg).items():
            if req.resolution <= 0 or req.resolution == scene.geobox.resolution.x:
                gbox = scene.geobox
            else:
                gbox = GeoBox.from_bbox(
                    scene.geobox.extent.boundingbox, crs, resolution=req.resolution, tight=False
                )
            if req.level in _REFERENCE_LEVELS:
                key = _REFERENCE_LEVELS[req.level]
                ref = read_reference(config, gbox, req.bands, key, when=item.datetime)
                if ref is not None:
                    aux[name] = ref
                    asset_key = ref.version or key
                    inputs.append(
                        InputRecord(f"{name}:{req.bands[0]}", asset_key, *_ref_src(ref, key))
                    )
                else:
                    missing[name] = (
                        f"the catalog has no {key} (its build failed or found no clear scene: "
                        f"see <catalog>/_stac2cube/failures.jsonl, stage {key})"
                    )
                continue
            if req.level == "l1c":
                # never replaced by L2A bands: the step decides what a missing twin means
                if twin is None:
                    missing[name] = "no L1C twin"
                    continue
                try:
                    with l1c_env(twin, config):
                        layer, got = _read_aux_bands(twin, name, req, gbox, config)
                except AssetAccessError as exc:
                    log.warning("%s: L1C read refused: %s", item.id, exc)
                    missing[name] = f"L1C read refused: {exc}"
                    continue
                aux[name] = dataclasses.replace(layer, source=f"l1c:{twin.id}")
            else:
                aux[name], got = _read_aux_bands(item, name, req, gbox, config, l2a=True)
            inputs += got
    return scene.replace(aux=aux, missing_aux=missing), tuple(inputs)


def _read_aux_bands(
    src_item: pystac.Item,
    name: str,
    req: AuxRequest,
    gbox: GeoBox,
    config: Config,
    *,
    l2a: bool = False,
) -> tuple[AuxLayer, list[InputRecord]]:
    """The bands of ``req`` from ``src_item`` on ``gbox``; of an L2A item (``l2a``), B10, which
    L2A products do not carry, is a NaN plane."""
    ov = config.radiometry.overrides.get(src_item.collection_id or "")
    override = RadiometryOverride(ov.scale, ov.offset) if ov else None
    planes, inputs = [], []
    for band in req.bands:
        if band == "B10" and l2a:
            planes.append(np.full(gbox.shape.yx, np.nan, dtype="float32"))
            continue
        r = read_band(src_item, band, gbox, override=override)
        planes.append(r.data)
        inputs.append(InputRecord(f"{name}:{band}", r.asset_key, r.href, src_item.id))
    return AuxLayer(np.stack(planes), gbox, tuple(req.bands), "l2a"), inputs


def l1c_env(twin: pystac.Item, config: Config) -> rasterio.Env:
    """GDAL settings of the L1C reads: requester-pays (``source.l1c_requester_pays``, or when the
    twin says so, see :func:`~stac2cube.io.read.requester_pays`)."""
    pays = config.source.l1c_requester_pays
    if pays is None:
        pays = requester_pays(twin)
    opts = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "3"}
    if pays:
        opts["AWS_REQUEST_PAYER"] = "requester"
    return rasterio.Env(**opts)


# ---------------------------------------------------------------------- coreg reference


_REFERENCE_LEVELS: Mapping[str, str] = {
    "reference": REFERENCE_ASSET,
    "cloud-reference": CLOUD_REFERENCE_ASSET,
}
"""``AuxRequest.level`` of a catalog reference -> its collection asset."""


def _ref_src(ref: AuxLayer, key: str) -> tuple[str, str]:
    href, _, ident = ref.source.partition("#")
    return href, ident or key


def read_reference(
    config: Config,
    geobox: GeoBox,
    bands: Sequence[str],
    key: str = REFERENCE_ASSET,
    *,
    when: dt.datetime | None = None,
) -> AuxLayer | None:
    """The catalog's reference ``key`` (co-registration or clear-sky) on ``geobox`` (None if it
    has none yet): of its stored versions (:meth:`CatalogStore.reference_versions`), the one
    whose median time is nearest to ``when`` (the first version when ``when`` or the versions'
    times are not known).

    ``AuxLayer.source`` is ``<href>#<sources>``: the reference file and the scenes (or user file)
    it was built from, for the scene's provenance; ``AuxLayer.datetime`` the median acquisition
    time of those scenes, where recorded; ``AuxLayer.version`` the asset key of the version."""
    from .reference import reproject_reference

    store = CatalogStore(config.catalog_dir, config.output.collection_id)
    versions = [(k, a, _reference_time(a)) for _, k, a in store.reference_versions(key)]
    if not versions:
        return None
    asset_key, asset, t = versions[0]
    times = [v[2] for v in versions]
    if when is not None and all(times):
        gaps = [abs((v - when).total_seconds()) for v in times if v is not None]
        asset_key, asset, t = versions[gaps.index(min(gaps))]
    path = (store.root / store.collection_id / str(asset["href"])).resolve()
    data = reproject_reference(str(path), geobox, resampling="nearest")
    meta = asset.get("stac2cube:reference", {})
    sources = ",".join(meta.get("sources", [])) or key
    return AuxLayer(
        data[None], geobox, tuple(bands), f"{path}#{sources}", datetime=t, version=asset_key
    )


def _reference_time(asset: Mapping[str, Any]) -> dt.datetime | None:
    """The median acquisition time a stored reference records (None if it records none)."""
    when = asset.get("stac2cube:reference", {}).get("datetime")
    return pystac.utils.str_to_datetime(when) if isinstance(when, str) else None


def _bad_pixels(scene: Scene) -> np.ndarray | None:
    """Pixels a reference must not use: not clear in ``CLOUD_MASK`` or cloud/shadow/snow in SCL."""
    if "CLOUD_MASK" in scene.classes:
        bad: np.ndarray = scene.classes["CLOUD_MASK"] != 1
        return bad
    if "SCL" in scene.classes:
        bad = np.isin(scene.classes["SCL"], (0, 1, 3, 8, 9, 10, 11))
        return bad
    return None


def _grid_parameters(geobox: GeoBox) -> dict[str, Any]:
    return {
        "crs": str(geobox.crs),
        "transform": list(geobox.transform)[:6],
        "shape": list(geobox.shape.yx),
    }


def _has_reference(store: CatalogStore, key: str, params: Mapping[str, Any]) -> bool:
    """Whether the catalog holds reference ``key`` built with ``params``."""
    asset = store.reference_asset(key)
    return asset is not None and asset.get("stac2cube:reference", {}).get("parameters") == params


def reference_parameters(cfg: CoregConfig, geobox: GeoBox) -> dict[str, Any]:
    """What determines the reference image; a catalog reference with other parameters is
    rebuilt (and the items are then stale anyway, through the configuration hash)."""
    return {
        "mode": cfg.reference,
        "band": cfg.match_band,
        "path": cfg.reference_path,
        "band_index": cfg.reference_band_index,
        "scenes": cfg.reference_scenes,
        "grid": _grid_parameters(geobox),
    }


def ensure_reference(
    config: Config,
    items: Sequence[pystac.Item],
    twins: Mapping[str, pystac.Item],
    store: CatalogStore,
    run_id: str,
) -> None:
    """Make sure the catalog holds the co-registration reference of ``steps.coreg``.

    A reference already stored with the same parameters is kept, so every later update
    co-registers to the same image and history never needs reprocessing. Otherwise it is built
    on the client, before the scenes are dispatched: ``file`` reprojects the user's raster onto
    the target grid; ``clearest`` and ``median`` read the match band of the candidates with the
    lowest provider cloud cover (twice ``reference_scenes`` of them), mask clouds with the cloud
    step (or SCL), and keep the clearest textured scene or the median of the clearest. A failure
    is logged (stage ``coreg-reference``); the co-registration step then applies its
    ``on_failure`` policy to every scene.
    """
    from .reference import choose_reference, reproject_reference

    cfg = config.steps.coreg
    if cfg is None:
        return
    geobox = target_geobox(load_aoi(config.aoi, config.base_dir), config.grid)
    params = reference_parameters(cfg, geobox)
    if _has_reference(store, REFERENCE_ASSET, params):
        return
    when: dt.datetime | None = None
    try:
        if cfg.reference == "file":
            assert cfg.reference_path is not None
            path = cfg.reference_path
            if "://" not in path and not Path(path).is_absolute():
                path = str(config.base_dir / path)
            data = reproject_reference(path, geobox, cfg.reference_band_index)
            sources: tuple[str, ...] = (cfg.reference_path,)
        else:
            cands, times = _reference_candidates(
                config, items, twins, geobox, cfg.match_band, 2 * cfg.reference_scenes
            )
            data, sources = choose_reference(cands, cfg.reference, cfg.reference_scenes)
            when = _median_time([times[s] for s in sources])
    except Stac2CubeError as exc:
        log.warning("cannot build the co-registration reference: %s", exc)
        store.record_failure("<coreg-reference>", "coreg-reference", exc, run_id=run_id)
        return
    _store_reference(
        config,
        store,
        REFERENCE_ASSET,
        data,
        geobox,
        f"Co-registration reference ({cfg.match_band}, {cfg.reference})",
        {
            "mode": cfg.reference,
            "band": cfg.match_band,
            "sources": list(sources),
            "parameters": params,
        },
        when,
        run_id,
    )
    log.info("co-registration reference (%s) built from %s", cfg.reference, ", ".join(sources))


_DEFAULT_REFRESH_DAYS = CloudMaskConfig().temporal_refresh_days


def cloud_reference_parameters(cfg: CloudMaskConfig, geobox: GeoBox) -> dict[str, Any]:
    """What determines the clear-sky reference of the multi-temporal cloud test: its band,
    the number of scenes, the grid and the cloud masking that picks the clear pixels."""
    # how far apart versions are is not what a version is: refresh_days at its default
    masking = to_dict(
        dataclasses.replace(
            cfg, temporal_threshold=None, temporal_refresh_days=_DEFAULT_REFRESH_DAYS
        ),
        for_hash=True,
    )
    return {
        "mode": "median",
        "band": TEMPORAL_BAND,
        "scenes": cfg.temporal_scenes,
        "cloudmask": masking,
        "grid": _grid_parameters(geobox),
    }


def ensure_cloud_reference(
    config: Config,
    items: Sequence[pystac.Item],
    twins: Mapping[str, pystac.Item],
    store: CatalogStore,
    run_id: str,
) -> None:
    """Make sure the catalog holds the clear-sky reference of the multi-temporal cloud test
    (``steps.cloudmask.temporal_threshold``) near every scene of ``items``.

    A reference version is the per-pixel median of the ``B02`` reflectance of the
    ``temporal_scenes`` clearest scenes, clouds and shadows masked by the cloud step without
    the temporal test, on the target grid; candidates are the scenes with the lowest provider
    cloud cover (twice ``temporal_scenes`` of them). Everything is built on the client, before
    the scenes are dispatched:

    * the first version (collection asset ``cloud-reference``) from all of ``items``, when the
      catalog has none built with the current parameters (a version with other parameters is
      replaced, and the later versions built with them are removed);
    * with ``temporal_refresh_days``, a new version (``cloud-reference-v2``, ...) for each group
      of scenes farther than that from every stored version (:func:`~stac2cube.reference.
      refresh_window`), from the scenes of ``items`` in that window. Stored versions are never
      changed, so items already written keep pointing to the reference they used.

    A failure is logged (stage ``cloud-reference``) and the run goes on: without any version
    the cloud step skips the test; a scene whose new version failed is farther than
    ``temporal_refresh_days`` from every version, so the step skips the test for it. Both are
    recorded in the scene's provenance, and the next run tries again for its new scenes.
    """
    cfg = config.steps.cloudmask
    if cfg is None or cfg.temporal_threshold is None:
        return
    geobox = target_geobox(load_aoi(config.aoi, config.base_dir), config.grid)
    params = cloud_reference_parameters(cfg, geobox)
    versions = store.reference_versions(CLOUD_REFERENCE_ASSET)
    current = [
        v for v in versions if v[2].get("stac2cube:reference", {}).get("parameters") == params
    ]
    if not current or current[0][0] != 1:
        if _build_cloud_reference(config, items, twins, store, run_id, geobox, params, 1) is None:
            return
        for _, key, _ in versions:  # later versions of the reference just replaced
            if key != CLOUD_REFERENCE_ASSET:
                store.remove_reference(key)
        current = store.reference_versions(CLOUD_REFERENCE_ASSET)
    refresh = cfg.temporal_refresh_days
    if refresh is None:
        return
    from .reference import refresh_window

    known = [_reference_time(a) for _, _, a in current]
    times = [t for t in known if t is not None]
    if len(times) < len(known):
        log.warning("a clear-sky reference version records no time: it is not refreshed")
        return
    dated = sorted(((it.datetime, it) for it in items if it.datetime), key=lambda p: p[0])
    # after every stored version, whatever its parameters: a file name is never reused
    version = max(v[0] for v in store.reference_versions(CLOUD_REFERENCE_ASSET)) + 1
    done_until: dt.datetime | None = None
    while True:
        pending = [t for t, _ in dated if done_until is None or t > done_until]
        window = refresh_window(pending, times, refresh)
        if window is None:
            return
        group = [it for t, it in dated if window[0] <= t <= window[1]]
        when = _build_cloud_reference(
            config, group, twins, store, run_id, geobox, params, version, window=window
        )
        if when is not None:
            times.append(when)
            version += 1
        done_until = window[1]


def _build_cloud_reference(
    config: Config,
    items: Sequence[pystac.Item],
    twins: Mapping[str, pystac.Item],
    store: CatalogStore,
    run_id: str,
    geobox: GeoBox,
    params: Mapping[str, Any],
    version: int,
    *,
    window: tuple[dt.datetime, dt.datetime] | None = None,
) -> dt.datetime | None:
    """Build and store version ``version`` of the clear-sky reference from ``items``; its median
    time, or None when it could not be built (recorded in the failure log)."""
    from .reference import choose_reference

    cfg = config.steps.cloudmask
    assert cfg is not None
    what = "the clear-sky reference of the cloud test"
    if window is not None:
        what = (
            f"version {version} of the clear-sky reference of the cloud test (scenes of "
            f"{window[0]:%Y-%m-%d} to {window[1]:%Y-%m-%d})"
        )
    try:
        cands, times = _reference_candidates(
            config, items, twins, geobox, TEMPORAL_BAND, 2 * cfg.temporal_scenes
        )
        # min_texture 0: a flat clear scene (water, desert) is as good a clear-sky reference
        data, sources = choose_reference(cands, "median", cfg.temporal_scenes, min_texture=0.0)
    except Stac2CubeError as exc:
        log.warning("cannot build %s: %s", what, exc)
        err = exc if window is None else _ReportedError(type(exc).__name__, f"{what}: {exc}")
        store.record_failure("<cloud-reference>", "cloud-reference", err, run_id=run_id)
        return None
    when = _median_time([times[s] for s in sources])
    title = f"Clear-sky reference of the multi-temporal cloud test ({TEMPORAL_BAND}, median)"
    meta: dict[str, Any] = {
        "mode": "median",
        "band": TEMPORAL_BAND,
        "sources": list(sources),
        "parameters": dict(params),
    }
    if version > 1:
        title += f", version {version}"
        meta["version"] = version
    key = reference_version_key(CLOUD_REFERENCE_ASSET, version)
    _store_reference(config, store, key, data, geobox, title, meta, when, run_id)
    log.info("%s built from %s", key, ", ".join(sources))
    return when


def _median_time(times: Sequence[dt.datetime | None]) -> dt.datetime | None:
    """The median of the known times (the earlier of the two middle ones), None if none."""
    known = sorted(t for t in times if t is not None)
    return known[(len(known) - 1) // 2] if known else None


def _store_reference(
    config: Config,
    store: CatalogStore,
    key: str,
    data: np.ndarray,
    geobox: GeoBox,
    title: str,
    meta: Mapping[str, Any],
    when: dt.datetime | None,
    run_id: str,
) -> None:
    """Write a reference COG and link it as the collection asset ``key`` with its provenance
    (``stac2cube:reference``: ``meta`` plus clear fraction, texture, time, software, run)."""
    from .reference import clear_fraction, texture_score

    out_dir = store.reference_dir(key)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = reference_base_key(key)
    assert ref is not None
    digest = hashlib.sha256(json.dumps(meta["parameters"], sort_keys=True).encode()).hexdigest()
    version = f"-v{meta['version']}" if meta.get("version", 1) > 1 else ""
    name = f"reference-{meta['band']}-{digest[:12]}{version}.tif"
    out = config.output
    cog = write_cog(
        data,
        geobox,
        out_dir / name,
        nodata=float("nan"),
        profile=out.cog_profile,
        blocksize=out.blocksize,
        overview_resampling="average",
        description=title,
    )
    crs = geobox.crs
    assert crs is not None
    provenance = dict(meta)
    if when is not None:
        provenance["datetime"] = pystac.utils.datetime_to_str(when)
    provenance.update(
        clear_fraction=round(clear_fraction(data), 6),
        texture=round(texture_score(data), 6),
        created=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        software=software_versions(),
        run_id=run_id,
    )
    asset_doc = {
        "href": f"./{REFERENCE_DIRS[ref[0]]}/{name}",
        "type": pystac.MediaType.COG,
        "title": title,
        "roles": ["data", "reference"],
        "proj:code": f"EPSG:{crs.epsg}" if crs.epsg else None,
        "proj:shape": list(geobox.shape.yx),
        "proj:transform": list(geobox.transform)[:6],
        "raster:bands": [
            {
                "data_type": "float32",
                "nodata": "nan",
                "spatial_resolution": float(geobox.resolution.x),
            }
        ],
        "file:size": cog.size,
        "file:checksum": cog.checksum,
        "stac2cube:reference": provenance,
    }
    store.set_reference(
        asset_doc,
        extensions=(
            ProjectionExtension.get_schema_uri(),
            RasterExtension.get_schema_uri(),
            FileExtension.get_schema_uri(),
        ),
        key=key,
    )


def _reference_candidates(
    config: Config,
    items: Sequence[pystac.Item],
    twins: Mapping[str, pystac.Item],
    geobox: GeoBox,
    band: str,
    n: int,
) -> tuple[list[tuple[str, np.ndarray, np.ndarray | None]], dict[str, dt.datetime | None]]:
    """``(id, band, bad pixels)`` of the ``n`` (at least 3) items with the lowest provider cloud
    cover, clouds masked by the cloud step without its multi-temporal test (which needs a
    reference itself), and the items' acquisition times."""
    cloud_steps = [
        (s, dataclasses.replace(c, temporal_threshold=None))
        for s, c in active_steps(config)
        if s.name == "cloudmask"
    ]
    ranked = sorted(items, key=lambda it: float(it.properties.get("eo:cloud_cover", 100.0)))
    out: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    times: dict[str, dt.datetime | None] = {}
    for item in ranked[: max(n, 3)]:
        try:
            scene, _, _ = read_scene(item, config, geobox)
            if cloud_steps:
                scene, _ = read_aux(item, twins.get(item.id), scene, cloud_steps, config)
                for step, step_cfg in cloud_steps:
                    scene = step.run(scene, step_cfg).scene
        except Stac2CubeError as exc:
            log.info("reference candidate %s skipped: %s", item.id, exc)
            continue
        if band not in scene.bands:
            raise ConfigError(f"the reference band {band} is not in `bands`; add it there")
        out.append((item.id, scene.bands[band], _bad_pixels(scene)))
        times[item.id] = item.datetime
    return out, times


# -------------------------------------------------------------------------------- write


@dataclass(frozen=True)
class WrittenAsset:
    """One COG written for a scene, as :func:`build_item` describes it."""

    cog: CogFile
    dtype: str
    scale: float
    offset: float
    nodata: float | None
    geobox: GeoBox
    band: str | None
    """The Sentinel-2 band of a reflectance asset (``eo:bands``); None for class layers."""
    info: LayerInfo | None = None
    """How a class layer is described (classification extension); None for reflectance."""


def worker_threads() -> int | None:
    """Threads of the Dask worker running this code, or None outside a worker (then GDAL may
    use every CPU: the process has the machine to itself)."""
    # a worker has imported distributed; a serial run has not and should not pay for it (0.5 s)
    worker_module = sys.modules.get("distributed.worker")
    if worker_module is None:
        return None
    try:
        return int(worker_module.get_worker().state.nthreads)
    except ValueError:  # not running on a worker
        return None


def write_scene(
    scene: Scene,
    source: pystac.Item,
    inputs: tuple[InputRecord, ...],
    records: tuple[StepRecord, ...],
    config: Config,
    store: CatalogStore,
    *,
    started: float,
) -> dict[str, Any]:
    """Write the scene's COGs (and step sidecars) into its staging directory and return the
    output item's JSON."""
    t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=time.perf_counter() - started)
    out = config.output
    threads = worker_threads()
    item_dir = store.new_staging_dir(scene.item_id)  # swapped into place by store.add_item
    scale, offset, nodata = storage_encoding(out.dtype)
    written: dict[str, WrittenAsset] = {}

    def reflectance(key: str, refl: np.ndarray, gbox: GeoBox, band: str, desc: str) -> None:
        cog = write_cog(
            from_reflectance(refl, dtype=out.dtype),
            gbox,
            item_dir / f"{key}.tif",
            nodata=nodata,
            scale=scale,
            offset=offset,
            profile=out.cog_profile,
            blocksize=out.blocksize,
            overview_resampling=out.overview_resampling,
            description=desc,
            threads=threads,
        )
        written[key] = WrittenAsset(cog, out.dtype, scale, offset, nodata, gbox, band)

    def classes(key: str, layer: np.ndarray, gbox: GeoBox, info: LayerInfo) -> None:
        cog = write_cog(
            layer,
            gbox,
            item_dir / f"{key}.tif",
            nodata=info.nodata,
            profile=out.cog_profile,
            blocksize=out.blocksize,
            overview_resampling=info.overview_resampling,
            description=info.description or key,
            threads=threads,
        )
        written[key] = WrittenAsset(cog, str(layer.dtype), 1.0, 0.0, info.nodata, gbox, None, info)

    for band, refl in scene.bands.items():
        reflectance(band, refl, scene.geobox, band, band)
    for name, layer in scene.classes.items():
        classes(name, layer, scene.geobox, layer_info(scene, name))
    for key, grid_layer in scene.layers.items():
        if grid_layer.band is not None:
            desc = grid_layer.description or key
            reflectance(key, grid_layer.data, grid_layer.geobox, grid_layer.band, desc)
        else:
            info = grid_layer.info or LayerInfo(description=grid_layer.description)
            classes(key, grid_layer.data, grid_layer.geobox, info)
    sidecars: dict[str, tuple[Sidecar, CogFile]] = {}
    for key, car in scene.sidecars.items():
        path = item_dir / car.filename
        write_bytes_atomic(path, car.data)
        size, checksum = file_checksum(path)
        sidecars[key] = (car, CogFile(path, size, checksum))
    prov = Provenance(
        source=SourceRecord(
            id=source.id,
            href=source.get_self_href(),
            collection=source.collection_id,
            processing_baseline=processing_baseline(source),
            updated=source.properties.get("updated"),
        ),
        inputs=inputs,
        steps=records,
        config_hash=config.config_hash,
        software=software_versions(),
        started=t_start,
        finished=dt.datetime.now(dt.UTC),
    )
    return build_item(scene, source, written, prov, sidecars=sidecars)


def layer_info(scene: Scene, name: str) -> LayerInfo:
    """How a class/mask layer is written (SCL gets the Sen2Cor classes)."""
    if name in scene.layer_info:
        return scene.layer_info[name]
    if name == "SCL":
        return LayerInfo(0, SCL_CLASSES, "Sen2Cor scene classification")
    return LayerInfo()


def eo_common_name(name: str | None) -> str | None:
    """The eo v1.1 common name (which knows only ``rededge`` for B05-B07)."""
    return "rededge" if name and name.startswith("rededge") else name


def build_item(
    scene: Scene,
    source: pystac.Item,
    written: Mapping[str, WrittenAsset],
    prov: Provenance,
    *,
    sidecars: Mapping[str, tuple[Sidecar, CogFile]] | None = None,
) -> dict[str, Any]:
    """The output STAC item (proj, eo, raster, file, classification, processing, stac2cube).

    Assets on a grid other than the scene's (e.g. 2.5 m super-resolved bands) carry their own
    ``proj:shape`` and ``proj:transform``, so odc-stac loads each on its own grid.
    """
    gbox = scene.geobox
    footprint = footprint_lonlat(gbox)
    if source.geometry is not None:
        inter = footprint.intersection(shapely.geometry.shape(source.geometry))
        if not inter.is_empty and inter.area > 0:
            footprint = inter
    geom = shapely.geometry.mapping(footprint)
    tmpl = load_template("item.json")
    props = dict(tmpl.get("properties", {}))
    for key in (
        "platform",
        "constellation",
        "instruments",
        "gsd",
        "view:sun_azimuth",
        "view:sun_elevation",
        "mgrs:utm_zone",
        "mgrs:latitude_band",
        "mgrs:grid_square",
        "s2:processing_baseline",
        "sat:relative_orbit",
        "sat:orbit_state",
    ):
        if key in source.properties:
            props[key] = source.properties[key]
    props.update(scene.properties)
    props.update(prov.to_properties())
    props["created"] = props["stac2cube:finished"]
    props["updated"] = props["stac2cube:finished"]
    assert source.datetime is not None
    item = pystac.Item(
        id=scene.item_id,
        geometry=geom,
        bbox=list(footprint.bounds),
        datetime=source.datetime,
        properties=props,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = gbox.crs
    assert crs is not None
    proj.code = f"EPSG:{crs.epsg}" if crs.epsg else None
    if crs.epsg is None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = list(gbox.shape.yx)
    proj.transform = list(gbox.transform)[:6]
    proj.bbox = list(gbox.extent.boundingbox)
    for key, w in written.items():
        info = S2_BANDS.get(w.band) if w.band is not None else None
        if info is not None:
            title = key + (f" ({info.common_name})" if info.common_name else "")
            if key != w.band:
                title = f"{title}, {w.geobox.resolution.x:g} m"
        else:
            title = w.info.description if w.info and w.info.description else key
        asset = pystac.Asset(
            href=f"./{key}.tif",
            media_type=pystac.MediaType.COG,
            title=title,
            roles=list(w.info.roles) if w.info else ["data", "reflectance"],
        )
        item.add_asset(key, asset)
        if w.geobox != gbox:
            aproj = ProjectionExtension.ext(asset)
            aproj.shape = list(w.geobox.shape.yx)
            aproj.transform = list(w.geobox.transform)[:6]
        rb = RasterBand.create(
            nodata=w.nodata if w.nodata is None or not np.isnan(w.nodata) else NoDataStrings.NAN,
            data_type=DataType(w.dtype),
            spatial_resolution=float(w.geobox.resolution.x),
        )
        if w.info is None:
            rb.scale, rb.offset = w.scale, w.offset
        RasterExtension.ext(asset, add_if_missing=True).bands = [rb]
        if w.info is not None:
            if w.info.classes:
                classes = dict(w.info.classes)
                classes.setdefault(w.info.nodata, "no_data")
                ClassificationExtension.ext(asset, add_if_missing=True).classes = [
                    Classification.create(value=v, name=n, nodata=v == w.info.nodata or None)
                    for v, n in sorted(classes.items())
                ]
        elif info is not None and w.band is not None:
            EOExtension.ext(asset, add_if_missing=True).bands = [
                Band.create(
                    name=w.band,
                    common_name=eo_common_name(info.common_name),
                    center_wavelength=info.center_wavelength,
                    full_width_half_max=info.fwhm,
                )
            ]
        fe = FileExtension.ext(asset, add_if_missing=True)
        fe.size = w.cog.size
        fe.checksum = w.cog.checksum
    for key, (car, f) in (sidecars or {}).items():
        asset = pystac.Asset(
            href=f"./{car.filename}",
            media_type=car.media_type,
            title=car.title,
            roles=list(car.roles),
        )
        item.add_asset(key, asset)
        fe = FileExtension.ext(asset, add_if_missing=True)
        fe.size = f.size
        fe.checksum = f.checksum
    for uri in prov.schema_uris():
        if uri not in item.stac_extensions:
            item.stac_extensions.append(uri)
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    return doc
