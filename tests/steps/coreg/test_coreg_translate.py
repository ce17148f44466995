"""A global shift applied band by band (stac2cube/steps/coreg/backend.py, ``translation`` and
``_translate``) gives DESHIFTER's pixels: every resampling, sub-pixel and whole-pixel shifts,
NaN holes, a nodata corner and class layers with their own nodata; a tie-point warp still goes
through DESHIFTER."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox

from stac2cube.steps.base import LayerInfo, Scene
from stac2cube.steps.coreg import CoregConfig, backend
from stac2cube.steps.coreg.backend import FILL, _deshift, apply_correction, crs, translation
from stac2cube.steps.coreg.config import Resampling
from stac2cube.steps.coreg.global_shift import global_info

pytest.importorskip("arosics")

H, W = 240, 300
GBOX = GeoBox((H, W), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5100000.0), "EPSG:32632")
SHIFTS = [(0.3, -0.2), (1.7, 2.4), (-3.25, 0.5), (2.0, -1.0)]
"""Sub-pixel and multi-pixel shifts; (2, -1) is on the grid, where DESHIFTER only moves the
array instead of warping it."""
TOL = 1e-5
CUBIC_RTOL = 5e-7
"""Two separable float32 passes against GDAL's one rounding: a few float32 ulps."""


def _template(gbox: GeoBox) -> dict[str, Any]:
    """The entries of AROSICS' global ``coreg_info`` that :func:`global_info` does not set,
    for a reference on ``gbox``."""
    gt = gbox.affine.to_gdal()
    return {
        "reference projection": crs(gbox).to_wkt(),
        "reference geotransform": gt,
        "reference grid": [[gt[0], gt[0] + gt[1]], [gt[3], gt[3] + gt[5]]],
        "reference extent": {"cols": gt[1], "rows": -gt[5]},
        "success": True,
    }


