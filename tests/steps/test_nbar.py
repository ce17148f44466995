"""The NBAR step (stac2cube/steps/nbar/): the kernels' known values and laws, the c-factor, and
the step on a generated swath whose surface follows a BRDF other than the method's: the
cross-track gradient shrinks, scenes and pixels without angles are left as they are, and the
scene run in blocks gives the pixels and record of the scene run whole."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube.angles import ANGLE_BANDS
from stac2cube.config import config_from_dict
from stac2cube.errors import ConfigError, StepError
from stac2cube.fields import build
from stac2cube.provenance import StepRecord
from stac2cube.steps.base import (
    AuxLayer,
    AuxRequest,
    BlockStep,
    Scene,
    Skip,
    StepPlan,
    StepResult,
)
from stac2cube.steps.nbar import (
    COEFFICIENTS,
    PLUGIN,
    BrdfCoefficients,
    NbarConfig,
    c_factor,
    kernels,
    li_sparse_reciprocal,
    ross_thick,
)
from stac2cube.steps.nbar.step import ANGLES, PROPERTY, NbarStep
from stac2cube.testing.sources import ArraySource, run_in_blocks

STEP = NbarStep()
BANDS = ("B01", "B02", "B04", "B08", "B11")
SURFACE = BrdfCoefficients(iso=1.0, vol=0.9, geo=0.16)
"""The generated surface's BRDF (relative to its nadir reflectance): more anisotropic than
any band's fixed coefficients (vol/iso 0.24-0.50, geo/iso 0.08-0.15)."""
BASE = {
    "source": {"api": "https://earth-search.aws.element84.com/v1"},
    "aoi": {"bbox": [11.0, 46.0, 11.1, 46.1]},
    "time": {"start": "2023-06-01", "end": "2023-06-30"},
}


# --- kernels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("phi", [0.0, 45.0, 90.0, 180.0, 270.0])
def test_both_kernels_vanish_with_sun_and_view_at_zenith(phi: float) -> None:
    # RossThick: xi = 0, (pi/2 * 1 + 0) / 2 - pi/4 = 0; LiSparse-R: D = 0, t = pi/2, O = 1,
    # 1 - 2 + 0.5 * 2 = 0
    assert ross_thick(0.0, 0.0, phi) == pytest.approx(0.0, abs=1e-12)
    assert li_sparse_reciprocal(0.0, 0.0, phi) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sz", [5.0, 20.0, 35.0, 45.0, 60.0, 75.0])
def test_kernels_with_a_nadir_view_follow_their_closed_forms(sz: float) -> None:
    t = math.radians(sz)
    sec = 1.0 / math.cos(t)
    vol = ((math.pi / 2 - t) * math.cos(t) + math.sin(t)) / (1.0 + math.cos(t)) - math.pi / 4
    cos_t = min(2.0 * math.tan(t) / (sec + 1.0), 1.0)
    tt = math.acos(cos_t)
    geo = (tt - math.sin(tt) * cos_t) * (sec + 1.0) / math.pi - 0.5 * sec - 0.5
    for phi in (0.0, 123.0):  # the relative azimuth does not matter at nadir
        assert ross_thick(sz, 0.0, phi) == pytest.approx(vol, abs=1e-12)
        assert li_sparse_reciprocal(sz, 0.0, phi) == pytest.approx(geo, abs=1e-12)


def test_kernel_values_at_45_degrees_sun_and_at_the_hot_spot() -> None:
    assert ross_thick(45.0, 0.0, 0.0) == pytest.approx(-0.045862, abs=1e-6)
    assert li_sparse_reciprocal(45.0, 0.0, 0.0) == pytest.approx(-1.106819, abs=1e-6)
    for theta in (10.0, 30.0, 50.0):  # hot spot: D = 0, O = sec, K_geo = sec^2 - sec
        sec = 1.0 / math.cos(math.radians(theta))
        assert li_sparse_reciprocal(theta, theta, 0.0) == pytest.approx(sec**2 - sec, abs=1e-12)


