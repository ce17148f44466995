"""The versioned virtual cube served as a Zarr v3 store: remote xarray clients over loopback read
the values the local Icechunk session gives, at HEAD and at any earlier run."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from obstore.store import HTTPStore
from zarr.storage import ObjectStore

from stac2cube import load_config, run
from stac2cube.catalog import CatalogStore
from stac2cube.catalog.virtual import TAG_PREFIX
from stac2cube.cube.virtual import open_virtual_cube
from stac2cube.pipeline.summary import RunSummary
from stac2cube.sample import Sample
from stac2cube.serve import CatalogServer, serve
from stac2cube.serve.cube import CUBE_PREFIX, consolidated_groups, split_cube_path
from stac2cube.serve.http import SNAPSHOT_HEADER
from stac2cube.testing.configs import write_config

BANDS = ["B04", "B08", "SCL"]


def _run(tmp: Path, sample: Sample, **source: Any) -> RunSummary:
    cfg = write_config(
        tmp,
        sample,
        {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path), **source},
        bands=BANDS,
        run={"executor": "serial"},
    )
    summary = run(load_config(cfg))
    assert summary.snapshot_id
    return summary


@pytest.fixture(scope="module")
def runs(
    sample: Sample, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RunSummary, RunSummary]:
    """A catalog made by two runs: the first two scenes, then all four."""
    tmp = tmp_path_factory.mktemp("serve-cube")
    first = _run(tmp, sample, max_items=2)
    second = _run(tmp, sample)
    assert (first.written, second.written) == (2, 2)
    return tmp / "catalog", first, second


@pytest.fixture(scope="module")
def catalog(runs: tuple[Path, RunSummary, RunSummary]) -> Path:
    return runs[0]


@pytest.fixture(scope="module")
def server(catalog: Path) -> Iterator[CatalogServer]:
    with serve(catalog, port=0) as srv:
        yield srv


def remote(srv: CatalogServer, version: str, **kwargs: Any) -> xr.Dataset:
    """The cube as a remote client opens it: only HTTP, no Icechunk, no access to the files."""
    import virtual_tiff  # noqa: F401  (the TIFF codecs the arrays name)

    http_store = HTTPStore.from_url(srv.cube_url(version), client_options={"allow_http": True})
    store = ObjectStore(http_store, read_only=True)
    return xr.open_zarr(store, consolidated=True, mask_and_scale=False, **kwargs)


def request(
    srv: CatalogServer, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def assert_same_cube(served: xr.Dataset, local: xr.Dataset) -> None:
    """Values, coordinates and item ids equal, the served time axis (commit order) sorted."""
    served = served.sortby("time")
    assert set(local.data_vars) <= set(served.data_vars)
    for name in local.data_vars:
        assert served[name].dtype == local[name].dtype, name
        np.testing.assert_array_equal(served[name].values, local[name].values, err_msg=name)
    np.testing.assert_array_equal(served.time.values, local.time.values)
    np.testing.assert_array_equal(served.y.values, local.y.values)
    np.testing.assert_array_equal(served.x.values, local.x.values)
    assert [str(i) for i in served.item_id.values] == [str(i) for i in local.item_id.values]


# ------------------------------------------------------------------------------ remote clients
def test_a_remote_client_opens_head(server: CatalogServer, catalog: Path) -> None:
    served = remote(server, "HEAD")
    local = open_virtual_cube(catalog)
    assert served.sizes["time"] == 4 and set(BANDS) <= set(served.data_vars)
    assert served.B04.dims == ("time", "y", "x")
    assert_same_cube(served.load(), local)
    # the pixels are real: not all fill values
    assert (served.B04.values != served.B04.encoding.get("_FillValue", -32768)).any()


def test_a_remote_client_opens_an_earlier_run(
    server: CatalogServer, runs: tuple[Path, RunSummary, RunSummary]
) -> None:
    catalog, first, second = runs
    served = remote(server, first.run_id)
    local = open_virtual_cube(catalog, version=first.run_id)
    assert served.sizes["time"] == 2
    assert_same_cube(served.load(), local)
    assert served.attrs["stac2cube:run_id"] == first.run_id
    assert remote(server, "HEAD").attrs["stac2cube:run_id"] == second.run_id


def test_a_version_is_a_run_id_a_tag_or_a_snapshot_id(
    server: CatalogServer, runs: tuple[Path, RunSummary, RunSummary]
) -> None:
    _, first, second = runs
    for version, snapshot in [
        ("HEAD", second.snapshot_id),
        (first.run_id, first.snapshot_id),
        (TAG_PREFIX + first.run_id, first.snapshot_id),
        (first.snapshot_id, first.snapshot_id),
        (second.run_id, second.snapshot_id),
    ]:
        status, headers, _ = request(server, f"{CUBE_PREFIX}{version}/zarr.json", "HEAD")
        assert (status, headers[SNAPSHOT_HEADER]) == (200, snapshot), version


def test_the_records_group_opens_remotely(server: CatalogServer, catalog: Path) -> None:
    records = remote(server, "HEAD", group="_items").load()
    assert records.sizes["time"] == 4
    assert set(records["encoding"].sel(asset="B04", field="scale").values) == {1e-4}
    assert len({str(v) for v in records["version"].values}) >= 1


# ------------------------------------------------------------------------------ the protocol
def test_group_metadata_is_consolidated(server: CatalogServer) -> None:
    status, headers, body = request(server, f"{CUBE_PREFIX}HEAD/zarr.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["node_type"] == "group"
    members = doc["consolidated_metadata"]["metadata"]
    assert {*BANDS, "time", "item_id", "x", "y", "_items", "_items/version"} <= set(members)
    assert members["B04"]["node_type"] == "array" and members["B04"]["shape"][0] == 4
    assert members["_items"]["consolidated_metadata"]["metadata"] == {}
    # an array's own metadata is the store's, unchanged
    status, _, body = request(server, f"{CUBE_PREFIX}HEAD/B04/zarr.json")
    assert status == 200 and json.loads(body) == members["B04"]
    # the records group carries its own members
    _, _, body = request(server, f"{CUBE_PREFIX}HEAD/_items/zarr.json")
    assert "version" in json.loads(body)["consolidated_metadata"]["metadata"]


def test_unknown_versions_are_404_with_a_message(server: CatalogServer) -> None:
    for path in ("nope/zarr.json", "nope/B04/c/0/0/0"):
        status, headers, body = request(server, CUBE_PREFIX + path)
        assert status == 404 and headers["Content-Type"] == "application/json"
        doc = json.loads(body)
        assert doc["code"] == "UnknownVersion"
        assert "'nope' is no version" in doc["description"] and "run id" in doc["description"]
    status, _, body = request(server, f"{CUBE_PREFIX}nope/zarr.json", "HEAD")
    assert status == 404 and body == b""


def test_a_catalog_without_a_cube_answers_404(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    CatalogStore(catalog, "s2-ard", title="S2 ARD").create()  # a collection, no run yet
    with serve(catalog, port=0) as srv:
        status, _, body = request(srv, f"{CUBE_PREFIX}HEAD/zarr.json")
        assert request(srv, "/catalog/catalog.json")[0] == 200  # the rest is served
    assert status == 404 and "no virtual cube yet" in json.loads(body)["description"]


def test_missing_keys_are_404(server: CatalogServer) -> None:
    for key in ("B99/zarr.json", "B04/c/99/0/0", ".zmetadata", "B04/c/0/0"):
        status, _, body = request(server, f"{CUBE_PREFIX}HEAD/{key}")
        assert status == 404, key
        assert json.loads(body)["code"] == "NotFound"
    for path in ("HEAD", "HEAD/", "HEAD/B04/../zarr.json", "HEAD/B04/./zarr.json"):
        status, _, _ = request(server, CUBE_PREFIX + path)
        assert status == 404, path
    status, _, _ = request(server, f"{CUBE_PREFIX}HEAD/zarr.json", "POST")
    assert status == 405


def test_chunks_are_the_sessions_bytes_with_ranges(server: CatalogServer) -> None:
    status, headers, chunk = request(server, f"{CUBE_PREFIX}HEAD/B04/c/0/0/0")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(chunk) > 0
    status, headers, part = request(server, f"{CUBE_PREFIX}HEAD/B04/c/0/0/0", Range="bytes=4-19")
    assert status == 206 and part == chunk[4:20]
    assert headers["Content-Range"] == f"bytes 4-19/{len(chunk)}"


def test_split_cube_path() -> None:
    assert split_cube_path("/cube/HEAD/B04/c/0/0/0") == ("HEAD", "B04/c/0/0/0")
    assert split_cube_path("/cube/HEAD//zarr.json") == ("HEAD", "zarr.json")
    assert split_cube_path("/cube/run-x/_items/B04%3Ascale/zarr.json") == (
        "run-x",
        "_items/B04:scale/zarr.json",
    )
    for bad in ("/cube/", "/cube/HEAD", "/cube/HEAD/", "/cube//zarr.json", "/cube/HEAD/a/../b"):
        assert split_cube_path(bad) is None, bad


def test_consolidated_groups_round_trip_through_zarr() -> None:
    from zarr.core.group import GroupMetadata

    docs = {
        "": {"zarr_format": 3, "node_type": "group", "attributes": {"a": 1}},
        "g": {"zarr_format": 3, "node_type": "group", "attributes": {}},
        "g/h": {"zarr_format": 3, "node_type": "group", "attributes": {}},
    }
    groups = consolidated_groups(docs)
    assert set(groups) == {"", "g", "g/h"}
    root = GroupMetadata.from_dict(json.loads(groups[""]))
    assert root.attributes == {"a": 1} and root.consolidated_metadata is not None
    assert set(root.consolidated_metadata.flattened_metadata) == {"g", "g/h"}
    g = root.consolidated_metadata.metadata["g"]
    assert isinstance(g, GroupMetadata) and g.consolidated_metadata is not None
    assert set(g.consolidated_metadata.metadata) == {"h"}


# ------------------------------------------------------------------------------ failures
def test_a_stale_cog_is_a_409_naming_the_file(server: CatalogServer, catalog: Path) -> None:
    first_id = str(remote(server, "HEAD").item_id.values[0])
    links = sorted((catalog / "_cube" / "cogs" / first_id).glob("*/B04.tif"))
    assert links
    before = [p.stat() for p in links]
    later = time.time() + 3600
    try:
        for p in links:
            os.utime(p, (later, later))
        status, _, body = request(server, f"{CUBE_PREFIX}HEAD/B04/c/0/0/0")
        assert status == 409
        doc = json.loads(body)
        assert doc["code"] == "StaleChunk"
        assert f"_cube/cogs/{first_id}/" in doc["description"]
        assert "B04.tif changed after snapshot" in doc["description"]
        with pytest.raises(Exception, match="409"):
            remote(server, "HEAD").B04.isel(time=0).load()
        # the server keeps serving: other bands, and the band once the file is back
        assert request(server, f"{CUBE_PREFIX}HEAD/B08/c/0/0/0")[0] == 200
    finally:
        for p, st in zip(links, before, strict=True):
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert request(server, f"{CUBE_PREFIX}HEAD/B04/c/0/0/0")[0] == 200


def test_head_follows_new_commits(sample: Sample, tmp_path: Path) -> None:
    first = _run(tmp_path, sample, max_items=2)
    with serve(tmp_path / "catalog", port=0) as srv:
        assert remote(srv, "HEAD").sizes["time"] == 2
        second = _run(tmp_path, sample)
        deadline = time.monotonic() + 10
        while request(srv, f"{CUBE_PREFIX}HEAD/zarr.json")[1][SNAPSHOT_HEADER] != (
            second.snapshot_id
        ):
            assert time.monotonic() < deadline, "HEAD still names the first run's snapshot"
            time.sleep(0.2)
        assert remote(srv, "HEAD").sizes["time"] == 4
        assert remote(srv, first.run_id).sizes["time"] == 2