def _scene() -> Scene:
    """Textured reflectance with a nodata corner and holes every band shares, one band with a
    hole of its own, and two class layers (nodata 0 and 255)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    bands = {}
    for k, name in enumerate(("B02", "B04", "B08")):
        a = 0.2 + 0.1 * np.sin(xx / (5 + k)) * np.cos(yy / 4) + 0.02 * rng.standard_normal((H, W))
        a = a.astype(np.float32)
        a[:50, :70] = np.nan  # nodata corner
        a[120:131, 40:52] = np.nan  # a cloud hole
        a[200, 250] = np.nan  # a single pixel
        bands[name] = a
    bands["B04"][60:75, 180:200] = np.nan  # only this band
    scl = rng.integers(1, 12, (H, W), dtype=np.uint8)
    scl[:50, :70] = 0
    mask = rng.integers(0, 3, (H, W), dtype=np.uint8)
    mask[:50, :70] = 255
    mask[150:160, 100:110] = 255
    return Scene(
        "translate",
        GBOX,
        bands,
        {"SCL": scl, "MASK": mask},
        layer_info={"MASK": LayerInfo(nodata=255)},
    )


SCENE = _scene()


def _old_band(a: np.ndarray, info: dict[str, Any], resampling: str) -> np.ndarray:
    """One band through DESHIFTER as :func:`apply_correction` handed it over (NaN as FILL)."""
    out = _deshift(np.nan_to_num(a, nan=FILL)[:, :, None], GBOX, info, resampling, FILL)[:, :, 0]
    out = out.astype(np.float32)
    out[out <= FILL + 1.0] = np.nan
    return out


def _assert_same(new: np.ndarray, old: np.ndarray) -> float:
    """Same NaN positions and values within :data:`TOL`; the largest difference."""
    np.testing.assert_array_equal(np.isnan(new), np.isnan(old))
    ok = ~np.isnan(old)
    diff = float(np.abs(new[ok] - old[ok]).max())
    assert diff <= TOL
    return diff


def test_a_global_shift_is_a_translation_of_the_grid() -> None:
    info = global_info(_template(GBOX), GBOX, 1.7, -2.4)
    moved = translation(info, GBOX)
    assert moved is not None
    assert moved.a == GBOX.affine.a and moved.e == GBOX.affine.e
    # the correction moves the grid by minus the displacement: x by -dx px, y by +dy px north
    assert moved.c == pytest.approx(GBOX.affine.c - 1.7 * 10.0)
    assert moved.f == pytest.approx(GBOX.affine.f - 2.4 * 10.0)


def test_anything_else_is_left_to_deshifter() -> None:
    info = global_info(_template(GBOX), GBOX, 0.3, -0.2)
    assert translation({**info, "GCPList": []}, GBOX) is None  # local mode, even without points
    assert translation({**info, "updated map info": None}, GBOX) is None
    other = GeoBox(GBOX.shape, GBOX.affine, "EPSG:32633")
    assert translation({**info, "reference projection": crs(other).to_wkt()}, GBOX) is None


def test_a_tie_point_warp_goes_through_deshifter(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def fake(scene: Scene, info: Any, cfg: CoregConfig) -> Scene:
        seen.append(info)
        return scene

    monkeypatch.setattr(backend, "_apply_deshifter", fake)
    local = {**global_info(_template(GBOX), GBOX, 0.3, -0.2), "GCPList": ["a tie point"]}
    assert apply_correction(SCENE, local, CoregConfig(mode="local")) is SCENE
    assert seen == [local]


@pytest.mark.parametrize("resampling", get_args(Resampling))
@pytest.mark.parametrize("shift", SHIFTS)
def test_bands_match_deshifter(shift: tuple[float, float], resampling: Resampling) -> None:
    info = global_info(_template(GBOX), GBOX, *shift)
    new = apply_correction(SCENE, info, CoregConfig(resampling=resampling))
    for name, a in SCENE.bands.items():
        assert new.bands[name].dtype == np.float32
        _assert_same(new.bands[name], _old_band(a, info, resampling))
    # the bands that share their holes, stacked as DESHIFTER was handed them
    names = ["B02", "B08"]
    stack = np.stack([np.nan_to_num(SCENE.bands[n], nan=FILL) for n in names], axis=-1)
    old = _deshift(stack, GBOX, info, resampling, FILL).astype(np.float32)
    old[old <= FILL + 1.0] = np.nan
    for i, name in enumerate(names):
        _assert_same(new.bands[name], old[:, :, i])


@pytest.mark.parametrize("shift", SHIFTS)
def test_class_layers_match_deshifter(shift: tuple[float, float]) -> None:
    info = global_info(_template(GBOX), GBOX, *shift)
    new = apply_correction(SCENE, info, CoregConfig())
    for name, nodata in (("SCL", 0), ("MASK", 255)):
        a = SCENE.classes[name]
        old = _deshift(a[:, :, None], GBOX, info, "nearest", float(nodata))[:, :, 0]
        assert new.classes[name].dtype == a.dtype
        np.testing.assert_array_equal(new.classes[name], old.astype(a.dtype))
        assert (new.classes[name] == nodata).any()


@pytest.mark.parametrize("resampling", ["cubic", "lanczos"])
def test_a_bands_holes_stay_its_own(resampling: Resampling) -> None:
    """Each band is warped alone: B04's own hole changes nothing in B02, and no fill value
    leaks into B04 around it (DESHIFTER's stack counted a pixel as nodata only where every
    band was, so B04's fill entered its kernels there)."""
    info = global_info(_template(GBOX), GBOX, 0.3, -0.2)
    cfg = CoregConfig(resampling=resampling)
    both = apply_correction(SCENE, info, cfg)
    alone = apply_correction(SCENE.replace(bands={"B02": SCENE.bands["B02"]}), info, cfg)
    np.testing.assert_array_equal(both.bands["B02"], alone.bands["B02"])
    b04 = both.bands["B04"]
    assert float(np.nanmin(b04)) > -0.5
    assert np.isnan(b04[62:73, 182:198]).all()


def _gdal_with_nodata(a: np.ndarray, moved: Affine, resampling: str, nodata: float) -> np.ndarray:
    """``a`` warped as :func:`backend._translate` warps a layer with nodata pixels: GDAL's
    nodata path (source and destination nodata, destination initialised to it)."""
    from rasterio.warp import Resampling as R
    from rasterio.warp import reproject

    out = np.empty(a.shape, dtype=a.dtype)
    prj = crs(GBOX).to_wkt()
    reproject(
        a,
        out,
        src_transform=moved,
        src_crs=prj,
        src_nodata=nodata,
        dst_transform=GBOX.affine,
        dst_crs=prj,
        dst_nodata=nodata,
        resampling=R[resampling],
    )
    return out


@pytest.mark.parametrize("resampling", get_args(Resampling))
@pytest.mark.parametrize("shift", SHIFTS)
def test_a_layer_without_nodata_gets_the_pixels_of_the_nodata_path(
    shift: tuple[float, float], resampling: Resampling
) -> None:
    """A block inside the swath has no nodata pixel: it is warped without GDAL's validity
    masks (3x faster for cubic), and gives the nodata path's pixels bit for bit, the edges
    no source pixel reaches included; cubic bands, resampled in two separable passes inside
    the frame (:func:`backend._cubic_shift`), to float32 rounding there."""
    info = global_info(_template(GBOX), GBOX, *shift)
    moved = translation(info, GBOX)
    assert moved is not None
    full = SCENE.replace(
        bands={n: np.nan_to_num(a, nan=0.15) for n, a in SCENE.bands.items()},
        classes={"SCL": np.maximum(SCENE.classes["SCL"], 1)},
    )
    new = apply_correction(full, info, CoregConfig(resampling=resampling))
    for name, a in full.bands.items():
        want = _gdal_with_nodata(a, moved, resampling, FILL)
        want[want <= FILL + 1.0] = np.nan
        if resampling == "cubic":
            np.testing.assert_array_equal(np.isnan(new.bands[name]), np.isnan(want))
            np.testing.assert_allclose(new.bands[name], want, rtol=CUBIC_RTOL, err_msg=name)
        else:
            np.testing.assert_array_equal(new.bands[name], want, err_msg=name)
        if max(abs(v) for v in shift) >= 1.0:
            assert np.isnan(want).any()  # an edge no source pixel reaches
    scl = full.classes["SCL"]
    np.testing.assert_array_equal(new.classes["SCL"], _gdal_with_nodata(scl, moved, "nearest", 0))


@pytest.mark.parametrize(
    "shift",
    [(0.3, -0.2), (-0.5, 0.5), (0.0, 0.25), (1.7, 2.4), (-3.25, 0.5), (2.0, -1.0), (7.6, -9.3)],
)
def test_the_separable_cubic_shift_is_gdals(shift: tuple[float, float]) -> None:
    """:func:`backend._cubic_shift` against GDAL's cubic warp of the whole layer, to float32
    rounding: also the frame where the kernel reaches past the edge (GDAL's bilinear
    fallback) and the nodata where no source pixel is."""
    info = global_info(_template(GBOX), GBOX, *shift)
    moved = translation(info, GBOX)
    assert moved is not None
    a = np.nan_to_num(SCENE.bands["B02"], nan=0.15)
    prj = crs(GBOX).to_wkt()
    want = np.full(a.shape, FILL, np.float32)
    backend._gdal_translate(a, want, GBOX.affine, moved, prj, "cubic", 1)
    got = np.full(a.shape, FILL, np.float32)
    backend._cubic_shift(a, got, GBOX.affine, moved, prj, 2)
    np.testing.assert_array_equal(got == FILL, want == FILL)
    # a pixel left to the separable passes where GDAL falls back to bilinear would be ~1e-3 off
    np.testing.assert_allclose(got, want, rtol=CUBIC_RTOL, atol=0)
    assert not np.array_equal(got, a)  # it moved
    if max(abs(v) for v in shift) >= 1.0:
        assert (got == FILL).any()  # an edge no source pixel reaches


def test_a_shift_wider_than_the_layer_is_left_to_gdal() -> None:
    small = GeoBox((6, 5), GBOX.affine, GBOX.crs)
    a = np.arange(30, dtype=np.float32).reshape(6, 5)
    moved = GBOX.affine * Affine.translation(-3.4, 2.2)
    prj = crs(small).to_wkt()
    want = np.full(a.shape, FILL, np.float32)
    backend._gdal_translate(a, want, small.affine, moved, prj, "cubic", 1)
    got = np.full(a.shape, FILL, np.float32)
    backend._cubic_shift(a, got, small.affine, moved, prj, 1)
    np.testing.assert_array_equal(got, want)
