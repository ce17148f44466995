"""The quality step (stac2cube/steps/quality/): per-pixel layers recovered from inputs with known
answers (saturated DNs, nodata, cloud tests that did not run, SCL classes, angles), the bit-packed
QA layer, and the scene run in blocks giving the layers and record of the scene run whole."""

from __future__ import annotations

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube.angles import ANGLE_BANDS
from stac2cube.bands import CLOUD_TESTS_PROPERTY, MASK_CLEAR, MASK_CLOUD, MASK_NODATA, MASK_SHADOW
from stac2cube.errors import ConfigError
from stac2cube.steps.base import AuxLayer, BlockStep, Scene
from stac2cube.steps.quality import QA_BITS, QA_NODATA, QualityConfig, saturation_reflectance
from stac2cube.steps.quality.layers import ANGLE_NODATA, MASK_FILL
from stac2cube.steps.quality.step import QualityStep
from stac2cube.testing.sources import ArraySource, run_in_blocks

STEP = QualityStep()
SHAPE = (6, 8)
GBOX = GeoBox(SHAPE, Affine(10.0, 0, 500000.0, 0, -10.0, 5300000.0), "EPSG:32633")
BIT = {b.name: b.bit for b in QA_BITS}


def _scene(**changes: object) -> Scene:
    rng = np.random.default_rng(1)
    bands = {b: rng.uniform(0.02, 0.4, SHAPE).astype(np.float32) for b in ("B04", "B02", "B11")}
    scl = np.full(SHAPE, 4, np.uint8)
    mask = np.full(SHAPE, MASK_CLEAR, np.uint8)
    base = Scene(
        item_id="x",
        geobox=GBOX,
        bands=bands,
        classes={"SCL": scl, "CLOUD_MASK": mask},
        properties={CLOUD_TESTS_PROPERTY: {"s2cloudless": "run", "scl": "run"}},
    )
    return base.replace(**changes)


def _bit(qa: np.ndarray, name: str) -> np.ndarray:
    return ((qa >> BIT[name]) & 1).astype(bool)


def test_saturation_per_band_from_the_dn_value_and_scl() -> None:
    scene = _scene()
    bands = {k: v.copy() for k, v in scene.bands.items()}
    bands["B04"][0, 0] = 65535 * 1e-4 - 0.1  # DN 65535 with the -1000 offset
    bands["B02"][0, 1] = 65535 * 1e-4  # DN 65535 without offset
    bands["B11"][0, 2] = 6.40  # bright, but below any saturated DN's reflectance
    bands["B02"][5, 7] = bands["B04"][5, 7] = bands["B11"][5, 7] = np.nan  # no data
    scl = scene.classes["SCL"].copy()
    scl[1, 1] = 1  # Sen2Cor: saturated or defective, band unknown
    scene = scene.replace(bands=bands, classes={**scene.classes, "SCL": scl})
    out = STEP.run(scene, QualityConfig()).scene
    sat = out.classes["SATURATION"]
    # bits in Sentinel-2 band order: B02 bit 0, B04 bit 1, B11 bit 2
    assert out.layer_info["SATURATION"].bitfields == {0: "B02", 1: "B04", 2: "B11"}
    assert sat[0, 0] == 0b010 and sat[0, 1] == 0b001 and sat[0, 2] == 0
    assert sat[1, 1] == 0b111
    assert sat[5, 7] == np.iinfo(np.uint16).max
    assert int((sat != 0).sum()) == 4  # the three flagged pixels and nodata
    qa = out.classes["QA"]
    assert _bit(qa, "saturation").sum() == 3
    assert qa[5, 7] == QA_NODATA
    assert saturation_reflectance(65535) < 65535 * 1e-4 - 0.1


def test_incomplete_testing_where_a_cloud_test_could_not_run() -> None:
    scene = _scene()
    mask = scene.classes["CLOUD_MASK"].copy()
    mask[0, :] = MASK_NODATA  # the cloud step had no valid input here
    prob = np.full(SHAPE, 10, np.uint8)
    prob[2, 3] = 255  # s2cloudless had no L1C pixel here
    bands = {k: v.copy() for k, v in scene.bands.items()}
    bands["B11"][4, 4] = np.nan  # one input band without data
    scene = scene.replace(
        bands=bands, classes={**scene.classes, "CLOUD_MASK": mask, "CLOUD_PROB": prob}
    )
    out = STEP.run(scene, QualityConfig()).scene
    inc = out.classes["INCOMPLETE_TESTING"]
    expected = np.zeros(SHAPE, bool)
    expected[0, :] = expected[2, 3] = expected[4, 4] = True
    np.testing.assert_array_equal(inc.astype(bool), expected)
    qa = out.classes["QA"]
    assert qa[4, 4] == QA_NODATA  # no data: that alone (FORCE-style)
    expected[4, 4] = False
    np.testing.assert_array_equal(_bit(qa, "incomplete_testing"), expected)
    # a configured test that did not run over the scene: every pixel
    untested = scene.replace(
        properties={CLOUD_TESTS_PROPERTY: {"s2cloudless": "not run: no L1C twin", "scl": "run"}}
    )
    assert STEP.run(untested, QualityConfig()).scene.classes["INCOMPLETE_TESTING"].all()
    # no cloud step at all: every pixel, and no cloud or shadow layer
    bare = _scene(classes={"SCL": scene.classes["SCL"]}, properties={})
    result = STEP.run(bare, QualityConfig())
    assert result.scene.classes["INCOMPLETE_TESTING"].all()
    assert "CLOUD" not in result.scene.classes and "CLOUD_SHADOW" not in result.scene.classes
    assert result.record.results["cloud"] == "not assessed: no cloud step"


