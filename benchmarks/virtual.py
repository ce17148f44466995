"""The versioned virtual cube (Icechunk): opening large cubes, the cost of an update, reads
against odc-stac, time travel and stale COGs.

Figures written to ``benchmarks/results/virtual.json`` (targets from issue #19):

* ``open_s_by_items`` (< 1 s at 100,000 items, not growing with N): a lazy
  ``open_virtual_cube`` of HEAD, all bands, in a fresh process (imports before the clock),
  median of 5 processes (``--quick``: 2); ``open_s_by_items_one_band`` the same for one band.
* ``commit_s_per_item``: ``commit_snapshot`` of a fixed update, ``update_items`` real items
  appended, on top of each cube size, per item (median of repeats); the same update also
  replaces (``commit_replace_s_per_item``) and removes them (``commit_remove_s_per_item``).
  ``commit_growth_ratio``: largest cube over smallest. Opens and commits are measured once
  the largest cube is built, the sizes in turn: the branch is reset to each size's snapshot
  (so that a slower minute of this shared machine weighs on every size alike).
* ``read_vs_odc_ratio`` (>= 1.0): throughput of the same pixels read through the virtual cube
  over ``open_cube`` (odc-stac) on the catalog grid, warm file cache, median; values equal.
* ``time_travel_identical``: after a second run adds items and reprocesses one (its source item
  updated, with other pixels), the first run's version equals what HEAD gave after that run.
* ``stale_read_raises``: after a COG's bytes are overwritten in place (the snapshot's hard link
  sees it), reading that item through the cube raises. ``stale_read_right_after_run``: the same
  for COGs overwritten as soon as their run returns (the links' times are set to a whole second
  already past, which the snapshot records, so a change within the same second is caught too).

How the large cubes are built (``method``): a few real items are processed by ``run()``, then
time steps derived from their real ``item_dataset`` outputs (the same references, new times,
item ids and records) are appended with ``append_items``, 10,000 per commit.

    python benchmarks/virtual.py --quick    # 1,000 and 10,000 items: ~1-2 minutes on 2 cores
    python benchmarks/virtual.py            # up to 100,000 items, 10 km reads: ~3-4 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from _common import machine, peak_rss_mb, run_worker

RESULTS = Path(__file__).parent / "results" / "virtual.json"
SCALE_BANDS = ["B02", "B03", "B04", "B08"]
"""Bands of the large cubes (one grid: four arrays of references per time step)."""
READ_BANDS = ["B02", "B03", "B04", "B05", "B08", "B8A", "B11", "B12"]
"""Bands of the read comparison (those of ``incremental.py``'s)."""
TRAVEL_BANDS = ["B04", "B08"]
BATCH = 10_000
"""Derived time steps per commit while a large cube is built."""
AFTER_RUN_TRIALS = 6
"""Runs whose new COG is overwritten as soon as the run returns (``right_after_run``)."""
DERIVED_START = "2015-07-04T10:00"
DERIVED_STEP_MIN = 30
"""Derived time steps start before the real items and are 30 minutes apart, so the cube's time
axis is not in commit order at any size and every open sorts it."""


def _quiet() -> None:
    warnings.filterwarnings("ignore", message=".*Numcodecs codecs are not in the Zarr.*")
    warnings.filterwarnings("ignore", message=".*StringDType.*")
    os.environ.setdefault("ICECHUNK_LOG", "icechunk=error")


def _warm_imports() -> None:
    """The modules an open or a commit imports on first use, imported before the clock."""
    import dask.array  # noqa: F401  (xarray imports it on first use of a duck array: 0.7 s)
    import icechunk  # noqa: F401
    import obspec_utils.registry  # noqa: F401
    import obstore.store  # noqa: F401
    import virtual_tiff  # noqa: F401
    import virtualizarr  # noqa: F401
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    import stac2cube.catalog.virtual
    import stac2cube.cube.virtual  # noqa: F401


# ------------------------------------------------------------------------------ workers
def worker_open(catalog: str, bands: str) -> dict[str, Any]:
    """One lazy open of HEAD in this (fresh) process."""
    import dask.array

    _warm_imports()
    from stac2cube.cube.virtual import open_virtual_cube

    names = bands.split(",") if bands else None
    t0 = time.perf_counter()
    ds = open_virtual_cube(catalog, names)
    seconds = time.perf_counter() - t0
    lazy = all(isinstance(ds[n].data, dask.array.Array) for n in ds.data_vars)
    return {
        "seconds": seconds,
        "items": int(ds.sizes["time"]),
        "bands": len(ds.data_vars),
        "lazy": lazy,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_commit(catalog: str, ids: str, repeat: int, tag: str) -> dict[str, Any]:
    """``commit_snapshot`` of the same update, ``repeat`` times: the items appended (named
    ``new``, as ``run`` does for scenes the catalog did not hold), the same items replaced, then
    removed (so the next repeat appends them again)."""
    _warm_imports()
    from stac2cube.catalog import CatalogStore
    from stac2cube.catalog.virtual import commit_snapshot

    store = CatalogStore.open(catalog)
    update = ids.split(",")
    out: dict[str, list[float]] = {"append": [], "replace": [], "remove": []}
    for r in range(repeat):
        for kind in out:
            run_id = f"bench-{tag}-{r}-{kind}"
            t0 = time.perf_counter()
            if kind == "remove":
                res = commit_snapshot(store, run_id, removed=update)
            elif kind == "append":  # as a run appends: it knows the catalog had no such items
                res = commit_snapshot(store, run_id, changed=update, new=update)
            else:
                res = commit_snapshot(store, run_id, changed=update)
            out[kind].append(time.perf_counter() - t0)
            done = {"append": res.appended, "replace": res.replaced, "remove": res.removed}[kind]
            assert sorted(done) == sorted(update) and res.snapshot_id, (kind, res)
    return {**out, "peak_rss_mb": peak_rss_mb()}


def worker_read(catalog: str, repeat: int) -> dict[str, Any]:
    """Read the same pixels through odc-stac, the virtual cube and the kerchunk view, each
    opened and loaded; ``repeat`` warm reads (``open_seconds``: the lazy open's share)."""
    import dask
    import numpy as np

    _warm_imports()
    from stac2cube import open_cube, open_kerchunk_cube
    from stac2cube.cube.virtual import open_virtual_cube

    dask.config.set(scheduler="threads")
    opens_lazily = {
        "odc": lambda: open_cube(catalog, READ_BANDS),
        "virtual": lambda: open_virtual_cube(catalog, READ_BANDS),
        "kerchunk": lambda: open_kerchunk_cube(catalog, READ_BANDS),
    }
    first = {k: fn().load() for k, fn in opens_lazily.items()}  # warm the cache; check equality
    for name in READ_BANDS:
        for k in ("virtual", "kerchunk"):
            np.testing.assert_array_equal(first["odc"][name].values, first[k][name].values)
    np.testing.assert_array_equal(first["odc"]["time"].values, first["virtual"]["time"].values)
    a = first["odc"]
    seconds: dict[str, list[float]] = {k: [] for k in opens_lazily}
    opens: dict[str, list[float]] = {k: [] for k in opens_lazily}
    views = list(opens_lazily)
    for r in range(repeat):
        for k in views[r % 3 :] + views[: r % 3]:  # each view in turn goes first
            t0 = time.perf_counter()
            ds = opens_lazily[k]()
            t1 = time.perf_counter()
            ds.load()
            seconds[k].append(time.perf_counter() - t0)
            opens[k].append(t1 - t0)
    return {
        "bytes": int(sum(a[n].nbytes for n in READ_BANDS)),
        "shape": [a.sizes["time"], len(READ_BANDS), a.sizes["y"], a.sizes["x"]],
        "values_equal": True,
        "seconds": seconds,
        "open_seconds": opens,
    }


def _child(args: list[Any]) -> dict[str, Any]:
    return run_worker(__file__, args)


# ------------------------------------------------------------------------------ helpers
def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _items_file(features: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _config(
    sample: Any, items_file: Path, catalog: Path, path: Path, bands: list[str], **output: Any
) -> Path:
    import yaml

    from stac2cube.demo import demo_config

    cfg: dict[str, Any] = demo_config(sample, {"path": str(items_file)}, catalog)
    cfg["bands"] = bands
    cfg["steps"] = {}  # no science step: the figures are about the cube
    cfg["aoi"] = {"bbox": list(sample.bbox)}
    cfg["run"] = {"executor": "serial"}
    cfg["output"] = {**cfg["output"], **output}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path) -> Any:
    from stac2cube import load_config, run

    summary = run(load_config(config))
    assert summary.failed == 0, summary
    return summary


def _sample(path: Path, n: int, px: int, seed: int) -> Any:
    from stac2cube.sample import SampleSpec, generate_sample

    spec = SampleSpec(
        n_dates=n, width=px, height=px, seed=seed, cloud_cover=(0.1,), nodata_date=None
    )
    return generate_sample(path, spec)


# ------------------------------------------------------------------------------ large cubes
class DerivedSteps:
    """Batches of time steps derived from real items' ``item_dataset`` outputs: the same
    references and records, new times and item ids. A batch of n steps is put together from
    the real items doubled (``xr.concat`` of ManifestArrays), not from n datasets."""

    def __init__(self, pairs: list[tuple[Any, Any]], ids: list[str]) -> None:
        self.pairs, self.ids = pairs, ids

    @staticmethod
    def _cat(parts: list[Any]) -> Any:
        import xarray as xr

        if len(parts) == 1:
            return parts[0]
        return xr.concat(parts, dim="time", coords="minimal", compat="override")

    def batch(self, n: int, start: int) -> tuple[Any, Any]:
        import numpy as np

        r = len(self.pairs)
        assert n % r == 0, (n, r)
        v = [self._cat([p[0] for p in self.pairs])]
        rec = [self._cat([p[1] for p in self.pairs])]
        while r * 2 ** len(v) <= n:
            v.append(self._cat([v[-1], v[-1]]))
            rec.append(self._cat([rec[-1], rec[-1]]))
        left, pv, pr = n, [], []
        for j in range(len(v) - 1, -1, -1):  # n / r in binary
            if r * 2**j <= left:
                pv.append(v[j])
                pr.append(rec[j])
                left -= r * 2**j
        assert left == 0
        t0 = np.datetime64(DERIVED_START, "ns")
        step = np.timedelta64(DERIVED_STEP_MIN, "m")
        times = t0 + (start + np.arange(n)) * step
        names = np.array(
            [f"{self.ids[k % r]}-derived{start + k:06d}" for k in range(n)], dtype=object
        )
        vds = self._cat(pv).assign_coords(time=times, item_id=("time", names))
        return vds, self._cat(pr).assign_coords(time=times)


def _cube_steps(root: Path) -> tuple[int, int]:
    """Time steps of HEAD, and how many of them hold an item (the others were removed)."""
    import numpy as np
    import zarr

    from stac2cube.cube.virtual import readonly_session

    ids = np.asarray(zarr.open_array(readonly_session(root).store, path="item_id", mode="r")[:])
    return int(ids.size), int(np.count_nonzero(ids != ""))


def bench_scale(tmp: Path, sizes: list[int], repeat: int, n_real: int, k: int) -> dict[str, Any]:
    from stac2cube.catalog import CatalogStore
    from stac2cube.catalog.virtual import BRANCH, append_items, item_dataset, repository

    t0 = time.perf_counter()
    sample = _sample(tmp / "sample-scale", n_real + k, 120, seed=4)
    feats = json.loads(sample.l2a_items_path.read_text())["features"]
    cat = tmp / "scale"
    real = _items_file(feats[:n_real], tmp / "scale-real.json")
    first = _run(_config(sample, real, cat, tmp / "scale1.yaml", SCALE_BANDS))
    assert first.written == n_real and first.snapshot_id, first
    # the update's items: in the catalog, not yet in the cube
    extra = _items_file(feats, tmp / "scale-all.json")
    second = _run(_config(sample, extra, cat, tmp / "scale2.yaml", SCALE_BANDS, virtual_cube=False))
    assert second.written == k and second.snapshot_id is None, second
    real_runs_s = time.perf_counter() - t0
    store = CatalogStore.open(cat)
    update = sorted(f["id"] for f in feats[n_real:])
    base = sorted(f["id"] for f in feats[:n_real])
    assert _cube_steps(store.root) == (n_real, n_real)
    pairs = [item_dataset(store, store.read_item(i) or {}) for i in base]
    derived = DerivedSteps(pairs, base)
    repo = repository(store.root)

    made = 0
    snapshots: dict[str, str] = {}  # the cube at each size: the branch is reset to it below
    build: dict[str, Any] = {}
    opens: dict[str, dict[str, Any]] = {}
    commits: dict[str, dict[str, list[float]]] = {}
    for size in sizes:
        t0 = time.perf_counter()
        append_s, commit_s = [], []
        while True:
            steps, live = _cube_steps(store.root)
            n = min(BATCH, size - live)
            n -= n % n_real
            if n <= 0:
                break
            vds, rec = derived.batch(n, made)
            session = repo.writable_session(BRANCH)
            a0 = time.perf_counter()
            append_items(session, [(vds, rec)], first=False)
            c0 = time.perf_counter()
            session.commit(f"benchmark: +{n} derived time steps")
            commit_s.append(time.perf_counter() - c0)
            append_s.append(c0 - a0)
            made += n
        steps, live = _cube_steps(store.root)
        snapshots[str(size)] = repo.lookup_branch(BRANCH)
        build[str(size)] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "commits": len(commit_s),
            "append_items_s": [round(v, 3) for v in append_s],
            "session_commit_s": [round(v, 3) for v in commit_s],
            "time_steps": steps,
            "items": live,
        }

    # measured once the largest cube is built, the sizes in turn: the branch is reset to each
    # size's snapshot, then HEAD is opened and the update committed, so that a slower minute of
    # this shared machine weighs on every size alike (measured while the cube grew, the ratios
    # drifted by +-50 % from run to run)
    for r in range(repeat):
        for size, sid in snapshots.items():
            repo.reset_branch(BRANCH, sid)
            runs = opens.setdefault(size, {"all": [], "one": []})
            for kind, bands in (("all", ""), ("one", "B04")):
                runs[kind].append(_child(["--worker", "open", "--catalog", cat, "--bands", bands]))
            assert runs["all"][-1]["items"] == build[size]["items"] and runs["all"][-1]["lazy"]
            ids = ",".join(update)
            args = ["--worker", "commit", "--catalog", cat, "--ids", ids, "--repeat", 1]
            done = _child([*args, "--tag", f"{size}-{r}"])
            for kind in ("append", "replace", "remove"):
                commits.setdefault(size, {}).setdefault(kind, []).extend(done[kind])
    repo.reset_branch(BRANCH, snapshots[str(sizes[-1])])

    def med(size: str, kind: str) -> float:
        return round(_median([o["seconds"] for o in opens[size][kind]]), 3)

    def per_item(size: str, kind: str) -> float:
        return round(_median(commits[size][kind]) / k, 4)

    keys = [str(s) for s in sizes]
    open_s = {s: med(s, "all") for s in keys}
    best = {s: round(min(o["seconds"] for o in opens[s]["all"]), 3) for s in keys}
    commit_s = {s: per_item(s, "append") for s in keys}
    growth = round(commit_s[keys[-1]] / commit_s[keys[0]], 3)
    return {
        "open_s_by_items": open_s,
        "open_s_goal": 1.0,
        "open_s_by_items_one_band": {s: med(s, "one") for s in keys},
        "open_growth_ratio": round(open_s[keys[-1]] / open_s[keys[0]], 3),
        # the fastest process of each size: the noise of a shared machine only adds time
        "open_best_s_by_items": best,
        "open_best_growth_ratio": round(best[keys[-1]] / best[keys[0]], 3),
        "open_runs_s_by_items": {
            s: [round(o["seconds"], 3) for o in opens[s]["all"]] for s in keys
        },
        "open_peak_rss_mb_by_items": {
            s: round(max(o["peak_rss_mb"] for o in opens[s]["all"]), 1) for s in keys
        },
        "commit_s_per_item": commit_s,
        "commit_replace_s_per_item": {s: per_item(s, "replace") for s in keys},
        "commit_remove_s_per_item": {s: per_item(s, "remove") for s in keys},
        "commit_growth_ratio": growth,
        "commit_growth_ratio_goal": 1.2,
        "commit_grows_with_size": growth > 1.2,
        "commit_runs_s": {
            s: {
                kind: [round(v, 3) for v in commits[s][kind]]
                for kind in ("append", "replace", "remove")
            }
            for s in keys
        },
        "update_items": k,
        "scale_bands": SCALE_BANDS,
        "scale_scene_px": [120, 120],
        "build_by_items": build,
        "build_real_runs_s": round(real_runs_s, 2),
        "build_seconds": round(sum(b["seconds"] for b in build.values()), 2),
        "method": {
            "large_cubes": (
                f"{n_real} real items processed by stac2cube.run (120 x 120 px, bands "
                f"{', '.join(SCALE_BANDS)}; the run commits the cube's first snapshot), then time "
                "steps derived from their real item_dataset outputs (the same COG references "
                "and records, new times and item ids) appended with append_items, at most "
                f"{BATCH:,} per Icechunk commit (repository(...).writable_session(BRANCH) + "
                "session.commit). The derived times start in 2015, before the real items, so "
                "the time axis is not in commit order and every open sorts it. One cube grows "
                "through the sizes and each size's snapshot is kept; then, in turn and "
                "repeated, the branch is reset to each size's snapshot (Repository.reset_branch) "
                "and the opens run, then the commits."
            ),
            "open": (
                "open_virtual_cube(catalog) of HEAD (all bands; _one_band: bands=['B04']) in a "
                "fresh process, xarray/zarr/icechunk/virtual-tiff imported before the clock; "
                "median of the processes"
            ),
            "commit": (
                f"commit_snapshot(store, run_id, changed=<{k} real items in the catalog, not in "
                "the cube>) (append), the same again (replace: same item versions), then "
                f"removed=<the {k}> (remove), in one fresh process per cube size and turn; "
                f"median seconds / {k}. Removed items stay in the cube as empty time steps "
                "(build_by_items counts them in time_steps)."
            ),
        },
    }


# ------------------------------------------------------------------------------ reads
def bench_read(tmp: Path, px: int, repeat: int) -> dict[str, Any]:
    sample = _sample(tmp / "sample-read", 8, px, seed=3)
    cat = tmp / "read"
    cfg = _config(sample, sample.l2a_items_path, cat, tmp / "read.yaml", READ_BANDS)
    assert _run(cfg).written == 8
    res = _child(["--worker", "read", "--catalog", cat, "--repeat", repeat])
    t = {k: _median(v) for k, v in res["seconds"].items()}
    load = {
        k: _median([a - b for a, b in zip(v, res["open_seconds"][k], strict=True)])
        for k, v in res["seconds"].items()
    }
    mb = res["bytes"] / 1e6
    return {
        "read_vs_odc_ratio": round(t["odc"] / t["virtual"], 3),
        "read_vs_odc_ratio_goal": 1.0,
        "read_values_equal": res["values_equal"],
        "read_shape_time_band_y_x": res["shape"],
        "read_mb": round(mb, 1),
        "read_mb_per_s": {k: round(mb / v, 1) for k, v in t.items()},
        "read_seconds": {k: [round(x, 3) for x in v] for k, v in res["seconds"].items()},
        "read_kerchunk_vs_odc_ratio": round(t["odc"] / t["kerchunk"], 3),
        "read_vs_odc_ratio_load_only": round(load["odc"] / load["virtual"], 3),
        "read_open_seconds": {k: [round(x, 3) for x in v] for k, v in res["open_seconds"].items()},
        "read_scene_px": [px, px],
    }


# ------------------------------------------------------------------------------ time travel
def _load_item(
    catalog: Path, item_id: str, version: str | None = None, *, per_step: bool = True
) -> Any:
    """Read one item's time step; ``per_step``: one time step per dask chunk, so that only its
    own COGs are read (else the cube's default chunks, many time steps per task)."""
    from stac2cube.cube.virtual import open_virtual_cube

    chunks = {"time": 1} if per_step else None
    ds = open_virtual_cube(catalog, version=version, chunks=chunks)
    return ds.isel(time=[list(ds["item_id"].values).index(item_id)]).load()


def _raises(fn: Any) -> tuple[bool, str]:
    try:
        fn()
    except Exception as exc:  # what the read raises is what is recorded
        return True, f"{type(exc).__name__}: {str(exc)[:300]}"
    return False, ""


def _overwrite(catalog: Path, item_id: str, band: str, src: Path) -> dict[str, Any]:
    """Overwrite the catalog's COG of ``item_id``/``band`` in place with ``src``'s bytes (the
    same inode: the snapshot's hard link under ``_cube/cogs/`` sees the new bytes).
    ``inside_stamp_window``: the write came before the last-modified time the snapshot holds
    (the item's newest COG link time, a whole second set in the past when the link is made)."""
    from stac2cube.catalog import CatalogStore

    item_dir = CatalogStore.open(catalog).item_dir(item_id)
    cog = item_dir / f"{band}.tif"
    links = sorted((catalog / "_cube" / "cogs" / item_id).glob(f"*/{band}.tif"))
    before = cog.stat()
    newest = max(p.stat().st_mtime for p in item_dir.glob("*.tif"))
    data = src.read_bytes()  # src may be the COG itself
    t_write = time.time()
    with open(cog, "r+b") as f:  # in place, like shutil.copyfile
        f.truncate(0)
        f.write(data)
    after = cog.stat()
    return {
        "same_inode_as_link": bool(links) and links[-1].stat().st_ino == after.st_ino,
        "same_inode_after": before.st_ino == after.st_ino,
        "seconds_since_cog_written": round(t_write - before.st_mtime, 3),
        "inside_stamp_window": t_write <= math.ceil(newest),
        "same_bytes": src.resolve() == cog.resolve(),
    }


def _pixels(data: bytes) -> Any:
    from rasterio.io import MemoryFile

    with MemoryFile(data) as mem, mem.open() as src:
        return src.read(1)


def _why(raised: bool, msg: str) -> str:
    if not raised:
        return "not raised"
    if "checksum" in msg:
        return "last-modified check"
    if "not enough data" in msg:
        return "file shorter than the reference"
    return "other error"


def right_after_run(
    sample: Any, feats: list[dict[str, Any]], cat: Path, tmp: Path, other: Path
) -> dict[str, Any]:
    """Runs that each add one item, whose B04 is overwritten in place as soon as the run
    returns (alternately with its own bytes and with ``other``'s); then the item is read."""
    import numpy as np

    from stac2cube.catalog import CatalogStore

    store = CatalogStore.open(cat)
    trials = []
    for k, feat in enumerate(feats):
        items = _items_file([feat], tmp / f"after{k}.json")
        summary = _run(_config(sample, items, cat, tmp / f"after{k}.yaml", TRAVEL_BANDS))
        assert summary.written == 1 and summary.snapshot_id, summary
        cog = store.item_dir(feat["id"]) / "B04.tif"
        original = cog.read_bytes()
        trial: dict[str, Any] = _overwrite(cat, feat["id"], "B04", cog if k % 2 == 0 else other)
        raised, msg = _raises(lambda fid=feat["id"]: _load_item(cat, fid))
        trial.update(raised=raised, raised_by=_why(raised, msg), error=msg)
        if not raised:
            got = _load_item(cat, feat["id"])["B04"].values[0]
            trial["read_gives"] = (
                "the snapshot's pixels"
                if np.array_equal(got, _pixels(original))
                else "the new file's pixels"
                if np.array_equal(got, _pixels(cog.read_bytes()))
                else "other pixels"
            )
        trials.append(trial)
    inside = [t for t in trials if t["inside_stamp_window"]]
    outside = [t for t in trials if not t["inside_stamp_window"]]
    return {
        "stale_read_right_after_run": {
            "trials": len(trials),
            "inside_stamp_window": len(inside),
            "caught_by_last_modified_check_inside_window": sum(
                t["raised_by"] == "last-modified check" for t in inside
            ),
            "caught_by_last_modified_check_outside_window": sum(
                t["raised_by"] == "last-modified check" for t in outside
            ),
            "details": trials,
        },
    }


def bench_travel(tmp: Path) -> dict[str, Any]:
    import numpy as np
    import xarray as xr

    from stac2cube.catalog import CatalogStore
    from stac2cube.cube.virtual import cube_versions, open_virtual_cube

    sample = _sample(tmp / "sample-travel", 6 + AFTER_RUN_TRIALS, 120, seed=5)
    feats = json.loads(sample.l2a_items_path.read_text())["features"]
    cat = tmp / "travel"
    run1 = _run(
        _config(sample, _items_file(feats[:4], tmp / "t1.json"), cat, tmp / "t1.yaml", TRAVEL_BANDS)
    )
    head1 = open_virtual_cube(cat).load()

    # run 2: two new items, and item 1's source updated with other pixels (item 5's red, nir)
    later = json.loads(json.dumps(feats[:6]))
    changed = later[1]
    changed["properties"]["updated"] = "2024-01-01T00:00:00Z"
    for key in ("red", "nir"):
        changed["assets"][key]["href"] = later[5]["assets"][key]["href"]
    run2 = _run(
        _config(sample, _items_file(later, tmp / "t2.json"), cat, tmp / "t2.yaml", TRAVEL_BANDS)
    )
    assert run2.written == 3 and run2.snapshot_id, run2
    reprocessed = changed["id"]
    head2 = open_virtual_cube(cat).load()
    by = {
        "run_id": open_virtual_cube(cat, version=run1.run_id).load(),
        "tag": open_virtual_cube(cat, version=f"run-{run1.run_id}").load(),
        "snapshot_id": open_virtual_cube(cat, version=run1.snapshot_id).load(),
    }
    identical = {}
    for how, ds in by.items():
        try:
            xr.testing.assert_identical(ds, head1)
            identical[how] = True
        except AssertionError:
            identical[how] = False
    i1 = list(head1["item_id"].values).index(reprocessed)
    i2 = list(head2["item_id"].values).index(reprocessed)
    pixels_changed = any(
        not np.array_equal(head1[b].values[i1], head2[b].values[i2]) for b in TRAVEL_BANDS
    )
    travel = {
        "time_travel_identical": all(identical.values()),
        "time_travel_identical_by": identical,
        "time_travel_first_run_items": int(head1.sizes["time"]),
        "time_travel_head_items": int(head2.sizes["time"]),
        "time_travel_second_run": {
            "written": run2.written,
            "reprocessed_item": reprocessed,
            "reprocessed_pixels_differ_at_head": pixels_changed,
        },
        "cube_versions": len(cube_versions(cat)),
    }

    # stale COGs, on items of run 1 that run 2 left alone: item 0's B04 overwritten with item
    # 3's bytes, item 2's B04 rewritten with its own bytes (only its time changes); item 3 reads
    store = CatalogStore.open(cat)
    item0, item2, item3 = (feats[i]["id"] for i in (0, 2, 3))
    band = "B04"
    failed_before, msg = _raises(lambda: _load_item(cat, item0))
    assert not failed_before, msg
    mtime = max((store.item_dir(i) / f"{band}.tif").stat().st_mtime for i in (item0, item2))
    time.sleep(max(0.0, int(mtime) + 2 - time.time()))  # past the snapshot's last-modified stamp
    other = _overwrite(cat, item0, band, store.item_dir(item3) / f"{band}.tif")
    raised_other, msg_other = _raises(lambda: _load_item(cat, item0))
    raised_old, msg_old = _raises(lambda: _load_item(cat, item0, version=run1.run_id))
    same = _overwrite(cat, item2, band, store.item_dir(item2) / f"{band}.tif")
    raised_same, msg_same = _raises(lambda: _load_item(cat, item2))
    unaffected, msg_unaffected = _raises(lambda: _load_item(cat, item3))
    unaffected_auto, msg_auto = _raises(lambda: _load_item(cat, item3, per_step=False))

    after = right_after_run(sample, feats[6:], cat, tmp, store.item_dir(item3) / f"{band}.tif")
    return {
        **travel,
        "stale_read_raises": raised_other,
        "stale_read": {
            "other_bytes": {**other, "raised": raised_other, "error": msg_other},
            "same_bytes_rewritten": {**same, "raised": raised_same, "error": msg_same},
            "first_run_version_raises": raised_old,
            "first_run_version_error": msg_old,
            "unaffected_item_reads": not unaffected,
            "unaffected_item_error": msg_unaffected,
            "unaffected_item_reads_default_chunks": not unaffected_auto,
            "unaffected_item_error_default_chunks": msg_auto,
        },
        **after,
    }


# ------------------------------------------------------------------------------ main
SECTIONS = ("scale", "read", "travel")


def _versions() -> dict[str, str]:
    out = {}
    for name in ("icechunk", "virtualizarr", "virtual-tiff", "zarr", "xarray", "odc-stac"):
        try:
            out[name] = dist_version(name)
        except Exception:  # not installed under that name
            out[name] = "?"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 and 10,000 items, fewer repeats")
    ap.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--worker", choices=["open", "commit", "read"], help=argparse.SUPPRESS)
    ap.add_argument("--catalog", help=argparse.SUPPRESS)
    ap.add_argument("--bands", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    _quiet()
    if a.worker == "open":
        print(json.dumps(worker_open(a.catalog, a.bands)))
        return
    if a.worker == "commit":
        print(json.dumps(worker_commit(a.catalog, a.ids, a.repeat, a.tag)))
        return
    if a.worker == "read":
        print(json.dumps(worker_read(a.catalog, a.repeat)))
        return

    quick = a.quick
    only = set(a.only.split(",")) if a.only else set(SECTIONS)
    if not only <= set(SECTIONS):
        raise SystemExit(f"--only takes a comma-separated subset of {','.join(SECTIONS)}")
    results: dict[str, Any] = {}
    if a.only and RESULTS.exists():  # a partial run updates the figures it measures
        results = json.loads(RESULTS.read_text())
    results.update(quick=quick, loadavg_start=_loadavg(), complete=False)
    timings: dict[str, float] = dict(results.get("section_seconds", {}))

    def save() -> None:
        results["section_seconds"] = {k: round(v, 1) for k, v in timings.items()}
        results["loadavg_end"] = _loadavg()
        results["machine"] = {**machine(), "packages": _versions()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="stac2cube-virtual-") as tmpdir:
        tmp = Path(tmpdir)
        if "travel" in only:
            t0 = time.perf_counter()
            results.update(bench_travel(tmp))
            timings["travel"] = time.perf_counter() - t0
            save()
        if "scale" in only:
            t0 = time.perf_counter()
            sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
            results.update(bench_scale(tmp, sizes, 2 if quick else 5, n_real=4, k=8))
            timings["scale"] = time.perf_counter() - t0
            save()
            shutil.rmtree(tmp / "scale")
        if "read" in only:
            t0 = time.perf_counter()
            results.update(bench_read(tmp, 400 if quick else 1000, 3 if quick else 5))
            timings["read"] = time.perf_counter() - t0
            save()
    results["complete"] = only == set(SECTIONS)
    save()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
