"""The cloud step in blocks (stac2cube/steps/cloudmask/blocks.py): the layers and record of the
scene processed whole, block by block, for every configuration but geometric shadows, which
follow the whole scene's on the probability's coarse grid."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine
from rasterio.windows import Window

from stac2cube.errors import StepError
from stac2cube.sample import Sample
from stac2cube.sample.scenes import SampleScenePixels, scene_from_sample
from stac2cube.steps.base import AuxLayer, AuxRequest, BlockStep, Scene, StepPlan, StepResult
from stac2cube.steps.cloudmask import (
    MASK_CLOUD,
    MASK_NODATA,
    MASK_SHADOW,
    S2CLOUDLESS_BANDS,
    CloudMaskConfig,
    CloudMaskStep,
    shadow_offsets,
)
from stac2cube.steps.cloudmask import blocks as cloud_blocks
from stac2cube.testing.sources import ArraySource, run_in_blocks

pytest.importorskip("s2cloudless")

LAYERS = ("CLOUD_MASK", "CLOUD_PROB")
SHADOW_SEARCH = {"shadow_height_m", "shadow_objects", "shadow_search"}
"""Results of the geometric search, which runs on another grid in blocks."""


@pytest.fixture(scope="module")
def scenes(sample: Sample) -> list[SampleScenePixels]:
    """The 4 sample dates (true cloud ~5 %, ~20 %, ~40 %, 0 % with a nodata wedge), TOA from L1C."""
    return [scene_from_sample(sample, i) for i in range(len(sample.scenes))]


def _in_blocks(
    scene: Scene, cfg: CloudMaskConfig, size: int, step: CloudMaskStep | None = None
) -> tuple[Scene, StepResult, StepPlan]:
    step = step or CloudMaskStep()
    plan = step.plan(ArraySource(scene), cfg)
    out, (res,) = run_in_blocks(ArraySource(scene), [plan], size)
    return out, res, plan


def _assert_same(whole: StepResult, blocks: Scene, res: StepResult, *, shadows: bool) -> None:
    """Layers bit-identical (``CLOUD_MASK``'s shadows only when ``shadows``), record, cloud
    cover, skip and layer info equal."""
    names = [k for k in whole.scene.classes if k.startswith("CLOUD_")]
    assert set(names) == {k for k in blocks.classes if k.startswith("CLOUD_")}
    for name in names:
        a, b = whole.scene.classes[name], blocks.classes[name]
        if name == "CLOUD_MASK" and not shadows:
            np.testing.assert_array_equal(a == MASK_CLOUD, b == MASK_CLOUD)
            np.testing.assert_array_equal(a == MASK_NODATA, b == MASK_NODATA)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert res.scene.layer_info[name] == whole.scene.layer_info[name]
    want = {k: v for k, v in whole.record.results.items() if k not in SHADOW_SEARCH}
    got = {k: v for k, v in res.record.results.items() if k not in SHADOW_SEARCH}
    if not shadows:
        for key in ("shadow_fraction", "clear_fraction"):
            want.pop(key), got.pop(key)
    assert got == want
    assert res.record.parameters == whole.record.parameters
    assert res.record.name == whole.record.name and res.record.version == whole.record.version
    assert res.scene.properties.get("eo:cloud_cover") == whole.scene.properties.get(
        "eo:cloud_cover"
    )
    assert res.skip == whole.skip


def test_the_step_runs_in_blocks() -> None:
    step = CloudMaskStep()
    assert isinstance(step, BlockStep)
    for cfg in (CloudMaskConfig(), CloudMaskConfig(method="scl", temporal_threshold=0.03)):
        assert step.in_blocks(cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        CloudMaskConfig(method="s2cloudless", shadows="none"),
        CloudMaskConfig(method="union", shadows="scl", thresholds=(0.2, 0.6)),
        CloudMaskConfig(method="intersection", shadows="scl", cirrus_threshold=0.012),
        CloudMaskConfig(method="scl", shadows="scl", thresholds=(0.3,)),
        CloudMaskConfig(method="scl", shadows="none"),
        CloudMaskConfig(
            method="s2cloudless",
            shadows="none",
            threshold=0.3,
            average_over=60.0,
            dilation_size=30.0,
        ),
    ],
    ids=["s2cloudless", "union", "intersection-cirrus", "scl-thresholds", "scl", "sizes"],
)
@pytest.mark.parametrize("size", [64, 100])
def test_blocks_give_the_layers_and_record_of_the_whole_scene(
    scenes: list[SampleScenePixels], cfg: CloudMaskConfig, size: int
) -> None:
    """Blocks that do not divide the scene (cut at its edges): every layer bit-identical."""
    for px in (scenes[2], scenes[3]):  # the cloudiest date, the clear one with a nodata wedge
        whole = CloudMaskStep().run(px.scene, cfg)
        out, res, plan = _in_blocks(px.scene, cfg, size)
        _assert_same(whole, out, res, shadows=True)
        assert res.write and plan.skip is None
    assert (plan.halo > 0) == cfg.uses_s2cloudless


def test_probability_on_a_20_m_grid_in_blocks(sample: Sample) -> None:
    px = scene_from_sample(sample, 1, toa_resolution=20.0)
    cfg = CloudMaskConfig(shadows="scl", resolution=20.0, thresholds=(0.5,))
    whole = CloudMaskStep().run(px.scene, cfg)
    out, res, _ = _in_blocks(px.scene, cfg, 64)
    _assert_same(whole, out, res, shadows=True)
    assert res.record.results["probability_resolution_m"] == 20.0


def test_cirrus_figures_are_counted_over_the_blocks(scenes: list[SampleScenePixels]) -> None:
    """A thin-cirrus patch in B10 and snow on half the scene: the cirrus and snow fractions of
    the record, counted block by block, are those of the scene processed whole."""
    base = scenes[3].scene
    toa = base.aux["toa"]
    data = np.array(toa.data, copy=True)
    b10 = S2CLOUDLESS_BANDS.index("B10")
    h, w = data.shape[1:]
    data[b10, h // 3 : h // 2, w // 4 :] = 0.03
    gh, gw = base.geobox.shape.yx
    snow = np.zeros((gh, gw), dtype=bool)
    snow[:, : gw // 2] = True
    bands = dict(base.bands)
    bands["B03"] = np.where(snow, 0.8, bands["B03"]).astype(np.float32)
    bands["B08"] = np.where(snow, 0.75, bands["B08"]).astype(np.float32)
    bands["B11"] = np.where(snow, 0.05, bands["B11"]).astype(np.float32)
    scene = base.replace(bands=bands, aux={"toa": dataclasses.replace(toa, data=data)})
    cfg = CloudMaskConfig(method="s2cloudless", shadows="none", cirrus_threshold=0.012)
    whole = CloudMaskStep().run(scene, cfg)
    out, res, _ = _in_blocks(scene, cfg, 64)
    _assert_same(whole, out, res, shadows=True)
    assert res.record.results["cirrus_fraction"] > 0.01
    assert res.record.results["cirrus_snow_excluded_fraction"] > 0.01
    assert res.record.results["cirrus_snow_from"] == "ndsi"


def test_l2a_input_and_scl_fallback_in_blocks(sample: Sample) -> None:
    """``l1c: never`` runs s2cloudless on the L2A bands; under ``auto`` an L2A layer is not
    used and SCL masks the scene, as when it is processed whole."""
    px = scene_from_sample(sample, 2, toa="l2a")
    for cfg in (
        CloudMaskConfig(method="s2cloudless", shadows="none", l1c="never"),
        CloudMaskConfig(shadows="scl"),
    ):
        whole = CloudMaskStep().run(px.scene, cfg)
        out, res, _ = _in_blocks(px.scene, cfg, 100)
        _assert_same(whole, out, res, shadows=True)
    assert res.record.results["s2cloudless"]["status"] == "not run"


def test_too_cloudy_and_empty_scenes_are_not_written(scenes: list[SampleScenePixels]) -> None:
    cfg = CloudMaskConfig(shadows="scl", max_cloud_fraction=0.1)
    whole = CloudMaskStep().run(scenes[2].scene, cfg)
    out, res, _ = _in_blocks(scenes[2].scene, cfg, 64)
    _assert_same(whole, out, res, shadows=True)
    assert res.skip is not None and res.skip.code == "too-cloudy"
    scene = scenes[0].scene
    toa = scene.aux["toa"]
    empty = scene.replace(
        bands={b: np.full_like(a, np.nan) for b, a in scene.bands.items()},
        classes={"SCL": np.zeros_like(scene.classes["SCL"])},
        aux={"toa": dataclasses.replace(toa, data=np.full_like(toa.data, np.nan))},
    )
    cfg = CloudMaskConfig(shadows="scl")
    whole = CloudMaskStep().run(empty, cfg)
    out, res, _ = _in_blocks(empty, cfg, 64)
    _assert_same(whole, out, res, shadows=True)
    assert res.skip is not None and res.skip.code == "no-valid-pixel"


# ------------------------------------------------------------------ multi-temporal test


def _with_reference(
    px: SampleScenePixels, ref: np.ndarray, days: float, version: str | None = None
) -> Scene:
    scene = px.scene
    when = dt.datetime.fromisoformat(scene.source_properties["datetime"]) - dt.timedelta(days)
    layer = AuxLayer(
        ref[None].astype(np.float32), scene.geobox, ("B02",), "test#ref", when, version=version
    )
    return scene.replace(aux={**scene.aux, "clear_reference": layer})


def _thin_cloud_reference(px: SampleScenePixels) -> np.ndarray:
    clear_blue = np.where(np.isin(px.truth, (1, 2, 3, 4)), np.nan, px.scene.bands["B02"])
    out: np.ndarray = np.where(np.isfinite(clear_blue), clear_blue, np.float32(0.04))
    return out


@pytest.mark.parametrize("days", [3.0, 45.0])
def test_temporal_test_in_blocks(scenes: list[SampleScenePixels], days: float) -> None:
    """Applied (3 days) or skipped (45 days, beyond ``temporal_refresh_days``): the mask and
    the test's record of the whole scene; only an applied test reads the reference per block."""
    px = scenes[2]
    scene = _with_reference(px, _thin_cloud_reference(px), days, "cloud-reference-v2")
    cfg = CloudMaskConfig(shadows="scl", temporal_threshold=0.03, thresholds=(0.3,))
    whole = CloudMaskStep().run(scene, cfg)
    out, res, plan = _in_blocks(scene, cfg, 64)
    _assert_same(whole, out, res, shadows=True)
    rec = res.record.results["temporal"]
    if days < 30:
        assert rec["status"] == "applied" and rec["added_fraction"] > 0.0
        assert set(plan.block_aux) == {"clear_reference"}
    else:
        assert rec["status"].startswith("skipped") and plan.block_aux == {}


def test_temporal_test_without_reference_is_skipped_in_blocks(
    scenes: list[SampleScenePixels],
) -> None:
    cfg = CloudMaskConfig(method="scl", shadows="none", temporal_threshold=0.03)
    whole = CloudMaskStep().run(scenes[1].scene, cfg)
    out, res, _ = _in_blocks(scenes[1].scene, cfg, 100)
    _assert_same(whole, out, res, shadows=True)
    assert res.record.results["temporal"]["status"].startswith("skipped")


@pytest.mark.parametrize("coregistered", [True, False])
def test_deferred_temporal_test_runs_in_apply_late(
    scenes: list[SampleScenePixels], coregistered: bool
) -> None:
    """Deferred, the test runs in ``apply_late``: the mask and record of the whole scene masked
    and then given :meth:`~CloudMaskStep.apply_deferred_temporal`."""
    px = scenes[2]
    scene = _with_reference(px, _thin_cloud_reference(px), 3.0)
    cfg = CloudMaskConfig(method="scl", shadows="scl", temporal_threshold=0.03)
    step = CloudMaskStep(defer_temporal=True)
    first = step.run(scene, cfg)
    whole = step.apply_deferred_temporal(first.scene, cfg, first.record, coregistered=coregistered)
    plan = step.plan(ArraySource(scene), cfg)
    assert isinstance(plan, cloud_blocks.CloudPlan) and plan.coregistered
    plan.coregistered = coregistered
    src = ArraySource(scene)
    h, w = scene.geobox.shape.yx
    applied = plan.apply(src.with_block_aux(src._cut(Window(0, 0, w, h)), plan))
    # apply leaves the test out: the mask of the whole scene before the deferred test
    assert np.array_equal(applied.classes["CLOUD_MASK"], first.scene.classes["CLOUD_MASK"])
    out, (res,) = run_in_blocks(ArraySource(scene), [plan], 64)
    _assert_same(whole, out, res, shadows=True)
    assert res.record.results["temporal"]["on_coregistered_pixels"] is coregistered
    assert res.record.results["temporal"]["added_fraction"] > 0.0


# ------------------------------------------------------------------ geometric shadows


def _constructed(
    azimuth: float, zenith: float, height: float
) -> tuple[Scene, np.ndarray, np.ndarray]:
    """Vegetation (NIR 0.3), one cloud (SCL 9) and its shadow (NIR 0.06) cast from ``height``
    (as in test_cloudmask.py)."""
    n = 240
    gbox = GeoBox((n, n), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), "EPSG:32632")
    yy, xx = np.mgrid[0:n, 0:n]
    cloud = (yy - 120) ** 2 / 18**2 + (xx - 120) ** 2 / 12**2 <= 1
    ((dr, dc),) = shadow_offsets(np.array([height]), azimuth, zenith, gbox)
    shadow = np.zeros_like(cloud)
    shadow[np.roll(np.roll(cloud, dr, 0), dc, 1)] = True
    shadow &= ~cloud
    nir = np.full((n, n), 0.3, np.float32)
    nir[shadow] = 0.06
    nir[cloud] = 0.6
    red = np.full((n, n), 0.05, np.float32)
    scl = np.full((n, n), 4, np.uint8)
    scl[cloud] = 9
    props = {"view:sun_azimuth": azimuth, "view:sun_elevation": 90.0 - zenith}
    scene = Scene(
        "constructed", gbox, {"B04": red, "B08": nir}, {"SCL": scl}, source_properties=props
    )
    return scene, cloud, shadow


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize(
    ("azimuth", "zenith", "height"), [(150.0, 35.0, 1500.0), (30.0, 50.0, 800.0)]
)
def test_geometric_shadows_in_blocks_follow_the_whole_scene(
    azimuth: float, zenith: float, height: float
) -> None:
    """The search on the 60 m grid finds the height and puts the shadow where the whole scene
    does; the clouds are identical, and the record says where the search ran."""
    scene, _, truth = _constructed(azimuth, zenith, height)
    cfg = CloudMaskConfig(method="scl", shadows="geometric", dilation_size=0.0)
    whole = CloudMaskStep().run(scene, cfg)
    out, res, _ = _in_blocks(scene, cfg, 64)
    _assert_same(whole, out, res, shadows=False)
    a = whole.scene.classes["CLOUD_MASK"] == MASK_SHADOW
    b = out.classes["CLOUD_MASK"] == MASK_SHADOW
    assert a.sum() > 300 and _iou(a, b) >= 0.7 and _iou(b, truth) >= 0.7
    rec = res.record.results
    assert rec["shadow_search"] == "coarse grid 60 m (blocks)"
    assert rec["shadow_height_m"] == pytest.approx(height, abs=200.0)
    assert rec["shadow_objects"] == 1 and rec["shadow_nir"] == "l2a:B08"


