"""Tests for stac2cube.bands: the band catalogue, name normalisation and find_asset."""

from __future__ import annotations

from collections.abc import Callable

import pystac
import pytest

from stac2cube.bands import (
    S2_BANDS,
    SCL_BAD,
    SCL_CLASSES,
    SCL_NODATA,
    SCL_SHADOW,
    SCL_SNOW,
    SCL_VALID,
    BandInfo,
    accepted_band_names,
    asset_resolution,
    find_asset,
    normalize_band_name,
    normalize_band_names,
)
from stac2cube.errors import ConfigError, ItemError, MissingAssetError
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

BANDS = ("B02", "B04", "B08", "B8A", "B11", "SCL")


def es_v1(collection: str, path: str = ES_V1_PAGE1) -> pystac.Item:
    """The first item of ``collection`` in an Earth Search v1 search page."""
    items = [i for i in load_item_collection(path) if i.collection_id == collection]
    assert items, f"no {collection} item in {path}"
    return items[0]


# ------------------------------------------------------------------------------ catalogue


def test_catalogue_has_all_sentinel2_bands_in_esa_order() -> None:
    assert list(S2_BANDS) == [
        "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
        "B09", "B10", "B11", "B12", "SCL", "AOT", "WVP",
    ]  # fmt: skip
    assert all(isinstance(b, BandInfo) and b.name == k for k, b in S2_BANDS.items())


def test_catalogue_kinds_and_resolutions() -> None:
    assert S2_BANDS["SCL"].kind == "classification"
    assert S2_BANDS["SCL"].resolution == 20
    assert {S2_BANDS["AOT"].kind, S2_BANDS["WVP"].kind} == {"auxiliary"}
    assert [b for b, i in S2_BANDS.items() if i.is_reflectance][-1] == "B12"
    assert {b for b, i in S2_BANDS.items() if i.resolution == 10} == {"B02", "B03", "B04", "B08"}
    assert {b for b, i in S2_BANDS.items() if i.resolution == 60} == {"B01", "B09", "B10"}


def test_catalogue_wavelengths_increase_through_reflectance_bands() -> None:
    waves = [i.center_wavelength for i in S2_BANDS.values() if i.is_reflectance]
    assert all(w is not None for w in waves)
    assert waves == sorted(waves)  # type: ignore[type-var]
    assert S2_BANDS["B8A"].center_wavelength == pytest.approx(0.865)
    assert S2_BANDS["SCL"].center_wavelength is None


def test_catalogue_is_read_only() -> None:
    with pytest.raises(TypeError):
        S2_BANDS["B99"] = S2_BANDS["B01"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        S2_BANDS["B04"].resolution = 20  # type: ignore[misc]


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("B04", "B04"),
        ("b4", "B04"),
        ("B4", "B04"),
        ("b04", "B04"),
        ("red", "B04"),
        ("RED", "B04"),
        ("nir08", "B8A"),
        ("b8a", "B8A"),
        ("B8A", "B8A"),
        ("nir", "B08"),
        ("rededge1", "B05"),
        ("rededge075", "B06"),
        ("cirrus", "B10"),
        ("swir16", "B11"),
        ("scl", "SCL"),
        ("aot", "AOT"),
        (" B12 ", "B12"),
    ],
)
def test_normalize_band_name(name: str, canonical: str) -> None:
    assert normalize_band_name(name) == canonical


@pytest.mark.parametrize("name", ["B13", "B00", "foo", "", "rededge", "B8B"])
def test_normalize_band_name_rejects_unknown(name: str) -> None:
    with pytest.raises(ConfigError, match="B01, B02") as exc:
        normalize_band_name(name)
    assert isinstance(exc.value, ValueError)


def test_rededge_is_explained_as_ambiguous() -> None:
    with pytest.raises(ConfigError, match="ambiguous"):
        normalize_band_name("rededge")


def test_accepted_band_names_maps_aliases_to_canonical() -> None:
    names = accepted_band_names()
    assert names["red"] == "B04"
    assert names["nir08"] == "B8A"
    assert names["rededge1"] == names["rededge071"] == "B05"
    assert names["scl"] == "SCL"
    assert "rededge" not in names
    assert set(names.values()) == set(S2_BANDS)


