"""The catalog served to real STAC tools: pystac-client, odc-stac, rasterio, stac-geoparquet."""

from __future__ import annotations

import http.client
import inspect
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from pystac_client import Client
from pystac_client.exceptions import APIError
from rasterio.windows import Window

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import CatalogStore
from stac2cube.errors import CatalogError, ConfigError
from stac2cube.export import drop_nulls, export_geoparquet, read_catalog, read_geoparquet
from stac2cube.provenance import STAC2CUBE_SCHEMA
from stac2cube.sample import Sample
from stac2cube.serve import (
    SCHEMA_PATH,
    CatalogServer,
    ServeError,
    StacApiServerError,
    process,
    serve,
)
from stac2cube.testing.configs import write_config
from stac2cube.validation import provenance_schema_file

BANDS = ["B04", "B08", "SCL"]
COLLECTION = "sentinel-2-l2a-ard"


@pytest.fixture(scope="module")
def catalog(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    cfg = write_config(
        tmp,
        sample,
        {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)},
        bands=BANDS,
        run={"executor": "serial"},
    )
    assert run(load_config(cfg)).written == 4
    return tmp / "catalog"


@pytest.fixture(scope="module")
def server(catalog: Path) -> Iterator[CatalogServer]:
    with serve(catalog, port=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def items(catalog: Path) -> list[dict[str, Any]]:
    return list(CatalogStore.open(catalog).iter_items())


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def raw_request(
    srv: CatalogServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A request sent as written (urllib would normalise ``..`` away)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------ the STAC API
def test_landing_page_links_point_at_the_public_url(server: CatalogServer) -> None:
    status, _, body = get(server.url + "/")
    assert status == 200
    links = {ln["rel"]: ln["href"] for ln in json.loads(body)["links"]}
    assert links["self"].rstrip("/") == server.url and links["root"].rstrip("/") == server.url
    assert links["search"] == f"{server.url}/search"
    # a client that reached the server under another name gets links under that name
    _, _, body = raw_request(server, "GET", "/", {"Host": f"localhost:{server.port}"})
    hrefs = [ln["href"] for ln in json.loads(body)["links"]]
    assert all(h.startswith(f"http://localhost:{server.port}/") for h in hrefs)


def test_a_fixed_public_url_goes_into_links_and_asset_hrefs(catalog: Path) -> None:
    """Behind a reverse proxy: links and hrefs name the proxy, whatever Host the client sent."""
    with serve(catalog, port=0, public_url="https://data.example/stac/") as srv:
        _, _, body = get(f"http://127.0.0.1:{srv.port}/search?limit=1")
        page = json.loads(body)
    hrefs = [ln["href"] for ln in page["links"]]
    hrefs += [a["href"] for a in page["features"][0]["assets"].values()]
    assert all(h.startswith("https://data.example/stac/") for h in hrefs), hrefs
    with pytest.raises(ConfigError, match="public_url"):
        serve(catalog, public_url="data.example")


def test_pystac_client_searches_by_bbox_datetime_ids_and_intersects(
    server: CatalogServer, items: list[dict[str, Any]]
) -> None:
    client = Client.open(server.url)
    assert [c.id for c in client.get_collections()] == [COLLECTION]
    by_time = sorted(items, key=lambda i: i["properties"]["datetime"])
    w, s, e, n = by_time[0]["bbox"]

    found = client.search(collections=[COLLECTION], bbox=[w, s, e, n]).item_collection()
    assert sorted(i.id for i in found) == sorted(i["id"] for i in items)
    assert not list(client.search(bbox=[w + 1, s + 1, e + 1, n + 1]).items())

    t1, t2 = by_time[1]["properties"]["datetime"], by_time[2]["properties"]["datetime"]
    found = client.search(datetime=f"{t1}/{t2}").item_collection()
    assert sorted(i.id for i in found) == sorted(i["id"] for i in by_time[1:3])
    # GET as well as POST, and paging through `next` links that point at the public URL
    found = client.search(datetime=[t1, None], method="GET", limit=1).item_collection()
    assert sorted(i.id for i in found) == sorted(i["id"] for i in by_time[1:])

    point = {"type": "Point", "coordinates": [(w + e) / 2, (s + n) / 2]}
    assert len(client.search(intersects=point).item_collection()) == 4
    assert [i.id for i in client.search(ids=[by_time[0]["id"]]).items()] == [by_time[0]["id"]]

    item = next(iter(client.search(ids=[by_time[0]["id"]]).items()))
    assert (
        item.properties["stac2cube:config_hash"]
        == by_time[0]["properties"]["stac2cube:config_hash"]
    )
    assert item.assets["B04"].href == server.file_url(f"{COLLECTION}/{item.id}/B04.tif")


@pytest.mark.parametrize(
    "method, params",
    [
        ("GET", {"filter": "eo:cloud_cover < 10", "filter-lang": "cql2-text"}),
        ("POST", {"filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}}),
        ("POST", {"query": {"eo:cloud_cover": {"lt": 10}}}),
        ("GET", {"sortby": "-properties.datetime"}),
    ],
)
def test_property_filters_are_refused_not_answered_with_nothing(
    server: CatalogServer, method: str, params: dict[str, Any]
) -> None:
    """rustac's in-memory backend has no CQL2/query/sortby and would return no item at all."""
    if method == "GET":
        url = f"{server.url}/search?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url)
    else:
        req = urllib.request.Request(
            f"{server.url}/search",
            data=json.dumps(params).encode(),
            headers={"Content-Type": "application/json"},
        )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    assert "does not support" in json.loads(err.value.read())["description"]


def test_pystac_client_query_gets_a_clear_error(server: CatalogServer) -> None:
    client = Client.open(server.url)
    client.add_conforms_to("QUERY")  # pystac-client checks conformance first: skip that
    with pytest.raises(APIError, match="does not support query"):
        client.search(query={"eo:cloud_cover": {"lt": 10}}).item_collection()


def test_the_api_is_read_only(server: CatalogServer) -> None:
    status, _, _ = raw_request(server, "POST", f"/collections/{COLLECTION}/items")
    assert status == 405
    status, _, _ = raw_request(server, "DELETE", f"/collections/{COLLECTION}")
    assert status == 501


def test_the_provenance_schema_is_served_at_the_path_of_its_id(
    server: CatalogServer, items: list[dict[str, Any]]
) -> None:
    assert STAC2CUBE_SCHEMA in items[0]["stac_extensions"]
    url = server.url + urllib.parse.urlsplit(STAC2CUBE_SCHEMA).path
    assert url == server.url + SCHEMA_PATH
    status, headers, body = get(url)
    assert status == 200 and body == provenance_schema_file().read_bytes()
    assert json.loads(body)["$id"] == STAC2CUBE_SCHEMA
    assert headers["Content-Type"] == "application/schema+json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = raw_request(server, "HEAD", SCHEMA_PATH)
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


# ------------------------------------------------------------------------------ pixels over HTTP
def test_odc_stac_loads_the_same_cube_over_http(server: CatalogServer, catalog: Path) -> None:
    import odc.stac

    before = server.file_responses().get(206, 0)
    found = Client.open(server.url).search(collections=[COLLECTION]).item_collection()
    assert all(i.assets["B04"].href.startswith(server.url) for i in found)
    local = open_cube(catalog, BANDS)
    remote = odc.stac.load(
        found,
        bands=BANDS,
        groupby="id",
        crs=str(local.odc.crs),
        resolution=abs(float(local.x[1] - local.x[0])),
    ).sortby("time")
    np.testing.assert_array_equal(remote.time.values, local.time.values)
    for band in BANDS:
        np.testing.assert_array_equal(remote[band].values, local[band].values)
    assert server.file_responses().get(206, 0) > before  # read by HTTP range requests


def test_rasterio_reads_a_served_cog_by_range_requests(
    server: CatalogServer, catalog: Path, items: list[dict[str, Any]]
) -> None:
    item_id = items[0]["id"]
    rel = f"{COLLECTION}/{item_id}/CLOUD_PROB.tif"  # not read before: not in GDAL's cache
    before = server.file_responses().get(206, 0)
    with (
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"),
        rasterio.open(server.file_url(rel)) as remote,
        rasterio.open(catalog / rel) as local,
    ):
        window = Window(10, 20, 64, 48)
        np.testing.assert_array_equal(remote.read(1, window=window), local.read(1, window=window))
        assert remote.profile == local.profile
    assert server.file_responses().get(206, 0) > before


def test_range_requests_answer_206_with_content_range(
    server: CatalogServer, catalog: Path, items: list[dict[str, Any]]
) -> None:
    rel = f"{COLLECTION}/{items[0]['id']}/B04.tif"
    data = (catalog / rel).read_bytes()
    url = server.file_url(rel)

    status, headers, body = get(url, Range="bytes=100-199")
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert headers["Accept-Ranges"] == "bytes" and headers["Content-Length"] == "100"
    assert headers["Content-Type"].startswith("image/tiff; application=geotiff")

    status, headers, body = get(url, Range="bytes=-10")
    assert status == 206 and body == data[-10:]
    status, headers, body = get(url, Range=f"bytes={len(data) - 5}-")
    assert status == 206 and body == data[-5:]
    status, headers, _ = get(url, Range=f"bytes={len(data)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, _, body = get(url)
    assert status == 200 and body == data

    status, headers, body = raw_request(server, "HEAD", url.removeprefix(server.url))
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))
    assert headers["Accept-Ranges"] == "bytes"
    # the file changed since the client's copy (If-Range): the whole file, not a range
    status, _, body = get(url, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert status == 200 and body == data


# ------------------------------------------------------------------------------ safety
@pytest.mark.parametrize(
    "path",
    [
        "/catalog/../../../../etc/passwd",
        "/catalog/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/catalog/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/catalog/..%2f..%2f..%2fetc/passwd",
        "/catalog//etc/passwd",
        "/catalog/%2Fetc%2Fpasswd",
        "/catalog/..\\..\\etc\\passwd",
        "/catalog/catalog.json%00.tif",
        "/catalog/_stac2cube/failures.jsonl",
        "/catalog/escape-link.txt",
        "/catalog/escape-dir/passwd",
        "//etc/passwd",
        "/catalog/" + COLLECTION,
        "/catalog/no-such-file.tif",
    ],
)
def test_nothing_outside_the_catalog_is_served(
    server: CatalogServer, catalog: Path, path: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "passwd").write_text("SECRET")
    for name, target in (("escape-link.txt", outside / "passwd"), ("escape-dir", outside)):
        link = catalog / name
        if not link.is_symlink():
            link.symlink_to(target)
    (catalog / "_stac2cube").mkdir(exist_ok=True)
    (catalog / "_stac2cube" / "failures.jsonl").touch()
    status, _, body = raw_request(server, "GET", path)
    assert status in (400, 403, 404), (path, status)
    assert b"root:" not in body and b"SECRET" not in body


def test_default_bind_is_loopback(server: CatalogServer) -> None:
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert server.host == "127.0.0.1"
    tcp = Path("/proc/net/tcp")
    if not tcp.exists():
        pytest.skip("no /proc/net/tcp to inspect listening sockets")
    listening = [
        line.split()[1]
        for line in tcp.read_text().splitlines()[1:]
        if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == server.port
    ]
    assert listening == [f"0100007F:{server.port:04X}"]  # 127.0.0.1, little-endian


def test_clear_errors(catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CatalogError, match="not a stac2cube catalog"):
        serve(tmp_path / "nowhere")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ServeError, match="already in use"):
            serve(catalog, port=taken.getsockname()[1]).start()

    def no_rustac() -> str:
        raise StacApiServerError("the `rustac` command is not installed")

    monkeypatch.setattr(process, "rustac_executable", no_rustac)
    with pytest.raises(ServeError, match="rustac"):
        serve(catalog, port=0).start()


# ------------------------------------------------------------------------------ GeoParquet
def test_geoparquet_export_round_trips(catalog: Path, tmp_path: Path) -> None:
    out = export_geoparquet(catalog, tmp_path / "items.parquet")
    back = {i["id"]: i for i in read_geoparquet(out)}
    original = {i["id"]: i for i in read_catalog(catalog).items}
    assert sorted(back) == sorted(original) and len(back) == 4
    for item_id, item in original.items():
        got = back[item_id]
        assert got["collection"] == COLLECTION
        np.testing.assert_allclose(
            np.asarray(got["geometry"]["coordinates"]),
            np.asarray(item["geometry"]["coordinates"]),
        )
        assert got["geometry"]["type"] == item["geometry"]["type"]
        np.testing.assert_allclose(got["bbox"], item["bbox"])
        assert got["properties"] == drop_nulls(item["properties"])
        assert got["assets"] == drop_nulls(item["assets"])
        href = Path(got["assets"]["B04"]["href"])
        assert (
            href.is_absolute()
            and href.read_bytes() == (catalog / COLLECTION / item_id / "B04.tif").read_bytes()
        )
    meta = json.loads(pq.read_metadata(out).metadata[b"stac-geoparquet"])
    assert COLLECTION in meta["collections"]

    with pytest.raises(CatalogError, match="exists"):
        export_geoparquet(catalog, out)
    export_geoparquet(catalog, out, base_url="https://data.example/cat/", overwrite=True)
    hrefs = [a["href"] for i in read_geoparquet(out) for a in i["assets"].values()]
    assert all(h.startswith(f"https://data.example/cat/{COLLECTION}/") for h in hrefs)


@pytest.mark.filterwarnings("ignore:Server does not conform to QUERY")
def test_static_backend_filters_with_cql2(catalog: Path, items: list[dict[str, Any]]) -> None:
    """backend="static" (stac-fastapi-static) answers CQL2 filters on our provenance fields and
    on any item property, through pystac-client, with the same public hrefs."""
    pytest.importorskip("stac_fastapi.static")
    by_sun = sorted(items, key=lambda i: i["properties"]["view:sun_elevation"])
    cut = (
        by_sun[1]["properties"]["view:sun_elevation"]
        + by_sun[2]["properties"]["view:sun_elevation"]
    ) / 2
    config_hash = items[0]["properties"]["stac2cube:config_hash"]
    with serve(catalog, port=0, backend="static") as srv:
        client = Client.open(srv.url)
        assert [c.id for c in client.get_collections()] == [COLLECTION]
        everything = client.search(collections=[COLLECTION]).item_collection()
        assert sorted(i.id for i in everything) == sorted(i["id"] for i in items)
        high = client.search(filter=f'"view:sun_elevation" > {cut}').item_collection()
        assert sorted(i.id for i in high) == sorted(i["id"] for i in by_sun[2:])
        same = client.search(
            filter={"op": "=", "args": [{"property": "stac2cube:config_hash"}, config_hash]},
            filter_lang="cql2-json",
        ).item_collection()
        assert len(same) == len(items)
        other = client.search(filter="\"stac2cube:config_hash\" = 'sha256:0'").item_collection()
        assert len(other) == 0
        covers = sorted(i["properties"]["eo:cloud_cover"] for i in items)
        limit = (covers[1] + covers[2]) / 2
        clear = client.search(filter=f"eo:cloud_cover < {limit}").item_collection()
        assert sorted(i.properties["eo:cloud_cover"] for i in clear) == covers[:2]
        href = next(iter(high)).assets["B04"].href
        assert href.startswith(srv.url + "/catalog/")
        with rasterio.open(href) as src:
            assert src.read(1).shape == (src.height, src.width)
        with pytest.raises(APIError, match="does not support query"):
            client.search(query={"eo:cloud_cover": {"lt": 10}}).item_collection()
