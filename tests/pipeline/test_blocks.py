"""Scenes without steps streamed block by block (stac2cube/pipeline/blocks.py): the same COG
pixels and items as scenes held whole, valid COGs, crash and resume, and bands written at their
native resolution."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from stac2cube import load_config, open_cube, run
from stac2cube.bands import find_asset
from stac2cube.catalog import CatalogStore
from stac2cube.check import check_catalog
from stac2cube.config import Config
from stac2cube.errors import ConfigError
from stac2cube.pipeline.blocks import ValidPixels, block_windows
from stac2cube.radiometry import band_radiometry, from_reflectance, to_reflectance
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config

BANDS = ["B02", "B03", "B04", "B05", "B08", "B8A", "B11", "B12", "SCL"]
TIMES = (
    "stac2cube:started",
    "stac2cube:finished",
    "created",
    "updated",
    "processing:datetime",
)


def _config(
    directory: Path, sample: Sample, *, source: Path | None = None, block_size: int = 64, **kw: Any
) -> Path:
    """A config without steps over ``sample`` (or the items at ``source``), COG tiles of 64 px,
    scenes in blocks of ``block_size`` px, in this process."""
    kw = {"bands": BANDS, **kw, "output": {"blocksize": 64, **kw.get("output", {})}}
    return write_config(
        directory,
        sample,
        {"path": str(source or sample.l2a_items_path)},
        steps={"cloudmask": None},
        run={"executor": "serial", "block_size": block_size},
        **kw,
    )


def _build(directory: Path, sample: Sample, **kw: Any) -> Config:
    cfg = load_config(_config(directory, sample, **kw))
    assert run(cfg).written == len(sample.scenes)
    return cfg


@pytest.fixture(scope="module")
def whole_and_blocks(sample: Sample, tmp_path_factory: pytest.TempPathFactory):
    """The sample written whole and in blocks of 64 px (COG tiles of 64 px)."""
    tmp = tmp_path_factory.mktemp("blocks")
    (tmp / "whole").mkdir()
    (tmp / "blocks").mkdir()
    return _build(tmp / "whole", sample, block_size=0), _build(tmp / "blocks", sample)


def _store(cfg: Config) -> CatalogStore:
    return CatalogStore(cfg.catalog_dir, cfg.output.collection_id)


def _levels(path: Path) -> list[np.ndarray]:
    """The pixels of a COG: full resolution, then every overview."""
    with rasterio.open(path) as src:
        factors = src.overviews(1)
    out = []
    for level in range(len(factors) + 1):
        with rasterio.open(path, overview_level=level - 1 if level else None) as src:
            out.append(src.read(1))
    return out


def test_the_scenes_are_cut_into_many_blocks_with_partial_edges(whole_and_blocks) -> None:
    _, blocks = whole_and_blocks
    item = next(_store(blocks).iter_items())
    height, width = item["properties"]["proj:shape"]
    assert height > 128 and width > 128 and height % 64 and width % 64
    windows = list(block_windows((height, width), 64))
    assert len(windows) >= 9 and windows[-1].height < 64 and windows[-1].width < 64


def test_blocks_give_the_pixels_of_the_scene_read_whole(whole_and_blocks) -> None:
    """Bit-identical for every band, the 20 m → 10 m bilinear ones included, and every
    overview; the sample's three radiometric encodings are among the scenes."""
    whole, blocks = whole_and_blocks
    _assert_same_pixels(_store(whole), _store(blocks), BANDS)


def _assert_same_pixels(a: CatalogStore, b: CatalogStore, bands: list[str]) -> None:
    """Every COG of ``bands`` in both catalogs: the same pixels at every overview level."""
    assert sorted(a.item_ids()) == sorted(b.item_ids())
    for item_id in a.item_ids():
        for band in bands:
            levels_a = _levels(a.item_dir(item_id) / f"{band}.tif")
            levels_b = _levels(b.item_dir(item_id) / f"{band}.tif")
            assert len(levels_a) == len(levels_b) > 1, (item_id, band)
            for la, lb in zip(levels_a, levels_b, strict=True):
                np.testing.assert_array_equal(la, lb, err_msg=f"{item_id} {band}")


def test_blocks_give_the_pixels_of_the_scene_read_whole_when_averaging(
    sample: Sample, tmp_path: Path
) -> None:
    """On a 20 m grid the 10 m bands are averaged, 2 x 2 blocks: bit-identical too."""
    kw: dict[str, Any] = {"bands": ["B04", "B11", "SCL"], "grid": {"resolution": 20}}
    (tmp_path / "whole").mkdir()
    (tmp_path / "blocks").mkdir()
    a = _store(_build(tmp_path / "whole", sample, block_size=0, **kw))
    b = _store(_build(tmp_path / "blocks", sample, **kw))
    item = b.read_item(b.item_ids()[0])
    assert item is not None
    assert item["properties"]["stac2cube:steps"][0]["results"]["bands"]["B04"]["resampling"] == (
        "average"
    )
    _assert_same_pixels(a, b, kw["bands"])


