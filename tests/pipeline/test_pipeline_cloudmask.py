"""The cloud-masking step inside the pipeline: L1C twins, no twin, assets, filter, mask on load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import CLOUD_REFERENCE_ASSET, CatalogStore
from stac2cube.check import check_catalog
from stac2cube.sample import Sample
from stac2cube.steps.cloudmask import MASK_CLEAR, MASK_CLOUD, MASK_NODATA
from stac2cube.testing.configs import write_config
from stac2cube.testing.stac_api import RustacServer

BANDS = ["B02", "B03", "B04", "B08", "B8A", "B11", "SCL"]


@pytest.fixture(scope="module")
def masked(sample: Sample, sample_api: RustacServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("masked")
    cfg = load_config(
        write_config(tmp, sample, {"api": sample_api.url}, bands=BANDS, steps={"cloudmask": {}})
    )
    summary = run(cfg)
    assert summary.written == 4, summary
    return cfg


def _items(cfg) -> dict[str, dict]:
    return {
        i["id"]: i for i in CatalogStore(cfg.catalog_dir, cfg.output.collection_id).iter_items()
    }


def test_l1c_twins_are_paired_and_recorded(masked, sample: Sample) -> None:
    items = _items(masked)
    for scene in sample.scenes:
        item = items[scene.l2a_item["id"]]
        steps = item["properties"]["stac2cube:steps"]
        assert [s["name"] for s in steps] == ["harmonise", "cloudmask"]
        assert steps[1]["results"]["toa_source"] == f"l1c:{scene.l1c_item['id']}"
        toa_inputs = [
            i for i in item["properties"]["stac2cube:inputs"] if i["band"].startswith("toa:")
        ]
        assert {i["item"] for i in toa_inputs} == {scene.l1c_item["id"]}
        assert any(i["band"] == "toa:B10" for i in toa_inputs)


def test_mask_assets_and_cloud_cover(masked, sample: Sample) -> None:
    items = _items(masked)
    assert check_catalog(masked.catalog_dir).problems == ()
    covers = []
    for scene in sample.scenes:
        item = items[scene.l2a_item["id"]]
        mask = item["assets"]["CLOUD_MASK"]
        names = {c["value"]: c["name"] for c in mask["classification:classes"]}
        assert names[MASK_CLEAR] == "clear" and names[MASK_CLOUD] == "cloud"
        prob = item["assets"]["CLOUD_PROB"]
        assert prob["raster:bands"][0]["nodata"] == 255
        covers.append((scene.cloud_fraction, item["properties"]["eo:cloud_cover"]))
    # the AOI-level cloud cover follows the true cloudiness of each date
    truth_order = np.argsort([c[0] for c in covers])
    est_order = np.argsort([c[1] for c in covers])
    assert list(truth_order) == list(est_order)
    assert min(c[1] for c in covers) < 5 and max(c[1] for c in covers) > 20


def test_mask_on_load(masked) -> None:
    raw = open_cube(masked.catalog_dir, ["B04", "CLOUD_MASK", "SCL"])
    clear = open_cube(masked.catalog_dir, ["B04"], mask="clear")
    assert "CLOUD_MASK" not in clear.data_vars
    m = raw.CLOUD_MASK.values
    b = clear.B04.values
    assert (b[m != MASK_CLEAR] == -32768).all()
    np.testing.assert_array_equal(b[m == MASK_CLEAR], raw.B04.values[m == MASK_CLEAR])
    # the mask is nodata only where a needed input is (the band, or SCL on its 20 m edge)
    has_data = (raw.B04.values != -32768) & (raw.SCL.values != 0)
    assert (m == MASK_CLOUD).any() and not (m[has_data] == MASK_NODATA).any()


def test_without_l1c_scl_masks_and_a_twin_later_makes_it_stale(
    sample: Sample, tmp_path: Path
) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            sample,
            {"path": str(sample.l2a_items_path)},
            bands=BANDS,
            steps={"cloudmask": {}},
        )
    )
    assert run(cfg).written == 4
    for item in _items(cfg).values():
        res = item["properties"]["stac2cube:steps"][1]["results"]
        assert res["s2cloudless"] == {"status": "not run", "reason": "no L1C twin"}
        assert res["method_used"] == "scl" and "toa_source" not in res
    # with the L1C file given, the twins are found offline too
    cfg2 = load_config(
        write_config(
            tmp_path,
            sample,
            {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)},
            bands=BANDS,
            steps={"cloudmask": {}},
        )
    )
    again = run(cfg2)  # same config hash, but the twins are now available
    assert again.written == 4
    assert {o.message for o in again.outcomes} == {"stale: L1C twin now available"}
    res = next(iter(_items(cfg2).values()))["properties"]["stac2cube:steps"][1]["results"]
    assert res["toa_source"].startswith("l1c:")


def test_l1c_required_but_missing_fails_clearly(sample: Sample, tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            sample,
            {"path": str(sample.l2a_items_path)},
            bands=BANDS,
            steps={"cloudmask": {"l1c": "require"}},
        )
    )
    summary = run(cfg)
    assert summary.written == 0 and summary.failed == 4
    assert all("L1C" in o.message for o in summary.outcomes)


def test_too_cloudy_scenes_are_filtered_and_recorded(sample: Sample, tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            sample,
            {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)},
            bands=BANDS,
            steps={"cloudmask": {"max_cloud_fraction": 0.1}},
        )
    )
    summary = run(cfg)
    cloudy = {s.l2a_item["id"] for s in sample.scenes if s.cloud_fraction > 0.15}
    assert {o.item_id for o in summary.outcomes if o.status == "filtered"} == cloudy
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    assert set(store.item_ids()).isdisjoint(cloudy)
    recs = store.filtered()
    assert set(recs) == cloudy
    assert all(r["results"]["cloud_fraction"] > 0.1 for r in recs.values())
    again = run(cfg)
    assert again.written == 0 and again.filtered == 0
    assert all(o.message.startswith(("up to date", "filtered:")) for o in again.outcomes)
    for item_id in cloudy:
        assert not (store.item_dir(item_id)).exists()
    assert check_catalog(cfg.catalog_dir).problems == ()
    with rasterio.open(next(cfg.catalog_dir.rglob("CLOUD_PROB.tif"))) as src:
        prob = src.read(1)
    assert prob.max() <= 100 or (prob == 255).any()
    assert json.loads(store.collection_path.read_text())["id"] == cfg.output.collection_id


def test_probability_asset_declares_nodata_and_has_average_overviews(masked) -> None:
    item = next(iter(_items(masked).values()))
    classes = item["assets"]["CLOUD_PROB"]["classification:classes"]
    assert classes == [{"value": 255, "name": "no_data", "nodata": True}]
    path = masked.catalog_dir / masked.output.collection_id / item["id"] / "CLOUD_PROB.tif"
    with rasterio.open(path) as src:  # (the sample is smaller than one block: no levels)
        assert src.tags()["OVERVIEW_RESAMPLING"] == "AVERAGE"
    with rasterio.open(path.with_name("CLOUD_MASK.tif")) as src:
        assert src.tags()["OVERVIEW_RESAMPLING"] == "NEAREST"


# ------------------------------------------------------------------ multi-temporal cloud test


def test_temporal_reference_is_built_once_recorded_and_reused(
    sample: Sample, sample_api: RustacServer, tmp_path: Path
) -> None:
    """The first run builds the clear-sky reference from its scenes and stores it as a collection
    asset with provenance; every item records the test and the reference it used; an update
    masks the new scene against the same file, untouched; the catalog validates."""
    dates = sorted(s.l2a_item["properties"]["datetime"][:10] for s in sample.scenes)
    steps = {"cloudmask": {"temporal_threshold": 0.03}}
    path = write_config(
        tmp_path,
        sample,
        {"api": sample_api.url},
        bands=BANDS,
        steps=steps,
        time={"start": dates[0], "end": dates[2]},
    )
    cfg = load_config(path)
    assert run(cfg).written == 3
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    asset = store.reference_asset(CLOUD_REFERENCE_ASSET)
    assert asset is not None and asset["href"].startswith("./_cloud-reference/")
    meta = asset["stac2cube:reference"]
    assert meta["band"] == "B02" and meta["mode"] == "median"
    assert set(meta["sources"]) == set(store.item_ids())  # 3 scenes, temporal_scenes 5
    assert meta["datetime"][:10] == dates[1]  # the median date of the three
    assert store.reference_asset() is None  # no co-registration reference: another asset
    ref_path = store.reference_path(CLOUD_REFERENCE_ASSET)
    with rasterio.open(ref_path) as src:
        ref = src.read(1)
        assert src.dtypes[0] == "float32" and np.isfinite(ref).mean() > 0.9
        assert 0.0 < float(np.nanmedian(ref)) < 0.3  # a blue surface reflectance
    for item in _items(cfg).values():
        res = item["properties"]["stac2cube:steps"][1]["results"]["temporal"]
        assert res["status"] == "applied" and res["gap_days"] <= 10.0
        assert 0.03 <= res["threshold"] <= 0.03 * (1 + 10 / 30) + 1e-9
        inputs = item["properties"]["stac2cube:inputs"]
        used = [i for i in inputs if i["asset"] == CLOUD_REFERENCE_ASSET]
        # relative to the item, as STAC hrefs are: the catalog can move
        assert len(used) == 1 and used[0]["href"] == "../" + asset["href"].removeprefix("./")
        assert (store.item_dir(item["id"]) / used[0]["href"]).resolve() == ref_path
    assert check_catalog(cfg.catalog_dir).problems == ()
    assert check_catalog(cfg.catalog_dir).warnings == ()  # the reference is not an orphan

    mtime = ref_path.stat().st_mtime_ns
    path.write_text(path.read_text().replace(dates[2], dates[3]))
    again = run(load_config(path))
    assert again.written == 1 and again.count("skipped") == 3, again
    assert store.reference_asset(CLOUD_REFERENCE_ASSET) == asset
    assert ref_path.stat().st_mtime_ns == mtime


@pytest.mark.filterwarnings("ignore:Could not parse bucket/account from href")
def test_l1c_twins_of_real_earth_search_items(shared: Path, tmp_path: Path) -> None:
    """Earth Search v1 answers (L2A, L1C and collection-1 L2A items of one datatake, several
    tiles) as a local item collection: each L2A item is paired with the L1C item of its own
    tile, never with a neighbour of the same datatake; an L2A item whose L1C is missing gets
    none (though the L1C of the next tile was acquired 7 s later)."""
    import pystac

    from stac2cube.config import config_from_dict
    from stac2cube.grid import load_aoi
    from stac2cube.pipeline import find_l1c_twins

    pages = [f"stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page{i}.json" for i in (1, 2)]
    feats = [
        f
        for p in pages
        for f in json.loads((shared / p).read_text())["features"]
        if f["collection"].startswith("sentinel-2")
    ]
    path = tmp_path / "earth-search.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    l2a = [pystac.Item.from_dict(f) for f in feats if f["collection"] == "sentinel-2-l2a"]
    l1c_ids = {f["id"] for f in feats if f["collection"] == "sentinel-2-l1c"}
    boxes = np.array([it.bbox for it in l2a])
    bbox = [*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)]
    cfg = config_from_dict(
        {
            "source": {"path": str(path)},
            "aoi": {"bbox": [float(v) for v in bbox]},
            "time": {"start": "2025-07-31", "end": "2025-07-31"},
            "bands": ["B02", "SCL"],
            "steps": {"cloudmask": {}},
            "output": {"catalog": str(tmp_path / "catalog")},
        }
    )
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    store.create()
    twins = find_l1c_twins(cfg, load_aoi(cfg.aoi, cfg.base_dir), l2a, store, "test")
    assert len(l2a) >= 5 and twins
    for item in l2a:
        want = item.id.replace("_L2A", "_L1C")
        if want in l1c_ids:
            assert twins[item.id].id == want
            assert twins[item.id].collection_id == "sentinel-2-l1c"
        else:  # e.g. S2B_24MUA_20250731_0_L2A: its L1C is not in the recorded pages
            assert item.id not in twins
    assert any(it.id not in twins for it in l2a)
