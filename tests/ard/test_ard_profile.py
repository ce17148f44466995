"""CEOS-ARD (stac2cube/ard/): the demo's items are CEOS-ARD Optical SR items that validate
offline against the extension's schema and our provenance schema, their angles are those of the
source's granule metadata, the assessment follows the steps that ran, the geometric accuracy
follows the co-registration record, and docs/ard.md is the text the code generates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from odc.geo.geobox import GeoBox

from stac2cube import load_config, run
from stac2cube.angles import parse_granule_metadata
from stac2cube.ard import ASSESSMENT_FILE, CEOS_ARD_SCHEMA, assess_item, geometric_accuracy
from stac2cube.ard.profile import ACCURACY_SCHEMA
from stac2cube.ard.reference import ard_reference
from stac2cube.catalog import CatalogStore
from stac2cube.check import check_catalog
from stac2cube.cli.main import cli
from stac2cube.demo import DemoResult, run_demo
from stac2cube.provenance import STAC2CUBE_SCHEMA
from stac2cube.sample import Sample
from stac2cube.status import catalog_status
from stac2cube.testing.configs import write_config
from stac2cube.testing.stac_api import RustacServer
from stac2cube.validation import validate_stac_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    res = run_demo(tmp_path_factory.mktemp("ard-demo"))
    assert res.summary.written == len(res.sample.scenes) and res.summary.failed == 0
    return res


def _items(catalog: str | Path) -> list[dict[str, Any]]:
    return list(CatalogStore.open(catalog).iter_items())


def test_every_demo_item_is_a_ceos_ard_item(demo: DemoResult) -> None:
    items = _items(demo.summary.catalog)
    assert len(items) == len(demo.sample.scenes)
    for item in items:
        assert CEOS_ARD_SCHEMA in item["stac_extensions"]
        assert STAC2CUBE_SCHEMA in item["stac_extensions"]
        assert validate_stac_dict(item) == [], item["id"]
        props = item["properties"]
        assert (props["ceosard:type"], props["ceosard:specification"]) == ("optical", "SR")
        rels = {link["rel"] for link in item["links"]}
        assert {"ceos-ard-specification", "ceos-ard-assessment", "derived_from"} <= rels
        roles = set().union(*(set(a["roles"]) for a in item["assets"].values()))
        assert {"cloud", "cloud-shadow", "saturation", "incomplete-testing"} <= roles
        assert {"snow-ice", "land-water", "sun-elevation", "incidence-angle"} <= roles
        assert props["stac2cube:ard"]["not_met"] == ["1.8", "4.1"]  # no co-registration
        # a broken profile fails the extension's schema: the check can fail
        broken = json.loads(json.dumps(item))
        del broken["properties"]["ceosard:specification"]
        assert any(p.schema == CEOS_ARD_SCHEMA for p in validate_stac_dict(broken))
    report = check_catalog(demo.summary.catalog)
    assert report.problems == () and report.warnings == ()
    coll = CatalogStore.open(demo.summary.catalog).read_collection()
    assert CEOS_ARD_SCHEMA in coll["stac_extensions"]
    assert any(link["rel"] == "ceos-ard-assessment" for link in coll["links"])


def test_angles_come_from_the_granule_metadata(demo: DemoResult) -> None:
    by_id = {sc.l2a_item["id"]: sc for sc in demo.sample.scenes}
    for item in _items(demo.summary.catalog):
        source = by_id[item["id"]].l2a_item
        for key in ("view:sun_elevation", "view:sun_azimuth", "view:incidence_angle"):
            assert item["properties"][key] == pytest.approx(source["properties"][key], abs=1e-5)
        href = source["assets"]["granule_metadata"]["href"]
        grids, _ = parse_granule_metadata(Path(href).read_bytes(), href)
        path = (
            Path(CatalogStore.open(demo.summary.catalog).item_dir(item["id"])) / "SUN_ELEVATION.tif"
        )
        with rasterio.open(path) as src:
            elev = src.read(1).astype(float) * 0.01
            gbox = GeoBox(src.shape, src.transform, src.crs)
        known = 90.0 - grids.on(gbox)[0]
        np.testing.assert_allclose(elev, known, atol=0.006)
        assert float(np.ptp(known)) > 0.001  # the field varies: the test can fail


def test_status_counts_items_at_threshold_and_goal(demo: DemoResult) -> None:
    st = catalog_status(demo.summary.catalog)
    n = len(demo.sample.scenes)
    assert st.ard.items == n
    assert st.ard.threshold["2.5"] == n and st.ard.goal["2.4"] == n
    assert st.ard.threshold["4.1"] == 0 and st.ard.goal["3.3"] == 0
    out = CliRunner().invoke(cli, ["status", str(demo.summary.catalog)])
    assert out.exit_code == 0, out.output
    assert "CEOS-ARD SR 5.0.1" in out.output
    assert any(
        line.split()[:1] == ["2.5"] and line.split()[-2:] == [str(n), str(n)]
        for line in out.output.splitlines()
    )
    doc = json.loads(
        (Path(demo.summary.catalog) / "sentinel-2-l2a-ard" / ASSESSMENT_FILE).read_text()
    )
    rows = {r["id"]: r for r in doc["requirements"]}
    assert doc["items"] == n and rows["2.5"]["items_at_threshold"] == n
    assert rows["4.1"]["items_at_threshold"] == 0 and rows["4.1"]["why_not"]


def _one_date_run(sample: Sample, api: RustacServer, tmp: Path, steps: dict[str, Any]) -> dict:
    day = sample.scenes[0].l2a_item["properties"]["datetime"][:10]
    tmp.mkdir()
    path = write_config(
        tmp,
        sample,
        {"api": api.url},
        steps=steps,
        time={"start": day, "end": day},
        run={"executor": "serial"},
    )
    summary = run(load_config(path))
    assert summary.written == 1, summary
    (item,) = _items(summary.catalog)
    assert validate_stac_dict(item) == []
    return item


def test_the_assessment_follows_the_steps_that_ran(
    sample: Sample, sample_api: RustacServer, tmp_path: Path
) -> None:
    both = _one_date_run(sample, sample_api, tmp_path / "a", {"quality": {}})
    no_cloud = _one_date_run(sample, sample_api, tmp_path / "b", {"cloudmask": None, "quality": {}})
    no_quality = _one_date_run(sample, sample_api, tmp_path / "c", {})
    ard = [i["properties"]["stac2cube:ard"] for i in (both, no_cloud, no_quality)]
    assert "2.5" in ard[0]["threshold"] and "2.6" in ard[0]["threshold"]
    assert {"2.5", "2.6"} <= set(ard[1]["not_met"])  # no cloud step: not met
    assert "cloud step" in ard[1]["why"]["2.5"]
    assert "2.3" in ard[1]["threshold"]  # every pixel flagged as incompletely tested
    assert {"2.3", "2.4", "2.5"} <= set(ard[2]["not_met"])  # no quality step: no masks
    assert "steps.quality" in ard[2]["why"]["2.4"]
    # the same verdict from the item as written
    assert assess_item(no_cloud).summary() == ard[1]


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        # global shift applied: nothing left, the estimate's standard error
        (
            {
                "status": "ok",
                "shift_px": [0.8, -0.4],
                "applied_shift_px": [0.8, -0.4],
                "shift_se_px": 0.05,
            },
            (0.0, 0.0, 0.5, 0.5, 0.707),
        ),
        # not significant: the whole estimate stays in the scene
        (
            {
                "status": "not_significant",
                "shift_px": [0.1, 0.2],
                "applied_shift_px": [0, 0],
                "shift_se_px": 0.1,
            },
            (1.0, 2.0, 1.0, 1.0, 2.646),
        ),
        # local tie points: their spread per axis
        (
            {
                "status": "ok",
                "shift_px": [0.3, 0.0],
                "applied_shift_px": [0.3, 0.0],
                "shift_std_px": [0.2, 0.1],
            },
            (0.0, 0.0, 2.0, 1.0, 2.236),
        ),
    ],
)
def test_geometric_accuracy_from_the_coregistration_record(
    results: dict[str, Any], expected: tuple[float, ...]
) -> None:
    got = geometric_accuracy(results, 10.0)
    keys = ("x_bias", "y_bias", "x_stddev", "y_stddev", "rmse")
    assert [got[f"accuracy:geometric_{k}"] for k in keys] == pytest.approx(expected, abs=1e-3)


def test_no_accuracy_without_a_trustworthy_match() -> None:
    assert geometric_accuracy({"status": "failed", "reason": "x"}, 10.0) == {}
    assert geometric_accuracy(None, 10.0) == {}


def test_accuracy_fields_validate_against_the_bundled_schema(demo: DemoResult) -> None:
    item = json.loads(json.dumps(_items(demo.summary.catalog)[0]))
    item["stac_extensions"].append(ACCURACY_SCHEMA)
    item["properties"].update(
        geometric_accuracy(
            {
                "status": "ok",
                "shift_px": [0.1, 0.1],
                "applied_shift_px": [0, 0],
                "shift_se_px": 0.1,
            },
            10.0,
        )
    )
    assert validate_stac_dict(item) == []
    item["properties"]["accuracy:geometric_rmse"] = "3.2 m"
    problems = validate_stac_dict(item)
    assert [p.schema for p in problems] == [ACCURACY_SCHEMA]


def test_docs_ard_is_generated_from_the_code() -> None:
    text = (ROOT / "docs" / "ard.md").read_text()
    assert text == ard_reference(), (
        'docs/ard.md is stale: regenerate it with `python -c "from stac2cube.ard.reference '
        "import ard_reference; print(ard_reference(), end='')\" > docs/ard.md`"
    )
    assert "| 2.3 | Incomplete testing |" in text and "| 6 | `incomplete_testing` |" in text


def test_dates_are_utc(demo: DemoResult) -> None:
    for item in _items(demo.summary.catalog):
        when = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
        assert when.utcoffset() == dt.timedelta(0)
