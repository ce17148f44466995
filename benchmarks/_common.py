"""Helpers the benchmark scripts share: peak memory of a process, running a script's own
worker mode in a fresh subprocess (so each measurement has its own memory peak), pooled
confusion counts, and writing a results file with the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak, which
    Linux keeps across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def run_worker(
    script: str, args: Sequence[Any], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python script *args`` and return the JSON object on the last line of its stdout;
    a failing worker stops the benchmark with its stderr."""
    proc = subprocess.run(
        [sys.executable, script, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker {list(args)} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


class Counts:
    """Pooled confusion counts."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0

    def add(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        self.tp += int((pred & truth & valid).sum())
        self.fp += int((pred & ~truth & valid).sum())
        self.fn += int((~pred & truth & valid).sum())

    def metrics(self) -> dict[str, float]:
        p = self.tp / max(self.tp + self.fp, 1)
        r = self.tp / max(self.tp + self.fn, 1)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def cpu_calibration_s() -> float:
    """Seconds of a fixed single-core workload (zlib and a Python loop; best of 3): how fast
    this shared machine ran at the time, so that the seconds of runs on different days can be
    compared (lower is faster)."""
    import time
    import zlib

    data = np.random.default_rng(0).integers(0, 1000, 2_000_000, dtype=np.int16).tobytes()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        zlib.compress(data, 6)
        sum(range(3_000_000))
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def machine() -> dict[str, Any]:
    """The machine a results file was measured on, with its speed at the time."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_calibration_s": cpu_calibration_s(),
    }


def write_results(result: dict[str, Any], out: Path) -> None:
    """Add the machine to ``result``, write it to ``out`` and print its scalar figures."""
    result["machine"] = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    keys = [k for k, v in result.items() if not isinstance(v, dict | list)]
    print(json.dumps({k: result[k] for k in keys}, indent=1))
