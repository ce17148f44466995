"""The s2cloudless part of the cloud-masking step on real Sentinel-2 pixels.

eo-learn's ``TestEOPatch`` (shared data ``rasters/eo-learn-TestEOPatch-2015/``): L1C TOA
reflectance of all 13 bands for 5 dates, and the probabilities (``CLP``) and masks (``CLM``:
threshold 0.4, average_over 4, dilation_size 2 pixels at 10 m) that eo-learn's own test expects
for all 68 dates. The expected values were made outside stac2cube, so they check how we feed the
model (band choice and order, scaling, B10) and how we post-process its probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from stac2cube.sample.eo_patch import PATCH_DIR, Patch, read_test_eopatch
from stac2cube.steps.cloudmask import S2CLOUDLESS_BANDS, cloud_probability, s2cloudless_mask
from stac2cube.testing.data import require_shared_data

pytest.importorskip("s2cloudless")

PIXEL_M = 10.0
THRESHOLD, AVERAGE_OVER_M, DILATION_M = 0.4, 40.0, 20.0
"""eo-learn's test parameters (0.4, 4 and 2 pixels at 10 m) in the step's metres."""

PROB_ATOL = 1e-6
"""Largest accepted difference of a probability from the expected one. The model is a fixed
LightGBM file: the same inputs give the same trees, and a different LightGBM build can only change
the rounding of the sum of the trees' outputs, a few float32 ulps (6e-8 near 1). The smallest
plausible input error changes it by 0.1 or more (one DN, 1e-4 reflectance, on every band: 0.11;
see test_probability_check_detects_input_mistakes), 10^5 times the tolerance."""


@pytest.fixture(scope="module")
def patch() -> Patch:
    root = require_shared_data() / PATCH_DIR
    if not (root / "CLP_S2C.npy").is_file():
        pytest.skip(f"{PATCH_DIR} is not in the shared data")
    return read_test_eopatch(root)


def _max_diff(patch: Patch, toa: Callable[[int], np.ndarray]) -> float:
    return max(
        float(np.abs(cloud_probability(toa(k))[0] - patch.clp[t]).max())
        for k, t in enumerate(patch.time_index)
    )


def test_patch_is_what_the_tests_assume(patch: Patch) -> None:
    assert patch.scenes.shape[0] == len(patch.time_index) == 5
    assert patch.scenes.shape[-1] == len(patch.order) == 13
    assert set(S2CLOUDLESS_BANDS) <= set(patch.order)
    assert patch.clp.shape == patch.clm.shape == patch.valid.shape
    assert patch.clp.shape[0] == 68
    # reflectance, not DN; cloudy and clear dates, partly cloudy ones with real edges
    assert float(patch.scenes.min()) > 0.0 and float(patch.scenes.max()) < 1.5
    frac = patch.clm.mean(axis=(1, 2))
    assert (frac == 0).any() and (frac == 1).any() and ((frac > 0.05) & (frac < 0.95)).sum() >= 10


@pytest.mark.parametrize("k", range(5))
def test_probabilities_reproduce_the_expected_ones(patch: Patch, k: int) -> None:
    prob, b10 = cloud_probability(patch.toa(k))
    expected = patch.clp[patch.time_index[k]]
    assert b10 == "l1c"
    assert prob.shape == expected.shape and prob.dtype == np.float32
    assert np.isfinite(prob).all()
    diff = np.abs(prob - expected)
    assert float(diff.max()) <= PROB_ATOL, (float(diff.max()), float(diff.mean()))


def test_each_scene_matches_only_its_own_date(patch: Patch) -> None:
    """The comparison tells dates apart: no other date's expected field is close."""
    for k, t in enumerate(patch.time_index):
        prob = cloud_probability(patch.toa(k))[0]
        by_date = np.abs(prob[None] - patch.clp).max(axis=(1, 2))
        assert int(by_date.argmin()) == t
        assert float(np.delete(by_date, t).min()) > 0.1


WRONG_BANDS = ("B01", "B02", "B04", "B05", "B8A", "B08", "B09", "B10", "B11", "B12")
_B10 = S2CLOUDLESS_BANDS.index("B10")


