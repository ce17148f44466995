"""The quality step: the per-pixel quality layers of CEOS-ARD, written beside the bands.

It runs last, on the pixels as the other steps left them (cloud masks co-registered with the
bands), whole or block by block; it changes no reflectance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ...angles import ANGLE_BANDS
from ...bands import CLOUD_TESTS_PROPERTY
from ...provenance import StepRecord, jsonable
from ..base import AuxRequest, LayerInfo, Scene, SceneSource, Skip, StepPlan, StepResult
from .config import QualityConfig
from .layers import Counts, band_order, layer_infos, quality_layers

log = logging.getLogger(__name__)

ANGLES: Final = "angles"
"""The name of the per-pixel angles input (``scene.aux``)."""


def _parameters(cfg: QualityConfig) -> dict[str, Any]:
    return {
        "angles": cfg.angles,
        "saturation_dn": cfg.saturation_dn,
        "low_sun_zenith": cfg.low_sun_zenith,
    }


def _angles_of(scene: Scene) -> np.ndarray | None:
    layer = scene.aux.get(ANGLES)
    if layer is None:
        return None
    data: np.ndarray = np.asarray(layer.data, dtype=np.float32)
    return data


def _source_name(scene: Scene) -> str:
    return f"source item {scene.item_id}"


@dataclass
class _Tally:
    """What the record needs, added up (whole scene: one block)."""

    counts: Counts = field(default_factory=Counts)
    layers: set[str] = field(default_factory=set)


def _results(
    scene: Scene, tally: _Tally, bands: tuple[str, ...], angles_source: str | None, why: str
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "layers": sorted(tally.layers),
        "saturation_bands": list(bands),
        "fractions": tally.counts.fractions(),
        "cloud_tests": dict(scene.properties.get(CLOUD_TESTS_PROPERTY, {})),
        "angles": angles_source if angles_source is not None else f"not available: {why}",
    }
    if "CLOUD" not in tally.layers:
        results["cloud"] = "not assessed: no cloud step"
    if "SNOW_ICE" not in tally.layers:
        results["snow_ice_land_water"] = "not assessed: SCL is not in `bands`"
    return results


class QualityStep:
    """Writes ``QA`` (bit-packed), ``CLOUD``, ``CLOUD_SHADOW``, ``SATURATION``,
    ``INCOMPLETE_TESTING``, ``SNOW_ICE``, ``LAND_WATER`` and, with ``angles``, the per-pixel
    sun and view angles."""

    name = "quality"
    version = "1.0.0"

    def prepare(self, cfg: QualityConfig) -> None:
        """Nothing to load."""

    def required_aux(self, cfg: QualityConfig) -> Mapping[str, AuxRequest]:
        """The per-pixel angles on the scene's grid (low sun, optional angle layers)."""
        return {ANGLES: AuxRequest(bands=ANGLE_BANDS, resolution=0.0, level="angles")}

    def run(self, scene: Scene, cfg: QualityConfig) -> StepResult:
        """The quality layers of ``scene``; pure."""
        bands = band_order(scene)
        angles = _angles_of(scene)
        layers = quality_layers(
            scene,
            bands,
            saturation_dn=cfg.saturation_dn,
            low_sun_zenith=cfg.low_sun_zenith,
            angles=angles,
            write_angles=cfg.angles,
        )
        tally = _Tally()
        tally.counts.add(layers["QA"])
        tally.layers.update(layers)
        infos = _infos(scene, bands, cfg, angles is not None)
        source = scene.aux[ANGLES].source if angles is not None else None
        results = _results(scene, tally, bands, source, scene.missing_aux.get(ANGLES, ""))
        record = StepRecord(self.name, self.version, _parameters(cfg), jsonable(results))
        new = scene.replace(
            classes={**scene.classes, **layers},
            layer_info={**scene.layer_info, **{k: infos[k] for k in layers}},
        )
        return StepResult(new, record)

    def in_blocks(self, cfg: QualityConfig) -> bool:
        """Always: every layer is a function of the pixel alone."""
        return True

    def plan(self, source: SceneSource, cfg: QualityConfig) -> StepPlan:
        """Nothing scene-wide to analyse: the plan computes each block's layers."""
        return QualityPlan(self, cfg, source.item_id)


@dataclass
class QualityPlan:
    """The quality step block by block: layers in :meth:`apply_late` (after the cloud step's
    deferred test), counts in :meth:`tally`."""

    step: QualityStep
    cfg: QualityConfig
    item_id: str
    halo: int = 0
    skip: Skip | None = None
    block_aux: Mapping[str, AuxRequest] = field(default_factory=dict)
    tallied: _Tally = field(default_factory=_Tally)
    bands: tuple[str, ...] = ()
    angles_source: str | None = None
    missing: str = ""
    infos: dict[str, LayerInfo] = field(default_factory=dict)
    tests: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.block_aux = dict(self.step.required_aux(self.cfg))

    def apply(self, block: Scene) -> Scene:
        return block

    def apply_late(self, block: Scene) -> Scene:
        self.bands = self.bands or band_order(block)
        angles = _angles_of(block)
        if angles is not None:
            self.angles_source = block.aux[ANGLES].source
        else:
            self.missing = block.missing_aux.get(ANGLES, self.missing)
        layers = quality_layers(
            block,
            self.bands,
            saturation_dn=self.cfg.saturation_dn,
            low_sun_zenith=self.cfg.low_sun_zenith,
            angles=angles,
            write_angles=self.cfg.angles,
        )
        infos = _infos(block, self.bands, self.cfg, angles is not None)
        self.infos.update({k: infos[k] for k in layers})
        self.tests = dict(block.properties.get(CLOUD_TESTS_PROPERTY, self.tests))
        return block.replace(
            classes={**block.classes, **layers},
            layer_info={**block.layer_info, **{k: infos[k] for k in layers}},
        )

    def tally(self, block: Scene) -> None:
        self.tallied.counts.add(np.asarray(block.classes["QA"]))
        self.tallied.layers.update(k for k in self.infos if k in block.classes)

    def finish(self, shell: Scene) -> StepResult:
        props = {**shell.properties}
        if self.tests:
            props.setdefault(CLOUD_TESTS_PROPERTY, self.tests)
        view = shell.replace(properties=props)
        results = _results(view, self.tallied, self.bands, self.angles_source, self.missing)
        record = StepRecord(self.step.name, self.step.version, _parameters(self.cfg), results)
        new = shell.replace(layer_info={**shell.layer_info, **self.infos})
        return StepResult(new, record)


def _infos(
    scene: Scene, bands: tuple[str, ...], cfg: QualityConfig, angles: bool
) -> dict[str, LayerInfo]:
    return layer_infos(
        bands,
        _source_name(scene),
        angles=cfg.angles and angles,
        cloud="CLOUD_MASK" in scene.classes,
        scl="SCL" in scene.classes,
    )
