"""Snapshots of the virtual cube are crash safe: a run killed in its snapshot commit leaves the
previous snapshot as HEAD and a valid store, and the next run catches up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stac2cube import load_config, open_cube, open_virtual_cube, run
from stac2cube.catalog import CatalogStore
from stac2cube.catalog.virtual import head_items
from stac2cube.check import check_catalog
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config

SERIAL = {"executor": "serial"}
KILLED = """
import os, sys, threading
import icechunk
from stac2cube import load_config, run

real = icechunk.Session.commit
when = sys.argv[2]

def dying(self, *args, **kwargs):
    if when == "during":  # killed while Icechunk writes the snapshot
        threading.Timer(0.002, lambda: os._exit(9)).start()
        real(self, *args, **kwargs)
        os._exit(9)
    out = real(self, *args, **kwargs)
    os._exit(9)  # committed, but killed before the tag and the run's clean exit

icechunk.Session.commit = dying
if __name__ == "__main__":
    run(load_config(sys.argv[1]))
"""


@pytest.fixture
def item_list_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per read of a cube's whole item list (``virtual._item_ids``); a test clears it
    once its cube is set up."""
    from stac2cube.catalog import virtual

    reads: list[int] = []
    whole_list = virtual._item_ids

    def counted(session: object) -> object:
        reads.append(1)
        return whole_list(session)  # type: ignore[arg-type]

    monkeypatch.setattr(virtual, "_item_ids", counted)
    return reads


def _sample_catalog(sample: Sample, tmp_path: Path) -> tuple[Path, CatalogStore]:
    """The sample's four scenes (B04, B08, SCL) run into ``tmp_path / "catalog"``, with its
    virtual cube."""
    source = {"path": str(sample.l2a_items_path)}
    run(
        load_config(write_config(tmp_path, sample, source, bands=["B04", "B08", "SCL"], run=SERIAL))
    )
    catalog = tmp_path / "catalog"
    return catalog, CatalogStore.open(catalog)


def _set_datetime(store: CatalogStore, item_id: str, when: str) -> None:
    """The item's datetime changed in its JSON (as an upstream correction would change it)."""
    import json

    doc = store.read_item(item_id)
    assert doc is not None
    doc["properties"]["datetime"] = when
    store.item_path(item_id).write_text(json.dumps(doc))


@pytest.mark.parametrize("when", ["during", "after"])
def test_a_run_killed_in_its_snapshot_commit(sample: Sample, tmp_path: Path, when: str) -> None:
    source = {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)}
    first = write_config(tmp_path, sample, {**source, "max_items": 2}, run=SERIAL)
    before = run(load_config(first))
    catalog = tmp_path / "catalog"
    assert len(head_items(catalog)) == 2
    full = write_config(tmp_path, sample, source, run=SERIAL)
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    proc = subprocess.run([sys.executable, str(script), str(full), when], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    # the items are committed; HEAD is the previous snapshot or the new one, and reads
    assert len(CatalogStore.open(catalog).item_ids()) == 4
    held = head_items(catalog)
    assert len(held) in (2, 4)
    if len(held) == 2:
        np.testing.assert_array_equal(
            open_virtual_cube(catalog).B04.values,
            open_virtual_cube(catalog, version=before.run_id).B04.values,
        )
    assert open_virtual_cube(catalog).B04.values.size
    # the next run (nothing to process) brings the cube up to date with the catalog
    after = run(load_config(full))
    assert after.written == 0 and len(head_items(catalog)) == 4
    virtual, odc = open_virtual_cube(catalog), open_cube(catalog)
    for name in odc.data_vars:
        np.testing.assert_array_equal(virtual[name].values, odc[name].values, err_msg=name)
    assert check_catalog(catalog).problems == ()


def test_a_cube_started_with_one_item_takes_later_times(sample: Sample, tmp_path: Path) -> None:
    source = {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)}
    run(load_config(write_config(tmp_path, sample, {**source, "max_items": 1}, run=SERIAL)))
    summary = run(load_config(write_config(tmp_path, sample, source, run=SERIAL)))
    assert summary.written == 3 and summary.snapshot_id is not None
    catalog = tmp_path / "catalog"
    virtual, odc = open_virtual_cube(catalog, ["B04"]), open_cube(catalog, bands=["B04"])
    assert (virtual.time.values == odc.time.values).all()  # to the microsecond
    np.testing.assert_array_equal(virtual.B04.values, odc.B04.values)


