"""Co-registration measured on real Sentinel-2 pixels (AROSICS' INTER1 pair, shared data).

* :func:`real_pair`: the misregistered pair (S2A L1C, 2016-05-29 onto 2016-06-08, one 10 m band)
  on its common overlap. AROSICS ``COREG`` and ``COREG_LOCAL`` run directly on the two JPEG2000
  files as a user would (``nodata`` 0, AROSICS' defaults otherwise; ``grid_res=100`` as in
  AROSICS' own INTER1 test); our step runs on the same pixels, global mode with defaults and
  local mode with AROSICS' tie-point parameters, once with a ``CLOUD_MASK`` (a multi-temporal
  difference test against the cloud-free reference,
  :func:`stac2cube.sample.real_pair.difference_cloud_mask`) and once without any mask layer.
  As a window-free arbiter, ``real_pair_ncc_optimum_px`` is the translation that maximises the
  correlation over all clear pixels of the overlap (:func:`ncc_optimum`).
  Shifts are the displacement of the target's content, ``(dx east, dy south)`` px, as
  ``shift_px`` of :mod:`stac2cube.steps.coreg`; AROSICS' ``x/y_shift_px`` (the correction) are
  negated.
* :func:`real_texture`: real texture matched against itself. Clear 600 px windows of both images
  are the reference; the target is the window moved by a known shift, either exactly for its
  band-limited interpolant (Fourier shift of the mirrored window) or, as a model a phase
  correlator does not assume, by cubic B-spline interpolation (``spline_*``). Independent
  Gaussian noise goes into both, its sigma measured in each image (Immerkaer's estimator in
  32 px blocks, 5th percentile: ~0.0005 reflectance, a B03 SNR of ~200). ``low_texture_*``
  scales each window's contrast to 0.002 RMS gradient, the low end of real B03 texture (the
  band as it is scores 0.0025-0.0055). What the step *applied* is read from its output pixels
  (coordinate bands carried through the correction), so an estimate not applied counts as 0;
  a case is harmed when the misregistration after the step is larger than before. ``local_*``:
  the same in local mode (half the small and large shifts). The sub-pixel bias is measured for
  shifts of 0.4 and 1.0 px along x, the diagonal and y. AROSICS ``COREG`` also runs directly
  on the same noisy arrays of the exact-shift cases (``arosics_*``: its error against the known
  shift, and how far our estimate is from it).

    python benchmarks/_coreg_real.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

NOISE_BLOCK = 32
"""Block size (px) of the noise estimate."""
NOISE_PERCENTILE = 5.0
"""Percentile of the block noise estimates taken as the image's noise (the flattest blocks)."""
TEXTURE_WINDOW = 600
"""Size (px) of the real-texture windows."""
SHIFT_MARGIN = 32
"""Margin (px) around a window that the Fourier shift is computed with and then cut off."""
CLEAR_MAX = 0.3
"""A texture window is clear when no pixel is brighter than this (TOA reflectance; cumulus)."""
LOW_TEXTURE = 0.002
"""RMS-gradient texture the ``low_texture`` variant scales each window to."""
HARM_TOL_PX = 1e-3
"""An applied correction harms when the misregistration grows by more than this (the precision
of the coordinate bands through a cubic warp is ~1e-4 px)."""
RESIDUAL_MARGIN = 8
"""Edge pixels left out when reading the applied correction from the coordinate bands."""


