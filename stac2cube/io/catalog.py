"""The output: a self-contained static STAC catalog on disk, written atomically.

Layout (all links relative, so the directory can be moved or served as it is)::

    <root>/catalog.json                         Catalog  -> child collection
    <root>/<collection>/collection.json         Collection -> items
    <root>/<collection>/items.parquet           stac-geoparquet index of the items (rewritten
                                                after each run; readers check it is current)
    <root>/<collection>/<item>/<item>.json      Item
    <root>/<collection>/<item>/<band>.tif       COGs of the item
    <root>/<collection>/_coreg-reference/       the co-registration reference (a collection
                                                asset, ``coreg-reference``), if steps.coreg runs
    <root>/<collection>/_cloud-reference/       the clear-sky reference of the multi-temporal
                                                cloud test (asset ``cloud-reference``), if on, and
                                                its later versions (``cloud-reference-v2``, ...)
    <root>/_stac2cube/failures.jsonl            failure log (one JSON object per line)
    <root>/_stac2cube/lock                      held while a run writes

Write order makes every crash safe: an item's COGs and JSON are built in
``<collection>/.staging-<item>/``, that directory is renamed into place (or atomically exchanged
with the previous version, Linux ``renameat2(RENAME_EXCHANGE)``), and only then does the
collection link it. The catalog never refers to a file that is not complete; what a crash leaves
(staging directories, temporary files, a replaced version whose successor never arrived) is
finished or undone by :meth:`CatalogStore.recover` at the start of the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import shutil
import socket
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import CatalogError, CatalogLockedError
from .atomic import TMP_MARK, append_line, exchange_paths, write_json_atomic

log = logging.getLogger(__name__)

STATE_DIR = "_stac2cube"
FAILURE_LOG = "failures.jsonl"
FILTERED_LOG = "filtered.jsonl"
STAGING_PREFIX = ".staging-"
OLD_PREFIX = ".replaced-"
REMOVING_MARK = ".removing"
"""File put in an item directory that is being removed (see :meth:`CatalogStore.remove_item`)."""
CLEAN_MARK = "clean-exit"
"""In the state directory while the last run that wrote the catalog ended normally (see
:meth:`CatalogStore.take_clean_mark`)."""
CATALOG_ID = "stac2cube"
REFERENCE_ASSET = "coreg-reference"
"""Key of the collection asset that holds the co-registration reference image."""
REFERENCE_DIR = "_coreg-reference"
CLOUD_REFERENCE_ASSET = "cloud-reference"
"""Key of the collection asset that holds the clear-sky reference of the multi-temporal cloud
test (``steps.cloudmask.temporal_threshold``)."""
REFERENCE_DIRS: Mapping[str, str] = {
    REFERENCE_ASSET: REFERENCE_DIR,
    CLOUD_REFERENCE_ASSET: "_cloud-reference",
}
"""Collection reference assets -> the directory (in the collection) that holds their file."""
VERSION_MARK = "-v"
"""Version ``n >= 2`` of reference ``key`` is the collection asset ``f"{key}-v{n}"``, its file in
the same directory as version 1 (the asset ``key`` itself)."""
INDEX_FILE = "items.parquet"
PREVIOUS_INDEX_FILE = ".items-previous.parquet"
"""The index as it was before a run's commits, read back when the run writes the new one."""
"""The collection's stac-geoparquet index (:mod:`stac2cube.cube.index`), next to its JSON."""


def reference_version_key(key: str, version: int) -> str:
    """The collection asset of version ``version`` of reference ``key`` (1: ``key`` itself)."""
    return key if version == 1 else f"{key}{VERSION_MARK}{version}"


def reference_base_key(asset_key: str) -> tuple[str, int] | None:
    """``(reference key, version)`` of a reference asset key (``cloud-reference-v2`` ->
    ``("cloud-reference", 2)``), None when it is not one."""
    if asset_key in REFERENCE_DIRS:
        return asset_key, 1
    base, mark, n = asset_key.rpartition(VERSION_MARK)
    if mark and base in REFERENCE_DIRS and n.isdigit() and int(n) >= 2:
        return base, int(n)
    return None


