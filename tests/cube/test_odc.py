from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely.geometry
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from stac2cube import load_config, open_cube, reflectance, run
from stac2cube.catalog import CatalogStore
from stac2cube.errors import CatalogError
from stac2cube.grid import footprint_lonlat
from stac2cube.io.cog import write_cog
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config


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


# ------------------------------------------------------------- hand-made items on chosen grids
NODATA = -32768


def _commit_item(
    store: CatalogStore, item_id: str, when: str, epsg: int, x0: float, y0: float, data: np.ndarray
) -> None:
    """Write ``data`` (int16, 10 m, upper-left corner ``x0, y0``) as the B04 COG of one item and
    commit it the way the pipeline does (staging directory, then ``add_item``)."""
    gbox = GeoBox(data.shape, Affine(10.0, 0.0, x0, 0.0, -10.0, y0), f"EPSG:{epsg}")
    cog = write_cog(data, gbox, store.new_staging_dir(item_id) / "B04.tif", nodata=NODATA)
    footprint = footprint_lonlat(gbox)
    store.add_item(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                "https://stac-extensions.github.io/file/v2.1.0/schema.json",
            ],
            "id": item_id,
            "geometry": shapely.geometry.mapping(footprint),
            "bbox": list(footprint.bounds),
            "properties": {
                "datetime": when,
                "proj:code": f"EPSG:{epsg}",
                "proj:shape": list(data.shape),
                "proj:transform": list(gbox.transform)[:6],
            },
            "links": [],
            "assets": {
                "B04": {
                    "href": "./B04.tif",
                    "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data", "reflectance"],
                    "raster:bands": [
                        {"nodata": NODATA, "data_type": "int16", "scale": 1e-4, "offset": 0.0}
                    ],
                    "file:size": cog.size,
                    "file:checksum": cog.checksum,
                }
            },
        }
    )


def _value_at(da: xr.DataArray, x: float, y: float) -> int:
    return int(da.sel(x=x, y=y, method="nearest"))


def test_same_day_tiles_fuse_valid_pixels_of_either(tmp_path: Path) -> None:
    """Two tiles of one solar day overlap by 20 columns, each with nodata in other parts: the
    fused day takes a valid pixel from either (the earlier item's first) and is nodata only where
    both are."""
    store = CatalogStore(tmp_path / "fuse", "tiles")
    store.create()
    a = np.full((40, 40), 100, np.int16)
    a[:20, :] = NODATA  # A: top half missing
    b = np.full((40, 40), 200, np.int16)
    b[:10, :10] = NODATA  # B: two blocks on its left edge missing
    b[20:, :10] = NODATA
    x0, y0 = 500000.0, 5300000.0
    _commit_item(store, "A", "2023-06-01T10:00:00Z", 32633, x0, y0, a)
    _commit_item(store, "B", "2023-06-01T10:00:05Z", 32633, x0 + 200, y0, b)
    ds = open_cube(store.root, ["B04"], groupby="solar_day")
    assert ds.sizes == {"time": 1, "y": 40, "x": 60}
    fused = ds.B04.isel(time=0).values
    # expected: the union of both grids (60 columns), A where valid, else B, else nodata
    want = np.full((40, 60), NODATA, np.int16)
    want[:, 20:60] = np.where(b != NODATA, b, want[:, 20:60])
    want[:, 0:40] = np.where(a != NODATA, a, want[:, 0:40])
    np.testing.assert_array_equal(fused, want)
    # the overlap (columns 20-40, B's columns 0-20) has every case:
    overlap = fused[:, 20:40]
    assert (overlap[:10, :10] == NODATA).all()  # missing in both: nodata
    assert (overlap[10:20, :10] == 200).all() and (overlap[:20, 10:] == 200).all()  # only B
    assert (overlap[20:, :10] == 100).all()  # only A
    assert (overlap[20:, 10:] == 100).all()  # both valid: the earlier item (A) wins
    per_scene = open_cube(store.root, ["B04"])
    assert per_scene.sizes["time"] == 2


