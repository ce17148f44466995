from __future__ import annotations

import datetime as dt

from stac2cube.provenance import (
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
        inputs=(InputRecord("B04", "red", "https://x/B04.tif", "S2B_33TWN_20230601_0_L2A"),),
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


def test_software_versions_name_gdal_and_us() -> None:
    sw = software_versions()
    assert {"stac2cube", "rasterio", "rio-cogeo", "gdal"} <= set(sw)
    assert all(v and v != "unknown" for v in sw.values())


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
