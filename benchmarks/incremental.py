"""Incremental updates, memory, Dask scaling, opening large catalogs, and crash safety.

Figures written to ``benchmarks/results/incremental.json`` (targets from issue #6):

* ``update_ratio`` (<= 1.2): ``stac2cube.run`` adding 1 new scene to a catalog of N processed
  scenes, over processing that 1 scene alone into an empty catalog (serial executor, each run in
  a fresh subprocess, median of repeats). N = 200 (``--quick``: 40), recorded as
  ``update_catalog_scenes``. The modules a run imports on first use (index, kerchunk) are imported
  before the clock starts, so that the ratio compares work, not where imports happen to fall;
  ``update_ratio_imports_in_run`` is the same with those imports inside the timed run.
* ``old_cogs_rewritten`` (must be 0): existing COGs whose sha256 or mtime changed in the update.
* ``memory_ratio`` (<= 1.2): peak RSS (VmHWM) of a fresh process running 50 scenes (quick: 10)
  over one running 1 scene (serial executor).
* ``dask_speedup`` (>= 1.8): 8 scenes (1000 x 1000 px, 10 km; ``--quick``: 400 px) on a
  2-worker LocalCluster vs a 1-worker one (wall time of ``run``, cluster start and the workers'
  imports included; ``dask_scene_done_at_s_*`` shows when each scene finished, and
  ``dask_steady_state_speedup`` compares the scene throughput after every worker's first scene).
  The load average of the machine is recorded next to it. The full run repeats this on 20 km
  scenes (2000 x 2000 px; ``dask_by_scene_km``): same fixed costs, four times the work per scene.
  ``dask_speedup_running_cluster`` is the same 10 km run against a cluster that is already up
  (``run.executor: <scheduler address>``; its workers imported the pipeline when they started):
  the client's connection, search, commits and index are timed, starting the cluster is not.
* ``open_1000_items_s`` (< 1 s): opening a 1,000-item catalog as a lazy cube with the fastest
  view (named in ``open_1000_items_view``); ``open_1000_items_s_by_view`` has each:
  ``open_virtual_cube`` (the versioned Icechunk cube, HEAD), ``open_kerchunk_cube`` (the kerchunk
  export) and ``open_cube`` (odc-stac) without and with the stac-geoparquet index
  (:mod:`stac2cube.catalog.index`). The items are clones of one processed item (new ids and
  datetimes, its COGs hard-linked into each clone's folder); their virtual cube is built with
  ``rebuild_virtual_cube``.
* ``kerchunk_vs_odc_read_ratio`` (>= 0.8): throughput of reading the same pixels through the
  kerchunk view over that of the odc-stac view (catalog grid, warm file cache, median).
* ``crash_trials`` / ``crash_trials_passed``: ``stac2cube run`` (12 scenes) in a subprocess
  killed with SIGKILL at a random point of its working window (uniform between the creation of
  the catalog and the end of a reference run), then run again to completion; a trial passes when
  the catalog validates right after the kill and after the re-run (no leftovers), and the final
  items (minus timestamps), COG checksums and kerchunk references equal those of an
  uninterrupted reference run (two reference runs are compared first, to show the comparison
  itself holds).

    python benchmarks/incremental.py --quick    # a few minutes on 2 cores
    python benchmarks/incremental.py            # ~15-20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import peak_rss_mb, run_worker

RESULTS = Path(__file__).parent / "results" / "incremental.json"
BANDS = ["B02", "B03", "B04", "B05", "B08", "B8A", "B11", "B12", "SCL"]
VOLATILE = ("created", "updated", "processing:datetime", "stac2cube:started", "stac2cube:finished")
"""Item properties that hold the time of processing (excluded when runs are compared)."""


# ------------------------------------------------------------------------------ workers
def worker_run(config: str, warm: bool = False) -> dict[str, Any]:
    """``stac2cube.run`` of one config in this (fresh) process; ``warm``: the modules a run
    imports on first use (index writing, kerchunk references) are imported before the clock."""
    from stac2cube import load_config, run

    if warm:
        import kerchunk.tiff  # noqa: F401
        import pyarrow.parquet  # noqa: F401
        import stac_geoparquet.arrow  # noqa: F401

        import stac2cube.catalog.index
        import stac2cube.catalog.kerchunk  # noqa: F401
    cfg = load_config(config)
    done_at: list[float] = []
    t0 = time.perf_counter()
    summary = run(
        cfg,
        progress=lambda ev: done_at.append(time.perf_counter() - t0) if ev.outcome else None,
    )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "written": summary.written,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "done_at_s": [round(v, 3) for v in done_at],
        "index_written_by_run": (
            Path(summary.catalog) / cfg.output.collection_id / "items.parquet"
        ).exists(),
    }


def worker_open(catalog: str) -> dict[str, Any]:
    """Time ``catalog_items`` and a lazy open of a catalog through each view: ``open_cube``
    (odc-stac), ``open_kerchunk_cube`` and ``open_virtual_cube`` (imports warmed first)."""
    import icechunk  # noqa: F401  (import costs are not what is measured)
    import odc.stac  # noqa: F401
    import virtual_tiff  # noqa: F401
    import zarr  # noqa: F401

    from stac2cube import open_cube, open_kerchunk_cube, open_virtual_cube
    from stac2cube.catalog.index import read_index
    from stac2cube.cube.odc import catalog_items

    indexed = read_index(catalog) is not None
    t0 = time.perf_counter()
    n = len(catalog_items(catalog))
    t_items = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = open_cube(catalog, ["B04", "B08"])
    t_open = time.perf_counter() - t0
    assert ds.sizes["time"] == n, (ds.sizes, n)
    t0 = time.perf_counter()
    vds = open_kerchunk_cube(catalog, ["B04", "B08"])
    t_kerchunk = time.perf_counter() - t0
    assert vds.sizes["time"] == n, (vds.sizes, n)
    t0 = time.perf_counter()
    ids = open_virtual_cube(catalog, ["B04", "B08"])
    t_icechunk = time.perf_counter() - t0
    assert ids.sizes["time"] == n, (ids.sizes, n)
    return {
        "items": n,
        "indexed": indexed,
        "catalog_items_s": t_items,
        "open_cube_s": t_open,
        "open_kerchunk_cube_s": t_kerchunk,
        "open_virtual_cube_s": t_icechunk,
    }


def worker_read(catalog: str, repeat: int) -> dict[str, Any]:
    """Read the same pixels through both views; medians of ``repeat`` warm reads."""
    import dask
    import numpy as np

    from stac2cube import open_cube, open_kerchunk_cube

    bands = [b for b in BANDS if b != "SCL"]
    dask.config.set(scheduler="threads")

    def odc_read() -> Any:
        return open_cube(catalog, bands).load()

    def kerchunk_read() -> Any:
        return open_kerchunk_cube(catalog, bands).load()

    a, b = odc_read(), kerchunk_read()  # warm the file cache and imports; check equality
    for name in bands:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    nbytes = int(sum(a[name].nbytes for name in bands))
    t_odc, t_kc = [], []
    for _ in range(repeat):
        for fn, out in ((odc_read, t_odc), (kerchunk_read, t_kc)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return {
        "bytes": nbytes,
        "shape": [a.sizes["time"], len(bands), a.sizes["y"], a.sizes["x"]],
        "odc_s": t_odc,
        "kerchunk_s": t_kc,
        "cpus": len(os.sched_getaffinity(0)),
    }


def _child(args: list[str]) -> dict[str, Any]:
    return run_worker(__file__, args)


# ------------------------------------------------------------------------------ helpers
def _subset(items: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def _config(sample: Any, items_file: Path, catalog: Path, path: Path, **run: Any) -> Path:
    import yaml

    from stac2cube.demo import demo_config

    cfg: dict[str, Any] = demo_config(sample, {"path": str(items_file)}, catalog)
    cfg["bands"] = BANDS
    cfg["steps"] = {}  # no science step: the figures are about the pipeline
    cfg["aoi"] = {"bbox": list(sample.bbox)}
    cfg["run"] = {"executor": "serial", **run}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_child(config: Path, warm: bool = False) -> dict[str, Any]:
    """:func:`worker_run` of ``config`` in a fresh subprocess."""
    return _child(["--worker", "run", "--config", str(config), *(["--warm"] if warm else [])])


def _cog_states(catalog: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every item COG (not the virtual cube's links to them in ``_cube/``,
    whose mtime the cube sets)."""
    return {
        str(p.relative_to(catalog)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(catalog.rglob("*.tif"))
        if p.relative_to(catalog).parts[0] != "_cube"
    }


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------ sections
def bench_update(sample: Any, tmp: Path, n_cat: int, repeat: int) -> dict[str, Any]:
    from stac2cube.catalog.index import write_index

    feats = json.loads(sample.l2a_items_path.read_text())["features"]
    assert len(feats) >= n_cat + 1
    base_items = _subset(feats[:n_cat], tmp / "base.json")
    all_items = _subset(feats[: n_cat + 1], tmp / "all.json")
    one_item = _subset(feats[n_cat : n_cat + 1], tmp / "one.json")
    # every update runs on a catalog at the path it was built at: the virtual cube refers to
    # its COGs by absolute path, and a moved catalog's cube is rebuilt (docs/cube.md)
    cat = tmp / "update-catalog"
    base = tmp / "base-catalog"
    t0 = time.perf_counter()
    built = _run_child(_config(sample, base_items, cat, tmp / "b.yaml"))
    assert built["written"] == n_cat and built["failed"] == 0, built
    build_s = time.perf_counter() - t0
    shutil.copytree(cat, base)  # the catalog as built, restored before each update

    def restore() -> None:
        shutil.rmtree(cat, ignore_errors=True)
        shutil.copytree(base, cat)

    updates, singles, rewritten, index_s = [], [], [], []
    cold: dict[str, list[float]] = {"update": [], "single": []}
    for r in range(repeat):
        # imports included in the timed run (what used to be measured): the same pair again
        restore()
        u_cfg = _config(sample, all_items, cat, tmp / f"u{r}c.yaml")
        cold["update"].append(_run_child(u_cfg)["seconds"])
        s_cfg = _config(sample, one_item, tmp / f"single{r}-cold", tmp / f"s{r}c.yaml")
        cold["single"].append(_run_child(s_cfg)["seconds"])
        shutil.rmtree(tmp / f"single{r}-cold")

        restore()
        before = _cog_states(cat)
        up = _run_child(_config(sample, all_items, cat, tmp / f"u{r}.yaml"), warm=True)
        assert up["written"] == 1 and up["skipped"] == n_cat and up["failed"] == 0, up
        after = _cog_states(cat)
        rewritten.append(sum(1 for k, v in before.items() if after.get(k) != v))
        assert len(after) == len(before) + len(BANDS)
        t0 = time.perf_counter()
        if not up["index_written_by_run"]:
            write_index(cat)
        index_s.append(time.perf_counter() - t0)
        one = _run_child(
            _config(sample, one_item, tmp / f"single{r}", tmp / f"s{r}.yaml"), warm=True
        )
        assert one["written"] == 1 and one["failed"] == 0, one
        updates.append(up)
        singles.append(one)
        shutil.rmtree(tmp / f"single{r}")
    shutil.rmtree(cat)
    t_up = _median([u["seconds"] for u in updates])
    t_one = _median([s["seconds"] for s in singles])
    index_in_run = bool(updates[0]["index_written_by_run"])
    return {
        "update_ratio": round(t_up / t_one, 3),
        "update_ratio_goal": 1.2,
        "update_catalog_scenes": n_cat,
        "update_seconds": round(t_up, 3),
        "single_scene_seconds": round(t_one, 3),
        "update_runs_seconds": [round(u["seconds"], 3) for u in updates],
        "single_runs_seconds": [round(s["seconds"], 3) for s in singles],
        "update_ratio_imports_in_run": round(_median(cold["update"]) / _median(cold["single"]), 3),
        "update_runs_seconds_imports_in_run": [round(v, 3) for v in cold["update"]],
        "single_runs_seconds_imports_in_run": [round(v, 3) for v in cold["single"]],
        "update_run_writes_index": index_in_run,
        "write_index_seconds": None if index_in_run else round(_median(index_s), 3),
        "update_ratio_with_index": (
            None if index_in_run else round((t_up + _median(index_s)) / t_one, 3)
        ),
        "old_cogs_rewritten": max(rewritten),
        "old_cogs_checked": n_cat * len(BANDS),
        "catalog_build_seconds": round(build_s, 1),
        "catalog_build_peak_rss_mb": round(built["peak_rss_mb"], 1),
        "_base": str(base),
    }


def bench_memory(sample: Any, tmp: Path, n_many: int) -> dict[str, Any]:
    feats = json.loads(sample.l2a_items_path.read_text())["features"]
    many = _subset(feats[:n_many], tmp / "mem-many.json")
    one = _subset(feats[:1], tmp / "mem-one.json")
    r_one = _run_child(_config(sample, one, tmp / "mem1", tmp / "m1.yaml"))
    r_many = _run_child(_config(sample, many, tmp / "memN", tmp / "mN.yaml"))
    assert r_one["written"] == 1 and r_many["written"] == n_many, (r_one, r_many)
    return {
        "memory_ratio": round(r_many["peak_rss_mb"] / r_one["peak_rss_mb"], 3),
        "memory_ratio_goal": 1.2,
        "memory_scenes": n_many,
        "peak_rss_mb_one_scene": round(r_one["peak_rss_mb"], 1),
        "peak_rss_mb_many_scenes": round(r_many["peak_rss_mb"], 1),
    }


CLUSTER = """
import sys
from distributed import LocalCluster
if __name__ == "__main__":
    cluster = LocalCluster(
        n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True,
        dashboard_address=None, scheduler_kwargs={"dashboard": False},
        preload=["stac2cube.pipeline"],
    )
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()  # until the benchmark closes the pipe
    cluster.close()
"""


class _RunningCluster:
    """A LocalCluster of ``workers`` workers that import the pipeline when they start
    (``preload``), in its own process, up before the clock starts: what ``run.executor:
    <scheduler address>`` finds on a long-lived cluster."""

    def __init__(self, workers: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLUSTER, str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        if not self.address.startswith("tcp://"):
            raise SystemExit("the benchmark's Dask cluster did not start")

    def __enter__(self) -> str:
        return self.address

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_dask(sample: Any, tmp: Path, repeat: int, running: bool = False) -> dict[str, Any]:
    items = sample.l2a_items_path
    t = {1: [], 2: []}  # type: dict[int, list[float]]
    done = {1: [], 2: []}  # type: dict[int, list[list[float]]]
    warm = {1: [], 2: []}  # type: dict[int, list[float]]
    loads = [_loadavg()]
    keep = None
    for r in range(repeat):
        for workers in (1, 2):
            cat = tmp / f"dask{workers}-{r}"
            cfg = _config(
                sample, items, cat, tmp / f"d{workers}{r}.yaml", executor="local", workers=workers
            )
            res = _run_child(cfg)
            assert res["written"] == len(sample.scenes) and res["failed"] == 0, res
            t[workers].append(res["seconds"])
            done[workers].append(res["done_at_s"])
            loads.append(_loadavg())
            if keep is None:
                keep = cat
            else:
                shutil.rmtree(cat)
            if running:
                with _RunningCluster(workers) as address:
                    cat = tmp / f"dask{workers}-{r}-running"
                    cfg = _config(
                        sample, items, cat, tmp / f"dr{workers}{r}.yaml", executor=address
                    )
                    res = _run_child(cfg)
                assert res["written"] == len(sample.scenes) and res["failed"] == 0, res
                warm[workers].append(res["seconds"])
                shutil.rmtree(cat)
    t1, t2 = _median(t[1]), _median(t[2])

    def steady(workers: int) -> float:
        """Scenes per second once every worker has finished its first scene (cluster start and
        imports excluded): (n - workers) scenes over the time after the first round."""
        rates = []
        for at in done[workers]:
            at = sorted(at)
            rates.append((len(at) - workers) / (at[-1] - at[workers - 1]))
        return _median(rates)

    return {
        "dask_speedup": round(t1 / t2, 3),
        "dask_steady_state_speedup": round(steady(2) / steady(1), 3),
        "dask_speedup_goal": 1.8,
        "dask_scenes": len(sample.scenes),
        "dask_scene_shape_px": [sample.spec.height, sample.spec.width],
        "dask_seconds_1_worker": [round(v, 2) for v in t[1]],
        "dask_seconds_2_workers": [round(v, 2) for v in t[2]],
        # seconds from the start of `run` at which each scene was reported done (first run):
        # the first one includes starting the cluster and the workers' imports
        "dask_scene_done_at_s_1_worker": done[1][0],
        "dask_scene_done_at_s_2_workers": done[2][0],
        "dask_loadavg_during": loads,
        **(
            {
                "dask_speedup_running_cluster": round(_median(warm[1]) / _median(warm[2]), 3),
                "dask_seconds_1_worker_running_cluster": [round(v, 2) for v in warm[1]],
                "dask_seconds_2_workers_running_cluster": [round(v, 2) for v in warm[2]],
            }
            if running
            else {}
        ),
        "_catalog": str(keep),
    }


def dask_by_scene_size(res10: dict[str, Any], res20: dict[str, Any]) -> dict[str, Any]:
    """The Dask figures of 10 km and 20 km scenes side by side: the fixed costs (cluster start,
    imports, shutdown) weigh less the more work each scene holds."""
    keys = ("dask_speedup", "dask_steady_state_speedup")
    return {
        "dask_by_scene_km": {
            "10": {k: res10[k] for k in keys},
            "20": {k: res20[k] for k in keys},
        },
        "dask_seconds_1_worker_20km": res20["dask_seconds_1_worker"],
        "dask_seconds_2_workers_20km": res20["dask_seconds_2_workers"],
        "dask_scene_done_at_s_1_worker_20km": res20["dask_scene_done_at_s_1_worker"],
        "dask_scene_done_at_s_2_workers_20km": res20["dask_scene_done_at_s_2_workers"],
    }


def bench_read(catalog: str, repeat: int) -> dict[str, Any]:
    res = _child(["--worker", "read", "--catalog", catalog, "--repeat", str(repeat)])
    t_odc, t_kc = _median(res["odc_s"]), _median(res["kerchunk_s"])
    mb = res["bytes"] / 1e6
    return {
        "kerchunk_vs_odc_read_ratio": round(t_odc / t_kc, 3),
        "kerchunk_vs_odc_read_ratio_goal": 0.8,
        "read_shape_time_band_y_x": res["shape"],
        "read_mb": round(mb, 1),
        "odc_read_mb_per_s": round(mb / t_odc, 1),
        "kerchunk_read_mb_per_s": round(mb / t_kc, 1),
        "odc_read_seconds": [round(v, 3) for v in res["odc_s"]],
        "kerchunk_read_seconds": [round(v, 3) for v in res["kerchunk_s"]],
    }


def make_clone_catalog(base: Path, out: Path, n: int) -> Path:
    """A catalog of ``n`` items cloned from the first item of ``base`` (new ids and datetimes,
    the original item's COGs hard-linked into each clone's folder), committed in one collection
    write, with one kerchunk reference file per item (pointing at the original's COGs)."""
    import datetime as dt

    from stac2cube.catalog import CatalogStore
    from stac2cube.catalog.kerchunk import item_references, references_path
    from stac2cube.io.atomic import write_json_atomic

    src = CatalogStore.open(base)
    store = CatalogStore(out, src.collection_id)
    store.create()
    orig_id = src.item_ids()[0]
    shutil.copytree(src.item_dir(orig_id), store.item_dir(orig_id))
    doc = src.read_item(orig_id)
    assert doc is not None
    t0 = dt.datetime.fromisoformat(doc["properties"]["datetime"].replace("Z", "+00:00"))
    coll = store.read_collection()
    coll["links"] = [ln for ln in coll["links"] if ln["rel"] != "item"]
    for k in range(n):
        item_id = orig_id if k == 0 else f"{orig_id}-clone{k:04d}"
        if k:
            clone = json.loads(json.dumps(doc))
            clone["id"] = item_id
            when = t0 + dt.timedelta(hours=k)
            clone["properties"]["datetime"] = when.isoformat().replace("+00:00", "Z")
            path = store.item_path(item_id)
            path.parent.mkdir(parents=True)
            for asset in clone["assets"].values():  # hard links: the files of a real item
                name = Path(asset["href"]).name
                if "cloud-optimized" in str(asset.get("type", "")):
                    os.link(store.item_dir(orig_id) / name, path.parent / name)
                else:
                    asset["href"] = f"../{orig_id}/{name}"
            path.write_text(json.dumps(clone))
        coll["links"].append(
            {"rel": "item", "href": f"./{item_id}/{item_id}.json", "type": "application/geo+json"}
        )
    write_json_atomic(store.collection_path, coll)
    refs = item_references(store, store.read_item(orig_id) or {})
    for k in range(n):
        item_id = orig_id if k == 0 else f"{orig_id}-clone{k:04d}"
        when = (t0 + dt.timedelta(hours=k)).isoformat().replace("+00:00", "Z")
        path = references_path(store, item_id)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({**refs, "id": item_id, "datetime": when}))
    return out


def bench_open(base: Path, tmp: Path, n: int, repeat: int) -> dict[str, Any]:
    from stac2cube.catalog.index import index_path, invalidate_index, write_index
    from stac2cube.catalog.virtual import rebuild_virtual_cube

    cat = make_clone_catalog(base, tmp / "clones", n)
    t0 = time.perf_counter()
    write_index(cat)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    rebuild_virtual_cube(cat)  # the clones' cube, as runs would have committed it
    t_cube = time.perf_counter() - t0
    size = index_path(cat).stat().st_size
    runs: dict[str, list[dict[str, Any]]] = {"json": [], "index": []}
    for _ in range(repeat):
        invalidate_index(cat)
        runs["json"].append(_child(["--worker", "open", "--catalog", str(cat)]))
        write_index(cat)
        runs["index"].append(_child(["--worker", "open", "--catalog", str(cat)]))
    assert not any(r["indexed"] for r in runs["json"]) and all(r["indexed"] for r in runs["index"])
    assert all(r["items"] == n for rs in runs.values() for r in rs)

    def med(kind: str, key: str) -> float:
        return round(_median([r[key] for r in runs[kind]]), 3)

    by_view = {
        "icechunk_virtual_cube": med("index", "open_virtual_cube_s"),
        "kerchunk_export": med("index", "open_kerchunk_cube_s"),
        "odc_stac_with_index": med("index", "open_cube_s"),
        "odc_stac_without_index": med("json", "open_cube_s"),
    }
    best = min(by_view, key=by_view.__getitem__)
    return {
        "open_1000_items_s": by_view[best],
        "open_1000_items_view": best,
        "open_1000_items_goal_s": 1.0,
        "open_1000_items_s_by_view": by_view,
        "open_1000_catalog_items_s": {
            "without_index": med("json", "catalog_items_s"),
            "with_index": med("index", "catalog_items_s"),
        },
        "open_items": n,
        "write_index_1000_items_s": round(t_index, 3),
        "rebuild_virtual_cube_1000_items_s": round(t_cube, 1),
        "index_file_kb": round(size / 1024, 1),
    }


def _catalog_state(catalog: Path) -> dict[str, Any]:
    """What must equal between runs: items minus timestamps, file checksums, kerchunk refs,
    the items in the virtual cube's HEAD (its link folders are named by each item's time of
    writing, so their names differ from run to run)."""
    from stac2cube.catalog import CatalogStore
    from stac2cube.catalog.virtual import has_virtual_cube, head_items

    store = CatalogStore.open(catalog)
    items = {}
    for doc in store.iter_items():
        props = {k: v for k, v in doc["properties"].items() if k not in VOLATILE}
        items[doc["id"]] = {**doc, "properties": props}
    files = {
        str(p.relative_to(catalog)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(catalog.rglob("*"))
        if p.is_file()
        and (p.suffix == ".tif" or "_kerchunk" in p.parts)
        and p.relative_to(catalog).parts[0] != "_cube"
    }
    cube = {str(i): True for i in head_items(catalog)} if has_virtual_cube(catalog) else {}
    return {"items": items, "files": files, "cube": cube}


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for kind in ("items", "files", "cube"):
        ka, kb = set(a[kind]), set(b[kind])
        if ka != kb:
            out.append(f"{kind}: only in one: {sorted(ka ^ kb)[:5]}")
        out += [f"{kind}: {k} differs" for k in sorted(ka & kb) if a[kind][k] != b[kind][k]][:5]
    return out


def _cli(config: Path) -> list[str]:
    exe = Path(sys.executable).parent / "stac2cube"
    return [str(exe if exe.exists() else shutil.which("stac2cube")), "run", "-q", str(config)]


def _start_run(config: Path, catalog: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``stac2cube run`` and wait until it has created the catalog (its working window
    starts there; before it a kill cannot leave anything behind). Returns the process and
    the seconds it took to get there."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(_cli(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (catalog / "catalog.json").exists() and proc.poll() is None:
        time.sleep(0.005)
    return proc, time.perf_counter() - t0


def bench_crash(sample: Any, tmp: Path, n_scenes: int, trials: int, seed: int) -> dict[str, Any]:
    import yaml

    from stac2cube.catalog import STAGING_PREFIX, CatalogStore
    from stac2cube.check import check_catalog

    feats = json.loads(sample.l2a_items_path.read_text())["features"]
    items = _subset(feats[:n_scenes], tmp / "crash.json")
    refs = []
    windows = []
    for r in range(2):
        cat = tmp / f"crash-ref{r}"
        proc, _ = _start_run(_config(sample, items, cat, tmp / f"cr{r}.yaml"), cat)
        t0 = time.perf_counter()
        assert proc.wait() == 0
        windows.append(time.perf_counter() - t0)
        refs.append(_catalog_state(cat))
    ref_diff = _diff(refs[0], refs[1])
    window = max(windows)
    rng = random.Random(seed)
    results = []
    for i in range(trials):
        cat = tmp / f"crash{i}"
        cfg = _config(sample, items, cat, tmp / f"c{i}.yaml")
        delay = rng.uniform(0.0, window)
        proc, _ = _start_run(cfg, cat)
        time.sleep(delay)
        finished_first = proc.poll() is not None
        if not finished_first:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = CatalogStore(cat, yaml.safe_load(cfg.read_text())["output"]["collection_id"])
        coll_dir = store.collection_path.parent
        mid_scene = coll_dir.exists() and any(
            p.name.startswith(STAGING_PREFIX) for p in coll_dir.iterdir()
        )
        committed = len(store.item_ids()) if store.collection_path.exists() else 0
        try:
            after_kill = list(check_catalog(cat).problems)
        except Exception as exc:  # a catalog too broken to check is what a trial looks for
            after_kill = [f"{type(exc).__name__}: {exc}"]
        rerun = subprocess.run(_cli(cfg), capture_output=True, text=True, check=False)
        report = check_catalog(cat)
        diff = _diff(refs[0], _catalog_state(cat))
        ok = (
            not after_kill
            and rerun.returncode == 0
            and not report.problems
            and not report.warnings
            and not diff
        )
        results.append(
            {
                "delay_after_catalog_created_s": round(delay, 2),
                "killed": not finished_first,
                "items_committed_at_kill": committed,
                "staging_dir_at_kill": mid_scene,
                "valid_after_kill": not after_kill,
                "valid_after_rerun": not report.problems,
                "leftovers_after_rerun": len(report.warnings),
                "equal_to_reference": not diff,
                "passed": ok,
                "problems": (after_kill + list(report.problems) + diff)[:5]
                + ([rerun.stderr[-500:]] if rerun.returncode else []),
            }
        )
        shutil.rmtree(cat)
    return {
        "crash_trials": len(results),
        "crash_trials_passed": sum(r["passed"] for r in results),
        "crash_trials_killed_mid_run": sum(r["killed"] for r in results),
        "crash_trials_killed_mid_scene": sum(r["staging_dir_at_kill"] for r in results),
        "crash_scenes": n_scenes,
        "crash_kill_window_s": round(window, 2),
        "crash_reference_runs_identical": not ref_diff,
        "crash_reference_diff": ref_diff,
        "crash_trial_details": results,
    }


# ------------------------------------------------------------------------------ main
SECTIONS = ("update", "memory", "open", "crash", "dask", "read")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller catalogs, fewer trials")
    ap.add_argument("--seed", type=int, default=6, help="seed of the kill delays")
    ap.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--worker", choices=["run", "open", "read"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--catalog", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "run":
        print(json.dumps(worker_run(a.config, a.warm)))
        return
    if a.worker == "open":
        print(json.dumps(worker_open(a.catalog)))
        return
    if a.worker == "read":
        print(json.dumps(worker_read(a.catalog, a.repeat)))
        return

    from stac2cube.sample import SampleSpec, generate_sample

    quick = a.quick
    only = set(a.only.split(",")) if a.only else set(SECTIONS)
    if not only <= set(SECTIONS):
        raise SystemExit(f"--only takes a comma-separated subset of {','.join(SECTIONS)}")
    n_cat = 40 if quick else 200
    small = 120  # px: 1.2 km x 1.2 km scenes keep a 200-scene catalog affordable
    big = 400 if quick else 1000  # px: 10 km x 10 km scenes for Dask scaling and reads
    results: dict[str, Any] = {}
    if a.only and RESULTS.exists():  # a partial run updates the figures it measures
        results = json.loads(RESULTS.read_text())
    results.update(quick=quick, loadavg_start=_loadavg(), complete=False)
    timings: dict[str, float] = dict(results.get("section_seconds", {}))

    def save() -> None:
        results["scene_shape_px"] = [small, small]
        results["bands"] = BANDS
        results["section_seconds"] = {k: round(v, 1) for k, v in timings.items()}
        results["loadavg_end"] = _loadavg()
        results["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="stac2cube-incr-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        small_sections = only & {"update", "memory", "open", "crash"}
        spec = SampleSpec(
            n_dates=n_cat + 1,
            width=small,
            height=small,
            seed=2,
            cloud_cover=(0.1,),
            nodata_date=None,
        )
        sample = generate_sample(tmp / "sample", spec) if small_sections else None
        if small_sections:
            timings["sample_small"] = time.perf_counter() - t0

        if only & {"update", "open"}:
            t0 = time.perf_counter()
            upd = bench_update(sample, tmp, n_cat, 2 if quick else 3)
            base = Path(upd.pop("_base"))
            results.update(upd)
            timings["update"] = time.perf_counter() - t0
            save()
        if "memory" in only:
            t0 = time.perf_counter()
            results.update(bench_memory(sample, tmp, 10 if quick else 50))
            timings["memory"] = time.perf_counter() - t0
            save()
        if "open" in only:
            t0 = time.perf_counter()
            results.update(bench_open(base, tmp, 1000, 2 if quick else 3))
            timings["open"] = time.perf_counter() - t0
            save()
        if "crash" in only:
            t0 = time.perf_counter()
            results.update(bench_crash(sample, tmp, 12, 5 if quick else 20, a.seed))
            timings["crash"] = time.perf_counter() - t0
            save()
        if only & {"dask", "read"}:
            t0 = time.perf_counter()
            big_spec = SampleSpec(
                n_dates=8, width=big, height=big, seed=3, cloud_cover=(0.1,), nodata_date=None
            )
            big_sample = generate_sample(tmp / "sample-big", big_spec)
            timings["sample_big"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            dask_res = bench_dask(big_sample, tmp, 1 if quick else 2, running=True)
            read_cat = dask_res.pop("_catalog")
            if "dask" in only:
                results.update(dask_res)
                timings["dask"] = time.perf_counter() - t0
                save()
            if "dask" in only and not quick:
                # the same on 20 km scenes (4x the work per scene, same fixed costs)
                t0 = time.perf_counter()
                spec20 = dataclasses.replace(big_spec, width=2 * big, height=2 * big)
                (tmp / "20km").mkdir()
                res20 = bench_dask(generate_sample(tmp / "sample-20km", spec20), tmp / "20km", 2)
                shutil.rmtree(res20.pop("_catalog"))
                results.update(dask_by_scene_size(dask_res, res20))
                timings["dask_20km"] = time.perf_counter() - t0
                save()
            if "read" in only:
                t0 = time.perf_counter()
                results.update(bench_read(read_cat, 3 if quick else 5))
                timings["read"] = time.perf_counter() - t0
                save()
    results["complete"] = only == set(SECTIONS)
    save()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
