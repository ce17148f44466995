"""A catalog names no local path of the machine that built it: moved to another folder or served
over HTTP, it validates (ours, and the official STAC validator offline), opens as the same cube,
and every href its provenance records still resolves."""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pystac
import pytest
import xarray as xr
from pystac_client import Client

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import CatalogStore, reference_base_key
from stac2cube.check import check_catalog
from stac2cube.provenance import STAC2CUBE_SCHEMA
from stac2cube.sample import Sample
from stac2cube.serve import SCHEMA_PATH, serve
from stac2cube.testing.configs import write_config
from stac2cube.validation import provenance_schema_file

pytest.importorskip("arosics")
stac_validator = pytest.importorskip("stac_validator.validate")

BANDS = ["B02", "B04", "B08", "SCL"]
# both catalog references: the clear-sky one of the temporal cloud test and the coreg one
STEPS = {
    "cloudmask": {"shadows": "scl", "temporal_threshold": 0.03},
    "coreg": {"mode": "global", "window_size": 128},
}
COLLECTION = "sentinel-2-l2a-ard"
SOURCE_POINTERS = re.compile(r"^/properties/stac2cube:(source/href|inputs/\d+/item_href)$")
"""Where an item names its source: the local path a local source item was read from."""


def self_contained(items: Path, collection: Path, out: Path) -> Path:
    """The sample's ``items`` as a static collection in ``out`` whose items give their assets by
    hrefs relative to themselves (pystac's self-contained layout): a local source as users have
    it."""
    coll = pystac.Collection.from_file(str(collection))
    coll.clear_links()
    coll.set_root(coll)
    for feature in json.loads(items.read_text())["features"]:
        item = pystac.Item.from_dict(feature)
        item.clear_links()
        coll.add_item(item)
    coll.normalize_hrefs(str(out))
    coll.make_all_asset_hrefs_relative()
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "collection.json"