def test_default_shadows_in_blocks_on_the_sample(scenes: list[SampleScenePixels]) -> None:
    """SCL and geometric shadows (the default) over terrain: clouds identical, shadows mostly
    where the whole scene puts them."""
    cfg = CloudMaskConfig()
    for px in scenes[:3]:
        whole = CloudMaskStep().run(px.scene, cfg)
        out, res, _ = _in_blocks(px.scene, cfg, 100)
        _assert_same(whole, out, res, shadows=False)
        a = whole.scene.classes["CLOUD_MASK"] == MASK_SHADOW
        b = out.classes["CLOUD_MASK"] == MASK_SHADOW
        assert _iou(a, b) >= 0.7, px.scene.item_id


# ------------------------------------------------------------------ the analysis


def test_plan_raises_as_run_does(scenes: list[SampleScenePixels], sample: Sample) -> None:
    step = CloudMaskStep()
    no_toa = scene_from_sample(sample, 1, toa_resolution=None).scene
    no_toa = no_toa.replace(missing_aux={"toa": "no L1C twin"})  # as the pipeline says
    cfg = CloudMaskConfig(l1c="require")
    with pytest.raises(StepError, match="L1C") as from_run:
        step.run(no_toa, cfg)
    with pytest.raises(StepError, match="L1C") as from_plan:
        step.plan(ArraySource(no_toa), cfg)
    assert str(from_plan.value) == str(from_run.value)
    no_scl = scenes[0].scene.replace(classes={})
    with pytest.raises(StepError, match="add SCL to `bands`"):
        step.plan(ArraySource(no_scl), CloudMaskConfig())
    no_scl_no_toa = no_toa.replace(classes={})
    with pytest.raises(StepError, match="needs the SCL layer"):
        step.plan(ArraySource(no_scl_no_toa), CloudMaskConfig(method="s2cloudless", shadows="none"))
    no_sun = scenes[0].scene.replace(source_properties={})
    with pytest.raises(StepError, match="sun angles"):
        step.plan(ArraySource(no_sun), CloudMaskConfig(shadows="geometric"))
    # without s2cloudless input the plan still works: SCL only
    res = _in_blocks(no_toa, CloudMaskConfig(shadows="scl"), 64)[1]
    assert res.record.results["method_used"] == "scl"


