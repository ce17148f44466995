"""A real single-node SLURM cluster on 127.0.0.1 for the tests: munged + slurmctld + slurmd.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons (``make setup`` installs them
where apt is available). Everything lives in one temporary directory: the munge key and socket,
``slurm.conf``, state, spool and logs; the daemons listen on free ports of 127.0.0.1 and are
stopped on exit. Clients find the cluster through ``SLURM_CONF``, which :meth:`LocalSlurm.env`
returns (and :meth:`LocalSlurm.__enter__` sets in ``os.environ`` for this process, so that
dask-jobqueue's ``sbatch``/``squeue``/``scancel`` calls reach it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ..errors import Stac2CubeError
from .stac_api import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")


class LocalSlurmError(Stac2CubeError, RuntimeError):
    """The local SLURM cluster could not be started."""


def slurm_available() -> str | None:
    """None if a local SLURM can be started here, else why not (for a test's skip reason)."""
    missing = [d for d in (*DAEMONS, "sbatch", "sinfo") if shutil.which(d) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the slurm daemons of the local test cluster must run as root"
    return None


def _sbin(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LocalSlurmError(f"{name} is not installed (Debian: apt-get install slurm-wlm munge)")
    return found


class LocalSlurm:
    """munged, slurmctld and slurmd on 127.0.0.1; one node with ``cpus`` CPUs and ``memory_mb``
    MB, one partition ``debug``. Use as a context manager."""

    def __init__(self, *, cpus: int | None = None, memory_mb: int = 4096) -> None:
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.partition = "debug"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.root = Path()

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> LocalSlurm:
        why = slurm_available()
        if why is not None:
            raise LocalSlurmError(why)
        self._tmp = tempfile.TemporaryDirectory(prefix="stac2cube-slurm-")
        self.root = Path(self._tmp.name)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        os.environ["SLURM_CONF"] = str(self.conf)
        return self

    def _start(self) -> None:
        root = self.root
        for d in ("munge", "state", "spool", "log"):
            (root / d).mkdir()
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = root / "munge" / "munge.socket"
        subprocess.run(
            [
                _sbin("munged"),
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={root / 'munge' / 'munged.pid'}",
                f"--log-file={root / 'munge' / 'munged.log'}",
                f"--seed-file={root / 'munge' / 'seed'}",
                "--force",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        host = socket.gethostname()
        ctl_port, d_port = free_port(), free_port()
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=stac2cube-test",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={ctl_port}",
                    f"SlurmdPort={d_port}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={sock}",
                    "CredType=cred/munge",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"StateSaveLocation={root / 'state'}",
                    f"SlurmdSpoolDir={root / 'spool'}",
                    f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={self.memory_mb} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={host} Default=YES "
                    "MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        env = self.env()
        for daemon, args in (("slurmctld", ["-c"]), ("slurmd", [])):
            proc = subprocess.run(
                [_sbin(daemon), *args], env=env, capture_output=True, text=True, timeout=60
            )
            if proc.returncode != 0:
                raise LocalSlurmError(f"{daemon} did not start: {proc.stderr.strip()}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30
            )
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise LocalSlurmError(
            f"the local SLURM node did not become idle; see the logs in {root / 'log'}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.root / pidfile
            try:
                os.kill(int(path.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                continue
        if os.environ.get("SLURM_CONF") == str(self.conf):
            del os.environ["SLURM_CONF"]
        time.sleep(0.5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
