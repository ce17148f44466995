"""The multi-temporal cloud test that does not fade: reference versions refreshed with the gap,
the test deferred until after co-registration, and what the records say."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from stac2cube.catalog import (
    CLOUD_REFERENCE_ASSET,
    REFERENCE_ASSET,
    reference_base_key,
    reference_version_key,
)
from stac2cube.errors import ConfigError
from stac2cube.fields import to_dict
from stac2cube.references import refresh_window
from stac2cube.sample import Sample
from stac2cube.sample.scenes import SampleScenePixels, scene_from_sample
from stac2cube.steps.base import AuxLayer, Scene
from stac2cube.steps.cloudmask import (
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_NODATA,
    TEMPORAL_DEFERRED,
    CloudMaskConfig,
    CloudMaskStep,
)

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


# ------------------------------------------------------------------ when to refresh


def test_refresh_window_starts_at_the_first_scene_far_from_every_version() -> None:
    scenes = [_day(d) for d in (0, 10, 25, 31, 45, 70, 200)]
    assert refresh_window(scenes[:3], [_day(10)], 30.0) is None  # all within 30 days
    start, end = refresh_window(scenes, [_day(0)], 30.0) or (None, None)
    assert start == _day(31) and end == _day(61)  # 30 days is near enough; 31 is not
    # a version built from the window has its median inside it: the window is covered
    assert refresh_window(scenes, [_day(0), _day(45)], 30.0) == (_day(200), _day(230))
    assert refresh_window(scenes, [_day(0), _day(45), _day(210)], 30.0) is None
    assert refresh_window(scenes, [], 30.0) == (_day(0), _day(30))  # no version yet


@pytest.mark.parametrize("gaps", [[0, 3, 9, 40, 41, 80, 130, 131, 365], [5, 90, 91, 92, 400]])
def test_refresh_windows_cover_every_scene(gaps: list[int]) -> None:
    """Whatever the dates, building one version per window (median of the window's scenes, as
    the pipeline does) leaves no scene farther than the refresh gap from a version."""
    scenes = [_day(g) for g in gaps]
    versions = [_day(gaps[0])]
    for _ in range(len(scenes)):
        window = refresh_window(scenes, versions, 30.0)
        if window is None:
            break
        inside = sorted(t for t in scenes if window[0] <= t <= window[1])
        versions.append(inside[(len(inside) - 1) // 2])
    assert refresh_window(scenes, versions, 30.0) is None
    assert all(min(abs((t - v).days) for v in versions) <= 30 for t in scenes)


def test_reference_version_keys() -> None:
    assert reference_version_key(CLOUD_REFERENCE_ASSET, 1) == CLOUD_REFERENCE_ASSET
    assert reference_version_key(CLOUD_REFERENCE_ASSET, 3) == "cloud-reference-v3"
    assert reference_base_key("cloud-reference-v3") == (CLOUD_REFERENCE_ASSET, 3)
    assert reference_base_key(CLOUD_REFERENCE_ASSET) == (CLOUD_REFERENCE_ASSET, 1)
    assert reference_base_key(REFERENCE_ASSET) == (REFERENCE_ASSET, 1)
    for other in ("cloud-reference-v1", "cloud-reference-vx", "B04", "thumbnail-v2"):
        assert reference_base_key(other) is None


def test_refresh_option_is_validated_and_kept_out_of_the_hash_at_its_default() -> None:
    cfg = CloudMaskConfig(temporal_threshold=0.03)
    assert cfg.temporal_refresh_days == 30.0
    assert "temporal_refresh_days" not in to_dict(cfg, for_hash=True)
    assert to_dict(dataclasses.replace(cfg, temporal_refresh_days=60.0), for_hash=True)[
        "temporal_refresh_days"
    ] == pytest.approx(60.0)
    assert (
        to_dict(dataclasses.replace(cfg, temporal_refresh_days=None), for_hash=True)[
            "temporal_refresh_days"
        ]
        is None
    )
    for bad in (0.0, 0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="temporal_refresh_days"):
            CloudMaskConfig(temporal_refresh_days=bad)


# ------------------------------------------------------------------ the step


@pytest.fixture(scope="module")
def clear_and_cloudy(sample: Sample) -> tuple[SampleScenePixels, SampleScenePixels]:
    """The clear date (with its nodata wedge) and the ~40 % cloud date; SCL only (no TOA)."""
    return scene_from_sample(sample, 3, toa_resolution=None), scene_from_sample(
        sample, 2, toa_resolution=None
    )


def _with_reference(
    px: SampleScenePixels, ref: np.ndarray, days: float, version: str | None = None
) -> Scene:
    scene = px.scene
    when = dt.datetime.fromisoformat(scene.source_properties["datetime"]) - dt.timedelta(days)
    layer = AuxLayer(
        ref[None].astype(np.float32), scene.geobox, ("B02",), "test#ref", when, version=version
    )
    return scene.replace(aux={**scene.aux, "clear_reference": layer})


def test_a_reference_beyond_the_refresh_gap_is_not_used(
    clear_and_cloudy: tuple[SampleScenePixels, SampleScenePixels],
) -> None:
    """A scene whose nearest version lies beyond ``temporal_refresh_days`` (its refresh failed)
    is masked without the test, and the record says why; within the gap, or with refresh off,
    the test runs with the gap's threshold, and the record names the version."""
    px = clear_and_cloudy[0]
    ref = px.scene.bands["B02"] - np.float32(0.2)  # far darker: the test flags everything
    cfg = CloudMaskConfig(method="scl", shadows="none", temporal_threshold=0.03)
    step = CloudMaskStep()
    plain = step.run(px.scene, dataclasses.replace(cfg, temporal_threshold=None))
    far = step.run(_with_reference(px, ref, 45.0, "cloud-reference-v2"), cfg)
    rec = far.record.results["temporal"]
    assert rec["status"].startswith("skipped: the nearest clear-sky reference is 45 days")
    assert rec["reference_version"] == "cloud-reference-v2" and rec["gap_days"] == 45.0
    assert np.array_equal(far.scene.classes["CLOUD_MASK"], plain.scene.classes["CLOUD_MASK"])
    near = step.run(_with_reference(px, ref, 30.0, "cloud-reference-v2"), cfg)
    rec = near.record.results["temporal"]
    assert rec["status"] == "applied" and rec["reference_version"] == "cloud-reference-v2"
    assert rec["threshold"] == pytest.approx(0.06) and rec["added_fraction"] > 0.9
    frozen = dataclasses.replace(cfg, temporal_refresh_days=None)  # the old behaviour
    old = step.run(_with_reference(px, ref, 365.0), frozen).record.results["temporal"]
    assert old["status"] == "applied" and old["threshold"] == pytest.approx(0.03 * (1 + 365 / 30))
    assert "reference_version" not in old  # an input that is no stored version


