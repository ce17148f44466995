from __future__ import annotations

from pathlib import Path

from stac2cube.catalog import CatalogStore
from stac2cube.errors import ItemError


def test_failure_log_survives_a_torn_line(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path, "ard")
    store.create()
    store.record_failure("x", "read", ItemError("broken"), run_id="r1")
    with open(store.failure_log, "a") as f:
        f.write('{"item_id": "y", "sta')  # a crash in the middle of a write
    store.record_failure("z", "write", OSError("disk full"), run_id="r1")
    recs = store.failures()
    assert [(r.item_id, r.stage, r.error) for r in recs] == [
        ("x", "read", "ItemError"),
        ("z", "write", "OSError"),
    ]
