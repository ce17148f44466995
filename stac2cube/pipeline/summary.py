"""What a run reports: one outcome per scene, progress events and the run's summary."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)


Status = Literal["written", "skipped", "filtered", "failed", "rejected"]


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene in a run."""

    item_id: str
    status: Status
    stage: str = ""
    message: str = ""
    seconds: float = 0.0
    s2cloudless_not_run: str = ""
    """Why the configured s2cloudless did not run on this scene (``no L1C twin``, ``L1C read
    refused: ...``); empty when it ran or was not configured."""
    cloud_method: str = ""
    """The cloud masking that ran instead (``scl``, ``scl + multi-temporal test``)."""
    coreg_status: str = ""
    """The co-registration step's status (``ok``, ``not_significant``, ``no_improvement``,
    ``failed``); empty when it did not run."""
    coreg_reason: str = ""
    """Why a correction was not applied or the match failed (empty when applied)."""


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the ``progress`` callback after each scene (and once with ``total`` first)."""

    done: int
    total: int
    outcome: SceneOutcome | None


@dataclass(frozen=True)
class RunSummary:
    """The result of :func:`run`."""

    run_id: str
    catalog: str
    search_method: str
    outcomes: tuple[SceneOutcome, ...] = field(default_factory=tuple)
    snapshot_id: str | None = None
    """The virtual cube's snapshot this run committed (tagged ``run-<run_id>``), if any."""

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def written(self) -> int:
        return self.count("written")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def filtered(self) -> int:
        return self.count("filtered")

    @property
    def failed(self) -> int:
        return self.count("failed") + self.count("rejected")

    def coreg_statuses(self) -> dict[str, int]:
        """Scenes of this run counted by co-registration status (empty without the step)."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            if o.coreg_status:
                out[o.coreg_status] = out.get(o.coreg_status, 0) + 1
        return out

    def without_s2cloudless(self) -> dict[tuple[str, str], int]:
        """Scenes of this run masked without the configured s2cloudless, counted by why (the
        reason up to its first colon: ``no L1C twin``, ``L1C read refused``) and by the cloud
        masking used instead (``scl``, ``scl + multi-temporal test``)."""
        out: dict[tuple[str, str], int] = {}
        for o in self.outcomes:
            if o.s2cloudless_not_run:
                key = (o.s2cloudless_not_run.partition(":")[0], o.cloud_method)
                out[key] = out.get(key, 0) + 1
        return out


ProgressCallback = Callable[[ProgressEvent], None]