def test_deferred_test_is_the_same_test_applied_later(
    clear_and_cloudy: tuple[SampleScenePixels, SampleScenePixels],
) -> None:
    """Deferred, :meth:`run` leaves the test out (recorded); applied to the same pixels it gives
    the mask, fractions and cloud cover of the test run in place, and records whether the
    pixels were co-registered. A record that deferred nothing is left alone."""
    px = clear_and_cloudy[1]
    clear_blue = np.where(np.isin(px.truth, (1, 2, 3, 4)), np.nan, px.scene.bands["B02"])
    ref = np.where(np.isfinite(clear_blue), clear_blue, np.float32(0.04))
    scene = _with_reference(px, ref, 3.0)
    cfg = CloudMaskConfig(method="scl", shadows="scl", temporal_threshold=0.03)
    inline = CloudMaskStep().run(scene, cfg)
    deferring = CloudMaskStep(defer_temporal=True)
    first = deferring.run(scene, cfg)
    assert first.record.results["temporal"] == {"status": TEMPORAL_DEFERRED}
    before = first.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    later = deferring.apply_deferred_temporal(first.scene, cfg, first.record, coregistered=True)
    mask = later.scene.classes["CLOUD_MASK"]
    assert np.array_equal(mask, inline.scene.classes["CLOUD_MASK"])
    assert (mask == MASK_CLOUD).sum() > before.sum()  # the test added thin cloud
    res, want = later.record.results, inline.record.results
    assert res["temporal"] == {**want["temporal"], "on_coregistered_pixels": True}
    for key in ("cloud_fraction", "shadow_fraction", "clear_fraction", "valid_fraction"):
        assert res[key] == pytest.approx(want[key]), key
    assert later.scene.properties["eo:cloud_cover"] == inline.scene.properties["eo:cloud_cover"]
    assert later.record.parameters == first.record.parameters and later.write
    assert np.array_equal(first.scene.classes["CLOUD_MASK"] == MASK_CLOUD, before)  # not mutated
    again = deferring.apply_deferred_temporal(later.scene, cfg, later.record, coregistered=True)
    assert again.record is later.record and again.scene is later.scene


def test_deferred_test_can_filter_the_scene(
    clear_and_cloudy: tuple[SampleScenePixels, SampleScenePixels],
) -> None:
    """``max_cloud_fraction`` is decided again on the mask with the test's clouds."""
    px = clear_and_cloudy[0]
    ref = px.scene.bands["B02"] - np.float32(0.2)
    cfg = CloudMaskConfig(
        method="scl", shadows="none", temporal_threshold=0.03, max_cloud_fraction=0.5
    )
    step = CloudMaskStep(defer_temporal=True)
    first = step.run(_with_reference(px, ref, 0.0), cfg)
    assert first.write and first.record.results["cloud_fraction"] < 0.5
    later = step.apply_deferred_temporal(first.scene, cfg, first.record, coregistered=False)
    assert not later.write and later.skip is not None
    assert "max_cloud_fraction" in later.skip.message
    assert later.record.results["temporal"]["on_coregistered_pixels"] is False
    mask = later.scene.classes["CLOUD_MASK"]
    valid = mask != MASK_NODATA
    assert (mask[valid] == MASK_CLOUD).mean() > 0.9 and not (mask == MASK_CLEAR).all()
    assert later.scene.properties["eo:cloud_cover"] > 90.0