def load_template(name: str, **values: str) -> dict[str, Any]:
    """A JSON template from ``catalog_templates/`` with ``${name}`` placeholders filled."""
    text = files("stac2cube.catalog_templates").joinpath(name).read_text()
    escaped = {k: json.dumps(v)[1:-1] for k, v in values.items()}
    try:
        doc: dict[str, Any] = json.loads(_BracedTemplate(text).substitute(escaped))
    except KeyError as exc:
        raise CatalogError(f"template {name} needs a value for {exc}") from exc
    doc.pop("$comment", None)
    return doc


class _BracedTemplate(string.Template):
    """Only ``${name}`` is a placeholder (so ``$comment``/``$schema`` keys stay as they are)."""

    _braced_only = (
        r"\$(?:(?P<escaped>\$)|\{(?P<braced>[_a-z][_a-z0-9]*)\}"
        r"|(?P<named>(?!))|(?P<invalid>(?!)))"
    )
    pattern = _braced_only  # type: ignore[assignment]


def stac2cube_schema() -> dict[str, Any]:
    """The JSON Schema of the stac2cube provenance extension."""
    path = files("stac2cube.catalog_templates").joinpath("stac2cube/v1.0.0/schema.json")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@dataclass(frozen=True)
class FailureRecord:
    """One line of the failure log."""

    item_id: str
    stage: str
    error: str
    message: str
    time: str
    run_id: str

    def to_dict(self) -> dict[str, str]:
        return {
            "item_id": self.item_id,
            "stage": self.stage,
            "error": self.error,
            "message": self.message,
            "time": self.time,
            "run_id": self.run_id,
        }


def item_id_of(href: str) -> str:
    """The id of the item an item link points to (``./<id>/<id>.json``): ``Path(href).stem``
    without building a Path (done for every link of a large collection)."""
    return os.path.splitext(os.path.basename(href))[0]


def _temporary_files(root: Path) -> list[Path]:
    """What an atomic write left behind under ``root`` (``TMP_MARK`` in the name). ``os.walk``
    rather than ``Path.rglob``, which is several times slower on a catalog of thousands of files,
    and every run's recovery walks the whole catalog."""
    return [
        Path(top, name)
        for top, dirs, files in os.walk(root)
        for name in (*files, *dirs)
        if TMP_MARK in name
    ]