def test_the_next_run_rebuilds_the_cube_of_a_moved_catalog(sample: Sample, tmp_path: Path) -> None:
    import shutil

    from stac2cube.catalog.virtual import CubeMovedError

    source = {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)}
    first = tmp_path / "first"
    first.mkdir()
    run(load_config(write_config(first, sample, {**source, "max_items": 2}, run=SERIAL)))
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(first / "catalog", moved / "catalog")
    with pytest.raises(CubeMovedError, match="moved or copied"):
        open_virtual_cube(moved / "catalog")
    summary = run(load_config(write_config(moved, sample, source, run=SERIAL)))
    assert summary.written == 2 and summary.snapshot_id is not None
    assert len(head_items(moved / "catalog")) == 4
    assert check_catalog(moved / "catalog").problems == ()
    virtual, odc = (
        open_virtual_cube(moved / "catalog", ["B04"]),
        open_cube(moved / "catalog", ["B04"]),
    )
    np.testing.assert_array_equal(virtual.B04.values, odc.B04.values)


def test_removed_items_leave_the_cube_and_readers_skip_their_steps(
    sample: Sample, tmp_path: Path
) -> None:
    """An item removed from the cube leaves an empty time step that readers drop; the steps
    are listed in the root attributes, so readers need not load every item id (a cube written
    before the list is read through the ids, with the same result); a later append of the
    item takes a new step."""
    import zarr

    from stac2cube.catalog.virtual import REMOVED_ATTR, commit_snapshot, repository

    catalog, store = _sample_catalog(sample, tmp_path)
    full = open_virtual_cube(catalog)
    ids = [str(i) for i in full.item_id.values]  # in time order
    assert sorted(ids) == sorted(store.item_ids())
    gone = commit_snapshot(store, "remove-one", removed=[ids[1]])
    assert gone.removed == [ids[1]] and set(head_items(catalog)) == set(ids) - {ids[1]}

    def attrs() -> dict[str, object]:
        session = repository(catalog).readonly_session("main")
        return dict(zarr.open_group(session.store, mode="r").attrs)

    listed = attrs()[REMOVED_ATTR]
    assert isinstance(listed, list) and len(listed) == 1
    cube = open_virtual_cube(catalog)
    assert list(cube.item_id.values) == [ids[0], *ids[2:]]
    assert REMOVED_ATTR not in cube.attrs
    np.testing.assert_array_equal(cube.B04.values, full.B04.isel(time=[0, 2, 3]).values)
    # a cube written before the list: the ids say which steps are empty
    repo = repository(catalog)
    session = repo.writable_session("main")
    del zarr.open_group(session.store, mode="r+").attrs[REMOVED_ATTR]
    session.commit("as written before the list")
    old = open_virtual_cube(catalog)
    assert list(old.item_id.values) == [ids[0], *ids[2:]]
    np.testing.assert_array_equal(old.B04.values, cube.B04.values)
    # the item comes back on a new step; the list is made from the ids on the way
    back = commit_snapshot(store, "back", changed=[ids[1]])
    assert back.appended == [ids[1]] and attrs()[REMOVED_ATTR] == listed
    again = open_virtual_cube(catalog)
    assert list(again.item_id.values) == ids
    np.testing.assert_array_equal(again.B04.values, full.B04.values)


