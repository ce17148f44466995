"""Tests of stac2cube.angles: the mean angles of real items, the tile metadata's angle grids
(recovered from the sample's MTD_TL.xml and from hand-made documents), and their interpolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
from affine import Affine
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from stac2cube.angles import (
    ANGLE_BANDS,
    AngleGrids,
    SceneAngles,
    angles_from_properties,
    granule_metadata_href,
    parse_granule_metadata,
    read_granule_metadata,
    scene_angles,
    source_angles,
)
from stac2cube.errors import AssetReadError
from stac2cube.sample import Sample, SampleSpec, generate_sample
from stac2cube.sample.geometry import lonlat
from stac2cube.sample.granule import DETECTOR_IDS, GranuleAngles, granule_angles
from stac2cube.sample.stac import date_meta

ITEMS = Path("/work/shared/data/stac/items")
CDSE = (
    ITEMS / "cdse/S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110.json"
)
PC = ITEMS / "planetary-computer/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
ES0 = ITEMS / "earth-search-v0/S2A_28QCH_20200714_0_L2A.json"

F64 = NDArray[np.float64]


def _props(path: Path) -> dict[str, Any]:
    if not path.exists():
        pytest.skip(f"shared test item {path} missing")
    props: dict[str, Any] = json.loads(path.read_text())["properties"]
    return props


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    spec = SampleSpec(n_dates=2, width=96, height=84, nodata_date=None)
    return generate_sample(tmp_path_factory.mktemp("angles-sample"), spec)


def _generator_angles(sample: Sample, i: int) -> GranuleAngles:
    """The grids the generator wrote for date ``i`` (recomputed the way it computes them)."""
    spec = sample.spec
    lon, lat = lonlat(spec, [(spec.width / 2, spec.height / 2)])[0]
    meta = date_meta(spec, i, lon, lat)
    assert (
        round(meta.sun_zenith, 6) == sample.scenes[i].l2a_item["properties"]["s2:mean_solar_zenith"]
    )
    return granule_angles(spec, meta)


def _read(item: dict[str, Any]) -> tuple[AngleGrids, SceneAngles]:
    got = read_granule_metadata(pystac.Item.from_dict(item))
    assert got is not None
    return got


def _circmean(a: F64, axis: int) -> F64:
    """Mean of azimuths as unit vectors over ``axis``, ignoring NaN (written independently of
    the module under test)."""
    z = np.nansum(np.exp(1j * np.radians(a)), axis=axis)
    n = np.isfinite(a).sum(axis=axis)
    out: F64 = np.where(n > 0, np.degrees(np.angle(z)) % 360.0, np.nan)
    return out


def _ang_diff(a: Any, b: Any) -> F64:
    d: F64 = np.abs((np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0) % 360.0 - 180.0)
    return d


# ------------------------------------------------------------------------------ sample MTD_TL.xml


def test_sample_items_carry_a_granule_metadata_asset(sample: Sample) -> None:
    for scene in sample.scenes:
        for item, root in ((scene.l2a_item, "n1:Level-2A_Tile_ID"), (scene.l1c_item, "Level-1C")):
            asset = item["assets"]["granule_metadata"]
            assert asset["type"] == "application/xml" and asset["roles"] == ["metadata"]
            path = Path(asset["href"])
            assert path.name == "MTD_TL.xml"
            assert path.parent == Path(item["assets"]["red"]["href"]).parent  # beside the COGs
            assert root in path.read_text()
            href = granule_metadata_href(pystac.Item.from_dict(item))
            assert href == asset["href"]


def test_parse_recovers_the_generator_grids(sample: Sample) -> None:
    for i, scene in enumerate(sample.scenes):
        truth = _generator_angles(sample, i)
        for item in (scene.l2a_item, scene.l1c_item):
            grids, means = _read(item)
            ny, nx = truth.shape
            assert (ny, nx) == (3, 3)  # a 5 km grid centred on the 1 km scene
            assert grids.geobox.shape.yx == (ny, nx)
            assert grids.geobox.crs is not None and grids.geobox.crs.epsg == 32633
            # first sample at (ULX, ULY): the cell's centre, so the origin is half a step off
            assert grids.geobox.affine == Affine(
                5000.0, 0.0, truth.ulx - 2500.0, 0.0, -5000.0, truth.uly + 2500.0
            )
            assert grids.data.dtype == np.float32 and grids.data.shape == (4, ny, nx)
            np.testing.assert_allclose(grids.data[0], truth.sun_zenith, atol=1e-5)
            np.testing.assert_allclose(grids.data[1], truth.sun_azimuth, atol=1e-4)
            # view: detectors merged (mean where both see a sample), then the mean over bands
            zen = np.nanmean(truth.view_zenith, axis=1)
            az = _circmean(truth.view_azimuth, axis=1)
            np.testing.assert_allclose(grids.data[2], zen.mean(axis=0), atol=1e-5)
            assert _ang_diff(grids.data[3], _circmean(az, axis=0)).max() < 1e-4
            assert grids.source.startswith("granule metadata ")
            assert grids.source.endswith("MTD_TL.xml")
            # the means are the item's view:* fields
            assert means.source == "granule metadata"
            item_view = {k: v for k, v in item["properties"].items() if k.startswith("view:")}
            got_view = means.view_properties()
            assert got_view.keys() == item_view.keys()
            for key, value in item_view.items():
                assert got_view[key] == pytest.approx(value, abs=1e-6), key


def test_sample_detector_merge_is_exercised(sample: Sample) -> None:
    """Each detector has NaN outside its swath; where both see a sample their offsets cancel, so
    the merged zenith is the base field there and one detector's value elsewhere."""
    truth = _generator_angles(sample, 0)
    assert len(DETECTOR_IDS) == 2
    seen = np.isfinite(truth.view_zenith[0])  # (detector, y, x)
    assert (~seen[0]).any() and (~seen[1]).any()
    both = seen[0] & seen[1]
    assert both.any() and (seen[0] ^ seen[1]).any() and (seen[0] | seen[1]).all()
    grids, means = _read(sample.scenes[0].l2a_item)
    band_mean = truth.view_zenith.mean(axis=0)  # (detector, y, x); NaN where unseen
    base = (band_mean[0] + band_mean[1]) / 2
    np.testing.assert_allclose(grids.data[2][both], base[both], atol=1e-5)
    assert np.abs(grids.data[2][both] - band_mean[0][both]).min() > 0.015  # not detector 1 alone
    only = seen[0] & ~seen[1]
    np.testing.assert_allclose(grids.data[2][only], band_mean[0][only], atol=1e-5)
    # band means differ (the azimuth's along-track turn); the scene mean is their mean
    assert np.ptp(truth.mean_view[:, 1]) > 2.0
    assert means.view_azimuth == pytest.approx(truth.mean_view[:, 1].mean(), abs=1e-9)


