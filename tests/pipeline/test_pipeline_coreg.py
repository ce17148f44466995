"""The co-registration step inside the pipeline: the catalog's reference is built once, stored
as a collection asset with provenance, and reused by later updates."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from stac2cube import load_config, run
from stac2cube.catalog import REFERENCE_ASSET, CatalogStore
from stac2cube.check import check_catalog
from stac2cube.pipeline.summary import RunSummary
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config
from stac2cube.testing.stac_api import RustacServer

pytest.importorskip("arosics")

BANDS = ["B02", "B04", "B08", "SCL"]
STEPS = {"cloudmask": {"shadows": "scl"}, "coreg": {"mode": "global", "window_size": 128}}


def _dates(sample: Sample) -> list[dt.date]:
    return sorted(
        dt.date.fromisoformat(s.l2a_item["properties"]["datetime"][:10]) for s in sample.scenes
    )


def _store(cfg) -> CatalogStore:
    return CatalogStore(cfg.catalog_dir, cfg.output.collection_id)


@pytest.fixture(scope="module")
def first_run(sample: Sample, sample_api: RustacServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("coreg")
    dates = _dates(sample)
    path = write_config(
        tmp,
        sample,
        {"api": sample_api.url},
        bands=BANDS,
        steps=STEPS,
        time={"start": dates[0].isoformat(), "end": dates[2].isoformat()},
        run={"executor": "serial"},
    )
    cfg = load_config(path)
    summary = run(cfg)
    assert summary.written == 3, summary
    return tmp, path, cfg


def test_reference_is_stored_with_provenance(first_run) -> None:
    _, _, cfg = first_run
    store = _store(cfg)
    asset = store.reference_asset()
    assert asset is not None and "reference" in asset["roles"]
    meta = asset["stac2cube:reference"]
    assert meta["mode"] == "clearest" and meta["band"] == "B08"
    ids = set(store.item_ids())
    assert len(meta["sources"]) == 1 and meta["sources"][0] in ids
    ref = store.reference_path()
    assert ref is not None and ref.exists()
    with rasterio.open(ref) as src:
        assert src.crs is not None and src.dtypes[0] == "float32"
        assert np.isfinite(src.read(1)).mean() > 0.5
    assert check_catalog(cfg.catalog_dir).problems == ()


def test_items_record_the_coregistration(first_run) -> None:
    _, _, cfg = first_run
    ref_src = _store(cfg).reference_asset()["stac2cube:reference"]["sources"][0]
    statuses = {}
    for item in _store(cfg).iter_items():
        steps = {s["name"]: s for s in item["properties"]["stac2cube:steps"]}
        assert list(steps) == ["harmonise", "cloudmask", "coreg"]
        res = steps["coreg"]["results"]
        statuses[item["id"]] = res["status"]
        assert item["properties"]["stac2cube:coreg_status"] == res["status"]
        # the sample's dates are co-registered by construction: no correction is applied
        assert res["status"] != "ok", res
        assert res["applied_shift_px"] == [0.0, 0.0]
        if res["status"] != "failed":
            assert abs(res["shift_px"][0]) < 0.3 and abs(res["shift_px"][1]) < 0.3
        refs = [
            i for i in item["properties"]["stac2cube:inputs"] if i["band"].startswith("reference:")
        ]
        assert refs and refs[0]["asset"] == REFERENCE_ASSET
        assert ref_src in refs[0]["item"]
        if item["id"] == ref_src:  # the reference matched on itself: no shift
            assert res["status"] == "not_significant" and max(map(abs, res["shift_px"])) < 0.02
    estimated = [s for s in statuses.values() if s in ("not_significant", "no_improvement")]
    assert len(estimated) >= 2, statuses


def test_items_carry_their_geometric_accuracy(first_run) -> None:
    """CEOS-ARD 1.8 / 4.1: the accuracy fields follow each item's co-registration record."""
    _, _, cfg = first_run
    for item in _store(cfg).iter_items():
        props = item["properties"]
        res = {s["name"]: s for s in props["stac2cube:steps"]}["coreg"]["results"]
        if res["status"] == "failed":
            assert "accuracy:geometric_rmse" not in props
            assert "4.1" in props["stac2cube:ard"]["not_met"]
            continue
        pixel = props["proj:transform"][0]
        # not applied: the whole estimate is the bias left in the scene
        assert props["accuracy:geometric_x_bias"] == pytest.approx(
            res["shift_px"][0] * pixel, abs=1e-3
        )
        assert props["accuracy:geometric_y_bias"] == pytest.approx(
            res["shift_px"][1] * pixel, abs=1e-3
        )
        assert props["accuracy:geometric_x_stddev"] == pytest.approx(
            res["shift_se_px"] * pixel, abs=1e-3
        )
        assert props["stac2cube:geometric_reference"] == res["reference"]
        sub_pixel = props["accuracy:geometric_rmse"] <= 0.5 * pixel
        assert ("4.1" in props["stac2cube:ard"]["threshold"]) == sub_pixel
        assert "1.8" in props["stac2cube:ard"]["threshold"]


