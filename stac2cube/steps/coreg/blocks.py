"""The global mode in blocks (:meth:`CoregStep.plan`): the shift is estimated through a
:class:`~stac2cube.steps.base.SceneSource` without holding the scene at full resolution, and
applied block by block by a :class:`CoregPlan`.

The windows are placed on a grid :func:`coarse_factor` times coarser (a decimated read of the
match band, B02/B04 and SCL, and of the reference), then each is read at full resolution as a
crop of the pixels its matching can touch and matched as the whole scene's windows are
(:func:`~stac2cube.steps.coreg.global_shift.match_crops`). One shift moves every pixel alike,
so a block grown by the shift plus the resampling kernel's reach is corrected exactly as the
whole scene would be (``docs/coreg.md``, "In blocks")."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from ...errors import StepError
from ..base import AuxLayer, AuxRequest, Scene, SceneSource, Sidecar, Skip, StepResult
from ..grids import upsample_nearest
from .backend import CoregFailure, apply_correction
from .config import CoregConfig
from .estimate import window_support
from .global_shift import GlobalShift, match_crops, place_windows
from .inputs import MatchInputs, WindowCrop, clear_overlap, first_match_band, match_inputs
from .outcome import conclude, no_reference, skip_of, step_result
from .windows import MAX_WINDOWS, pick_windows, window_bad_fraction

log = logging.getLogger(__name__)

COARSE_WINDOW_PX: Final = 32
"""Windows are placed on a grid on which the matching window spans about this many pixels."""
MAX_CANDIDATES: Final = 3 * MAX_WINDOWS
"""Windows of one size read at full resolution at most: those placed on the coarse grid, most
textured first, until :data:`MAX_WINDOWS` have at most ``max_bad_fraction`` bad pixels at full
resolution (windows with more are recorded as rejected)."""
KERNEL_REACH_PX: Final = 3
"""Pixels beyond the shift that the widest resampling kernel (``lanczos``, radius 3; ``cubic``
and ``cubic_spline`` 2, ``bilinear`` 1) reads: the halo is the rounded-up shift plus this."""
_REFERENCE_LEVEL: Final = "reference"


class Correction(Protocol):
    """A correction decided for the whole scene, given as AROSICS' correction info for any
    block of it."""

    def info_on(self, geobox: GeoBox) -> dict[str, Any]:
        """AROSICS' ``coreg_info`` that corrects the block on ``geobox`` (a window of the
        scene's grid) as the whole scene is corrected."""
        ...


@dataclass
class CoregPlan:
    """The global correction decided for a scene, applied block by block (a
    :class:`~stac2cube.steps.base.StepPlan`): each block is corrected on its own grid with the
    same shift; an identity when no correction is applied."""

    name: str
    version: str
    cfg: CoregConfig
    results: dict[str, Any]
    """The record's results, concluded (``status``, ``reason``)."""
    correction: Correction | None = None
    """The correction to apply; None: blocks are left as they are."""
    halo: int = 0
    skip: Skip | None = None
    block_aux: Mapping[str, AuxRequest] = field(default_factory=dict)
    sidecars: Mapping[str, Sidecar] = field(default_factory=dict)
    """Sidecars of the analysis (the local mode's tie points)."""

    @property
    def status(self) -> str:
        """``ok``, ``not_significant``, ``no_improvement`` or ``failed``."""
        return str(self.results["status"])

    def apply(self, block: Scene) -> Scene:
        """``block`` corrected on its own grid (unchanged when nothing is applied or it holds
        no data)."""
        if self.correction is None or not has_data(block):
            return block
        return apply_correction(block, self.correction.info_on(block.geobox), self.cfg)

    def apply_late(self, block: Scene) -> Scene:
        """Nothing to apply late."""
        return block

    def tally(self, block: Scene) -> None:
        """Nothing to count: the record is complete after the analysis."""

    def finish(self, shell: Scene) -> StepResult:
        """The result :meth:`CoregStep.run` gives, on the scene without pixels."""
        sidecars = {**shell.sidecars, **self.sidecars}
        return step_result(self.name, self.version, self.cfg, shell, self.results, sidecars)


Decide = Callable[
    [SceneSource, CoregConfig, dict[str, Any], dict[str, Sidecar]], tuple[Correction, int] | None
]
"""A mode's analysis in blocks: the correction and its halo, or None when it is not applied
(the reason in the results, ``status_if_not_applied`` among them); raises
:class:`CoregFailure`."""


