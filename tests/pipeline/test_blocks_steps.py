"""Scenes with steps streamed block by block (stac2cube/pipeline/blocksteps.py): the pixels of the
scene processed whole where the steps are local, valid COGs and a sound catalog, the provenance
says so, a scene that fits in one block is held whole, and a killed run is completed by the
next."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from stac2cube import load_config, open_cube, run
from stac2cube.catalog import REFERENCE_ASSET, CatalogStore
from stac2cube.check import check_catalog
from stac2cube.config import Config
from stac2cube.grid import load_aoi, target_geobox
from stac2cube.pipeline import active_steps, find_l1c_twins
from stac2cube.pipeline.candidates import candidates_in_blocks, reference_reader
from stac2cube.sample import Sample
from stac2cube.search import search
from stac2cube.testing.configs import write_config

BANDS = ["B02", "B03", "B04", "B08", "B8A", "B11", "SCL"]
STEPS: dict[str, Any] = {
    "cloudmask": {"shadows": "scl", "thresholds": [0.2]},
    "coreg": {"mode": "global", "window_size": 128},
    "nbar": {},  # per-pixel angles from the sample's MTD_TL.xml, per block
    "quality": {"angles": True},
}


def _config(directory: Path, sample: Sample, *, block_size: int, **kw: Any) -> Path:
    """Cloud mask + global co-registration over the sample, COG tiles of 64 px, scenes in
    blocks of ``block_size`` px (0: whole), in this process."""
    return write_config(
        directory,
        sample,
        {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)},
        bands=kw.pop("bands", BANDS),
        steps=kw.pop("steps", STEPS),
        run={"executor": "serial", "block_size": block_size},
        output={"blocksize": 64},
        **kw,
    )


def _build(directory: Path, sample: Sample, **kw: Any) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config(_config(directory, sample, **kw))
    summary = run(cfg)
    assert summary.failed == 0, [o.message for o in summary.outcomes]
    return cfg


@pytest.fixture(scope="module")
def whole_and_blocks(sample: Sample, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("blocksteps")
    return (
        _build(tmp / "whole", sample, block_size=0),
        _build(tmp / "blocks", sample, block_size=64),
    )


def _store(cfg: Config) -> CatalogStore:
    return CatalogStore(cfg.catalog_dir, cfg.output.collection_id)


def _items(cfg: Config) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in _store(cfg).iter_items()}


def _pixels(store: CatalogStore, item_id: str, key: str) -> np.ndarray:
    with rasterio.open(store.item_dir(item_id) / f"{key}.tif") as src:
        return src.read(1)


def _step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    steps = doc["properties"]["stac2cube:steps"]
    return next(s for s in steps if s["name"] == name)


def test_scenes_larger_than_a_block_are_streamed_and_say_so(whole_and_blocks) -> None:
    whole, blocks = whole_and_blocks
    for doc in _items(blocks).values():
        params = _step(doc, "harmonise")["parameters"]
        assert params["blocks"]["size"] == 64 and params["blocks"]["halo"] > 0
    for doc in _items(whole).values():
        assert "blocks" not in _step(doc, "harmonise")["parameters"]


def test_blocks_give_the_pixels_and_decisions_of_the_scene_processed_whole(
    whole_and_blocks,
) -> None:
    """The cloud step is local but for its 60 m probability, computed scene-wide in both paths:
    every layer bit-identical. The sample is not misregistered: neither path moves it."""
    whole, blocks = whole_and_blocks
    a, b = _items(whole), _items(blocks)
    assert sorted(a) == sorted(b) and len(a) >= 3
    for item_id, doc in a.items():
        other = b[item_id]
        assert sorted(doc["assets"]) == sorted(other["assets"])
        assert {"CLOUD_MASK", "CLOUD_PROB", "CLOUD_T020"} <= set(doc["assets"])
        for key, asset in doc["assets"].items():
            if not asset["href"].endswith(".tif"):
                continue
            np.testing.assert_array_equal(
                _pixels(_store(whole), item_id, key),
                _pixels(_store(blocks), item_id, key),
                err_msg=f"{item_id} {key}",
            )
        cloud_a, cloud_b = _step(doc, "cloudmask")["results"], _step(other, "cloudmask")["results"]
        for key in ("cloud_fraction", "shadow_fraction", "clear_fraction", "valid_fraction"):
            assert cloud_a[key] == pytest.approx(cloud_b[key], abs=1e-12), key
        assert doc["properties"]["eo:cloud_cover"] == other["properties"]["eo:cloud_cover"]
        coreg_a, coreg_b = _step(doc, "coreg")["results"], _step(other, "coreg")["results"]
        assert coreg_a["applied_shift_px"] == coreg_b["applied_shift_px"] == [0.0, 0.0]
        assert coreg_a["status"] == coreg_b["status"]
        assert doc["properties"]["stac2cube:coreg_status"] == coreg_a["status"]
        assert {"QA", "SATURATION", "INCOMPLETE_TESTING", "SUN_ELEVATION"} <= set(doc["assets"])
        assert _step(doc, "quality")["results"] == _step(other, "quality")["results"]
        nbar_a, nbar_b = _step(doc, "nbar")["results"], _step(other, "nbar")["results"]
        assert nbar_a["applied"] is True and nbar_a == nbar_b
        # the same verdicts (the reasons quote the shift estimate, which may differ slightly)
        ard_a, ard_b = doc["properties"]["stac2cube:ard"], other["properties"]["stac2cube:ard"]
        for key in ("threshold", "goal", "not_met"):
            assert ard_a[key] == ard_b[key], key
        assert "3.3" in doc["properties"]["stac2cube:ard"]["goal"]  # BRDF-normalised


def test_blocks_write_valid_cogs_and_a_sound_catalog(whole_and_blocks) -> None:
    _, blocks = whole_and_blocks
    store = _store(blocks)
    for item_id in store.item_ids():
        for tif in store.item_dir(item_id).glob("*.tif"):
            valid, errors, _ = cog_validate(str(tif))
            assert valid, (tif, errors)
    report = check_catalog(blocks.catalog_dir)
    assert report.problems == () and report.warnings == ()
    assert open_cube(blocks.catalog_dir).sizes["time"] == len(store.item_ids())


def test_a_scene_that_fits_in_one_block_is_held_whole(sample: Sample, tmp_path: Path) -> None:
    cfg = _build(tmp_path, sample, block_size=1024)
    for doc in _items(cfg).values():
        assert "blocks" not in _step(doc, "harmonise")["parameters"]


def test_geometric_shadows_in_blocks_follow_the_whole_scene(sample: Sample, tmp_path: Path) -> None:
    """The default shadows (SCL and geometric): the geometric search runs on the probability's
    grid in blocks; clouds stay identical, shadows mostly where the whole scene puts them."""
    steps = {"cloudmask": {}}
    whole = _build(tmp_path / "whole", sample, block_size=0, steps=steps)
    blocks = _build(tmp_path / "blocks", sample, block_size=64, steps=steps)
    shadows = 0
    for item_id in _store(whole).item_ids():
        ma = _pixels(_store(whole), item_id, "CLOUD_MASK")
        mb = _pixels(_store(blocks), item_id, "CLOUD_MASK")
        cloud = 2
        np.testing.assert_array_equal(ma == cloud, mb == cloud)
        shadow = 3
        sa, sb = ma == shadow, mb == shadow
        if sa.sum() >= 50:  # the whole scene's shadows are found, a 60 m cell coarser
            assert (sa & sb).sum() / sa.sum() >= 0.85, item_id
        if sa.sum() >= 1000:  # large shadows: mostly the same pixels
            assert (sa & sb).sum() / (sa | sb).sum() >= 0.7, item_id
        shadows += int(sa.sum() >= 1000)
    assert shadows >= 2


def test_local_coreg_in_blocks_decides_as_the_whole_scene(sample: Sample, tmp_path: Path) -> None:
    """The local mode through the pipeline's source: tie points matched on tiles read from the
    items, judged as the whole scene's; the tie points are published as the whole scene's."""
    steps = {"coreg": {"mode": "local", "window_size": 64, "grid_res": 32}}
    bands = ["B02", "B04", "B08", "SCL"]
    whole = _build(tmp_path / "whole", sample, block_size=0, steps=steps, bands=bands)
    blocks = _build(tmp_path / "blocks", sample, block_size=64, steps=steps, bands=bands)
    a, b = _items(whole), _items(blocks)
    assert sorted(a) == sorted(b) and len(a) >= 3
    for item_id, doc in a.items():
        other = b[item_id]
        ra, rb = _step(doc, "coreg")["results"], _step(other, "coreg")["results"]
        assert rb["placement"].startswith("tiles of") and "placement" not in ra
        assert rb["status"] == ra["status"] and rb["applied_shift_px"] == ra["applied_shift_px"]
        assert abs(rb.get("tiepoints_total", 0) - ra.get("tiepoints_total", 0)) <= max(
            2, 0.1 * ra.get("tiepoints_total", 0)
        )
        assert sorted(doc["assets"]) == sorted(other["assets"])
        assert _step(other, "harmonise")["parameters"]["blocks"]["size"] == 64
    report = check_catalog(blocks.catalog_dir)
    assert report.problems == () and report.warnings == ()


KILLER = textwrap.dedent("""
    import itertools, os, signal, sys
    from stac2cube import load_config, run
    from stac2cube.io.cog import CogWriter
    calls, write, kill_at = itertools.count(1), CogWriter.write, int(sys.argv[2])
    def killing_write(self, *args):  # a crash in the middle of a scene's blocks
        if next(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, *args)
    CogWriter.write = killing_write
    run(load_config(sys.argv[1]))