def test_sample_grids_on_the_scene_grid(sample: Sample) -> None:
    spec = sample.spec
    grids, _ = _read(sample.scenes[1].l1c_item)
    affine = Affine(20.0, 0.0, spec.origin[0], 0.0, -20.0, spec.origin[1])
    target = GeoBox((spec.height // 2, spec.width // 2), affine, f"EPSG:{spec.epsg}")
    out = grids.on(target)
    assert out.shape == (4, spec.height // 2, spec.width // 2) and out.dtype == np.float32
    assert np.isfinite(out).all()
    props = sample.scenes[1].l1c_item["properties"]
    # the view zenith is linear across the scene: its centre value is the items' value
    assert float(out[2].mean()) == pytest.approx(props["view:incidence_angle"], abs=0.01)
    assert np.ptp(out[2]) > 0.03  # and it varies across track
    assert float(out[0].mean()) == pytest.approx(90 - props["view:sun_elevation"], abs=0.01)


# ------------------------------------------------------------------------------ hand-made XML

_GRID = """<{tag}><COL_STEP unit="m">5000</COL_STEP><ROW_STEP unit="m">5000</ROW_STEP>
<Values_List><VALUES>{r0}</VALUES><VALUES>{r1}</VALUES></Values_List></{tag}>"""


def _view(band: int, det: int, zen: tuple[str, str], az: tuple[str, str]) -> str:
    return (
        f'<Viewing_Incidence_Angles_Grids bandId="{band}" detectorId="{det}">'
        + _GRID.format(tag="Zenith", r0=zen[0], r1=zen[1])
        + _GRID.format(tag="Azimuth", r0=az[0], r1=az[1])
        + "</Viewing_Incidence_Angles_Grids>"
    )


def _tile_xml(*, with_means: bool = True) -> bytes:
    views = "".join(
        [
            _view(0, 1, ("1 NaN", "3 NaN"), ("359 NaN", "10 NaN")),
            _view(0, 2, ("NaN 2", "5 4"), ("NaN 20", "30 40")),
            _view(1, 1, ("3 4", "NaN NaN"), ("1 20", "NaN NaN")),
            _view(1, 2, ("NaN NaN", "6 8"), ("NaN NaN", "50 60")),
        ]
    )
    means = (
        '<Mean_Sun_Angle><ZENITH_ANGLE unit="deg">30.5</ZENITH_ANGLE>'
        '<AZIMUTH_ANGLE unit="deg">150.25</AZIMUTH_ANGLE></Mean_Sun_Angle>'
        "<Mean_Viewing_Incidence_Angle_List>"
        '<Mean_Viewing_Incidence_Angle bandId="0"><ZENITH_ANGLE unit="deg">4</ZENITH_ANGLE>'
        '<AZIMUTH_ANGLE unit="deg">100</AZIMUTH_ANGLE></Mean_Viewing_Incidence_Angle>'
        '<Mean_Viewing_Incidence_Angle bandId="1"><ZENITH_ANGLE unit="deg">5</ZENITH_ANGLE>'
        '<AZIMUTH_ANGLE unit="deg">110</AZIMUTH_ANGLE></Mean_Viewing_Incidence_Angle>'
        "</Mean_Viewing_Incidence_Angle_List>"
    )
    doc = f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd">
<n1:Geometric_Info><Tile_Geocoding>
<HORIZONTAL_CS_CODE>EPSG:32605</HORIZONTAL_CS_CODE>
<Geoposition resolution="20"><ULX>1</ULX><ULY>2</ULY></Geoposition>
<Geoposition resolution="10"><ULX>600000</ULX><ULY>6800040</ULY></Geoposition>
</Tile_Geocoding>
<Tile_Angles><Sun_Angles_Grid>
{_GRID.format(tag="Zenith", r0="70 71", r1="72 NaN")}
{_GRID.format(tag="Azimuth", r0="174 175", r1="176 NaN")}
</Sun_Angles_Grid>{means if with_means else ""}{views}</Tile_Angles>
</n1:Geometric_Info></n1:Level-1C_Tile_ID>"""
    return doc.encode()


def test_parse_known_answer() -> None:
    grids, means = parse_granule_metadata(_tile_xml(), source="s3://bucket/MTD_TL.xml")
    assert grids.geobox.crs is not None and grids.geobox.crs.epsg == 32605
    assert grids.geobox.affine == Affine(5000, 0, 597500, 0, -5000, 6802540)  # 10 m position
    nan = np.nan
    np.testing.assert_array_equal(grids.data[0], [[70, 71], [72, nan]])
    np.testing.assert_array_equal(grids.data[1], [[174, 175], [176, nan]])
    # band 0 merged: [[1, 2], [(3+5)/2, 4]]; band 1: [[3, 4], [6, 8]]; mean over bands
    np.testing.assert_allclose(grids.data[2], [[2, 3], [5, 6]], atol=1e-6)
    # azimuth band 0: [[359, 20], [mean(10, 30) = 20, 40]]; band 1: [[1, 20], [50, 60]]
    expected_az = [[0, 20], [35, 50]]  # 359 and 1 average to 0, not 180
    assert _ang_diff(grids.data[3], expected_az).max() < 1e-4
    assert grids.source == "granule metadata s3://bucket/MTD_TL.xml"
    assert not grids.data.flags.writeable
    assert means == SceneAngles(30.5, 150.25, 4.5, 105.0, "granule metadata")
    assert means.view_properties() == {
        "view:sun_elevation": 59.5,
        "view:sun_azimuth": 150.25,
        "view:incidence_angle": 4.5,
        "view:azimuth": 105.0,
    }


def test_parse_without_mean_elements_uses_the_grid_means() -> None:
    _, means = parse_granule_metadata(_tile_xml(with_means=False))
    assert means.sun_zenith == pytest.approx(71.0)
    assert means.view_zenith == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b'{"type": "Feature"}', "is not XML"),
        (b"<kml><Document/></kml>", r"\(root <kml>\) is not usable .*no <Tile_Geocoding>"),
        (
            b"<n1:Level-2A_User_Product xmlns:n1='x'><Tile_Geocoding><HORIZONTAL_CS_CODE>"
            b"EPSG:32633</HORIZONTAL_CS_CODE><Geoposition><ULX>0</ULX><ULY>0</ULY></Geoposition>"
            b"</Tile_Geocoding></n1:Level-2A_User_Product>",
            "no <Sun_Angles_Grid>",
        ),
    ],
)
def test_not_tile_metadata_raises_a_clear_error(doc: bytes, message: str) -> None:
    with pytest.raises(AssetReadError, match=message) as err:
        parse_granule_metadata(doc, source="https://example.org/product/MTD_MSIL2A.xml")
    assert "https://example.org/product/MTD_MSIL2A.xml" in str(err.value)


# ------------------------------------------------------------------------------ interpolation


def _grids(values: list[list[float]], band: int = 2) -> AngleGrids:
    v = np.asarray(values, np.float32)
    data = np.full((4, *v.shape), np.nan, np.float32)
    data[band] = v
    geobox = GeoBox(v.shape, Affine(5000, 0, 497500, 0, -5000, 5302500), "EPSG:32633")
    return AngleGrids(geobox, data, "test")


def _linear(x: Any, y: Any) -> Any:
    """A linear field of the sample position (x, y metres): the grids sample it exactly."""
    return 5.0 + 0.0004 * (x - 500000) - 0.0002 * (y - 5300000)


def test_on_reproduces_a_linear_field_and_extrapolates_half_a_cell() -> None:
    xs = 500000 + 5000 * np.arange(5)
    ys = 5300000 - 5000 * np.arange(4)
    grids = _grids(_linear(xs[None, :], ys[:, None]).tolist())
    # 100 m pixels from half a cell beyond the first samples to beyond the coverage
    target = GeoBox((230, 280), Affine(100, 0, 497500, 0, -100, 5302500), "EPSG:32633")
    out = grids.on(target)
    assert out.shape == (4, 230, 280)
    assert np.isnan(out[0]).all() and np.isnan(out[3]).all()  # bands without data stay NaN
    cx = 497500 + 100 * (np.arange(280) + 0.5)
    cy = 5302500 - 100 * (np.arange(230) + 0.5)
    want = _linear(cx[None, :], cy[:, None])
    covered = (cx[None, :] < 497500 + 5 * 5000) & (cy[:, None] > 5302500 - 4 * 5000)
    np.testing.assert_allclose(out[2][covered], want[covered], atol=2e-5)
    assert np.isnan(out[2][~covered]).all() and (~covered).any()


def test_on_another_crs() -> None:
    xs = 500000 + 5000 * np.arange(5)
    ys = 5300000 - 5000 * np.arange(4)
    grids = _grids(_linear(xs[None, :], ys[:, None]).tolist())
    # a 20 m grid of the neighbouring UTM zone over the grid's middle
    x32, y32 = Transformer.from_crs(32633, 32632, always_xy=True).transform(505000, 5290000)
    target = GeoBox((50, 60), Affine(20, 0, x32, 0, -20, y32), "EPSG:32632")
    out = grids.on(target)
    cols, rows = np.meshgrid(np.arange(60) + 0.5, np.arange(50) + 0.5)
    x, y = Transformer.from_crs(32632, 32633, always_xy=True).transform(
        x32 + 20 * cols, y32 - 20 * rows
    )
    np.testing.assert_allclose(out[2], _linear(x, y), atol=2e-5)


def test_on_interpolates_azimuths_as_unit_vectors() -> None:
    grids = _grids([[359.0, 1.0], [359.0, 1.0]], band=3)
    # pixel centres at the samples' midpoint column and at a quarter of the way
    target = GeoBox((1, 2), Affine(1250, 0, 500625, 0, -1250, 5300625), "EPSG:32633")
    out = grids.on(target)[3, 0]
    assert _ang_diff(out[0], 359.5).max() < 1e-3  # a quarter of the way: 359.5, not 269.5
    assert _ang_diff(out[1], 0.0).max() < 1e-3  # half-way: 0, not 180
    assert (_ang_diff(out, 180.0) > 170).all()


def test_on_renormalises_over_valid_samples() -> None:
    grids = _grids([[4.0, 6.0], [np.nan, np.nan]])
    target = GeoBox((2, 2), Affine(2500, 0, 500000, 0, -2500, 5300000), "EPSG:32633")
    out = grids.on(target)[2]
    # the NaN row does not spread: each pixel is the mean of the valid samples weighted by x
    np.testing.assert_allclose(out, [[4.5, 5.5], [4.5, 5.5]], atol=1e-6)


# ------------------------------------------------------------------------------ item properties


def test_angles_from_real_items() -> None:
    cdse = angles_from_properties(_props(CDSE))
    assert cdse == SceneAngles(
        90 - 44.2173193179239, 161.141279839814, 3.3775887112728196, 226.67338445251667,
        "item properties",
    )  # fmt: skip
    assert cdse.view_properties() == {
        "view:sun_elevation": 44.217319,
        "view:sun_azimuth": 161.14128,
        "view:incidence_angle": 3.377589,
        "view:azimuth": 226.673384,
    }
    pc = angles_from_properties(_props(PC))
    assert (pc.sun_zenith, pc.sun_azimuth) == (37.9128805424161, 170.148039164397)
    assert pc.view_zenith is None and pc.view_azimuth is None
    assert set(pc.view_properties()) == {"view:sun_elevation", "view:sun_azimuth"}
    es0 = angles_from_properties(_props(ES0))
    assert es0 == SceneAngles(None, None, None, None, "item properties")
    assert es0.view_properties() == {}


def test_planetary_computer_per_band_incidence_angles_are_averaged() -> None:
    props = {
        "s2:mean_solar_zenith": 40.0,
        "s2:mean_solar_azimuth": 160.0,
        "s2:mean_incidence_zenith_angle_b02": 3.0,
        "s2:mean_incidence_zenith_angle_b8a": 5.0,
        "s2:mean_incidence_azimuth_angle_b02": 358.0,
        "s2:mean_incidence_azimuth_angle_b8a": 4.0,
    }
    got = angles_from_properties(props)
    assert got.view_zenith == pytest.approx(4.0)
    assert got.view_azimuth is not None and _ang_diff(got.view_azimuth, 1.0) < 1e-9


def test_scene_angles_fill_from_the_granule() -> None:
    granule = SceneAngles(30.0, 150.0, 6.0, 104.0, "granule metadata")
    pc = scene_angles(_props(PC), granule)
    assert pc == SceneAngles(
        37.9128805424161, 170.148039164397, 6.0, 104.0, "item properties + granule metadata"
    )
    es0 = scene_angles(_props(ES0), granule)
    assert es0 == SceneAngles(30.0, 150.0, 6.0, 104.0, "granule metadata")
    cdse = scene_angles(_props(CDSE), granule)
    assert cdse is not None and cdse.source == "item properties"
    assert cdse.view_azimuth == 226.67338445251667
    assert scene_angles(_props(ES0), None) is None
    assert scene_angles(_props(ES0), SceneAngles(30.0, None, 6.0, 104.0, "granule")) is None


# ------------------------------------------------------------------------------ reading


def test_granule_metadata_href_of_real_items() -> None:
    def href(path: Path) -> str | None:
        _props(path)
        return granule_metadata_href(pystac.Item.from_file(str(path)))

    cdse = href(CDSE)
    assert cdse is not None and cdse.startswith("s3://eodata/") and cdse.endswith("/MTD_TL.xml")
    pc = href(PC)
    assert pc is not None and pc.startswith("https://sentinel2l2a01.") and pc.endswith("MTD_TL.xml")
    es0 = href(ES0)
    assert (
        es0
        == "https://roda.sentinel-hub.com/sentinel-s2-l2a/tiles/28/Q/CH/2020/7/14/0/metadata.xml"
    )


def _item(tmp_path: Path, assets: dict[str, str]) -> pystac.Item:
    doc = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "x",
        "geometry": None,
        "properties": {"datetime": "2023-06-01T10:00:00Z"},
        "links": [{"rel": "self", "href": str(tmp_path / "items" / "x.json")}],
        "assets": {k: {"href": v, "roles": ["metadata"]} for k, v in assets.items()},
    }
    return pystac.Item.from_dict(doc)


def test_read_granule_metadata_local_paths_and_cache(tmp_path: Path) -> None:
    (tmp_path / "items" / "x").mkdir(parents=True)
    path = tmp_path / "items" / "x" / "MTD_TL.xml"
    path.write_bytes(_tile_xml())
    relative = _item(tmp_path, {"thumbnail": "x/preview.jpg", "tile-md": "x/MTD_TL.xml"})
    assert granule_metadata_href(relative) == str(path)
    first = read_granule_metadata(relative)
    assert first is not None and first[1].view_zenith == pytest.approx(4.5)
    assert read_granule_metadata(relative) is first  # cached per href
    path.write_bytes(_tile_xml().replace(b'<ZENITH_ANGLE unit="deg">4<', b"<ZENITH_ANGLE>6<"))
    rewritten = read_granule_metadata(relative)  # a file rewritten in place is read again
    assert rewritten is not None and rewritten[1].view_zenith == pytest.approx(5.5)
    via_url = read_granule_metadata(_item(tmp_path, {"granule_metadata": path.as_uri()}))
    assert via_url is not None
    np.testing.assert_array_equal(via_url[0].data, first[0].data)
    assert read_granule_metadata(_item(tmp_path, {"thumbnail": "x/preview.jpg"})) is None


def test_read_granule_metadata_names_the_missing_file(tmp_path: Path, sample: Sample) -> None:
    missing = str(tmp_path / "gone" / "MTD_TL.xml")
    with pytest.raises(AssetReadError, match=r"gone/MTD_TL\.xml"):
        read_granule_metadata(_item(tmp_path, {"granule_metadata": missing}))
    doc = dict(sample.scenes[0].l2a_item)
    doc["assets"] = {k: v for k, v in doc["assets"].items() if k != "granule_metadata"}
    assert read_granule_metadata(pystac.Item.from_dict(doc)) is None


def test_angle_bands_order() -> None:
    assert ANGLE_BANDS == ("sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth")


def test_source_angles_reads_the_granule_only_when_needed(tmp_path: Path) -> None:
    (tmp_path / "items" / "x").mkdir(parents=True)
    (tmp_path / "items" / "x" / "MTD_TL.xml").write_bytes(_tile_xml())
    item = _item(tmp_path, {"granule_metadata": "x/MTD_TL.xml"})
    item.properties["s2:mean_solar_zenith"] = 40.0
    item.properties["s2:mean_solar_azimuth"] = 160.0
    assert source_angles(item) == SceneAngles(
        40.0, 160.0, 4.5, 105.0, "item properties + granule metadata"
    )
    broken = _item(tmp_path, {"granule_metadata": str(tmp_path / "missing.xml")})
    broken.properties.update(item.properties)
    assert source_angles(broken) == SceneAngles(40.0, 160.0, None, None, "item properties")
    item.properties.update({"view:incidence_angle": 3.0, "view:azimuth": 200.0})
    item.assets["granule_metadata"].href = str(tmp_path / "missing.xml")  # not read: not needed
    assert source_angles(item) == SceneAngles(40.0, 160.0, 3.0, 200.0, "item properties")
