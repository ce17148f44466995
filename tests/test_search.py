"""Search against a real STAC API (rustac serve on 127.0.0.1) and local files."""

from __future__ import annotations

import datetime as dt
import gc
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pystac
import pytest
import shapely.geometry

from stac2cube.config import SourceConfig, TimeConfig
from stac2cube.errors import EmptySearchError, SearchError
from stac2cube.search import search
from stac2cube.testing.stac_api import RustacServer, free_port

PC_SITE2 = "stac/item-collections/planetary-computer/site2-2020_jun_jul-35MNM.geojson"
AOI = shapely.geometry.box(27.4, -7.8, 27.5, -7.7)
JUNE = TimeConfig(dt.date(2020, 6, 1), dt.date(2020, 6, 30))


def test_api_search_by_aoi_and_time(pc_api: RustacServer) -> None:
    res = search(SourceConfig(api=pc_api.url), AOI, JUNE)
    dates = [it.datetime.date().isoformat() for it in res.items]  # type: ignore[union-attr]
    assert dates == [
        "2020-06-01",
        "2020-06-06",
        "2020-06-11",
        "2020-06-16",
        "2020-06-21",
        "2020-06-26",
    ]
    assert all(isinstance(it, pystac.Item) for it in res.items)
    assert res.rejected == ()


def test_api_cloud_prefilter_falls_back_to_client_side(pc_api: RustacServer) -> None:
    # rustac's memory backend declares neither FILTER nor QUERY conformance
    res = search(SourceConfig(api=pc_api.url, max_cloud_cover=5), AOI, JUNE)
    assert res.method == "api+client-filter"
    assert [it.datetime.day for it in res.items] == [6, 11, 16, 21]  # type: ignore[union-attr]
    assert all(it.properties["eo:cloud_cover"] <= 5 for it in res.items)


def test_api_max_items(pc_api: RustacServer) -> None:
    res = search(SourceConfig(api=pc_api.url, max_items=2), AOI, JUNE)
    assert len(res.items) == 2


def test_api_empty_search_says_what_to_do(pc_api: RustacServer) -> None:
    far = shapely.geometry.box(10.0, 45.0, 10.1, 45.1)
    with pytest.raises(EmptySearchError, match="widen the time range or AOI"):
        search(SourceConfig(api=pc_api.url), far, JUNE)
    with pytest.raises(EmptySearchError, match="sentinel-2-l1c"):
        search(SourceConfig(api=pc_api.url), AOI, JUNE, collection="sentinel-2-l1c")


def test_unreachable_api_is_a_search_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SearchError, match="cannot open the STAC API"):
        search(SourceConfig(api=url, max_retries=0, timeout=2), AOI, JUNE)


class _Proxy(BaseHTTPRequestHandler):
    """Forwards to a real API; can declare extra conformance or fail /search with HTTP 500."""

    upstream = ""
    extra_conformance: list[str] = []
    fail_search = False
    seen: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self, body: bytes | None) -> None:
        if self.fail_search and self.path.startswith("/search"):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"code": "InternalServerError"}')
            return
        req = urllib.request.Request(
            self.upstream + self.path,
            data=body,
            method=self.command,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:
            data = r.read()
        doc = json.loads(data)
        if isinstance(doc, dict) and "conformsTo" in doc:
            doc["conformsTo"] += self.extra_conformance
        port = self.server.server_address[1]
        data = json.dumps(doc).replace(self.upstream, f"http://127.0.0.1:{port}").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        type(self).seen.append(json.loads(json.dumps(doc)))
        # what we check is the request stac2cube sends; the upstream gets it without the
        # cloud filter (the client-side check still applies it)
        for key in ("filter", "filter-lang", "filter_lang", "query"):
            doc.pop(key, None)
        self._forward(json.dumps(doc).encode())


@pytest.fixture
def proxy(pc_api: RustacServer) -> Iterator[type[_Proxy]]:
    handler = type(
        "P",
        (_Proxy,),
        {"upstream": pc_api.url, "seen": [], "extra_conformance": [], "fail_search": False},
    )
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    handler.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    srv.shutdown()


def test_cql2_filter_is_sent_when_the_api_declares_it(proxy: type[_Proxy]) -> None:
    proxy.extra_conformance = [
        "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
        "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    ]
    res = search(SourceConfig(api=proxy.url, max_cloud_cover=5), AOI, JUNE)  # type: ignore[attr-defined]
    assert res.method == "api+cql2-filter"
    body = proxy.seen[0]
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 5.0]}
    # the client-side check still holds whatever the server did with the filter
    assert all(it.properties["eo:cloud_cover"] <= 5 for it in res.items)


