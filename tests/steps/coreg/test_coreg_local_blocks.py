"""The co-registration step's local mode in blocks (stac2cube/steps/coreg/local_blocks.py): the
tie points matched tile by tile are the whole scene's, the decision is the whole scene's, and
the warp applied block by block through the tie points near each block follows the field as
the whole scene's warp does (to GDAL's own approximation of the spline)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from stac2cube.errors import StepError
from stac2cube.sample.coreg_scenes import (
    CoregScene,
    Warp,
    make_coreg_scene,
    random_warp,
    residual_px,
    rmse_px,
    with_truth_coordinates,
)
from stac2cube.steps.base import Scene
from stac2cube.steps.coreg import CoregConfig, CoregStep, local_blocks
from stac2cube.steps.coreg.backend import apply_correction
from stac2cube.steps.coreg.blocks import CoregPlan
from stac2cube.steps.coreg.local import TIEPOINTS_SIDECAR, TiePointWarp
from stac2cube.steps.coreg.local_blocks import match_reach
from stac2cube.steps.coreg.significance import (
    CORRELATION_REACH_PX,
    CorrelationSums,
    clear_correlation_sums,
)
from stac2cube.testing.sources import ArraySource, RecordingSource, run_in_blocks

pytest.importorskip("arosics")

STEP = CoregStep()
SIZE = 400
TILE = 200
"""Tiles of tie points smaller than the scene, so that a scene has four."""
BLOCK = 96
LOCAL = CoregConfig(mode="local")
INNER = (slice(16, -16), slice(16, -16))


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_blocks, "TILE_PX", TILE)


@pytest.fixture(scope="module")
def warped() -> CoregScene:
    """A smooth warp (shift + rotation + sinusoid, up to ~2 px)."""
    return make_coreg_scene(size=SIZE, warp=random_warp(np.random.default_rng(5), SIZE), seed=7)


@pytest.fixture(scope="module")
def whole(warped: CoregScene) -> Any:
    return STEP.run(warped.scene, LOCAL)


def _plan(scene: Scene, cfg: CoregConfig = LOCAL) -> CoregPlan:
    return STEP.plan(ArraySource(scene), cfg)


def _points(sidecar_data: bytes) -> dict[int, tuple[Any, ...]]:
    feats = json.loads(sidecar_data)["features"]
    return {
        f["properties"]["point_id"]: tuple(
            f["properties"][k] for k in ("col", "row", "dx_px", "dy_px", "reliability", "valid")
        )
        for f in feats
    }


def test_tie_points_matched_in_tiles_are_the_whole_scenes(warped: CoregScene, whole: Any) -> None:
    source = RecordingSource(warped.scene)
    plan = STEP.plan(source, LOCAL)
    r, w = plan.results, whole.record.results
    assert r["status"] == w["status"] == "ok", r
    assert r["placement"] == f"tiles of {TILE} px (blocks)"
    for key in ("tiepoints_grid", "tiepoints_total", "tiepoints_matched", "tiepoints_valid"):
        assert r[key] == w[key], key
    assert r["shift_px"] == w["shift_px"] and r["field_f"] == w["field_f"]
    assert r["applied_shift_px"] == w["applied_shift_px"] == r["shift_px"]
    # the same points, shifts and filtering (AROSICS' RANSAC saw every point in both)
    got = _points(plan.sidecars[TIEPOINTS_SIDECAR].data)
    assert got == _points(whole.scene.sidecars[TIEPOINTS_SIDECAR].data)
    assert len(got) == r["tiepoints_total"] > 4 * 9
    # the alignment check, summed over blocks, agrees with the whole scene's (its clear
    # pixels differ by the anomalies, found per tile)
    assert r["correlation_after"] > r["correlation_before"]
    assert abs(r["correlation_before"] - w["correlation_before"]) < 1e-2
    assert abs(r["correlation_after"] - w["correlation_after"]) < 1e-2
    # nothing larger than a tile grown by the matching's reach was read at full resolution
    side = TILE + 2 * match_reach(LOCAL)
    assert max(int(win.width) * int(win.height) for win in source.reads) <= side * side


def test_the_warp_in_blocks_follows_the_field_as_the_whole_scenes_does(
    warped: CoregScene, whole: Any
) -> None:
    plan = _plan(warped.scene)
    warp = plan.correction
    assert isinstance(warp, TiePointWarp)
    # one block covering the scene is warped exactly as the whole scene
    one = apply_correction(warped.scene, warp.info_on(warped.scene.geobox), LOCAL)
    for name, a in whole.scene.bands.items():
        assert np.array_equal(one.bands[name], a, equal_nan=True), name
    out, (res,) = run_in_blocks(ArraySource(warped.scene), [plan], BLOCK)
    assert res.write and res.record.results == plan.results
    assert TIEPOINTS_SIDECAR in res.scene.sidecars
    assert res.scene.properties["stac2cube:coreg_status"] == "ok"
    # the tie points near a block give the spline through all of them
    every = dataclasses.replace(plan, correction=dataclasses.replace(warp, margin=10 * SIZE))
    out_all, _ = run_in_blocks(ArraySource(warped.scene), [every], BLOCK)
    for name, a in out_all.bands.items():
        assert float(np.nanmax(np.abs(out.bands[name][INNER] - a[INNER]))) <= 1e-4, name
    # GDAL approximates the spline per block (0.125 px): close to the whole scene's pixels,
    # and as close to the truth
    for name, a in whole.scene.bands.items():
        got = out.bands[name]
        assert np.array_equal(np.isnan(got[INNER]), np.isnan(a[INNER])), name
        assert float(np.nanmean(np.abs(got[INNER] - a[INNER]))) < 0.1 * float(np.nanstd(a))
    # the true coordinates carried by both warps
    truth = with_truth_coordinates(warped)
    before = rmse_px(*residual_px(truth, margin=32))
    e_whole = rmse_px(*residual_px(apply_correction(truth, warp.info_on(truth.geobox), LOCAL), 32))
    e_blocks = rmse_px(*residual_px(run_in_blocks(ArraySource(truth), [plan], BLOCK)[0], 32))
    assert e_blocks < 0.25 < before
    assert e_blocks <= e_whole + 0.02, (e_blocks, e_whole)


def test_a_cloudy_scene_with_a_nodata_corner_in_blocks() -> None:
    cs = make_coreg_scene(size=SIZE, warp=Warp(shift=(1.2, -0.6)), seed=3, cloud_cover=0.1)
    bands = {k: v.copy() for k, v in cs.scene.bands.items()}
    classes = {k: v.copy() for k, v in cs.scene.classes.items()}
    for a in bands.values():
        a[:210, :210] = np.nan  # a tile without a valid pixel
    for c in classes.values():
        c[:210, :210] = 0
    scene = cs.scene.replace(bands=bands, classes=classes)
    whole = STEP.run(scene, LOCAL).record.results
    plan = _plan(scene)
    r = plan.results
    for key in ("status", "reason", "tiepoints_total", "tiepoints_valid"):
        assert r[key] == whole[key], key
    assert "tiles_failed" not in r
    out, _ = run_in_blocks(ArraySource(scene), [plan], BLOCK)
    for b, a in bands.items():
        assert np.array_equal(out.bands[b], a, equal_nan=True)


def test_a_registered_scene_is_left_alone_in_blocks() -> None:
    cs = make_coreg_scene(size=SIZE, seed=21)
    whole = STEP.run(cs.scene, LOCAL).record.results
    plan = _plan(cs.scene)
    r = plan.results
    assert r["status"] == whole["status"] and r["status"] in ("not_significant", "no_improvement")
    assert plan.correction is None and plan.halo == 0
    assert r["decision"].startswith("not applied") and r["applied_shift_px"] == [0.0, 0.0]
    # the anomalies are found on a coarse grid: a few points at their edges may differ
    assert abs(r["tiepoints_total"] - whole["tiepoints_total"]) <= 0.1 * whole["tiepoints_total"]
    out, (res,) = run_in_blocks(ArraySource(cs.scene), [plan], BLOCK)
    for b, a in cs.scene.bands.items():
        assert np.array_equal(out.bands[b], a, equal_nan=True)
    assert res.write and TIEPOINTS_SIDECAR in res.scene.sidecars


def test_a_flat_scene_fails_in_blocks_as_whole() -> None:
    flat = make_coreg_scene(size=SIZE, warp=Warp(shift=(1.0, 0.5)), flat=True)
    whole = STEP.run(flat.scene, LOCAL).record.results
    keep = _plan(flat.scene)
    assert keep.status == whole["status"] == "failed"
    assert keep.skip is None and keep.correction is None
    skip = _plan(flat.scene, CoregConfig(mode="local", on_failure="skip"))
    assert skip.skip is not None and skip.skip.code == "coreg-failed"
    with pytest.raises(StepError):
        _plan(flat.scene, CoregConfig(mode="local", on_failure="fail"))


def test_the_clear_pixel_correlation_adds_up_over_blocks() -> None:
    """The alignment check's correlation, summed over blocks read with its reach, is the one
    of the whole image (low-pass and erosion included)."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 260)).astype(np.float32)
    b = (0.7 * a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
    ok = rng.random(a.shape) > 0.1
    ok[:40, :50] = False
    whole = clear_correlation_sums(a, b, ok).ncc()
    sums = CorrelationSums()
    reach = CORRELATION_REACH_PX
    for r0 in range(0, 300, 64):
        for c0 in range(0, 260, 64):
            r1, c1 = min(r0 + 64, 300), min(c0 + 64, 260)
            gr, gc = max(r0 - reach, 0), max(c0 - reach, 0)
            sl = (slice(gr, min(r1 + reach, 300)), slice(gc, min(c1 + reach, 260)))
            core = (slice(r0 - gr, r1 - gr), slice(c0 - gc, c1 - gc))
            sums.extend(clear_correlation_sums(a[sl], b[sl], ok[sl], core))
    assert whole is not None and 0.5 < whole < 1.0
    assert sums.ncc() == pytest.approx(whole, abs=1e-9)
    assert sums.n == clear_correlation_sums(a, b, ok).n
    # a region that does not reach far enough differs
    short = CorrelationSums()
    short.extend(clear_correlation_sums(a[:, :130], b[:, :130], ok[:, :130]))
    short.extend(clear_correlation_sums(a[:, 130:], b[:, 130:], ok[:, 130:]))
    assert short.n < sums.n


def test_a_block_is_warped_through_points_that_span_a_plane(warped: CoregScene) -> None:
    """Tie points all on one line near a block (a cloud band) would make the spline
    degenerate: the margin grows until they are not, or takes all the points."""
    gbox = warped.scene.geobox
    line = np.arange(0.0, 400.0, 25.0)
    col = np.concatenate([line, [10.0, 390.0]])
    row = np.concatenate([np.full(line.size, 100.0), [390.0, 390.0]])
    warp = TiePointWarp(gbox, col, row, col * 10.0, row * -10.0, 60, (0.0, 0.0))
    block = gbox[80:140, 0:400]
    sel = warp.near(block)
    assert sel[-2:].any() and int(sel.sum()) >= 10
    assert len(warp.info_on(block)["GCPList"]) == int(sel.sum())
    # points that do not span a plane anywhere: all of them
    flat = TiePointWarp(gbox, line, np.full(line.size, 100.0), line, line, 60, (0.0, 0.0))
    assert flat.near(block).all()


def _table(ids: list[int], improved: list[Any]) -> Any:
    """A tie-point table as one tile gives it (an unmatched point: AROSICS' fill values)."""
    import pandas as pd

    rng = np.random.default_rng(ids[0])
    n = len(ids)
    matched = [v is not None for v in improved]
    shift = np.where(matched, rng.normal(1.0, 0.02, n), -9999.0)
    return pd.DataFrame(
        {
            "POINT_ID": ids,
            "X_IM": [50 * (i % 20) for i in ids],
            "Y_IM": [50 * (i // 20) for i in ids],
            "X_MAP": [500000.0 + 500 * (i % 20) for i in ids],
            "Y_MAP": [5300000.0 - 500 * (i // 20) for i in ids],
            "X_SHIFT_M": shift,
            "Y_SHIFT_M": shift,
            "X_SHIFT_PX": shift,
            "Y_SHIFT_PX": shift,
            "ABS_SHIFT": shift,
            "RELIABILITY": np.where(matched, 90.0, -9999.0),
            "SSIM_IMPROVED": [-9999 if v is None else v for v in improved],
        }
    )


def test_tiles_joined_into_one_table_are_filtered_as_matched() -> None:
    """A tile with an unmatched point holds Python objects; joined with a clean tile, AROSICS'
    SSIM filter (which negates the column) would flag every point. Only the points whose
    correction did not improve the similarity are flagged."""
    from stac2cube.steps.coreg.local import refine_tiepoints, valid_tiepoints

    clean = _table(list(range(0, 12)), [np.True_] * 11 + [np.False_])
    holey = _table(list(range(12, 24)), [True] * 10 + [False, None])
    joined = local_blocks._merged([clean, holey])
    assert joined["SSIM_IMPROVED"].dtype == object
    out = refine_tiepoints(joined, CoregConfig(mode="local", tiepoint_filter_level=2), {})
    matched, valid = valid_tiepoints(out, CoregConfig(mode="local", tiepoint_filter_level=2))
    assert int(matched.sum()) == 23
    flagged = set(out["POINT_ID"][matched & ~valid])
    assert flagged == {11, 22}, flagged


def test_ransac_over_many_points_runs_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-image's affine fit takes memory growing with the square of the points: past
    MAX_RANSAC_POINTS the points are split into random groups, and gross outliers are still
    found."""
    from stac2cube.steps.coreg import local
    from stac2cube.steps.coreg.local import refine_tiepoints, valid_tiepoints

    tbl = _table(list(range(80)), [np.True_] * 80)
    for col in ("X_SHIFT_M", "Y_SHIFT_M"):
        tbl.loc[[5, 37, 71], col] = 25.0
    cfg = CoregConfig(mode="local")
    whole: dict[str, Any] = {}
    one = refine_tiepoints(tbl, cfg, whole)
    monkeypatch.setattr(local, "MAX_RANSAC_POINTS", 20)
    results: dict[str, Any] = {}
    out = refine_tiepoints(tbl, cfg, results)
    assert results["ransac_groups"] == 4 and "ransac_groups" not in whole
    for table in (one, out):
        matched, valid = valid_tiepoints(table, cfg)
        flagged = set(table["POINT_ID"][matched & ~valid])
        assert {5, 37, 71} <= flagged and len(flagged) <= 12, flagged


def test_the_tie_points_filtered_and_warped_by_us_are_arosics_own(
    warped: CoregScene, whole: Any
) -> None:
    """The whole path matches unfiltered and filters and warps itself (the one function the
    block path uses too): the pixels of COREG_LOCAL filtering and warping on its own."""
    from stac2cube.steps.coreg.inputs import match_inputs
    from stac2cube.steps.coreg.local import tiepoint_table

    inp = match_inputs(warped.scene, warped.scene.aux["reference"], LOCAL)
    _, info = tiepoint_table(inp, warped.scene.geobox, LOCAL, LOCAL.tiepoint_filter_level)
    theirs = apply_correction(warped.scene, info, LOCAL)
    assert whole.record.results["status"] == "ok"
    for name, a in theirs.bands.items():
        assert np.array_equal(whole.scene.bands[name], a, equal_nan=True), name
