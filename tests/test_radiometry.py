"""Tests for stac2cube.radiometry: baselines, per-provider scale/offset, DN ↔ reflectance."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import pystac
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stac2cube.bands import S2_BANDS, find_asset
from stac2cube.errors import ConfigError, ItemError, MissingAssetError, RadiometryError
from stac2cube.radiometry import (
    ESA_OFFSET,
    ESA_SCALE,
    Radiometry,
    RadiometryOverride,
    band_radiometry,
    baseline_has_offset,
    from_reflectance,
    processing_baseline,
    storage_encoding,
    to_reflectance,
)
from stac2cube.testing.data import load_item, load_item_collection

ES_V0 = "stac/items/earth-search-v0/S2A_28QCH_20200714_0_L2A.json"
PC = "stac/items/planetary-computer/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
PC_RASTER = (
    "stac/items/planetary-computer/"
    "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json"
)
CDSE = (
    "stac/items/cdse/"
    "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110.json"
)
ES_V1_PAGE1 = "stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page1.json"
ES_V1_PAGE2 = "stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page2.json"
ES_V1_2023 = "stac/searches/earth-search-v1-s2-l2a-landsat-20231008.json"
PC_SEARCH = "stac/searches/planetary-computer-s2-l2a-20190101.json"
PC_SITE1 = "stac/item-collections/planetary-computer/site1-20200606-tall-strip-africa.geojson"
PC_SITE2 = "stac/item-collections/planetary-computer/site2-2020_jun_jul-35MNM.geojson"

REFLECTANCE = [b for b, i in S2_BANDS.items() if i.is_reflectance]


def es_v1(collection: str, path: str = ES_V1_PAGE1) -> pystac.Item:
    """The first item of ``collection`` in an Earth Search v1 search page."""
    items = [i for i in load_item_collection(path) if i.collection_id == collection]
    assert items, f"no {collection} item in {path}"
    return items[0]


def radiometry_of(item: pystac.Item, band: str, **kwargs: object) -> Radiometry:
    key, _ = find_asset(item, band)
    return band_radiometry(item, key, band=band, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ baseline


@pytest.mark.parametrize(
    ("loader", "expected"),
    [
        pytest.param(lambda: load_item(ES_V0), "02.14", id="es-v0-from-product-id"),
        pytest.param(lambda: load_item(PC), "02.12", id="pc"),
        pytest.param(lambda: load_item(CDSE), "05.11", id="cdse-processing-version"),
        pytest.param(lambda: es_v1("sentinel-2-l2a"), "05.11", id="es-v1-l2a"),
        pytest.param(lambda: es_v1("sentinel-2-l1c"), "05.11", id="es-v1-l1c"),
        pytest.param(lambda: es_v1("sentinel-2-c1-l2a"), "05.11", id="es-v1-c1-l2a"),
        pytest.param(lambda: es_v1("sentinel-2-l2a", ES_V1_2023), "05.09", id="es-v1-2023"),
    ],
)
def test_processing_baseline(loader: Callable[[], pystac.Item], expected: str) -> None:
    assert processing_baseline(loader()) == expected


def test_cdse_baseline_comes_from_processing_version() -> None:
    item = load_item(CDSE)
    assert not any(k.startswith("s2:") for k in item.properties)
    item.properties["processing:version"] = "05.10"
    assert processing_baseline(item) == "05.10"  # the property wins over the id's _N0511_


def test_baseline_parsed_from_item_id_and_product_uri() -> None:
    item = load_item(CDSE)
    del item.properties["processing:version"]
    assert processing_baseline(item) == "05.11"  # from the id
    pc = load_item(PC)
    del pc.properties["s2:processing_baseline"]
    assert processing_baseline(pc) == "02.12"  # from s2:product_uri


@pytest.mark.parametrize(
    ("prop", "value", "expected"),
    [
        ("s2:processing_baseline", 5.11, "05.11"),
        ("s2:processing_baseline", "4.00", "04.00"),
        ("sentinel:processing_baseline", "04.00", "04.00"),
        ("processing:version", "N0500", "05.00"),
        ("processing:version", "not-a-baseline", None),
    ],
)
def test_baseline_property_forms(prop: str, value: object, expected: str | None) -> None:
    item = load_item(ES_V0)
    del item.properties["sentinel:product_id"]
    item.properties[prop] = value
    assert processing_baseline(item) == expected


def test_baseline_unknown_is_none() -> None:
    item = load_item(ES_V0)
    del item.properties["sentinel:product_id"]
    assert processing_baseline(item) is None


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [("02.12", False), ("02.14", False), ("03.99", False), ("04.00", True), ("05.11", True)],
)
def test_baseline_has_offset(baseline: str, expected: bool) -> None:
    assert baseline_has_offset(baseline) is expected


def test_baseline_has_offset_rejects_garbage() -> None:
    with pytest.raises(RadiometryError):
        baseline_has_offset("four")


# ------------------------------------------------------------------------------ rules per provider


@pytest.mark.parametrize(
    ("loader", "band", "scale", "offset", "source"),
    [
        pytest.param(lambda: load_item(ES_V0), "B04", 1e-4, 0.0, "processing_baseline", id="es-v0"),
        pytest.param(lambda: load_item(PC), "B04", 1e-4, 0.0, "processing_baseline", id="pc"),
        pytest.param(
            lambda: load_item(PC_RASTER), "B8A", 1e-4, 0.0, "processing_baseline", id="pc-raster"
        ),
        pytest.param(
            lambda: load_item(CDSE), "B04", 1e-4, -0.1, "raster:scale/offset (asset)", id="cdse"
        ),
        pytest.param(
            lambda: load_item(CDSE, migrate=False),
            "B11",
            1e-4,
            -0.1,
            "raster:scale/offset (asset)",
            id="cdse-not-migrated",
        ),
        pytest.param(
            lambda: es_v1("sentinel-2-l2a"),
            "B04",
            1e-4,
            0.0,
            "earthsearch:boa_offset_applied",
            id="es-v1-l2a",
        ),
        pytest.param(
            lambda: es_v1("sentinel-2-l2a", ES_V1_2023),
            "B8A",
            1e-4,
            0.0,
            "earthsearch:boa_offset_applied",
            id="es-v1-l2a-2023",
        ),
        pytest.param(
            lambda: es_v1("sentinel-2-l1c"), "B04", 1e-4, -0.1, "raster:bands", id="es-v1-l1c"
        ),
        pytest.param(
            lambda: es_v1("sentinel-2-c1-l2a"), "B04", 1e-4, -0.1, "raster:bands", id="es-v1-c1"
        ),
    ],
)
def test_reflectance_radiometry_per_provider(
    loader: Callable[[], pystac.Item], band: str, scale: float, offset: float, source: str
) -> None:
    rad = radiometry_of(loader(), band)
    assert rad.scale == pytest.approx(scale)
    assert rad.offset == pytest.approx(offset)
    assert rad.source == source
    assert rad.nodata == 0.0


@pytest.mark.parametrize("path", [PC_SEARCH, PC_SITE1, PC_SITE2])
def test_planetary_computer_02_12_items_have_no_offset(path: str) -> None:
    items = load_item_collection(path)
    assert items
    for item in items:
        assert processing_baseline(item) == "02.12"
        for band in ("B02", "B04", "B08", "B8A", "B11"):
            rad = radiometry_of(item, band)
            assert (rad.scale, rad.offset) == (ESA_SCALE, 0.0), (item.id, band)


def test_es_v1_l2a_never_double_applies_the_offset() -> None:
    seen = 0
    for path in (ES_V1_PAGE1, ES_V1_PAGE2, ES_V1_2023):
        for item in load_item_collection(path):
            if item.collection_id != "sentinel-2-l2a":
                continue
            assert item.properties["earthsearch:boa_offset_applied"] is True
            for band in REFLECTANCE:
                if band == "B10":
                    continue
                key, asset = find_asset(item, band)
                assert asset.extra_fields["raster:bands"][0]["offset"] == -0.1  # what it lists
                rad = band_radiometry(item, key, band=band)
                assert rad.offset == 0.0, (item.id, band)
                assert rad.source == "earthsearch:boa_offset_applied"
                seen += 1
    assert seen >= 7 * 12


@pytest.mark.parametrize(("flag", "expected"), [(True, 0.15), (False, 0.05)])
def test_es_v1_l2a_pixel_1500(flag: bool, expected: float) -> None:
    item = es_v1("sentinel-2-l2a").clone()
    item.properties["earthsearch:boa_offset_applied"] = flag
    rad = radiometry_of(item, "B04")
    out = to_reflectance(np.array([1500], dtype=np.uint16), rad)
    assert out[0] == pytest.approx(expected, abs=1e-6)


def test_boa_flag_note_cites_upstream_issues() -> None:
    rad = radiometry_of(es_v1("sentinel-2-l2a"), "B04")
    assert "earth-search#66" in rad.note
    assert "radiometry.offset" in rad.note


def test_jp2_twin_of_es_v1_l2a_keeps_the_offset() -> None:
    item = es_v1("sentinel-2-l2a")
    rad = band_radiometry(item, "red-jp2", band="B04")
    assert rad.offset == pytest.approx(-0.1)
    assert rad.source == "raster:bands"


def test_boa_flag_without_raster_metadata_uses_default_scale() -> None:
    item = load_item(ES_V0)
    item.properties["sentinel:boa_offset_applied"] = True
    item.properties["sentinel:processing_baseline"] = "04.00"
    rad = radiometry_of(item, "B04")
    assert (rad.scale, rad.offset) == (ESA_SCALE, 0.0)


def test_baseline_decides_never_the_date() -> None:
    """A 2019 acquisition reprocessed with baseline 05.00 carries the offset."""
    item = load_item(PC)
    assert item.datetime is not None and item.datetime.year == 2019
    item.properties["s2:processing_baseline"] = "05.00"
    assert radiometry_of(item, "B04").offset == pytest.approx(ESA_OFFSET)
    item.properties["s2:processing_baseline"] = "04.00"
    assert radiometry_of(item, "B04").offset == pytest.approx(ESA_OFFSET)
    item.properties["s2:processing_baseline"] = "03.01"
    assert radiometry_of(item, "B04").offset == 0.0


@pytest.mark.parametrize(
    "loader",
    [
        lambda: load_item(PC),
        lambda: load_item(ES_V0),
        lambda: load_item(CDSE),
        lambda: es_v1("sentinel-2-l2a"),
        lambda: es_v1("sentinel-2-c1-l2a"),
    ],
)
def test_scl_is_class_codes(loader: Callable[[], pystac.Item]) -> None:
    rad = radiometry_of(loader(), "SCL")
    assert (rad.scale, rad.offset, rad.nodata) == (1.0, 0.0, 0.0)
    assert rad.source == "default"


def test_scl_ignores_override() -> None:
    rad = radiometry_of(load_item(PC), "SCL", override=RadiometryOverride(offset=-0.1))
    assert (rad.scale, rad.offset) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("loader", "band", "source"),
    [
        (lambda: es_v1("sentinel-2-l2a"), "AOT", "raster:bands"),
        (lambda: es_v1("sentinel-2-c1-l2a"), "WVP", "raster:bands"),
        (lambda: load_item(PC), "AOT", "default"),
        (lambda: load_item(ES_V0), "WVP", "default"),
    ],
)
def test_auxiliary_bands(loader: Callable[[], pystac.Item], band: str, source: str) -> None:
    rad = radiometry_of(loader(), band)
    assert rad.scale == pytest.approx(1e-3)
    assert rad.offset == 0.0
    assert rad.source == source


def test_cdse_auxiliary_reflectance_encoding_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    item = load_item(CDSE)
    assert item.assets["AOT_20m"].extra_fields["raster:offset"] == -0.1
    with caplog.at_level(logging.WARNING, logger="stac2cube.radiometry"):
        rad = radiometry_of(item, "AOT")
    assert (rad.scale, rad.offset) == (1e-3, 0.0)
    assert "quantification" in rad.note
    assert any(r.levelname == "WARNING" for r in caplog.records)


def test_raster_metadata_contradicting_baseline_is_trusted_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = es_v1("sentinel-2-c1-l2a").clone()
    item.assets["red"].extra_fields["raster:bands"][0]["offset"] = 0
    with caplog.at_level(logging.WARNING, logger="stac2cube.radiometry"):
        rad = radiometry_of(item, "B04")
    assert rad.offset == 0.0
    assert rad.source == "raster:bands"
    assert "05.11" in rad.note and "radiometry.offset" in rad.note
    assert any("05.11" in r.getMessage() for r in caplog.records)


def test_offset_on_pre_04_baseline_is_flagged() -> None:
    item = es_v1("sentinel-2-c1-l2a").clone()
    item.properties["s2:processing_baseline"] = "02.09"
    rad = radiometry_of(item, "B04")
    assert rad.offset == pytest.approx(-0.1)
    assert "02.09" in rad.note


def test_consistent_metadata_has_no_warning_note() -> None:
    assert radiometry_of(es_v1("sentinel-2-c1-l2a"), "B04").note == ""
    assert radiometry_of(load_item(CDSE), "B04").note == ""


def test_unknown_baseline_raises_with_instructions() -> None:
    item = load_item(ES_V0)
    del item.properties["sentinel:product_id"]
    with pytest.raises(RadiometryError) as exc:
        radiometry_of(item, "B04")
    assert "radiometry.offset" in str(exc.value)
    assert "sentinel-s2-l2a-cogs" in str(exc.value)
    assert isinstance(exc.value, ItemError)


def test_override_rescues_unknown_baseline() -> None:
    item = load_item(ES_V0)
    del item.properties["sentinel:product_id"]
    rad = radiometry_of(item, "B04", override=RadiometryOverride(offset=-0.1))
    assert (rad.scale, rad.offset, rad.source) == (ESA_SCALE, -0.1, "override")
    with pytest.raises(RadiometryError):
        radiometry_of(item, "B04", override=RadiometryOverride(scale=1e-4))


def test_override_wins_over_item_metadata() -> None:
    item = es_v1("sentinel-2-l2a")
    rad = radiometry_of(item, "B04", override=RadiometryOverride(offset=-0.1))
    assert (rad.scale, rad.offset, rad.source) == (ESA_SCALE, -0.1, "override")
    assert "earthsearch:boa_offset_applied" in rad.note
    rad = radiometry_of(load_item(CDSE), "B04", override=RadiometryOverride(scale=2e-4))
    assert (rad.scale, rad.offset) == (2e-4, -0.1)


def test_empty_override_changes_nothing() -> None:
    item = load_item(CDSE)
    assert radiometry_of(item, "B04", override=RadiometryOverride()) == radiometry_of(item, "B04")


@pytest.mark.parametrize("kwargs", [{"scale": 0.0}, {"scale": math.inf}, {"offset": math.nan}])
def test_override_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RadiometryOverride(**kwargs)


def test_unknown_asset_key() -> None:
    with pytest.raises(MissingAssetError, match="nope"):
        band_radiometry(load_item(PC), "nope", band="B04")


def test_nodata_from_raster_bands_and_asset_field() -> None:
    item = es_v1("sentinel-2-c1-l2a").clone()
    item.assets["red"].extra_fields["raster:bands"][0]["nodata"] = 65535
    assert radiometry_of(item, "B04").nodata == 65535.0
    cdse = load_item(CDSE)
    cdse.assets["B04_10m"].extra_fields["nodata"] = "nan"
    assert math.isnan(radiometry_of(cdse, "B04").nodata or 0.0)


# ------------------------------------------------------------------------------ pixels


def test_nodata_becomes_nan_never_minus_0_1() -> None:
    rad = Radiometry(1e-4, -0.1, 0.0, "test")
    out = to_reflectance(np.array([[0, 1000], [1500, 0]], dtype=np.uint16), rad)
    assert out.dtype == np.float32
    assert out.shape == (2, 2)
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 1])
    assert not np.any(np.isclose(out, -0.1))
    assert out[0, 1] == pytest.approx(0.0, abs=1e-7)
    assert out[1, 0] == pytest.approx(0.05, abs=1e-6)


def test_to_reflectance_without_nodata_keeps_zero() -> None:
    out = to_reflectance(np.array([0]), Radiometry(1e-4, -0.1, None, "test"))
    assert out[0] == pytest.approx(-0.1)


def test_to_reflectance_nan_nodata_for_float_input() -> None:
    out = to_reflectance(np.array([np.nan, 2.0]), Radiometry(0.5, 0.0, math.nan, "test"))
    assert np.isnan(out[0]) and out[1] == 1.0


def test_to_reflectance_does_not_modify_input() -> None:
    dn = np.array([0, 1500], dtype=np.uint16)
    to_reflectance(dn, Radiometry(1e-4, -0.1, 0.0, "test"))
    assert dn.tolist() == [0, 1500]


def test_storage_encoding() -> None:
    assert storage_encoding("int16") == (1e-4, 0.0, -32768.0)
    assert storage_encoding("uint16") == (1e-4, -0.1, 0.0)
    scale, offset, nodata = storage_encoding("float32")
    assert (scale, offset) == (1.0, 0.0) and math.isnan(nodata)
    with pytest.raises(ConfigError, match="int16"):
        storage_encoding("uint8")


def test_from_reflectance_int16() -> None:
    out = from_reflectance(np.array([0.1234, np.nan, -0.05, 10.0, -10.0]))
    assert out.dtype == np.int16
    assert out.tolist() == [1234, -32768, -500, 32767, -32767]


def test_from_reflectance_uint16_keeps_small_negatives_and_never_writes_nodata() -> None:
    out = from_reflectance(np.array([0.0, -0.05, -0.2, np.nan, 0.15]), dtype="uint16")
    assert out.dtype == np.uint16
    assert out.tolist() == [1000, 500, 1, 0, 2500]


def test_from_reflectance_rounds_half_to_even() -> None:
    out = from_reflectance(np.array([0.5, 1.5, 2.5, -0.5]), scale=1.0)
    assert out.tolist() == [0, 2, 2, 0]


def test_from_reflectance_float32_keeps_nan() -> None:
    out = from_reflectance(np.array([0.25, np.nan]), dtype="float32")
    assert out.dtype == np.float32
    assert out[0] == 0.25 and np.isnan(out[1])


def test_from_reflectance_rejects_zero_scale() -> None:
    with pytest.raises(ConfigError):
        from_reflectance(np.array([0.1]), scale=0.0)


def _storage_radiometry(dtype: str) -> Radiometry:
    scale, offset, nodata = storage_encoding(dtype)
    return Radiometry(scale, offset, nodata, "storage")


_RANGES = {"int16": (-3.2767, 3.2767), "uint16": (-0.0999, 6.4535), "float32": (-2.0, 2.0)}


@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32"])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_round_trip_reflectance_within_half_a_quantum(dtype: str, data: st.DataObject) -> None:
    lo, hi = _RANGES[dtype]
    refl = data.draw(
        hnp.arrays(
            np.float64,
            hnp.array_shapes(max_dims=2, max_side=8),
            elements=st.one_of(st.floats(lo, hi), st.just(float("nan"))),
        )
    )
    encoded = from_reflectance(refl, dtype=dtype)
    decoded = to_reflectance(encoded, _storage_radiometry(dtype))
    assert decoded.shape == refl.shape
    assert np.array_equal(np.isnan(decoded), np.isnan(refl))
    valid = ~np.isnan(refl)
    scale = storage_encoding(dtype)[0]
    tol = (scale / 2 if dtype != "float32" else 0.0) + 1e-6
    assert np.all(np.abs(decoded[valid] - refl[valid]) <= tol)


@pytest.mark.parametrize(("dtype", "lo", "hi"), [("int16", -32767, 32767), ("uint16", 1, 65535)])
@given(data=st.data())
def test_round_trip_dn_is_exact(dtype: str, lo: int, hi: int, data: st.DataObject) -> None:
    dn = data.draw(hnp.arrays(np.dtype(dtype), st.integers(1, 50), elements=st.integers(lo, hi)))
    refl = to_reflectance(dn, _storage_radiometry(dtype))
    assert np.array_equal(from_reflectance(refl, dtype=dtype), dn)
