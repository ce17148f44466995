"""Ingest overhead: ``stac2cube run`` (no science step) vs rio-cogeo alone on the same windows.

For N generated 10 km x 10 km scenes (1000 x 1000 px at 10 m) and the same bands, compare

* **stac2cube**: ``stac2cube.run`` on a local item collection: search, read windowed to the AOI on
  the target grid, harmonise, encode, write one COG per band, checksums, STAC items, catalog;
* **rio-cogeo**: ``rio_cogeo.cogeo.cog_translate`` (what ``rio cogeo create`` runs) of each band
  through a ``WarpedVRT`` onto the same grid with the same resampling, the same COG profile,
  block size and overviews, and nothing else.

Each side runs in its own subprocess (so its peak RSS is its own), alternating, ``--repeat`` times;
the median wall time is reported. Results go to ``benchmarks/results/ingest.json``; the key the
issue names is ``ingest_vs_cogeo_ratio`` (goal <= 1.3).

    python benchmarks/ingest.py --quick     # 3 scenes, 1 repeat: a few minutes on 2 cores
    python benchmarks/ingest.py             # 6 scenes, 3 repeats
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

from _common import peak_rss_mb, run_worker

BANDS = ["B02", "B03", "B04", "B08", "B05", "B8A", "B11", "B12", "SCL"]
RESULTS = Path(__file__).parent / "results" / "ingest.json"


def worker_stac2cube(config: str) -> dict[str, float]:
    from stac2cube import load_config, run

    cfg = load_config(config)
    t0 = time.perf_counter()
    summary = run(cfg)
    dt = time.perf_counter() - t0
    assert summary.failed == 0 and summary.written > 0, summary
    assert cfg.steps.cloudmask is None, "the ingest benchmark runs no science step"
    assert cfg.run.executor == "serial", "compared with rio-cogeo in one process"
    return {"seconds": dt, "peak_rss_mb": peak_rss_mb(), "scenes": summary.written}


def worker_cogeo(config: str, out: str) -> dict[str, float]:
    """rio-cogeo alone: the same bands and windows, the same grid, profile and overviews."""
    import rasterio
    from rasterio.vrt import WarpedVRT
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    from stac2cube import load_config
    from stac2cube.bands import S2_BANDS, find_asset
    from stac2cube.grid import load_aoi, target_geobox
    from stac2cube.io.read import asset_href, choose_resampling
    from stac2cube.search import search

    cfg = load_config(config)
    aoi = load_aoi(cfg.aoi, cfg.base_dir)
    gbox = target_geobox(aoi, cfg.grid)
    items = search(cfg.source, aoi, cfg.time, base_dir=cfg.base_dir).items
    t0 = time.perf_counter()
    n = 0
    for item in items:
        for band in cfg.bands:
            _, asset = find_asset(item, band)
            with rasterio.open(asset_href(asset)) as src:
                info = S2_BANDS[band]
                rs = choose_resampling(
                    info.kind,
                    abs(src.res[0]),
                    gbox.resolution.x,
                    src.crs.to_epsg() == gbox.crs.epsg,
                )
                vrt_opts = {
                    "crs": src.crs,
                    "transform": gbox.transform,
                    "width": gbox.shape.x,
                    "height": gbox.shape.y,
                    "resampling": rs,
                }
                profile = cog_profiles.get(cfg.output.cog_profile)
                profile.update(
                    blockxsize=cfg.output.blocksize, blockysize=cfg.output.blocksize, predictor=2
                )
                dst = Path(out) / item.id / f"{band}.tif"
                dst.parent.mkdir(parents=True, exist_ok=True)
                with WarpedVRT(src, **vrt_opts) as vrt:
                    cog_translate(
                        vrt,
                        str(dst),
                        profile,
                        nodata=0,
                        in_memory=True,
                        quiet=True,
                        overview_resampling="nearest"
                        if info.kind != "reflectance"
                        else cfg.output.overview_resampling,
                        config={"GDAL_NUM_THREADS": "ALL_CPUS"},
                    )
                n += 1
    dt = time.perf_counter() - t0
    return {"seconds": dt, "peak_rss_mb": peak_rss_mb(), "cogs": n}


def _child(args: list[str]) -> dict[str, Any]:
    return run_worker(__file__, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 scenes, 1 repeat")
    ap.add_argument("--scenes", type=int)
    ap.add_argument("--size", type=int, default=1000, help="scene width/height in 10 m pixels")
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--worker", choices=["stac2cube", "cogeo"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "stac2cube":
        print(json.dumps(worker_stac2cube(a.config)))
        return
    if a.worker == "cogeo":
        print(json.dumps(worker_cogeo(a.config, a.out)))
        return

    import yaml

    from stac2cube.demo import demo_config
    from stac2cube.sample import SampleSpec, generate_sample

    n_scenes = a.scenes or (3 if a.quick else 6)
    repeat = a.repeat or (1 if a.quick else 3)
    with tempfile.TemporaryDirectory(prefix="stac2cube-bench-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        spec = SampleSpec(
            n_dates=n_scenes,
            width=a.size,
            height=a.size,
            seed=1,
            cloud_cover=(0.1,),
            nodata_date=None,
        )
        sample = generate_sample(tmp / "sample", spec)
        gen_s = time.perf_counter() - t0
        ours, theirs = [], []
        for r in range(repeat):
            cat = tmp / f"catalog{r}"
            cfg = demo_config(sample, {"path": str(sample.l2a_items_path)}, cat)
            cfg["bands"] = BANDS
            cfg["steps"] = {}  # ingest only: no science step
            cfg["run"] = {"executor": "serial"}  # one process, like rio-cogeo
            w, s, e, n = sample.bbox  # the whole scene: a 10 km x 10 km window
            cfg["aoi"] = {"bbox": [w, s, e, n]}
            path = tmp / f"cfg{r}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            ours.append(_child(["--worker", "stac2cube", "--config", str(path)]))
            theirs.append(
                _child(
                    ["--worker", "cogeo", "--config", str(path), "--out", str(tmp / f"cogeo{r}")]
                )
            )
        t_ours = statistics.median(x["seconds"] for x in ours)
        t_theirs = statistics.median(x["seconds"] for x in theirs)
        results = {
            "ingest_vs_cogeo_ratio": round(t_ours / t_theirs, 3),
            "goal_ratio": 1.3,
            "stac2cube_seconds": round(t_ours, 2),
            "cogeo_seconds": round(t_theirs, 2),
            "stac2cube_seconds_per_scene": round(t_ours / n_scenes, 2),
            "stac2cube_peak_rss_mb": round(max(x["peak_rss_mb"] for x in ours), 1),
            "cogeo_peak_rss_mb": round(max(x["peak_rss_mb"] for x in theirs), 1),
            "n_scenes": n_scenes,
            "scene_shape_px": [a.size, a.size],
            "bands": BANDS,
            "repeats": repeat,
            "runs_seconds": {
                "stac2cube": [round(x["seconds"], 2) for x in ours],
                "cogeo": [round(x["seconds"], 2) for x in theirs],
            },
            "sample_generation_seconds": round(gen_s, 1),
            "quick": a.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
