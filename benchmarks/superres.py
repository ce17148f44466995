"""Super-resolution (SEN2SR): consistency, sharpness, seams, speed and memory on generated scenes.

The models have the published SEN2SR-Lite architecture (``CNNSR(in, out, 24, upscale, True,
False, 6)`` per stage, 572,336 parameters for RGBN x4) with **random weights** (the released
weights cannot be downloaded here), written to an mlstac/STAC-MLM bundle and loaded back through
it as a user's bundle would be. Random weights say nothing about the detail a trained model adds;
each figure below says whether it depends on them (``figures_with_random_weights``):

* ``input_20m_reconstruction`` (independent of the weights): the 20 m field sen2sr's own
  downsampling recovers from what the step hands over (the native 20 m pixels repeated 2 x 2),
  and from the bilinear 10 m bands it was handed before, against the 20 m field itself;
* ``consistency_rel_error_published`` / ``_backprojected``: the output averaged back over each
  input pixel (20 m bands over their native 20 m pixels) vs the input, mean absolute difference
  over mean absolute input, worst band, without back-projection (the default: the published
  model's output) and with it (exact by construction); ``bicubic_floor_rgbn`` is what plain
  bicubic upsampling gives back;
* ``sharpness_hf_ratio_published`` / ``_backprojected``: the output's energy above the input
  grid's Nyquist frequency over that of the bicubic-upsampled input (mean over bands, per model);
  ``sharpness_hf_ratio_bicubic_backprojected_rgbn`` (independent of the weights) is what
  back-projection alone adds to plain bicubic upsampling;
* ``seam_max_abs_diff_published`` / ``_backprojected``: a scene that fits one tile, run as one
  tile and as overlapping tiles (reflectance units): what tiling adds;
* speed (independent of the weights): input megapixels (10 m) per second on the CPU per model and
  tile size, the step alone (reading excluded), each configuration in its own subprocess whose
  peak RSS (VmHWM) is reported; the time for a 10 km x 10 km scene (1000 x 1000 px at 10 m):
  measured in full mode, estimated from the throughput with ``--quick``;
* ``--gpu``: throughput and peak GPU memory (``torch.cuda.max_memory_allocated``), fp32 vs fp16.

    python benchmarks/superres.py --quick   # ~3-5 min on 2 cores
    python benchmarks/superres.py           # + the 1000 x 1000 scene for each model
    python benchmarks/superres.py --gpu     # + CUDA throughput, memory, fp16
    python benchmarks/superres.py --gpu-only  # only CUDA, on a 10 km scene; kept beside
                                              # the results file's CPU figures

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
HEADLINE = (
    "consistency_rel_error_published",
    "consistency_rel_error_backprojected",
    "sharpness_hf_ratio_published",
    "sharpness_hf_ratio_backprojected",
    "seam_max_abs_diff_published",
    "seam_max_abs_diff_backprojected",
    "input_20m_reconstruction",
)


def _scene(root: str, size: int | None = None) -> Any:
    """Date 0 of the sample as the pipeline reads it for the step: the ten bands on the 10 m
    grid, the six 20 m bands on their own grid in ``aux`` (cropped from the grid's origin, which
    is on the 20 m grid)."""
    import dataclasses

    from stac2cube.sample import load_sample
    from stac2cube.sample.scenes import aux_geobox, scene_from_sample
    from stac2cube.steps.superres import FULL_BANDS, NATIVE_20M, SWIR_BANDS

    sample = load_sample(root)
    sc = scene_from_sample(
        sample, 0, bands=FULL_BANDS, toa_resolution=20.0, toa="l2a", toa_bands=SWIR_BANDS
    ).scene
    aux = sc.aux["toa"]
    if size is not None:
        sl = (slice(0, size), slice(0, size))
        sc = sc.replace(bands={b: a[sl] for b, a in sc.bands.items()}, geobox=sc.geobox[sl])
        g = aux_geobox(sc.geobox, 20.0)
        gy, gx = g.shape.yx
        aux = dataclasses.replace(aux, data=aux.data[:, :gy, :gx], geobox=g)
    return sc.replace(aux={NATIVE_20M: aux})


def _bundles(root: Path) -> dict[str, Path]:
    from stac2cube.steps import superres as sm

    out = {}
    for kind in KINDS:
        w = sm.random_model(sm.model_definition(kind, "lite"), seed=7)
        out[kind] = sm.write_bundle(w, root / kind, model_id=f"random_SEN2SRLite_{kind}")
    return out


# ------------------------------------------------------------------------------ accuracy


def _hf_energy(a: np.ndarray, factor: int) -> float:
    """Energy of ``a`` (Hann-windowed) above the Nyquist frequency of a grid ``factor`` times
    coarser, along either axis, per pixel."""
    a = a - a.mean()
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    f = np.fft.fft2(a * win)
    fy = np.abs(np.fft.fftfreq(a.shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(a.shape[1]))[None, :]
    hf = (fy > 0.5 / factor) | (fx > 0.5 / factor)
    return float((np.abs(f[hf]) ** 2).sum() / a.size**2)


def _bicubic(lr: np.ndarray, factor: int) -> np.ndarray:
    """``lr`` upsampled as SEN2SR's hard constraint upsamples its input."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None]
    up = torch.nn.functional.interpolate(t, scale_factor=factor, mode="bicubic", antialias=True)
    out: np.ndarray = up[0, 0].numpy()
    return out