def _clear_b10(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out[_B10] = 0.002
    return out


@pytest.mark.parametrize(
    ("mistake", "make"),
    [
        ("first ten of the 13 bands", lambda p, k: p.toa(k, tuple(p.order[:10]))),
        ("B08 and B8A swapped", lambda p, k: p.toa(k, WRONG_BANDS)),
        ("one DN added to every band", lambda p, k: p.toa(k) + np.float32(1e-4)),
        ("processing baseline 04.00 offset left in", lambda p, k: p.toa(k) + np.float32(0.1)),
        ("B10 replaced by a clear-sky constant", lambda p, k: _clear_b10(p.toa(k))),
    ],
)
def test_probability_check_detects_input_mistakes(
    patch: Patch, mistake: str, make: Callable[[Patch, int], np.ndarray]
) -> None:
    assert _max_diff(patch, lambda k: make(patch, k)) > 1e4 * PROB_ATOL, mistake


def _differing(patch: Patch, **kw: float) -> list[int]:
    args = {
        "pixel_m": PIXEL_M,
        "threshold": THRESHOLD,
        "average_over_m": AVERAGE_OVER_M,
        "dilation_m": DILATION_M,
    } | kw
    return [
        int((s2cloudless_mask(p, v, **args) != m).sum())
        for p, v, m in zip(patch.clp, patch.valid, patch.clm, strict=True)
    ]


def test_post_processing_reproduces_the_expected_masks(patch: Patch) -> None:
    per_date = _differing(patch)
    assert sum(per_date) == 0, {t: n for t, n in enumerate(per_date) if n}


@pytest.mark.parametrize(
    ("change", "kw"),
    [
        ("averaging over 30 m", {"average_over_m": 30.0}),
        ("dilation by 10 m", {"dilation_m": 10.0}),
        ("threshold 0.35", {"threshold": 0.35}),
        ("radii of a 20 m grid", {"pixel_m": 20.0}),
    ],
)
def test_mask_check_detects_other_parameters(
    patch: Patch, change: str, kw: dict[str, float]
) -> None:
    assert sum(_differing(patch, **kw)) > 1000, change


@pytest.mark.parametrize(("pixel_m", "r_avg", "r_dil"), [(20.0, 2, 1), (60.0, 1, 0), (5.0, 8, 4)])
def test_metres_give_s2cloudless_radii_at_other_pixel_sizes(
    patch: Patch, pixel_m: float, r_avg: int, r_dil: int
) -> None:
    """At any pixel size, the metres mean s2cloudless' own post-processing with the radii
    ``round(metres / pixel)`` (here on the real fields, taken as if on that grid)."""
    from s2cloudless.cloud_detector import S2PixelCloudDetector

    det = S2PixelCloudDetector(threshold=THRESHOLD, average_over=r_avg, dilation_size=r_dil)
    expected = det.get_mask_from_prob(patch.clp).astype(bool)
    for t in range(patch.clp.shape[0]):
        ours = s2cloudless_mask(
            patch.clp[t], patch.valid[t], pixel_m, THRESHOLD, AVERAGE_OVER_M, DILATION_M
        )
        assert np.array_equal(ours, expected[t]), t


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8, 13, 21, 40])
def test_dilation_disk_is_s2cloudless_disk(radius: int) -> None:
    from s2cloudless.utils import cv2_disk

    n = 2 * radius + 5
    prob = np.zeros((n, n), np.float32)
    prob[n // 2, n // 2] = 1.0
    mask = s2cloudless_mask(prob, np.ones_like(prob, bool), 10.0, 0.5, 0.0, 10.0 * radius)
    disk = cv2_disk(radius).astype(bool)
    c = n // 2
    assert np.array_equal(mask[c - radius : c + radius + 1, c - radius : c + radius + 1], disk)
    assert int(mask.sum()) == int(disk.sum())


def test_invalid_pixels_are_left_out_not_averaged_in(patch: Patch) -> None:
    """A nodata wedge: no mask there, and pixels farther from it than the two radii keep the mask
    of the fully valid field; next to it the mean is over the valid neighbours only."""
    t = int(np.argmin(np.abs(patch.clm.mean(axis=(1, 2)) - 0.5)))  # a partly cloudy date
    prob = patch.clp[t].copy()
    h, w = prob.shape
    yy, xx = np.mgrid[0:h, 0:w]
    wedge = xx > yy + w // 3
    valid = patch.valid[t] & ~wedge
    prob[wedge] = np.nan  # nodata must not leak into the mean
    ours = s2cloudless_mask(prob, valid, PIXEL_M, THRESHOLD, AVERAGE_OVER_M, DILATION_M)
    assert not ours[~valid].any()
    from scipy import ndimage

    reach = round(AVERAGE_OVER_M / PIXEL_M) + round(DILATION_M / PIXEL_M)
    far = ~ndimage.binary_dilation(wedge, iterations=reach + 1)
    assert far.sum() > 0.3 * h * w
    assert np.array_equal(ours[far], patch.clm[t][far])
    # filling the wedge with cloud changes nothing, since it is left out
    prob_cloud = np.where(wedge, np.float32(1.0), prob)
    assert np.array_equal(
        s2cloudless_mask(prob_cloud, valid, PIXEL_M, THRESHOLD, AVERAGE_OVER_M, DILATION_M), ours
    )
