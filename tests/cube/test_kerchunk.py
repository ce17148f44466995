"""The kerchunk export: Zarr v3 references written per item, values equal to odc-stac's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stac2cube import load_config, open_cube, open_kerchunk_cube, run
from stac2cube.catalog import REFS_DIR
from stac2cube.catalog.kerchunk import build_references
from stac2cube.errors import CatalogError
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config


@pytest.fixture(scope="module")
def catalog(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("kerchunk")
    cfg = write_config(
        tmp, sample, {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)}
    )
    assert run(load_config(cfg)).written == 4
    return tmp / "catalog"


def test_virtual_cube_equals_the_odc_view(catalog: Path) -> None:
    virtual = open_kerchunk_cube(catalog)
    odc = open_cube(catalog)
    assert set(virtual.data_vars) == set(odc.data_vars)
    assert virtual.B04.dims == ("time", "y", "x") and virtual.B04.chunks is not None
    for name in virtual.data_vars:
        assert virtual[name].dtype == odc[name].dtype, name
        np.testing.assert_array_equal(virtual[name].values, odc[name].values, err_msg=name)
    np.testing.assert_array_equal(virtual.x.values, odc.x.values)
    np.testing.assert_array_equal(virtual.y.values, odc.y.values)
    assert (virtual.time.values == odc.time.values).all()
    assert virtual.B04.attrs["nodata"] == -32768
    # dask sizes the chunks: one task reads several times/tiles, not one task per COG tile
    assert virtual.B04.data.numblocks[0] < virtual.sizes["time"]
    per_tile = open_kerchunk_cube(catalog, ["B04"], chunks={})
    assert per_tile.B04.data.numblocks[0] == per_tile.sizes["time"]


def test_references_are_relative_and_one_file_per_item(catalog: Path) -> None:
    files = sorted((catalog / REFS_DIR).glob("*.json"))
    assert len(files) == 4
    refs = json.loads(files[0].read_text())
    rel = next(iter(refs["assets"]["B04"]["chunks"].values()))[0]
    assert not rel.startswith("/") and (catalog / rel).exists()


def test_an_update_adds_references_without_rebuilding(sample: Sample, tmp_path: Path) -> None:
    source = {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)}
    first = load_config(write_config(tmp_path, sample, {**source, "max_items": 2}))
    assert run(first).written == 2
    refs_dir = tmp_path / "catalog" / REFS_DIR
    before = {p.name: p.stat().st_mtime_ns for p in refs_dir.glob("*.json")}
    assert len(before) == 2 and open_kerchunk_cube(tmp_path / "catalog").sizes["time"] == 2
    full = load_config(write_config(tmp_path, sample, source))
    assert run(full).written == 2  # only the new scenes
    after = {p.name: p.stat().st_mtime_ns for p in refs_dir.glob("*.json")}
    assert len(after) == 4 and all(after[n] == t for n, t in before.items())
    assert open_kerchunk_cube(tmp_path / "catalog").sizes["time"] == 4


def test_missing_references_are_explained_and_rebuilt(catalog: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(catalog, copy)  # the catalog is movable: references are relative
    np.testing.assert_array_equal(
        open_kerchunk_cube(copy, ["B04"]).B04.values,
        open_kerchunk_cube(catalog, ["B04"]).B04.values,
    )
    victim = next((copy / REFS_DIR).glob("*.json"))
    victim.unlink()
    with pytest.raises(CatalogError, match="build_references"):
        open_kerchunk_cube(copy)
    assert build_references(copy) == [victim]
    assert open_kerchunk_cube(copy).sizes["time"] == 4


def test_band_dimension_stacks_bands_of_one_grid(catalog: Path) -> None:
    names = ["B02", "B04", "B08"]
    per_band = open_kerchunk_cube(catalog, names)
    stacked = open_kerchunk_cube(catalog, names, band_dim=True, chunks={"band": 1})
    assert stacked.dims == ("time", "band", "y", "x") and stacked.chunks is not None
    assert stacked.band.values.tolist() == names and stacked.dtype == per_band.B04.dtype
    assert stacked.sizes["time"] == 4 and stacked.attrs["nodata"] == -32768
    assert stacked.attrs["crs"] == per_band.attrs["crs"]
    for name in names:
        np.testing.assert_array_equal(stacked.sel(band=name).values, per_band[name].values)
    np.testing.assert_array_equal(stacked.x.values, per_band.x.values)
    assert (stacked.time.values == per_band.time.values).all()


def test_band_dimension_refuses_bands_of_other_layouts(catalog: Path) -> None:
    with pytest.raises(CatalogError, match=r"share one grid.*\['SCL'\] \(uint8") as err:
        open_kerchunk_cube(catalog, ["B04", "SCL"], band_dim=True)
    assert "['B04'] (int16" in str(err.value) and "bands=[...]" in str(err.value)
