from __future__ import annotations

import json
import os
from pathlib import Path

from stac2cube.io.atomic import append_line, exchange_paths, write_bytes_atomic, write_json_atomic


def test_exchange_swaps_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from_a").touch()
    (b / "from_b").touch()
    if not exchange_paths(a, b):  # pragma: no cover - filesystems without renameat2
        return
    assert os.listdir(a) == ["from_b"] and os.listdir(b) == ["from_a"]


def test_exchange_refuses_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert exchange_paths(tmp_path / "a", tmp_path / "missing") is False
    assert (tmp_path / "a").is_dir()


def test_atomic_write_and_append(tmp_path: Path) -> None:
    p = tmp_path / "f"
    write_bytes_atomic(p, b"one")
    write_bytes_atomic(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f"]
    log = tmp_path / "log"
    append_line(log, "a")
    append_line(log, "b\n")
    assert log.read_text() == "a\nb\n"


def test_atomic_json_write_replaces_whole(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"b": [1, 2]})
    assert json.loads(p.read_text()) == {"b": [1, 2]}
    assert os.listdir(tmp_path) == ["x.json"]