@given(
    st.floats(0.0, 70.0),
    st.floats(0.0, 70.0),
    st.floats(-360.0, 360.0),
)
def test_kernels_are_reciprocal_and_symmetric_in_azimuth(a: float, b: float, phi: float) -> None:
    for k in (ross_thick, li_sparse_reciprocal):
        assert k(a, b, phi) == pytest.approx(k(b, a, phi), abs=1e-9)
        assert k(a, b, phi) == pytest.approx(k(a, b, -phi), abs=1e-9)


@given(st.floats(0.0, 70.0), st.floats(0.0, 15.0), st.floats(-180.0, 180.0))
def test_c_factor_is_one_when_the_observed_geometry_is_the_target(
    sz: float, vz: float, phi: float
) -> None:
    for coef in COEFFICIENTS.values():
        assert c_factor(coef, sz, 0.0, phi) == pytest.approx(1.0, abs=1e-12)
        same = c_factor(coef, sz, vz, phi, target_sun_zenith=sz, target_view_zenith=vz)
        assert same == pytest.approx(1.0, abs=1e-12)


def test_c_factor_darkens_backscatter_and_brightens_forward_scatter() -> None:
    for coef in COEFFICIENTS.values():
        assert c_factor(coef, 35.0, 10.0, 0.0) < 1.0 < c_factor(coef, 35.0, 10.0, 180.0)


def test_coefficients_are_those_of_roy_et_al() -> None:
    assert list(COEFFICIENTS) == [
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
    ]  # fmt: skip
    assert COEFFICIENTS["B04"] == BrdfCoefficients(iso=0.1690, vol=0.0574, geo=0.0227)
    assert COEFFICIENTS["B8A"] == COEFFICIENTS["B08"]


# --- a generated swath ------------------------------------------------------------------------


@dataclass
class Swath:
    scene: Scene
    truth: dict[str, np.ndarray]
    """Nadir reflectance at the observed sun zenith."""
    across: np.ndarray
    """Signed across-track distance of each column (km)."""