@contextmanager
def _quiet() -> Iterator[None]:
    """AROSICS prints and warns even when quiet; keep the JSON output clean."""
    with redirect_stdout(StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _vec(v: Any) -> list[float] | None:
    if v is None:
        return None
    try:
        a = [float(v[0]), float(v[1])]
    except (TypeError, ValueError, IndexError):
        return None
    return [round(x, 4) for x in a] if all(math.isfinite(x) for x in a) else None


def _dist(a: list[float] | None, b: list[float] | None) -> float | None:
    if a is None or b is None:
        return None
    return round(float(math.hypot(a[0] - b[0], a[1] - b[1])), 4)


def applied_from_record(results: dict[str, Any]) -> list[float]:
    """The shift ``(dx, dy)`` the step says it applied: ``applied_shift_px`` when the record has
    it, else ``shift_px`` when the status is ``ok``, else none (``[0, 0]``)."""
    if "applied_shift_px" in results:
        return _vec(results["applied_shift_px"]) or [0.0, 0.0]
    if results.get("status") == "ok":
        return _vec(results.get("shift_px")) or [0.0, 0.0]
    return [0.0, 0.0]


def _step_summary(results: dict[str, Any], geobox: Any) -> dict[str, Any]:
    keep = (
        "status",
        "reason",
        "shift_px",
        "applied_shift_px",
        "reliability",
        "window_center_px",
        "window_size_px",
        "windows_tried",
        "texture",
        "correlation_before",
        "correlation_after",
        "tiepoints_total",
        "tiepoints_valid",
        "shift_std_px",
    )
    out = {k: results[k] for k in keep if k in results}
    out["applied_px"] = applied_from_record(results)
    # the windows the global shift came from: every matched one (step >= 1.1), else the one
    matched = [w["center_px"] for w in results.get("windows", []) if w.get("status") == "matched"]
    if not matched and results.get("window_center_px") is not None:
        matched = [results["window_center_px"]]
    if results.get("windows"):
        out["windows"] = [
            {k: w.get(k) for k in ("center_px", "status", "shift_px", "reason") if k in w}
            for w in results["windows"]
        ]
    out["windows_matched_map"] = [
        [round(float(v), 1) for v in geobox.affine * (c[0] + 0.5, c[1] + 0.5)] for c in matched
    ]
    return out


# ------------------------------------------------------------------------------- real pair


def _arosics_global(
    ref: Any, tgt: Any, wp: tuple[float, float] | None, ws: int = 256, nodata: float = 0
) -> dict[str, Any]:
    """AROSICS ``COREG`` on the files (or GeoArray objects); ``wp`` None = AROSICS' own choice
    (overlap centre)."""
    from arosics import COREG

    t = time.perf_counter()
    with _quiet():
        cr = COREG(
            ref,
            tgt,
            wp=wp if wp is not None else (None, None),
            ws=(ws, ws),
            nodata=(nodata, nodata),
            CPUs=1,
            progress=False,
            q=True,
            ignore_errors=True,
        )
        cr.calculate_spatial_shifts()
    out: dict[str, Any] = {
        "success": bool(cr.success),
        "seconds": round(time.perf_counter() - t, 2),
    }
    if cr.success and cr.x_shift_px is not None:
        out["shift_px"] = [round(-float(cr.x_shift_px), 4), round(-float(cr.y_shift_px), 4)]
        out["reliability"] = round(float(cr.shift_reliability), 2)
        out["ssim_before"] = round(float(cr.ssim_orig), 4)
        out["ssim_after"] = round(float(cr.ssim_deshifted), 4)
    else:
        err = cr.tracked_errors[-1] if cr.tracked_errors else "no match"
        out["error"] = str(err).strip().splitlines()[0] if str(err).strip() else "no match"
    if cr.win_pos_XY is not None:
        out["window_center_map"] = [round(float(v), 1) for v in cr.win_pos_XY]
    if cr.matchBox is not None:
        out["window_size_px"] = [int(v) for v in cr.matchBox.imDimsYX[::-1]]
    return out


def _arosics_local(ref: str, tgt: str, grid_res: int, window: int) -> dict[str, Any]:
    """AROSICS ``COREG_LOCAL`` (defaults otherwise: tie-point filter level 3, reliability 60 %);
    the mean over the valid tie points (matched, not flagged as outliers)."""
    from arosics import COREG_LOCAL

    t = time.perf_counter()
    with _quiet():
        cl = COREG_LOCAL(
            ref,
            tgt,
            grid_res=grid_res,
            window_size=(window, window),
            nodata=(0, 0),
            CPUs=1,
            progress=False,
            q=True,
            ignore_errors=True,
        )
        tbl = cl.CoRegPoints_table
    out: dict[str, Any] = {
        "grid_res": grid_res,
        "window_size_px": [window, window],
        "tiepoints_total": len(tbl),
        "seconds": round(time.perf_counter() - t, 2),
    }
    if len(tbl) == 0 or "ABS_SHIFT" not in tbl.columns:
        out["tiepoints_valid"] = 0
        return out
    ok = (np.asarray(tbl["ABS_SHIFT"], float) != -9999.0) & ~np.asarray(tbl["OUTLIER"], bool)
    dx = -np.asarray(tbl["X_SHIFT_PX"], float)[ok]
    dy = -np.asarray(tbl["Y_SHIFT_PX"], float)[ok]
    out["tiepoints_valid"] = int(ok.sum())
    if ok.any():
        out["shift_px"] = [round(float(dx.mean()), 4), round(float(dy.mean()), 4)]
        out["shift_std_px"] = [round(float(dx.std()), 4), round(float(dy.std()), 4)]
        out["shift_median_px"] = [round(float(np.median(dx)), 4), round(float(np.median(dy)), 4)]
    return out


def ncc_optimum(target: np.ndarray, reference: np.ndarray, good: np.ndarray) -> list[float]:
    """The translation ``(dx, dy)`` of ``target``'s content that maximises its normalised
    cross-correlation with ``reference`` over the ``good`` pixels (cubic spline moves,
    Nelder-Mead to 0.001 px): a dense, window-free estimate to judge windowed ones by."""
    from scipy import ndimage, optimize

    ok = ndimage.binary_erosion(good, iterations=4)
    ok[:8] = ok[-8:] = False
    ok[:, :8] = ok[:, -8:] = False
    fill = float(np.nanmean(target))
    coef = ndimage.spline_filter(np.nan_to_num(target.astype(np.float64), nan=fill), order=3)
    ref = reference.astype(np.float64)[ok]
    ref = ref - ref.mean()

    def neg_ncc(d: np.ndarray) -> float:
        mv = ndimage.shift(coef, (-d[1], -d[0]), order=3, mode="nearest", prefilter=False)[ok]
        mv = mv - mv.mean()
        return -float(np.sum(mv * ref) / math.sqrt(float(np.sum(mv * mv) * np.sum(ref * ref))))

    x0 = np.array([0.0, 0.0])
    simplex = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]])
    for _ in range(2):  # the second pass restarts around the first optimum with a finer simplex
        res = optimize.minimize(
            neg_ncc,
            x0,
            method="Nelder-Mead",
            options={"xatol": 1e-3, "fatol": 1e-9, "initial_simplex": x0 + simplex},
        )
        x0, simplex = res.x, simplex / 5.0
    return [round(float(v), 4) for v in x0]


