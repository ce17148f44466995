"""The co-registration step's global mode in blocks (stac2cube/steps/coreg/blocks.py): the shift
estimated through a scene source (windows placed on a coarse grid, matched on full-resolution
crops) agrees with the scene processed whole and with the truth, and the correction applied
block by block with a halo is the correction applied whole."""

from __future__ import annotations

import numpy as np
import pytest

from stac2cube.errors import StepError
from stac2cube.sample.coreg_scenes import CoregScene, Warp, make_coreg_scene
from stac2cube.steps.base import BlockStep, Scene, StepPlan
from stac2cube.steps.coreg import CoregConfig, CoregStep
from stac2cube.steps.coreg.backend import apply_correction
from stac2cube.steps.coreg.blocks import CoregPlan
from stac2cube.steps.coreg.global_shift import GlobalShift, global_info
from stac2cube.testing.sources import ArraySource, RecordingSource, run_in_blocks

pytest.importorskip("arosics")

STEP = CoregStep()
SIZE = 400
BLOCK = 96
"""Blocks that do not divide the scene."""


@pytest.fixture(scope="module")
def shifted() -> CoregScene:
    return make_coreg_scene(size=SIZE, warp=Warp(shift=(1.3, -0.7)), seed=20)


@pytest.fixture(scope="module")
def cloudy() -> CoregScene:
    """Clouds with a CLOUD_MASK layer and a nodata corner (blocks without a valid pixel)."""
    cs = make_coreg_scene(size=SIZE, warp=Warp(shift=(1.2, -0.6)), seed=3, cloud_cover=0.3)
    bands = {k: v.copy() for k, v in cs.scene.bands.items()}
    classes = {k: v.copy() for k, v in cs.scene.classes.items()}
    for a in bands.values():
        a[:130, :120] = np.nan
    for c in classes.values():
        c[:130, :120] = 0
    return CoregScene(cs.scene.replace(bands=bands, classes=classes), cs.reference, cs.truth)


def _plan(scene: Scene, cfg: CoregConfig) -> CoregPlan:
    plan = STEP.plan(ArraySource(scene), cfg)
    assert isinstance(plan, StepPlan)
    return plan


def test_both_modes_run_in_blocks() -> None:
    assert isinstance(STEP, BlockStep)
    assert STEP.in_blocks(CoregConfig())
    assert STEP.in_blocks(CoregConfig(mode="local"))


def test_a_known_shift_is_found_in_blocks(shifted: CoregScene) -> None:
    cfg = CoregConfig()
    whole = STEP.run(shifted.scene, cfg)
    plan = _plan(shifted.scene, cfg)
    out, (res,) = run_in_blocks(ArraySource(shifted.scene), [plan], BLOCK)
    r, w = res.record.results, whole.record.results
    assert r["status"] == w["status"] == "ok", r
    assert plan.status == "ok" and res.write and res.skip is None
    for truth_or_whole in ((1.3, -0.7), w["shift_px"]):
        assert float(np.hypot(*np.subtract(r["shift_px"], truth_or_whole))) < 0.05
    assert r["applied_shift_px"] == r["shift_px"]
    assert r["placement"] == "coarse grid 80 m (blocks)"
    assert set(r) - set(w) == {"placement"}, set(w) - set(r)
    assert res.record.parameters == whole.record.parameters
    assert res.scene.properties["stac2cube:coreg_status"] == "ok"
    # the halo covers the shift and the resampling kernel
    assert plan.halo == 2 + 3
    # the pixels moved: the blocks agree with the whole scene corrected by its own estimate
    # to within the estimates' difference
    b, ref = out.bands["B08"], whole.scene.bands["B08"]
    assert out.geobox == shifted.scene.geobox and b.dtype == np.float32
    inner = (slice(8, -8), slice(8, -8))
    assert np.isfinite(b[inner]).all() and not np.isfinite(b).all()
    assert float(np.nanmean(np.abs(b[inner] - ref[inner]))) < 0.01