""")


def test_a_run_killed_inside_a_block_is_completed_by_the_next(
    sample: Sample, tmp_path: Path
) -> None:
    path = _config(tmp_path, sample, block_size=64, bands=["B02", "B04", "B08", "SCL"])
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), "40"], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    cat = tmp_path / "catalog"
    assert [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name]  # killed mid-COG
    assert check_catalog(cat).problems == ()
    summary = run(load_config(path))
    assert summary.failed == 0
    report = check_catalog(cat)
    assert report.problems == () and report.warnings == ()
    assert not [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name]
    assert open_cube(cat).sizes["time"] == len(CatalogStore(cat, "sentinel-2-l2a-ard").item_ids())


def test_a_too_cloudy_scene_in_blocks_is_filtered_and_leaves_nothing(
    sample: Sample, tmp_path: Path
) -> None:
    steps = {"cloudmask": {"shadows": "scl", "max_cloud_fraction": 0.0}}
    cfg = load_config(_config(tmp_path, sample, block_size=64, steps=steps))
    summary = run(cfg)
    filtered = [o for o in summary.outcomes if o.status == "filtered"]
    assert filtered and all(o.stage == "cloudmask" for o in filtered)
    assert all("max_cloud_fraction" in o.message for o in filtered)
    assert not list(cfg.catalog_dir.glob("**/.staging-*"))
    assert json.loads((cfg.catalog_dir / "catalog.json").read_text())["type"] == "Catalog"


def test_reference_candidates_streamed_in_blocks_are_those_read_whole(whole_and_blocks) -> None:
    """A candidate of a catalog reference larger than a block is streamed like a scene with
    steps: the reference band and the cloud step's mask of the candidate read whole, bit for
    bit, holding only that band and the mask; and so the same reference."""
    whole, blocks = whole_and_blocks
    aoi = load_aoi(whole.aoi, whole.base_dir)
    items = search(whole.source, aoi, whole.time, base_dir=whole.base_dir).items
    twins = find_l1c_twins(whole, aoi, items, _store(whole), "test")
    assert twins and len(items) >= 3
    shape = target_geobox(aoi, blocks.grid).shape.yx
    assert candidates_in_blocks(blocks, active_steps(blocks), shape)
    assert not candidates_in_blocks(whole, active_steps(whole), shape)
    read_whole = reference_reader(whole, twins, "B08")
    read_blocks = reference_reader(blocks, twins, "B08")
    for item in items:
        a, b = read_whole(item), read_blocks(item)
        assert list(b.bands) == ["B08"] and list(b.classes) == ["CLOUD_MASK"]
        assert list(a.bands) == ["B08"] and sorted(a.classes) == sorted(b.classes)
        np.testing.assert_array_equal(a.bands["B08"], b.bands["B08"], err_msg=item.id)
        for key in a.classes:
            np.testing.assert_array_equal(a.classes[key], b.classes[key], err_msg=key)
        assert (a.classes["CLOUD_MASK"] == 2).any()  # clouds were masked
    refs = []
    for cfg in (whole, blocks):
        store = _store(cfg)
        ((_, _, asset),) = store.reference_versions(REFERENCE_ASSET)
        with rasterio.open(store.root / store.collection_id / asset["href"]) as src:
            refs.append((src.read(1), asset["stac2cube:reference"]["sources"]))
    np.testing.assert_array_equal(refs[0][0], refs[1][0])
    assert refs[0][1] == refs[1][1]


def test_reference_candidates_without_the_cloud_step_stream_their_scl(whole_and_blocks) -> None:
    """Without the cloud step a candidate's bad pixels come from SCL, streamed alike."""
    whole, blocks = (
        dataclasses.replace(c, steps=dataclasses.replace(c.steps, cloudmask=None))
        for c in whole_and_blocks
    )
    aoi = load_aoi(whole.aoi, whole.base_dir)
    assert candidates_in_blocks(blocks, [], target_geobox(aoi, blocks.grid).shape.yx)
    item = search(whole.source, aoi, whole.time, base_dir=whole.base_dir).items[0]
    a, b = reference_reader(whole, {}, "B03")(item), reference_reader(blocks, {}, "B03")(item)
    assert list(a.classes) == list(b.classes) == ["SCL"] and list(b.bands) == ["B03"]
    np.testing.assert_array_equal(a.bands["B03"], b.bands["B03"])
    np.testing.assert_array_equal(a.classes["SCL"], b.classes["SCL"])
