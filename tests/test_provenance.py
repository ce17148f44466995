from __future__ import annotations

import datetime as dt
import importlib.metadata

import pytest

from stac2cube.provenance import (
    LEGACY_STAC2CUBE_SCHEMAS,
    SOFTWARE,
    STAC2CUBE_SCHEMA,
    InputRecord,
    Provenance,
    SourceRecord,
    StepRecord,
    jsonable,
    software_versions,
)
from stac2cube.validation import validate_stac_dict


def _prov() -> Provenance:
    return Provenance(
        source=SourceRecord(
            "S2B_33TWN_20230601_0_L2A",
            "https://x/items/S2B.json",
            "sentinel-2-l2a",
            "05.09",
            "2023-06-02T00:00:00Z",
        ),
        inputs=(
            InputRecord("B04", "red", "./B04.tif", "S2B_33TWN_20230601_0_L2A"),
            InputRecord("toa:B10", "cirrus", "B10.tif", "S2B_L1C", "https://x/items/S2B_L1C.json"),
            InputRecord("reference:B08", "coreg-reference", "../_coreg-reference/r.tif", "S2B"),
        ),
        steps=(
            StepRecord(
                "harmonise",
                "0.1.0",
                {"grid": {"crs": "EPSG:32633"}},
                {"bands": {"B04": {"offset": -0.1}}},
            ),
        ),
        config_hash="sha256:" + "0" * 64,
        software=software_versions(),
        started=dt.datetime(2024, 1, 1, 10, 0, tzinfo=dt.UTC),
        finished=dt.datetime(2024, 1, 1, 10, 1, tzinfo=dt.UTC),
    )


def test_round_trip() -> None:
    p = _prov()
    assert Provenance.from_properties(p.to_properties()) == p


def test_software_versions_name_every_library_that_shapes_the_pixels() -> None:
    sw = software_versions()
    # the test environment installs every extra: all of them are there
    assert set(sw) == {key for key, _ in SOFTWARE} | {"gdal"}
    assert {"gdal", "rasterio", "numpy", "scipy", "odc-geo", "arosics", "s2cloudless"} <= set(sw)
    assert {"lightgbm", "torch", "sen2sr", "stac2cube", "rio-cogeo"} <= set(sw)
    assert all(isinstance(v, str) and v for v in sw.values())


def test_a_library_that_is_not_installed_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(dist: str) -> str:
        if dist in ("torch", "sen2sr"):
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    sw = software_versions()
    assert "torch" not in sw and "sen2sr" not in sw and "arosics" in sw


def test_inputs_keep_relative_hrefs_and_the_item_they_came_from() -> None:
    props = _prov().to_properties()
    own, twin, ref = props["stac2cube:inputs"]
    assert "item_href" not in own and "item_href" not in ref  # the source item; this item
    assert twin["item_href"] == "https://x/items/S2B_L1C.json"


def _item(props: dict) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "x",
        "stac_extensions": list(Provenance.schema_uris()),
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "bbox": [0, 0, 0, 0],
        "properties": {"datetime": "2023-06-01T10:00:00Z", **props},
        "assets": {},
        "links": [],
    }


def test_provenance_validates_against_our_schema_and_processing() -> None:
    assert validate_stac_dict(_item(_prov().to_properties())) == []


def test_items_declaring_the_earlier_schema_uri_stay_valid() -> None:
    """Catalogs written before the schema got its resolvable URI declare the earlier one:
    ``stac2cube validate`` accepts them, with the same schema."""
    assert STAC2CUBE_SCHEMA in Provenance.schema_uris()
    for legacy in LEGACY_STAC2CUBE_SCHEMAS:
        item = _item(_prov().to_properties())
        item["stac_extensions"] = [
            legacy if uri == STAC2CUBE_SCHEMA else uri for uri in item["stac_extensions"]
        ]
        assert validate_stac_dict(item) == []
        item["properties"]["stac2cube:config_hash"] = "md5:abc"
        assert [p.schema for p in validate_stac_dict(item)] == [legacy]


def test_schema_catches_broken_provenance() -> None:
    props = _prov().to_properties()
    props["stac2cube:config_hash"] = "md5:abc"
    props["stac2cube:unknown_field"] = 1
    del props["stac2cube:source"]["id"]
    problems = validate_stac_dict(_item(props))
    text = " ".join(p.message + p.pointer for p in problems)
    assert "config_hash" in text or "md5:abc" in text
    assert "unknown_field" in text
    assert "'id' is a required property" in text


def test_jsonable_gives_what_json_gives_back() -> None:
    assert jsonable((1, [2.5, ("a", (None, True))])) == [1, [2.5, ["a", [None, True]]]]
    assert jsonable("abc") == "abc" and jsonable(None) is None
