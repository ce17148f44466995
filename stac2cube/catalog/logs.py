"""The catalog's two logs, one JSON object per line in the state directory: the failure log
(scenes that could not be processed) and the filter log (scenes a step decided not to write).

Lines are appended with one ``write`` and an ``fsync``; a line torn by a crash is skipped when
read and never swallows the next one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..io.atomic import append_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailureRecord:
    """One line of the failure log."""

    item_id: str
    stage: str
    error: str
    message: str
    time: str
    run_id: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def append_failure(
    path: Path, item_id: str, stage: str, exc: BaseException, *, run_id: str = ""
) -> FailureRecord:
    """Add the failure of ``item_id`` at ``stage`` to the failure log at ``path``."""
    rec = FailureRecord(
        item_id=item_id,
        stage=stage,
        error=getattr(exc, "error_name", type(exc).__name__),
        message=str(exc),
        time=_now(),
        run_id=run_id,
    )
    append_line(path, json.dumps(rec.to_dict()))
    return rec


def read_failures(path: Path) -> list[FailureRecord]:
    """All failures of the log at ``path``, oldest first (a torn line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(FailureRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            log.warning("skipping an unreadable line of %s", path)
    return out


def append_filtered(
    path: Path, source: Any, config_hash: str, reason: str, results: Mapping[str, Any]
) -> None:
    """Add a scene a step decided not to write (the source item ``source``) to the filter log at
    ``path``, with the step's figures."""
    from ..radiometry import processing_baseline

    rec = {
        "item_id": source.id,
        "reason": reason,
        "config_hash": config_hash,
        "source_updated": source.properties.get("updated"),
        "processing_baseline": processing_baseline(source),
        "results": dict(results),
        "time": _now(),
    }
    append_line(path, json.dumps(rec, default=str))


def read_filtered(path: Path) -> dict[str, dict[str, Any]]:
    """The latest record per item id of the filter log at ``path``."""
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[rec["item_id"]] = rec
    return out
