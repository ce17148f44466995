"""The pipeline's entry point: search, plan, build the catalog references, dispatch the
scenes and commit their results, under the catalog's lock."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pystac

from ..ard.assessment import profile_collection, write_assessment
from ..catalog import (
    CatalogStore,
)
from ..catalog.index import (
    index_path,
    invalidate_index,
    read_index_table,
    set_aside_index,
    write_index,
)
from ..config import Config
from ..errors import (
    CatalogError,
    ItemError,
    SearchError,
    Stac2CubeError,
)
from ..grid import load_aoi, target_geobox
from ..references.build import ensure_reference, reference_specs
from ..search import search
from .candidates import reference_reader
from .commit import commit
from .executors import execute
from .plan import PLAN_COLUMNS, available_references, plan_scene, unchanged_check
from .steps import active_steps
from .summary import ProgressCallback, ProgressEvent, RunSummary, SceneOutcome
from .task import SceneTask
from .twins import find_l1c_twins, l1c_access_probe

log = logging.getLogger(__name__)


def snapshot_run(
    store: CatalogStore,
    run_id: str,
    outcomes: Sequence[SceneOutcome],
    *,
    sync: bool,
    new: Iterable[str] = (),
    held: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str | None, bool]:
    """Commit the run's snapshot of the virtual cube: the items it wrote, without those it
    filtered (``sync``: after an interrupted run, everything the cube is missing); ``held``:
    the item JSON the catalog held before the run, by id (filtered items are found at their
    times in the cube, without reading its item list). Returns the
    snapshot id (None: nothing to commit) and whether the cube is up to date. A failure leaves
    the catalog as it is and the previous snapshot as HEAD; the next run catches up."""
    from ..catalog.virtual import (
        CubeMovedError,
        commit_snapshot,
        has_virtual_cube,
        rebuild_virtual_cube,
    )

    written = [o.item_id for o in outcomes if o.status == "written"]
    removed = [o.item_id for o in outcomes if o.status == "filtered"]
    sync = sync or not has_virtual_cube(store.root)
    if not (written or removed or sync):
        return None, True
    try:
        try:
            gone = {i: held[i] for i in removed if held and i in held}
            result = commit_snapshot(store, run_id, written, removed, sync=sync, new=new, held=gone)
        except CubeMovedError as moved:
            log.warning("%s: rebuilding it", moved)
            result = rebuild_virtual_cube(store.root, run_id)
    except Exception as exc:  # the items are committed; only the cube's new version is missing
        log.warning("virtual cube snapshot not committed: %s", exc)
        store.record_failure("<virtual-cube>", "virtual-cube", exc, run_id=run_id)
        return None, False
    for item_id, why in result.refused.items():
        log.warning("item %s left out of the virtual cube: %s", item_id, why)
        store.record_failure(item_id, "virtual-cube", CatalogError(why), run_id=run_id)
    return result.snapshot_id, True


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
            from ..catalog.kerchunk import build_references

            # a run killed between committing an item and writing its references
            rebuilt = build_references(store.root)
            if rebuilt:
                log.info("wrote %d missing kerchunk reference file(s)", len(rebuilt))
        steps = active_steps(config)
        need_twins = any(r.level == "l1c" for s, c in steps for r in s.required_aux(c).values())
        # what the catalog holds, from its index when current (a few columns, not the items)
        plan_index = read_index_table(store, columns=PLAN_COLUMNS)
        # the references the catalog holds before this run builds any (items made without one
        # are stale; one built below makes its reference-less items stale in the next run)
        references = available_references(config, store)
        # hashed here, once (a model's files are read): every task carries the hash
        log.debug("configuration hash %s", config.config_hash)
        try:
            found = search(
                config.source,
                aoi,
                config.time,
                base_dir=config.base_dir,
                # items the catalog holds up to date are not even parsed (an update of a large
                # catalog); the L1C twin search needs every item parsed
                unchanged=None
                if need_twins
                else unchanged_check(config, store, plan_index, references),
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
            skip, reason, existing = plan_scene(
                item,
                twin,
                config,
                store,
                failed_before,
                filtered_before.get(item.id),
                probe,
                references,
            )
            if skip is not None:
                report(skip)
            else:
                assert reason is not None
                task = SceneTask.create(item, twin, config, reason)
                planned[item.id] = (task, item, existing)
        if planned:
            new_items = [it for _, it, _ in planned.values()]
            for spec in reference_specs(config, target_geobox(aoi, config.grid)):
                read = reference_reader(config, twins, spec.band)
                ensure_reference(spec, config, new_items, store, run_id, read)
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
            report(commit(result, task, item, existing, config, store, run_id))
        if planned or not index_path(store).exists():
            try:
                # the index holds a copy of the collection: its final form goes in first
                profile_collection(store)
                write_index(store, reuse=previous_index, changed=planned)
            except (Stac2CubeError, OSError) as exc:  # a missing index only slows reading
                log.warning("catalog index not written: %s", exc)
            finally:
                if previous_index is not None:
                    previous_index.unlink(missing_ok=True)
            try:
                write_assessment(store)
            except (Stac2CubeError, OSError) as exc:  # the items carry their own summary
                log.warning("CEOS-ARD self-assessment not written: %s", exc)
        snapshot, cube_ok = None, True
        if out.virtual_cube:
            # scenes the catalog did not hold: not in the cube either (appended without a lookup)
            new = [i for i, (_, _, existing) in planned.items() if existing is None]
            held = {i: ex for i, (_, _, ex) in planned.items() if ex is not None}
            snapshot, cube_ok = snapshot_run(
                store, run_id, outcomes, sync=not after_clean_exit, new=new, held=held
            )
        if cube_ok:  # else the next run recovers and brings the cube up to date in full
            store.set_clean_mark()
        return RunSummary(run_id, str(store.root), found.method, tuple(outcomes), snapshot)
    finally:
        lock.release()
