"""The stac-geoparquet index: the JSON items in one file, stale once the catalog moves on."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import xarray as xr

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import PREVIOUS_INDEX_FILE, CatalogStore
from stac2cube.catalog.index import (
    INDEX_NAME,
    drop_nulls,
    index_path,
    invalidate_index,
    read_index,
    read_index_table,
    set_aside_index,
    write_index,
)
from stac2cube.cube.odc import catalog_items
from stac2cube.errors import CatalogError
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config


@pytest.fixture(scope="module")
def catalog(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("index")
    cfg = write_config(
        tmp,
        sample,
        {"path": str(sample.l2a_items_path)},
        bands=["B04", "B08", "SCL"],
        steps={"cloudmask": None},
        run={"executor": "serial"},
    )
    assert run(load_config(cfg)).written == 4
    write_index(tmp / "catalog")
    return tmp / "catalog"


def _content(item_dict: dict[str, object]) -> dict[str, object]:
    keep = ("id", "geometry", "bbox", "properties", "assets", "stac_extensions", "collection")
    return drop_nulls({k: item_dict.get(k) for k in keep})


def test_index_round_trips_the_json_items(catalog: Path) -> None:
    path = index_path(catalog)
    assert path == catalog / "sentinel-2-l2a-ard" / INDEX_NAME and path.exists()
    indexed = read_index(catalog)
    assert indexed is not None
    from_json = {it.id: it for it in catalog_items(catalog, use_index=False)}
    assert sorted(it.id for it in indexed) == sorted(from_json)
    for item in indexed:
        ref = from_json[item.id]
        assert item.datetime == ref.datetime and item.datetime is not None
        assert item.collection_id == ref.collection_id == "sentinel-2-l2a-ard"
        for field in ("proj:code", "proj:shape", "proj:transform", "proj:bbox"):
            assert item.properties[field] == ref.properties[field], field
        assert set(item.assets) == set(ref.assets) == {"B04", "B08", "SCL"}
        for key, asset in item.assets.items():
            href = asset.get_absolute_href()
            assert href == ref.assets[key].get_absolute_href() and Path(href).is_file()
        assert _content(item.to_dict(transform_hrefs=False)) == _content(
            ref.to_dict(transform_hrefs=False)
        )


def test_catalog_items_uses_a_current_index_and_survives_a_move(
    catalog: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(catalog, copy)  # hrefs are relative: the index moves with the catalog
    items = read_index(copy)
    assert items is not None and len(items) == 4
    assert all(
        Path(a.get_absolute_href() or "").is_relative_to(copy) for a in items[0].assets.values()
    )
    times = [it.datetime for it in catalog_items(copy)]
    assert times == sorted(times)  # type: ignore[type-var]


def test_index_is_stale_after_adding_an_item(catalog: Path, tmp_path: Path) -> None:
    copy = tmp_path / "grown"
    shutil.copytree(catalog, copy)
    store = CatalogStore.open(copy)
    source = store.read_item(store.item_ids()[0])
    assert source is not None
    new_id = "S2B_33TWN_20230701_0_L2A"
    shutil.copytree(store.item_dir(source["id"]), store.staging_dir(new_id))
    (store.staging_dir(new_id) / f"{source['id']}.json").unlink()
    store.add_item({**source, "id": new_id})  # commits like the pipeline does
    assert read_index(copy) is None  # collection.json moved on: the index is stale
    assert len(catalog_items(copy)) == 5  # ... so the JSON files are read
    write_index(store)
    indexed = read_index(copy)
    assert indexed is not None and new_id in {it.id for it in indexed} and len(indexed) == 5
    store.remove_item(new_id)
    assert read_index(copy) is None


def test_missing_or_broken_index_falls_back_to_json(
    catalog: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(catalog, copy)
    index_path(copy).write_bytes(b"not parquet")
    with caplog.at_level(logging.WARNING, logger="stac2cube.catalog.index"):
        assert read_index(copy) is None
    assert "unreadable" in caplog.text
    assert len(catalog_items(copy)) == 4
    assert invalidate_index(copy) and not index_path(copy).exists()
    assert read_index(copy) is None and not invalidate_index(copy)


def test_index_of_an_empty_collection(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path / "empty", "coll")
    store.create()
    write_index(store)
    assert read_index(store) == []
    coll = json.loads(store.collection_path.read_text())
    assert not [ln for ln in coll["links"] if ln["rel"] == "item"]


def test_open_cube_is_the_same_with_and_without_the_index(catalog: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cube"
    shutil.copytree(catalog, copy)
    assert read_index(copy) is not None
    with_index = open_cube(copy, ["B04", "SCL"], groupby="solar_day").load()
    invalidate_index(copy)
    without = open_cube(copy, ["B04", "SCL"], groupby="solar_day").load()
    xr.testing.assert_identical(with_index, without)
    assert int((with_index.B04 != -32768).sum()) > 0


def _grow(copy: Path, new_id: str) -> CatalogStore:
    """Commit a copy of the first item under ``new_id`` (as the pipeline commits)."""
    store = CatalogStore.open(copy)
    source = store.read_item(store.item_ids()[0])
    assert source is not None
    shutil.copytree(store.item_dir(source["id"]), store.staging_dir(new_id))
    (store.staging_dir(new_id) / f"{source['id']}.json").unlink()
    store.add_item({**source, "id": new_id})
    return store


def _rows(copy: Path) -> list[dict[str, object]]:
    items = read_index(copy)
    assert items is not None
    return [_content(it.to_dict(transform_hrefs=False)) for it in items]


def test_incremental_index_equals_a_full_rebuild(catalog: Path, tmp_path: Path) -> None:
    copy = tmp_path / "incremental"
    shutil.copytree(catalog, copy)
    previous = read_index_table(copy)
    assert previous is not None and previous.num_rows == 4
    store = _grow(copy, "S2B_33TWN_20230701_0_L2A")
    assert read_index_table(copy) is None  # stale: not reusable by itself
    # an item replaced in place (its JSON changed, its id still linked) is listed as changed
    replaced_id = store.item_ids()[1]
    doc = store.read_item(replaced_id)
    assert doc is not None
    doc["properties"]["eo:cloud_cover"] = 99.5
    (store.item_path(replaced_id)).write_text(json.dumps(doc))
    write_index(store, reuse=previous, changed=["S2B_33TWN_20230701_0_L2A", replaced_id])
    incremental = _rows(copy)
    assert [r["id"] for r in incremental] == store.item_ids()  # the collection's link order
    changed = {str(r["id"]): r for r in incremental}[replaced_id]["properties"]
    assert changed["eo:cloud_cover"] == 99.5  # type: ignore[index]
    write_index(store)  # every item read from JSON
    assert incremental == _rows(copy)


def test_incremental_index_drops_rows_of_unlinked_items(catalog: Path, tmp_path: Path) -> None:
    copy = tmp_path / "shrunk"
    shutil.copytree(catalog, copy)
    previous = read_index_table(copy)
    store = CatalogStore.open(copy)
    gone = store.item_ids()[0]
    store.remove_item(gone)
    write_index(store, reuse=previous)  # nothing "changed", but the link is gone
    rows = _rows(copy)
    assert len(rows) == 3 and gone not in {r["id"] for r in rows}


def test_read_index_keeps_only_the_assets_and_properties_asked_for(catalog: Path) -> None:
    items = read_index(catalog, assets=["B08", "NOPE"], drop_properties=["stac2cube:"])
    assert items is not None and len(items) == 4
    for item in items:
        assert set(item.assets) == {"B08"}
        assert not [k for k in item.properties if k.startswith("stac2cube:")]
        assert "proj:transform" in item.properties and item.datetime is not None
    bare = read_index(catalog, assets=[])
    assert bare is not None and all(not it.assets for it in bare)
    lean = catalog_items(catalog, use_index=False, assets=["B04"], drop_properties=["stac2cube:"])
    assert [set(it.assets) for it in lean] == [{"B04"}] * 4
    assert not [k for it in lean for k in it.properties if k.startswith("stac2cube:")]


def test_an_item_arrow_cannot_hold_gives_a_clear_error_and_no_index(
    catalog: Path, tmp_path: Path
) -> None:
    """A property whose type differs between items cannot share one Arrow column (incremental
    or not): writing the index fails with a CatalogError (the pipeline logs it and goes on) and
    readers use the JSON files."""
    copy = tmp_path / "clash"
    shutil.copytree(catalog, copy)
    previous = read_index_table(copy)
    store = _grow(copy, "S2B_33TWN_20230701_0_L2A")
    doc = store.read_item("S2B_33TWN_20230701_0_L2A")
    assert doc is not None
    doc["properties"]["proj:shape"] = "not a list"
    store.item_path(doc["id"]).write_text(json.dumps(doc))
    for reuse in (previous, None):
        with pytest.raises(CatalogError, match="cannot write the catalog index"):
            write_index(store, reuse=reuse, changed=[doc["id"]])
    assert read_index(copy) is None and len(catalog_items(copy)) == 5


def test_index_set_aside_during_commits_is_reused_then_gone(catalog: Path, tmp_path: Path) -> None:
    """The pipeline moves the current index aside before its commits (readers use the JSON
    files meanwhile) and passes the file to write_index; a crash leaves it to recovery."""
    copy = tmp_path / "aside"
    shutil.copytree(catalog, copy)
    plan = read_index_table(copy, columns=["stac2cube:config_hash", "nope"])
    assert plan is not None and plan.column_names == ["id", "stac2cube:config_hash"]
    store = CatalogStore.open(copy)
    aside = set_aside_index(store)
    assert aside is not None and aside.name == PREVIOUS_INDEX_FILE and aside.exists()
    assert not index_path(store).exists() and set_aside_index(store) is None
    _grow(copy, "S2B_33TWN_20230701_0_L2A")
    write_index(store, reuse=aside, changed=["S2B_33TWN_20230701_0_L2A"])
    incremental = _rows(copy)
    # the kept rows and the new one are written as one row group, not one more per update
    assert pq.ParquetFile(index_path(store)).metadata.num_row_groups == 1
    write_index(store)
    assert incremental == _rows(copy) and len(incremental) == 5
    assert set_aside_index(store) == aside
    assert aside in store.recover() and not aside.exists()


def test_a_run_leaves_a_current_index_that_the_next_update_reuses(
    sample: Sample, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The collection takes its final form (the CEOS-ARD links and summaries) before the index
    is written with a copy of it, so the index is current after every run, and an update that
    adds a scene reads one item JSON file, not all of them."""
    feats = json.loads(sample.l2a_items_path.read_text())["features"]
    items = tmp_path / "items.json"

    def update(n: int) -> Path:
        items.write_text(json.dumps({"type": "FeatureCollection", "features": feats[:n]}))
        cfg = write_config(
            tmp_path,
            sample,
            {"path": str(items)},
            bands=["B04", "B08", "SCL"],
            steps={"cloudmask": None},
            run={"executor": "serial"},
        )
        summary = run(load_config(cfg))
        assert summary.written == 1, summary.outcomes
        return tmp_path / "catalog"

    catalog = update(1)
    assert read_index_table(catalog) is not None
    before = json.loads(CatalogStore.open(catalog).collection_path.read_text())
    assert {"ceos-ard-assessment", "ceos-ard-specification"} <= {
        ln["rel"] for ln in before["links"]
    }
    with caplog.at_level(logging.INFO, logger="stac2cube.catalog.index"):
        update(2)
    assert read_index_table(catalog) is not None
    assert "indexed 2 item(s)" in caplog.text and "(1 read from JSON)" in caplog.text