def _swath(
    h: int = 48,
    w: int = 120,
    *,
    seed: int = 0,
    props: Mapping[str, float] | None = None,
    nan_angles: bool = False,
    nodata: bool = False,
) -> Swath:
    """A strip across a swath: view zenith 0 at the middle column to 11.5° at the edges, the
    sensor east of the pixels on the west half and west of them on the east half; sun at
    zenith ~38°, azimuth 155°. Reflectance = nadir truth x R_surface(observed) /
    R_surface(nadir)."""
    rng = np.random.default_rng(seed)
    geobox = GeoBox((h, w), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), "EPSG:32633")
    col = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    across = col * 0.01
    vz = np.broadcast_to(11.5 * np.abs(col) / np.abs(col).max(), (h, w))
    vaz = np.broadcast_to(np.where(col < 0, 102.0, 282.0), (h, w))
    sz = np.broadcast_to(37.0 + 2.0 * np.arange(h)[:, None] / h, (h, w))
    saz = np.full((h, w), 155.0)
    angles = np.stack([sz, saz, vz, vaz]).astype(np.float32)
    a = angles.astype(np.float64)
    raa = a[1] - a[3]
    surface = SURFACE.reflectance(*kernels(a[0], a[2], raa)) / SURFACE.reflectance(
        *kernels(a[0], 0.0, raa)
    )
    if nan_angles:  # the pixels were seen, but their angles are not known
        angles[2, 5:9, 10:20] = np.nan
        angles[0, 30, :] = np.nan
    truth, bands = {}, {}
    for i, b in enumerate(BANDS):
        t = rng.uniform(0.05, 0.4, (h, w)).astype(np.float32) * (1.0 + 0.1 * i)
        truth[b] = t
        bands[b] = (t * surface).astype(np.float32)
        if nodata:
            bands[b][:, :3] = np.nan
            bands[b][h // 2, w // 3] = np.nan
    layer = AuxLayer(angles, geobox, ANGLE_BANDS, source="granule-metadata:test")
    scene = Scene("swath", geobox, bands, source_properties=dict(props or {}), aux={ANGLES: layer})
    return Swath(scene, truth, across)


def _gradient(a: np.ndarray, across: np.ndarray) -> float:
    """Slope of the column means vs across-track distance, relative to the mean (per km)."""
    means = np.nanmean(a, axis=0)
    return float(np.polyfit(across, means, 1)[0] / np.nanmean(means))


def test_nbar_shrinks_the_cross_track_gradient_and_the_error_to_nadir() -> None:
    sw = _swath()
    res = STEP.run(sw.scene, NbarConfig())
    assert res.write and res.record.results["applied"] is True
    for b in ("B02", "B04", "B08", "B11"):
        before = _gradient(sw.scene.bands[b], sw.across)
        after = _gradient(res.scene.bands[b], sw.across)
        assert abs(before) > 0.02  # the generated anisotropy is visible
        assert abs(after) < 0.6 * abs(before), b
        rmse_before = np.sqrt(np.mean((sw.scene.bands[b] - sw.truth[b]) ** 2))
        rmse_after = np.sqrt(np.mean((res.scene.bands[b] - sw.truth[b]) ** 2))
        assert rmse_after < rmse_before, b
    # B01 has no coefficients: left as it is and recorded
    assert res.scene.bands["B01"] is sw.scene.bands["B01"]
    results = res.record.results
    assert results["bands_corrected"] == ["B02", "B04", "B08", "B11"]
    assert results["bands_left"] == {"B01": "no published c-factor coefficients"}
    assert results["angles_source"] == "granule-metadata:test"
    assert results["target_sun_zenith"] == "observed" and results["pixels_without_angles"] == 0
    stats = results["c_factor"]["B08"]
    assert stats["pixels"] == sw.scene.bands["B08"].size and stats["pixels_left"] == 0
    assert stats["min"] < 1.0 < stats["max"] and 0.9 < stats["mean"] < 1.1
    assert res.scene.properties[PROPERTY] == "applied"
    assert ANGLES in res.scene.aux and set(res.scene.aux) == {ANGLES}
    assert res.record.parameters == {"view_zenith": 0.0, "sun_zenith": "observed", "bands": None}


def test_pixels_at_nadir_are_unchanged_with_the_observed_sun() -> None:
    sw = _swath(w=121)  # an odd width: the middle column is seen at nadir
    res = STEP.run(sw.scene, NbarConfig())
    np.testing.assert_allclose(res.scene.bands["B04"][:, 60], sw.scene.bands["B04"][:, 60])


def test_missing_angles_leave_the_pixels_and_say_why() -> None:
    sw = _swath(nodata=True)
    scene = sw.scene.replace(aux={}, missing_aux={ANGLES: "the item has no granule metadata"})
    res = STEP.run(scene, NbarConfig())
    assert res.write
    for b, a in scene.bands.items():
        assert res.scene.bands[b] is a
    results = res.record.results
    assert results["applied"] is False
    assert results["reason"] == "no per-pixel angles: the item has no granule metadata"
    assert results["bands_corrected"] == [] and results["c_factor"] == {}
    assert results["bands_left"]["B04"] == "no per-pixel angles"
    assert results["pixels_without_angles"] == int(np.isfinite(scene.bands["B02"]).sum())
    assert res.scene.properties[PROPERTY].startswith("not applied: no per-pixel angles")


def test_pixels_with_nan_angles_are_left_as_they_are() -> None:
    sw = _swath(nan_angles=True)
    res = STEP.run(sw.scene, NbarConfig())
    angles = sw.scene.aux[ANGLES].data
    unknown = ~np.isfinite(angles).all(axis=0)
    n = int(unknown.sum())
    assert n == 4 * 10 + 120
    for b in ("B02", "B08"):
        np.testing.assert_array_equal(res.scene.bands[b][unknown], sw.scene.bands[b][unknown])
        assert not np.array_equal(res.scene.bands[b][~unknown], sw.scene.bands[b][~unknown])
        assert res.record.results["c_factor"][b]["pixels_left"] == n
    assert res.record.results["pixels_without_angles"] == n


def test_nodata_stays_nodata() -> None:
    sw = _swath(nodata=True)
    res = STEP.run(sw.scene, NbarConfig())
    for b, a in sw.scene.bands.items():
        np.testing.assert_array_equal(np.isnan(res.scene.bands[b]), np.isnan(a))
    assert res.record.results["pixels_without_angles"] == 0


def test_target_sun_zenith_from_the_item_a_number_or_the_pixels() -> None:
    props = {"s2:mean_solar_zenith": 30.0}
    sw = _swath(props=props)
    scene_res = STEP.run(sw.scene, NbarConfig(sun_zenith="scene"))
    assert scene_res.record.results["target_sun_zenith"] == 30.0
    assert scene_res.record.results["target_sun_zenith_from"] == "item:s2:mean_solar_zenith"
    fixed = STEP.run(sw.scene, NbarConfig(sun_zenith=30.0))
    assert fixed.record.results["target_sun_zenith_from"] == "config"
    np.testing.assert_array_equal(fixed.scene.bands["B04"], scene_res.scene.bands["B04"])
    # a higher sun: nadir pixels get brighter (less shadow)
    mid = sw.scene.bands["B04"].shape[1] // 2
    assert (fixed.scene.bands["B04"][:, mid] > sw.scene.bands["B04"][:, mid]).all()
    high = _swath(props={"view:sun_elevation": 60.0}).scene
    elev = STEP.run(high, NbarConfig(sun_zenith="scene"))
    assert elev.record.results["target_sun_zenith"] == pytest.approx(30.0)
    bare = STEP.run(sw.scene.replace(source_properties={}), NbarConfig(sun_zenith="scene"))
    assert bare.record.results["target_sun_zenith"] == "observed"
    assert bare.record.results["target_sun_zenith_from"].startswith("observed: the item has no")
    observed = STEP.run(sw.scene, NbarConfig())
    np.testing.assert_array_equal(bare.scene.bands["B04"], observed.scene.bands["B04"])


def test_selected_bands_only() -> None:
    sw = _swath()
    res = STEP.run(sw.scene, NbarConfig(bands=("red", "B08")))
    assert res.record.results["bands_corrected"] == ["B04", "B08"]
    assert res.record.results["bands_left"] == {
        "B01": "no published c-factor coefficients",
        "B02": "not in steps.nbar.bands",
        "B11": "not in steps.nbar.bands",
    }
    assert res.scene.bands["B02"] is sw.scene.bands["B02"]


def test_angle_layer_off_the_grid_is_an_error() -> None:
    sw = _swath()
    layer = sw.scene.aux[ANGLES]
    small = AuxLayer(layer.data[:, :10, :10], layer.geobox[:10, :10], ANGLE_BANDS, "x")
    with pytest.raises(StepError, match="does not cover"):
        STEP.run(sw.scene.replace(aux={ANGLES: small}), NbarConfig())


# --- in blocks --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Halo:
    """A plan that only grows the blocks (as a step with a halo before NBAR would)."""

    halo: int = 3
    block_aux: Mapping[str, AuxRequest] = field(default_factory=dict)
    skip: Skip | None = None

    def apply(self, block: Scene) -> Scene:
        return block

    def apply_late(self, block: Scene) -> Scene:
        return block

    def tally(self, block: Scene) -> None:
        pass

    def finish(self, shell: Scene) -> StepResult:
        return StepResult(shell, StepRecord("halo", "0"))


@pytest.mark.parametrize(
    "cfg", [NbarConfig(), NbarConfig(sun_zenith="scene", bands=("B04", "B11"))], ids=str
)
@pytest.mark.parametrize("halo", [0, 3])
def test_blocks_give_the_pixels_and_record_of_the_whole_scene(cfg: NbarConfig, halo: int) -> None:
    sw = _swath(h=70, w=90, props={"view:sun_elevation": 51.5}, nan_angles=True, nodata=True)
    whole = STEP.run(sw.scene, cfg)
    assert isinstance(STEP, BlockStep) and STEP.in_blocks(cfg)
    plan = STEP.plan(ArraySource(sw.scene), cfg)
    assert plan.halo == 0 and plan.block_aux[ANGLES].level == "angles"
    plans: list[StepPlan] = [_Halo(halo), plan] if halo else [plan]
    out, results = run_in_blocks(ArraySource(sw.scene), plans, 32)
    res = results[-1]
    for b in BANDS:
        np.testing.assert_array_equal(out.bands[b], whole.scene.bands[b], err_msg=b)
    assert res.record == whole.record
    assert res.scene.properties == whole.scene.properties
    assert res.write and res.skip is None


def test_blocks_without_angles_leave_the_pixels_and_record_why() -> None:
    sw = _swath(nodata=True)
    scene = sw.scene.replace(aux={}, missing_aux={ANGLES: "no granule metadata"})
    whole = STEP.run(scene, NbarConfig())
    plan = STEP.plan(ArraySource(scene), NbarConfig())
    out, (res,) = run_in_blocks(ArraySource(scene), [plan], 32)
    for b in BANDS:
        np.testing.assert_array_equal(out.bands[b], scene.bands[b])
    assert res.record == whole.record and res.record.results["applied"] is False
    assert res.scene.properties[PROPERTY] == whole.scene.properties[PROPERTY]


# --- configuration and plug-in ----------------------------------------------------------------


def test_config_parses_and_checks_its_values() -> None:
    assert build(NbarConfig, {"sun_zenith": 40}, "steps.nbar").sun_zenith == 40.0
    assert build(NbarConfig, {"sun_zenith": "scene"}, "steps.nbar").sun_zenith == "scene"
    assert NbarConfig(bands=("nir08", "b4")).bands == ("B8A", "B04")
    with pytest.raises(ConfigError, match=r"steps\.nbar\.view_zenith"):
        NbarConfig(view_zenith=-1.0)
    with pytest.raises(ConfigError, match=r"steps\.nbar\.sun_zenith"):
        NbarConfig(sun_zenith=85.0)
    with pytest.raises(ConfigError, match=r"steps\.nbar\.sun_zenith"):
        build(NbarConfig, {"sun_zenith": "noon"}, "steps.nbar")
    with pytest.raises(ConfigError, match=r"\['B01'\] have no published c-factor"):
        NbarConfig(bands=("B01", "B04"))


def test_plugin_builds_the_step_and_checks_the_bands() -> None:
    config = config_from_dict({**BASE, "bands": ["B04", "B08", "SCL"]})
    step, cfg = PLUGIN.build(NbarConfig(), config)
    assert isinstance(step, NbarStep) and step.name == PLUGIN.name == "nbar"
    assert PLUGIN.order == 25 and step.required_aux(cfg)[ANGLES].level == "angles"
    assert PLUGIN.validate is not None
    PLUGIN.validate(NbarConfig(), config)
    with pytest.raises(ConfigError, match=r"steps\.nbar\.bands \['B11'\] are not in"):
        PLUGIN.validate(NbarConfig(bands=("B04", "B11")), config)
    with pytest.raises(ConfigError, match="has c-factor coefficients"):
        PLUGIN.validate(NbarConfig(), config_from_dict({**BASE, "bands": ["B01", "SCL"]}))
