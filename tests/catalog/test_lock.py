from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stac2cube.catalog import CatalogStore
from stac2cube.errors import CatalogLockedError


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path, "ard")
    with store.lock(), pytest.raises(CatalogLockedError, match="another stac2cube run"):
        store.lock().acquire()
    # a holder that died without releasing (kill -9)
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "_stac2cube").mkdir(exist_ok=True)
    (tmp_path / "_stac2cube" / "lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(proc.stdout), "since": "then"})
    )
    lock = store.lock()
    lock.acquire()
    assert json.loads((tmp_path / "_stac2cube" / "lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "_stac2cube" / "lock").exists()