def pair_dir() -> Path:
    """The INTER1 pair's folder in the shared data (exits when the shared data is absent)."""
    from stac2cube.sample.data import ENV_VAR, shared_data_dir
    from stac2cube.sample.real_pair import INTER1_DIR

    shared = shared_data_dir()
    if shared is None:
        raise SystemExit(f"shared data not found: set {ENV_VAR} or put it at ../shared/data")
    return shared / INTER1_DIR


def real_pair(quick: bool = False) -> dict[str, Any]:
    """Our step against AROSICS run directly, on the real INTER1 pair (see the module doc)."""
    from stac2cube.sample.real_pair import (
        WP_CLOSE_TO_EDGE,
        WP_COVERING_NODATA,
        WP_INSIDE,
        difference_cloud_mask,
        pair_scene,
        read_inter1,
    )
    from stac2cube.steps.coreg import CoregConfig, CoregStep

    pair = read_inter1(pair_dir())
    ref_f, tgt_f = str(pair.ref_path), str(pair.tgt_path)
    mask = difference_cloud_mask(pair.target, pair.reference)
    valid = np.isfinite(pair.target) & np.isfinite(pair.reference)
    out: dict[str, Any] = {
        "overlap_px": [int(pair.geobox.shape.x), int(pair.geobox.shape.y)],
        "overlap_valid_fraction": round(float(valid.mean()), 4),
        "mask_cloud_fraction": round(float(np.mean(mask[valid] == 2)), 4),
        "mask_shadow_fraction": round(float(np.mean(mask[valid] == 3)), 4),
    }

    # AROSICS directly on the files
    a_global = _arosics_global(ref_f, tgt_f, None)
    a_local = _arosics_local(ref_f, tgt_f, 100, 256)
    tests = {"wp_inside": WP_INSIDE}
    if not quick:
        tests.update(wp_covering_nodata=WP_COVERING_NODATA, wp_close_to_edge=WP_CLOSE_TO_EDGE)
    a_test = {k: _arosics_global(ref_f, tgt_f, wp) for k, wp in tests.items()}
    out["arosics_coreg"] = a_global
    out["arosics_coreg_local"] = a_local
    out["arosics_coreg_at_test_positions"] = a_test

    # our step on the same pixels, with and without the mask layer
    step = CoregStep()
    ours: dict[str, Any] = {}
    for label, m in (("mask", mask), ("nomask", None)):
        scene = pair_scene(pair.target, pair.reference, pair.geobox, cloud_mask=m)
        runs: dict[str, Any] = {"global": CoregConfig(mode="global")}
        runs["local"] = CoregConfig(mode="local", grid_res=100, window_size=256)
        if not quick:
            runs["local_defaults"] = CoregConfig(mode="local")
        for name, cfg in runs.items():
            t = time.perf_counter()
            res = step.run(scene, cfg)
            s = _step_summary(dict(res.record.results), pair.geobox)
            s["seconds"] = round(time.perf_counter() - t, 2)
            if name == "global" and s["windows_matched_map"]:
                # AROSICS directly, in the very windows our step matched (their mean)
                win = int(s.get("window_size_px", [256])[0])
                same = [
                    _arosics_global(ref_f, tgt_f, (x, y), win) for x, y in s["windows_matched_map"]
                ]
                shifts = [a["shift_px"] for a in same if "shift_px" in a]
                s["arosics_same_windows"] = same
                if shifts:
                    s["arosics_same_windows_mean_px"] = [
                        round(float(v), 4) for v in np.mean(shifts, axis=0)
                    ]
            ours[f"{name}_{label}"] = s
    out["ours"] = ours

    # a window-free arbiter: the translation with the best correlation over all clear pixels
    good = (mask == 1) & valid
    opt = ncc_optimum(pair.target, pair.reference, good)
    out["real_pair_ncc_optimum_px"] = opt
    out["real_pair_ncc_optimum_pixels"] = int(good.sum())

    ag, al = a_global.get("shift_px"), a_local.get("shift_px")
    out["arosics_global_vs_ncc_optimum_px"] = _dist(ag, opt)
    out["arosics_local_vs_ncc_optimum_px"] = _dist(al, opt)
    for label in ("mask", "nomask"):
        sfx = "" if label == "mask" else "_nomask"
        g, loc = ours[f"global_{label}"], ours[f"local_{label}"]
        out[f"real_pair_global_shift_px{sfx}"] = _vec(g.get("shift_px"))
        out[f"real_pair_global_status{sfx}"] = g.get("status")
        out[f"real_pair_global_vs_arosics_px{sfx}"] = _dist(_vec(g.get("shift_px")), ag)
        same = g.get("arosics_same_windows_mean_px")
        out[f"real_pair_global_vs_arosics_same_window_px{sfx}"] = _dist(
            _vec(g.get("shift_px")), same
        )
        out[f"real_pair_global_vs_arosics_local_mean_px{sfx}"] = _dist(_vec(g.get("shift_px")), al)
        out[f"real_pair_global_vs_ncc_optimum_px{sfx}"] = _dist(_vec(g.get("shift_px")), opt)
        out[f"real_pair_local_vs_ncc_optimum_px{sfx}"] = _dist(_vec(loc.get("shift_px")), opt)
        out[f"real_pair_local_shift_px{sfx}"] = _vec(loc.get("shift_px"))
        out[f"real_pair_local_status{sfx}"] = loc.get("status")
        out[f"real_pair_local_vs_arosics_px{sfx}"] = _dist(_vec(loc.get("shift_px")), al)
        out[f"real_pair_global_applied_px{sfx}"] = g["applied_px"]
        out[f"real_pair_local_applied_px{sfx}"] = loc["applied_px"]
    out["arosics_global_shift_px"] = ag
    out["arosics_local_mean_shift_px"] = al
    spread = [v["shift_px"] for v in (a_global, *a_test.values()) if "shift_px" in v]
    if len(spread) > 1:
        arr = np.asarray(spread)
        out["arosics_global_spread_px"] = round(
            float(np.max(np.hypot(*(arr[:, None, :] - arr[None, :, :]).transpose(2, 0, 1)))), 4
        )
    return out


