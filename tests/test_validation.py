"""Tests for :mod:`stac2cube.validation` (offline JSON-Schema validation of STAC objects)."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema.validators
import pystac
import pytest
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.grid import GridExtension
from pystac.extensions.item_assets import ItemAssetsExtension
from pystac.extensions.mgrs import MgrsExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.sat import SatExtension
from pystac.extensions.storage import StorageExtension
from pystac.extensions.view import ViewExtension
from referencing.exceptions import Unretrievable

from stac2cube import validation
from stac2cube.errors import CatalogError, SchemaValidationError
from stac2cube.provenance import LEGACY_STAC2CUBE_SCHEMAS
from stac2cube.testing.data import require_shared_data
from stac2cube.validation import (
    PROVENANCE_SCHEMA_URL,
    SchemaProblem,
    raise_for_problems,
    schema_registry,
    shipped_schema_urls,
    validate_catalog_tree,
    validate_stac_dict,
    validate_stac_file,
)

SHIPPED = Path(str(importlib.resources.files("stac2cube") / "schemas"))
PROCESSING_V12 = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
PC_ITEM = (
    "stac/items/planetary-computer/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
)
S2 = "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json"
EXT = "https://stac-extensions.github.io"

# What the real provider files in the shared data are known to contain that does not validate
# offline (see the shared data README): extensions whose schemas we do not ship, one STAC
# pre-1.0 item, and Earth Search v1's non-standard `s2:sequence` property.
KNOWN_PROBLEMS: dict[str, Counter[str]] = {
    # the CEOS-ARD profile's example Sentinel-2 item (added to shared/ for the CEOS-ARD work)
    "stac/ceos-ard/example-optical-sr-item.json": Counter(),
    "stac/collections/planetary-computer/sentinel-2-l2a.collection.json": Counter(),
    "stac/item-collections/planetary-computer/site1-20200606-tall-strip-africa.geojson": Counter(),
    "stac/item-collections/planetary-computer/site2-2020_jun_jul-35MNM.geojson": Counter(),
    "stac/items/planetary-computer/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json": (
        Counter()
    ),
    "stac/items/planetary-computer/"
    "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json": Counter(),
    "stac/searches/planetary-computer-s2-l2a-20190101.json": Counter(),
    "stac/items/earth-search-v0/S2A_28QCH_20200714_0_L2A.json": Counter({"core 1.0.0-beta.1": 1}),
    "stac/items/cdse/"
    "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110.json": Counter(
        {
            "unshipped https://cs-si.github.io/eopf-stac-extension/v1.2.0/schema.json": 1,
            f"unshipped {EXT}/alternate-assets/v1.2.0/schema.json": 1,
            f"unshipped {EXT}/authentication/v1.1.0/schema.json": 1,
            f"unshipped {EXT}/product/v0.1.0/schema.json": 1,
            f"unshipped {EXT}/timestamps/v1.1.0/schema.json": 1,
        }
    ),
    "stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page1.json": Counter(
        {f"unshipped {EXT}/sar/v1.0.0/schema.json": 3, "s2:sequence": 4}
    ),
    "stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page2.json": Counter({"s2:sequence": 7}),
    "stac/searches/earth-search-v1-s2-l2a-landsat-20231008.json": Counter(
        {
            f"unshipped {EXT}/scientific/v1.0.0/schema.json": 1,
            f"unshipped {EXT}/landsat/v2.0.0/schema.json": 1,
        }
    ),
}


def _kind(problem: SchemaProblem) -> str:
    if "is not shipped with stac2cube" in problem.message:
        return f"unshipped {problem.schema}"
    if problem.pointer == "/stac_version" and "no core schema" in problem.message:
        return "core " + problem.schema.split("/")[3].removeprefix("v")
    if problem.schema == S2 and "'s2:sequence'" in problem.message:
        return "s2:sequence"
    return f"unexpected: {problem}"


@pytest.fixture(scope="module")
def shared() -> Path:
    return require_shared_data()


@pytest.fixture
def pc_item(shared: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shared / PC_ITEM).read_text(encoding="utf-8"))
    return data


def _pystac_item(item_id: str = "S2B_T33UWP_20250330_ARD") -> pystac.Item:
    """An item like the ones stac2cube writes, with extensions added through pystac's API."""
    item = pystac.Item(
        item_id,
        geometry={
            "type": "Polygon",
            "coordinates": [[[14.9, 49.5], [16.4, 49.5], [16.4, 50.5], [14.9, 50.5], [14.9, 49.5]]],
        },
        bbox=[14.9, 49.5, 16.4, 50.5],
        datetime=dt.datetime(2025, 3, 30, 10, 0, 51, tzinfo=dt.UTC),
        properties={},
    )
    asset = pystac.Asset("./B04.tif", media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset("red", asset)
    EOExtension.ext(item, add_if_missing=True).cloud_cover = 12.5
    EOExtension.ext(asset).bands = [Band.create(name="B04", common_name="red")]
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg = 32633
    proj.shape = [1098, 1098]
    proj.transform = [10.0, 0.0, 499980.0, 0.0, -10.0, 5600040.0]
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(nodata=0, data_type=DataType.UINT16, scale=0.0001, offset=-0.1)
    ]
    file_ext = FileExtension.ext(asset, add_if_missing=True)
    file_ext.size = 2_411_724
    file_ext.checksum = "1220" + "ab" * 32
    # pystac has no processing extension class: add it the way provenance.py will.
    item.stac_extensions.append(PROCESSING_V12)
    item.properties.update(
        {
            "processing:level": "L2A-ARD",
            "processing:lineage": "cloud mask, co-registration, super-resolution",
            "processing:software": {"stac2cube": "0.1.0"},
        }
    )
    return item


