"""The catalog store: creates a stac2cube catalog, commits and removes items, links reference
assets, and recovers what a crashed run left.

Every write is atomic and ordered so that the catalog never links a file that is not complete:
an item is built in a staging directory, swapped into place, and only then linked by the
collection (see ``docs/catalog.md``). Only one process writes, under :meth:`CatalogStore.lock`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import CatalogError
from ..io.atomic import TMP_MARK, exchange_paths, write_json_atomic
from .layout import (
    CATALOG_ID,
    CLEAN_MARK,
    FAILURE_LOG,
    FILTERED_LOG,
    INDEX_FILE,
    OLD_PREFIX,
    PREVIOUS_INDEX_FILE,
    REFERENCE_ASSET,
    REFERENCE_DIRS,
    REMOVING_MARK,
    STAGING_PREFIX,
    STATE_DIR,
    item_id_of,
    load_template,
    reference_base_key,
)
from .lock import CatalogLock
from .logs import FailureRecord, append_failure, append_filtered, read_failures, read_filtered


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
        coll = self.read_collection()
        assets = coll.get("assets", {})
        # files beside collection.json that it links (the CEOS-ARD self-assessment)
        beside = {
            str(ln["href"])[2:]
            for ln in coll.get("links", [])
            if str(ln.get("href", "")).startswith("./") and "/" not in str(ln["href"])[2:]
        }
        ref_files: dict[str, set[str]] = {}
        for key, asset in assets.items():
            ref = reference_base_key(key)
            if ref is not None:
                ref_files.setdefault(REFERENCE_DIRS[ref[0]], set()).add(Path(asset["href"]).name)
        out: list[Path] = []
        for p in sorted(coll_dir.iterdir()):
            if p.name in ("collection.json", INDEX_FILE) or (p.name in beside and p.is_file()):
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
        append_filtered(self.filtered_log, source, config_hash, reason, results)

    def filtered(self) -> dict[str, dict[str, Any]]:
        """The latest filter record per item id."""
        return read_filtered(self.filtered_log)

    # ---------------------------------------------------------------- failures
    def record_failure(
        self, item_id: str, stage: str, exc: BaseException, *, run_id: str = ""
    ) -> FailureRecord:
        return append_failure(self.failure_log, item_id, stage, exc, run_id=run_id)

    def failures(self) -> list[FailureRecord]:
        """All recorded failures, oldest first (a torn last line from a crash is skipped)."""
        return read_failures(self.failure_log)

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