class _Recording(ArraySource):
    """An :class:`ArraySource` that records the grids the TOA is read on."""

    def __init__(self, scene: Scene) -> None:
        super().__init__(scene)
        self.toa_reads: list[GeoBox | None] = []

    def aux(self, name: str, request: AuxRequest, geobox: GeoBox | None = None) -> Any:
        if name == "toa":
            self.toa_reads.append(geobox)
        return super().aux(name, request, geobox)


def test_toa_is_read_in_strips(
    scenes: list[SampleScenePixels], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With strips shorter than the coarse grid, the TOA is read strip by strip (never whole)
    and the probability is that of the whole layer."""
    monkeypatch.setattr(cloud_blocks, "STRIP_ROWS", 8)
    scene = scenes[2].scene
    cfg = CloudMaskConfig(shadows="scl", thresholds=(0.3,))
    source = _Recording(scene)
    plan = CloudMaskStep().plan(source, cfg)
    coarse = scene.aux["toa"].geobox
    assert coarse.shape.y > 8
    reads = source.toa_reads
    assert len(reads) == -(-coarse.shape.y // 8) and all(g is not None for g in reads)
    assert all(g.shape.y <= 8 and g.shape.x == coarse.shape.x for g in reads if g is not None)
    assert sum(g.shape.y for g in reads if g is not None) == coarse.shape.y
    out, (res,) = run_in_blocks(ArraySource(scene), [plan], 64)
    _assert_same(CloudMaskStep().run(scene, cfg), out, res, shadows=True)