# ---------------------------------------------------------------------------------- schemas


def test_shipped_index_lists_exactly_the_shipped_files() -> None:
    index = json.loads((SHIPPED / "index.json").read_text(encoding="utf-8"))
    files = {
        p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*.json") if p.name != "index.json"
    }
    assert set(index.values()) == files
    for url, relative in index.items():
        assert url == f"https://{relative}"
    assert sorted(index) == shipped_schema_urls()


NOT_IN_SHARED = {"stac-extensions.github.io/accuracy/v1.0.0/schema.json"}
"""Bundled schemas the shared test data has no copy of: their source (repository, path,
commit) is a row of stac2cube/schemas/LICENSES.md."""


def test_shipped_schemas_are_byte_identical_to_upstream_copies(shared: Path) -> None:
    upstream = shared / "stac" / "schemas"
    index = json.loads((SHIPPED / "index.json").read_text(encoding="utf-8"))
    sources = (SHIPPED / "LICENSES.md").read_text(encoding="utf-8")
    missing = set()
    for relative in index.values():
        if not (upstream / relative).exists():
            missing.add(relative)
            assert f"| `{relative}` | stac-extensions/" in sources, relative
            continue
        assert (SHIPPED / relative).read_bytes() == (upstream / relative).read_bytes(), relative
    assert missing == NOT_IN_SHARED


@pytest.mark.parametrize("url", shipped_schema_urls())
def test_every_shipped_schema_is_a_valid_schema(url: str) -> None:
    schema = schema_registry()[url].contents
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    assert cls is jsonschema.Draft7Validator  # every STAC schema we ship declares draft-07
    cls.check_schema(schema)


@pytest.mark.parametrize(
    "url",
    [
        *(
            f"https://schemas.stacspec.org/v{v}/{kind}-spec/json-schema/{kind}.json"
            for v in ("1.0.0", "1.1.0")
            for kind in ("item", "catalog", "collection")
        ),
        f"{EXT}/eo/v1.1.0/schema.json",
        f"{EXT}/eo/v2.0.0/schema.json",
        f"{EXT}/projection/v1.1.0/schema.json",
        f"{EXT}/projection/v2.0.0/schema.json",
        f"{EXT}/raster/v1.1.0/schema.json",
        f"{EXT}/raster/v2.0.0/schema.json",
        f"{EXT}/file/v2.1.0/schema.json",
        f"{EXT}/processing/v1.1.0/schema.json",
        PROCESSING_V12,
        f"{EXT}/classification/v1.1.0/schema.json",
        f"{EXT}/classification/v2.0.0/schema.json",
        f"{EXT}/view/v1.0.0/schema.json",
        f"{EXT}/sat/v1.0.0/schema.json",
        f"{EXT}/sat/v1.1.0/schema.json",
        f"{EXT}/mgrs/v1.0.0/schema.json",
        f"{EXT}/grid/v1.1.0/schema.json",
        S2,
        f"{EXT}/item-assets/v1.0.0/schema.json",
        f"{EXT}/mlm/v1.5.2/schema.json",
    ],
)
def test_required_schemas_are_shipped(url: str) -> None:
    assert url in shipped_schema_urls()


