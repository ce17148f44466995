"""Co-registration accuracy and speed: real Sentinel-2 pixels, and generated scenes with a
known displacement.

Real pixels (``../shared/data/rasters/arosics-INTER1-T33UUU-2016``, see
:mod:`_coreg_real`): ``real_pair_global_vs_arosics_px`` / ``real_pair_local_vs_arosics_px``
compare our shifts on AROSICS' real misregistered pair with AROSICS ``COREG`` /
``COREG_LOCAL`` run directly on the files; ``zero_shift_applied_px_max``,
``small_shift_rmse_px`` (true shifts 0.05-0.3 px) and ``harm_rate`` match real texture against
itself moved by a known shift (Fourier shift, and cubic B-spline as a model the estimator does
not assume: ``spline_*``), with independent noise measured from the images.

Generated scenes (below) have a known per-pixel truth but share the sample's landscape model.

Scenes come from :mod:`stac2cube.sample.coreg_scenes` (the sample's landscape and cloud model,
target and reference from different days, sensor noise in both). The error of the *applied*
correction is measured per pixel: two smooth bands holding the true surface coordinates of each
pixel go through the step with the reflectance, and after the correction they should read each
pixel's own coordinates (``residual_px``). RMSEs are the root mean square length of the residual
vectors over the pixels with data.

* ``global_rmse_px``: global mode (defaults) on global shifts of 0.3-5 px in random directions,
  half the scenes with clouds (cloud model target cover 0.2-0.4; the realised CLOUD_MASK
  fraction, cloud + shadow, is reported per scene). RMSE of the estimated shift vectors against
  the truth; ``global_applied_rmse_px`` is the per-pixel residual of the applied correction.
* ``local_rmse_px`` / ``global_rmse_px_on_warp``: local and global mode on smooth warps (shift +
  rotation + sinusoid, up to ~2 px), per-pixel residual over all pixels with data (and
  ``*_interior`` without a border of half a local window, where the tie-point warp extrapolates).
* ``temporal_std_before`` / ``_after``: a stack of dates of one landscape with random global
  shifts (0.3-3 px), clear sky; mean over the pixels (valid in every date, 8 px border left
  out) of the per-pixel temporal standard deviation of B08, before and after co-registration
  (global mode). ``temporal_std_aligned`` is the same stack generated without shifts: the floor
  that phenology, illumination and noise leave.
* speed: one 10 km x 10 km scene (1000 x 1000 px at 10 m, 4 bands), clear and cloudy, per
  mode, the step alone, in its own subprocess (``seconds_per_scene_<mode>`` is the clear
  scene, the slower case for local mode: clouds remove tie points); peak RSS (VmHWM) is reset
  after the scene is generated, so ``peak_rss_mb_*`` is the process (interpreter, libraries,
  scene) plus the step.

    python benchmarks/coreg.py --quick   # 400 x 400 px accuracy scenes: ~2 min on 2 cores
    python benchmarks/coreg.py           # 1000 x 1000 px accuracy scenes

Results go to ``benchmarks/results/coreg.json``. The generator is never tuned to the method nor
the method to the generator; the numbers are what the defaults give.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import peak_rss_mb, run_worker, write_results

RESULTS = Path(__file__).parent / "results" / "coreg.json"
GLOBAL_TARGET_PX = 0.1
LOCAL_TARGET_PX = 0.2


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the step's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # pragma: no cover
        return False
    return True


def _rmse(v: list[float]) -> float | None:
    a = np.asarray([x for x in v if np.isfinite(x)], dtype=np.float64)
    return round(float(np.sqrt(np.mean(a**2))), 4) if a.size else None


def _pooled(sq_sums: list[tuple[float, int]]) -> float | None:
    s = sum(x for x, _ in sq_sums)
    n = sum(k for _, k in sq_sums)
    return round(float(np.sqrt(s / n)), 4) if n else None


def _sq(ex: np.ndarray, ey: np.ndarray) -> tuple[float, int]:
    ok = np.isfinite(ex) & np.isfinite(ey)
    return float(np.sum(ex[ok] ** 2 + ey[ok] ** 2)), int(ok.sum())


def global_accuracy(size: int, n: int) -> dict[str, Any]:
    from stac2cube.sample.coreg_scenes import (
        make_coreg_scene,
        random_shift,
        residual_px,
        with_truth_coordinates,
    )
    from stac2cube.steps.coreg import CoregConfig, CoregStep

    step, cfg = CoregStep(), CoregConfig()
    rng = np.random.default_rng(2024)
    errors: list[float] = []
    errors_clear: list[float] = []
    errors_cloudy: list[float] = []
    applied: list[tuple[float, int]] = []
    scenes = []
    for i in range(n):
        warp = random_shift(rng, 0.3, 5.0)
        cc = float(rng.uniform(0.2, 0.4)) if i % 2 else 0.0
        cs = make_coreg_scene(size=size, warp=warp, seed=100 + i, cloud_cover=cc)
        t = time.perf_counter()
        res = step.run(with_truth_coordinates(cs), cfg)
        dt = time.perf_counter() - t
        r = res.record.results
        rec: dict[str, Any] = {
            "true_shift_px": [round(v, 4) for v in warp.shift],
            "cloud_cover_target": round(cc, 3),
            "mask_bad_fraction": round(float(np.mean(cs.scene.classes["CLOUD_MASK"] != 1)), 3)
            if "CLOUD_MASK" in cs.scene.classes
            else 0.0,
            "status": r["status"],
            "seconds": round(dt, 3),
        }
        if r["status"] == "ok":
            err = float(np.hypot(*np.subtract(r["shift_px"], warp.shift)))
            errors.append(err)
            (errors_cloudy if cc else errors_clear).append(err)
            applied.append(_sq(*residual_px(res.scene)))
            rec.update(
                estimated_shift_px=r["shift_px"],
                error_px=round(err, 4),
                reliability=r["reliability"],
                window_size_px=r["window_size_px"],
            )
        else:
            rec["reason"] = r["reason"]
        scenes.append(rec)
    return {
        "global_rmse_px": _rmse(errors),
        "global_rmse_px_clear": _rmse(errors_clear),
        "global_rmse_px_cloudy": _rmse(errors_cloudy),
        "global_max_error_px": round(max(errors), 4) if errors else None,
        "global_applied_rmse_px": _pooled(applied),
        "global_failures": sum(s["status"] != "ok" for s in scenes),
        "global_scenes": scenes,
    }


def warp_accuracy(size: int, n: int) -> dict[str, Any]:
    from stac2cube.sample.coreg_scenes import (
        make_coreg_scene,
        random_warp,
        residual_px,
        with_truth_coordinates,
    )
    from stac2cube.steps.coreg import CoregConfig, CoregStep

    step = CoregStep()
    rng = np.random.default_rng(7)
    margin = CoregConfig(mode="local").window // 2
    sums: dict[str, list[tuple[float, int]]] = {
        k: [] for k in ("before", "global", "local", "global_interior", "local_interior")
    }
    scenes = []
    for i in range(n):
        warp = random_warp(rng, size, 2.0)
        cs = make_coreg_scene(size=size, warp=warp, seed=200 + i)
        scene = with_truth_coordinates(cs)
        sums["before"].append(_sq(*residual_px(scene)))
        rec: dict[str, Any] = {
            "true_max_displacement_px": round(float(np.max(np.hypot(cs.truth.dx, cs.truth.dy))), 3)
        }
        for mode in ("global", "local"):
            t = time.perf_counter()
            res = step.run(scene, CoregConfig(mode=mode))
            dt = time.perf_counter() - t
            r = res.record.results
            sums[mode].append(_sq(*residual_px(res.scene)))
            sums[f"{mode}_interior"].append(_sq(*residual_px(res.scene, margin=margin)))
            rec[mode] = {
                "status": r["status"],
                "rmse_px": _pooled([sums[mode][-1]]),
                "seconds": round(dt, 3),
            }
            if mode == "local" and r["status"] == "ok":
                rec[mode]["tiepoints_valid"] = r["tiepoints_valid"]
                rec[mode]["tiepoints_total"] = r["tiepoints_total"]
        scenes.append(rec)
    return {
        "warp_rmse_px_before": _pooled(sums["before"]),
        "local_rmse_px": _pooled(sums["local"]),
        "local_rmse_px_interior": _pooled(sums["local_interior"]),
        "global_rmse_px_on_warp": _pooled(sums["global"]),
        "global_rmse_px_on_warp_interior": _pooled(sums["global_interior"]),
        "interior_margin_px": margin,
        "warp_scenes": scenes,
    }


def temporal(size: int, n_dates: int) -> dict[str, Any]:
    from stac2cube.sample.coreg_scenes import make_coreg_scene, random_shift
    from stac2cube.steps.coreg import CoregConfig, CoregStep

    step, cfg = CoregStep(), CoregConfig()
    rng = np.random.default_rng(99)
    before, after, aligned = [], [], []
    statuses = []
    for d in range(n_dates):
        warp = random_shift(rng, 0.3, 3.0)
        cs = make_coreg_scene(size=size, warp=warp, seed=300, date=d)
        before.append(cs.scene.bands["B08"])
        res = step.run(cs.scene, cfg)
        statuses.append(res.record.results["status"])
        after.append(res.scene.bands["B08"])
        aligned.append(make_coreg_scene(size=size, seed=300, date=d).scene.bands["B08"])

    def mean_std(stack: list[np.ndarray], valid: np.ndarray) -> float:
        a = np.stack(stack)
        return round(float(np.std(a, axis=0)[valid].mean()), 5)

    valid = np.isfinite(np.stack(after)).all(axis=0)
    valid[:8] = valid[-8:] = False
    valid[:, :8] = valid[:, -8:] = False
    return {
        "temporal_std_before": mean_std(before, valid),
        "temporal_std_after": mean_std(after, valid),
        "temporal_std_aligned": mean_std(aligned, valid),
        "temporal_dates": n_dates,
        "temporal_status": statuses,
    }


# ------------------------------------------------------------------------------ speed worker


def worker_speed(mode: str, size: int, cloud_cover: float) -> dict[str, float]:
    from stac2cube.sample.coreg_scenes import Warp, make_coreg_scene
    from stac2cube.steps.coreg import CoregConfig, CoregStep

    cs = make_coreg_scene(
        size=size, warp=Warp(shift=(1.3, -0.8)), seed=400, cloud_cover=cloud_cover
    )
    step, cfg = CoregStep(), CoregConfig(mode=mode)  # type: ignore[arg-type]
    small = make_coreg_scene(size=256, warp=Warp(shift=(0.5, 0.5)), seed=401)
    step.run(small.scene, CoregConfig())  # imports, not timed
    rss0 = peak_rss_mb()
    reset = _reset_peak_rss()
    t = time.perf_counter()
    res = step.run(cs.scene, cfg)
    dt = time.perf_counter() - t
    return {
        "seconds": round(dt, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_before_step": round(rss0, 1),
        "peak_rss_reset_before_step": float(reset),
        "status_ok": float(res.record.results["status"] == "ok"),
        "mask_bad_fraction": round(float(np.mean(cs.scene.classes["CLOUD_MASK"] != 1)), 3)
        if "CLOUD_MASK" in cs.scene.classes
        else 0.0,
        "tiepoints_valid": float(res.record.results.get("tiepoints_valid", -1)),
    }


def _run_worker(mode: str, size: int, cloud_cover: float) -> dict[str, Any]:
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return run_worker(__file__, ["--worker", mode, size, cloud_cover], env=threads)


def real(quick: bool) -> dict[str, Any]:
    """The real-pixel figures (:mod:`_coreg_real`): the real pair against AROSICS run directly,
    and real texture matched against itself with known shifts and noise."""
    from _coreg_real import real_pair, real_texture

    from stac2cube.sample.data import shared_data_dir

    if shared_data_dir() is None:
        return {"real_skipped": "shared data not found (../shared/data or STAC2CUBE_SHARED_DATA)"}
    out: dict[str, Any] = {"real_data": "figures named real_* and the texture figures are real"}
    out.update(real_pair(quick))
    tex = real_texture(quick)
    for k in [k for k in tex if k.endswith("case_list")]:
        tex.pop(k)
    out.update(tex)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="400 x 400 px accuracy scenes, fewer")
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "SIZE", "CC"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        mode, size, cc = args.worker
        print(json.dumps(worker_speed(mode, int(size), float(cc))))
        return
    t0 = time.perf_counter()
    if args.quick:
        size, n_global, n_warp, n_dates = 400, 6, 3, 5
    else:
        size, n_global, n_warp, n_dates = 1000, 12, 4, 8
    result: dict[str, Any] = {"benchmark": "coreg", "quick": args.quick}
    result["accuracy_scene_px"] = size
    result.update(global_accuracy(size, n_global))
    result.update(warp_accuracy(size, n_warp))
    result.update(temporal(size, n_dates))
    result["global_target_px"] = GLOBAL_TARGET_PX
    result["local_target_px"] = LOCAL_TARGET_PX
    g, loc, gw = (
        result["global_rmse_px"],
        result["local_rmse_px"],
        result["global_rmse_px_on_warp"],
    )
    result["meets_global_target"] = g is not None and g <= GLOBAL_TARGET_PX
    result["meets_local_target"] = loc is not None and loc <= LOCAL_TARGET_PX
    result["local_better_than_global_on_warp"] = loc is not None and gw is not None and loc < gw
    result["accuracy_seconds"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    result.update(real(args.quick))
    result["real_seconds"] = round(time.perf_counter() - t1, 1)
    speed = {
        f"{m}_{sky}": _run_worker(m, 1000, cc)
        for m in ("global", "local")
        for sky, cc in (("clear", 0.0), ("cloudy", 0.3))
    }
    for m in ("global", "local"):
        result[f"seconds_per_scene_{m}"] = speed[f"{m}_clear"]["seconds"]
        result[f"seconds_per_scene_{m}_cloudy"] = speed[f"{m}_cloudy"]["seconds"]
        result[f"peak_rss_mb_{m}"] = max(
            s["peak_rss_mb"] for k, s in speed.items() if k.startswith(m)
        )
    result["speed"] = speed
    result["speed_scene"] = (
        "10 km x 10 km, 1000 x 1000 px at 10 m, 4 bands, clear and with clouds (cloud model "
        "target 0.3, CLOUD_MASK ~52 % cloud + shadow), default config per mode, step only, own "
        "subprocess; peak RSS reset after generating the scene"
    )
    import arosics

    result["software"] = {"arosics": arosics.__version__}
    write_results(result, args.out)


if __name__ == "__main__":
    main()
