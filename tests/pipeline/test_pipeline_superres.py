"""The super-resolution step inside the pipeline: a tiny SEN2SR bundle (random weights, written in
the released bundle format) turns the sample's 10 m RGBN bands into 2.5 m COG assets that
validate and load with open_cube(resolution=2.5)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import CatalogStore
from stac2cube.check import check_catalog
from stac2cube.sample import Sample
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
