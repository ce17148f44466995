"""The co-registration step, :class:`CoregStep`: estimate the scene's displacement against the
catalog's reference, decide whether correcting it helps, apply it once, and record what it did
and why under the failure policy ``on_failure``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ...errors import StepError
from ..base import AuxLayer, AuxRequest, Scene, SceneSource, Sidecar, StepResult
from .backend import CoregFailure, apply_correction
from .blocks import CoregPlan, plan_in_blocks
from .config import CoregConfig
from .global_shift import match_global
from .inputs import clear_overlap, match_inputs
from .local import match_local
from .outcome import conclude, no_reference, step_result
from .significance import warp_improves

log = logging.getLogger(__name__)


class CoregStep:
    """Co-registration onto the catalog's reference image (see ``docs/coreg.md``)."""

    name = "coreg"
    version = "1.1.0"

    def prepare(self, cfg: CoregConfig) -> None:
        """Nothing to read ahead: the reference image comes with each scene
        (:meth:`required_aux`)."""

    def required_aux(self, cfg: CoregConfig) -> Mapping[str, AuxRequest]:
        """``"reference"``: the catalog's reference image, band ``cfg.match_band``
        (``level="reference"``), on the scene's own grid: ``resolution=0.0`` means "the scene's
        grid" (same shape and transform as the ``scene.bands`` arrays), not a pixel size."""
        return {"reference": AuxRequest(bands=(cfg.match_band,), resolution=0.0, level="reference")}

    def _match(
        self,
        scene: Scene,
        ref: AuxLayer,
        cfg: CoregConfig,
        results: dict[str, Any],
        sidecars: dict[str, Sidecar],
    ) -> tuple[Scene, str, str | None]:
        """Estimate, decide and (when it helps) apply the correction: ``(scene, status,
        reason)``. Raises :class:`CoregFailure` when there is no trustworthy match."""
        inp = match_inputs(scene, ref, cfg)
        results["match_band"] = inp.band
        results["reference_band"] = ref.bands[0] if ref.bands else None
        if ref.bands and ref.bands[0] != inp.band:
            log.warning(
                "%s: matching scene band %s against reference band %s",
                scene.item_id,
                inp.band,
                ref.bands[0],
            )
        results["anomalies"] = inp.anomalies
        usable = clear_overlap(inp, results)
        if cfg.mode == "global":
            info, apply = match_global(inp, scene.geobox, cfg, results)
        else:
            info, apply = match_local(inp, scene.geobox, cfg, results, sidecars)
        if apply:
            new = apply_correction(scene, info, cfg)
            if cfg.mode == "global" or warp_improves(inp, new, usable, results):
                results["applied_shift_px"] = list(results["shift_px"])
                return new, "ok", None
        return scene, str(results.pop("status_if_not_applied")), str(results["decision"])

    def run(self, scene: Scene, cfg: CoregConfig) -> StepResult:
        """Co-register ``scene`` onto ``scene.aux["reference"]``; pure (no I/O)."""
        ref = scene.aux.get("reference")
        if ref is None and "reference" not in scene.missing_aux:
            raise StepError(
                f"{scene.item_id}: the coreg step got no reference image (scene.aux"
                "['reference']); the pipeline must read what CoregStep.required_aux asks for"
            )
        results: dict[str, Any] = {
            "mode": cfg.mode,
            "reference": None if ref is None else ref.source,
            "applied_shift_px": [0.0, 0.0],
        }
        sidecars: dict[str, Sidecar] = dict(scene.sidecars)
        new: Scene = scene
        reason: str | None
        try:
            if ref is None:  # the pipeline says why it could not provide one
                raise CoregFailure(no_reference(scene.missing_aux))
            new, status, reason = self._match(scene, ref, cfg, results, sidecars)
        except CoregFailure as exc:
            status, reason = "failed", str(exc)
        conclude(scene.item_id, cfg, results, status, reason)
        return step_result(self.name, self.version, cfg, new, results, sidecars)

    def in_blocks(self, cfg: CoregConfig) -> bool:
        """Both modes run in blocks: one shift corrects each block with a halo; a tie-point
        warp is applied to each block through the tie points near it."""
        return True

    def plan(self, source: SceneSource, cfg: CoregConfig) -> CoregPlan:
        """The correction estimated through ``source`` as a plan that corrects each block:
        the global shift from windows placed on a coarse grid and matched on full-resolution
        crops (:mod:`.blocks`), the tie points matched tile by tile (:mod:`.local_blocks`);
        raises as :meth:`run` does."""
        return plan_in_blocks(self.name, self.version, source, cfg)
