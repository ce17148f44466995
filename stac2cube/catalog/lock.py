"""The one-writer lock of a catalog (``_stac2cube/lock``): held while a run writes, taken over
when its holder on this host is gone, so that a crashed run never blocks the next one."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CatalogLockedError

log = logging.getLogger(__name__)


class CatalogLock:
    """An exclusive lock on a catalog that survives a crashed holder.

    The lock file records the holder's host and pid; a lock whose holder on this host no longer
    runs is taken over. A live holder makes :meth:`acquire` raise
    :class:`~stac2cube.errors.CatalogLockedError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder):
                    raise CatalogLockedError(
                        f"another stac2cube run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}) is writing "
                        f"{self.path.parent.parent}; wait for it to finish. If it is gone, "
                        f"delete {self.path}."
                    ) from None
                log.warning("taking over the stale lock %s (holder %s)", self.path, holder)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return
        raise CatalogLockedError(f"could not acquire {self.path}")  # pragma: no cover

    def _holder(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return doc

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> CatalogLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(holder: Mapping[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell for another host: assume alive
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
