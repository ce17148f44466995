"""The stac-geoparquet home of a catalog: the index of a collection's items, and the conversion
between STAC item dicts and stac-geoparquet that the index and :mod:`stac2cube.export` share.

The index, ``<collection>/items.parquet``, lets a large catalog be opened by reading one file.
It is used only while it is current: the collection it was written with, kept in the file's
metadata, must equal ``collection.json`` (see ``docs/catalog.md`` for how the pipeline keeps it
so).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac

from ..errors import CatalogError
from ..io.atomic import temp_path_for
from .layout import INDEX_FILE, PREVIOUS_INDEX_FILE, item_id_of
from .store import CatalogStore

log = logging.getLogger(__name__)

INDEX_NAME = INDEX_FILE
"""File name of the index, next to ``collection.json``."""
_GEOPARQUET_KEY = b"stac-geoparquet"
_LEAVES = frozenset({str, int, float, bool, type(None)})


# ---------------------------------------------------------------------------- stac-geoparquet
def drop_nulls(value: Any) -> Any:
    """``value`` without the ``None`` values of its mappings, recursively (lists keep length).

    Arrow holds one schema for all rows, so a key that only some items (or some elements of a
    list, such as the provenance steps) have reads back as ``null`` in the others; STAC treats
    an optional ``null`` like an absent field. Lists of scalars are returned as they are."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is dict:
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if kind is list:
        for v in value:
            if type(v) not in _LEAVES:
                return [drop_nulls(v) for v in value]
        return value
    if isinstance(value, Mapping):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def items_to_arrow(items: Iterable[dict[str, Any]]) -> Any:
    """STAC item dicts as a stac-geoparquet Arrow stream (one schema for all of them)."""
    import stac_geoparquet.arrow as sga

    return sga.parse_stac_items_to_arrow(items, schema="FullFile")


def table_items(table: Any) -> Iterator[dict[str, Any]]:
    """The rows of a stac-geoparquet table as STAC item dicts: nulls dropped (:func:`drop_nulls`;
    the geometry, GeoJSON made from WKB, has none), ``properties.datetime`` kept even when null,
    as an item must have it."""
    import stac_geoparquet.arrow as sga

    for raw in sga.stac_table_to_items(table):
        item = {k: v if k == "geometry" else drop_nulls(v) for k, v in raw.items() if v is not None}
        item.setdefault("properties", {}).setdefault("datetime", None)
        yield item


def write_geoparquet(table: Any, path: Path, collections: Mapping[str, Any]) -> None:
    """Write a stac-geoparquet ``table`` (an Arrow table or stream, see :func:`items_to_arrow`)
    to ``path``, the ``collections`` (id -> collection dict) in its ``stac-geoparquet``
    metadata. The file is written beside its final name, synced and renamed into place, so a
    reader sees the old file or the new one."""
    import stac_geoparquet.arrow as sga

    tmp = temp_path_for(path)
    try:
        sga.to_parquet(table, tmp, collections=collections)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_geoparquet(path: str | Path) -> list[dict[str, Any]]:
    """The items of a stac-geoparquet file as STAC item dicts (see :func:`table_items`)."""
    try:
        table = _read_parquet(Path(path))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read {path} as stac-geoparquet: {exc}") from exc
    return list(table_items(table))


# ---------------------------------------------------------------------------- the index
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