def test_query_is_sent_when_only_query_is_declared(proxy: type[_Proxy]) -> None:
    proxy.extra_conformance = ["https://api.stacspec.org/v1.0.0-rc.2/item-search#query"]
    res = search(SourceConfig(api=proxy.url, max_cloud_cover=5), AOI, JUNE)  # type: ignore[attr-defined]
    assert res.method == "api+query"
    assert proxy.seen[0]["query"] == {"eo:cloud_cover": {"lte": 5.0}}


def test_failing_api_is_a_search_error(proxy: type[_Proxy]) -> None:
    proxy.fail_search = True
    with pytest.raises(SearchError, match="failed during the search"):
        search(SourceConfig(api=proxy.url, max_retries=0), AOI, JUNE)  # type: ignore[attr-defined]


def test_local_item_collection_with_malformed_items(shared: Path, tmp_path: Path) -> None:
    doc = json.loads((shared / PC_SITE2).read_text())
    doc["features"] = doc["features"][:3] + [
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": "no-geometry",
            "properties": {},
            "assets": {},
        },
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": "no-date",
            "assets": {},
            "geometry": doc["features"][0]["geometry"],
            "properties": {},
        },
        "not even an object",
    ]
    p = tmp_path / "items.json"
    p.write_text(json.dumps(doc))
    time = TimeConfig(dt.date(2020, 7, 1), dt.date(2020, 7, 31))
    res = search(SourceConfig(path=str(p)), AOI, time)
    assert [it.id[11:19] for it in res.items] == ["20200721", "20200726", "20200731"]
    reasons = {r.item_id: r.message for r in res.rejected}
    assert "geometry" in reasons["no-geometry"]
    assert "datetime" in reasons["no-date"]
    assert len(res.rejected) == 3


