"""How many threads a scene's GDAL work may use, and the per-layer work of one block run in
them (:func:`map_layers`): reads, warps and COG writes of different layers are independent,
and GDAL and NumPy let go of the GIL while they work. See docs/architecture.md."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import rasterio
import rasterio.env
from rasterio.errors import NotGeoreferencedWarning

T = TypeVar("T")
R = TypeVar("R")

# rasterio's warp of an array in a thread sometimes warns that the in-memory dataset it made
# has no geotransform, where it has one and uses it (a known spurious warning: odc-geo#131,
# geoutils#851; our threaded warps are compared with GDAL's own, pixel by pixel, in the
# tests). Only that message from rasterio.warp is silenced.
warnings.filterwarnings(
    "ignore",
    message="Dataset has no geotransform",
    category=NotGeoreferencedWarning,
    module=r"rasterio\.warp",
)


def worker_threads() -> int | None:
    """Threads of the Dask worker running this code, or None outside a worker (then GDAL may
    use every CPU: the process has the machine to itself)."""
    # a worker has imported distributed; a serial run has not and should not pay for it (0.5 s)
    worker_module = sys.modules.get("distributed.worker")
    if worker_module is None:
        return None
    try:
        return int(worker_module.get_worker().state.nthreads)
    except ValueError:  # not running on a worker
        return None


def scene_threads() -> int:
    """Threads one scene's layers may be worked on in: the Dask worker's own threads (one
    with the workers stac2cube starts: the other cores run other scenes), or every CPU of the
    process outside a worker."""
    threads = worker_threads()
    if threads is not None:
        return max(1, threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_layers(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]``, in ``threads`` threads when there are more than one (and
    more than one item), in order. GDAL's settings of the calling thread (``rasterio.Env``
    keeps them per thread) are set in each thread for the call, so that a read in a thread
    sees the scene's own (its cache, its HTTP retries). The first exception is raised after
    every call has ended, so that no thread still works on a layer the caller goes on to
    close or remove."""
    todo = list(items)
    if threads <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    options = rasterio.env.getenv() if rasterio.env.hasenv() else None

    def call(x: T) -> R:
        if options is None:
            return fn(x)
        with rasterio.Env(**options):
            return fn(x)

    with ThreadPoolExecutor(min(threads, len(todo))) as pool:
        futures = [pool.submit(call, x) for x in todo]
    # leaving the pool waited for every call
    return [f.result() for f in futures]
