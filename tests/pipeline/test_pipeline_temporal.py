"""The multi-temporal cloud test in the pipeline: clear-sky reference versions refreshed as the
archive grows (old versions and items untouched), a failed refresh recorded, and the test run on
co-registered pixels."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import rasterio
from rasterio.transform import Affine

from stac2cube import load_config, run
from stac2cube.catalog import CLOUD_REFERENCE_ASSET, CatalogStore
from stac2cube.check import check_catalog
from stac2cube.config import Config
from stac2cube.sample import Sample
from stac2cube.steps.cloudmask import MASK_CLOUD, MASK_NODATA
from stac2cube.testing.configs import write_config

BANDS = ["B02", "B04", "B08", "SCL"]
# SCL clouds keep the runs fast (no L1C twin, no s2cloudless); refreshing beyond 6 days fits
# the sample's dates, 5 days apart
TEMPORAL = {"method": "scl", "shadows": "scl", "temporal_threshold": 0.03}


def _dates(sample: Sample) -> list[str]:
    return sorted(s.l2a_item["properties"]["datetime"][:10] for s in sample.scenes)


def _ids(sample: Sample) -> list[str]:
    return [s.l2a_item["id"] for s in sorted(sample.scenes, key=_when)]


def _when(s: Any) -> str:
    return str(s.l2a_item["properties"]["datetime"])


def _store(cfg: Config) -> CatalogStore:
    return CatalogStore(cfg.catalog_dir, cfg.output.collection_id)


def _config(
    tmp: Path, sample: Sample, source: Path, start: str, end: str, steps: dict[str, Any]
) -> Path:
    return write_config(
        tmp,
        sample,
        {"path": str(source)},
        bands=BANDS,
        steps=steps,
        time={"start": start, "end": end},
        run={"executor": "serial"},
    )


def _update(path: Path, start: str, end: str) -> Config:
    """The config at ``path`` with another time range (an update of the same catalog)."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    doc["time"] = {"start": start, "end": end}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temporal(store: CatalogStore, item_id: str) -> dict[str, Any]:
    item = store.read_item(item_id)
    assert item is not None
    steps = {s["name"]: s for s in item["properties"]["stac2cube:steps"]}
    out: dict[str, Any] = steps["cloudmask"]["results"]["temporal"]
    return out


# ------------------------------------------------------------------ refresh


def test_a_scene_far_from_the_reference_gets_a_new_version(sample: Sample, tmp_path: Path) -> None:
    """A first run (dates 0 and 1) builds version 1; an update 10-15 days later, with
    ``temporal_refresh_days: 6``, builds version 2 beside it from its own scenes; its scenes use
    version 2 and say so; version 1 (as a catalog written before versions has it) and the items
    written before are left byte for byte; the catalog validates and has no orphan."""
    dates, ids = _dates(sample), _ids(sample)
    steps = {"cloudmask": {**TEMPORAL, "temporal_refresh_days": 6}}
    path = _config(tmp_path, sample, sample.l2a_items_path, dates[0], dates[1], steps)
    cfg = load_config(path)
    assert run(cfg).written == 2
    store = _store(cfg)
    [(n1, key1, v1)] = store.reference_versions(CLOUD_REFERENCE_ASSET)
    assert (n1, key1) == (1, CLOUD_REFERENCE_ASSET) and "version" not in v1["stac2cube:reference"]
    assert v1["stac2cube:reference"]["datetime"][:10] == dates[0]  # median of 2: the earlier
    v1_file = store.reference_path(CLOUD_REFERENCE_ASSET)
    assert v1_file is not None
    v1_sha = _sha(v1_file)
    before = {i: _sha(store.item_path(i)) for i in ids[:2]}
    for i in ids[:2]:
        rec = _temporal(store, i)
        assert rec["status"] == "applied" and rec["reference_version"] == CLOUD_REFERENCE_ASSET

    summary = run(_update(path, dates[0], dates[3]))
    assert summary.written == 2 and summary.count("skipped") == 2, summary
    versions = store.reference_versions(CLOUD_REFERENCE_ASSET)
    assert [(n, k) for n, k, _ in versions] == [(1, key1), (2, "cloud-reference-v2")]
    assert versions[0][2] == v1 and _sha(v1_file) == v1_sha  # version 1 untouched
    assert {i: _sha(store.item_path(i)) for i in ids[:2]} == before  # items not rewritten
    v2 = versions[1][2]
    meta = v2["stac2cube:reference"]
    assert meta["version"] == 2 and set(meta["sources"]) <= set(ids[2:])
    assert (
        meta["datetime"][:10] == dates[2]
        and meta["parameters"] == (v1["stac2cube:reference"]["parameters"])
    )
    assert v2["href"].startswith("./_cloud-reference/") and v2["href"] != v1["href"]
    v2_file = store.root / store.collection_id / v2["href"]
    for i, gap in zip(ids[2:], (0.0, 5.0), strict=True):
        rec = _temporal(store, i)
        assert rec["status"] == "applied" and rec["reference_version"] == "cloud-reference-v2"
        assert rec["gap_days"] == pytest.approx(gap, abs=0.01)
        href, _, _ = rec["reference"].partition("#")  # relative to the item
        assert (store.item_dir(i) / href).resolve() == v2_file.resolve()
        item = store.read_item(i)
        assert item is not None
        used = [x for x in item["properties"]["stac2cube:inputs"] if x["band"].startswith("clear")]
        assert [x["asset"] for x in used] == ["cloud-reference-v2"]
    report = check_catalog(cfg.catalog_dir)
    assert report.problems == () and report.warnings == ()  # the new file is no orphan
    stray = v2_file.with_name("reference-B02-stray.tif")
    shutil.copy(v2_file, stray)
    assert stray in store.orphans() and v1_file not in store.orphans()

    # once every scene is near a version, nothing is built and nothing is touched
    v2_sha = _sha(v2_file)
    again = run(_update(path, dates[0], dates[3]))
    assert again.written == 0 and len(store.reference_versions(CLOUD_REFERENCE_ASSET)) == 2
    assert _sha(v2_file) == v2_sha and _sha(v1_file) == v1_sha