def strings(doc: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every string value of a JSON document, with its JSON pointer."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from strings(value, f"{pointer}/{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from strings(value, f"{pointer}/{i}")
    elif isinstance(doc, str):
        yield pointer, doc


def schema_map() -> dict[str, str]:
    """Every schema URL a stac2cube catalog declares or refers to -> the package's copy."""
    root = importlib.resources.files("stac2cube") / "schemas"
    index: dict[str, str] = json.loads((root / "index.json").read_text())
    mapped = {url: str(root.joinpath(*rel.split("/"))) for url, rel in index.items()}
    return {**mapped, STAC2CUBE_SCHEMA: str(provenance_schema_file())}


def official_validation(href: str, schemas: dict[str, str]) -> list[dict[str, Any]]:
    """stac-validator's report on ``href`` and everything it links to: one message per object."""
    validator = stac_validator.StacValidate(href, recursive=True, schema_map=dict(schemas))
    valid = validator.run()
    problems = [m for m in validator.message if not m.get("valid_stac")]
    assert valid and not problems, problems
    return list(validator.message)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No name but the loopback resolves: nothing is fetched from the network."""
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"offline test: no network access to {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


@pytest.fixture(scope="module")
def moved(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A catalog built from a local source with both references, then moved elsewhere."""
    tmp = tmp_path_factory.mktemp("hrefs")
    source = tmp / "source"
    src = {
        "path": str(
            self_contained(sample.l2a_items_path, sample.l2a_collection_path, source / "l2a")
        ),
        "l1c_path": str(
            self_contained(sample.l1c_items_path, sample.l1c_collection_path, source / "l1c")
        ),
    }
    (tmp / "build").mkdir()
    path = write_config(
        tmp / "build", sample, src, bands=BANDS, steps=STEPS, run={"executor": "serial"}
    )
    config = load_config(path)
    summary = run(config)
    assert summary.written == len(sample.scenes) and summary.failed == 0, summary
    built = config.catalog_dir
    cube = open_cube(built, BANDS).load()
    root = tmp / "elsewhere" / "ard"
    root.parent.mkdir()
    shutil.move(built, root)
    return {"root": root, "built": built, "source": source, "cube": cube}


def test_no_json_names_a_local_path(moved: dict[str, Any], sample: Sample) -> None:
    root, source = moved["root"], moved["source"]
    files = sorted(root.rglob("*.json"))
    assert len([f for f in files if f.parent.name == f.stem]) == len(sample.scenes)
    for file in files:  # catalog, collection, items and the kerchunk references
        for pointer, value in strings(json.loads(file.read_text())):
            where = f"{file.relative_to(root)}#{pointer}: {value}"
            for local in (moved["built"], root, sample.root):
                assert str(local) not in value, where
            if str(source) in value:  # a local source's own location, as the source gave it
                assert SOURCE_POINTERS.match(pointer), where


def test_inputs_are_the_sources_own_hrefs_and_resolve(moved: dict[str, Any]) -> None:
    store = CatalogStore.open(moved["root"])
    for item in store.iter_items():
        props = item["properties"]
        source_href = props["stac2cube:source"]["href"]
        kinds = set()
        for rec in props["stac2cube:inputs"]:
            if reference_base_key(rec["asset"]) is not None:  # the catalog's own reference
                base = store.item_path(item["id"])
                target = store.reference_path(rec["asset"])  # the version it used
                kinds.add("reference")
            else:  # the source item's, or its L1C twin's (item_href)
                base = Path(rec.get("item_href") or source_href)
                given = json.loads(base.read_text())["assets"][rec["asset"]]["href"]
                assert rec["href"] == given and not Path(given).is_absolute()
                target = None
                kinds.add("twin" if "item_href" in rec else "source")
            path = (base.parent / rec["href"]).resolve()
            assert path.is_file() and (target is None or path == target), rec
        assert kinds == {"reference", "twin", "source"}
        steps = {s["name"]: s["results"] for s in props["stac2cube:steps"]}
        for ref in (steps["coreg"]["reference"], steps["cloudmask"]["temporal"]["reference"]):
            href = ref.partition("#")[0]
            assert href.startswith("../_") and (store.item_dir(item["id"]) / href).is_file()


def test_the_moved_catalog_validates_and_opens(moved: dict[str, Any]) -> None:
    report = check_catalog(moved["root"])  # `stac2cube validate`: schemas, COGs, checksums
    assert report.problems == () and report.n_items == 4
    # the virtual cube's references are absolute paths: the only note is that it needs a rebuild
    (note,) = report.warnings
    assert "moved or copied. The next run rebuilds it" in note
    cube = open_cube(moved["root"], BANDS).load()
    xr.testing.assert_equal(cube, moved["cube"])  # the same pixels, times and grid
    assert cube.attrs["stac2cube_catalog"] == str(moved["root"])


def test_the_official_stac_validator_accepts_it_offline(
    moved: dict[str, Any], offline: None, tmp_path: Path
) -> None:
    messages = official_validation(str(moved["root"] / "catalog.json"), schema_map())
    assert len(messages) == 1 + 1 + 4  # the catalog, the collection and every item
    ours = str(provenance_schema_file())
    assert sum(ours in m["schema"] for m in messages) == 1 + 4
    # it does apply our schema: a broken provenance fails
    item = next(CatalogStore.open(moved["root"]).iter_items())
    item["properties"]["stac2cube:config_hash"] = "md5:abc"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(item))
    validator = stac_validator.StacValidate(str(broken), schema_map=schema_map())
    assert not validator.run() and "md5:abc" in json.dumps(validator.message)


def test_served_over_http_it_validates_opens_and_resolves(
    moved: dict[str, Any], offline: None
) -> None:
    import odc.stac

    root, cube = moved["root"], moved["cube"]
    with serve(root, port=0) as srv:
        # our schema fetched from the server, over loopback, at the path of its $id
        served = {**schema_map(), STAC2CUBE_SCHEMA: srv.url + SCHEMA_PATH}
        assert len(official_validation(srv.catalog_url, served)) == 6
        found = Client.open(srv.url).search(collections=[COLLECTION]).item_collection()
        remote = odc.stac.load(
            found,
            bands=["B04"],
            groupby="id",
            crs=str(cube.odc.crs),
            resolution=abs(float(cube.x[1] - cube.x[0])),
        ).sortby("time")
        np.testing.assert_array_equal(remote.B04.values, cube.B04.values)
        item = found[0].to_dict()
        item_url = srv.file_url(f"{COLLECTION}/{item['id']}/{item['id']}.json")
        refs = [
            r
            for r in item["properties"]["stac2cube:inputs"]
            if reference_base_key(r["asset"]) is not None
        ]
        assert len(refs) == 2
        for ref in refs:
            with urllib.request.urlopen(urljoin(item_url, ref["href"]), timeout=10) as resp:
                assert resp.read() == (root / COLLECTION / ref["href"][3:]).read_bytes()
