"""Access to the shared offline test data (real provider STAC items, schemas, small rasters).

The data lives outside the repository: in ``$STAC2CUBE_SHARED_DATA`` when that is set, else in
``<repository>/../shared/data`` (where CI puts it beside the clone). Tests call
:func:`require_shared_data`, which skips them when the data is absent.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pystac

__all__ = [
    "ENV_VAR",
    "load_item",
    "load_item_collection",
    "require_shared_data",
    "shared_data_dir",
]

ENV_VAR = "STAC2CUBE_SHARED_DATA"
"""Environment variable naming the shared data directory."""


def shared_data_dir() -> Path | None:
    """The shared data directory, or None when it does not exist."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        path = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path if path.is_dir() else None


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