def test_a_failed_refresh_is_recorded_and_its_scenes_skip_the_test(
    sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the new version cannot be built (here: no readable candidate), the failure log
    says so (stage ``cloud-reference``), the scenes are written without the test and their
    provenance says why; the old version stays; the next run tries again."""
    from stac2cube.references import build

    dates, ids = _dates(sample), _ids(sample)
    steps = {"cloudmask": {**TEMPORAL, "temporal_refresh_days": 6}}
    path = _config(tmp_path, sample, sample.l2a_items_path, dates[0], dates[1], steps)
    cfg = load_config(path)
    assert run(cfg).written == 2
    store = _store(cfg)
    v1 = store.reference_versions(CLOUD_REFERENCE_ASSET)

    def no_candidates(*args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any], list[Any]]:
        return [], {}, []

    monkeypatch.setattr(build, "reference_candidates", no_candidates)
    summary = run(_update(path, dates[0], dates[3]))
    assert summary.written == 2, summary
    assert store.reference_versions(CLOUD_REFERENCE_ASSET) == v1
    [failure] = [f for f in store.failures() if f.stage == "cloud-reference"]
    assert failure.item_id == "<cloud-reference>" and "version 2" in failure.message
    assert failure.error == "NoOverlapError"
    for i, gap in zip(ids[2:], (10, 15), strict=True):
        rec = _temporal(store, i)
        assert rec["status"].startswith(f"skipped: the nearest clear-sky reference is {gap} days")
        assert rec["reference_version"] == CLOUD_REFERENCE_ASSET
        assert "temporal_refresh_days" in rec["status"]
    assert check_catalog(cfg.catalog_dir).problems == ()


def test_without_any_reference_the_test_is_skipped_and_recorded(
    sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stac2cube.references import build

    dates, ids = _dates(sample), _ids(sample)
    path = _config(
        tmp_path, sample, sample.l2a_items_path, dates[0], dates[0], {"cloudmask": TEMPORAL}
    )
    monkeypatch.setattr(build, "reference_candidates", lambda *a, **k: ([], {}, []))
    cfg = load_config(path)
    assert run(cfg).written == 1
    store = _store(cfg)
    assert store.reference_versions(CLOUD_REFERENCE_ASSET) == []
    assert [f.stage for f in store.failures()] == ["cloud-reference"]
    rec = _temporal(store, ids[0])
    assert rec == {"status": "skipped: the catalog has no clear-sky reference"}


def test_a_scene_masked_without_the_reference_is_redone_once_it_exists(
    sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first scene is masked without the test (no reference could be built); an update
    with a new scene builds the reference; the run after that redoes the first scene, and only
    it, which then applies the test; then nothing is redone."""
    from stac2cube.pipeline.plan import REFERENCE_NOW_AVAILABLE
    from stac2cube.references import build

    dates, ids = _dates(sample), _ids(sample)
    path = _config(
        tmp_path, sample, sample.l2a_items_path, dates[0], dates[0], {"cloudmask": TEMPORAL}
    )
    with monkeypatch.context() as m:
        m.setattr(build, "reference_candidates", lambda *a, **k: ([], {}, []))
        assert run(load_config(path)).written == 1
    store = _store(load_config(path))
    assert _temporal(store, ids[0])["status"].startswith("skipped: the catalog has no")
    assert run(load_config(path)).written == 0  # no reference: nothing to redo

    built = run(_update(path, dates[0], dates[1]))
    assert built.written == 1 and store.reference_versions(CLOUD_REFERENCE_ASSET), built
    kept = _sha(store.item_path(ids[1]))
    redone = run(_update(path, dates[0], dates[1]))
    assert [o.item_id for o in redone.outcomes if o.status == "written"] == [ids[0]], redone
    assert _temporal(store, ids[0])["status"] == "applied"
    item = store.read_item(ids[0])
    assert item is not None
    assert item["properties"]["stac2cube:replaces"][0]["reason"] == REFERENCE_NOW_AVAILABLE
    assert _sha(store.item_path(ids[1])) == kept
    assert run(_update(path, dates[0], dates[1])).written == 0


# ------------------------------------------------------------------ on co-registered pixels

SHIFT_M = 20.0
"""How far (metres, east) the misregistered scene's pixels are put: 2 pixels at 10 m."""


def _misregistered_copy(sample: Sample, index: int, tmp: Path) -> Path:
    """An item collection of the sample in which scene ``index`` is misregistered: its COGs
    copied with their geotransforms moved ``SHIFT_M`` east, so its content appears 2 px east
    of where the other dates have it. Returns the item collection's path."""
    doc = json.loads(sample.l2a_items_path.read_text())
    target = sample.scenes[index].l2a_item["id"]
    for feat in doc["features"]:
        if feat["id"] != target:
            continue
        for asset in feat["assets"].values():
            src = Path(asset["href"])
            if src.suffix != ".tif":
                continue
            dst = tmp / "shifted" / target / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            with rasterio.open(dst, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
                ds.transform = Affine.translation(SHIFT_M, 0.0) * ds.transform
            asset["href"] = str(dst)
    out = tmp / "items.json"
    out.write_text(json.dumps(doc))
    return out


def _flagged(cfg: Config, item_id: str) -> tuple[float, dict[str, Any]]:
    """Cloud fraction of the item's ``CLOUD_MASK`` over valid pixels, and the temporal record."""
    store = _store(cfg)
    with rasterio.open(store.item_dir(item_id) / "CLOUD_MASK.tif") as src:
        mask = src.read(1)
    valid = mask != MASK_NODATA
    return float((mask[valid] == MASK_CLOUD).mean()), _temporal(store, item_id)


@pytest.mark.slow
def test_temporal_test_compares_coregistered_pixels(sample: Sample, tmp_path: Path) -> None:
    """The clear date, misregistered by 2 px, added to a catalog of the other three dates: with
    the test run before co-registration (cloud step alone) its field edges are called cloud; with
    co-registration it runs on the corrected pixels (recorded) and flags what it flags on the
    same date when it is not misregistered at all."""
    pytest.importorskip("arosics")
    dates, ids = _dates(sample), _ids(sample)
    clear = next(i for i, s in enumerate(sample.scenes) if s.cloud_fraction == 0.0)
    clear_id = sample.scenes[clear].l2a_item["id"]
    assert clear_id == ids[3]  # the last date: the update
    shifted = _misregistered_copy(sample, clear, tmp_path)
    results = {}
    for name, steps in {
        "registered": {"cloudmask": TEMPORAL},
        "before": {"cloudmask": TEMPORAL},
        "coreg": {"cloudmask": TEMPORAL, "coreg": {"mode": "global", "window_size": 128}},
    }.items():
        (tmp_path / name).mkdir()
        items = sample.l2a_items_path if name == "registered" else shifted
        path = _config(tmp_path / name, sample, items, dates[0], dates[2], steps)
        assert run(load_config(path)).written == 3
        cfg = _update(path, dates[0], dates[3])
        assert run(cfg).written == 1
        results[name] = _flagged(cfg, clear_id)
        item = _store(cfg).read_item(clear_id)
        assert item is not None
        # the item's cloud cover is that of its final mask
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(
            100 * results[name][0], abs=1e-3
        )
        if name == "coreg":
            coreg = next(s for s in item["properties"]["stac2cube:steps"] if s["name"] == "coreg")
            assert coreg["results"]["status"] == "ok"
            dx, dy = coreg["results"]["shift_px"]
            assert abs(dx - SHIFT_M / 10.0) < 0.3 and abs(dy) < 0.3
    # the date has no cloud at all: every pixel the test adds is a false alarm
    base = results["registered"][0]
    before, rec_before = results["before"]
    after, rec_after = results["coreg"]
    assert rec_before["status"] == "applied" and "on_coregistered_pixels" not in rec_before
    assert rec_after["status"] == "applied" and rec_after["on_coregistered_pixels"] is True
    added = {k: r[1]["added_fraction"] for k, r in results.items()}
    # misregistered field edges: the test before co-registration flags them (measured: 3.7 %
    # of the clear pixels against 1.4 % on the registered date); on co-registered pixels it
    # flags what it flags on the registered date
    assert added["before"] > 2 * added["registered"] + 0.01, added
    assert abs(added["coreg"] - added["registered"]) < 0.003, added
    assert after < before - 0.01 and abs(after - base) < 0.005, (base, before, after)
