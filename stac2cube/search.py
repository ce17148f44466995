"""Find Sentinel-2 scenes: any STAC API (through pystac-client) or a local catalog / item file."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pystac
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from .config import SourceConfig, TimeConfig
from .errors import EmptySearchError, ItemError, SearchError

log = logging.getLogger(__name__)

FILTER_CONFORMANCE = "filter"
QUERY_CONFORMANCE = "query"


@dataclass(frozen=True)
class RejectedItem:
    """A source item that could not be used, and why."""

    item_id: str
    stage: str
    error: str
    message: str


@dataclass(frozen=True)
class SearchResult:
    """The scenes found, sorted by time, and the source items that were malformed."""

    items: tuple[pystac.Item, ...]
    rejected: tuple[RejectedItem, ...]
    method: str
    """How the search ran (e.g. ``api+cql2-filter``, ``api+client-filter``, ``local``)."""
    unchanged: tuple[str, ...] = ()
    """Ids of matching items that ``search(unchanged=...)`` said need no work: not parsed."""


UnchangedCheck = Callable[[Mapping[str, Any]], bool]
"""Told a source item's raw JSON (within the AOI, time range and cloud limit), says whether it
needs no work; such items are only counted, never parsed into pystac Items."""


def search(
    source: SourceConfig,
    aoi: BaseGeometry,
    time: TimeConfig,
    *,
    collection: str | None = None,
    base_dir: Path | None = None,
    unchanged: UnchangedCheck | None = None,
) -> SearchResult:
    """Search ``source`` for items of ``collection`` (default: the L2A collection).

    ``unchanged`` is asked about every matching item before it is parsed (parsing and migrating
    an item to the current STAC version costs about 2 ms): the items it accepts are returned by
    id in ``SearchResult.unchanged`` only. An update run uses it to skip what the catalog already
    holds; with ``source.max_items`` it is not used (that limit counts parsed items).

    Raises :class:`EmptySearchError` when nothing matches and :class:`SearchError` when the
    source cannot be searched at all.
    """
    coll = collection or source.collection
    gate = None
    if unchanged is not None and source.max_items is None:
        gate = _RawGate(aoi, time, source.max_cloud_cover, unchanged)
    if source.api is not None:
        items, rejected, method = _search_api(source, aoi, time, coll, gate)
    else:
        assert source.path is not None
        path = Path(source.path)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        items, rejected = _search_local(path, aoi, time, coll, gate)
        method = "local"
    known = tuple(dict.fromkeys(gate.ids)) if gate is not None else ()
    items = [it for it in items if _cloud_ok(it, source.max_cloud_cover)]
    if source.sign == "planetary-computer":
        items = _sign_planetary_computer(items)
    unique: dict[str, pystac.Item] = {}
    for it in items:
        unique.setdefault(it.id, it)
    found = sorted(unique.values(), key=lambda it: (_item_time(it), it.id))
    if source.max_items is not None:
        found = found[: source.max_items]
    found = [it for it in found if it.id not in known]
    if not found and not known:
        where = source.api or source.path
        raise EmptySearchError(
            f"no {coll} scene in {where} intersects the AOI between {time.start} and {time.end}"
            + (
                f" with eo:cloud_cover <= {source.max_cloud_cover}"
                if source.max_cloud_cover
                else ""
            )
            + ": widen the time range or AOI, relax source.max_cloud_cover, or check "
            "source.collection"
            + (f" ({len(rejected)} malformed item(s) were skipped)" if rejected else "")
        )
    log.info(
        "found %d %s scene(s) via %s%s",
        len(found) + len(known),
        coll,
        method,
        f" ({len(known)} already up to date)" if known else "",
    )
    return SearchResult(tuple(found), tuple(rejected), method, known)


class _RawGate:
    """Applies an :data:`UnchangedCheck` to raw features that match the search on their own
    (AOI, time, cloud cover); anything it cannot read goes the normal way (parsed, and rejected
    with a message if malformed)."""

    def __init__(
        self,
        aoi: BaseGeometry,
        time: TimeConfig,
        max_cloud_cover: float | None,
        check: UnchangedCheck,
    ) -> None:
        self.aoi = aoi
        self.t0 = dt.datetime.combine(time.start, dt.time.min, tzinfo=dt.UTC)
        self.t1 = dt.datetime.combine(time.end, dt.time.max, tzinfo=dt.UTC)
        self.max_cc = max_cloud_cover
        self.check = check
        self.ids: list[str] = []

    def __call__(self, feat: Any) -> bool:
        """True when ``feat`` is unchanged (its id is recorded); then it is not parsed."""
        try:
            props = feat["properties"]
            when = _parse_time(props["datetime"])
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
            cc = props.get("eo:cloud_cover")
            if not (
                isinstance(feat["id"], str)
                and self.t0 <= when <= self.t1
                and (self.max_cc is None or cc is None or float(cc) <= self.max_cc)
                and shapely.geometry.shape(feat["geometry"]).intersects(self.aoi)
                and self.check(feat)
            ):
                return False
        except Exception:  # malformed in any way: leave it to the normal parsing
            return False
        self.ids.append(feat["id"])
        return True


def _parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time: the standard library's parser (Python >= 3.11 reads ``Z`` and
    fractions), ten times faster than dateutil's, with pystac's as the fallback."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return pystac.utils.str_to_datetime(text)


# ------------------------------------------------------------------------------------ API


def _search_api(
    source: SourceConfig,
    aoi: BaseGeometry,
    time: TimeConfig,
    collection: str,
    gate: _RawGate | None = None,
) -> tuple[list[pystac.Item], list[RejectedItem], str]:
    import pystac_client
    import requests
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    assert source.api is not None
    io = StacApiIO(
        headers=dict(source.headers), timeout=source.timeout, max_retries=source.max_retries
    )
    try:
        client = pystac_client.Client.open(source.api, stac_io=io)
    except (APIError, requests.RequestException, pystac.STACError, json.JSONDecodeError) as exc:
        raise SearchError(
            f"cannot open the STAC API at {source.api}: {exc}. Check the URL and your network "
            "(or set source.path to search a local catalog instead)."
        ) from exc
    kwargs: dict[str, Any] = {
        "collections": [collection],
        "intersects": shapely.geometry.mapping(aoi),
        "datetime": time.interval,
        "max_items": source.max_items,
    }
    method = "api"
    if source.max_cloud_cover is not None:
        conforms = client.conforms_to
        if _safe_conforms(conforms, "FILTER"):
            kwargs["filter"] = {
                "op": "<=",
                "args": [{"property": "eo:cloud_cover"}, source.max_cloud_cover],
            }
            kwargs["filter_lang"] = "cql2-json"
            method = "api+cql2-filter"
        elif _safe_conforms(conforms, "QUERY"):
            kwargs["query"] = {"eo:cloud_cover": {"lte": source.max_cloud_cover}}
            method = "api+query"
        else:
            method = "api+client-filter"
    if not _safe_conforms(client.conforms_to, "ITEM_SEARCH"):
        raise SearchError(
            f"{source.api} does not declare STAC item-search conformance; stac2cube needs "
            "/search (or point source.path at a static catalog)"
        )
    try:
        search = client.search(**kwargs)
        items: list[pystac.Item] = []
        rejected: list[RejectedItem] = []
        for page in search.pages_as_dicts():
            for feat in page.get("features", []):
                if gate is not None and gate(feat):
                    continue
                it, rej = _parse_item(feat, api_root=source.api)
                if it is not None:
                    items.append(it)
                elif rej is not None:
                    rejected.append(rej)
            if source.max_items is not None and len(items) >= source.max_items:
                break
    except (APIError, requests.RequestException, json.JSONDecodeError) as exc:
        raise SearchError(
            f"the STAC API at {source.api} failed during the search: {exc}. Re-run later; "
            "scenes already in the catalog are kept."
        ) from exc
    return items, rejected, method


def _safe_conforms(conforms: Any, name: str) -> bool:
    import warnings

    from pystac_client import ConformanceClasses

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(conforms(getattr(ConformanceClasses, name)))


# ---------------------------------------------------------------------------------- local


def _search_local(
    path: Path,
    aoi: BaseGeometry,
    time: TimeConfig,
    collection: str,
    gate: _RawGate | None = None,
) -> tuple[list[pystac.Item], list[RejectedItem]]:
    if not path.exists():
        raise SearchError(f"source.path {path} does not exist")
    rejected: list[RejectedItem] = []
    items: list[pystac.Item] = []
    with _gc_paused():  # an item listing is parsed and walked as plain JSON
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SearchError(f"source.path {path} is not a readable JSON file: {exc}") from exc
        kind = doc.get("type") if isinstance(doc, dict) else None
        feats = []
        if kind == "FeatureCollection":
            feats = doc.get("features", [])
        elif kind == "Feature":
            feats = [doc]
        del doc
        for feat in feats:
            if (
                gate is not None
                and isinstance(feat, Mapping)
                and feat.get("collection") in (None, collection)
                and gate(feat)
            ):
                continue
            parsed, rej = _parse_item(feat, self_href=str(path) if kind == "Feature" else None)
            if rej is not None:
                rejected.append(rej)
            elif parsed is not None and parsed.collection_id in (None, collection):
                items.append(parsed)
        del feats  # freed by reference counting, before the collector sees them
    if kind in ("Catalog", "Collection"):  # pystac objects link each other: collector on
        cat = pystac.read_file(str(path))
        assert isinstance(cat, pystac.Catalog)
        items = [
            it
            for it in cat.get_items(recursive=True)
            if it.collection_id in (None, collection) or kind == "Collection"
        ]
    elif kind not in ("FeatureCollection", "Feature"):
        raise SearchError(
            f"source.path {path} is neither a STAC Catalog/Collection nor an item collection "
            f"(type {kind!r})"
        )
    t0 = dt.datetime.combine(time.start, dt.time.min, tzinfo=dt.UTC)
    t1 = dt.datetime.combine(time.end, dt.time.max, tzinfo=dt.UTC)
    out = [
        it
        for it in items
        if it.geometry is not None
        and shapely.geometry.shape(it.geometry).intersects(aoi)
        and t0 <= _item_time(it) <= t1
    ]
    return out, rejected


# -------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a local item listing is parsed and walked.

    Parsed JSON has no reference cycles, so the pause loses nothing; but a listing of a few
    hundred items is some 10^5 new containers, and in a process that has imported the
    scientific stack they would set off a collection of the whole heap (about 40 ms: a third of
    what a 200-item update spent beyond processing its one new scene). Freed when the search
    returns, by reference counting, they never reach the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sign_planetary_computer(items: list[pystac.Item]) -> list[pystac.Item]:
    try:
        import planetary_computer  # type: ignore[import-not-found]
    except ImportError:
        raise SearchError(
            "source.sign is `planetary-computer` but the package is not installed: "
            "`pip install planetary-computer`"
        ) from None
    try:
        return [planetary_computer.sign(it) for it in items]
    except Exception as exc:  # network / token service errors
        raise SearchError(f"signing Planetary Computer hrefs failed: {exc}") from exc


def _parse_item(
    feat: Mapping[str, Any], self_href: str | None = None, api_root: str | None = None
) -> tuple[pystac.Item | None, RejectedItem | None]:
    fid = str(feat.get("id", "<no id>")) if isinstance(feat, Mapping) else "<not an object>"
    try:
        it = item_from_dict(feat)
    except ItemError as exc:
        log.warning("skipping malformed item %s: %s", fid, exc)
        return None, RejectedItem(fid, "search", type(exc).__name__, str(exc))
    if api_root is not None:
        # some servers (rustac) keep an item's stored self link and append their own: the
        # provenance must name the URL the item was fetched from
        selfs = [ln.get("href", "") for ln in feat.get("links", []) if ln.get("rel") == "self"]
        served = [h for h in selfs if h.startswith(api_root.rstrip("/"))]
        if served and served[0] != it.get_self_href():
            it.set_self_href(served[0])
    if self_href is not None and it.get_self_href() is None:
        it.set_self_href(self_href)
    return it, None


def item_from_dict(feat: Mapping[str, Any]) -> pystac.Item:
    """Parse a STAC item, turning every way it can be malformed into :class:`ItemError`."""
    if not isinstance(feat, Mapping) or feat.get("type") != "Feature":
        raise ItemError("not a STAC item (GeoJSON Feature)")
    fid = feat.get("id", "<no id>")
    for key in ("id", "stac_version", "geometry", "properties", "assets"):
        if feat.get(key) is None:
            raise ItemError(f"item {fid}: required field {key!r} is missing")
    props = feat["properties"]
    if not isinstance(props, Mapping) or not (props.get("datetime") or props.get("start_datetime")):
        raise ItemError(f"item {fid}: has neither properties.datetime nor start_datetime")
    try:
        # no deep copy of the (freshly parsed, not reused) feature, and no migration pass for
        # items already at pystac's STAC version: parsing was most of a large search's time
        it = pystac.Item.from_dict(
            dict(feat),
            preserve_dict=False,
            migrate=feat.get("stac_version") != pystac.get_stac_version(),
        )
        shapely.geometry.shape(it.geometry)
    except ItemError:
        raise
    except Exception as exc:  # pystac raises many types on malformed input
        raise ItemError(f"item {fid}: {type(exc).__name__}: {exc}") from exc
    return it


def _item_time(it: pystac.Item) -> dt.datetime:
    t = it.datetime or it.common_metadata.start_datetime
    assert t is not None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _cloud_ok(it: pystac.Item, max_cc: float | None) -> bool:
    if max_cc is None:
        return True
    cc = it.properties.get("eo:cloud_cover")
    return cc is None or float(cc) <= max_cc