class CatalogStore:
    """Reads and writes the output catalog. Only one process writes (see :meth:`lock`)."""

    def __init__(
        self,
        root: Path,
        collection_id: str,
        *,
        title: str = "",
        description: str = "",
        license: str = "other",
    ) -> None:
        self.root = Path(root)
        self.collection_id = collection_id
        self._meta = {
            "collection_id": collection_id,
            "title": title or collection_id,
            "description": description or collection_id,
            "license": license,
        }

    @classmethod
    def open(cls, catalog: Path | str) -> CatalogStore:
        """An existing stac2cube catalog (its directory or ``catalog.json``)."""
        root = Path(catalog)
        if root.name == "catalog.json":
            root = root.parent
        try:
            cat = json.loads((root / "catalog.json").read_text())
        except FileNotFoundError:
            raise CatalogError(f"{root} has no catalog.json: is it a stac2cube catalog?") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"cannot read {root / 'catalog.json'}: {exc}") from exc
        children = [ln["href"] for ln in cat.get("links", []) if ln.get("rel") == "child"]
        if not children:
            raise CatalogError(f"{root / 'catalog.json'} links no collection")
        return cls(root, Path(children[0]).parent.name)

    def orphans(self) -> list[Path]:
        """Files and directories in the collection that no item references (a crash's leftovers
        or files put there by hand); the next run's :meth:`recover` removes the run's own."""
        coll_dir = self.root / self.collection_id
        if not coll_dir.exists():
            return []
        linked = set(self.item_ids())
        assets = self.read_collection().get("assets", {})
        ref_files: dict[str, set[str]] = {}
        for key, asset in assets.items():
            ref = reference_base_key(key)
            if ref is not None:
                ref_files.setdefault(REFERENCE_DIRS[ref[0]], set()).add(Path(asset["href"]).name)
        out: list[Path] = []
        for p in sorted(coll_dir.iterdir()):
            if p.name in ("collection.json", INDEX_FILE):
                continue
            if p.name in ref_files and p.is_dir():
                out.extend(f for f in sorted(p.iterdir()) if f.name not in ref_files[p.name])
                continue
            if not p.is_dir() or p.name not in linked:
                out.append(p)
                continue
            doc = self.read_item(p.name) or {}
            used = {Path(a["href"]).name for a in doc.get("assets", {}).values()}
            used.add(f"{p.name}.json")
            out.extend(f for f in sorted(p.iterdir()) if f.name not in used)
        return out

    # ---------------------------------------------------------------- paths
    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.json"

    @property
    def collection_path(self) -> Path:
        return self.root / self.collection_id / "collection.json"

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def failure_log(self) -> Path:
        return self.state_dir / FAILURE_LOG

    def item_dir(self, item_id: str) -> Path:
        return self.root / self.collection_id / item_id

    def item_path(self, item_id: str) -> Path:
        return self.item_dir(item_id) / f"{item_id}.json"

    def staging_dir(self, item_id: str) -> Path:
        """Where a new version of an item is built before it is swapped into place."""
        return self.root / self.collection_id / f"{STAGING_PREFIX}{item_id}"

    def new_staging_dir(self, item_id: str) -> Path:
        """An empty staging directory for ``item_id`` (what an earlier crash left is removed)."""
        staging = self.staging_dir(item_id)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    # ---------------------------------------------------------------- create / read
    def create(self) -> None:
        """Create the catalog and collection from the templates if they do not exist."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # the collection first, then the catalog that links it, each in one atomic write:
            # a run killed in between leaves no catalog.json without its child link
            if not self.collection_path.exists():
                self.collection_path.parent.mkdir(parents=True, exist_ok=True)
                coll = load_template("collection.json", **self._meta)
                coll["links"] = self._collection_base_links()
                write_json_atomic(self.collection_path, coll)
            if self.catalog_path.exists():
                cat = json.loads(self.catalog_path.read_text())
            else:
                cat = load_template(
                    "catalog.json", catalog_id=CATALOG_ID, title="stac2cube catalog"
                )
                cat["links"] = [
                    {"rel": "root", "href": "./catalog.json", "type": "application/json"},
                ]
            child = f"./{self.collection_id}/collection.json"
            if not any(ln.get("href") == child for ln in cat.get("links", [])):
                cat["links"].append(
                    {
                        "rel": "child",
                        "href": child,
                        "type": "application/json",
                        "title": self._meta["title"],
                    }
                )
                write_json_atomic(self.catalog_path, cat)
        except OSError as exc:
            raise CatalogError(f"cannot create the catalog in {self.root}: {exc}") from exc

    @staticmethod
    def _collection_base_links() -> list[dict[str, str]]:
        return [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        ]

    def read_collection(self) -> dict[str, Any]:
        try:
            coll: dict[str, Any] = json.loads(self.collection_path.read_text())
        except FileNotFoundError:
            raise CatalogError(
                f"{self.collection_path} does not exist: is {self.root} a stac2cube catalog?"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"cannot read {self.collection_path}: {exc}") from exc
        return coll

    def reference_asset(self, key: str = REFERENCE_ASSET) -> dict[str, Any] | None:
        """The collection's reference asset ``key`` (one of :data:`REFERENCE_DIRS`; default the
        co-registration reference), or None."""
        try:
            coll = self.read_collection()
        except CatalogError:
            return None
        asset: dict[str, Any] | None = coll.get("assets", {}).get(key)
        return asset

    def reference_path(self, key: str = REFERENCE_ASSET) -> Path | None:
        """The file of reference ``key``, or None when the catalog has none yet."""
        asset = self.reference_asset(key)
        if asset is None:
            return None
        return (self.root / self.collection_id / str(asset["href"])).resolve()

    def reference_dir(self, key: str = REFERENCE_ASSET) -> Path:
        """Where the COG of reference ``key`` (or of one of its versions) is written."""
        ref = reference_base_key(key)
        if ref is None:
            raise CatalogError(f"{key!r} is not a reference asset of the collection")
        return self.root / self.collection_id / REFERENCE_DIRS[ref[0]]

    def reference_versions(self, key: str) -> list[tuple[int, str, dict[str, Any]]]:
        """``(version, asset key, asset)`` of every stored version of reference ``key``, oldest
        version first: the asset ``key`` is version 1 (a catalog written before versions has
        only it), ``key-v2``, ``key-v3``, ... the later ones."""
        try:
            assets = self.read_collection().get("assets", {})
        except CatalogError:
            return []
        out = []
        for k, asset in assets.items():
            ref = reference_base_key(k)
            if ref is not None and ref[0] == key:
                out.append((ref[1], k, dict(asset)))
        return sorted(out, key=lambda v: v[0])

    def remove_reference(self, key: str) -> None:
        """Unlink the reference asset ``key`` from the collection, then delete its file."""
        coll = self.read_collection()
        old = coll.get("assets", {}).pop(key, None)
        if old is None:
            return
        write_json_atomic(self.collection_path, coll)
        with contextlib.suppress(OSError):
            (self.root / self.collection_id / old["href"]).unlink()

    def set_reference(
        self, asset: Mapping[str, Any], extensions: Iterable[str] = (), key: str = REFERENCE_ASSET
    ) -> None:
        """Link a reference COG (already written under :meth:`reference_dir`) as the collection
        asset ``key``, replacing a previous one; its file is removed after."""
        coll = self.read_collection()
        old = coll.get("assets", {}).get(key)
        coll.setdefault("assets", {})[key] = dict(asset)
        for uri in extensions:
            if uri not in coll.setdefault("stac_extensions", []):
                coll["stac_extensions"].append(uri)
        write_json_atomic(self.collection_path, coll)
        if old and Path(old["href"]).name != Path(asset["href"]).name:
            with contextlib.suppress(OSError):
                (self.root / self.collection_id / old["href"]).unlink()

    def item_ids(self) -> list[str]:
        """Ids of the items the collection links to."""
        coll = self.read_collection()
        return [item_id_of(ln["href"]) for ln in coll.get("links", []) if ln.get("rel") == "item"]

    def read_item(self, item_id: str) -> dict[str, Any] | None:
        """The item's JSON, or None if the catalog has no complete item of that id."""
        try:
            doc: dict[str, Any] = json.loads(self.item_path(item_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return doc

    def iter_items(self) -> Iterator[dict[str, Any]]:
        for item_id in self.item_ids():
            doc = self.read_item(item_id)
            if doc is not None:
                yield doc

    # ---------------------------------------------------------------- write
    def add_item(self, item: Mapping[str, Any]) -> Path:
        """Commit an item: its JSON goes into its staging directory (where its COGs already are,
        if any), the staging directory replaces the item directory in one atomic step, then the
        collection links it. An existing item of the same id (stale, re-processed) is replaced
        whole: readers see the old version or the new one, never a mix.
        """
        item_id = str(item["id"])
        doc = dict(item)
        doc["collection"] = self.collection_id
        doc["links"] = [
            *[ln for ln in item.get("links", []) if ln.get("rel") not in _MANAGED_RELS],
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ]
        staging = self.staging_dir(item_id)
        staging.mkdir(parents=True, exist_ok=True)
        write_json_atomic(staging / f"{item_id}.json", doc)
        self._swap_in(item_id, staging)
        self._link_item(doc)
        return self.item_path(item_id)

    def _swap_in(self, item_id: str, staging: Path) -> None:
        final = self.item_dir(item_id)
        if not final.exists():
            os.rename(staging, final)
            return
        if exchange_paths(staging, final):
            shutil.rmtree(staging)  # it now holds the replaced version
            return
        old = final.with_name(f"{OLD_PREFIX}{item_id}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)  # a crash between these two renames is undone by recover()
        os.rename(staging, final)
        shutil.rmtree(old)

    def take_clean_mark(self) -> bool:
        """True when the last run that wrote this catalog ended normally (it left the mark of
        :meth:`set_clean_mark`); the mark is removed, so that if the caller's run is killed the
        next one sees no mark. Call it while holding the lock, before writing anything."""
        try:
            os.unlink(self.state_dir / CLEAN_MARK)
        except FileNotFoundError:
            return False
        return True

    def set_clean_mark(self) -> None:
        """Record that the run holding the lock ends normally: nothing of it is left to recover.
        Not made durable on purpose: a mark lost to a power cut only costs a full recovery."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / CLEAN_MARK).touch()

    def recover(self, *, after_clean_exit: bool = False) -> list[Path]:
        """Finish or undo what a crashed run left: temporary files and staging directories are
        removed; a replaced item directory whose successor never arrived is put back; an item
        directory that was swapped into place but not yet linked (a crash inside
        :meth:`add_item`) is linked, since it is complete by then.

        ``after_clean_exit`` (:meth:`take_clean_mark` said the last run ended normally) skips
        what only a killed run leaves: the visit of every item directory and the walk of the
        whole catalog for temporary files (about 10 ms per 200 items). Staging and replaced
        directories and a set-aside index are still looked for (one listing of the collection
        directory): a failed scene's staging directory that could not be deleted stays behind
        even in a run that ends normally."""
        removed = []
        coll_dir = self.root / self.collection_id
        if coll_dir.exists():
            for old in coll_dir.glob(f"{OLD_PREFIX}*"):
                final = old.with_name(old.name[len(OLD_PREFIX) :])
                if final.exists():
                    shutil.rmtree(old)
                else:
                    os.rename(old, final)
                removed.append(old)
            for staging in coll_dir.glob(f"{STAGING_PREFIX}*"):
                shutil.rmtree(staging)
                removed.append(staging)
            previous_index = coll_dir / PREVIOUS_INDEX_FILE
            if previous_index.exists():
                previous_index.unlink()
                removed.append(previous_index)
            if self.collection_path.exists() and not after_clean_exit:
                linked = set(self.item_ids())
                for d in sorted(coll_dir.iterdir()):
                    if d.name.startswith(("_", ".")) or not d.is_dir():
                        continue
                    if (d / REMOVING_MARK).exists():  # a removal that did not finish
                        if not self.remove_item(d.name):
                            shutil.rmtree(d)
                        removed.append(d)
                        continue
                    if d.name in linked:
                        continue
                    doc = self.read_item(d.name)
                    if doc is not None and doc.get("id") == d.name:
                        self._link_item(doc)
                        removed.append(d)
        for p in [] if after_clean_exit else _temporary_files(self.root):
            p.unlink(missing_ok=True)
            removed.append(p)
        return removed

    def _link_item(self, item: Mapping[str, Any]) -> None:
        coll = self.read_collection()
        href = f"./{item['id']}/{item['id']}.json"
        links = coll.setdefault("links", [])
        if not any(ln.get("rel") == "item" and ln.get("href") == href for ln in links):
            links.append({"rel": "item", "href": href, "type": "application/geo+json"})
        _extend_extent(coll, item)
        _merge_item_assets(coll, item)
        write_json_atomic(self.collection_path, coll)

    def remove_item(self, item_id: str) -> bool:
        """Unlink an item from the collection, then delete its files. True if it was there.

        The item directory is marked first, so that :meth:`recover` finishes a removal a crash
        interrupted instead of linking the item again."""
        coll = self.read_collection()
        href = f"./{item_id}/{item_id}.json"
        links = coll.get("links", [])
        kept = [ln for ln in links if not (ln.get("rel") == "item" and ln.get("href") == href)]
        if len(kept) == len(links):
            return False
        item_dir = self.item_dir(item_id)
        if item_dir.is_dir():
            (item_dir / REMOVING_MARK).touch()
        coll["links"] = kept
        write_json_atomic(self.collection_path, coll)
        shutil.rmtree(item_dir, ignore_errors=True)
        return True

    # ---------------------------------------------------------------- filtered scenes
    @property
    def filtered_log(self) -> Path:
        return self.state_dir / FILTERED_LOG

    def record_filtered(
        self, source: Any, config_hash: str, reason: str, results: Mapping[str, Any]
    ) -> None:
        """Record a scene a step decided not to write (e.g. too cloudy), with its figures."""
        from ..radiometry import processing_baseline

        rec = {
            "item_id": source.id,
            "reason": reason,
            "config_hash": config_hash,
            "source_updated": source.properties.get("updated"),
            "processing_baseline": processing_baseline(source),
            "results": dict(results),
            "time": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        append_line(self.filtered_log, json.dumps(rec, default=str))

    def filtered(self) -> dict[str, dict[str, Any]]:
        """The latest filter record per item id."""
        out: dict[str, dict[str, Any]] = {}
        if self.filtered_log.exists():
            for line in self.filtered_log.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                out[rec["item_id"]] = rec
        return out

    # ---------------------------------------------------------------- failures
    def record_failure(
        self, item_id: str, stage: str, exc: BaseException, *, run_id: str = ""
    ) -> FailureRecord:
        rec = FailureRecord(
            item_id=item_id,
            stage=stage,
            error=getattr(exc, "error_name", type(exc).__name__),
            message=str(exc),
            time=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            run_id=run_id,
        )
        append_line(self.failure_log, json.dumps(rec.to_dict()))
        return rec

    def failures(self) -> list[FailureRecord]:
        """All recorded failures, oldest first (a torn last line from a crash is skipped)."""
        if not self.failure_log.exists():
            return []
        out = []
        for line in self.failure_log.read_text().splitlines():
            try:
                out.append(FailureRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                log.warning("skipping an unreadable line of %s", self.failure_log)
        return out

    # ---------------------------------------------------------------- lock
    def lock(self) -> CatalogLock:
        return CatalogLock(self.state_dir / "lock")


_MANAGED_RELS = {"root", "parent", "collection", "self"}


def _extend_extent(coll: dict[str, Any], item: Mapping[str, Any]) -> None:
    bbox = item.get("bbox")
    when = item.get("properties", {}).get("datetime")
    ext = coll.setdefault("extent", {})
    sp = ext.setdefault("spatial", {"bbox": [[-180, -90, 180, 90]]})
    tm = ext.setdefault("temporal", {"interval": [[None, None]]})
    first = coll.get("links") and sum(1 for ln in coll["links"] if ln.get("rel") == "item") == 1
    if bbox:
        cur = sp["bbox"][0]
        if first or cur == [-180, -90, 180, 90]:
            sp["bbox"][0] = list(bbox)
        else:
            sp["bbox"][0] = [
                min(cur[0], bbox[0]),
                min(cur[1], bbox[1]),
                max(cur[2], bbox[2]),
                max(cur[3], bbox[3]),
            ]
    if when:
        lo, hi = tm["interval"][0]
        tm["interval"][0] = [
            when if first or lo is None or when < lo else lo,
            when if first or hi is None or when > hi else hi,
        ]


def _merge_item_assets(coll: dict[str, Any], item: Mapping[str, Any]) -> None:
    """Keep ``item_assets`` (the assets every item has) for odc-stac and STAC browsers."""
    ia_uri = "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"
    exts = coll.setdefault("stac_extensions", [])
    if coll.get("stac_version", "1.1.0") < "1.1" and ia_uri not in exts:
        exts.append(ia_uri)
    ia = coll.setdefault("item_assets", {})
    for key, asset in item.get("assets", {}).items():
        if key not in ia:
            ia[key] = {
                k: v
                for k, v in asset.items()
                if k in ("type", "roles", "title", "eo:bands", "raster:bands", "bands")
            }
    for ext in item.get("stac_extensions", []):
        if ("/eo/" in ext or "/raster/" in ext) and ext not in coll.setdefault(
            "stac_extensions", []
        ):
            coll["stac_extensions"].append(ext)


class CatalogLock:
    """An exclusive lock on a catalog that survives a crashed holder.

    The lock file records the holder's host and pid; a lock whose holder on this host no longer
    runs is taken over. A live holder makes :meth:`acquire` raise
    :class:`~stac2cube.errors.CatalogLockedError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder):
                    raise CatalogLockedError(
                        f"another stac2cube run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}) is writing "
                        f"{self.path.parent.parent}; wait for it to finish. If it is gone, "
                        f"delete {self.path}."
                    ) from None
                log.warning("taking over the stale lock %s (holder %s)", self.path, holder)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return
        raise CatalogLockedError(f"could not acquire {self.path}")  # pragma: no cover

    def _holder(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return doc

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> CatalogLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(holder: Mapping[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell for another host: assume alive
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
