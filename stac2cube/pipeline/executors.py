"""Where the scenes run: in this process, on a local Dask cluster, on SLURM through
dask-jobqueue, or on a running scheduler; and what a scene whose worker died becomes."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import (
    ConfigError,
)
from .task import SceneResult, SceneTask, process_scene

log = logging.getLogger(__name__)

ALLOWED_FAILURES = 0
"""Dask's ``distributed.scheduler.allowed-failures`` on the clusters stac2cube starts (``local``,
``slurm``): the scheduler never retries a task whose worker died; :func:`execute` does, knowing
why the worker died."""

MAX_WORKER_DEATHS = 2
"""A scene is tried until this many workers died while they ran it, but not again once Dask
killed a single-threaded worker for memory while it ran that scene: the scene would need the
same memory again. A scene that waited on a worker which died is tried again (at most twice
this many times in all)."""

CLUSTER_CONFIG: dict[str, Any] = {
    # a scene's memory is Dask-unmanaged (arrays, GDAL's cache): there is nothing to spill, and a
    # paused worker never takes its next scene (the run would hang); only the kill at
    # `distributed.worker.memory.terminate` (95 % of the limit) stays
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
    # a task is a whole scene: a worker's statistical profiler (a stack sample every 10 ms, for
    # the dashboard, which these clusters do not serve) and the event-loop watchdog's 20 ms tick
    # cost an idle client and worker about a tenth of a core (docs/hpc.md)
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}
"""The Dask settings of the clusters stac2cube starts (scheduler, nannies and workers)."""

MEMORY_EVENT = "worker-restart-memory"
"""The event Dask's nanny logs on the scheduler when it kills its worker for memory."""


def execute(config: Config, tasks: Sequence[SceneTask]) -> Iterator[SceneResult]:
    """Run the tasks in this process (``run.executor: serial``) or on a Dask cluster, yielding
    results as they complete. A worker that dies fails only its scene, saying why
    (:func:`worker_death`); the scenes it held are tried again."""
    if not tasks:
        return
    rc = config.run
    one_here = rc.executor == "local" and len(tasks) == 1 and rc.memory_limit_bytes is None
    if rc.executor == "serial" or one_here:
        for task in tasks:
            yield process_scene(task)
        return

    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(dask_client(config, n_tasks=len(tasks)))
    except (RuntimeError, OSError, TimeoutError) as exc:
        if rc.executor != "local":
            raise ConfigError(
                f"cannot reach the Dask cluster of run.executor {rc.executor!r}: {exc}"
            ) from exc
        log.warning(
            "could not start a local Dask cluster (%s); running the scenes in this process. "
            "Scripts that call stac2cube.run() need an `if __name__ == '__main__':` guard for "
            "the cluster's worker processes (or set run.executor: serial)",
            exc,
        )
        for task in tasks:
            yield process_scene(task)
        return
    with stack:
        yield from _on_cluster(client, config, tasks)


def _on_cluster(client: Any, config: Config, tasks: Sequence[SceneTask]) -> Iterator[SceneResult]:
    """:func:`execute` on a Dask client. Each result is fetched as soon as its scene is done and
    the scheduler is told to forget it: a worker that dies later cannot take it along, nor make
    the scheduler run the scene again behind the client's back. A scene whose worker died is
    tried again (:func:`_try_again`) or fails with why (:func:`death_result`)."""
    from distributed import CancelledError, KilledWorker

    # a running scheduler has retried already, as often as its own allowed-failures says
    retry = config.run.executor in ("local", "slurm")
    pending: dict[str, tuple[SceneTask, Any]] = {}  # by key: the task and its future
    finished: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    deaths: dict[str, list[WorkerDeath]] = {}

    def fetch(fut: Any) -> None:  # on the client's callback thread
        try:
            if fut.status in ("error", "cancelled"):
                value = fut.exception() or CancelledError(f"{fut.key} was cancelled")
            else:
                value = fut.result()
        except BaseException as exc:  # the client lost the scheduler
            value = exc
        fut.release()
        finished.put((str(fut.key), value))

    def submit(task: SceneTask) -> None:
        n = len(deaths.get(task.item_id, ()))
        key = f"stac2cube-scene-{task.item_id}" + (f"-retry{n}" if n else "")
        fut = client.submit(run_scene, task, key=key, pure=False)
        pending[key] = (task, fut)
        fut.add_done_callback(fetch)

    for t in tasks:
        submit(t)
    while pending:
        key, value = finished.get()
        task, _ = pending.pop(key)
        if isinstance(value, KilledWorker):
            death = worker_death(client, value)
            seen = deaths.setdefault(task.item_id, [])
            seen.append(death)
            if retry and _try_again(seen):
                log.warning(
                    "%s: its worker %s died (%s)%s; trying it again",
                    task.item_id,
                    death.worker,
                    death.describe(),
                    "" if death.ran else " before it started the scene",
                )
                submit(task)
                continue
            yield death_result(task.item_id, seen, config)
        elif isinstance(value, BaseException):  # a lost connection: the run goes on
            name = type(value).__name__
            yield SceneResult(task.item_id, "failed", "worker", f"{name}: {value}", 0.0, error=name)
        else:
            yield value