def test_normalize_band_names_keeps_order_and_drops_duplicates() -> None:
    assert normalize_band_names(["red", "B04", "nir08", "b4", "scl"]) == ("B04", "B8A", "SCL")


# ------------------------------------------------------------------------------ find_asset

ES_V1_KEYS = {
    "B02": "blue",
    "B04": "red",
    "B08": "nir",
    "B8A": "nir08",
    "B11": "swir16",
    "SCL": "scl",
}
ESA_KEYS = {b: b for b in BANDS}
CDSE_KEYS = {
    "B02": "B02_10m",
    "B04": "B04_10m",
    "B08": "B08_10m",
    "B8A": "B8A_20m",
    "B11": "B11_20m",
    "SCL": "SCL_20m",
}


@pytest.mark.parametrize("band", BANDS)
@pytest.mark.parametrize(
    ("loader", "expected"),
    [
        pytest.param(lambda: load_item(ES_V0), ESA_KEYS, id="earth-search-v0"),
        pytest.param(lambda: load_item(PC), ESA_KEYS, id="planetary-computer"),
        pytest.param(lambda: load_item(PC_RASTER), ESA_KEYS, id="planetary-computer-raster"),
        pytest.param(lambda: load_item(CDSE), CDSE_KEYS, id="cdse"),
        pytest.param(lambda: load_item(CDSE, migrate=False), CDSE_KEYS, id="cdse-not-migrated"),
        pytest.param(lambda: es_v1("sentinel-2-l2a"), ES_V1_KEYS, id="es-v1-l2a"),
        pytest.param(lambda: es_v1("sentinel-2-c1-l2a"), ES_V1_KEYS, id="es-v1-c1-l2a"),
        pytest.param(lambda: es_v1("sentinel-2-l2a", ES_V1_2023), ES_V1_KEYS, id="es-v1-l2a-2023"),
    ],
)
def test_find_asset_per_provider(
    loader: Callable[[], pystac.Item], expected: dict[str, str], band: str
) -> None:
    item = loader()
    key, asset = find_asset(item, band)
    assert key == expected[band]
    assert asset is item.assets[key]


@pytest.mark.parametrize("band", ["B02", "B04", "B08", "B8A", "B11"])
def test_find_asset_on_es_v1_l1c(band: str) -> None:
    item = es_v1("sentinel-2-l1c")
    assert find_asset(item, band)[0] == ES_V1_KEYS[band]


def test_l1c_has_cirrus_but_no_scl() -> None:
    item = es_v1("sentinel-2-l1c")
    assert find_asset(item, "B10")[0] == "cirrus"
    with pytest.raises(MissingAssetError, match="SCL"):
        find_asset(item, "SCL")


@pytest.mark.parametrize(
    "path", [PC_SEARCH, PC_SITE1, PC_SITE2, ES_V1_PAGE1, ES_V1_PAGE2, ES_V1_2023]
)
def test_find_asset_on_every_sentinel2_l2a_item_of_a_search(path: str) -> None:
    l2a = {"sentinel-2-l2a", "sentinel-2-c1-l2a"}
    items = [i for i in load_item_collection(path) if i.collection_id in l2a]
    assert items
    for item in items:
        for band in BANDS:
            key, _ = find_asset(item, band)
            assert key in (ESA_KEYS[band], ES_V1_KEYS[band]), (item.id, band, key)


def test_es_v1_l2a_never_returns_jp2_twin_when_cog_exists() -> None:
    for path in (ES_V1_PAGE1, ES_V1_PAGE2, ES_V1_2023):
        for item in load_item_collection(path):
            if item.collection_id != "sentinel-2-l2a":
                continue
            for band in (b for b in S2_BANDS if b != "B10"):
                key, asset = find_asset(item, band)
                assert not key.endswith("-jp2"), (item.id, band)
                assert asset.href.endswith(".tif")


def test_es_v1_l2a_falls_back_to_jp2_twin_without_cog() -> None:
    item = es_v1("sentinel-2-l2a").clone()
    del item.assets["red"]
    key, asset = find_asset(item, "B04")
    assert key == "red-jp2"
    assert asset.href.endswith("B04.jp2")


