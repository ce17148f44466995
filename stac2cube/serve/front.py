"""The front server's child process: how :class:`~stac2cube.serve.CatalogServer` starts it and
what it runs.

The front runs in its own Python process because GDAL (rasterio, odc-stac) sometimes does HTTP
while holding the GIL: a client in the serving process would otherwise starve a server thread and
hang. The parent binds the port and passes the listening socket; the child exits when terminated,
or, stopping the STAC API backend in the parent's place, when its parent goes away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .http import FrontConfig, FrontServer
from .process import ServeError, relay_log, stop_process

ACCESS_LOG = "access.log"
"""File, in the server's temporary directory, where the front writes one status per file
response."""
_READY = "stac2cube-serve ready"
# The child imports this module without running stac2cube's __init__ (which loads xarray, dask
# and the pipeline: seconds), by registering a bare ``stac2cube`` package first.
_FRONT_MAIN = (
    "import sys, types; pkg = types.ModuleType('stac2cube'); pkg.__path__ = [sys.argv[2]]; "
    "sys.modules['stac2cube'] = pkg; from stac2cube.serve.front import front_main; front_main()"
)


def start_front(sock: socket.socket, cfg: Mapping[str, Any]) -> subprocess.Popen[bytes]:
    """The front server, started in a child process on the listening socket ``sock``, once it
    says it is ready; its log is relayed to this process's. ``cfg`` is what :func:`front_main`
    reads."""
    package_dir = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", _FRONT_MAIN, json.dumps(dict(cfg)), package_dir],
        pass_fds=(sock.fileno(),),
        stdin=subprocess.PIPE,  # the child exits when this process goes away
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline().decode(errors="replace").strip()
        if ready != _READY:
            rest = proc.stderr.read().decode(errors="replace").strip()
            proc.wait()
            raise ServeError(f"the catalog server did not start: {ready} {rest}".strip())
    except BaseException:
        stop_process(proc)
        raise
    threading.Thread(
        target=relay_log, args=(proc.stderr,), name="stac2cube-serve-log", daemon=True
    ).start()
    return proc


def front_main() -> None:
    """Entry point of the front server's child process (see :func:`start_front`)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cfg = json.loads(sys.argv[1])
    sock = socket.socket(fileno=int(cfg["fd"]))
    with open(cfg["access_log"], "a", encoding="ascii") as access:
        front = FrontServer(
            sock,
            FrontConfig(
                root=Path(cfg["root"]),
                internal=cfg["internal"],
                public_url=cfg["public_url"],
                url=cfg["url"],
                access_log=access,
                unsupported=tuple(cfg["unsupported"]),
                backend=cfg["backend"],
            ),
        )
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        watch = threading.Thread(target=_exit_with_parent, args=(front, cfg.get("api_pid")))
        watch.daemon = True
        watch.start()
        sys.stderr.write(_READY + "\n")
        sys.stderr.flush()
        try:
            front.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            front.server_close()


def _exit_with_parent(front: FrontServer, api_pid: int | None) -> None:
    """Once stdin (a pipe from the parent) closes, the parent is gone without stopping us:
    stop the STAC API backend in its place, then serve no more."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):  # raw fd: a buffered reader's lock would stall the exit
            pass
    if api_pid is not None:
        with contextlib.suppress(OSError):
            os.kill(api_pid, signal.SIGTERM)
    front.shutdown()