@pytest.mark.parametrize(
    "extension",
    [
        EOExtension,
        ProjectionExtension,
        RasterExtension,
        FileExtension,
        ViewExtension,
        SatExtension,
        MgrsExtension,
        GridExtension,
        ItemAssetsExtension,
        StorageExtension,
    ],
)
def test_extension_urls_written_by_pystac_are_shipped(extension: Any) -> None:
    assert extension.get_schema_uri() in shipped_schema_urls()


def test_registry_resolves_canonical_urls_and_ids() -> None:
    registry = schema_registry()
    common = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/common.json"
    typo_id = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/commonjson"
    assert registry[common].contents is registry[typo_id].contents
    item = registry["https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"]
    resolved = registry.resolver(
        "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
    ).lookup("common.json")
    assert resolved.contents is registry[common].contents
    assert item.contents["$schema"].startswith("http://json-schema.org/draft-07/schema")
    assert schema_registry() is registry  # cached


def test_registry_never_retrieves_unknown_urls() -> None:
    with pytest.raises(Unretrievable) as info:
        schema_registry().get_or_retrieve("https://example.com/unknown/v1.0.0/schema.json")
    assert isinstance(info.value.__cause__, SchemaValidationError)
    assert "never downloaded" in str(info.value.__cause__)


def test_provenance_schema_resolves_to_the_catalog_template() -> None:
    template = importlib.resources.files("stac2cube.catalog_templates").joinpath(
        "stac2cube", "v1.0.0", "schema.json"
    )
    if not template.is_file():
        pytest.skip("catalog_templates/stac2cube/v1.0.0/schema.json not written yet")
    contents = json.loads(template.read_text(encoding="utf-8"))
    assert schema_registry()[PROVENANCE_SCHEMA_URL].contents == contents
    assert contents.get("$id", PROVENANCE_SCHEMA_URL).rstrip("#") == PROVENANCE_SCHEMA_URL
    assert validation.provenance_schema_file().read_bytes() == template.read_bytes()
    for legacy in LEGACY_STAC2CUBE_SCHEMAS:  # older catalogs declare it: they stay valid
        assert schema_registry()[legacy].contents == contents


def test_catalog_templates_register_the_provenance_schema_and_skip_templates(
    tmp_path: Path,
) -> None:
    schema_dir = tmp_path / "stac2cube" / "v1.0.0"
    schema_dir.mkdir(parents=True)
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    (schema_dir / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "item.json").write_text(json.dumps({"$id": "https://x.org/item.json"}))
    resources: dict[str, Any] = {}
    validation._add_catalog_templates(resources, tmp_path)
    assert list(resources) == [PROVENANCE_SCHEMA_URL]
    assert resources[PROVENANCE_SCHEMA_URL].contents == schema


# ---------------------------------------------------------------------------- real provider data


def test_real_provider_files_validate_except_known_problems(shared: Path) -> None:
    files = sorted(
        p.relative_to(shared).as_posix()
        for p in (shared / "stac").rglob("*")
        if p.suffix in (".json", ".geojson") and "schemas" not in p.parts
    )
    assert files == sorted(KNOWN_PROBLEMS)
    n_objects = 0
    for relative in files:
        document = json.loads((shared / relative).read_text(encoding="utf-8"))
        n_objects += len(document["features"]) if "features" in document else 1
        problems = validate_stac_file(shared / relative)
        assert Counter(_kind(p) for p in problems) == KNOWN_PROBLEMS[relative], relative
    assert n_objects >= 80


def test_s2_sequence_problem_names_the_property(shared: Path) -> None:
    page = shared / "stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page2.json"
    problems = [p for p in validate_stac_file(page) if p.schema == S2]
    assert problems
    for problem in problems:
        assert problem.path.startswith(f"{page}#/features/")
        assert problem.pointer == "/properties"


# ------------------------------------------------------------------------------ broken objects


def test_missing_geometry_is_reported_at_the_root(pc_item: dict[str, Any]) -> None:
    del pc_item["geometry"]
    problems = validate_stac_dict(pc_item)
    core = "https://schemas.stacspec.org/v1.0.0/item-spec/json-schema/item.json"
    assert [(p.schema, p.pointer, p.message) for p in problems] == [
        (core, "", "'geometry' is a required property")
    ]
    assert problems[0].path == pc_item["id"]