STARTED_TOPIC = "stac2cube-scene-started"
"""The topic of the event a worker logs on the scheduler when it starts a scene (one topic per
worker: ``stac2cube-scene-started:<address>``)."""


def run_scene(task: SceneTask) -> SceneResult:
    """:func:`process_scene` on a Dask worker, which first tells the scheduler that it started
    this task (:func:`worker_death`: a scene queued on a worker that died did not run)."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(f"{STARTED_TOPIC}:{worker.address}", {"key": str(worker.get_current_task())})
    return process_scene(task)


def _try_again(deaths: Sequence[WorkerDeath]) -> bool:
    """Whether a scene whose workers died (``deaths``, the last one last) is tried again."""
    ran = [d for d in deaths if d.ran]
    last = deaths[-1]
    if last.ran and last.killed_at is not None and last.threads == 1:
        return False  # killed for memory while it ran alone: it needs that memory again
    return len(ran) < MAX_WORKER_DEATHS and len(deaths) < 2 * MAX_WORKER_DEATHS


@dataclass(frozen=True)
class WorkerDeath:
    """How the worker of a scene died, as far as the client can tell."""

    worker: str
    """The worker's address."""
    memory_limit: int
    """Its memory limit in bytes (0: none)."""
    killed_at: int | None
    """Its memory in bytes when Dask's nanny killed it for memory; None: it died otherwise."""
    ran: bool
    """It had started the scene (else the scene waited there behind another one)."""
    threads: int = 1
    """Its threads: with more than one, other scenes ran on it at the same time."""

    def describe(self) -> str:
        if self.killed_at is None:
            return "not killed by Dask for memory"
        return f"killed for memory at ~{_mib(self.killed_at)}"


def worker_death(client: Any, exc: Any, wait: float = 2.0) -> WorkerDeath:
    """Why the worker of Dask's ``KilledWorker`` ``exc`` died: whether the nanny killed it for
    memory (:data:`MEMORY_EVENT`, looked for up to ``wait`` seconds: the event may reach the
    scheduler after the worker's death), and whether it had started the task
    (:data:`STARTED_TOPIC`)."""
    ws = exc.last_worker
    started = client.get_events(f"{STARTED_TOPIC}:{ws.address}")
    ran = any(msg.get("key") == str(exc.task) for _, msg in started)
    limit, threads = int(ws.memory_limit or 0), int(ws.nthreads or 1)
    deadline = time.monotonic() + wait
    while True:
        for _, msg in client.get_events(MEMORY_EVENT):
            if msg.get("worker") == ws.address and (not ws.pid or msg.get("pid") == ws.pid):
                return WorkerDeath(ws.address, limit, int(msg["rss"]), ran, threads)
        if time.monotonic() >= deadline:
            return WorkerDeath(ws.address, limit, None, ran, threads)
        time.sleep(0.1)


def death_result(item_id: str, deaths: Sequence[WorkerDeath], config: Config) -> SceneResult:
    """The failure of a scene whose workers died (``deaths``, the last one last): out of memory
    if Dask killed one for memory while it ran the scene, else a lost worker."""
    ran = [d for d in deaths if d.ran] or list(deaths)
    oom = [d for d in ran if d.killed_at is not None]
    if oom:
        death = max(oom, key=lambda d: d.killed_at or 0)
        limit, knob = _limit_setting(config, death.memory_limit)
        message = (
            f"out of memory: the worker was killed at ~{_mib(death.killed_at or 0)} ({limit}); "
            + (
                f"raise {knob} ({_held_whole_by(whole)} the scene whole)"
                if (whole := _steps_held_whole(config))
                else f"lower run.block_size or raise {knob}"
            )
        )
        if death.threads > 1:
            message += f" (the worker ran up to {death.threads} scenes at once)"
        error = "OutOfMemory"
    else:
        times = f" {len(ran)} times" if len(ran) > 1 else ""
        message = (
            f"worker lost: the worker running the scene died{times}, not killed by Dask for "
            "memory (the system's out-of-memory killer, a pre-empted or timed-out job, or a "
            f"crash in native code); see the log of worker {ran[-1].worker}"
        )
        error = "KilledWorker"
    return SceneResult(item_id, "failed", "worker", message, 0.0, error=error)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _limit_setting(config: Config, limit: int) -> tuple[str, str]:
    """How a failure names a worker's memory ``limit`` (bytes), and the setting that raises it."""
    rc = config.run
    size = _mib(limit) if limit else "none"
    if rc.executor not in ("local", "slurm"):
        return f"the cluster's worker memory limit {size}", "the workers' memory limit"
    if rc.memory_limit_bytes is not None:
        return f"run.memory_limit {size}", "run.memory_limit"
    if rc.executor == "local":
        return f"run.memory_limit auto: {size}", "run.memory_limit"
    return f"run.slurm.memory / processes: {size}", "run.memory_limit or run.slurm.memory"


