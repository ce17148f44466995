"""The kerchunk export of the virtual cube: per committed item,
``<catalog>/_kerchunk/<item id>.json`` holds, per COG asset, its Zarr v3 array metadata and the
byte range of every internal tile, with paths relative to the catalog. They come from the same
virtual-tiff manifests as the Icechunk snapshots (:func:`stac2cube.catalog.virtual.item_manifests`)
but point at the catalog's current files, for tools that read kerchunk references. Adding an item
adds its file; nothing is rebuilt. :func:`stac2cube.cube.kerchunk.open_kerchunk_cube` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io.atomic import write_json_atomic
from .layout import REFS_DIR
from .store import CatalogStore
from .virtual import cog_assets, item_manifests

FORMAT = "zarr-v3"
"""The reference files' form (``format`` key): Zarr v3 metadata, chunk keys ``"i.j"``."""
FORMAT_MARK = f".{FORMAT}"
"""File in the references' directory once every file there is of :data:`FORMAT`."""


def item_references(store: CatalogStore, item: Mapping[str, Any]) -> dict[str, Any]:
    """kerchunk references of every COG asset of a committed item (paths relative to the
    catalog root)."""
    item_dir = store.item_dir(str(item["id"]))
    assets = cog_assets(item)
    paths = {key: item_dir / Path(str(a["href"])).name for key, a in assets.items()}
    out: dict[str, Any] = {}
    for key, arr in item_manifests(paths).items():
        rel = paths[key].relative_to(store.root).as_posix()
        entries = arr.manifest.dict()
        out[key] = {
            "zarr.json": arr.metadata.to_dict(),
            "chunks": {k: [rel, int(e["offset"]), int(e["length"])] for k, e in entries.items()},
            "proj:transform": assets[key].get(
                "proj:transform", item["properties"].get("proj:transform")
            ),
            "raster:bands": assets[key].get("raster:bands"),
        }
    return {
        "format": FORMAT,
        "id": item["id"],
        "datetime": item["properties"]["datetime"],
        "proj:transform": item["properties"].get("proj:transform"),
        "proj:code": item["properties"].get("proj:code"),
        "assets": out,
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
    if have and FORMAT_MARK not in have:  # files of the Zarr v2 form (before 0.3): rewrite all
        overwrite = True
    written = []
    for item_id in store.item_ids():  # item JSON is read only where references are missing
        if overwrite or f"{item_id}.json" not in have:
            item = store.read_item(item_id)
            if item is not None:
                written.append(write_item_references(store, item))
    mark = store.root / REFS_DIR / FORMAT_MARK
    if not mark.exists():
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    return written