def test_wrong_proj_epsg_type_is_reported_at_the_field(pc_item: dict[str, Any]) -> None:
    pc_item["properties"]["proj:epsg"] = "32606"
    problems = validate_stac_dict(pc_item, where="pc.json")
    assert len(problems) == 1
    problem = problems[0]
    assert problem.path == "pc.json"
    assert problem.schema == f"{EXT}/projection/v1.0.0/schema.json"
    assert problem.pointer == "/properties/proj:epsg"
    assert "'32606' is not of type 'integer'" in problem.message


def test_bad_processing_field_is_reported_at_the_field() -> None:
    item = _pystac_item().to_dict()
    item["properties"]["processing:level"] = 2
    item["properties"]["processing:software"] = {"stac2cube": 1}
    problems = validate_stac_dict(item)
    assert {(p.schema, p.pointer) for p in problems} == {
        (PROCESSING_V12, "/properties/processing:level"),
        (PROCESSING_V12, "/properties/processing:software/stac2cube"),
    }


def test_wrong_asset_field_is_reported_inside_the_asset() -> None:
    item = _pystac_item().to_dict()
    item["assets"]["red"]["raster:bands"][0]["data_type"] = "uint12"
    problems = validate_stac_dict(item)
    assert [(p.schema, p.pointer) for p in problems] == [
        (f"{EXT}/raster/v1.1.0/schema.json", "/assets/red/raster:bands/0/data_type")
    ]


def test_unknown_extension_is_a_problem_naming_its_url(pc_item: dict[str, Any]) -> None:
    url = "https://example.com/my-extension/v1.0.0/schema.json"
    pc_item["stac_extensions"].append(url)
    problems = validate_stac_dict(pc_item)
    assert len(problems) == 1
    assert problems[0].schema == url
    assert problems[0].pointer == f"/stac_extensions/{len(pc_item['stac_extensions']) - 1}"
    assert url in problems[0].message


def test_unknown_stac_version_and_type_are_problems(pc_item: dict[str, Any]) -> None:
    pc_item["stac_version"] = "0.9.0"
    problems = validate_stac_dict(pc_item)
    assert [(p.pointer, "0.9.0" in p.message) for p in problems] == [("/stac_version", True)]
    problems = validate_stac_dict({"type": "FeatureCollection", "features": []})
    assert [p.pointer for p in problems] == ["/type"]


def test_unresolvable_ref_in_extra_schema_is_a_problem(tmp_path: Path) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://example.org/broken/v1.0.0/schema.json",
        "$ref": "https://example.org/elsewhere.json",
    }
    target = tmp_path / "example.org" / "broken" / "v1.0.0" / "schema.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(schema), encoding="utf-8")
    item = _pystac_item().to_dict()
    item["stac_extensions"].append(schema["$id"])
    problems = validate_stac_dict(item, extra_dirs=[tmp_path])
    assert [(p.schema, "elsewhere.json" in p.message) for p in problems] == [(schema["$id"], True)]


# ------------------------------------------------------------------------------ pystac output


def test_pystac_built_item_validates() -> None:
    item = _pystac_item().to_dict()
    assert item["stac_version"] == "1.1.0"
    assert set(item["stac_extensions"]) == {
        EOExtension.get_schema_uri(),
        ProjectionExtension.get_schema_uri(),
        RasterExtension.get_schema_uri(),
        FileExtension.get_schema_uri(),
        PROCESSING_V12,
    }
    assert validate_stac_dict(item) == []