# ---------------------------------------------------------------------------- real texture


def noise_sigma(a: np.ndarray, block: int = NOISE_BLOCK, pct: float = NOISE_PERCENTILE) -> float:
    """Sensor noise (standard deviation) of an image: Immerkaer's estimator (the mean absolute
    response to the 3x3 Laplacian difference mask x sqrt(pi/2) / 6) in ``block`` px blocks whose
    pixels and neighbours are all valid, the ``pct`` percentile over the blocks (flat blocks:
    texture adds to the estimate, so the flattest are closest to the noise alone)."""
    from scipy import ndimage

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    ok = np.isfinite(a)
    resp = np.abs(ndimage.convolve(np.where(ok, a, 0.0).astype(np.float64), kernel))
    okn = ndimage.minimum_filter(ok.astype(np.uint8), 3) > 0
    h, w = a.shape
    sig = [
        float(resp[r : r + block, c : c + block].mean()) * math.sqrt(math.pi / 2.0) / 6.0
        for r in range(1, h - block, block)
        for c in range(1, w - block, block)
        if okn[r : r + block, c : c + block].all()
    ]
    if not sig:
        raise ValueError("no valid block to estimate the noise in")
    return float(np.percentile(sig, pct))


def fourier_shift(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``a`` with its content moved by ``(dx, dy)`` px (east, south): the exact shift of the
    band-limited interpolant of ``a`` mirrored to twice its size (periodic without edge jumps).
    Cut a margin of a few px plus the shift off the result: there the mirror shows through."""
    from scipy import ndimage

    h, w = a.shape
    ext = np.pad(a.astype(np.float64), ((0, h), (0, w)), mode="symmetric")
    f = ndimage.fourier_shift(np.fft.fft2(ext), (dy, dx))
    out: np.ndarray = np.fft.ifft2(f).real[:h, :w]
    return out


def spline_shift(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``a`` with its content moved by ``(dx, dy)`` px by cubic B-spline interpolation
    (mirrored edges): a second model of the sub-pixel shift that, unlike :func:`fourier_shift`,
    is not the one a phase-correlation matcher assumes."""
    from scipy import ndimage

    out: np.ndarray = ndimage.shift(a.astype(np.float64), (dy, dx), order=3, mode="mirror")
    return out


SHIFT_MODELS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "fourier": fourier_shift,
    "spline": spline_shift,
}
"""How the target is made from the window (see the module doc)."""


