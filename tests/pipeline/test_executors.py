"""The executors: each worker's memory limit, and a scene whose worker died. A real two-worker
LocalCluster runs the sample with a toy step (installed with its entry point, so that the
worker processes find it too) that makes one scene allocate far above ``run.memory_limit`` and
another one's worker exit: those two fail with why, the others are written, and a re-run with
a higher limit writes the first."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stac2cube import load_config, run
from stac2cube.catalog import CatalogStore
from stac2cube.check import check_catalog
from stac2cube.config import Config, RunConfig, SlurmConfig
from stac2cube.errors import ConfigError
from stac2cube.pipeline import dask_client
from stac2cube.pipeline.executors import WorkerDeath, _try_again, death_result
from stac2cube.sample import Sample
from stac2cube.steps.registry import clear_registry_cache
from stac2cube.testing.configs import write_config

HOG_STEP = '''\
"""hog_step: a step that allocates and touches ``megabytes`` for one scene, or exits the worker
process for another."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from stac2cube.fields import doc
from stac2cube.provenance import StepRecord
from stac2cube.steps.base import Scene, StepResult
from stac2cube.steps.registry import StepPlugin


@dataclass(frozen=True)
class HogConfig:
    """Misbehave for two scenes (``steps.hog``)."""

    allocate: str = doc("The scene that allocates `megabytes`.", "")
    megabytes: int = doc("How much it allocates, in MB (held for a second).", 1500)
    exit: str = doc("The scene whose worker process exits.", "")