def test_an_aoi_across_two_utm_zones_loads_onto_one_grid(tmp_path: Path) -> None:
    """Tiles in UTM 32N and 33N on both sides of 12°E, one constant each, reprojected onto one
    EPSG:32633 grid: each keeps its value over its own footprint, nothing else appears."""
    store = CatalogStore(tmp_path / "zones", "zones")
    store.create()
    # 64 x 64 px at 10 m; zone 32 ends just west of 12°E (x 732293 there), zone 33 starts east
    _commit_item(
        store,
        "west",
        "2023-06-01T10:00:00Z",
        32632,
        731600,
        5098800,
        np.full((64, 64), 1000, np.int16),
    )
    _commit_item(
        store,
        "east",
        "2023-06-01T10:00:00Z",
        32633,
        267720,
        5098800,
        np.full((64, 64), 2000, np.int16),
    )
    ds = open_cube(store.root, ["B04"], groupby="solar_day", crs="EPSG:32633", resolution=10)
    assert ds.odc.geobox.crs.epsg == 32633 and ds.sizes["time"] == 1
    day = ds.B04.isel(time=0)
    to33 = Transformer.from_crs("EPSG:32632", "EPSG:32633", always_xy=True)
    wx, wy = to33.transform(731600 + 320, 5098800 - 320)  # centre of the western tile
    assert _value_at(day, wx, wy) == 1000
    assert _value_at(day, 267720 + 320, 5098800 - 320) == 2000
    values, counts = np.unique(day.values, return_counts=True)
    assert set(values.tolist()) <= {1000, 2000, NODATA}
    n = dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert n[2000] == 64 * 64  # on its own grid: copied exactly
    assert abs(n[1000] - 64 * 64) <= 0.05 * 64 * 64  # reprojected (grid convergence ~2.9°)
    # every western pixel lies on the western tile (back in its own zone, within one pixel)
    yy, xx = np.meshgrid(day.y.values, day.x.values, indexing="ij")
    west = day.values == 1000
    to32 = Transformer.from_crs("EPSG:32633", "EPSG:32632", always_xy=True)
    x32, y32 = to32.transform(xx[west], yy[west])
    assert x32.min() > 731600 - 10 and x32.max() < 732240 + 10
    assert y32.min() > 5098160 - 10 and y32.max() < 5098800 + 10
    east = day.values == 2000
    assert xx[east].min() == 267725 and xx[east].max() == 268355
    refl = reflectance(ds).B04.isel(time=0)
    assert float(refl.max()) == pytest.approx(0.2) and float(refl.min()) == pytest.approx(0.1)


def test_the_catalog_grid_is_used_as_is_and_equals_odc_stac_own_choice(catalog: Path) -> None:
    from stac2cube.cube.odc import _shared_geobox, catalog_items

    items = catalog_items(catalog)
    props = items[0].properties
    shared = _shared_geobox(items, ["B04", "SCL"])
    assert shared == GeoBox(
        tuple(props["proj:shape"]), Affine(*props["proj:transform"][:6]), props["proj:code"]
    )
    fast = open_cube(catalog, ["B04", "SCL"]).load()
    derived = open_cube(
        catalog, ["B04", "SCL"], crs=props["proj:code"], resolution=abs(props["proj:transform"][0])
    ).load()  # odc-stac takes the union of the footprints itself
    xr.testing.assert_identical(fast.drop_attrs(), derived.drop_attrs())
    moved = items[1].clone()
    moved.properties["proj:transform"] = [
        10.0,
        0.0,
        props["proj:transform"][2] + 10,
        0.0,
        -10.0,
        props["proj:transform"][5],
    ]
    assert _shared_geobox([items[0], moved], ["B04"]) is None  # another grid: odc-stac decides
