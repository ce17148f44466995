"""The cloud-masking step on the generated sample (known cloud and shadow pixels) and on
constructed scenes with a known answer."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube.errors import ConfigError, StepError
from stac2cube.sample import Sample
from stac2cube.sample.scenes import SampleScenePixels, aux_geobox, scene_from_sample
from stac2cube.steps.base import AuxLayer, Scene, Step
from stac2cube.steps.cloudmask import (
    MASK_CLASSES,
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_NODATA,
    MASK_SHADOW,
    PROB_NODATA,
    S2CLOUDLESS_BANDS,
    CloudMaskConfig,
    CloudMaskStep,
    shadow_offsets,
    temporal_cloud_test,
    upsample_bilinear,
)

pytest.importorskip("s2cloudless")

STEP = CloudMaskStep()
CLOUD_TRUTH = (1, 2, 3)


@pytest.fixture(scope="module")
def scenes(sample: Sample) -> list[SampleScenePixels]:
    """The 4 sample dates (true cloud ~5 %, ~20 %, ~40 %, 0 % with a nodata wedge), TOA from L1C."""
    return [scene_from_sample(sample, i) for i in range(len(sample.scenes))]


def _cloud(scene: Scene, cfg: CloudMaskConfig) -> np.ndarray:
    out: np.ndarray = STEP.run(scene, cfg).scene.classes["CLOUD_MASK"] == MASK_CLOUD
    return out


def test_step_follows_the_protocol() -> None:
    assert isinstance(STEP, Step)
    req = STEP.required_aux(CloudMaskConfig(resolution=20.0))["toa"]
    assert req.bands == S2CLOUDLESS_BANDS and req.resolution == 20.0 and req.level == "l1c"
    assert STEP.required_aux(CloudMaskConfig(l1c="never"))["toa"].level == "l2a"
    assert STEP.required_aux(CloudMaskConfig(method="scl")) == {}
    assert "toa" in STEP.required_aux(CloudMaskConfig(method="scl", thresholds=(0.3,)))


def test_thick_clouds_are_detected(scenes: list[SampleScenePixels]) -> None:
    px = scenes[2]
    cloud = _cloud(px.scene, CloudMaskConfig(method="s2cloudless", shadows="none"))
    thick = px.truth == 1
    assert thick.sum() > 1000
    assert cloud[thick].mean() > 0.9
    clear = px.truth == 0
    assert cloud[clear].mean() < 0.2


def test_clear_scene_has_low_cloud_fraction(scenes: list[SampleScenePixels]) -> None:
    px = scenes[3]
    assert not np.isin(px.truth, CLOUD_TRUTH).any()
    for method in ("s2cloudless", "union"):
        res = STEP.run(px.scene, CloudMaskConfig(method=method))  # type: ignore[arg-type]
        assert res.record.results["cloud_fraction"] < 0.05
        assert res.scene.properties["eo:cloud_cover"] < 5
        assert res.write


def test_outputs_layers_and_record(scenes: list[SampleScenePixels]) -> None:
    px = scenes[3]  # has the nodata wedge
    cfg = CloudMaskConfig(thresholds=(0.2, 0.6))
    res = STEP.run(px.scene, cfg)
    out = res.scene
    prob, mask = out.classes["CLOUD_PROB"], out.classes["CLOUD_MASK"]
    assert prob.dtype == np.uint8 and mask.dtype == np.uint8
    assert prob.shape == mask.shape == px.scene.geobox.shape.yx
    nodata = px.truth == 255
    assert nodata.any()
    assert (mask[nodata] == MASK_NODATA).all() and (prob[nodata] == PROB_NODATA).all()
    known = mask != MASK_NODATA
    assert known.mean() > 0.8
    assert ((prob[known] <= 100) | (prob[known] == PROB_NODATA)).all()
    assert (prob[known] <= 100).mean() > 0.98  # the 60 m TOA may miss the wedge's edge
    assert set(np.unique(mask)) <= set(MASK_CLASSES)
    assert out.layer_info["CLOUD_MASK"].classes[MASK_CLOUD] == "cloud"
    assert out.layer_info["CLOUD_PROB"].nodata == PROB_NODATA
    for name in ("CLOUD_T020", "CLOUD_T060"):
        assert set(np.unique(out.classes[name])) <= {0, 1, 255}
        assert out.layer_info[name].nodata == 255
    assert "SCL" in out.classes and out.bands is px.scene.bands
    rec = res.record
    assert rec.name == "cloudmask" and rec.version
    json.dumps(rec.to_dict())  # parameters and results are JSON
    assert rec.parameters["thresholds"] == [0.2, 0.6]
    assert rec.results["toa_source"].startswith("l1c:")
    assert rec.results["b10_handling"] == "l1c"
    valid = ~nodata
    assert rec.results["valid_fraction"] == pytest.approx(valid.mean(), abs=0.01)
    f = rec.results
    assert f["cloud_fraction"] + f["shadow_fraction"] + f["clear_fraction"] == pytest.approx(1.0)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(1, 98), st.integers(1, 98))
def test_masks_are_monotonic_in_the_threshold(
    scenes: list[SampleScenePixels], a: int, b: int
) -> None:
    lo, hi = sorted((a, a + 1 + b % (99 - a)))
    assert lo < hi <= 99
    cfg = CloudMaskConfig(method="s2cloudless", shadows="none", thresholds=(lo / 100, hi / 100))
    out = STEP.run(scenes[1].scene, cfg).scene.classes
    m_lo = out[f"CLOUD_T{lo:03d}"] == 1
    m_hi = out[f"CLOUD_T{hi:03d}"] == 1
    assert not (m_hi & ~m_lo).any()


def test_combinations_are_nested(scenes: list[SampleScenePixels]) -> None:
    scene = scenes[2].scene
    m = {
        method: _cloud(scene, CloudMaskConfig(method=method, shadows="none"))  # type: ignore[arg-type]
        for method in ("s2cloudless", "scl", "union", "intersection")
    }
    for one in ("s2cloudless", "scl"):
        assert not (m[one] & ~m["union"]).any()
        assert not (m["intersection"] & ~m[one]).any()
    assert m["union"].sum() > m["intersection"].sum()


def _constructed(
    azimuth: float, zenith: float, height: float
) -> tuple[Scene, np.ndarray, np.ndarray]:
    """Vegetation (NIR 0.3), one cloud (SCL 9) and its shadow (NIR 0.06) cast from ``height``."""
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


@pytest.mark.parametrize(
    ("azimuth", "zenith", "height"), [(150.0, 35.0, 1500.0), (30.0, 50.0, 800.0)]
)
def test_geometric_shadow_recovers_the_offset(azimuth: float, zenith: float, height: float) -> None:
    scene, cloud, shadow = _constructed(azimuth, zenith, height)
    cfg = CloudMaskConfig(method="scl", shadows="geometric", dilation_size=0.0)
    res = STEP.run(scene, cfg)
    assert res.record.results["shadow_height_m"] == pytest.approx(height, abs=100.0)
    found = res.scene.classes["CLOUD_MASK"] == MASK_SHADOW
    iou = (found & shadow).sum() / (found | shadow).sum()
    assert iou > 0.9
    # the shadow lies away from the sun: rows grow southward, columns eastward
    d_north = -(np.nonzero(found)[0].mean() - np.nonzero(cloud)[0].mean())
    d_east = np.nonzero(found)[1].mean() - np.nonzero(cloud)[1].mean()
    az = math.radians(azimuth)
    assert d_north * math.cos(az) + d_east * math.sin(az) < 0


def test_scl_shadows_only_where_listed(scenes: list[SampleScenePixels]) -> None:
    scene = scenes[2].scene
    scl = scene.classes["SCL"]
    mask = STEP.run(scene, CloudMaskConfig(method="scl", shadows="scl")).scene.classes["CLOUD_MASK"]
    np.testing.assert_array_equal(mask == MASK_SHADOW, (scl == 3) & (mask != MASK_NODATA))
    none = STEP.run(scene, CloudMaskConfig(method="scl", shadows="none")).scene.classes[
        "CLOUD_MASK"
    ]
    assert not (none == MASK_SHADOW).any()


def test_s2cloudless_on_l2a_runs_only_when_asked_and_is_recorded(sample: Sample) -> None:
    px = scene_from_sample(sample, 2, toa="l2a")
    assert np.isnan(px.scene.aux["toa"].data[S2CLOUDLESS_BANDS.index("B10")]).all()
    never = CloudMaskConfig(method="s2cloudless", shadows="none", l1c="never")
    res = STEP.run(px.scene, never)
    assert res.record.results["toa_source"] == "l2a"
    assert res.record.results["b10_handling"].startswith("constant")
    assert (res.scene.classes["CLOUD_PROB"] <= 100).mean() > 0.9
    # s2cloudless on surface reflectance is outside what it was trained on: under the default
    # `auto` an L2A layer is not used, SCL masks the scene and catches the thick clouds
    res = STEP.run(px.scene, CloudMaskConfig())
    assert "toa_source" not in res.record.results
    assert res.record.results["s2cloudless"]["status"] == "not run"
    cloud = res.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    assert cloud[px.truth == 1].mean() > 0.8
    with pytest.raises(StepError, match="L1C"):
        STEP.run(px.scene, CloudMaskConfig(l1c="require"))


def test_missing_scl_is_a_clear_error(scenes: list[SampleScenePixels]) -> None:
    scene = scenes[0].scene
    no_scl = scene.replace(classes={})
    with pytest.raises(StepError, match="add SCL to `bands`"):
        STEP.run(no_scl, CloudMaskConfig())  # union + SCL shadows
    res = STEP.run(no_scl, CloudMaskConfig(method="s2cloudless", shadows="geometric"))
    assert res.record.results["shadow_nir"] == "l2a:B08"


def test_all_nodata_scene_is_not_written(scenes: list[SampleScenePixels]) -> None:
    scene = scenes[0].scene
    empty = scene.replace(
        bands={b: np.full_like(a, np.nan) for b, a in scene.bands.items()},
        classes={"SCL": np.zeros_like(scene.classes["SCL"])},
        aux={
            "toa": scene.aux["toa"].__class__(
                np.full_like(scene.aux["toa"].data, np.nan),
                scene.aux["toa"].geobox,
                scene.aux["toa"].bands,
                scene.aux["toa"].source,
            )
        },
    )
    res = STEP.run(empty, CloudMaskConfig())
    assert not res.write
    assert res.record.results["valid_fraction"] == 0.0
    assert res.skip is not None and res.skip.code == "no-valid-pixel"
    assert "no valid pixel" in res.skip.message
    assert (res.scene.classes["CLOUD_MASK"] == MASK_NODATA).all()
    assert (res.scene.classes["CLOUD_PROB"] == PROB_NODATA).all()


def test_all_cloud_scene_and_max_cloud_fraction(scenes: list[SampleScenePixels]) -> None:
    scene = scenes[0].scene
    overcast = scene.replace(classes={"SCL": np.full_like(scene.classes["SCL"], 9)})
    cfg = CloudMaskConfig(method="scl", shadows="both")
    res = STEP.run(overcast, cfg)
    assert res.write and res.record.results["cloud_fraction"] == 1.0
    assert res.scene.properties["eo:cloud_cover"] == 100.0
    assert res.record.results["shadow_height_m"] is None  # nothing to cast a shadow on
    res = STEP.run(overcast, CloudMaskConfig(method="scl", max_cloud_fraction=0.5))
    assert not res.write and res.skip is not None and res.skip.code == "too-cloudy"
    assert "max_cloud_fraction" in res.skip.message
    clear = STEP.run(scenes[3].scene, CloudMaskConfig(max_cloud_fraction=0.5))
    assert clear.write and (clear.scene.classes["CLOUD_MASK"] == MASK_CLEAR).mean() > 0.8


def test_upsampling_is_bilinear() -> None:
    fine = GeoBox((120, 120), Affine(10.0, 0, 500000.0, 0, -10.0, 5300000.0), "EPSG:32633")
    coarse = aux_geobox(fine, 60.0)
    cx = coarse.affine.c + (np.arange(coarse.shape.x) + 0.5) * 60.0
    ramp = np.broadcast_to((cx / 1000.0).astype(np.float32), coarse.shape.yx).copy()
    up = upsample_bilinear(ramp, coarse, fine)
    fx = fine.affine.c + (np.arange(120) + 0.5) * 10.0
    inner = (fx > cx[0]) & (fx < cx[-1])
    np.testing.assert_allclose(
        up[:, inner], np.broadcast_to(fx[inner] / 1000.0, (120, inner.sum())), rtol=1e-6
    )
    ramp[2, 2] = np.nan
    assert np.isfinite(upsample_bilinear(ramp, coarse, fine)).all()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"threshold": 1.5}, "steps.cloudmask.threshold"),
        ({"thresholds": (0.3, 0.301)}, "steps.cloudmask.thresholds"),
        ({"thresholds": (0.0,)}, "steps.cloudmask.thresholds"),
        ({"average_over": -1.0}, "steps.cloudmask.average_over"),
        ({"dilation_size": math.nan}, "steps.cloudmask.dilation_size"),
        ({"resolution": 5.0}, "steps.cloudmask.resolution"),
        ({"scl_classes": (8, 12)}, "steps.cloudmask.scl_classes"),
        ({"scl_classes": (3,)}, "steps.cloudmask.scl_classes"),
        ({"scl_classes": (8, 9), "shadows": "scl"}, "steps.cloudmask.shadows"),
        ({"shadow_heights": (3000.0, 1000.0, 100.0)}, "steps.cloudmask.shadow_heights"),
        ({"dark_nir": 0.0}, "steps.cloudmask.dark_nir"),
        ({"max_cloud_fraction": 40.0}, "steps.cloudmask.max_cloud_fraction"),
        ({"method": "fmask"}, "steps.cloudmask.method"),
        ({"l1c": "always"}, "steps.cloudmask.l1c"),
        ({"temporal_threshold": 0.0}, "steps.cloudmask.temporal_threshold"),
        ({"temporal_threshold": 3.0}, "steps.cloudmask.temporal_threshold"),
        ({"temporal_days": 0.0}, "steps.cloudmask.temporal_days"),
        ({"temporal_scenes": 0}, "steps.cloudmask.temporal_scenes"),
    ],
)
def test_config_validation_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        CloudMaskConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_yaml_mapping() -> None:
    from stac2cube.fields import build as _build

    cfg = _build(
        CloudMaskConfig,
        {"threshold": 0.5, "thresholds": [0.3], "shadows": "scl"},
        "steps.cloudmask",
    )
    assert cfg.threshold == 0.5 and cfg.thresholds == (0.3,)
    with pytest.raises(ConfigError, match=r"steps\.cloudmask\.treshold; did you mean 'threshold'"):
        _build(CloudMaskConfig, {"treshold": 0.5}, "steps.cloudmask")


def test_b10_cirrus_test_adds_thin_cirrus(scenes: list[SampleScenePixels]) -> None:
    """A patch of B10 TOA reflectance above ``cirrus_threshold`` becomes cloud (with an L1C twin),
    and only with the test on."""
    base = scenes[3].scene  # the clear date
    toa = base.aux["toa"]
    assert toa.source.startswith("l1c:")
    data = np.array(toa.data, copy=True)
    b10 = S2CLOUDLESS_BANDS.index("B10")
    h, w = data.shape[1:]
    data[b10, h // 3 : h // 2, w // 3 : w // 2] = 0.03  # thin cirrus: 3 % TOA at 1375 nm
    scene = base.replace(aux={"toa": dataclasses.replace(toa, data=data)})
    assert CloudMaskConfig().cirrus_threshold is None  # off by default (high terrain, snow)
    cfg = CloudMaskConfig(method="s2cloudless", shadows="none", cirrus_threshold=0.012)
    with_test = STEP.run(scene, cfg)
    without = STEP.run(scene, dataclasses.replace(cfg, cirrus_threshold=None))
    on = with_test.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    off = without.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    gy, gx = base.geobox.shape.yx
    centre = (slice(gy * 2 // 5, gy * 9 // 20), slice(gx * 2 // 5, gx * 9 // 20))
    assert on[centre].all() and off[centre].mean() < 0.5
    assert (on & ~off).sum() > 0.8 * on[centre].size
    assert with_test.record.results["cirrus_fraction"] > 0.01
    assert "cirrus_fraction" not in without.record.results


def test_b10_cirrus_test_leaves_snow_alone(scenes: list[SampleScenePixels]) -> None:
    """Clear snow over dry high terrain reflects above 0.012 at 1375 nm: where the L2A bands say
    snow (NDSI > 0.4, B08 > 0.11) the cirrus test does not flag it."""
    base = scenes[3].scene  # the clear date
    toa = base.aux["toa"]
    data = np.array(toa.data, copy=True)
    b10 = S2CLOUDLESS_BANDS.index("B10")
    data[b10] = 0.02  # everywhere above the cirrus threshold
    gh, gw = base.geobox.shape.yx
    snow = np.zeros((gh, gw), dtype=bool)
    snow[: gh // 2] = True
    bands = dict(base.bands)
    bands["B03"] = np.where(snow, 0.8, bands["B03"]).astype(np.float32)
    bands["B08"] = np.where(snow, 0.75, bands["B08"]).astype(np.float32)
    bands["B11"] = np.where(snow, 0.05, bands["B11"]).astype(np.float32)
    scene = base.replace(bands=bands, aux={"toa": dataclasses.replace(toa, data=data)})
    cfg = CloudMaskConfig(method="s2cloudless", shadows="none", cirrus_threshold=0.012)
    res = STEP.run(scene, cfg)
    cloud = res.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    inner = (slice(gh // 8, gh * 3 // 8), slice(gw // 8, gw * 7 // 8))
    assert cloud[inner].mean() < 0.05  # snow: not cirrus
    assert cloud[gh * 5 // 8 :].mean() > 0.9  # the rest still is
    assert res.record.results["cirrus_snow_from"] == "ndsi"
    assert res.record.results["cirrus_snow_excluded_fraction"] > 0.3


# ------------------------------------------------------------------ multi-temporal cloud test


def test_temporal_test_threshold_grows_with_the_gap() -> None:
    ref = np.full((2, 3), 0.05, dtype=np.float32)
    blue = ref + np.array([[0.02, 0.035, 0.05], [0.08, np.nan, 0.1]], dtype=np.float32)
    ref[1, 2] = np.nan
    hit, thr = temporal_cloud_test(blue, ref, 0.03)
    assert thr == pytest.approx(0.03)
    assert hit.tolist() == [[False, True, True], [True, False, False]]  # NaN never flags
    hit, thr = temporal_cloud_test(blue, ref, 0.03, gap_days=30.0, days_scale=30.0)
    assert thr == pytest.approx(0.06)
    assert hit.tolist() == [[False, False, False], [True, False, False]]


def _with_reference(px: SampleScenePixels, ref: np.ndarray, days: float = 0.0) -> Scene:
    import datetime as dt

    scene = px.scene
    when = dt.datetime.fromisoformat(scene.source_properties["datetime"]) - dt.timedelta(days)
    layer = AuxLayer(ref[None].astype(np.float32), scene.geobox, ("B02",), "test#ref", when)
    return scene.replace(aux={**scene.aux, "clear_reference": layer})


def test_temporal_test_catches_thin_cloud_the_other_tests_miss(
    scenes: list[SampleScenePixels],
) -> None:
    """Against the noise-free clear surface of the date, the test finds the thin cloud and
    cirrus that s2cloudless and SCL miss, adds almost nothing on clear ground, and only with it
    on; the record says what it did."""
    px = scenes[2]  # ~40 % true cloud: thick, thin and cirrus
    clear_blue = px.scene.bands["B02"].copy()
    clear_blue[np.isin(px.truth, (1, 2, 3, 4))] = np.nan
    # the reference: this date's blue where clear, the clear date's blue elsewhere
    ref = np.where(np.isfinite(clear_blue), clear_blue, scenes[3].scene.bands["B02"])
    cfg = CloudMaskConfig(shadows="none", temporal_threshold=0.03)
    res = STEP.run(_with_reference(px, ref), cfg)
    off = STEP.run(px.scene, dataclasses.replace(cfg, temporal_threshold=None))
    on_m = res.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    off_m = off.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    thin = np.isin(px.truth, (2, 3))
    clear = px.truth == 0
    assert (on_m & ~off_m).sum() > 0  # the test added pixels
    # it recovers over 10 % of the thin cloud and cirrus the others miss (the sample's truth
    # counts the parallax rims that only some bands see, which blue cannot catch)
    assert on_m[thin].mean() - off_m[thin].mean() > 0.1 * (1.0 - off_m[thin].mean())
    assert on_m[clear].mean() < off_m[clear].mean() + 0.005
    assert not (off_m & ~on_m).any()  # it only adds
    rec = res.record.results["temporal"]
    assert rec["status"] == "applied" and rec["gap_days"] == 0.0
    assert rec["added_fraction"] > 0.0 and rec["reference"] == "test#ref"
    assert "temporal" not in off.record.results
    assert "multi-temporal" in res.scene.layer_info["CLOUD_MASK"].description


def test_temporal_test_spares_snow_and_allows_for_the_gap(scenes: list[SampleScenePixels]) -> None:
    px = scenes[3]  # the clear date
    ref = px.scene.bands["B02"] - np.float32(0.045)  # everything 0.045 brighter than the reference
    cfg = CloudMaskConfig(method="scl", shadows="none", temporal_threshold=0.03)
    near = STEP.run(_with_reference(px, ref, days=0.0), cfg)
    far = STEP.run(_with_reference(px, ref, days=30.0), cfg)  # threshold 0.06 > 0.045
    off = STEP.run(px.scene, dataclasses.replace(cfg, temporal_threshold=None))
    near_m = near.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    valid = near.scene.classes["CLOUD_MASK"] != MASK_NODATA
    off_m = off.scene.classes["CLOUD_MASK"] == MASK_CLOUD
    assert off_m[valid].mean() < 0.05 and near_m[valid].mean() > 0.95
    assert np.array_equal(far.scene.classes["CLOUD_MASK"], off.scene.classes["CLOUD_MASK"])
    assert far.record.results["temporal"]["threshold"] == pytest.approx(0.06)
    snow_scl = px.scene.classes["SCL"].copy()
    snow_scl[valid] = 11  # all valid pixels snow: the test must not call snow cloud
    snowy = _with_reference(px, ref).replace(classes={**px.scene.classes, "SCL": snow_scl})
    snow_res = STEP.run(snowy, cfg)  # SCL says snow everywhere: neither SCL nor the test flags
    assert (snow_res.scene.classes["CLOUD_MASK"] == MASK_CLOUD).sum() == 0


def test_temporal_test_without_reference_is_skipped_and_recorded(
    scenes: list[SampleScenePixels],
) -> None:
    px = scenes[1]
    cfg = CloudMaskConfig(shadows="none", temporal_threshold=0.03)
    res = STEP.run(px.scene, cfg)
    plain = STEP.run(px.scene, dataclasses.replace(cfg, temporal_threshold=None))
    assert res.record.results["temporal"]["status"].startswith("skipped")
    assert np.array_equal(res.scene.classes["CLOUD_MASK"], plain.scene.classes["CLOUD_MASK"])
    req = STEP.required_aux(cfg)["clear_reference"]
    assert req.level == "cloud-reference" and req.bands == ("B02",) and req.resolution == 0.0
    assert "clear_reference" not in STEP.required_aux(CloudMaskConfig())
    no_blue = px.scene.replace(bands={k: v for k, v in px.scene.bands.items() if k != "B02"})
    ref = _with_reference(px, px.scene.bands["B02"]).aux["clear_reference"]
    with pytest.raises(StepError, match="B02"):
        STEP.run(no_blue.replace(aux={**no_blue.aux, "clear_reference": ref}), cfg)