def test_cloud_shadow_snow_water_flags() -> None:
    scene = _scene()
    mask = scene.classes["CLOUD_MASK"].copy()
    mask[1, 2], mask[3, 3], mask[0, 0] = MASK_CLOUD, MASK_SHADOW, MASK_NODATA
    scl = scene.classes["SCL"].copy()
    scl[2, 2], scl[4, 1], scl[5, 5] = 11, 6, 0
    out = STEP.run(scene.replace(classes={"SCL": scl, "CLOUD_MASK": mask}), QualityConfig())
    c = out.scene.classes
    assert c["CLOUD"][1, 2] == 1 and c["CLOUD"].sum() - MASK_FILL == 1  # one cloud, one fill
    assert c["CLOUD"][0, 0] == MASK_FILL and c["CLOUD_SHADOW"][3, 3] == 1
    assert c["SNOW_ICE"][2, 2] == 1 and c["LAND_WATER"][4, 1] == 1
    assert c["SNOW_ICE"][5, 5] == MASK_FILL == c["LAND_WATER"][5, 5]
    qa = c["QA"]
    assert _bit(qa, "cloud")[1, 2] and _bit(qa, "cloud_shadow")[3, 3]
    assert _bit(qa, "snow_ice")[2, 2] and _bit(qa, "water")[4, 1] and _bit(qa, "no_scl")[5, 5]
    assert _bit(qa, "no_angles").all()  # no angles were given
    fr = out.record.results["fractions"]
    assert fr["cloud"] == pytest.approx(1 / 48, abs=1e-6) == fr["water"]
    # the roles CEOS-ARD names, and classes that say what each value means
    info = out.scene.layer_info
    assert info["CLOUD"].roles == ("metadata", "cloud")
    assert info["LAND_WATER"].classes == {0: "not_water", 1: "water"}
    assert set(info["QA"].roles) >= {"cloud", "cloud-shadow", "saturation", "incomplete-testing"}


def test_angle_layers_and_low_sun() -> None:
    angles = np.empty((4, *SHAPE), np.float32)
    angles[0] = np.linspace(60.0, 80.0, SHAPE[1], dtype=np.float32)  # sun zenith across
    angles[1] = 359.996  # sun azimuth next to north
    angles[2] = 5.25
    angles[3] = 101.5
    angles[:, 5, 7] = np.nan
    aux = {"angles": AuxLayer(angles, GBOX, ANGLE_BANDS, "test grid")}
    out = STEP.run(_scene(aux=aux), QualityConfig(angles=True, low_sun_zenith=75.0))
    c = out.scene.classes
    elev = c["SUN_ELEVATION"].astype(float) * 0.01
    np.testing.assert_allclose(elev[0], 90.0 - angles[0, 0], atol=0.006)
    assert c["SUN_AZIMUTH"][0, 0] in (0, 35999, 36000) and c["SUN_AZIMUTH"][0, 0] < ANGLE_NODATA
    assert c["VIEW_INCIDENCE"][2, 2] == 525 and c["VIEW_AZIMUTH"][2, 2] == 10150
    assert c["VIEW_INCIDENCE"][5, 7] == ANGLE_NODATA
    low = _bit(c["QA"], "low_sun")
    np.testing.assert_array_equal(low[0], angles[0, 0] > 75.0)
    assert out.scene.layer_info["SUN_ELEVATION"].unit == "deg"
    assert out.scene.layer_info["SUN_ELEVATION"].scale == 0.01
    assert out.record.results["angles"] == "test grid"
    # without the option: no angle layers, yet the low-sun bit
    plain = STEP.run(_scene(aux=aux), QualityConfig()).scene.classes
    assert "SUN_ELEVATION" not in plain and _bit(plain["QA"], "low_sun").any()
    # no angles: recorded with the pipeline's reason
    missing = _scene(missing_aux={"angles": "no granule metadata"})
    rec = STEP.run(missing, QualityConfig(angles=True)).record.results
    assert rec["angles"] == "not available: no granule metadata"


def test_blocks_give_the_layers_and_record_of_the_whole_scene() -> None:
    scene = _scene()
    bands = {k: v.copy() for k, v in scene.bands.items()}
    bands["B04"][2, 5] = 6.6
    mask = scene.classes["CLOUD_MASK"].copy()
    mask[1:3, 1:4] = MASK_CLOUD
    angles = np.full((4, *SHAPE), 30.0, np.float32)
    aux = {"angles": AuxLayer(angles, GBOX, ANGLE_BANDS, "grid")}
    scene = scene.replace(bands=bands, classes={**scene.classes, "CLOUD_MASK": mask}, aux=aux)
    cfg = QualityConfig(angles=True)
    whole = STEP.run(scene, cfg)
    assert isinstance(STEP, BlockStep) and STEP.in_blocks(cfg)
    plan = STEP.plan(ArraySource(scene), cfg)
    out, (res,) = run_in_blocks(ArraySource(scene), [plan], 3)
    for key, layer in whole.scene.classes.items():
        np.testing.assert_array_equal(out.classes[key], layer, err_msg=key)
    assert res.record.results == whole.record.results


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="saturation_dn"):
        QualityConfig(saturation_dn=0)
    with pytest.raises(ConfigError, match="low_sun_zenith"):
        QualityConfig(low_sun_zenith=95.0)
