"""The per-layer work of a block in threads (stac2cube/io/threads.py): results in order, GDAL's
settings of the caller seen in every thread, every call ended before an error is raised."""

from __future__ import annotations

import os
import threading
import time

import pytest
import rasterio
from rasterio.env import getenv

from stac2cube.io.threads import map_layers, scene_threads


def test_results_come_in_order_from_several_threads() -> None:
    seen: set[int] = set()

    def work(x: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.05 * (5 - x))  # the first items end last
        return x * x

    assert map_layers(work, range(5), 3) == [0, 1, 4, 9, 16]
    assert len(seen) > 1
    assert threading.get_ident() not in seen


def test_one_thread_or_one_item_runs_in_the_callers_thread() -> None:
    me = threading.get_ident()
    assert map_layers(lambda _: threading.get_ident(), [1, 2, 3], 1) == [me, me, me]
    assert map_layers(lambda _: threading.get_ident(), [1], 4) == [me]
    assert map_layers(lambda x: x, [], 4) == []


def test_each_thread_sees_the_callers_gdal_settings() -> None:
    with rasterio.Env(GDAL_HTTP_MAX_RETRY="7", GDAL_CACHEMAX=77):
        got = map_layers(lambda _: getenv().get("GDAL_HTTP_MAX_RETRY"), range(4), 2)
    assert got == ["7"] * 4


def test_an_error_is_raised_once_every_call_has_ended() -> None:
    ended: list[int] = []

    def work(x: int) -> int:
        if x == 0:
            raise ValueError("layer 0 is broken")
        time.sleep(0.2)
        ended.append(x)
        return x

    with pytest.raises(ValueError, match="layer 0 is broken"):
        map_layers(work, range(4), 2)
    assert sorted(ended) == [1, 2, 3]


def test_a_process_outside_a_worker_uses_its_cpus() -> None:
    assert scene_threads() == len(os.sched_getaffinity(0))
