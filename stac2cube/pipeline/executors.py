"""Where the scenes run: in this process, on a local Dask cluster, on SLURM through
dask-jobqueue, or on a running scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..config import Config
from ..errors import (
    ConfigError,
)
from .task import SceneResult, SceneTask, process_scene

log = logging.getLogger(__name__)


def execute(config: Config, tasks: Sequence[SceneTask]) -> Iterator[SceneResult]:
    """Run the tasks in this process (``run.executor: serial``) or on a Dask cluster, yielding
    results as they complete. A worker that dies (e.g. out of memory) fails only its scene."""
    if not tasks:
        return
    if config.run.executor == "serial" or (config.run.executor == "local" and len(tasks) == 1):
        for task in tasks:
            yield process_scene(task)
        return
    from distributed import as_completed

    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(dask_client(config, n_tasks=len(tasks)))
    except (RuntimeError, OSError, TimeoutError) as exc:
        if config.run.executor != "local":
            raise ConfigError(
                f"cannot reach the Dask cluster of run.executor {config.run.executor!r}: {exc}"
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
        futures = {
            client.submit(process_scene, t, key=f"stac2cube-scene-{t.item_id}", pure=False): t
            for t in tasks
        }
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # KilledWorker, lost connection: the scene fails, run goes on
                yield SceneResult(
                    task.item_id,
                    "failed",
                    "worker",
                    f"{type(exc).__name__}: {exc}",
                    0.0,
                    error=type(exc).__name__,
                )


@contextlib.contextmanager
def dask_client(config: Config, n_tasks: int | None = None) -> Iterator[Any]:
    """A Dask client: a LocalCluster (``local``) or the scheduler at ``run.executor``."""
    from distributed import Client, LocalCluster

    rc = config.run
    # the in-process scheduler logs its start-up at INFO (dask's default): keep it quiet
    dlog = logging.getLogger("distributed")
    if dlog.level in (logging.NOTSET, logging.INFO):
        dlog.setLevel(logging.WARNING)
    if rc.executor == "local":
        with (
            LocalCluster(
                n_workers=min(rc.workers or os.cpu_count() or 1, n_tasks or 1 << 16),
                threads_per_worker=1,
                processes=True,
                memory_limit=rc.memory_limit,
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False},
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    elif rc.executor == "slurm":
        with slurm_cluster(config) as cluster, Client(cluster) as client:
            cluster.scale(jobs=rc.slurm.jobs)
            yield client
    else:
        with Client(rc.executor) as client:
            yield client


def slurm_cluster(config: Config) -> Any:
    """The ``dask_jobqueue.SLURMCluster`` of ``run.slurm`` (no job is submitted until scaled)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError(
            "run.executor slurm needs dask-jobqueue: `pip install 'stac2cube[hpc]'`"
        ) from None
    return SLURMCluster(**config.run.slurm.cluster_kwargs())


def slurm_job_script(config: Config) -> str:
    """The ``sbatch`` script each SLURM job of ``run.slurm`` runs (to check before a big run)."""
    with slurm_cluster(config) as cluster:
        script: str = cluster.job_script()
    return script
