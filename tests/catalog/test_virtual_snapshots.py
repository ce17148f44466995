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