@pytest.mark.parametrize(
    ("band", "resolution", "expected"),
    [
        ("B04", None, "B04_10m"),
        ("B04", 10, "B04_10m"),
        ("B04", 20, "B04_20m"),
        ("B04", 60, "B04_60m"),
        ("B04", 15, "B04_10m"),  # tie: the finer one
        ("B04", 40, "B04_20m"),  # tie between 20 and 60: the finer one
        ("B04", 50, "B04_60m"),
        ("B01", None, "B01_60m"),  # native 60 m
        ("B01", 10, "B01_20m"),  # nearest available
        ("B08", 60, "B08_10m"),  # only one resolution exists
        ("SCL", None, "SCL_20m"),
        ("SCL", 60, "SCL_60m"),
        ("B8A", None, "B8A_20m"),
        ("AOT", 10, "AOT_10m"),
    ],
)
def test_find_asset_cdse_resolution(band: str, resolution: int | None, expected: str) -> None:
    item = load_item(CDSE)
    assert find_asset(item, band, resolution=resolution)[0] == expected


def test_resolution_is_ignored_with_one_asset_per_band() -> None:
    assert find_asset(load_item(PC), "B04", resolution=60)[0] == "B04"


def test_find_asset_accepts_aliases() -> None:
    item = load_item(CDSE)
    assert find_asset(item, "nir08")[0] == "B8A_20m"
    assert find_asset(item, "b4")[0] == "B04_10m"


def _bare_item(assets: dict[str, dict[str, object]]) -> pystac.Item:
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": "bare-item",
            "geometry": None,
            "properties": {"datetime": "2024-01-01T00:00:00Z"},
            "links": [],
            "assets": {k: {"href": f"{k}.tif", **v} for k, v in assets.items()},
        }
    )


def test_find_asset_fallback_eo_bands_stac10() -> None:
    item = _bare_item(
        {
            "band_one": {"eo:bands": [{"name": "B04", "common_name": "red"}]},
            "band_two": {"eo:bands": [{"name": "B8A", "common_name": "nir08"}]},
        }
    )
    assert find_asset(item, "B04")[0] == "band_one"
    assert find_asset(item, "nir08")[0] == "band_two"


def test_find_asset_fallback_bands_stac11_by_common_name() -> None:
    item = _bare_item(
        {
            "x_coarse": {"bands": [{"name": "r", "eo:common_name": "red"}], "gsd": 60},
            "x_fine": {"bands": [{"name": "r", "eo:common_name": "red"}], "gsd": 10},
        }
    )
    assert find_asset(item, "B04")[0] == "x_fine"
    assert find_asset(item, "B04", resolution=50)[0] == "x_coarse"


def test_find_asset_fallback_ignores_multiband_and_ambiguous_rededge() -> None:
    item = _bare_item(
        {
            "visual": {"eo:bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]},
            "re": {"eo:bands": [{"name": "x", "common_name": "rededge"}]},
        }
    )
    with pytest.raises(MissingAssetError):
        find_asset(item, "B04")
    with pytest.raises(MissingAssetError):
        find_asset(item, "B05")


def test_missing_asset_error_names_band_item_and_keys() -> None:
    item = load_item(PC)
    with pytest.raises(MissingAssetError) as exc:
        find_asset(item, "B10")
    message = str(exc.value)
    assert "B10" in message
    assert item.id in message
    assert "B04" in message and "visual" in message
    assert isinstance(exc.value, ItemError)


def test_find_asset_unknown_band_is_config_error() -> None:
    with pytest.raises(ConfigError):
        find_asset(load_item(PC), "B13")


def test_asset_resolution() -> None:
    assert asset_resolution("red", es_v1("sentinel-2-l2a").assets["red"]) == 10.0
    assert asset_resolution("B04_20m", load_item(CDSE).assets["B04_20m"]) == 20.0
    assert asset_resolution("B04", load_item(ES_V0).assets["B04"]) is None
    assert asset_resolution("x_60m", pystac.Asset(href="x.tif")) == 60.0


def test_scl_codes_name_their_classes() -> None:
    assert sorted(SCL_CLASSES) == list(range(12)) and set(SCL_CLASSES) == SCL_VALID
    assert SCL_CLASSES[SCL_NODATA] == "no_data"
    assert SCL_CLASSES[SCL_SHADOW] == "cloud_shadows"
    assert SCL_CLASSES[SCL_SNOW] == "snow"
    assert set(SCL_BAD) <= SCL_VALID
    assert not {"vegetation", "not_vegetated", "water"} & {SCL_CLASSES[c] for c in SCL_BAD}