def _read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    """One parquet file as a table. ``pq.read_table`` would go through pyarrow's dataset layer,
    whose import (pandas included) costs 0.3 s: more than reading a 10,000-item index."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        return f.read(columns=columns)


def write_index(
    catalog: str | Path | CatalogStore,
    *,
    reuse: Any = None,
    changed: Iterable[str] = (),
) -> Path:
    """Write (or replace) the stac-geoparquet index of the catalog's collection; returns its path.

    ``catalog`` is a catalog directory, its ``catalog.json`` or a :class:`CatalogStore`. The file
    is written beside its final name and renamed into place, so readers see the old index or the
    new one; a leftover of a crash is removed by the next run's recovery. Call it while holding
    the catalog's lock (the pipeline does, at the end of a run).

    ``reuse`` is the index as it was before the items ``changed`` were committed (added or
    replaced): a table from :func:`read_index_table` or the file :func:`set_aside_index` moved.
    Its rows of the other linked items are kept as they are and only the item JSON files of the
    rest are read, so an update that adds one scene to a large catalog reads one item, not all
    of them. Without it every item is read.
    """
    import pyarrow as pa

    if isinstance(reuse, Path):
        try:
            reuse = _read_parquet(reuse)
        except (OSError, ValueError) as exc:
            log.warning("not reusing the previous index %s: %s", reuse, exc)
            reuse = None
    store = _store(catalog)
    coll_dir = store.collection_path.parent
    skip = set(changed)
    reuse_ids = reuse.column("id").to_pylist() if reuse is not None else []
    for _ in range(3):  # the collection must not change while its items are read
        coll = store.read_collection()
        links = _item_links(coll)
        ids = [item_id_of(h) for h in links]
        wanted = set(ids) - skip
        keep = [i for i, v in enumerate(reuse_ids) if v in wanted]
        kept: Any = None
        if keep:
            kept = reuse if len(keep) == len(reuse_ids) else reuse.take(keep)
        have = set(kept.column("id").to_pylist()) if kept is not None else set()
        docs = _read_items(coll_dir, [h for h, i in zip(links, ids, strict=True) if i not in have])
        if store.read_collection() == coll:
            break
    else:
        raise CatalogError(
            f"{store.collection_path} kept changing while it was indexed; "
            "write the index while holding the catalog's lock"
        )
    path = coll_dir / INDEX_NAME
    try:
        parts = [kept] if kept is not None else []
        if docs:
            parts.append(items_to_arrow(docs).read_all())
        if parts:
            # one chunk, so one row group: else every update would add a row group to the file
            table = pa.concat_tables(parts, promote_options="permissive").combine_chunks()
            order = table.column("id").to_pylist()
            if order != ids:  # the collection's link order (an update appends: already so)
                pos = {v: i for i, v in enumerate(order)}
                table = table.take([pos[i] for i in ids])
        else:
            table = pa.table(
                {"id": pa.array([], pa.string()), "geometry": pa.array([], pa.binary())}
            )
        write_geoparquet(table, path, {str(coll["id"]): coll})
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        raise CatalogError(f"cannot write the catalog index {path}: {exc}") from exc
    log.info(
        "indexed %d item(s) of %s in %s (%d read from JSON)", len(ids), coll["id"], path, len(docs)
    )
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


def read_index_table(
    catalog: str | Path | CatalogStore, columns: Sequence[str] | None = None
) -> Any:
    """The index of the catalog's collection as a :class:`pyarrow.Table` while it is current
    (it holds exactly the linked items and the collection equals the one it was written with),
    else None. ``columns`` reads only those (``id`` always). What :func:`write_index` takes as
    ``reuse``."""
    store = _store(catalog)
    tables = _current_tables([store.collection_path], None, columns)
    return None if tables is None else tables[0][2]


def set_aside_index(catalog: str | Path | CatalogStore) -> Path | None:
    """Move the index out of the readers' way before commits (they use the JSON files until the
    next :func:`write_index`), keeping it to be passed as ``reuse``; its path, or None if there
    was no index. A crash leaves it behind for the next run's recovery to delete."""
    store = _store(catalog)
    path = index_path(store)
    aside = path.with_name(PREVIOUS_INDEX_FILE)
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    return aside


