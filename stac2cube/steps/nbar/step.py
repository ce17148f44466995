"""The NBAR step, :class:`NbarStep`: each band's reflectance times its c-factor, computed per
pixel from the scene's sun and view angles; whole (:meth:`NbarStep.run`) or block by block
(:class:`NbarPlan`), with the same pixels and record."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...angles import ANGLE_BANDS
from ...bands import S2_BANDS
from ...errors import StepError
from ...provenance import StepRecord, jsonable
from ..base import AuxLayer, AuxRequest, Scene, SceneSource, Skip, StepResult
from ..grids import offset_in
from .config import NbarConfig
from .kernels import COEFFICIENTS, COEFFICIENTS_SOURCE, kernels, valid_geometry

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]

ANGLES: Final = "angles"
"""The ``scene.aux`` entry of the per-pixel angles."""
ANGLE_REQUEST: Final = AuxRequest(ANGLE_BANDS, resolution=0.0, level="angles")
"""What the step asks the pipeline for: the angles on the scene's (or block's) grid, in the
order of :data:`stac2cube.angles.ANGLE_BANDS` (degrees; azimuths clockwise from north, the view
azimuth towards the sensor)."""
TALLY_AUX: Final = "nbar_c_factor"
"""The ``block.aux`` entry in which :meth:`NbarPlan.apply` leaves the c-factor applied to each
pixel (NaN: left as it was) for :meth:`NbarPlan.tally` (not written)."""
PROPERTY: Final = "stac2cube:nbar"
"""The item property the step sets: ``applied`` or ``not applied: <why>``."""


def target_sun_zenith(cfg: NbarConfig, props: Mapping[str, Any]) -> tuple[float | None, str]:
    """The sun zenith (degrees) the scene is normalised to, None for each pixel's own, and
    where it comes from (``config``, ``item:<property>`` or ``observed``, with why when
    ``scene`` was asked for and the item has no mean sun zenith)."""
    if isinstance(cfg.sun_zenith, float):
        return cfg.sun_zenith, "config"
    if cfg.sun_zenith == "observed":
        return None, "observed"
    for key in ("s2:mean_solar_zenith", "view:sun_elevation"):
        value = _number(props.get(key))
        if value is None:
            continue
        zenith = 90.0 - value if key == "view:sun_elevation" else value
        if 0.0 <= zenith < 90.0:
            return zenith, f"item:{key}"
    return None, "observed: the item has no s2:mean_solar_zenith or view:sun_elevation"


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _over(layer: AuxLayer, geobox: GeoBox, what: str) -> np.ndarray:
    """``layer``'s planes over ``geobox``, a window of its grid; a StepError otherwise."""
    try:
        r0, c0 = offset_in(layer.geobox, geobox)
    except ValueError as exc:
        raise StepError(f"steps.nbar: the {what} layer is not on the scene's grid: {exc}") from exc
    h, w = geobox.shape.yx
    data = np.asarray(layer.data)
    if r0 < 0 or c0 < 0 or r0 + h > data.shape[1] or c0 + w > data.shape[2]:
        raise StepError(f"steps.nbar: the {what} layer does not cover {geobox}")
    out: np.ndarray = data[:, r0 : r0 + h, c0 : c0 + w]
    return out


def c_factors(
    angles: AuxLayer,
    geobox: GeoBox,
    bands: Sequence[str],
    view_zenith: float,
    sun_zenith: float | None,
) -> F32:
    """``(len(bands), y, x)`` c-factors on ``geobox`` from the angle layer: NaN where the angles
    are unknown or unusable. ``sun_zenith`` is the target sun zenith (None: each pixel's
    own); the target relative azimuth is the observed one."""
    missing = [b for b in ANGLE_BANDS if b not in angles.bands]
    if missing:
        raise StepError(f"steps.nbar: the angle layer ({angles.source}) lacks {missing}")
    data = _over(angles, geobox, "angle")
    sz, saz, vz, vaz = (np.asarray(data[angles.bands.index(b)], np.float64) for b in ANGLE_BANDS)
    ok = valid_geometry(sz, vz, saz, vaz)
    out = np.full((len(bands), *geobox.shape.yx), np.nan, dtype=np.float32)
    if not ok.any():
        return out
    sz_o, raa = sz[ok], saz[ok] - vaz[ok]
    observed = kernels(sz_o, vz[ok], raa)
    target = kernels(sz_o if sun_zenith is None else sun_zenith, view_zenith, raa)
    for i, band in enumerate(bands):
        coef = COEFFICIENTS[band]
        with np.errstate(divide="ignore", invalid="ignore"):
            c = coef.reflectance(*target) / coef.reflectance(*observed)
        plane = out[i]
        plane[ok] = np.where(np.isfinite(c) & (c > 0.0), c, np.nan)
    return out