@contextlib.contextmanager
def dask_client(config: Config, n_tasks: int | None = None) -> Iterator[Any]:
    """A Dask client: a LocalCluster (``local``), a SLURM cluster (``slurm``) or the scheduler at
    ``run.executor``. The clusters stac2cube starts get ``run.memory_limit`` per worker,
    :data:`CLUSTER_CONFIG` and :data:`ALLOWED_FAILURES`; a running scheduler keeps its
    own."""
    import dask
    from distributed import Client, LocalCluster

    rc = config.run
    # the in-process scheduler logs its start-up at INFO (dask's default): keep it quiet
    dlog = logging.getLogger("distributed")
    if dlog.level in (logging.NOTSET, logging.INFO):
        dlog.setLevel(logging.WARNING)
    if rc.executor == "local":
        with dask.config.set(CLUSTER_CONFIG):  # each nanny takes a copy for its worker
            cluster = LocalCluster(
                n_workers=min(rc.workers or os.cpu_count() or 1, n_tasks or 1 << 16),
                threads_per_worker=1,
                processes=True,
                memory_limit=rc.memory_limit_bytes or "auto",
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False, "allowed_failures": ALLOWED_FAILURES},
                silence_logs=logging.WARNING,
            )
        with cluster, Client(cluster) as client:
            yield client
    elif rc.executor == "slurm":
        with slurm_cluster(config) as cluster, Client(cluster) as client:
            cluster.scale(jobs=rc.slurm.jobs)
            yield client
    else:
        with Client(rc.executor) as client:
            _log_cluster_limits(client, config)
            yield client


def _log_cluster_limits(client: Any, config: Config) -> None:
    """Say that a running scheduler's workers keep their own memory limits."""
    workers = client.scheduler_info().get("workers", {})
    limits = sorted({int(w.get("memory_limit") or 0) for w in workers.values()})
    sizes = ", ".join(_mib(b) if b else "none" for b in limits) or "no worker yet"
    explicit = config.run.memory_limit_bytes is not None
    log.log(
        logging.WARNING if explicit else logging.INFO,
        "run.executor %s: the workers' memory limits are the cluster's own (%s), and so is how "
        "often a task whose worker died is retried; run.memory_limit%s does not apply",
        config.run.executor,
        sizes,
        f" {config.run.memory_limit}" if explicit else "",
    )


def slurm_cluster(config: Config) -> Any:
    """The ``dask_jobqueue.SLURMCluster`` of ``run.slurm`` (no job is submitted until scaled):
    each worker's memory limit is ``run.memory_limit`` (``auto``: ``run.slurm.memory`` split
    between a job's processes)."""
    import dask

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError(
            "run.executor slurm needs dask-jobqueue: `pip install 'stac2cube[hpc]'`"
        ) from None
    kw = config.run.slurm.cluster_kwargs(config.run.memory_limit_bytes)
    kw["scheduler_options"] = {**kw["scheduler_options"], "allowed_failures": ALLOWED_FAILURES}
    # the workers start on other nodes: they get the settings as environment variables
    env = [f"export {_dask_env_name(k)}={v}" for k, v in CLUSTER_CONFIG.items()]
    kw["job_script_prologue"] = [*env, *kw["job_script_prologue"]]
    with dask.config.set(CLUSTER_CONFIG):  # the scheduler runs here
        return SLURMCluster(**kw)


def _dask_env_name(key: str) -> str:
    """The environment variable of Dask config ``key`` (``a.b-c`` → ``DASK_A__B_C``)."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def slurm_job_script(config: Config) -> str:
    """The ``sbatch`` script each SLURM job of ``run.slurm`` runs (to check before a big run)."""
    with slurm_cluster(config) as cluster:
        script: str = cluster.job_script()
    return script


def _steps_held_whole(config: Config) -> list[str]:
    """The configured steps that cannot run this configuration in blocks (a scene with them is
    held whole, so ``run.block_size`` does not lower its memory)."""
    from ..steps.base import BlockStep
    from .steps import active_steps

    return [
        step.name
        for step, cfg in active_steps(config)
        if not (isinstance(step, BlockStep) and step.in_blocks(cfg))
    ]


def _held_whole_by(steps: Sequence[str]) -> str:
    """``the step coreg holds`` / ``the steps coreg, superres hold``."""
    if len(steps) == 1:
        return f"the step {steps[0]} holds"
    return f"the steps {', '.join(steps)} hold"
