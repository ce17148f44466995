"""A stac-geoparquet index of a collection's items, so opening a large catalog reads one file.

:func:`write_index` writes ``<catalog>/<collection>/items.parquet``: one row per item the
collection links, exactly as its JSON holds it (asset hrefs and links stay relative, so the
catalog can still be moved), and, in the file's ``stac-geoparquet`` metadata, the collection
document as it was when the index was written. :func:`read_index` returns the items only while
that document equals ``collection.json``; any commit (a new item, a removed one, a changed
extent) rewrites ``collection.json`` and so makes the index stale, and the readers
(:func:`~stac2cube.cube.odc.catalog_items`) go back to the JSON files until the next
:func:`write_index`. The check costs one small JSON read and the parquet footer.

An item replaced in place (a stale scene reprocessed) may leave ``collection.json`` byte for byte
unchanged, which the check cannot see: the pipeline therefore calls :func:`invalidate_index`
before it commits anything and :func:`write_index` after, so a crash in between leaves no index
(readers use the JSON files) rather than a stale one.

Arrow holds one schema for all rows, so a key only some items have reads back as ``null`` in the
others; nulls are dropped on reading (STAC treats an optional ``null`` like an absent field), as
:func:`stac2cube.export.read_geoparquet` does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pystac

from ..errors import CatalogError
from ..io.atomic import temp_path_for
from ..io.catalog import INDEX_FILE, CatalogStore

log = logging.getLogger(__name__)

INDEX_NAME = INDEX_FILE
"""File name of the index, next to ``collection.json``."""
_GEOPARQUET_KEY = b"stac-geoparquet"


def _store(catalog: str | Path | CatalogStore) -> CatalogStore:
    return catalog if isinstance(catalog, CatalogStore) else CatalogStore.open(catalog)


def index_path(catalog: str | Path | CatalogStore) -> Path:
    """Where the index of the catalog's collection lives (``<collection>/items.parquet``)."""
    return _store(catalog).collection_path.parent / INDEX_NAME


def _item_links(collection: dict[str, Any]) -> list[str]:
    return [str(ln["href"]) for ln in collection.get("links", []) if ln.get("rel") == "item"]


def _read_items(coll_dir: Path, hrefs: Iterable[str]) -> list[dict[str, Any]]:
    docs = []
    for href in hrefs:
        path = coll_dir / href
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(
                f"cannot index the item {path}: {exc}; run `stac2cube validate` on the catalog"
            ) from exc
        docs.append(doc)
    return docs


def write_index(catalog: str | Path | CatalogStore) -> Path:
    """Write (or replace) the stac-geoparquet index of the catalog's collection; returns its path.

    ``catalog`` is a catalog directory, its ``catalog.json`` or a :class:`CatalogStore`. The file
    is written beside its final name and renamed into place, so readers see the old index or the
    new one; a leftover of a crash is removed by the next run's recovery. Call it while holding
    the catalog's lock (the pipeline does, at the end of a run).
    """
    import stac_geoparquet.arrow as sga

    store = _store(catalog)
    coll_dir = store.collection_path.parent
    for _ in range(3):  # the collection must not change while its items are read
        coll = store.read_collection()
        docs = _read_items(coll_dir, _item_links(coll))
        if store.read_collection() == coll:
            break
    else:
        raise CatalogError(
            f"{store.collection_path} kept changing while it was indexed; "
            "write the index while holding the catalog's lock"
        )
    path = coll_dir / INDEX_NAME
    tmp = temp_path_for(path)
    try:
        if docs:
            table: Any = sga.parse_stac_items_to_arrow(docs, schema="FullFile")
        else:
            import pyarrow as pa

            table = pa.table(
                {"id": pa.array([], pa.string()), "geometry": pa.array([], pa.binary())}
            )
        sga.to_parquet(table, tmp, collections={str(coll["id"]): coll})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, ValueError, TypeError) as exc:
        raise CatalogError(f"cannot write the catalog index {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("indexed %d item(s) of %s in %s", len(docs), coll["id"], path)
    return path


def invalidate_index(catalog: str | Path | CatalogStore) -> bool:
    """Remove the index (readers then use the JSON files); True if there was one."""
    path = index_path(catalog)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def _collection_paths(catalog: str | Path | CatalogStore) -> list[Path]:
    """``collection.json`` of every collection of a catalog (or the one given)."""
    if isinstance(catalog, CatalogStore):
        return [catalog.collection_path]
    path = Path(catalog)
    if path.is_dir():
        path = path / "catalog.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc
    if doc.get("type") == "Collection":
        return [path]
    return [
        path.parent / str(ln["href"]) for ln in doc.get("links", []) if ln.get("rel") == "child"
    ]


def read_index(
    catalog: str | Path | CatalogStore, *, collection: str | None = None
) -> list[pystac.Item] | None:
    """The items of the catalog from its index, or None when an index is missing or stale.

    ``catalog`` is a catalog directory, its ``catalog.json``, a ``collection.json`` or a
    :class:`CatalogStore`; with several collections, every one must have a current index
    (``collection`` restricts this to one id). Items come back in the collection's link order,
    each with its self href set to its JSON file, so relative asset hrefs resolve.
    """
    import pyarrow.parquet as pq
    import stac_geoparquet.arrow as sga

    current = pystac.get_stac_version()
    items: list[pystac.Item] = []
    for coll_path in _collection_paths(catalog):
        try:
            coll = json.loads(coll_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"cannot read {coll_path}: {exc}") from exc
        if collection is not None and coll.get("id") != collection:
            continue
        path = coll_path.parent / INDEX_NAME
        if not path.exists():
            log.debug("%s has no index", coll_path)
            return None
        try:
            meta = pq.read_schema(path).metadata or {}
            stored = json.loads(meta[_GEOPARQUET_KEY]).get("collections", {})
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring the unreadable catalog index %s: %s", path, exc)
            return None
        if stored.get(coll.get("id")) != coll:
            log.info("the catalog index %s is stale; reading the item JSON files", path)
            return None
        hrefs = {Path(h).stem: coll_path.parent / h for h in _item_links(coll)}
        try:
            rows = list(sga.stac_table_to_items(pq.read_table(path))) if hrefs else []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable catalog index %s: %s", path, exc)
            return None
        if sorted(str(r["id"]) for r in rows) != sorted(hrefs):
            log.warning("the catalog index %s does not hold the linked items; ignoring it", path)
            return None
        for raw in rows:
            geometry = raw.pop("geometry", None)  # GeoJSON from WKB: no nulls to drop
            doc: dict[str, Any] = _drop_nulls(raw)
            doc["geometry"] = geometry
            doc.setdefault("properties", {}).setdefault("datetime", None)
            migrate = doc.get("stac_version") != current  # our own items need no migration
            item = pystac.Item.from_dict(doc, preserve_dict=False, migrate=migrate)
            item.set_self_href(str(hrefs[item.id].resolve()))
            items.append(item)
    return items


def _drop_nulls(value: Any) -> Any:
    """``value`` without the ``None`` values of its dicts, recursively (lists keep length); the
    same as :func:`stac2cube.export.drop_nulls` on the plain dicts and lists Arrow gives."""
    kind = type(value)
    if kind is dict:
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if kind is list and any(type(v) in (dict, list) for v in value[:1]):
        return [_drop_nulls(v) for v in value]  # Arrow lists are homogeneous: test the first
    return value