def texture_windows(n_per_image: int) -> list[dict[str, Any]]:
    """Clear ``TEXTURE_WINDOW`` px windows (plus margin) of both images: fully valid, nothing
    brighter than :data:`CLEAR_MAX` in the target, on a lattice of half a window;
    ``n_per_image`` per image at evenly spaced quantiles of their texture."""
    import rasterio

    from stac2cube.references import texture_score
    from stac2cube.sample.real_pair import EPSG, SCALE, inter1_paths

    size = TEXTURE_WINDOW + 2 * SHIFT_MARGIN
    wins: list[dict[str, Any]] = []
    for name, path in zip(("reference", "target"), inter1_paths(pair_dir()), strict=True):
        with rasterio.open(path) as ds:
            dn = ds.read(1)
            transform = ds.transform
        a = dn.astype(np.float32) / np.float32(SCALE)
        a[dn == 0] = np.nan
        sigma = noise_sigma(a)
        cands = []
        for r in range(0, a.shape[0] - size + 1, size // 2):
            for c in range(0, a.shape[1] - size + 1, size // 2):
                w = a[r : r + size, c : c + size]
                # the reference is cloud-free; in the target, cumulus is what is bright
                clear = name == "reference" or float(w.max()) < CLEAR_MAX
                if np.isfinite(w).all() and clear:
                    cands.append((texture_score(w), r, c))
        cands.sort()
        # evenly spaced interior quantiles of texture (n = 1: the median window)
        q = np.linspace(0, len(cands) - 1, n_per_image + 2)[1:-1]
        idx = np.unique(np.round(q).astype(int))
        for i in idx:
            tex, r, c = cands[int(i)]
            x0, y0 = transform * (c + SHIFT_MARGIN, r + SHIFT_MARGIN)
            wins.append(
                {
                    "image": name,
                    "row": r + SHIFT_MARGIN,
                    "col": c + SHIFT_MARGIN,
                    "origin_map": [float(x0), float(y0)],
                    "epsg": EPSG,
                    "texture": round(float(tex), 5),
                    "noise_sigma": round(sigma, 6),
                    "pixels": np.array(a[r : r + size, c : c + size], dtype=np.float64),
                    "candidates": len(cands),
                }
            )
    return wins


def self_match_case(
    win: dict[str, Any],
    dx: float,
    dy: float,
    rng: np.random.Generator,
    contrast: float = 1.0,
    model: str = "fourier",
    mode: str = "global",
    arosics: bool = False,
) -> dict[str, Any]:
    """One case: the window against itself moved by ``(dx, dy)``, independent noise in both,
    the step in ``mode`` with defaults; the applied correction read from the pixels (its mean,
    and the RMS of the remaining misregistration per pixel, which a local warp can vary).
    ``arosics``: AROSICS ``COREG`` also runs directly on the same two noisy arrays."""
    from odc.geo.geobox import GeoBox
    from rasterio.transform import Affine

    from stac2cube.sample.coreg_scenes import TRUTH_X, TRUTH_Y, residual_px
    from stac2cube.sample.real_pair import pair_scene
    from stac2cube.steps.coreg import CoregConfig, CoregStep

    src = win["pixels"]
    if contrast != 1.0:
        src = src.mean() + contrast * (src - src.mean())
    m, n = SHIFT_MARGIN, TEXTURE_WINDOW
    inner = (slice(m, m + n), slice(m, m + n))
    sigma = win["noise_sigma"]
    ref = src[inner] + rng.normal(0.0, sigma, (n, n))
    tgt = SHIFT_MODELS[model](src, dx, dy)[inner] + rng.normal(0.0, sigma, (n, n))
    x0, y0 = win["origin_map"]
    gbox = GeoBox((n, n), Affine(10.0, 0.0, x0, 0.0, -10.0, y0), f"EPSG:{win['epsg']}")
    scene = pair_scene(tgt.astype(np.float32), ref.astype(np.float32), gbox)
    cols = np.broadcast_to(np.arange(n, dtype=np.float32)[None, :] - np.float32(dx), (n, n))
    rows = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None] - np.float32(dy), (n, n))
    bands = dict(scene.bands)
    bands[TRUTH_X] = np.ascontiguousarray(cols)
    bands[TRUTH_Y] = np.ascontiguousarray(rows)
    scene = scene.replace(bands=bands)
    t = time.perf_counter()
    res = CoregStep().run(scene, CoregConfig(mode=mode))  # type: ignore[arg-type]
    seconds = time.perf_counter() - t
    ex, ey = residual_px(res.scene, margin=RESIDUAL_MARGIN)
    ok = np.isfinite(ex) & np.isfinite(ey)
    # per pixel: applied - true (constant for a global shift)
    rx, ry = float(np.mean(ex[ok])), float(np.mean(ey[ok]))
    applied = [rx + dx, ry + dy]
    r = dict(res.record.results)
    true_len = math.hypot(dx, dy)
    resid = float(np.sqrt(np.mean(ex[ok] ** 2 + ey[ok] ** 2)))
    extra: dict[str, Any] = {}
    if arosics:  # on the same arrays and grid, its default window position
        from geoarray import GeoArray

        gt, wkt = gbox.affine.to_gdal(), gbox.crs.to_wkt()
        a = _arosics_global(
            GeoArray(ref.astype(np.float32), gt, wkt),
            GeoArray(tgt.astype(np.float32), gt, wkt),
            None,
            nodata=-9999.0,
        )
        extra["arosics_estimated_px"] = a.get("shift_px")
    return {
        "window": f"{win['image']}:{win['row']},{win['col']}",
        "true_px": [round(dx, 4), round(dy, 4)],
        "applied_px": [round(v, 4) for v in applied],
        "residual_px": round(resid, 4),
        "harm": bool(resid > true_len + HARM_TOL_PX),
        "status": r.get("status"),
        "reason": r.get("reason"),
        "estimated_px": _vec(r.get("shift_px")),
        "record_applied_px": applied_from_record(r),
        "texture": r.get("texture"),
        "seconds": round(seconds, 2),
        **extra,
    }


