from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stac2cube import load_config, open_cube, reflectance, run
from stac2cube.errors import CatalogError
from stac2cube.testing.configs import write_config
from stac2cube.testing.sample import Sample


@pytest.fixture(scope="module")
def catalog(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cube")
    cfg = write_config(
        tmp, sample, {"path": str(sample.l2a_items_path)}, bands=["B04", "B08", "SCL"]
    )
    assert run(load_config(cfg)).written == 4
    return tmp / "catalog"


def test_lazy_cube_per_scene(catalog: Path) -> None:
    ds = open_cube(catalog, ["red", "nir", "scl"], chunks={"x": 64, "y": 64})
    assert list(ds.data_vars) == ["B04", "B08", "SCL"]
    assert ds.B04.chunks is not None and ds.B04.data.chunksize[-1] == 64
    assert ds.sizes["time"] == 4 and bool((np.diff(ds.time.values) > np.timedelta64(0)).all())
    assert ds.B04.attrs["nodata"] == -32768 and ds.B04.attrs["scale_factor"] == 1e-4


def test_reflectance_masks_nodata(catalog: Path) -> None:
    ds = open_cube(catalog, ["B04"])
    refl = reflectance(ds).B04.values
    raw = ds.B04.values
    assert np.isnan(refl).sum() == (raw == -32768).sum()
    ok = raw != -32768
    np.testing.assert_allclose(refl[ok], raw[ok] * 1e-4, rtol=1e-6)


def test_solar_day_groups_and_reprojection(catalog: Path) -> None:
    ds = open_cube(catalog, ["B04"], groupby="solar_day")
    assert ds.sizes["time"] == 4  # one scene per day in the sample
    coarse = open_cube(catalog, ["B04"], resolution=20)
    native = open_cube(catalog, ["B04"])
    assert coarse.sizes["x"] == pytest.approx(native.sizes["x"] / 2, abs=1)
    geo = open_cube(catalog, ["B04"], crs="EPSG:4326", resolution=0.0002)
    assert geo.odc.geobox.crs.epsg == 4326


def test_errors_name_what_is_wrong(catalog: Path, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not in the catalog"):
        open_cube(catalog, ["B11"])
    with pytest.raises(CatalogError, match="does not exist"):
        open_cube(tmp_path / "nope")
