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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pystac

from ..errors import CatalogError
from ..io.atomic import temp_path_for
from ..io.catalog import INDEX_FILE, PREVIOUS_INDEX_FILE, CatalogStore, item_id_of

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
    import stac_geoparquet.arrow as sga

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
    tmp = temp_path_for(path)
    try:
        parts = [kept] if kept is not None else []
        if docs:
            parts.append(sga.parse_stac_items_to_arrow(docs, schema="FullFile").read_all())
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
        sga.to_parquet(table, tmp, collections={str(coll["id"]): coll})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        raise CatalogError(f"cannot write the catalog index {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
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
    import stac_geoparquet.arrow as sga

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
            rows = list(sga.stac_table_to_items(table))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable catalog index: %s", exc)
            return None
        for raw in rows:
            geometry = raw.pop("geometry", None)  # GeoJSON from WKB: no nulls to drop
            doc: dict[str, Any] = _drop_nulls(raw)
            doc["geometry"] = geometry
            doc.setdefault("properties", {}).setdefault("datetime", None)
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


def _drop_nulls(value: Any) -> Any:
    """``value`` without the ``None`` values of its dicts, recursively (lists keep length); the
    same as :func:`stac2cube.export.drop_nulls` on the plain dicts and lists Arrow gives."""
    kind = type(value)
    if kind is dict:
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if kind is list and any(type(v) in (dict, list) for v in value[:1]):
        return [_drop_nulls(v) for v in value]  # Arrow lists are homogeneous: test the first
    return value