def _direction(rng: np.random.Generator, length: float) -> tuple[float, float]:
    a = float(rng.uniform(0.0, 2.0 * math.pi))
    return length * math.cos(a), length * math.sin(a)


def _rmse(v: list[float]) -> float | None:
    return round(float(np.sqrt(np.mean(np.square(v)))), 4) if v else None


def _arosics_summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """AROSICS ``COREG`` run directly on the same cases, its estimate taken as the correction
    (it has no significance test), beside our step's estimate (applied or not)."""
    run = [c for c in cases if "arosics_estimated_px" in c]
    if not run:
        return {}
    found = [c for c in run if c["arosics_estimated_px"] is not None]

    def err(v: list[float] | None, c: dict[str, Any]) -> float | None:
        if v is None:
            return None
        return math.hypot(v[0] - c["true_px"][0], v[1] - c["true_px"][1])

    def rmse_of(key: str, kinds: tuple[str, ...]) -> float | None:
        e = [err(c[key], c) for c in found if c["kind"] in kinds]
        return _rmse([x for x in e if x is not None])

    zero = [c for c in found if c["kind"] == "zero"]
    scored = [c for c in found if c["kind"] in ("zero", "small", "large")]
    both = [c for c in scored if c["estimated_px"] is not None]
    out: dict[str, Any] = {
        "arosics_n_cases": len(run),
        "arosics_failures": len(run) - len(found),
        "arosics_zero_shift_estimate_px_max": round(
            max(math.hypot(*c["arosics_estimated_px"]) for c in zero), 4
        )
        if zero
        else None,
        "arosics_small_shift_rmse_px": rmse_of("arosics_estimated_px", ("small",)),
        "arosics_large_shift_rmse_px": rmse_of("arosics_estimated_px", ("large",)),
        "arosics_error_rmse_px": rmse_of("arosics_estimated_px", ("zero", "small", "large")),
        "arosics_harm_rate": round(
            sum(
                (err(c["arosics_estimated_px"], c) or 0.0) > math.hypot(*c["true_px"]) + HARM_TOL_PX
                for c in scored
            )
            / len(scored),
            4,
        )
        if scored
        else None,
        "estimated_error_rmse_px": rmse_of("estimated_px", ("zero", "small", "large")),
        "estimated_vs_arosics_rmse_px": _rmse(
            [
                math.hypot(
                    c["estimated_px"][0] - c["arosics_estimated_px"][0],
                    c["estimated_px"][1] - c["arosics_estimated_px"][1],
                )
                for c in both
            ]
        ),
    }
    for mag in (0.4, 1.0):
        e = [err(c["arosics_estimated_px"], c) for c in found if c["kind"] == f"bias_{mag}"]
        key = f"{mag:.1f}".replace(".", "p")
        out[f"arosics_bias_error_rmse_{key}_px"] = _rmse([x for x in e if x is not None])
    return out


