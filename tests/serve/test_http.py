"""The front's pure parts: the ``Range`` header parser and the path guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from stac2cube.serve import RangeNotSatisfiableError, byte_range, resolve_under


def test_byte_range_parsing() -> None:
    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-0", 100) == (0, 0)
    assert byte_range("bytes=90-200", 100) == (90, 99)
    assert byte_range("bytes=-500", 100) == (0, 99)
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole file
    assert byte_range("items=0-1", 100) is None
    assert byte_range("bytes=5-1", 100) is None
    for bad in ("bytes=100-", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiableError):
            byte_range(bad, 100)


def test_resolve_under_keeps_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.tif").write_bytes(b"x")
    (tmp_path / "inner-link.tif").symlink_to(tmp_path / "a" / "b.tif")
    assert resolve_under(tmp_path, "a/b.tif") == (tmp_path / "a" / "b.tif").resolve()
    assert resolve_under(tmp_path, "a%2Fb.tif") == (tmp_path / "a" / "b.tif").resolve()
    assert resolve_under(tmp_path, "inner-link.tif") == (tmp_path / "a" / "b.tif").resolve()
    for bad in ("../x", "a/../../x", "%2e%2e/x", "/etc/passwd", "a//b.tif", ".hidden", "", "%ff"):
        assert resolve_under(tmp_path, bad) is None, bad