def test_sessions_do_not_preload_manifests(sample: Sample, tmp_path: Path) -> None:
    """Icechunk's default preloads manifests of coordinate-like arrays when a session starts,
    which held opening a 100,000-step cube up by a sixth of a second."""
    from stac2cube.catalog.virtual import repository

    source = {"path": str(sample.l2a_items_path), "max_items": 1}
    run(
        load_config(write_config(tmp_path, sample, source, bands=["B04", "B08", "SCL"], run=SERIAL))
    )
    preload = repository(tmp_path / "catalog").config.manifest.preload
    assert preload is not None and preload.max_total_refs == 0


def test_time_steps_out_of_order_and_tied_are_sorted(sample: Sample, tmp_path: Path) -> None:
    """Items appended out of time order (an update that backfills older scenes) and items that
    share a time come out sorted by time, then by item id, also with a removed step."""

    from stac2cube.catalog.virtual import commit_snapshot, rebuild_virtual_cube

    catalog, store = _sample_catalog(sample, tmp_path)
    ids = store.item_ids()  # the order they are appended in by a rebuild
    assert len(ids) == 4
    times = ["2023-07-01T10:00:00Z", "2023-06-01T10:00:00Z", "2023-06-15T10:00:00Z"]
    times.append(times[2])  # a tie with the third
    for item_id, when in zip(ids, times, strict=True):
        _set_datetime(store, item_id, when)
    rebuild_virtual_cube(catalog)
    cube = open_virtual_cube(catalog, ["B04"])
    tied = sorted([ids[2], ids[3]])
    assert list(cube.item_id.values) == [ids[1], *tied, ids[0]]
    assert cube.indexes["time"].is_monotonic_increasing
    by_id = {str(i): cube.B04.isel(time=k).values for k, i in enumerate(cube.item_id.values)}
    commit_snapshot(store, "remove-one", removed=[ids[1]])
    after = open_virtual_cube(catalog, ["B04"])
    assert list(after.item_id.values) == [*tied, ids[0]]
    for k, item_id in enumerate(after.item_id.values):
        np.testing.assert_array_equal(after.B04.isel(time=k).values, by_id[str(item_id)])


def test_replaced_items_are_found_at_their_times(
    sample: Sample, tmp_path: Path, item_list_reads: list[int]
) -> None:
    """A reprocessed item is found through the ``time`` axis, without reading the cube's whole
    item list (so that a replacement costs the same in any cube), also when it shares its time
    with another item; an item whose datetime changed is found through the whole list and
    replaced, never appended a second time."""

    from stac2cube.catalog.virtual import commit_snapshot, rebuild_virtual_cube

    catalog, store = _sample_catalog(sample, tmp_path)
    ids = store.item_ids()
    tie = "2023-06-15T10:00:00Z"
    for item_id in ids[2:]:  # two items share a time
        _set_datetime(store, item_id, tie)
    rebuild_virtual_cube(catalog)
    before = open_virtual_cube(catalog, ["B04"])
    item_list_reads.clear()
    found = commit_snapshot(store, "replace", changed=[ids[0], ids[3]])
    assert sorted(found.replaced) == sorted([ids[0], ids[3]]) and not found.appended
    assert item_list_reads == []  # looked up at their times only
    same = open_virtual_cube(catalog, ["B04"])
    assert list(same.item_id.values) == list(before.item_id.values)
    np.testing.assert_array_equal(same.B04.values, before.B04.values)
    # an item whose datetime changed is not at its (new) time: the whole list finds it
    _set_datetime(store, ids[1], "2024-01-01T10:00:00Z")
    moved = commit_snapshot(store, "moved", changed=[ids[1]])
    assert moved.replaced == [ids[1]] and not moved.appended and item_list_reads == [1]
    after = open_virtual_cube(catalog, ["B04"])
    assert sorted(map(str, after.item_id.values)) == sorted(ids)
    assert str(after.item_id.values[-1]) == ids[1]  # at its new time
    assert after.time.values[-1] == np.datetime64("2024-01-01T10:00:00")
    for item_id in ids:  # the same pixels for each item, wherever its step is
        np.testing.assert_array_equal(
            after.B04.sel(time=after.item_id == item_id).values,
            before.B04.sel(time=before.item_id == item_id).values,
        )
    # a scene filtered the first time it was seen is not in the cube: nothing is looked up
    skipped = commit_snapshot(store, "filtered-new", removed=["never-held"], new=["never-held"])
    assert skipped.snapshot_id is None and not skipped.removed and item_list_reads == [1]


