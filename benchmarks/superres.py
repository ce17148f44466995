"""Super-resolution (SEN2SR) consistency, seams, speed and memory on generated scenes.

The models have the published SEN2SR-Lite architecture (``CNNSR(in, out, 24, upscale, True,
False, 6)`` per stage, 572,336 parameters for RGBN x4) with **random weights**, written to an
mlstac/STAC-MLM bundle and loaded back through it as a user's bundle would be. Random weights say
nothing about the quality of the detail a trained model adds; what they do measure is:

* ``consistency_rel_error``: the output averaged back to 10 m (20 m bands over 20 m blocks) vs
  the input, mean absolute difference over mean absolute input, worst band, with the step's
  defaults (``back_projection`` on: the output is corrected to the input's block means).
  ``consistency_rel_error_without_back_projection`` is the network with SEN2SR's hard constraint
  alone: the constraint takes the low frequencies from the bicubic-upsampled input whatever the
  network does, so this is close to what bicubic upsampling alone gives back
  (``bicubic_floor_rgbn``, also reported);
* ``seam_max_abs_diff``: a scene that fits one tile, run as one tile and as overlapping tiles
  (reflectance units): what tiling adds;
* speed: input megapixels (10 m) per second on the CPU per model and tile size, the step alone
  (reading excluded), each configuration in its own subprocess whose peak RSS (VmHWM) is reported;
  the time for a 10 km x 10 km scene (1000 x 1000 px at 10 m): measured in full mode, estimated
  from the throughput with ``--quick``;
* ``--gpu``: throughput and peak GPU memory (``torch.cuda.max_memory_allocated``), fp32 vs fp16.

    python benchmarks/superres.py --quick   # ~3-5 min on 2 cores
    python benchmarks/superres.py           # + the 1000 x 1000 scene for each model
    python benchmarks/superres.py --gpu     # + CUDA throughput, memory, fp16

Results go to ``benchmarks/results/superres.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import peak_rss_mb, run_worker

RESULTS = Path(__file__).parent / "results" / "superres.json"
KINDS = ("rgbn_x4", "swir_x2", "full_x4")


def _scene(root: str, size: int | None = None) -> Any:
    from stac2cube.sample import load_sample
    from stac2cube.sample.scenes import scene_from_sample
    from stac2cube.steps.superres import FULL_BANDS

    sample = load_sample(root)
    sc = scene_from_sample(sample, 0, bands=FULL_BANDS, toa_resolution=None).scene
    if size is not None:
        sl = (slice(0, size), slice(0, size))
        sc = sc.replace(bands={b: a[sl] for b, a in sc.bands.items()}, geobox=sc.geobox[sl])
    return sc


def _bundles(root: Path) -> dict[str, Path]:
    from stac2cube.steps import superres as sm

    out = {}
    for kind in KINDS:
        w = sm.random_model(sm.model_definition(kind, "lite"), seed=7)
        out[kind] = sm.write_bundle(w, root / kind, model_id=f"random_SEN2SRLite_{kind}")
    return out


# ------------------------------------------------------------------------------ accuracy


def accuracy(sample_root: str, bundles: dict[str, Path], size: int) -> dict[str, Any]:
    import torch

    from stac2cube.steps.superres import SuperResConfig, SuperResStep, consistency_error

    step = SuperResStep()
    scene = _scene(sample_root, size)
    cons: dict[str, Any] = {}
    for kind in KINDS:
        cfg = SuperResConfig(model=kind, bundle=str(bundles[kind]), device="cpu")
        step.prepare(cfg)
        res = step.run(scene, cfg)
        errs = res.record.results["consistency_rel_error"]
        raw = res.record.results["consistency_rel_error_before_back_projection"]
        cons[kind] = {
            "worst": max(errs.values()),
            "per_band": errs,
            "worst_without_back_projection": max(raw.values()),
            "per_band_without_back_projection": raw,
        }
    floor = {}
    for b in ("B02", "B03", "B04", "B08"):
        lr = torch.from_numpy(scene.bands[b])[None, None]
        up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", antialias=True)
        floor[b] = round(float(consistency_error(up[0, 0].numpy(), scene.bands[b], 4) or 0), 6)

    # seams: 96 x 96 px fit one 128-px tile (with its 16-px mirrored margins)
    crop = _scene(sample_root, 96)
    seams: dict[str, Any] = {}
    cfg = SuperResConfig(bundle=str(bundles["rgbn_x4"]), tile_size=128, overlap=32)
    step.prepare(cfg)
    ref = step.run(crop, cfg)
    assert ref.record.results["tiles"] == 1
    for tile, ov in ((64, 32), (64, 16), (48, 16)):
        cfg = SuperResConfig(bundle=str(bundles["rgbn_x4"]), tile_size=tile, overlap=ov)
        step.prepare(cfg)  # the masks are made for the tile size
        res = step.run(crop, cfg)
        d = [np.abs(ref.scene.layers[k].data - res.scene.layers[k].data) for k in ref.scene.layers]
        seams[f"tile{tile}_overlap{ov}"] = {
            "tiles": res.record.results["tiles"],
            "max_abs_diff": float(max(x.max() for x in d)),
            "mean_abs_diff": float(np.mean([x.mean() for x in d])),
        }
    return {
        "consistency": cons,
        "consistency_rel_error": max(v["worst"] for v in cons.values()),
        "consistency_rel_error_without_back_projection": max(
            v["worst_without_back_projection"] for v in cons.values()
        ),
        "bicubic_floor_rgbn": floor,
        "seams": seams,
        "seam_max_abs_diff": seams["tile64_overlap32"]["max_abs_diff"],
        "accuracy_scene_px": [size, size],
    }


# ------------------------------------------------------------------------------ speed worker


def worker_speed(
    sample_root: str, bundle: str, kind: str, tile: int, overlap: int, size: int, repeat: int
) -> dict[str, Any]:
    import torch

    from stac2cube.steps.superres import SuperResConfig, SuperResStep

    scene = _scene(sample_root, size)
    h, w = scene.geobox.shape.yx
    step = SuperResStep()
    cfg = SuperResConfig(model=kind, bundle=bundle, tile_size=tile, overlap=overlap, device="cpu")  # type: ignore[arg-type]
    small = scene.replace(
        bands={b: a[:32, :32] for b, a in scene.bands.items()}, geobox=scene.geobox[:32, :32]
    )
    step.prepare(cfg)  # load the model; not timed
    step.run(small, cfg)  # warm up; not timed
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = step.run(scene, cfg)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = statistics.median(times)
    return {
        "seconds": round(sec, 3),
        "cpu_seconds": round(statistics.median(cpu), 3),
        "mpx_per_s": round(h * w / 1e6 / sec, 5),
        "tiles": res.record.results["tiles"],
        "scene_px": [h, w],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
    }


def _run_worker(*args: Any) -> dict[str, Any]:
    return run_worker(__file__, ["--worker", *args])


# ------------------------------------------------------------------------------ GPU


def gpu(sample_root: str, bundles: dict[str, Path]) -> dict[str, Any]:
    import torch

    from stac2cube.steps.superres import SuperResConfig, SuperResStep

    if not torch.cuda.is_available():
        return {"available": False}
    step = SuperResStep()
    scene = _scene(sample_root)
    h, w = scene.geobox.shape.yx
    out: dict[str, Any] = {"available": True, "device_name": torch.cuda.get_device_name(0)}
    for kind in KINDS:
        ref = None
        for half in (False, True):
            cfg = SuperResConfig(
                model=kind,
                bundle=str(bundles[kind]),
                device="cuda",
                half=half,
                batch_size=32,  # type: ignore[arg-type]
            )
            step.prepare(cfg)
            step.run(scene, cfg)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            res = step.run(scene, cfg)
            torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            key = f"{kind}_{'fp16' if half else 'fp32'}"
            out[key] = {
                "seconds": round(sec, 3),
                "mpx_per_s": round(h * w / 1e6 / sec, 4),
                "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "batch_size": 32,
                "scene_px": [h, w],
            }
            if ref is None:
                ref = res.scene.layers
            else:
                out[key]["max_abs_diff_vs_fp32"] = float(
                    max(np.nanmax(np.abs(ref[k].data - res.scene.layers[k].data)) for k in ref)
                )
    return out


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small scenes; 10 km time estimated")
    ap.add_argument("--gpu", action="store_true", help="also measure on CUDA if available")
    ap.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        root, bundle, kind, tile, ov, size, rep = args.worker
        print(json.dumps(worker_speed(root, bundle, kind, int(tile), int(ov), int(size), int(rep))))
        return

    from stac2cube.sample import SampleSpec, generate_sample

    t_start = time.perf_counter()
    acc_size = 128 if args.quick else 256
    speed_size = 192 if args.quick else 384
    repeat = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="stac2cube-superres-") as tmp:
        side = max(acc_size, speed_size)
        sample = generate_sample(
            Path(tmp) / "s",
            SampleSpec(n_dates=1, width=side, height=side, seed=5, nodata_date=None),
        )
        root = str(sample.root)
        bundles = _bundles(Path(tmp) / "bundles")
        acc = accuracy(root, bundles, acc_size)
        speed: dict[str, Any] = {}
        tiles = (64, 128, 256)
        for kind in KINDS:
            for tile in tiles if kind == "rgbn_x4" else (128,):
                ov = 32 if tile >= 128 else 16
                size = speed_size if kind != "full_x4" else min(speed_size, 128)
                r = _run_worker(root, bundles[kind], kind, tile, ov, size, repeat)
                speed[f"{kind}_tile{tile}_overlap{ov}"] = r
        cpu_mpx = {k: v["mpx_per_s"] for k, v in speed.items()}
        ten_km: dict[str, Any] = {}
        if args.quick:
            from stac2cube.steps.superres import TileGrid

            n_1000 = TileGrid.make(1000, 128, 32, 2).count ** 2
            for kind in KINDS:
                r = speed[f"{kind}_tile128_overlap32"]
                per_tile = r["seconds"] / r["tiles"]  # time scales with the tiles run
                ten_km[kind] = {
                    "seconds": round(per_tile * n_1000, 1), "estimated": True, "tiles": n_1000,
                    "method": "seconds per 128-px tile (quick run) x tiles of a 1000 x 1000 scene",
                }  # fmt: skip
        else:
            big = generate_sample(
                Path(tmp) / "big",
                SampleSpec(n_dates=1, width=1000, height=1000, seed=99, nodata_date=None),
            )
            for kind in KINDS:
                r = _run_worker(big.root, bundles[kind], kind, 128, 32, 1000, 1)
                ten_km[kind] = {
                    "seconds": r["seconds"], "estimated": False, "peak_rss_mb": r["peak_rss_mb"],
                }  # fmt: skip
        gpu_res = gpu(root, bundles) if args.gpu else {"measured": False}
    n_params = {}
    from stac2cube.steps import superres as sm

    for kind in KINDS:
        d = sm.model_definition(kind)
        n_params[kind] = sum(
            sum(p.numel() for p in sm.build_network(c).parameters()) for c in d.components
        )
    result = {
        "benchmark": "superres",
        "quick": args.quick,
        "weights": "random (published SEN2SR-Lite architecture), saved to and loaded from an "
        "mlstac/STAC-MLM bundle",
        "architecture": "CNNSR(in, out, feature_channels=24, upscale, bias=True, "
        "train_mode=False, num_blocks=6) per stage; sen2sr HardConstraint",
        "n_parameters": n_params,
        "consistency_rel_error": acc["consistency_rel_error"],
        "seam_max_abs_diff": acc["seam_max_abs_diff"],
        "cpu_mpx_per_s": cpu_mpx,
        "seconds_10km_scene_cpu": ten_km,
        "peak_rss_mb": max(v["peak_rss_mb"] for v in speed.values()),
        **{k: v for k, v in acc.items() if k not in ("consistency_rel_error", "seam_max_abs_diff")},
        "speed": speed,
        "gpu": gpu_res,
        "notes": "mpx = megapixels of 10 m input per second, step only (reading excluded), "
        "median of repeats, own subprocess (peak RSS = VmHWM of that process); full_x4 is "
        "timed on a 128 x 128 scene (one tile) and swir_x2's output is at 10 m. Wall times "
        "are inflated when the machine is shared: compare cpu_seconds (process CPU time, "
        "all threads) and machine.load_average_1min",
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("consistency_rel_error", "seam_max_abs_diff", "cpu_mpx_per_s",
            "seconds_10km_scene_cpu", "peak_rss_mb", "total_seconds")  # fmt: skip
    print(json.dumps({k: result[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main()