def _without_times(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "properties": {k: v for k, v in doc["properties"].items() if k not in TIMES}}


def test_blocks_give_the_item_of_the_scene_read_whole(whole_and_blocks) -> None:
    """The item JSON is the same but for the times: the files' sizes and checksums too (the
    streaming writer lays the pixels out byte for byte as rio-cogeo does)."""
    whole, blocks = whole_and_blocks
    a, b = _store(whole), _store(blocks)
    for item_id in a.item_ids():
        ia, ib = a.read_item(item_id), b.read_item(item_id)
        assert ia is not None and ib is not None
        assert list(ia["assets"]) == list(ib["assets"]) == BANDS
        assert _without_times(ia) == _without_times(ib)
        harmonise = ib["properties"]["stac2cube:steps"][0]["results"]
        assert 0 < harmonise["valid_fraction"] <= 1


def test_blocks_write_valid_cogs_and_a_sound_catalog(whole_and_blocks) -> None:
    _, blocks = whole_and_blocks
    assert check_catalog(blocks.catalog_dir).problems == ()
    for tif in blocks.catalog_dir.rglob("*.tif"):
        ok, errors, warnings = cog_validate(str(tif), quiet=True)
        assert ok and not warnings, (tif, errors, warnings)


def test_valid_pixels_combine_bands_on_nested_grids() -> None:
    rng = np.random.default_rng(0)
    fine = rng.random((50, 75)) > 0.2
    coarse = rng.random((25, 37)) > 0.2  # 2x2 target pixels each, cut at the edge
    shape = (50, 74)
    valid = ValidPixels(shape)
    for w in block_windows(shape, 16):
        valid.add(w, fine[w.toslices()])
    for w in block_windows((25, 37), 16):
        valid.add(w, coarse[w.toslices()], factor=2)
    truth = fine[:, :74] & np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:, :74]
    assert valid.count() == int(truth.sum())


def test_block_size_and_native_resolution_are_checked(sample: Sample, tmp_path: Path) -> None:
    def cfg(**kw: Any) -> Config:
        return load_config(
            write_config(tmp_path, sample, {"path": str(sample.l2a_items_path)}, **kw)
        )

    with pytest.raises(ConfigError, match=r"run.block_size 1000 must be a multiple of output"):
        cfg(run={"block_size": 1000}, steps={"cloudmask": None})
    assert cfg(output={"native_resolution": True}).output.native_resolution  # with steps
    with pytest.raises(ConfigError, match=r"grid.resolution .* not 15 m"):
        cfg(output={"native_resolution": True}, grid={"resolution": 15}, steps={"cloudmask": None})
    base = cfg(steps={"cloudmask": None})
    assert cfg(steps={"cloudmask": None}, run={"block_size": 0}).config_hash == base.config_hash
    native = cfg(steps={"cloudmask": None}, output={"native_resolution": True})
    assert native.config_hash != base.config_hash


def test_failed_scenes_leave_nothing_behind(sample: Sample, tmp_path: Path) -> None:
    """A band missing after others were streamed, and a scene whose pixels lie elsewhere: failed
    at ``read`` as when read whole, their staging directories removed."""
    doc = json.loads(sample.l2a_items_path.read_text())
    f = doc["features"]
    del f[0]["assets"][find_asset(pystac.Item.from_dict(f[0]), "B12")[0]]
    far = tmp_path / "far"
    far.mkdir()
    for key, asset in f[1]["assets"].items():  # the same pixels 200 km east
        if "data" not in asset.get("roles", []):
            continue
        with rasterio.open(asset["href"]) as src:
            prof, arr = src.profile, src.read()
        prof["transform"] = prof["transform"] * Affine.translation(200_000 / prof["transform"].a, 0)
        with rasterio.open(far / f"{key}.tif", "w", **prof) as dst:
            dst.write(arr)
        asset["href"] = str(far / f"{key}.tif")
    items = tmp_path / "items.json"
    items.write_text(json.dumps(doc))
    cfg = load_config(_config(tmp_path, sample, source=items))
    assert run(cfg).written == 2
    store = _store(cfg)
    assert {(r.item_id, r.stage, r.error) for r in store.failures()} == {
        (f[0]["id"], "read", "MissingAssetError"),
        (f[1]["id"], "read", "NoOverlapError"),
    }
    assert not list(store.collection_path.parent.glob(".staging-*"))
    assert check_catalog(cfg.catalog_dir).warnings == ()


KILLER = textwrap.dedent("""
    import itertools, os, signal, sys
    from stac2cube import load_config, run
    from stac2cube.io.cog import CogWriter
    calls, write, kill_at = itertools.count(1), CogWriter.write, int(sys.argv[2])
    def killing_write(self, *args):  # a crash in the middle of a band's blocks
        if next(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, *args)
    CogWriter.write = killing_write
    run(load_config(sys.argv[1]))
""")