def _sharpness(scene: Any, layers: dict[str, Any], scale: int) -> dict[str, float]:
    """Per band: HF energy of the output over that of the bicubic-upsampled input (10 m bands
    from the scene, 20 m bands from their native 20 m pixels)."""
    from stac2cube.steps.superres import NATIVE_20M

    aux = scene.aux[NATIVE_20M]
    out = {}
    for layer in layers.values():
        band = layer.band
        if band in aux.bands:
            lr, f = aux.data[aux.bands.index(band)], 2 * scale
        else:
            lr, f = scene.bands[band], scale
        sr = layer.data
        ref = _bicubic(lr, f)[: sr.shape[0], : sr.shape[1]]
        out[band] = round(_hf_energy(sr, f) / _hf_energy(ref, f), 4)
    return out


def input_20m_reconstruction(scene: Any) -> dict[str, Any]:
    """What sen2sr's own downsampling of the 20 m bands (``referencex2.resample_sentinel2_bands``:
    nearest, scale 0.5) recovers from what the step hands over now and from the bilinear 10 m
    bands it was handed before, against the 20 m field read on its own grid."""
    import torch

    from stac2cube.steps.superres import FULL_BANDS, NATIVE_20M, SWIR_BANDS, model_input

    def down(a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
        out: np.ndarray = torch.nn.functional.interpolate(t, scale_factor=0.5, mode="nearest")[0]
        return np.asarray(out)

    stack, _ = model_input(scene, FULL_BANDS, needs_20m=True)
    idx = [FULL_BANDS.index(b) for b in SWIR_BANDS]
    now = down(stack[idx])
    before = down(np.stack([scene.bands[b] for b in SWIR_BANDS]))
    native = scene.aux[NATIVE_20M].data[:, : now.shape[1], : now.shape[2]]

    def err(a: np.ndarray) -> dict[str, float]:
        d = a - native
        return {"max_abs": float(np.abs(d).max()), "rms": float(np.sqrt(np.mean(d**2)))}

    return {
        "nearest_20m_handover": err(now),
        "bilinear_10m_handover_before": err(before),
        "field_std": float(native.std()),
        "scene_px": list(scene.geobox.shape.yx),
    }


def accuracy(sample_root: str, bundles: dict[str, Path], size: int) -> dict[str, Any]:
    from stac2cube.steps.superres import SuperResConfig, SuperResStep, consistency_error

    step = SuperResStep()
    scene = _scene(sample_root, size)
    cons: dict[str, Any] = {}
    sharp: dict[str, Any] = {}
    for kind in KINDS:
        runs = {}
        for bp in (False, True):
            cfg = SuperResConfig(
                model=kind, bundle=str(bundles[kind]), device="cpu", back_projection=bp
            )
            step.prepare(cfg)
            runs[bp] = step.run(scene, cfg)
        pub = runs[False].record.results["consistency_rel_error"]
        bp_res = runs[True].record.results
        assert bp_res["consistency_rel_error_before_back_projection"] == pub
        cons[kind] = {
            "published": max(pub.values()),
            "backprojected": max(bp_res["consistency_rel_error"].values()),
            "per_band_published": pub,
            "per_band_backprojected": bp_res["consistency_rel_error"],
        }
        s = 1 if kind == "swir_x2" else 4
        per = {
            "published": _sharpness(scene, dict(runs[False].scene.layers), s),
            "backprojected": _sharpness(scene, dict(runs[True].scene.layers), s),
        }
        sharp[kind] = {
            **{k: round(float(np.mean(list(v.values()))), 4) for k, v in per.items()},
            **{f"per_band_{k}": v for k, v in per.items()},
        }
    floor = {}
    for b in ("B02", "B03", "B04", "B08"):
        up = _bicubic(scene.bands[b], 4)
        floor[b] = round(float(consistency_error(up, scene.bands[b], 4) or 0), 6)
    # what back-projection alone does to a smooth upsampling (no network): its per-block step
    from stac2cube.steps.superres import back_project

    bp_on_bicubic = {}
    for b in ("B02", "B03", "B04", "B08"):
        up = _bicubic(scene.bands[b], 4)
        ref = _hf_energy(up, 4)
        back_project(up, scene.bands[b], 4)
        bp_on_bicubic[b] = round(_hf_energy(up, 4) / ref, 4)

    # seams: 96 x 96 px fit one 128-px tile (with its 16-px mirrored margins)
    crop = _scene(sample_root, 96)
    seams: dict[str, Any] = {}
    for bp, name in ((False, "published"), (True, "backprojected")):
        kw: dict[str, Any] = {"bundle": str(bundles["rgbn_x4"]), "back_projection": bp}
        cfg = SuperResConfig(tile_size=128, overlap=32, **kw)
        step.prepare(cfg)
        ref = step.run(crop, cfg)
        assert ref.record.results["tiles"] == 1
        seams[name] = {}
        for tile, ov in ((64, 32), (64, 16), (48, 16)):
            cfg = SuperResConfig(tile_size=tile, overlap=ov, **kw)
            step.prepare(cfg)  # the masks are made for the tile size
            res = step.run(crop, cfg)
            d = [
                np.abs(ref.scene.layers[k].data - res.scene.layers[k].data)
                for k in ref.scene.layers
            ]
            seams[name][f"tile{tile}_overlap{ov}"] = {
                "tiles": res.record.results["tiles"],
                "max_abs_diff": float(max(x.max() for x in d)),
                "mean_abs_diff": float(np.mean([x.mean() for x in d])),
            }
    return {
        "consistency_rel_error_published": max(v["published"] for v in cons.values()),
        "consistency_rel_error_backprojected": max(v["backprojected"] for v in cons.values()),
        "sharpness_hf_ratio_published": {k: v["published"] for k, v in sharp.items()},
        "sharpness_hf_ratio_backprojected": {k: v["backprojected"] for k, v in sharp.items()},
        "seam_max_abs_diff_published": seams["published"]["tile64_overlap32"]["max_abs_diff"],
        "seam_max_abs_diff_backprojected": seams["backprojected"]["tile64_overlap32"][
            "max_abs_diff"
        ],
        "input_20m_reconstruction": input_20m_reconstruction(scene),
        "consistency": cons,
        "sharpness": sharp,
        "bicubic_floor_rgbn": floor,
        "sharpness_hf_ratio_bicubic_backprojected_rgbn": bp_on_bicubic,
        "seams": seams,
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


def gpu_only(out: Path, side: int) -> dict[str, Any]:
    """The CUDA part alone, on a ``side`` x ``side`` scene (default 10 km, the size of
    ``seconds_10km_scene_cpu``), written under ``gpu`` of ``out``; its other figures are kept."""
    import torch

    from stac2cube.sample import SampleSpec, generate_sample

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stac2cube-superres-gpu-") as tmp:
        sample = generate_sample(
            Path(tmp) / "s",
            SampleSpec(n_dates=1, width=side, height=side, seed=99, nodata_date=None),
        )
        res = gpu(str(sample.root), _bundles(Path(tmp) / "bundles"))
    res = {
        "measured": bool(res.get("available")),
        **res,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "weights": "random (published SEN2SR-Lite architecture): speed and memory do not "
        "depend on them",
        "method": "the step alone on a generated scene already read (reading excluded), "
        "128 px tiles with 32 px overlap, batches of 32 tiles, one warm-up run then one timed "
        "run per model and precision (torch.cuda.synchronize around it); the step's CPU "
        "work (tiling, the hard constraint's bookkeeping, blending) is included",
        "seconds_total": round(time.perf_counter() - t0, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    results = json.loads(out.read_text()) if out.exists() else {"benchmark": "superres"}
    results["gpu"] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return res


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small scenes; 10 km time estimated")
    ap.add_argument("--gpu", action="store_true", help="also measure on CUDA if available")
    ap.add_argument(
        "--gpu-only",
        type=int,
        nargs="?",
        const=1000,
        metavar="SIDE",
        help="only the CUDA part, on a SIDE x SIDE scene (default 1000), written under 'gpu' "
        "of the results file, whose other figures are kept",
    )
    ap.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        root, bundle, kind, tile, ov, size, rep = args.worker
        print(json.dumps(worker_speed(root, bundle, kind, int(tile), int(ov), int(size), int(rep))))
        return
    if args.gpu_only:
        print(json.dumps(gpu_only(args.out, args.gpu_only), indent=1))
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
        gpu_res = (
            gpu(root, bundles)
            if args.gpu
            else {"measured": False, "why": "not asked for (--gpu); no GPU in this run"}
        )
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
        "mlstac/STAC-MLM bundle: the released weights cannot be downloaded here",
        "figures_with_random_weights": [
            "consistency_rel_error_published", "consistency_rel_error_backprojected",
            "sharpness_hf_ratio_published", "sharpness_hf_ratio_backprojected",
            "seam_max_abs_diff_published", "seam_max_abs_diff_backprojected",
            "consistency", "sharpness", "seams",
        ],
        "figures_independent_of_weights": [
            "input_20m_reconstruction", "bicubic_floor_rgbn",
            "sharpness_hf_ratio_bicubic_backprojected_rgbn", "cpu_mpx_per_s",
            "seconds_10km_scene_cpu", "peak_rss_mb", "speed",
        ],
        "architecture": "CNNSR(in, out, feature_channels=24, upscale, bias=True, "
        "train_mode=False, num_blocks=6) per stage; sen2sr HardConstraint",
        "n_parameters": n_params,
        **{k: acc[k] for k in HEADLINE},
        "cpu_mpx_per_s": cpu_mpx,
        "seconds_10km_scene_cpu": ten_km,
        "peak_rss_mb": max(v["peak_rss_mb"] for v in speed.values()),
        **{k: v for k, v in acc.items() if k not in HEADLINE},
        "speed": speed,
        "gpu": gpu_res,
        "notes": "mpx = megapixels of 10 m input per second, step only (reading excluded), "
        "median of repeats, own subprocess (peak RSS = VmHWM of that process); full_x4 is "
        "timed on a 128 x 128 scene (one tile) and swir_x2's output is at 10 m. Wall times "
        "are inflated when the machine is shared: compare cpu_seconds (process CPU time, "
        "all threads) and machine.load_average_1min. sharpness: energy above the input "
        "grid's Nyquist frequency (Hann window, either axis) over that of the input upsampled "
        "bicubically as the hard constraint does; 1 = no more detail than bicubic.",
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    keys = (*HEADLINE, "cpu_mpx_per_s", "seconds_10km_scene_cpu", "peak_rss_mb", "total_seconds")
    print(json.dumps({k: result[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main()