def test_update_reuses_the_reference(first_run, sample: Sample) -> None:
    _, path, cfg = first_run
    store = _store(cfg)
    before = dict(store.reference_asset() or {})
    mtime = store.reference_path().stat().st_mtime_ns
    text = path.read_text().replace(_dates(sample)[2].isoformat(), _dates(sample)[3].isoformat())
    path.write_text(text)
    cfg2 = load_config(path)
    summary = run(cfg2)
    assert summary.written == 1 and summary.count("skipped") == 3, summary
    after = store.reference_asset()
    assert after == before
    assert store.reference_path().stat().st_mtime_ns == mtime


def test_user_reference_in_another_crs(
    first_run, sample: Sample, sample_api: RustacServer, tmp_path: Path
) -> None:
    _, _, cfg = first_run
    src_path = _store(cfg).reference_path()
    ref = tmp_path / "reference-4326.tif"
    with rasterio.open(src_path) as src:
        transform, w, h = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": w,
                   "height": h, "driver": "GTiff"}  # fmt: skip
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        profile.pop("tiled", None)
        with rasterio.open(ref, "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.cubic)
    dates = _dates(sample)
    cfg2 = load_config(
        write_config(
            tmp_path,
            sample,
            {"api": sample_api.url},
            bands=BANDS,
            steps={
                **STEPS,
                "coreg": {**STEPS["coreg"], "reference": "file", "reference_path": str(ref)},
            },
            time={"start": dates[0].isoformat(), "end": dates[0].isoformat()},
            run={"executor": "serial"},
        )
    )
    summary = run(cfg2)
    assert summary.written == 1, summary
    meta = _store(cfg2).reference_asset()["stac2cube:reference"]
    assert meta["mode"] == "file" and meta["sources"] == [str(ref)]


def test_local_mode_writes_the_tiepoint_table(
    first_run, sample: Sample, sample_api: RustacServer, tmp_path: Path
) -> None:
    import json

    dates = _dates(sample)
    cfg = load_config(
        write_config(
            tmp_path,
            sample,
            {"api": sample_api.url},
            bands=BANDS,
            steps={**STEPS, "coreg": {"mode": "local", "grid_res": 30, "window_size": 64}},
            time={"start": dates[0].isoformat(), "end": dates[1].isoformat()},
            run={"executor": "serial"},
        )
    )
    assert run(cfg).written == 2
    with_table = 0
    for item in _store(cfg).iter_items():
        res = {s["name"]: s for s in item["properties"]["stac2cube:steps"]}["coreg"]["results"]
        if res["status"] == "failed":  # tie points are written whether applied or not
            continue
        asset = item["assets"]["coreg_tiepoints"]
        assert asset["type"] == "application/geo+json" and "metadata" in asset["roles"]
        doc = json.loads((_store(cfg).item_dir(item["id"]) / asset["href"]).read_text())
        assert doc["type"] == "FeatureCollection"
        assert len(doc["features"]) == res["tiepoints_total"]
        assert res["tiepoints_valid"] >= 10
        with_table += 1
    assert with_table >= 1
    assert check_catalog(cfg.catalog_dir).problems == ()


def test_run_summary_counts_coregistration_outcomes(
    sample: Sample, sample_api: RustacServer, tmp_path: Path
) -> None:
    """The run's summary says how many scenes were shifted and why the others were not."""
    from click.testing import CliRunner

    from stac2cube.cli.main import cli

    dates = _dates(sample)
    path = write_config(
        tmp_path,
        sample,
        {"api": sample_api.url},
        bands=BANDS,
        steps=STEPS,
        time={"start": dates[0].isoformat(), "end": dates[1].isoformat()},
        run={"executor": "serial"},
    )
    out = CliRunner().invoke(cli, ["run", str(path)])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "co-registration:" in x)
    assert "not significant" in line and " ok" not in line, line