class HogStep:
    name = "hog"
    version = "0.1.0"

    def prepare(self, cfg: HogConfig) -> None:
        """Nothing to load."""

    def required_aux(self, cfg: HogConfig) -> dict[str, Any]:
        return {}

    def run(self, scene: Scene, cfg: HogConfig) -> StepResult:
        if scene.item_id == cfg.exit:
            os._exit(3)
        if scene.item_id == cfg.allocate:
            block = np.ones(cfg.megabytes * 10**6 // 8)  # written: resident
            time.sleep(1.0)  # Dask's nanny looks every 0.1 s
            del block
        return StepResult(scene, StepRecord(self.name, self.version, parameters={}, results={}))


PLUGIN = StepPlugin(
    name="hog",
    config=HogConfig,
    factory=lambda cfg, config: (HogStep(), cfg),
    order=40,
    doc="Allocates far too much for one scene, exits the worker for another (tests only).",
)
'''


@pytest.fixture
def hog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The hog step installed in a folder on ``sys.path`` here and on ``PYTHONPATH`` for the
    cluster's worker processes (new interpreters: registering it here is not enough)."""
    root = tmp_path / "plugins"
    info = root / "hog_step-0.1.dist-info"
    info.mkdir(parents=True)
    (root / "hog_step.py").write_text(HOG_STEP)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hog-step\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stac2cube.steps]\nhog = hog_step:PLUGIN\n")
    monkeypatch.syspath_prepend(str(root))
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    clear_registry_cache()
    yield
    clear_registry_cache()


@pytest.mark.slow
def test_a_worker_killed_for_memory_fails_its_scene_and_a_rerun_writes_it(
    hog: None, sample: Sample, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One worker, so that the scene after the hungry one waits on it when it is killed: that
    scene did not run there, it is tried again and written."""
    ids = [sc.l2a_item["id"] for sc in sample.scenes]
    hungry, waiting, crashing = ids[0], ids[1], ids[2]
    path = write_config(
        tmp_path,
        sample,
        {"path": str(sample.l2a_items_path)},
        bands=["B04", "B08", "SCL"],
        steps={"hog": {"allocate": hungry, "megabytes": 1500, "exit": crashing}},
        run={"executor": "local", "workers": 1, "memory_limit": "1GiB"},
    )
    with caplog.at_level(logging.WARNING, "stac2cube"):
        summary = run(load_config(path))
    by_id = {o.item_id: o for o in summary.outcomes}
    assert (summary.written, summary.failed) == (len(ids) - 2, 2), [
        (o.item_id, o.status, o.message) for o in summary.outcomes
    ]
    oom = by_id[hungry]
    assert (oom.status, oom.stage) == ("failed", "worker")
    assert oom.message.startswith("out of memory: the worker was killed at ~"), oom.message
    assert oom.message.endswith(
        " MiB (run.memory_limit 1,024 MiB); raise run.memory_limit (the step hog holds the"
        " scene whole)"
    ), oom.message
    lost = by_id[crashing]
    assert (lost.status, lost.stage) == ("failed", "worker")
    # not killed for memory: tried on a second worker, then failed
    assert lost.message.startswith("worker lost: the worker running the scene died 2 times, ")
    retried = [r.message for r in caplog.records if "trying it again" in r.message]
    assert any(
        m.startswith(f"{waiting}: its worker ") and "before it started the scene" in m
        for m in retried
    ), retried
    assert not any(m.startswith(hungry) for m in retried)  # it would need the same memory
    cfg = load_config(path)
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    assert sorted(store.item_ids()) == sorted(set(ids) - {hungry, crashing})
    records = {f.item_id: f for f in store.failures()}
    assert (records[hungry].stage, records[hungry].error) == ("worker", "OutOfMemory")
    assert records[hungry].message == oom.message
    assert (records[crashing].stage, records[crashing].error) == ("worker", "KilledWorker")
    assert not list((cfg.catalog_dir / cfg.output.collection_id).glob(".staging-*"))
    assert check_catalog(cfg.catalog_dir).problems == ()

    # a re-run with a higher limit tries the failed scenes again (run.reprocess_failed)
    rerun = ["run.memory_limit=3GiB", "run.workers=2", "run.reprocess_failed=true"]
    again = run(load_config(path, rerun))
    by_id = {o.item_id: o for o in again.outcomes}
    assert (by_id[hungry].status, by_id[hungry].message) == ("written", "failed before")
    assert by_id[crashing].status == "failed"  # a crash is a crash
    assert {by_id[i].message for i in set(ids) - {hungry, crashing}} == {"up to date"}
    assert hungry in store.item_ids()
    # without reprocess_failed, a failed scene waits
    skipped = run(load_config(path, ["run.reprocess_failed=false"]))
    assert {o.item_id: o.message for o in skipped.outcomes}[crashing] == "failed before"


def _death(killed_at: int | None, *, ran: bool = True, threads: int = 1) -> WorkerDeath:
    return WorkerDeath("tcp://10.0.0.7:4321", 4 * 2**30, killed_at, ran, threads)


@pytest.mark.parametrize(
    ("run_section", "says"),
    [
        ({"memory_limit": "4GiB"}, "(run.memory_limit 4,096 MiB); lower run.block_size or raise "
         "run.memory_limit"),
        ({}, "(run.memory_limit auto: 4,096 MiB); lower run.block_size or raise run.memory_limit"),
        ({"executor": "slurm"}, "(run.slurm.memory / processes: 4,096 MiB); lower run.block_size "
         "or raise run.memory_limit or run.slurm.memory"),
        ({"executor": "tcp://10.0.0.1:8786"}, "(the cluster's worker memory limit 4,096 MiB); "
         "lower run.block_size or raise the workers' memory limit"),
    ],
)  # fmt: skip
def test_out_of_memory_names_the_limit_and_its_setting(
    tmp_path: Path, run_section: dict[str, str], says: str
) -> None:
    cfg = _config(tmp_path, run_section)
    result = death_result("s1", [_death(None), _death(3_900 * 2**20)], cfg)
    assert (result.status, result.stage, result.error) == ("failed", "worker", "OutOfMemory")
    assert result.message == f"out of memory: the worker was killed at ~3,900 MiB {says}"
    shared = death_result("s1", [_death(3_900 * 2**20, threads=4)], cfg)
    assert shared.message.endswith(" (the worker ran up to 4 scenes at once)")


def test_a_worker_lost_otherwise_names_the_worker(tmp_path: Path) -> None:
    result = death_result("s1", [_death(None)], _config(tmp_path, {}))
    assert result.error == "KilledWorker"
    assert result.message == (
        "worker lost: the worker running the scene died, not killed by Dask for memory (the "
        "system's out-of-memory killer, a pre-empted or timed-out job, or a crash in native "
        "code); see the log of worker tcp://10.0.0.7:4321"
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("4 gigs", r"run.memory_limit: '4 gigs' is not a size: write e.g. 4GiB"),
        ("-1GB", r"is not a size"),
        ("64MB", r"'64MB' is 61 MiB: give at least 256MiB"),
        (100, r"give at least 256MiB"),
    ],
)
def test_a_bad_memory_limit_is_a_config_error(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunConfig(memory_limit=value)  # type: ignore[arg-type]


def test_memory_limit_in_bytes() -> None:
    assert RunConfig().memory_limit_bytes is None
    assert RunConfig(memory_limit="4GiB").memory_limit_bytes == 4 * 2**30
    assert RunConfig(memory_limit="800MB").memory_limit_bytes == 800 * 10**6
    assert RunConfig(memory_limit=2**30).memory_limit_bytes == 2**30
    with pytest.raises(ConfigError, match=r"run\.slurm\.memory: 'lots' is not a size"):
        SlurmConfig(memory="lots")


def test_a_running_scheduler_keeps_its_limits_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, processes=False, memory_limit="3GiB", dashboard_address=None
    ) as cluster:
        cfg = _config(tmp_path, {"executor": cluster.scheduler_address, "memory_limit": "1GiB"})
        with caplog.at_level(logging.INFO, "stac2cube"), dask_client(cfg) as client:
            info = client.scheduler_info()["workers"].values()
            assert [w["memory_limit"] for w in info] == [3 * 2**30]
    (rec,) = [r for r in caplog.records if "memory limits are the cluster's own" in r.message]
    assert rec.levelno == logging.WARNING
    assert "(3,072 MiB)" in rec.message and "run.memory_limit 1GiB does not apply" in rec.message


def test_local_clusters_do_not_sample_stacks_or_tick_every_20_ms(tmp_path: Path) -> None:
    """The workers of a local cluster run no statistical profiler (a stack sample every 10 ms
    while a scene runs) and the scheduler, nannies and workers check their event loops once a
    second, not every 20 ms: idle, the two had cost a client and its worker a tenth of a
    core."""
    cfg = _config(tmp_path, {"executor": "local", "memory_limit": "1GiB"})

    def on_worker(dask_worker: Any) -> tuple[bool, float]:
        return "profile" in dask_worker.periodic_callbacks, dask_worker._tick_interval

    with dask_client(cfg, n_tasks=1) as client:
        assert list(client.run(on_worker).values()) == [(False, 1.0)]
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval) == 1
        assert [n._tick_interval for n in client.cluster.workers.values()] == [1.0]


def _config(tmp_path: Path, run_section: dict[str, str]) -> Config:
    p = tmp_path / "c.yaml"
    body = ", ".join(f"{k}: {v!r}" for k, v in run_section.items())
    p.write_text(
        "source: {path: items.json}\naoi: {bbox: [1, 2, 3, 4]}\n"
        f"time: {{start: 2020-01-01, end: 2020-02-01}}\nrun: {{{body}}}\n"
    )
    return load_config(p)


def test_which_scenes_are_tried_again() -> None:
    oom, lost = 3_900 * 2**20, None
    assert not _try_again([_death(oom)])  # killed for memory while it ran alone
    assert _try_again([_death(oom, threads=4)])  # another scene may have used the memory
    assert _try_again([_death(lost)]) and not _try_again([_death(lost), _death(lost)])
    waited = _death(oom, ran=False)  # it waited behind the scene that used the memory
    assert _try_again([waited]) and _try_again([waited, _death(lost)])
    assert _try_again([waited] * 3) and not _try_again([waited] * 4)


def test_out_of_memory_with_a_step_held_whole_says_block_size_does_not_help(
    tmp_path: Path,
) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "source: {path: items.json}\naoi: {bbox: [1, 2, 3, 4]}\n"
        "time: {start: 2020-01-01, end: 2020-02-01}\nrun: {memory_limit: 4GiB}\n"
        "steps: {coreg: {mode: local}, superres: {}}\n"
    )
    result = death_result("s1", [_death(3_900 * 2**20)], load_config(p))
    expected = "raise run.memory_limit (the step superres holds the scene whole)"
    assert result.message.endswith(expected), result.message
    assert "block_size" not in result.message
