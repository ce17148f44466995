from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely.geometry

from stac2cube.config import AOIConfig, GridConfig
from stac2cube.errors import ConfigError
from stac2cube.grid import (
    NATIVE_ALIGNMENT,
    footprint_lonlat,
    load_aoi,
    on_band_grid,
    target_geobox,
    to_native,
    utm_crs_for,
)


@pytest.mark.parametrize(
    ("bbox", "epsg"),
    [
        ((11.0, 46.0, 11.1, 46.1), "EPSG:32632"),
        ((-75.6, 37.6, -75.5, 37.7), "EPSG:32618"),
        ((27.0, -8.0, 27.1, -7.9), "EPSG:32735"),
        # crosses 12°E: most of it lies in zone 33 (12-18°E)
        ((11.9, 46.0, 12.5, 46.1), "EPSG:32633"),
        ((11.5, 46.0, 12.1, 46.1), "EPSG:32632"),
    ],
)
def test_utm_zone_covering_most_of_the_aoi(bbox: tuple, epsg: str) -> None:
    assert utm_crs_for(shapely.geometry.box(*bbox)) == epsg


def test_geobox_snaps_to_resolution_and_covers_aoi() -> None:
    aoi = shapely.geometry.box(11.0, 46.0, 11.05, 46.03)
    gb = target_geobox(aoi, GridConfig())
    x0, _, _, y1 = gb.extent.boundingbox
    assert gb.resolution.x == 10 and gb.crs.epsg == 32632
    assert x0 % 10 == 0 and y1 % 10 == 0
    assert footprint_lonlat(gb).buffer(1e-9).contains(aoi)
    gb20 = target_geobox(aoi, GridConfig(crs="EPSG:3035", resolution=20))
    assert gb20.crs.epsg == 3035 and gb20.resolution.x == 20


def test_geojson_aoi(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": shapely.geometry.mapping(shapely.geometry.box(1, 1, 2, 2)),
            },
            {
                "type": "Feature",
                "properties": {},
                "geometry": shapely.geometry.mapping(shapely.geometry.box(3, 1, 4, 2)),
            },
        ],
    }
    p = tmp_path / "aoi.geojson"
    p.write_text(json.dumps(fc))
    geom = load_aoi(AOIConfig(geojson=str(p)))
    assert geom.area == pytest.approx(2.0)
    assert geom.bounds == (1, 1, 4, 2)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "Point", "coordinates": [1, 2]}', "must hold a Polygon"),
        ('{"type": "FeatureCollection", "features": []}', "holds no geometry"),
        (
            '{"type": "Polygon", "coordinates": [[[500000, 5e6], [501000, 5e6], '
            "[501000, 5.001e6], [500000, 5e6]]]}",
            "not in longitude/latitude",
        ),
    ],
)
def test_bad_geojson_aoi(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "aoi.geojson"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_aoi(AOIConfig(geojson=str(p)))
    with pytest.raises(ConfigError, match="cannot read"):
        load_aoi(AOIConfig(geojson=str(tmp_path / "missing.geojson")))


def test_to_native_gives_back_repeated_pixels_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for factor in (2, 3, 6):
        native = rng.uniform(-0.1, 1.6, (5, 7)).astype(np.float32)
        repeated = np.repeat(np.repeat(native, factor, axis=0), factor, axis=1)
        np.testing.assert_array_equal(to_native(repeated, factor), native)
    assert to_native(repeated, 1) is repeated


def test_to_native_averages_and_any_nodata_makes_nodata() -> None:
    data = np.array(
        [[0.1, 0.3, 0.5, 0.5], [0.2, 0.4, 0.5, np.nan], [1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 4.0]],
        dtype=np.float32,
    )
    out = to_native(data, 2)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.25, np.nan], [1.0, 2.5]], rtol=1e-7)
    classes = np.array([[4, 4, 8, 9], [4, 4, 8, 8]], dtype=np.uint8)
    np.testing.assert_array_equal(to_native(classes, 2, classes=True), [[4, 8]])
    with pytest.raises(ValueError, match="whole number of 2 x 2 cells"):
        to_native(data[:3], 2)


def test_layers_go_on_their_bands_native_grids() -> None:
    gbox = target_geobox(
        shapely.geometry.box(15.0, 45.0, 15.05, 45.03),
        GridConfig(resolution=10),
        align=NATIVE_ALIGNMENT,
    )
    data = np.ones(gbox.shape.yx, dtype=np.float32)
    for name, res in (("B04", 10), ("B11", 20), ("SCL", 20), ("B01", 60), ("CLOUD_MASK", 10)):
        grid, pixels = on_band_grid(gbox, name, data, native=True)
        assert grid.resolution.x == res and grid.extent == gbox.extent, name
        assert pixels.shape == (gbox.shape.y * 10 // res, gbox.shape.x * 10 // res)
        assert on_band_grid(gbox, name, data, native=False) == (gbox, data)