@dataclass
class _BandCounts:
    """What :meth:`NbarPlan.tally` adds up for one band."""

    pixels: int = 0
    """Pixels corrected."""
    left: int = 0
    """Pixels with data left as they were (no usable angles)."""
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def summary(self) -> dict[str, Any]:
        n = self.pixels
        return {
            "pixels": n,
            "pixels_left": self.left,
            "mean": round(self.total / n, 6) if n else None,
            "min": round(self.lo, 6) if n else None,
            "max": round(self.hi, 6) if n else None,
        }


@dataclass(eq=False)
class NbarPlan:
    """The NBAR step's plan (:class:`~stac2cube.steps.base.StepPlan`): a per-pixel correction,
    so each block is corrected alone (no halo) with the angles read onto its grid
    (``block_aux``). :meth:`NbarStep.run` is this plan applied to the whole scene as one
    block."""

    name: str
    version: str
    cfg: NbarConfig
    item_id: str
    bands: tuple[str, ...]
    """The bands corrected, in the order of :data:`~.kernels.COEFFICIENTS`."""
    left: dict[str, str]
    """Other reflectance bands of the scene, with why they are left as they are."""
    sun_zenith: float | None
    """Target sun zenith (None: each pixel's own)."""
    sun_zenith_from: str
    halo: int = 0
    block_aux: Mapping[str, AuxRequest] = field(default_factory=lambda: {ANGLES: ANGLE_REQUEST})
    skip: Skip | None = None
    counts: dict[str, _BandCounts] = field(default_factory=dict)
    pixels_without_angles: int = 0
    sources: list[str] = field(default_factory=list)
    """The angle layers' sources seen (one, unless blocks came from different sources)."""
    missing: str | None = None
    """Why the angles were missing from a block (the first reason seen)."""

    def apply(self, block: Scene) -> Scene:
        """``block`` with each band of :attr:`bands` it holds times its c-factor where the
        angles are known; the c-factors travel to :meth:`tally` in ``block.aux`` under
        :data:`TALLY_AUX`. Without angles the pixels are left as they are."""
        present = tuple(b for b in self.bands if b in block.bands)
        if not present:
            return block
        angles = block.aux.get(ANGLES)
        if angles is None:
            empty = np.empty((0, *block.geobox.shape.yx), dtype=np.float32)
            tally = AuxLayer(empty, block.geobox, (), source="")
            return block.replace(aux={**block.aux, TALLY_AUX: tally})
        factors = c_factors(angles, block.geobox, present, self.cfg.view_zenith, self.sun_zenith)
        bands = dict(block.bands)
        for i, band in enumerate(present):
            a = np.asarray(block.bands[band], dtype=np.float32)
            c = factors[i]
            c[~np.isfinite(a)] = np.nan
            bands[band] = np.where(np.isnan(c), a, a * c)
        tally = AuxLayer(factors, block.geobox, present, source=angles.source)
        return block.replace(bands=bands, aux={**block.aux, TALLY_AUX: tally})

    def apply_late(self, block: Scene) -> Scene:
        """Nothing to apply late."""
        return block

    def tally(self, block: Scene) -> None:
        """Add up, over the block's own pixels, the c-factors applied per band and the pixels
        left without angles."""
        present = tuple(b for b in self.bands if b in block.bands)
        if not present:
            return
        layer = block.aux.get(TALLY_AUX)
        if layer is None:
            raise StepError(
                f"{self.item_id}: the block has no {TALLY_AUX!r} in its aux: the driver must "
                "keep block.aux through the halo cut for the NBAR step's record"
            )
        factors = _over(layer, block.geobox, TALLY_AUX)
        if layer.source:
            if layer.source not in self.sources:
                self.sources.append(layer.source)
        elif self.missing is None:
            self.missing = block.missing_aux.get(ANGLES, "the pipeline provided none")
        left_any = np.zeros(block.geobox.shape.yx, dtype=bool)
        for band in present:
            counts = self.counts.setdefault(band, _BandCounts())
            has_data = np.isfinite(np.asarray(block.bands[band]))
            if band in layer.bands:
                c = factors[layer.bands.index(band)]
                done = np.isfinite(c)
            else:
                c, done = None, np.zeros_like(has_data)
            left = has_data & ~done
            left_any |= left
            counts.left += int(left.sum())
            n = int(done.sum())
            if c is not None and n:
                values = c[done]
                counts.pixels += n
                counts.total += float(values.sum(dtype=np.float64))
                counts.lo = min(counts.lo, float(values.min()))
                counts.hi = max(counts.hi, float(values.max()))
        self.pixels_without_angles += int(left_any.sum())

    def finish(self, shell: Scene) -> StepResult:
        """The record of the whole scene from the blocks' counts, and :data:`PROPERTY`."""
        applied = bool(self.bands) and bool(self.sources)
        results: dict[str, Any] = {"applied": applied}
        reason = None
        if not self.bands:
            reason = "no loaded band has c-factor coefficients (or is selected)"
        elif not self.sources:
            reason = f"no per-pixel angles: {self.missing or 'the pipeline provided none'}"
        if reason is not None:
            results["reason"] = reason
        results["angles_source"] = "; ".join(self.sources) or None
        results["target_view_zenith"] = self.cfg.view_zenith
        results["target_sun_zenith"] = (
            self.sun_zenith if self.sun_zenith is not None else ("observed")
        )
        results["target_sun_zenith_from"] = self.sun_zenith_from
        results["coefficients"] = COEFFICIENTS_SOURCE
        results["bands_corrected"] = list(self.bands) if applied else []
        left = dict(self.left)
        if not applied:
            left.update(dict.fromkeys(self.bands, "no per-pixel angles"))
        results["bands_left"] = left
        results["c_factor"] = (
            {b: self.counts.get(b, _BandCounts()).summary() for b in self.bands} if applied else {}
        )
        results["pixels_without_angles"] = self.pixels_without_angles
        status = "applied" if applied else f"not applied: {reason}"
        log.info("%s: NBAR %s", self.item_id, status)
        params = parameters(self.cfg)
        record = StepRecord(self.name, self.version, parameters=params, results=results)
        return StepResult(shell.replace(properties={**shell.properties, PROPERTY: status}), record)


