"""The shared offline test data for tests: a test that needs it is skipped when it is absent.

Where the data lives: :mod:`stac2cube.sample.data`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pystac

from ..sample.data import ENV_VAR, shared_data_dir

__all__ = [
    "load_item",
    "load_item_collection",
    "require_shared_data",
]


def require_shared_data() -> Path:
    """The shared data directory; skips the calling test (``pytest.skip``) when it is absent."""
    path = shared_data_dir()
    if path is None:
        import pytest

        pytest.skip(f"shared test data not found (set {ENV_VAR} or put it at ../shared/data)")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def load_item(relpath: str, *, migrate: bool = True) -> pystac.Item:
    """Read one STAC item, ``relpath`` relative to the shared data directory (skips if absent).

    ``migrate`` is passed to :meth:`pystac.Item.from_dict`; pystac's own migration warnings (e.g.
    about the storage extension) are silenced, they concern the provider's data, not our code.
    """
    data = _read_json(require_shared_data() / relpath)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pystac.Item.from_dict(data, migrate=migrate)


def load_item_collection(relpath: str, *, migrate: bool = True) -> list[pystac.Item]:
    """Read the items of a FeatureCollection (item collection or STAC API search page)."""
    data = _read_json(require_shared_data() / relpath)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [pystac.Item.from_dict(f, migrate=migrate) for f in data.get("features", [])]