@pytest.mark.parametrize("kill_at", [5, 130])
def test_a_run_killed_inside_a_block_write_is_completed_by_the_next(
    sample: Sample, tmp_path: Path, kill_at: int
) -> None:
    """Three bands of 4 x 3 blocks: 36 block writes per scene."""
    path = _config(tmp_path, sample, bands=["B04", "B11", "SCL"])
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), str(kill_at)], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    cat = tmp_path / "catalog"
    done = CatalogStore(cat, "sentinel-2-l2a-ard").item_ids()
    assert len(done) == (kill_at - 1) // 36  # only complete scenes are in the catalog
    assert [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name]  # killed mid-COG
    assert check_catalog(cat).problems == ()
    summary = run(load_config(path))
    assert summary.written == 4 - len(done) and summary.skipped == len(done)
    report = check_catalog(cat)
    assert report.problems == () and report.warnings == ()
    assert not [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name]
    assert open_cube(cat).sizes["time"] == 4


# --------------------------------------------------------------------------------------------
# native resolution


@pytest.fixture(scope="module")
def native(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("native")
    return _build(tmp, sample, output={"native_resolution": True})


def test_native_bands_keep_their_resolution_on_grids_nested_in_the_target(native) -> None:
    store = _store(native)
    for item in store.iter_items():
        t = item["properties"]["proj:transform"]
        height, width = item["properties"]["proj:shape"]
        assert t[0] == 10 and t[2] % 60 == 0 and t[5] % 60 == 0  # edges on the 60 m lattice
        assert height % 6 == 0 and width % 6 == 0
        for band in BANDS:
            asset = item["assets"][band]
            res = 10 if band in ("B02", "B03", "B04", "B08") else 20
            assert asset["raster:bands"][0]["spatial_resolution"] == res
            if res == 10:
                assert "proj:shape" not in asset
                shape, transform = [height, width], t
            else:
                shape, transform = asset["proj:shape"], asset["proj:transform"]
                assert shape == [height // 2, width // 2]
                assert transform == [20.0, 0.0, t[2], 0.0, -20.0, t[5]]
            with rasterio.open(store.item_dir(item["id"]) / f"{band}.tif") as src:
                assert [src.height, src.width] == shape
                assert list(src.transform)[:6] == transform
        ok, errors, _ = cog_validate(str(store.item_dir(item["id"]) / "B11.tif"), quiet=True)
        assert ok, errors
    assert check_catalog(native.catalog_dir).problems == () and store.failures() == []


def test_native_pixels_are_the_sources_over_the_aoi(native, sample: Sample) -> None:
    """No resampling: each COG holds the source asset's pixels in the AOI's window, harmonised
    and encoded."""
    store = _store(native)
    sources = {sc.l2a_item["id"]: pystac.Item.from_dict(sc.l2a_item) for sc in sample.scenes}
    checked = 0
    for item_id in store.item_ids():
        source = sources[item_id]
        for band in BANDS:
            with rasterio.open(store.item_dir(item_id) / f"{band}.tif") as out:
                written, bounds = out.read(1), out.bounds
            step = next(s for s in store.read_item(item_id)["properties"]["stac2cube:steps"])
            key = step["results"]["bands"][band]
            assert key["resampling"] == "nearest"
            asset_key, asset = find_asset(source, band)
            with rasterio.open(asset.href) as src:
                assert src.res == out.res
                win = rasterio.windows.from_bounds(*bounds, transform=src.transform)
                win = Window(*(round(v) for v in (win.col_off, win.row_off, win.width, win.height)))
                dn = src.read(1, window=win, boundless=True, fill_value=src.nodata or 0)
            if band == "SCL":
                expected = dn
            else:
                rad = band_radiometry(source, asset_key, band=band)
                expected = from_reflectance(to_reflectance(dn, rad), dtype="int16")
            np.testing.assert_array_equal(written, expected, err_msg=f"{item_id} {band}")
            checked += 1
    assert checked == 4 * len(BANDS)


def test_the_native_cube_opens_on_one_grid(native) -> None:
    store = _store(native)
    item = next(store.iter_items())
    height, width = item["properties"]["proj:shape"]
    ds = open_cube(native.catalog_dir)
    assert list(ds.data_vars) == BANDS
    assert (ds.sizes["y"], ds.sizes["x"]) == (height, width)
    assert float(ds.x[0]) == item["properties"]["proj:transform"][2] + 5
    t = list(ds.time.values).index(
        np.datetime64(item["properties"]["datetime"].replace("Z", ""), "ns")
    )
    with rasterio.open(store.item_dir(item["id"]) / "B11.tif") as src:
        b11 = src.read(1)
    # the 20 m band on the 10 m grid: each pixel repeated 2 x 2 (nearest)
    up = np.repeat(np.repeat(b11, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(ds.B11.isel(time=t).values, up)
    coarse = open_cube(native.catalog_dir, ["B04", "B11"], resolution=20)
    assert (coarse.sizes["y"], coarse.sizes["x"]) == (height // 2, width // 2)
    np.testing.assert_array_equal(coarse.B11.isel(time=t).values, b11)