@pytest.mark.parametrize("on_failure", ["keep", "skip"])
def test_a_scene_made_without_the_reference_is_redone_once_it_exists(
    sample: Sample, tmp_path: Path, on_failure: str
) -> None:
    """A reference that cannot be built (here: its file is not there yet) leaves the first
    scene without one (``keep``: written unshifted, ``skip``: not written); runs after that
    leave it alone. Once the catalog holds the reference (built by a later run for its new
    scene), the next run redoes that scene, and only it; then nothing again."""
    from stac2cube.pipeline.plan import REFERENCE_NOW_AVAILABLE

    dates = [d.isoformat() for d in _dates(sample)]
    scenes = sorted(sample.scenes, key=lambda s: str(s.l2a_item["properties"]["datetime"]))
    first_id, second_id = (s.l2a_item["id"] for s in scenes[:2])
    ref = tmp_path / "reference.tif"
    coreg = {**STEPS["coreg"], "reference": "file", "reference_path": str(ref)}

    def update(end: str) -> tuple[RunSummary, CatalogStore]:
        path = write_config(
            tmp_path,
            sample,
            {"path": str(sample.l2a_items_path)},
            bands=BANDS,
            steps={"coreg": {**coreg, "on_failure": on_failure}},
            time={"start": dates[0], "end": end},
            run={"executor": "serial"},
        )
        cfg = load_config(path)
        return run(cfg), _store(cfg)

    first, store = update(dates[0])
    assert first.count("written" if on_failure == "keep" else "filtered") == 1, first
    assert store.reference_versions(REFERENCE_ASSET) == []
    if on_failure == "keep":
        item = store.read_item(first_id)
        assert item is not None and item["properties"]["stac2cube:coreg_status"] == "failed"
    again, _ = update(dates[0])  # still no reference: nothing to redo, nothing loops
    assert again.written == 0 and again.count("filtered") == 0, again

    shutil.copy(scenes[0].l2a_item["assets"]["nir"]["href"], ref)  # B08 of the first date
    built, _ = update(dates[1])  # its new scene builds the reference and uses it
    assert built.written == 1 and store.reference_versions(REFERENCE_ASSET), built
    kept = store.item_path(second_id).read_bytes()

    redone, _ = update(dates[1])
    assert [o.item_id for o in redone.outcomes if o.status == "written"] == [first_id], redone
    item = store.read_item(first_id)
    assert item is not None
    assert "reference:B08" in [x["band"] for x in item["properties"]["stac2cube:inputs"]]
    assert item["properties"]["stac2cube:coreg_status"] != "failed"
    if on_failure == "keep":
        reason = item["properties"]["stac2cube:replaces"][0]["reason"]
        assert reason == REFERENCE_NOW_AVAILABLE
    assert store.item_path(second_id).read_bytes() == kept
    last, _ = update(dates[1])
    assert last.written == 0 and last.count("skipped") == 2, last