def _current_tables(
    coll_paths: list[Path], collection: str | None, columns: Sequence[str] | None = None
) -> list[tuple[Path, dict[str, str], Any]] | None:
    """(collection path, {item id: JSON path}, index table) of each collection, or None as soon
    as one index is missing, unreadable or stale."""
    import pyarrow.parquet as pq

    out = []
    for coll_path in coll_paths:
        try:
            coll = json.loads(coll_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"cannot read {coll_path}: {exc}") from exc
        if collection is not None and coll.get("id") != collection:
            continue
        path = coll_path.parent / INDEX_NAME
        try:  # one open: the footer holds the metadata, the schema and the columns' places
            with pq.ParquetFile(path) as f:
                meta = f.schema_arrow.metadata or {}
                stored = json.loads(meta[_GEOPARQUET_KEY]).get("collections", {})
                if stored.get(coll.get("id")) != coll:
                    log.info("the catalog index %s is stale; reading the item JSON files", path)
                    return None
                wanted = None
                if columns is not None:
                    names = set(f.schema_arrow.names)
                    wanted = [c for c in dict.fromkeys(["id", *columns]) if c in names]
                table = f.read(columns=wanted)
        except FileNotFoundError:
            log.debug("%s has no index", coll_path)
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring the unreadable catalog index %s: %s", path, exc)
            return None
        base = str(coll_path.parent.resolve())
        hrefs = {item_id_of(h): os.path.join(base, h) for h in _item_links(coll)}
        ids = table.column("id").to_pylist() if "id" in table.column_names else []
        if sorted(str(i) for i in ids) != sorted(hrefs):
            log.warning("the catalog index %s does not hold the linked items; ignoring it", path)
            return None
        out.append((coll_path, hrefs, table))
    return out


def read_index(
    catalog: str | Path | CatalogStore,
    *,
    collection: str | None = None,
    assets: Sequence[str] | None = None,
    drop_properties: Sequence[str] = (),
) -> list[pystac.Item] | None:
    """The items of the catalog from its index, or None when an index is missing or stale.

    ``catalog`` is a catalog directory, its ``catalog.json``, a ``collection.json`` or a
    :class:`CatalogStore`; with several collections, every one must have a current index
    (``collection`` restricts this to one id). Items come back in the collection's link order,
    each with its self href set to its JSON file, so relative asset hrefs resolve.

    ``assets`` keeps only those asset keys in the items (the ones a load asks for): most of the
    cost of turning rows into items is in the assets, so a cube of two bands opens faster.
    ``drop_properties`` leaves out the properties whose names start with one of these prefixes
    (say the provenance, ``"stac2cube:"``, which a lazy load does not need).
    """
    paths = [catalog.collection_path] if isinstance(catalog, CatalogStore) else None
    tables = _current_tables(paths or _collection_paths(catalog), collection)
    if tables is None:
        return None
    current = pystac.get_stac_version()
    items: list[pystac.Item] = []
    for _, hrefs, table in tables:
        if not hrefs:
            continue
        if assets is not None:
            table = _select_assets(table, assets)
        if drop_properties:
            prefixes = tuple(drop_properties)
            table = table.drop_columns([c for c in table.column_names if c.startswith(prefixes)])
        try:
            docs = list(table_items(table))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable catalog index: %s", exc)
            return None
        for doc in docs:
            doc.setdefault("geometry", None)
            doc.setdefault("assets", {})
            migrate = doc.get("stac_version") != current  # our own items need no migration
            item = pystac.Item.from_dict(doc, preserve_dict=False, migrate=migrate)
            item.set_self_href(os.path.normpath(hrefs[item.id]))
            items.append(item)
    return items


def _select_assets(table: Any, keys: Sequence[str]) -> Any:
    """``table`` with its ``assets`` struct column reduced to the fields ``keys`` (those it has)."""
    import pyarrow as pa

    if "assets" not in table.column_names:
        return table
    col = table.column("assets").combine_chunks()
    names = [f.name for f in col.type]
    keep = [k for k in dict.fromkeys(keys) if k in names]
    if not keep:
        return table.drop_columns(["assets"])
    sub = pa.StructArray.from_arrays(
        [col.field(k) for k in keep], names=keep, mask=col.is_null() if col.null_count else None
    )
    return table.set_column(table.column_names.index("assets"), "assets", sub)