def plan_in_blocks(name: str, version: str, source: SceneSource, cfg: CoregConfig) -> CoregPlan:
    """Estimate the correction through ``source`` (global: :func:`decide_global`; local:
    :func:`~stac2cube.steps.coreg.local_blocks.decide_local`), decide as :meth:`CoregStep.run`
    does and return the plan; a failure follows ``on_failure`` (``fail`` raises
    :class:`~stac2cube.errors.StepError`, ``skip`` sets the plan's ``skip``, ``keep`` gives an
    identity plan)."""
    decide: Decide = decide_global
    if cfg.mode == "local":
        from .local_blocks import decide_local

        decide = decide_local
    results: dict[str, Any] = {"mode": cfg.mode, "reference": None, "applied_shift_px": [0.0, 0.0]}
    sidecars: dict[str, Sidecar] = {}
    correction: Correction | None = None
    halo = 0
    reason: str | None = None
    try:
        found = decide(source, cfg, results, sidecars)
        if found is not None:
            (correction, halo), status = found, "ok"
            results["applied_shift_px"] = list(results["shift_px"])
        else:
            status = str(results.pop("status_if_not_applied"))
            reason = str(results["decision"])
    except CoregFailure as exc:
        status, reason = "failed", str(exc)
    conclude(source.item_id, cfg, results, status, reason)
    return CoregPlan(
        name, version, cfg, results, correction, halo, skip_of(results, cfg), sidecars=sidecars
    )


def decide_global(
    source: SceneSource, cfg: CoregConfig, results: dict[str, Any], sidecars: dict[str, Sidecar]
) -> tuple[Correction, int] | None:
    """The global shift when it is applied, with a halo of the rounded-up shift plus the
    resampling kernel's reach."""
    found = _estimate(source, cfg, results)
    if not found.apply:
        return None
    return found, math.ceil(max(abs(found.dx), abs(found.dy))) + KERNEL_REACH_PX


