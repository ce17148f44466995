"""The catalog as plain STAC documents with absolute hrefs, and as stac-geoparquet.

A stac2cube catalog links everything relatively, which is what lets the directory move. A STAC
API or a GeoParquet file holds items *outside* that directory, so their hrefs must be absolute:
:func:`read_catalog` walks ``catalog.json → collections → items`` and hands every catalog-relative
file to a function that says where it lives (a local path, a served URL, a bucket), and
:func:`export_geoparquet` writes the result with stac-geoparquet (the conversion, and
:func:`read_geoparquet` and :func:`drop_nulls`, are those of :mod:`stac2cube.catalog.index`).
:mod:`stac2cube.serve` uses the same walk for its STAC API.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .catalog.index import drop_nulls, items_to_arrow, read_geoparquet, write_geoparquet
from .errors import CatalogError

log = logging.getLogger(__name__)

HrefMapper = Callable[[str], str]
"""Maps a file's catalog-relative POSIX path (``"coll/item/B04.tif"``) to the href to write."""


@dataclass(frozen=True)
class CatalogContents:
    """The collections and items of a catalog, with hrefs made absolute."""

    root: Path
    """The catalog directory (resolved)."""
    collections: tuple[dict[str, Any], ...]
    """Collection documents without their relative links (``root``, ``parent``, ``item``...)."""
    items: tuple[dict[str, Any], ...]
    """Item documents, each with ``collection`` set; relative links dropped, asset hrefs mapped."""


def read_catalog(catalog: str | Path, href: HrefMapper | None = None) -> CatalogContents:
    """Every collection and item of the catalog at ``catalog`` (directory or ``catalog.json``).

    Relative asset hrefs are resolved against their document and passed, as a path relative to
    the catalog root, through ``href`` (default: the absolute local path). Relative links are
    dropped (they only make sense inside the directory); absolute ones are kept. Links and assets
    that resolve outside the catalog root are never followed: such an asset keeps an absolute
    local path, and a warning is logged.
    """
    root = Path(catalog)
    if root.name == "catalog.json":
        root = root.parent
    root = root.resolve()
    mapper = href or (lambda rel: str(root / rel))
    cat = _read_json(root / "catalog.json", what="catalog")
    collections: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for child in _relative_links(cat, "child"):
        coll_path = _inside(root, root, child)
        if coll_path is None:
            log.warning("skipping child %s of catalog.json: outside the catalog root", child)
            continue
        coll = _read_json(root / coll_path, what="collection")
        coll_id = str(coll.get("id", ""))
        for item_href in _relative_links(coll, "item"):
            item_path = _inside(root, (root / coll_path).parent, item_href)
            if item_path is None:
                log.warning("skipping item %s of %s: outside the catalog root", item_href, coll_id)
                continue
            item = _read_json(root / item_path, what="item")
            item["collection"] = coll_id
            items.append(_absolute(item, root, item_path, mapper))
        collections.append(_absolute(coll, root, coll_path, mapper))
    return CatalogContents(root=root, collections=tuple(collections), items=tuple(items))


def export_geoparquet(
    catalog: str | Path,
    out_path: str | Path,
    *,
    base_url: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write every item of ``catalog`` to one stac-geoparquet file at ``out_path``.

    Asset hrefs become absolute: ``base_url`` + the catalog-relative path when given (say the
    URL the catalog is served or synced to), the local path otherwise. The collections go into
    the file's ``stac-geoparquet`` metadata. An existing ``out_path`` is only replaced with
    ``overwrite=True``. Read it back with :func:`read_geoparquet`.
    """
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise CatalogError(f"{out} exists; choose another path or pass overwrite=True")
    base = None if base_url is None else base_url.rstrip("/")

    def at_base(rel: str) -> str:
        return f"{base}/{quote(rel)}"

    contents = read_catalog(catalog, None if base is None else at_base)
    if not contents.items:
        raise CatalogError(f"{contents.root} has no items to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        collections = {c["id"]: c for c in contents.collections}
        write_geoparquet(items_to_arrow(contents.items), out, collections)
    except (OSError, ValueError, TypeError) as exc:
        raise CatalogError(f"cannot write {out} as stac-geoparquet: {exc}") from exc
    log.info("exported %d item(s) of %s to %s", len(contents.items), contents.root, out)
    return out


# ---------------------------------------------------------------------------- helpers
def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        if what == "catalog":
            raise CatalogError(
                f"{path.parent} has no catalog.json: give the directory of a stac2cube catalog"
            ) from None
        raise CatalogError(
            f"the {what} {path} is linked but missing; run `stac2cube validate`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise CatalogError(f"{path} is not a STAC {what} (not a JSON object)")
    return doc


def _relative_links(doc: Mapping[str, Any], rel: str) -> list[str]:
    return [
        str(ln["href"])
        for ln in doc.get("links", [])
        if ln.get("rel") == rel and isinstance(ln.get("href"), str) and _is_relative(ln["href"])
    ]


def _is_relative(href: str) -> bool:
    parts = urlsplit(href)
    return not parts.scheme and not parts.netloc and not href.startswith("/")


def _inside(root: Path, base: Path, href: str) -> str | None:
    """``href`` (relative to the directory ``base``) as a POSIX path relative to ``root``, or None
    if it leaves the root (``..`` past it, or a symlink pointing out of it)."""
    target = (base / unquote(urlsplit(href).path)).resolve()
    try:
        rel = target.relative_to(root)
    except ValueError:
        return None
    return PurePosixPath(*rel.parts).as_posix()


_STRUCTURE = frozenset({"self", "root", "parent", "child", "item", "items", "collection"})
"""Links of the catalog's own tree: a document outside the directory drops them."""


def _absolute(doc: dict[str, Any], root: Path, doc_path: str, mapper: HrefMapper) -> dict[str, Any]:
    """``doc`` with its relative structural links (root, parent, item...) dropped, relative
    links to other files of the catalog (the CEOS-ARD self-assessment) and relative asset hrefs
    passed through ``mapper``."""
    out = dict(doc)
    base = (root / doc_path).parent
    links = []
    for ln in doc.get("links", []):
        href = str(ln.get("href", ""))
        if not _is_relative(href):
            links.append(ln)
        elif ln.get("rel") not in _STRUCTURE and (rel := _inside(root, base, href)) is not None:
            links.append({**ln, "href": mapper(rel)})
    out["links"] = links
    assets: dict[str, Any] = {}
    for key, asset in doc.get("assets", {}).items():
        asset = dict(asset)
        href = str(asset.get("href", ""))
        if href and _is_relative(href):
            rel = _inside(root, base, href)
            if rel is None:
                asset["href"] = posixpath.normpath(str(base / unquote(href)))
                log.warning("asset %s of %s lies outside the catalog root", key, doc.get("id"))
            else:
                asset["href"] = mapper(rel)
        assets[key] = asset
    if "assets" in doc:
        out["assets"] = assets
    return out


__all__ = [
    "CatalogContents",
    "HrefMapper",
    "drop_nulls",
    "export_geoparquet",
    "read_catalog",
    "read_geoparquet",
]