def _summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    def of(kind: str) -> list[dict[str, Any]]:
        return [c for c in cases if c["kind"] == kind]

    zero, small, large = of("zero"), of("small"), of("large")
    scored = zero + small + large
    out: dict[str, Any] = {
        "zero_shift_applied_px_max": round(max(math.hypot(*c["applied_px"]) for c in zero), 4)
        if zero
        else None,
        "small_shift_rmse_px": _rmse([c["residual_px"] for c in small]),
        "large_shift_rmse_px": _rmse([c["residual_px"] for c in large]),
        "harm_rate": round(sum(c["harm"] for c in scored) / len(scored), 4) if scored else None,
        "n_harm": sum(c["harm"] for c in scored),
        "n_cases": len(scored),
        "n_zero": len(zero),
        "n_small": len(small),
        "n_large": len(large),
        "applied_fraction": round(
            sum(math.hypot(*c["applied_px"]) > HARM_TOL_PX for c in scored) / len(scored), 4
        )
        if scored
        else None,
        "statuses": sorted({str(c["status"]) for c in cases}),
    }
    out.update(_arosics_summary(cases))
    for mag in (0.4, 1.0):
        sel = [c for c in cases if c["kind"] == f"bias_{mag}"]
        if not sel:
            continue

        def along(v: list[float] | None, t: list[float]) -> float | None:
            if v is None:
                return None
            return (v[0] * t[0] + v[1] * t[1]) / math.hypot(*t)

        est = [along(c["estimated_px"], c["true_px"]) for c in sel]
        app = [along(c["applied_px"], c["true_px"]) for c in sel]
        est_f = [e for e in est if e is not None]
        key = f"{mag:.1f}".replace(".", "p")
        out[f"bias_true_{key}_px"] = mag
        out[f"bias_estimated_{key}_px"] = round(float(np.mean(est_f)), 4) if est_f else None
        out[f"bias_estimated_{key}_px_range"] = (
            [round(float(min(est_f)), 4), round(float(max(est_f)), 4)] if est_f else None
        )
        out[f"bias_applied_{key}_px"] = round(float(np.mean([a for a in app if a is not None])), 4)
        out[f"bias_residual_rmse_{key}_px"] = _rmse([c["residual_px"] for c in sel])
        out[f"bias_n_{key}"] = len(sel)
    return out


