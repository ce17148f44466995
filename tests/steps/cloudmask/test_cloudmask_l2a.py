"""The cloud step without an L1C twin: s2cloudless is not run (never fed L2A bands behind the
user's back), SCL masks the scene, and the record says so. Known truth: the sample's clouds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stac2cube.errors import StepError
from stac2cube.sample import Sample
from stac2cube.sample.scenes import SampleScenePixels, scene_from_sample
from stac2cube.steps.base import AuxLayer
from stac2cube.steps.cloudmask import (
    MASK_CLOUD,
    MASK_NODATA,
    TEMPORAL_BAND,
    CloudMaskConfig,
    CloudMaskStep,
)

pytest.importorskip("s2cloudless")

STEP = CloudMaskStep()


@pytest.fixture(scope="module")
def cloudy(sample: Sample) -> SampleScenePixels:
    """The ~40 % cloud date of the sample, without any TOA layer (no L1C twin)."""
    return scene_from_sample(sample, 2, toa_resolution=None)


def test_without_twin_s2cloudless_is_not_run_and_scl_masks(cloudy: SampleScenePixels) -> None:
    scene = cloudy.scene
    assert "toa" not in scene.aux
    res = STEP.run(scene, CloudMaskConfig())  # default: union, l1c auto
    r = res.record.results
    assert r["method"] == "union" and r["method_used"] == "scl"
    assert r["s2cloudless"] == {"status": "not run", "reason": "no L1C twin"}
    assert "toa_source" not in r and "model" not in r
    assert "CLOUD_PROB" not in res.scene.classes
    json.dumps(res.record.to_dict())
    # the mask is exactly what method scl gives
    scl = STEP.run(scene, CloudMaskConfig(method="scl")).scene.classes["CLOUD_MASK"]
    np.testing.assert_array_equal(res.scene.classes["CLOUD_MASK"], scl)
    assert "(scl;" in res.scene.layer_info["CLOUD_MASK"].description
    # known truth: the thick clouds are found
    cloud = res.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    assert cloud[cloudy.truth == 1].mean() > 0.8
    assert cloud[cloudy.truth == 0].mean() < 0.1


def test_every_s2cloudless_method_falls_back_to_scl(cloudy: SampleScenePixels) -> None:
    scene = cloudy.scene
    scl_mask = STEP.run(scene, CloudMaskConfig(method="scl")).scene.classes["CLOUD_MASK"]
    for method in ("s2cloudless", "intersection"):
        res = STEP.run(scene, CloudMaskConfig(method=method))  # type: ignore[arg-type]
        assert res.record.results["method_used"] == "scl"
        np.testing.assert_array_equal(res.scene.classes["CLOUD_MASK"], scl_mask)
    # SCL nodata is nodata of the mask, also when the configured method did not need SCL
    s2c_only = STEP.run(scene, CloudMaskConfig(method="s2cloudless", shadows="none"))
    mask = s2c_only.scene.classes["CLOUD_MASK"]
    assert (mask[scene.classes["SCL"] == 0] == MASK_NODATA).all()


def test_the_pipeline_reason_is_recorded(cloudy: SampleScenePixels) -> None:
    why = "L1C read refused: S2B_X_L1C: reading band B01 was refused (HTTP response code: 403)"
    scene = cloudy.scene.replace(missing_aux={"toa": why})
    res = STEP.run(scene, CloudMaskConfig())
    assert res.record.results["s2cloudless"] == {"status": "not run", "reason": why}
    with pytest.raises(StepError, match=r"'require'.*HTTP response code: 403"):
        STEP.run(scene, CloudMaskConfig(l1c="require"))


def test_require_fails_without_twin(cloudy: SampleScenePixels) -> None:
    with pytest.raises(StepError, match=r"'require'.*no L1C twin"):
        STEP.run(cloudy.scene, CloudMaskConfig(l1c="require"))


def test_without_twin_and_without_scl_is_a_clear_error(cloudy: SampleScenePixels) -> None:
    no_scl = cloudy.scene.replace(classes={})
    cfg = CloudMaskConfig(method="s2cloudless", shadows="geometric")
    with pytest.raises(StepError, match=r"no L1C twin.*add SCL to `bands`.*l1c: never"):
        STEP.run(no_scl, cfg)


def test_with_twin_the_record_says_s2cloudless_ran(sample: Sample) -> None:
    px = scene_from_sample(sample, 2)
    r = STEP.run(px.scene, CloudMaskConfig()).record.results
    assert r["s2cloudless"] == {"status": "run", "input": "l1c"}
    assert r["method_used"] == "union" and r["toa_source"].startswith("l1c:")
    r = STEP.run(px.scene, CloudMaskConfig(method="scl")).record.results
    assert r["s2cloudless"]["status"] == "not used" and r["method_used"] == "scl"


def test_never_is_an_explicit_opt_in_and_recorded(sample: Sample) -> None:
    px = scene_from_sample(sample, 2, toa="l2a")
    cfg = CloudMaskConfig(l1c="never", method="s2cloudless", shadows="none")
    assert STEP.required_aux(cfg)["toa"].level == "l2a"
    res = STEP.run(px.scene, cfg)
    r = res.record.results
    assert r["s2cloudless"] == {"status": "run", "input": "l2a surface reflectance (l1c: never)"}
    assert r["method_used"] == "s2cloudless" and r["toa_source"] == "l2a"
    assert r["b10_handling"].startswith("constant")
    assert "CLOUD_PROB" in res.scene.classes
    # an L2A TOA layer under `auto` is not used: no silent degradation
    r = STEP.run(px.scene, CloudMaskConfig()).record.results
    assert r["s2cloudless"]["status"] == "not run" and r["method_used"] == "scl"


def test_without_twin_the_temporal_test_still_runs(
    sample: Sample, cloudy: SampleScenePixels
) -> None:
    """SCL + the multi-temporal test, the documented L2A method, against a clear reference
    (the sample's clear date)."""
    clear = scene_from_sample(sample, 3, toa_resolution=None).scene
    ref = AuxLayer(
        np.asarray(clear.bands[TEMPORAL_BAND])[None], clear.geobox, (TEMPORAL_BAND,), "clear"
    )
    scene = cloudy.scene.replace(aux={"clear_reference": ref})
    cfg = CloudMaskConfig(temporal_threshold=0.03)
    res = STEP.run(scene, cfg)
    r = res.record.results
    assert r["method_used"] == "scl" and r["s2cloudless"]["status"] == "not run"
    assert r["temporal"]["status"] == "applied" and r["temporal"]["added_fraction"] > 0
    thin = cloudy.truth == 2
    plain = STEP.run(cloudy.scene, CloudMaskConfig()).scene.classes["CLOUD_MASK"] == MASK_CLOUD
    with_test = res.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    assert with_test[thin].mean() > plain[thin].mean()