def test_removed_items_are_found_at_their_times(
    sample: Sample, tmp_path: Path, item_list_reads: list[int]
) -> None:
    """A removed item is found through the ``time`` axis, without reading the cube's whole item
    list (so that a removal costs the same in any cube): from the catalog's JSON while it is
    there, from the JSON the caller held once the catalog dropped it; an item in neither is
    found through the whole list."""
    import zarr

    from stac2cube.catalog.virtual import REMOVED_ATTR, commit_snapshot, repository

    catalog, store = _sample_catalog(sample, tmp_path)
    before = open_virtual_cube(catalog, ["B04"])
    ids = [str(i) for i in before.item_id.values]
    item_list_reads.clear()
    in_catalog = commit_snapshot(store, "remove-listed", removed=[ids[0]])
    assert in_catalog.removed == [ids[0]] and item_list_reads == []
    doc = store.read_item(ids[1])
    assert doc is not None and store.remove_item(ids[1])
    held = commit_snapshot(store, "remove-held", removed=[ids[1]], held={ids[1]: doc})
    assert held.removed == [ids[1]] and item_list_reads == []
    assert store.remove_item(ids[2])
    unknown = commit_snapshot(store, "remove-unknown", removed=[ids[2]])
    assert unknown.removed == [ids[2]] and item_list_reads == [1]
    after = open_virtual_cube(catalog, ["B04"])
    assert [str(i) for i in after.item_id.values] == ids[3:]
    np.testing.assert_array_equal(after.B04.values, before.B04.isel(time=[3]).values)
    # a cube from before the list of removed steps: the ids are read once, to make the list
    session = repository(catalog).writable_session("main")
    del zarr.open_group(session.store, mode="r+").attrs[REMOVED_ATTR]
    session.commit("as written before the list")
    legacy = commit_snapshot(store, "remove-legacy", removed=[ids[3]])
    assert legacy.removed == [ids[3]] and item_list_reads == [1, 1]
    session = repository(catalog).readonly_session("main")
    assert zarr.open_group(session.store, mode="r").attrs[REMOVED_ATTR] == [0, 1, 2, 3]


def test_a_rerun_that_filters_held_scenes_removes_them_without_the_item_list(
    sample: Sample, tmp_path: Path, item_list_reads: list[int]
) -> None:
    """A re-run whose stricter cloud limit filters scenes the catalog held takes them out of the
    cube, found at their times from the item JSON the run read while planning."""
    source = {"path": str(sample.l2a_items_path)}
    bands = ["B04", "B08", "SCL"]
    lenient = {"cloudmask": {"method": "scl", "max_cloud_fraction": 1.0}}
    run(load_config(write_config(tmp_path, sample, source, bands=bands, steps=lenient)))
    catalog = tmp_path / "catalog"
    held = set(head_items(catalog))
    assert len(held) == len(sample.scenes)
    item_list_reads.clear()
    strict = {"cloudmask": {"method": "scl", "max_cloud_fraction": 0.1}}
    summary = run(load_config(write_config(tmp_path, sample, source, bands=bands, steps=strict)))
    filtered = {o.item_id for o in summary.outcomes if o.status == "filtered"}
    assert filtered and filtered < held
    assert item_list_reads == []  # the run's commit read no item list
    assert set(head_items(catalog)) == held - filtered