def coarse_factor(cfg: CoregConfig) -> int:
    """How many times coarser than the scene the grid is on which windows are placed."""
    return max(1, cfg.window // COARSE_WINDOW_PX)


def _estimate(source: SceneSource, cfg: CoregConfig, results: dict[str, Any]) -> GlobalShift:
    """Place the windows on the coarse grid, match them on full-resolution crops and combine
    them; ``results`` get what :meth:`CoregStep.run` records. Raises :class:`CoregFailure`."""
    band = first_match_band(source.item_id, source.band_names, cfg)
    f = coarse_factor(cfg)
    coarse = coarse_inputs(source, cfg, band, f, results)
    res = abs(float(source.geobox.resolution.x))
    results["placement"] = f"coarse grid {f * res:g} m (blocks)"
    clear_overlap(coarse.inp, results)

    def pick(win: int) -> list[WindowCrop]:
        crops: list[WindowCrop] = []
        for r, c in coarse.pick(win, MAX_CANDIDATES):
            crops.append(_read_crop(source, cfg, coarse, r, c, win))
            if sum(crop.reject is None for crop in crops) == MAX_WINDOWS:
                break
        return crops if any(crop.reject is None for crop in crops) else []

    crops, win = place_windows(pick, cfg)
    return match_crops(crops, cfg, win, results)


@dataclass(frozen=True)
class Coarse:
    """The matching inputs on the coarse grid and what is needed to map its windows back."""

    inp: MatchInputs
    geobox: GeoBox
    fine: GeoBox
    factor: int
    cfg: CoregConfig

    def pick(self, win: int, n: int) -> list[tuple[int, int]]:
        """Centres (full-resolution ``(row, col)``) of up to ``n`` windows of ``win`` px placed
        on the coarse grid as the whole scene's are placed on its own."""
        cw = max(win // self.factor, 1)
        inp = self.inp
        frac = inp.frac if cw == self.cfg.window else window_bad_fraction(inp.bad_any, cw)
        picked = pick_windows(inp.target, inp.bad_any, frac, cw, self.cfg.max_bad_fraction, n)
        return [self._to_fine(r, c, win) for r, c in picked]

    def _to_fine(self, r: int, c: int, win: int) -> tuple[int, int]:
        x, y = self.geobox.affine * (c + 0.5, r + 0.5)
        col, row = ~self.fine.affine * (x, y)
        h, w = self.fine.shape.yx
        return _inside(math.floor(row), h, win), _inside(math.floor(col), w, win)


def _inside(v: int, n: int, win: int) -> int:
    """``v`` moved so that a ``win`` px window centred on it lies inside ``n`` px (the middle
    when it cannot), as the whole scene's windows are placed."""
    if n <= win:
        return n // 2
    return min(max(v, win // 2), n - win // 2)


def coarse_inputs(
    source: SceneSource, cfg: CoregConfig, band: str, f: int, results: dict[str, Any]
) -> Coarse:
    """The match band, B02/B04 and SCL (decimated read: reflectance averaged, classes nearest)
    and the reference on a grid ``f`` times coarser, as matching inputs with the anomalies
    found there; ``results`` get the reference, the bands and the anomalies."""
    res = abs(float(source.geobox.resolution.x))
    ref = source.aux("reference", AuxRequest((cfg.match_band,), res * f, level=_REFERENCE_LEVEL))
    if ref is None:
        raise CoregFailure(no_reference(source.missing_aux))
    results["reference"] = ref.source
    names = [band, *(b for b in ("B02", "B04", "SCL") if b in source.band_names and b != band)]
    layer = source.aux("coarse", AuxRequest(tuple(names), res * f, level="l2a"))
    if layer is None:
        raise CoregFailure(
            f"the scene could not be read on a {res * f:g} m grid to place the matching "
            f"windows: {source.missing_aux.get('coarse', 'not provided')}"
        )
    data = {b: np.asarray(layer.data[i], dtype=np.float32) for i, b in enumerate(layer.bands)}
    classes = {}
    if "SCL" in data:  # NaN (outside the scene) is SCL's nodata class 0
        classes["SCL"] = np.nan_to_num(data.pop("SCL"), nan=0.0).astype(np.uint8)
    scene = Scene(source.item_id, layer.geobox, data, classes)
    if ref.geobox != layer.geobox:
        raise StepError(
            f"{source.item_id}: the reference came on {ref.geobox}, the scene's bands on "
            f"{layer.geobox}; a SceneSource reads both requests of {res * f:g} m on one grid"
        )
    ref_data = np.asarray(ref.data, dtype=np.float32)[0]
    # the coarse window is no smaller than the config allows (the local mode's overlap check
    # reads 16 times coarser and uses no window)
    ccfg = dataclasses.replace(
        cfg, window_size=max(cfg.window // f, 32), max_shift=cfg.max_shift / f
    )
    inp = match_inputs(scene, AuxLayer(ref_data[None], layer.geobox, ref.bands, ref.source), ccfg)
    _record_bands(source.item_id, inp.band, ref, results)
    results["anomalies"] = inp.anomalies
    return Coarse(inp, layer.geobox, source.geobox, f, ccfg)


def _record_bands(item_id: str, band: str, ref: AuxLayer, results: dict[str, Any]) -> None:
    results["match_band"] = band
    results["reference_band"] = ref.bands[0] if ref.bands else None
    if ref.bands and ref.bands[0] != band:
        log.warning(
            "%s: matching scene band %s against reference band %s", item_id, band, ref.bands[0]
        )


def full_res_inputs(
    source: SceneSource, cfg: CoregConfig, window: Window, coarse: Coarse | None = None
) -> tuple[Scene, MatchInputs]:
    """The scene over ``window`` at full resolution (with the plans of the steps before
    applied) and its matching inputs, with the anomalies found on the ``coarse`` grid, or
    found in the window itself (None)."""
    block = source.block(window)
    req = AuxRequest((cfg.match_band,), 0.0, level=_REFERENCE_LEVEL)
    ref = source.aux("reference", req, geobox=block.geobox)
    if ref is None:
        raise CoregFailure(no_reference(source.missing_aux))
    if coarse is None:
        return block, match_inputs(block, ref, cfg)
    anomaly = upsample_nearest(coarse.inp.anomaly, coarse.geobox, block.geobox)
    return block, match_inputs(block, ref, cfg, (anomaly, coarse.inp.anomalies))


def _read_crop(
    source: SceneSource, cfg: CoregConfig, coarse: Coarse, r: int, c: int, win: int
) -> WindowCrop:
    """The window of ``win`` px centred on ``(r, c)`` read at full resolution as a crop of the
    pixels its matching can touch (:func:`full_res_inputs`); rejected when more than
    ``max_bad_fraction`` of it is bad at full resolution."""
    sl = window_support(source.geobox.shape.yx, r, c, win, cfg)
    block, inp = full_res_inputs(source, cfg, Window.from_slices(*sl), coarse)
    crop = WindowCrop(inp, block.geobox, r - sl[0].start, c - sl[1].start, (c, r))
    half = win // 2
    box = (
        slice(max(crop.row - half, 0), crop.row + half),
        slice(max(crop.col - half, 0), crop.col + half),
    )
    bad = float(crop.inp.bad_any[box].mean())
    if bad > cfg.max_bad_fraction:
        reject = (
            f"{bad:.0%} of the window is cloud, shadow, anomaly or nodata at full resolution, "
            f"more than max_bad_fraction {cfg.max_bad_fraction:.0%}"
        )
        crop = dataclasses.replace(crop, reject=reject)
    return crop


def has_data(block: Scene) -> bool:
    """Whether any band or class layer of ``block`` has a valid pixel."""
    if any(np.isfinite(a).any() for a in block.bands.values()):
        return True
    for n, a in block.classes.items():
        info = block.layer_info.get(n)
        if (np.asarray(a) != (info.nodata if info is not None else 0)).any():
            return True
    return False
