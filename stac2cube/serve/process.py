"""The server subprocesses behind :mod:`stac2cube.serve`: free ports, start-up, stop, log relay.

:class:`RustacServer` runs ``rustac serve`` over collections and item collections on a loopback
port; the catalog server uses it as its default STAC API backend, the demo and the tests use it
on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from ..errors import Stac2CubeError

log = logging.getLogger(__name__)


class StacApiServerError(Stac2CubeError, RuntimeError):
    """The local STAC API server could not be started."""


class ServeError(Stac2CubeError, OSError):
    """The catalog server could not start (port in use, address not available, rustac missing)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate a server subprocess (kill it if it does not exit in ``timeout`` s) and close
    its stdin and stderr pipes."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def wait_until_serving(
    proc: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    *,
    request_timeout: float,
    interval: float,
) -> str | None:
    """Poll ``url`` until it answers 200 while ``proc`` runs.

    Returns None once it answers, or what ``proc`` wrote to stderr if it exited first; raises
    :class:`TimeoutError` if neither happens within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=request_timeout) as r:
                if r.status == 200:
                    return None
        except (urllib.error.URLError, OSError):
            time.sleep(interval)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def relay_log(stream: IO[bytes], source: str = "front") -> None:
    """Log the lines a child process writes to stderr (``LEVEL message`` from the front)."""
    with contextlib.suppress(OSError, ValueError):
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            level, _, msg = line.partition(" ")
            if source == "front" and level in ("WARNING", "ERROR", "CRITICAL"):
                log.log(logging.getLevelName(level), "%s", msg)
            else:
                log.debug("%s: %s", source, line)


def rustac_executable() -> str:
    """Path of the ``rustac`` CLI (installed by the ``server`` extra)."""
    beside = Path(sys.executable).with_name("rustac")
    found = str(beside) if beside.exists() else shutil.which("rustac")
    if not found:
        raise StacApiServerError(
            "the `rustac` command is not installed; install it with "
            "`pip install 'stac2cube[server]'`"
        )
    return found


class RustacServer:
    """``rustac serve`` (in-memory backend) over collections and item collections.

    Use as a context manager; the server is bound to ``host`` (127.0.0.1 by default) and stopped
    on exit. ``url`` is the API's landing page.
    """

    def __init__(
        self,
        hrefs: Sequence[str | Path],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.hrefs = [str(h) for h in hrefs]
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RustacServer:
        cmd = [rustac_executable(), "serve", "--addr", f"{self.host}:{self.port}", *self.hrefs]
        log.info("starting %s", " ".join(cmd))
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        try:
            err = wait_until_serving(
                self._proc,
                f"{self.url}/collections",
                self.startup_timeout,
                request_timeout=1,
                interval=0.1,
            )
        except TimeoutError:
            self.stop()
            raise StacApiServerError(f"rustac serve did not answer on {self.url} in time") from None
        if err is not None:
            raise StacApiServerError(f"rustac serve exited at start: {err.strip()}")
        return self

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> RustacServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