VARIANTS: dict[str, tuple[bool, str, str]] = {
    "band": (False, "fourier", "global"),
    "spline": (False, "spline", "global"),
    "low_texture": (True, "fourier", "global"),
    "local": (False, "fourier", "local"),
}
"""Texture variants: (contrast scaled to :data:`LOW_TEXTURE`, shift model, step mode). ``band``
gives the unprefixed keys, the others are prefixed with their name. ``local`` skips every other
small and large shift (local mode is ~5x slower)."""


def real_texture(
    quick: bool = False, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Real texture matched against itself plus noise (see the module doc)."""
    bias_deg: tuple[float, ...]
    if quick:
        n_win, n_zero, n_small, n_large, bias_deg = 1, 2, 3, 2, (0.0,)
    else:
        n_win, n_zero, n_small, n_large, bias_deg = 2, 3, 5, 2, (0.0, 45.0, 90.0)
    wins = texture_windows(n_win)
    rng = np.random.default_rng(20160529)  # the shifts
    noise = np.random.default_rng(20160608)  # the noise (so variants do not change the shifts)
    variants: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for win in wins:
        plan: list[tuple[str, float, float]] = [("zero", 0.0, 0.0)] * n_zero
        plan += [("small", *_direction(rng, float(rng.uniform(0.05, 0.3)))) for _ in range(n_small)]
        plan += [("large", *_direction(rng, float(rng.uniform(0.3, 3.0)))) for _ in range(n_large)]
        for mag in (0.4, 1.0):
            # along x, the diagonal and y: the sub-pixel fit's error depends on the direction
            plan += [
                (f"bias_{mag}", mag * math.cos(math.radians(a)), mag * math.sin(math.radians(a)))
                for a in bias_deg
            ]
        for variant, cases in variants.items():
            low, model, mode = VARIANTS[variant]
            contrast = LOW_TEXTURE / max(win["texture"], 1e-6) if low else 1.0
            for i, (kind, dx, dy) in enumerate(plan):
                if mode == "local" and kind in ("small", "large") and i % 2:
                    continue
                c = self_match_case(
                    win, dx, dy, noise, contrast, model, mode, arosics=variant == "band"
                )
                c.update(kind=kind, contrast=round(contrast, 4), model=model, mode=mode)
                cases.append(c)
                if progress is not None:
                    progress(f"{variant} {c['window']} {kind} {c['true_px']} -> {c['applied_px']}")
    out: dict[str, Any] = {
        "texture_windows": [{k: v for k, v in w.items() if k != "pixels"} for w in wins],
        "texture_method": (
            "target = the real clear window moved by an exact Fourier shift (mirrored, "
            "band-limited interpolant; 'spline_*': cubic B-spline shift instead; "
            f"'low_texture_*': contrast scaled to {LOW_TEXTURE} RMS gradient); independent "
            "Gaussian noise in both, sigma per image from Immerkaer's estimator (5th percentile "
            f"of {NOISE_BLOCK} px blocks); step in global mode ('local_*': local), defaults; "
            "the applied correction "
            "is read from coordinate bands carried through the correction"
        ),
    }
    for variant, cases in variants.items():
        summary = _summary(cases)
        prefix = "" if variant == "band" else f"{variant}_"
        out.update({f"{prefix}{k}": v for k, v in summary.items()})
        out[f"{prefix}case_list"] = cases
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer windows and cases")
    ap.add_argument("--part", choices=("all", "pair", "texture"), default="all")
    ap.add_argument("--cases", action="store_true", help="include every case in the output")
    args = ap.parse_args()
    pair_dir()  # exits when the shared data is absent
    import hashlib

    import arosics

    from stac2cube.steps import coreg

    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "quick": args.quick,
        "arosics": arosics.__version__,
        "step_version": coreg.CoregStep.version,
        # the step is a package: its modules' sources, in name order
        "step_sha256": hashlib.sha256(
            b"".join(p.read_bytes() for p in sorted(Path(coreg.__file__).parent.glob("*.py")))
        ).hexdigest()[:12],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.part in ("all", "pair"):
        result.update(real_pair(args.quick))
    if args.part in ("all", "texture"):
        tex = real_texture(args.quick)
        if not args.cases:
            for k in [k for k in tex if k.endswith("case_list")]:
                tex.pop(k)
        result.update(tex)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
