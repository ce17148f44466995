"""s2cloudless on real Sentinel-2 pixels: does stac2cube feed the model and post-process its
probabilities as s2cloudless' authors do?

The patch is eo-learn's ``TestEOPatch`` (1 km x 1 km in Slovenia, 2015, about 10 m; see the shared
data README, ``rasters/eo-learn-TestEOPatch-2015/``): L1C TOA reflectance of all 13 bands for 5
dates, and the s2cloudless probabilities (``CLP_S2C``) and masks (``CLM_S2C``: threshold 0.4,
average_over 4, dilation_size 2 pixels) that eo-learn's own test expects for all 68 dates.

* ``real_s2cloudless_max_abs_diff``: :func:`stac2cube.steps.cloudmask.cloud_probability` on the 5
  scenes (bands in :data:`~stac2cube.steps.cloudmask.S2CLOUDLESS_BANDS` order) against ``CLP``.
* ``real_mask_pixels_differing``: :func:`stac2cube.steps.cloudmask.s2cloudless_mask` (the
  post-processing :class:`~stac2cube.steps.cloudmask.CloudMaskStep` runs; 40 m and 20 m at 10 m)
  on the 68 real probability fields against ``CLM``.
* ``sensitivity``: the same figures for plausible mistakes (band order, 1 DN offset, the
  processing-baseline 04.00 offset left in, other radii), to show what a wrong pipeline gives.

These are a model's outputs, not labelled clouds: they say the model runs as its authors ran
it, not how accurate it is.

    python benchmarks/_cloudmask_real.py   # prints the figures as JSON (a few seconds)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stac2cube.sample.data import shared_data_dir
from stac2cube.sample.eo_patch import PATCH_DIR, Patch, read_test_eopatch
from stac2cube.steps.cloudmask import S2CLOUDLESS_BANDS, cloud_probability, s2cloudless_mask
from stac2cube.steps.cloudmask.raster import disk_mean  # to measure rounding against OpenCV's

PIXEL_M = 10.0
"""Pixel size of the patch (about 10 m: 1000 m over 100 columns)."""
THRESHOLD, AVERAGE_OVER_M, DILATION_M = 0.4, 40.0, 20.0
"""eo-learn's test parameters (0.4, 4 and 2 pixels at 10 m) in stac2cube's metres."""
LIBRARIES = ("s2cloudless", "lightgbm", "numpy", "scipy", "opencv-python-headless")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _model() -> dict[str, str]:
    from s2cloudless import cloud_detector

    path = Path(cloud_detector.__file__).parent / "models" / cloud_detector.MODEL_FILENAME
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _probabilities(
    d: Patch,
    transform: Callable[[np.ndarray], np.ndarray] = lambda a: a,
    bands: tuple[str, ...] = S2CLOUDLESS_BANDS,
) -> list[np.ndarray]:
    """Our probability for each reference scene (``transform`` applied to its TOA stack of
    ``bands``)."""
    return [cloud_probability(transform(d.toa(k, bands)))[0] for k in range(len(d.scenes))]


def _max_diff(d: Patch, probs: list[np.ndarray]) -> float:
    pairs = zip(probs, d.time_index, strict=True)
    return max(float(np.abs(p - d.clp[t]).max()) for p, t in pairs)


def _masks_differing(d: Patch, **kw: float) -> list[int]:
    args = {
        "threshold": THRESHOLD,
        "average_over_m": AVERAGE_OVER_M,
        "dilation_m": DILATION_M,
        "pixel_m": PIXEL_M,
    }
    args.update(kw)
    return [
        int((s2cloudless_mask(p, v, **args) != m).sum())
        for p, v, m in zip(d.clp, d.valid, d.clm, strict=True)
    ]


def _probability_figures(d: Patch) -> dict[str, Any]:
    order, stamps = d.order, d.timestamps
    probs = _probabilities(d)
    per_date, diffs = [], []
    for k, (p, t) in enumerate(zip(probs, d.time_index, strict=True)):
        diff = np.abs(p - d.clp[t])
        diffs.append(diff.ravel())
        # which of the 68 expected fields is nearest: it must be the stated date
        nearest = np.abs(p[None] - d.clp).max(axis=(1, 2))
        per_date.append(
            {
                "scene": k,
                "time_index": int(t),
                "datetime": stamps[t] if t < len(stamps) else None,
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "mean_probability": round(float(p.mean()), 6),
                "nearest_expected_time_index": int(nearest.argmin()),
                "next_nearest_max_abs_diff": round(float(np.sort(nearest)[1]), 6),
            }
        )
    all_diff = np.concatenate(diffs)
    swap = ("B01", "B02", "B04", "B05", "B8A", "B08", "B09", "B10", "B11", "B12")
    b10 = S2CLOUDLESS_BANDS.index("B10")

    def clear_b10(a: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[b10] = 0.002
        return out

    mistakes: dict[str, list[np.ndarray]] = {
        "first_ten_of_13_bands": _probabilities(d, bands=tuple(order[:10])),
        "b08_b8a_swapped": _probabilities(d, bands=swap),
        "plus_1_dn": _probabilities(d, lambda a: a + np.float32(1e-4)),
        "baseline_0400_offset_left_in": _probabilities(d, lambda a: a + np.float32(0.1)),
        "scaled_by_1.01": _probabilities(d, lambda a: a * np.float32(1.01)),
        "b10_clear_sky_constant": _probabilities(d, clear_b10),
    }
    return {
        "real_s2cloudless_max_abs_diff": float(all_diff.max()),
        "real_s2cloudless_mean_abs_diff": float(all_diff.mean()),
        "real_s2cloudless_pixels": int(all_diff.size),
        "real_s2cloudless_by_date": per_date,
        "sensitivity_max_abs_diff": {k: round(_max_diff(d, v), 6) for k, v in mistakes.items()},
    }


def _mask_figures(d: Patch) -> dict[str, Any]:
    from s2cloudless.cloud_detector import S2PixelCloudDetector

    per_date = _masks_differing(d)
    n_dates, h, w = d.clp.shape
    frac = d.clm.mean(axis=(1, 2))
    # s2cloudless' own post-processing on the same fields, and ours at other pixel sizes against
    # s2cloudless with the radii the metres give there (all pixels valid, as in the patch)
    own = S2PixelCloudDetector(threshold=THRESHOLD, average_over=4, dilation_size=2)
    own_mask = own.get_mask_from_prob(d.clp).astype(bool)
    # how far float rounding is from flipping a pixel: our disk mean against OpenCV's (which
    # s2cloudless uses), and the closest OpenCV mean to the threshold
    import cv2

    r_avg = round(AVERAGE_OVER_M / PIXEL_M)
    cv_mean = np.stack(
        [cv2.filter2D(p, -1, own.conv_filter, borderType=cv2.BORDER_REFLECT) for p in d.clp]
    )
    our_mean = np.stack([disk_mean(p, v, r_avg) for p, v in zip(d.clp, d.valid, strict=True)])
    other = {}
    for pixel_m, r_avg, r_dil in ((20.0, 2, 1), (60.0, 1, 0), (5.0, 8, 4)):
        det = S2PixelCloudDetector(threshold=THRESHOLD, average_over=r_avg, dilation_size=r_dil)
        ref = det.get_mask_from_prob(d.clp).astype(bool)
        ours = np.stack(
            [
                s2cloudless_mask(p, v, pixel_m, THRESHOLD, AVERAGE_OVER_M, DILATION_M)
                for p, v in zip(d.clp, d.valid, strict=True)
            ]
        )
        other[f"{pixel_m:g}m_avg{r_avg}px_dil{r_dil}px"] = int((ours != ref).sum())
    return {
        "real_mask_pixels_differing": int(sum(per_date)),
        "real_mask_pixels_total": int(n_dates * h * w),
        "real_mask_dates": int(n_dates),
        "real_mask_differing_by_date": per_date,
        "real_mask_cloud_pixels_expected": int(d.clm.sum()),
        "real_mask_partly_cloudy_dates": int(((frac > 0) & (frac < 1)).sum()),
        "real_mask_valid_pixels": int(d.valid.sum()),
        "s2cloudless_own_mask_pixels_differing": int((own_mask != d.clm).sum()),
        "disk_mean_max_abs_diff_vs_opencv": float(np.abs(our_mean - cv_mean).max()),
        "closest_mean_to_threshold": float(np.abs(cv_mean - THRESHOLD).min()),
        "metres_vs_s2cloudless_pixels_differing": other,
        "sensitivity_mask_pixels_differing": {
            "average_over_30m": sum(_masks_differing(d, average_over_m=30.0)),
            "dilation_10m": sum(_masks_differing(d, dilation_m=10.0)),
            "threshold_0.35": sum(_masks_differing(d, threshold=0.35)),
            "pixel_20m_radii": sum(_masks_differing(d, pixel_m=20.0)),
        },
    }


def real_patch(root: Path | None = None) -> dict[str, Any]:
    """The real-patch figures (see the module doc); the two headline figures are None, with a
    ``skipped`` reason, when the shared data is absent."""
    if root is None:
        shared = shared_data_dir()
        root = shared / PATCH_DIR if shared is not None else None
    if root is None or not (root / "CLP_S2C.npy").is_file():
        return {
            "real_s2cloudless_max_abs_diff": None,
            "real_mask_pixels_differing": None,
            "skipped": f"shared data {PATCH_DIR} not found (set STAC2CUBE_SHARED_DATA)",
        }
    d = read_test_eopatch(root)
    return {
        "data": f"{PATCH_DIR} (eo-learn TestEOPatch, Sentinel-2 L1C 2015)",
        "parameters": {
            "threshold": THRESHOLD,
            "average_over_m": AVERAGE_OVER_M,
            "dilation_m": DILATION_M,
            "pixel_m": PIXEL_M,
        },
        **_probability_figures(d),
        **_mask_figures(d),
        "versions": _versions(),
        "model": _model(),
    }


if __name__ == "__main__":
    print(json.dumps(real_patch(), indent=1))
