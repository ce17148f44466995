"""The SLURM path: the job script dask-jobqueue generates from the YAML config, and a real run
on a single-node SLURM (munged + slurmctld + slurmd on 127.0.0.1, started by the test from
Debian's slurm-wlm and munge, which `make setup` installs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stac2cube.config import load_config
from stac2cube.errors import ConfigError
from stac2cube.pipeline import slurm_job_script

EXAMPLE = Path(__file__).parents[2] / "examples" / "hpc-slurm.yaml"


def test_example_slurm_job_script() -> None:
    assert load_config(EXAMPLE).run.slurm.interface == "ib0"
    # the scheduler binds to the interface where it starts: this machine has no InfiniBand
    cfg = load_config(EXAMPLE, ["run.slurm.interface=null"])
    assert cfg.run.executor == "slurm" and cfg.run.slurm.jobs == 8
    script = slurm_job_script(cfg)
    for line in (
        "#SBATCH -p hpda2_compute",
        "#SBATCH -A pn12ab",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 04:00:00",
        "#SBATCH --clusters=hpda2",
        "module load slurm_setup",
        "source /dss/project/s2-ard/venv/bin/activate",
    ):
        assert line in script, line
    # one single-threaded worker per core, memory split between them
    assert "--nthreads 1" in script and "--nworkers 8" in script
    assert "--memory-limit 4.00GiB" in script and "--local-directory /tmp" in script
    # a worker's memory is Dask-unmanaged: no spilling, no pausing (a paused worker never takes
    # its next scene); only the kill at 95 % of the limit
    for key in ("TARGET", "SPILL", "PAUSE"):
        assert f"export DASK_DISTRIBUTED__WORKER__MEMORY__{key}=False" in script
    # a task is a scene: no stack sampling every 10 ms, the event loop's watchdog once a second
    assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in script
    assert "export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s" in script


def test_run_memory_limit_per_slurm_worker() -> None:
    """run.memory_limit is each worker's limit; the jobs still ask SLURM for run.slurm.memory,
    and the scheduler leaves retrying a scene whose worker died to stac2cube."""
    from stac2cube.pipeline import slurm_cluster

    cfg = load_config(EXAMPLE, ["run.slurm.interface=null", "run.memory_limit=3GiB"])
    script = slurm_job_script(cfg)
    assert "--memory-limit 3.00GiB" in script and "--nworkers 8" in script
    assert "#SBATCH --mem=32768M" in script
    with slurm_cluster(cfg) as cluster:
        assert cluster.scheduler.allowed_failures == 0
    with pytest.raises(ConfigError, match=r"raise run\.slurm\.memory to 40GiB"):
        load_config(EXAMPLE, ["run.slurm.interface=null", "run.memory_limit=5GiB"])


def test_gpu_directive_and_defaults(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        "source: {path: items.json}\naoi: {bbox: [1, 2, 3, 4]}\n"
        "time: {start: 2020-01-01, end: 2020-02-01}\n"
        "run: {executor: slurm, slurm: {cores: 4, processes: 1, memory: 16GiB, "
        "job_extra_directives: ['--gres=gpu:1']}}\n"
    )
    script = slurm_job_script(load_config(cfg_path))
    assert "#SBATCH --gres=gpu:1" in script and "--nthreads 4" in script
    assert "--nworkers" not in script or "--nworkers 1" in script


@pytest.mark.parametrize(
    ("run", "match"),
    [
        ("{executor: kubernetes}", "use serial, local, slurm"),
        ("{executor: slurm, slurm: {cores: 4, processes: 8}}", "between 1 and run.slurm.cores"),
        ("{executor: slurm, slurm: {queues: x}}", "did you mean 'queue'"),
        ("{executor: slurm, slurm: {memory: lots}}", "run.slurm.memory: 'lots' is not a size"),
        ("{memory_limit: 4 gigs}", "run.memory_limit: '4 gigs' is not a size"),
        ("{executor: slurm, memory_limit: 8GiB}", r"× 8 worker processes per job is more than"),
    ],
)
def test_bad_run_config(tmp_path: Path, run: str, match: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "source: {path: items.json}\naoi: {bbox: [1, 2, 3, 4]}\n"
        f"time: {{start: 2020-01-01, end: 2020-02-01}}\nrun: {run}\n"
    )
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_live_single_node_slurm(sample, sample_api, tmp_path: Path) -> None:
    """The dask-jobqueue path against a real SLURM: munged + slurmctld + slurmd on 127.0.0.1,
    two jobs of one worker each; the catalog equals a serial run's, byte for byte."""
    from stac2cube import run
    from stac2cube.catalog import CatalogStore
    from stac2cube.testing.configs import write_config
    from stac2cube.testing.slurm import LocalSlurm, slurm_available

    why = slurm_available()
    if why is not None:
        pytest.skip(why)
    bands = ["B04", "B08", "SCL"]
    for d in ("serial", "slurm", "scratch", "slurm-logs"):
        (tmp_path / d).mkdir()
    slurm = {
        "queue": "debug",
        "cores": 1,
        "processes": 1,
        "memory": "1GiB",
        "walltime": "00:10:00",
        "jobs": 2,
        "local_directory": str(tmp_path / "scratch"),
        "log_directory": str(tmp_path / "slurm-logs"),
    }
    serial = load_config(
        write_config(
            tmp_path / "serial", sample, {"api": sample_api.url}, bands=bands, steps={},
            run={"executor": "serial"},
        )
    )  # fmt: skip
    on_slurm = load_config(
        write_config(
            tmp_path / "slurm", sample, {"api": sample_api.url}, bands=bands, steps={},
            run={"executor": "slurm", "slurm": slurm},
        )
    )  # fmt: skip
    assert run(serial).written == 4
    with LocalSlurm(cpus=2, memory_mb=4096):
        summary = run(on_slurm)
    assert summary.written == 4, summary
    logs = list((tmp_path / "slurm-logs").glob("*"))
    assert logs, "no SLURM job ran (no job output files)"
    a = CatalogStore(serial.catalog_dir, serial.output.collection_id)
    b = CatalogStore(on_slurm.catalog_dir, on_slurm.output.collection_id)
    assert sorted(a.item_ids()) == sorted(b.item_ids())
    for item_id in a.item_ids():
        for tif in sorted(a.item_dir(item_id).glob("*.tif")):
            assert tif.read_bytes() == (b.item_dir(item_id) / tif.name).read_bytes(), tif