def test_provenance_extension_validates_with_a_schema_dir(tmp_path: Path) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": PROVENANCE_SCHEMA_URL + "#",
        "type": "object",
        "properties": {
            "properties": {
                "type": "object",
                "required": ["stac2cube:config_hash"],
                "properties": {"stac2cube:config_hash": {"type": "string"}},
            }
        },
    }
    target = tmp_path.joinpath("stac2cube.github.io", "stac2cube", "schemas", "v1.0.0")
    target.mkdir(parents=True)
    (target / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    item = _pystac_item().to_dict()
    item["stac_extensions"].append(PROVENANCE_SCHEMA_URL)
    item["properties"]["stac2cube:config_hash"] = "sha256:abc"
    assert validate_stac_dict(item, extra_dirs=[tmp_path]) == []
    item["properties"]["stac2cube:config_hash"] = 42
    problems = validate_stac_dict(item, extra_dirs=[tmp_path])
    assert [(p.schema, p.pointer) for p in problems] == [
        (PROVENANCE_SCHEMA_URL, "/properties/stac2cube:config_hash")
    ]


def _save_catalog(root: Path) -> Path:
    catalog = pystac.Catalog("stac2cube-test", "A small static catalog")
    collection = pystac.Collection(
        "s2-ard",
        "Sentinel-2 ARD",
        extent=pystac.Extent(
            pystac.SpatialExtent([[14.9, 49.5, 16.4, 50.5]]),
            pystac.TemporalExtent([[dt.datetime(2025, 3, 30, tzinfo=dt.UTC), None]]),
        ),
        license="CC-BY-4.0",
    )
    catalog.add_child(collection)
    collection.add_item(_pystac_item("scene-a"))
    collection.add_item(_pystac_item("scene-b"))
    catalog.add_item(_pystac_item("loose-scene"))
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def test_static_catalog_written_by_pystac_validates(tmp_path: Path) -> None:
    root = _save_catalog(tmp_path)
    assert validate_catalog_tree(root) == []


def test_catalog_tree_reaches_and_reports_every_linked_object(tmp_path: Path) -> None:
    root = _save_catalog(tmp_path)
    items = sorted(tmp_path.rglob("scene-*.json")) + sorted(tmp_path.rglob("loose-*.json"))
    assert len(items) == 3
    for path in items:
        data = json.loads(path.read_text(encoding="utf-8"))
        del data["geometry"]
        path.write_text(json.dumps(data), encoding="utf-8")
    collection = tmp_path / "s2-ard" / "collection.json"
    data = json.loads(collection.read_text(encoding="utf-8"))
    data["license"] = 7
    collection.write_text(json.dumps(data), encoding="utf-8")
    problems = validate_catalog_tree(root)
    assert sorted({p.path for p in problems}) == sorted(str(p) for p in [*items, collection])


def test_catalog_tree_reports_missing_and_remote_links(tmp_path: Path) -> None:
    root = _save_catalog(tmp_path)
    data = json.loads(root.read_text(encoding="utf-8"))
    data["links"].append({"rel": "child", "href": "./gone/catalog.json"})
    data["links"].append({"rel": "item", "href": "https://example.com/item.json"})
    root.write_text(json.dumps(data), encoding="utf-8")
    problems = validate_catalog_tree(root)
    n = len(data["links"])
    assert [(p.path, p.pointer) for p in problems] == [
        (str(root), f"/links/{n - 2}/href"),
        (str(root), f"/links/{n - 1}/href"),
    ]
    assert "does not exist" in problems[0].message
    assert "not followed" in problems[1].message


def test_catalog_tree_needs_an_existing_root(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        validate_catalog_tree(tmp_path / "catalog.json")


def test_stac_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    problems = validate_stac_file(broken)
    assert [(p.path, "not valid JSON" in p.message) for p in problems] == [(str(broken), True)]
    with pytest.raises(CatalogError):
        validate_stac_file(tmp_path / "missing.json")


def test_validation_is_offline(
    monkeypatch: pytest.MonkeyPatch, pc_item: dict[str, Any], tmp_path: Path
) -> None:
    root = _save_catalog(tmp_path)

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network access during validation")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(OSError, match="network access"):
        socket.create_connection(("schemas.stacspec.org", 443))
    validation._registry_for.cache_clear()
    validation._validator.cache_clear()
    assert validate_stac_dict(pc_item) == []
    assert validate_catalog_tree(root) == []
    pc_item["stac_extensions"].append("https://stac-extensions.github.io/sar/v1.0.0/schema.json")
    assert [p.schema for p in validate_stac_dict(pc_item)] == [
        "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
    ]


# ------------------------------------------------------------------------------------ raising


def test_raise_for_problems() -> None:
    raise_for_problems([])
    problems = [SchemaProblem(f"item-{i}", "https://s", f"/p/{i}", "bad") for i in range(25)]
    with pytest.raises(SchemaValidationError) as info:
        raise_for_problems(problems)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith("25 STAC schema problem(s)")
    assert "item-19: #/p/19: bad [https://s]" in message
    assert "item-20" not in message
    assert "... and 5 more" in message