def test_local_static_catalog(shared: Path, tmp_path: Path) -> None:
    doc = json.loads((shared / PC_SITE2).read_text())
    cat = pystac.Catalog("c", "test catalog")
    for feat in doc["features"][:4]:
        feat["links"] = []  # the real items link to the online PC collection
        cat.add_item(pystac.Item.from_dict(feat))
    cat.normalize_hrefs(str(tmp_path / "cat"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    time = TimeConfig(dt.date(2020, 7, 1), dt.date(2020, 7, 31))
    res = search(SourceConfig(path=str(tmp_path / "cat" / "catalog.json")), AOI, time)
    assert len(res.items) == 4 and res.method == "local"
    with pytest.raises(SearchError, match="does not exist"):
        search(SourceConfig(path=str(tmp_path / "nope.json")), AOI, time)


def test_unchanged_items_are_counted_not_parsed(pc_api: RustacServer, tmp_path: Path) -> None:
    """``unchanged`` is asked only about items within the search (AOI, time, cloud limit); the
    ones it accepts come back by id, and a search where all are accepted is not empty."""
    asked: list[str] = []

    def every_other(feat: object) -> bool:
        assert isinstance(feat, dict)
        asked.append(feat["id"])
        return len(asked) % 2 == 1

    full = search(SourceConfig(api=pc_api.url), AOI, JUNE)
    res = search(SourceConfig(api=pc_api.url), AOI, JUNE, unchanged=every_other)
    assert sorted(asked) == sorted(it.id for it in full.items)
    assert len(res.unchanged) == 3 and len(res.items) == 3
    assert set(res.unchanged) | {it.id for it in res.items} == set(asked)
    assert all(isinstance(it, pystac.Item) for it in res.items)

    asked.clear()
    res = search(
        SourceConfig(api=pc_api.url, max_cloud_cover=5), AOI, JUNE, unchanged=lambda f: True
    )
    assert res.items == () and len(res.unchanged) == 4  # the cloud limit applies first
    capped = search(SourceConfig(api=pc_api.url, max_items=2), AOI, JUNE, unchanged=lambda f: True)
    assert len(capped.items) == 2 and capped.unchanged == ()  # max_items counts parsed items


def test_unchanged_check_on_a_local_file(shared: Path, tmp_path: Path) -> None:
    """The AOI and time filters apply before the check; malformed items are parsed (and
    rejected) whatever it would say."""
    doc = json.loads((shared / PC_SITE2).read_text())
    doc["features"] = doc["features"][:5] + [
        {"type": "Feature", "stac_version": "1.0.0", "id": "bad", "properties": {}, "assets": {}}
    ]
    p = tmp_path / "items.json"
    p.write_text(json.dumps(doc))
    time = TimeConfig(dt.date(2020, 7, 1), dt.date(2020, 7, 31))
    asked: list[str] = []

    def yes(feat: object) -> bool:
        assert isinstance(feat, dict)
        asked.append(feat["id"])
        return True

    res = search(SourceConfig(path=str(p)), AOI, time, unchanged=yes)
    plain = search(SourceConfig(path=str(p)), AOI, time)
    assert sorted(res.unchanged) == sorted(asked) == sorted(it.id for it in plain.items)
    assert res.items == () and [r.item_id for r in res.rejected] == ["bad"]
    with pytest.raises(EmptySearchError):
        search(
            SourceConfig(path=str(p)), shapely.geometry.box(10, 45, 10.1, 45.1), time, unchanged=yes
        )


@pytest.mark.parametrize(
    "text",
    ["2020-07-21T08:27:51.024Z", "2020-07-21t08:27:51.024z", "2020-07-21T10:27:51.024+02:00"],
)
def test_the_unchanged_check_reads_every_rfc3339_spelling(
    shared: Path, tmp_path: Path, text: str
) -> None:
    """The raw check parses times with the standard library and falls back to pystac's parser
    (lower-case ``t``/``z`` are valid RFC 3339 that ``fromisoformat`` refuses): an item is
    within the time range whatever spelling its datetime has."""
    doc = json.loads((shared / PC_SITE2).read_text())
    feat = next(f for f in doc["features"] if f["id"][11:19] == "20200721")
    feat["properties"]["datetime"] = text
    p = tmp_path / "items.json"
    p.write_text(json.dumps({**doc, "features": [feat]}))
    day = TimeConfig(dt.date(2020, 7, 21), dt.date(2020, 7, 21))
    res = search(SourceConfig(path=str(p)), AOI, day, unchanged=lambda f: True)
    assert res.unchanged == (feat["id"],)


def test_a_local_search_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    """The collector is paused while a listing is parsed, and turned back on after, also when
    the file is broken; a caller that had it off keeps it off."""
    bad = tmp_path / "broken.json"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    assert gc.isenabled()
    with pytest.raises(SearchError, match="not a readable JSON"):
        search(SourceConfig(path=str(bad)), AOI, JUNE)
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(SearchError):
            search(SourceConfig(path=str(bad)), AOI, JUNE)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_single_item_file_and_a_file_that_is_no_stac(shared: Path, tmp_path: Path) -> None:
    doc = json.loads((shared / PC_SITE2).read_text())
    feat = next(f for f in doc["features"] if f["id"][11:19] == "20200721")
    one = tmp_path / "item.json"
    one.write_text(json.dumps(feat))
    time = TimeConfig(dt.date(2020, 7, 1), dt.date(2020, 7, 31))
    res = search(SourceConfig(path=str(one)), AOI, time)
    assert [it.id for it in res.items] == [feat["id"]]
    assert res.items[0].get_self_href().startswith("https://planetarycomputer")  # its own
    feat["links"] = [ln for ln in feat["links"] if ln["rel"] != "self"]
    one.write_text(json.dumps(feat))
    res = search(SourceConfig(path=str(one)), AOI, time)
    assert res.items[0].get_self_href() == str(one)  # relative asset hrefs resolve against it
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"type": "Topology", "objects": {}}))
    with pytest.raises(SearchError, match="neither a STAC Catalog/Collection"):
        search(SourceConfig(path=str(other)), AOI, time)
