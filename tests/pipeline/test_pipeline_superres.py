"""The super-resolution step inside the pipeline: a tiny SEN2SR bundle (random weights, written in
the released bundle format) turns the sample's 10 m RGBN bands into 2.5 m COG assets that
validate and load with open_cube(resolution=2.5), and the 20 m bands, read on their own 20 m
grid for the model, into 10 m ones that add up to those 20 m pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import CatalogStore
from stac2cube.check import check_catalog
from stac2cube.io.read import read_band
from stac2cube.sample import Sample
from stac2cube.sample.scenes import aux_geobox
from stac2cube.testing.configs import write_config
from stac2cube.testing.stac_api import RustacServer

pytest.importorskip("torch")
pytest.importorskip("sen2sr")

from stac2cube.steps import superres as sm

BANDS = ["B02", "B03", "B04", "B08", "SCL"]


@pytest.fixture(scope="module")
def sr_catalog(sample: Sample, sample_api: RustacServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sr")
    weights = sm.random_model(
        sm.model_definition("rgbn_x4", tile_size=64, feature_channels=8, num_blocks=1), seed=3
    )
    sm.write_bundle(weights, tmp / "bundle", model_id="tiny-rgbn")
    start = sample.scenes[0].l2a_item["properties"]["datetime"][:10]
    cfg = load_config(
        write_config(
            tmp,
            sample,
            {"api": sample_api.url},
            bands=BANDS,
            steps={"superres": {"bundle": "bundle", "tile_size": 64, "overlap": 16}},
            time={"start": start, "end": start},
            run={"executor": "serial"},
        )
    )
    summary = run(cfg)
    assert summary.written == 1, summary
    return cfg


def test_sr_assets_are_cogs_on_a_4x_grid(sr_catalog) -> None:
    store = CatalogStore(sr_catalog.catalog_dir, sr_catalog.output.collection_id)
    (item,) = list(store.iter_items())
    for band in ("B02", "B03", "B04", "B08"):
        asset = item["assets"][f"{band}_sr"]
        assert asset["raster:bands"][0]["spatial_resolution"] == 2.5
        assert asset["eo:bands"][0]["name"] == band
        shape = asset["proj:shape"]
        assert shape == [
            4 * item["properties"]["proj:shape"][0],
            4 * item["properties"]["proj:shape"][1],
        ]
        path = store.item_dir(item["id"]) / asset["href"]
        assert cog_validate(str(path))[0]
        with rasterio.open(path) as src:
            assert src.res == (2.5, 2.5) and (src.height, src.width) == tuple(shape)
    steps = {s["name"]: s for s in item["properties"]["stac2cube:steps"]}
    res = steps["superres"]["results"]
    assert len(res["weights_sha256"]) == 64 and res["device"] == "cpu"
    assert check_catalog(sr_catalog.catalog_dir).problems == ()


def test_the_item_names_no_local_path(sr_catalog) -> None:
    """The bundle is recorded by its name and its weights' sha256, never the folder it was
    loaded from on this machine."""
    root = str(sr_catalog.base_dir)
    for path in Path(sr_catalog.catalog_dir).rglob("*.json"):
        text = path.read_text()
        assert root not in text, (path, root)
    store = CatalogStore(sr_catalog.catalog_dir, sr_catalog.output.collection_id)
    [item] = [store.read_item(i) for i in store.item_ids()]
    assert item is not None
    [sr] = [s for s in item["properties"]["stac2cube:steps"] if s["name"] == "superres"]
    assert sr["parameters"]["bundle"] == "bundle"
    assert sr["results"]["model_source"] == "bundle:bundle"
    assert len(sr["results"]["weights_sha256"]) == 64


def test_open_cube_at_2_5_m(sr_catalog) -> None:
    ds = open_cube(sr_catalog.catalog_dir, ["B04_sr", "B04"], resolution=2.5)
    sr = ds.B04_sr.isel(time=0).values
    lo = ds.B04.isel(time=0).values  # the 10 m band, nearest-resampled to the same grid
    assert sr.shape == lo.shape
    ok = (sr != -32768) & (lo != -32768)
    assert ok.mean() > 0.5
    # the hard constraint keeps the SR band close to its 10 m input at the 10 m scale
    h, w = (s // 4 * 4 for s in sr.shape)
    blocks = (sr[:h, :w] * ok[:h, :w]).reshape(h // 4, 4, w // 4, 4).sum(axis=(1, 3))
    n = ok[:h, :w].reshape(h // 4, 4, w // 4, 4).sum(axis=(1, 3))
    ref = lo[:h:4, :w:4]
    full = n == 16
    rel = np.abs(blocks[full] / 16 - ref[full]).mean() / np.abs(ref[full]).mean()
    assert rel < 0.15, rel


def test_virtual_cube_per_resolution(sr_catalog) -> None:
    from stac2cube import open_virtual_cube
    from stac2cube.errors import CatalogError

    store = CatalogStore(sr_catalog.catalog_dir, sr_catalog.output.collection_id)
    assert not [f for f in store.failures() if f.stage == "kerchunk"]
    default = open_virtual_cube(sr_catalog.catalog_dir)
    assert "B04" in default and not any(k.endswith("_sr") for k in default.data_vars)
    virtual = open_virtual_cube(sr_catalog.catalog_dir, ["B04_sr", "B08_sr"])
    odc = open_cube(sr_catalog.catalog_dir, ["B04_sr", "B08_sr"], resolution=2.5)
    for band in ("B04_sr", "B08_sr"):
        np.testing.assert_array_equal(virtual[band].values, odc[band].values)
    np.testing.assert_allclose(virtual.x.values, odc.x.values)
    with pytest.raises(CatalogError, match="different grids"):
        open_virtual_cube(sr_catalog.catalog_dir, ["B04", "B04_sr"])


@pytest.fixture(scope="module")
def swir_catalog(
    sample: Sample, sample_api: RustacServer, tmp_path_factory: pytest.TempPathFactory
):
    """The ``swir_x2`` model over the sample, back-projected to its 20 m input."""
    tmp = tmp_path_factory.mktemp("sr20")
    weights = sm.random_model(
        sm.model_definition("swir_x2", tile_size=64, feature_channels=8, num_blocks=1), seed=5
    )
    sm.write_bundle(weights, tmp / "bundle", model_id="tiny-swir")
    start = sample.scenes[0].l2a_item["properties"]["datetime"][:10]
    steps = {"bundle": "bundle", "model": "swir_x2", "tile_size": 64, "overlap": 16}
    cfg = load_config(
        write_config(
            tmp,
            sample,
            {"api": sample_api.url},
            bands=[*sm.FULL_BANDS, "SCL"],
            steps={"superres": {**steps, "back_projection": True}},
            time={"start": start, "end": start},
            run={"executor": "serial"},
        )
    )
    summary = run(cfg)
    assert summary.written == 1, summary
    return cfg


def test_20m_bands_are_read_on_their_own_grid_for_the_model(swir_catalog, sample: Sample) -> None:
    """The pipeline reads what the step asks for (the six 20 m bands on a 20 m grid, recorded as
    inputs); back-projected to them, each B11_sr 20 m block over the true 20 m pixels of the
    source averages to that pixel (to the int16 storage rounding), not to a neighbour's."""
    store = CatalogStore(swir_catalog.catalog_dir, swir_catalog.output.collection_id)
    (item,) = list(store.iter_items())
    steps = {s["name"]: s for s in item["properties"]["stac2cube:steps"]}
    res = steps["superres"]["results"]
    assert res["inputs_20m"]["grid_m"] == 20.0 and res["inputs_20m"]["source"] == "l2a"
    names = {i["band"] for i in item["properties"]["stac2cube:inputs"]}
    assert {f"{sm.NATIVE_20M}:{b}" for b in sm.SWIR_BANDS} <= names
    asset = item["assets"]["B11_sr"]
    with rasterio.open(store.item_dir(item["id"]) / asset["href"]) as src:
        dn = src.read(1)
        out = np.where(dn == src.nodata, np.nan, dn * src.scales[0] + src.offsets[0])
        g10 = src.transform
    assert asset["raster:bands"][0]["spatial_resolution"] == 10
    ly, lx = res["inputs_20m"]["lead_px"]
    assert (ly, lx) == (round(g10.f / 10) % 2, round(g10.c / 10) % 2)
    l2a = pystac.Item.from_dict(sample.scenes[0].l2a_item)
    g = GeoBox(out.shape, g10, f"EPSG:{sample.spec.epsg}")
    native = read_band(l2a, "B11", aux_geobox(g, 20.0)).data

    def blocks(a: np.ndarray, oy: int, ox: int) -> np.ndarray:
        a = a[oy:, ox:]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        return a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    # the first full 20 m pixel of the scene starts at row ly, column lx
    got = blocks(out, ly, lx)
    want = native[ly : ly + got.shape[0], lx : lx + got.shape[1]]
    ok = np.isfinite(got) & np.isfinite(want)
    assert ok.mean() > 0.5
    assert float(np.abs(got[ok] - want[ok]).max()) < 1e-4
    shifted = blocks(out, 1 - ly, 1 - lx)[: got.shape[0] - 1, : got.shape[1] - 1]
    off = np.abs(shifted - want[: shifted.shape[0], : shifted.shape[1]])
    assert float(np.nanmean(off)) > 1e-3  # a 10 m misalignment would show