def parameters(cfg: NbarConfig) -> dict[str, Any]:
    """The record's parameters: every field of ``cfg``, as JSON."""
    return {f.name: jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _reflectance(names: Sequence[str]) -> list[str]:
    """The reflectance bands among ``names``, in the order of the band catalogue."""
    wanted = set(names)
    return [b for b, info in S2_BANDS.items() if info.is_reflectance and b in wanted]


class NbarStep:
    """Nadir BRDF-adjusted reflectance by the c-factor method (see ``docs/nbar.md``)."""

    name = "nbar"
    version = "1.0.0"

    def prepare(self, cfg: NbarConfig) -> None:
        """Nothing to load: the coefficients are constants."""

    def required_aux(self, cfg: NbarConfig) -> Mapping[str, AuxRequest]:
        """The per-pixel sun and view angles on the scene's grid."""
        return {ANGLES: ANGLE_REQUEST}

    def in_blocks(self, cfg: NbarConfig) -> bool:
        """Every configuration runs in blocks: the correction is per pixel."""
        return True

    def plan(self, source: SceneSource, cfg: NbarConfig) -> NbarPlan:
        """The plan for ``source``'s bands: no scene-wide read (the target sun zenith comes
        from the item's properties, the angles are read per block)."""
        return self._plan(source.item_id, source.band_names, source.source_properties, cfg)

    def run(self, scene: Scene, cfg: NbarConfig) -> StepResult:
        """Correct ``scene``'s bands; pure (no I/O). Without angles (``scene.missing_aux``) the
        pixels are left as they are and the record says why."""
        plan = self._plan(scene.item_id, tuple(scene.bands), scene.source_properties, cfg)
        out = plan.apply(scene)
        plan.tally(out)
        return plan.finish(out.replace(aux={k: v for k, v in out.aux.items() if k != TALLY_AUX}))

    def _plan(
        self, item_id: str, names: Sequence[str], props: Mapping[str, Any], cfg: NbarConfig
    ) -> NbarPlan:
        reflectance = _reflectance(names)
        bands = tuple(b for b in COEFFICIENTS if b in reflectance and cfg.selects(b))
        left = {
            b: "no published c-factor coefficients"
            if b not in COEFFICIENTS
            else "not in steps.nbar.bands"
            for b in reflectance
            if b not in bands
        }
        sun, sun_from = target_sun_zenith(cfg, props)
        return NbarPlan(self.name, self.version, cfg, item_id, bands, left, sun, sun_from)