def test_the_correction_in_blocks_is_the_correction_applied_whole(cloudy: CoregScene) -> None:
    cfg = CoregConfig()
    plan = _plan(cloudy.scene, cfg)
    shift = plan.correction
    assert plan.status == "ok" and isinstance(shift, GlobalShift), plan.results
    assert float(np.hypot(*np.subtract(plan.results["shift_px"], (1.2, -0.6)))) < 0.1
    out, _ = run_in_blocks(ArraySource(cloudy.scene), [plan], BLOCK)
    info = global_info(shift.template, cloudy.scene.geobox, shift.dx, shift.dy)
    assert shift.info_on(cloudy.scene.geobox) == info
    whole = apply_correction(cloudy.scene, info, cfg)
    edge = (slice(plan.halo, -plan.halo), slice(plan.halo, -plan.halo))
    for name, a in whole.bands.items():
        got = out.bands[name]
        assert np.array_equal(np.isnan(got[edge]), np.isnan(a[edge])), name
        assert float(np.nanmax(np.abs(got[edge] - a[edge]))) <= 1e-4, name
    for name, c in whole.classes.items():
        assert out.classes[name].dtype == c.dtype
        assert np.array_equal(out.classes[name], c), name
    # the nodata corner stays nodata, the clouds moved with the pixels
    assert np.isnan(out.bands["B08"][:120, :110]).all()
    assert not np.array_equal(out.classes["CLOUD_MASK"], cloudy.scene.classes["CLOUD_MASK"])


def test_a_registered_scene_is_left_alone_in_blocks() -> None:
    cs = make_coreg_scene(size=SIZE, seed=21)
    cfg = CoregConfig()
    plan = _plan(cs.scene, cfg)
    r = plan.results
    assert plan.status in ("not_significant", "no_improvement"), r
    assert plan.halo == 0 and plan.correction is None and plan.skip is None
    assert r["decision"].startswith("not applied") and r["applied_shift_px"] == [0.0, 0.0]
    assert max(map(abs, r["shift_px"])) < 0.05
    out, (res,) = run_in_blocks(ArraySource(cs.scene), [plan], BLOCK)
    for b, a in cs.scene.bands.items():
        assert np.array_equal(out.bands[b], a, equal_nan=True)
    assert res.write and res.scene.properties["stac2cube:coreg_status"] == plan.status


def test_a_missing_reference_follows_the_failure_policy(shifted: CoregScene) -> None:
    scene = shifted.scene.replace(aux={}, missing_aux={"reference": "the catalog has no ..."})
    whole = STEP.run(scene, CoregConfig())
    keep = _plan(scene, CoregConfig())
    assert keep.status == "failed" and keep.skip is None and keep.halo == 0
    out, (res,) = run_in_blocks(ArraySource(scene), [keep], BLOCK)
    r = res.record.results
    assert r == whole.record.results
    assert r["reason"] == "no co-registration reference: the catalog has no ..."
    assert res.write and res.scene.properties["stac2cube:coreg_status"] == "failed"
    for b, a in scene.bands.items():
        assert np.array_equal(out.bands[b], a, equal_nan=True)
    skip = _plan(scene, CoregConfig(on_failure="skip"))
    assert skip.skip is not None and skip.skip.code == "coreg-failed"
    done = skip.finish(scene.replace(bands={}, classes={}))
    assert not done.write and done.skip == skip.skip
    assert done.skip == STEP.run(scene, CoregConfig(on_failure="skip")).skip
    with pytest.raises(StepError, match="no co-registration reference"):
        STEP.plan(ArraySource(scene), CoregConfig(on_failure="fail"))


def test_only_the_windows_are_read_at_full_resolution() -> None:
    size = 480
    cs = make_coreg_scene(size=size, warp=Warp(shift=(0.8, 1.4)), seed=26)
    source = RecordingSource(cs.scene)
    plan = STEP.plan(source, CoregConfig(window_size=64))
    r = plan.results
    assert plan.status == "ok", r
    assert float(np.hypot(*np.subtract(r["shift_px"], (0.8, 1.4)))) < 0.1
    assert r["placement"] == "coarse grid 20 m (blocks)"
    assert len(source.reads) == r["windows_tried"]
    area = sum(int(w.width) * int(w.height) for w in source.reads)
    assert area < 0.25 * size * size, [(w.width, w.height) for w in source.reads]
