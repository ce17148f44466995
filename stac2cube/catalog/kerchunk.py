"""The items' kerchunk references: per committed item, ``<catalog>/_kerchunk/<item id>.json``
holds, per COG asset, the zarr array metadata and the byte range of every internal tile, with
paths relative to the catalog. Adding an item adds its file; nothing is rebuilt.
:func:`stac2cube.cube.kerchunk.open_virtual_cube` reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io.atomic import write_json_atomic
from .layout import REFS_DIR
from .store import CatalogStore


def item_references(store: CatalogStore, item: Mapping[str, Any]) -> dict[str, Any]:
    """kerchunk references of every COG asset of a committed item (paths relative to the
    catalog root)."""
    from kerchunk.tiff import tiff_to_zarr

    item_dir = store.item_dir(str(item["id"]))
    assets: dict[str, Any] = {}
    for key, asset in item.get("assets", {}).items():
        if "cloud-optimized" not in str(asset.get("type", "")):
            continue
        path = item_dir / Path(asset["href"]).name
        refs = tiff_to_zarr(str(path))
        # a COG with internal overviews is a pyramid: its full resolution is level "0/"
        level = "" if ".zarray" in refs else "0/"
        rel = path.relative_to(store.root).as_posix()
        chunks = {
            k[len(level) :]: [rel, int(v[1]), int(v[2])]
            for k, v in refs.items()
            if k.startswith(level)
            and "/" not in k[len(level) :]
            and not k[len(level) :].startswith(".")
            and isinstance(v, list)
        }
        assets[key] = {
            "zarray": json.loads(refs[f"{level}.zarray"]),
            "chunks": chunks,
            "proj:transform": asset.get("proj:transform", item["properties"].get("proj:transform")),
        }
    return {
        "id": item["id"],
        "datetime": item["properties"]["datetime"],
        "proj:transform": item["properties"].get("proj:transform"),
        "proj:code": item["properties"].get("proj:code"),
        "assets": assets,
    }


def references_path(store: CatalogStore, item_id: str) -> Path:
    return store.root / REFS_DIR / f"{item_id}.json"


def write_item_references(store: CatalogStore, item: Mapping[str, Any]) -> Path:
    """Write (or replace) the reference file of one committed item."""
    path = references_path(store, str(item["id"]))
    write_json_atomic(path, item_references(store, item))
    return path


def remove_item_references(store: CatalogStore, item_id: str) -> None:
    references_path(store, item_id).unlink(missing_ok=True)


def build_references(catalog: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the reference files that are missing (all with ``overwrite``); returns them."""
    store = CatalogStore.open(catalog)
    try:  # one listing, not one stat per item: every run calls this
        have = {e.name for e in os.scandir(store.root / REFS_DIR)}
    except FileNotFoundError:
        have = set()
    written = []
    for item_id in store.item_ids():  # item JSON is read only where references are missing
        if overwrite or f"{item_id}.json" not in have:
            item = store.read_item(item_id)
            if item is not None:
                written.append(write_item_references(store, item))
    return written
