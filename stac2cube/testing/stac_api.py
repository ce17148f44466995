"""A real STAC API on 127.0.0.1 for the demo and the tests: ``rustac serve`` in a subprocess."""

from __future__ import annotations

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

from ..errors import Stac2CubeError

log = logging.getLogger(__name__)


class StacApiServerError(Stac2CubeError, RuntimeError):
    """The local STAC API server could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate a server subprocess (kill it if it does not exit in ``timeout`` s) and close
    its stderr pipe."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


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
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise StacApiServerError(f"rustac serve exited at start: {err.strip()}")
            try:
                with urllib.request.urlopen(f"{self.url}/collections", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise StacApiServerError(f"rustac serve did not answer on {self.url} in time")

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> RustacServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
