"""The super-resolution step: SEN2SR over a scene's bands, written as ``<band>_sr`` layers.

:meth:`SuperResStep.prepare` loads the model the configuration names (:mod:`.loader`; the step's
only I/O, once per worker); :meth:`SuperResStep.run` is pure: it checks the input, hands the
model the 10 m bands and the 20 m bands from their own grid (:mod:`.inputs`), runs it in tiles
(:mod:`.tiling`), masks nodata again, measures (and, when asked, enforces) consistency with the
input (:mod:`.consistency`) and records what it did. What each part does and what it gives:
docs/superres.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...errors import StepError
from ...provenance import StepRecord, jsonable
from ..base import AuxRequest, GridLayer, Scene, StepResult
from ..registry import StepPlugin
from .checks import INPUT_RADIOMETRY, check_reflectance
from .config import SuperResConfig, layer_key
from .consistency import back_project, consistency_error
from .inputs import NATIVE_20M, NATIVE_RES, InputFrame, model_input, native_20m_request, reads_20m
from .loader import load_model, resolve_device
from .tiling import super_resolve, tile_bytes

if TYPE_CHECKING:
    from ...config import Config
    from .weights import LoadedModel

log = logging.getLogger(__name__)

BoolA = NDArray[np.bool_]
F32 = NDArray[np.float32]


def _grow(mask: BoolA, radius: int) -> BoolA:
    if radius <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk = (x * x + y * y) <= radius * radius
    out: BoolA = ndimage.binary_dilation(mask, structure=disk)
    return out


def _fine_geobox(gbox: GeoBox, scale: int) -> GeoBox:
    if scale == 1:
        return gbox
    h, w = gbox.shape.yx
    return gbox.zoom_to((h * scale, w * scale))


def _check_scene(scene: Scene, cfg: SuperResConfig) -> None:
    """The scene is on a 10 m grid and has the bands the model reads."""
    gbox = scene.geobox
    res = float(abs(gbox.resolution.x))
    if abs(res - 10.0) > 1e-6 or abs(float(abs(gbox.resolution.y)) - 10.0) > 1e-6:
        raise StepError(
            f"{scene.item_id}: SEN2SR models take 10 m pixels, but the scene grid has "
            f"{res:g} m; set the output resolution to 10 to use steps.superres"
        )
    need = cfg.input_bands
    missing = [b for b in need if b not in scene.bands]
    if missing:
        raise StepError(
            f"{scene.item_id}: the {cfg.model} super-resolution model needs bands "
            f"{', '.join(need)}; {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not loaded: add "
            f"{'it' if len(missing) == 1 else 'them'} to `bands`"
        )


def _fit_batch(scene: Scene, cfg: SuperResConfig, model: LoadedModel) -> int:
    """``batch_size``, lowered to fit ``max_memory_mb``: the output buffers and the input
    canvas, then as many tiles as fit; a StepError when not even one tile does."""
    if cfg.max_memory_mb is None:
        return cfg.batch_size
    d = model.definition
    h, w = scene.geobox.shape.yx
    s = d.scale
    out_bytes = len(d.output_bands) * h * w * s * s * 4 + h * w * s * s
    in_bytes = 2 * len(cfg.input_bands) * (h + cfg.tile_size) * (w + cfg.tile_size) * 4
    budget = cfg.max_memory_mb * 2**20 - out_bytes - in_bytes
    per_tile = tile_bytes(model, cfg.tile_size)
    if budget < per_tile:
        raise StepError(
            f"{scene.item_id}: the {h}x{w}-pixel scene needs about "
            f"{(out_bytes + in_bytes + per_tile) / 2**20:.0f} MiB for its "
            f"{len(d.output_bands)} output bands and one tile, more than "
            f"steps.superres.max_memory_mb ({cfg.max_memory_mb}); raise it, use a "
            "smaller tile_size or a smaller area"
        )
    return int(max(1, min(cfg.batch_size, budget // per_tile)))


def _model_key(cfg: SuperResConfig) -> tuple[Any, ...]:
    """The fields of ``cfg`` that decide which model :meth:`SuperResStep.prepare` loads."""
    return (
        cfg.model, cfg.variant, cfg.bundle, cfg.weights, cfg.architecture, cfg.hub_id,
        cfg.revision, cfg.cache_dir, cfg.allow_download, cfg.trust_remote_code, cfg.tile_size,
        cfg.device,
    )  # fmt: skip


@dataclass(frozen=True)
class _Prepared:
    """The model :meth:`SuperResStep.prepare` loaded, for the configurations with ``key``."""

    key: tuple[Any, ...]
    model: LoadedModel
    device: str


class SuperResStep:
    """Super-resolution with SEN2SR.

    :meth:`prepare` loads the model (cached per process); :meth:`run` uses it and does no I/O.
    A pickled step leaves its model behind: prepare it again where it is unpickled.
    """

    name = "superres"
    version = "2.0.0"

    def __init__(self) -> None:
        self._prepared: _Prepared | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self._prepared = None

    def required_aux(self, cfg: SuperResConfig) -> Mapping[str, AuxRequest]:
        """For the models that read the 20 m bands (``swir_x2``, ``full_x4``): those bands on
        their native 20 m grid (``scene.aux["superres_20m"]``, see :mod:`.inputs`); the 10 m
        bands come from ``scene.bands``."""
        return {NATIVE_20M: native_20m_request()} if reads_20m(cfg.model) else {}

    def prepare(self, cfg: SuperResConfig) -> None:
        """Load the model ``cfg`` names on the device it names (``auto``: CUDA when there is
        one), for :meth:`run`. StepError when there is none, or it cannot be loaded."""
        device = resolve_device(cfg.device)
        self._prepared = _Prepared(_model_key(cfg), load_model(cfg, device), device)

    def _model(self, scene: Scene, cfg: SuperResConfig) -> _Prepared:
        prepared = self._prepared
        if prepared is None:
            raise StepError(
                f"{scene.item_id}: SuperResStep.run needs the model that prepare(cfg) loads; "
                "call step.prepare(cfg) once (per worker) before run"
            )
        if prepared.key != _model_key(cfg):
            raise StepError(
                f"{scene.item_id}: SuperResStep was prepared for another model or device than "
                "this configuration names; call step.prepare(cfg) with it before run"
            )
        return prepared

    def run(
        self,
        scene: Scene,
        cfg: SuperResConfig,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> StepResult:
        """Super-resolve the bands of ``scene`` with the model :meth:`prepare` loaded."""
        prepared = self._model(scene, cfg)
        _check_scene(scene, cfg)
        gbox = scene.geobox
        res = float(abs(gbox.resolution.x))
        need = cfg.input_bands
        inputs = {b: np.asarray(scene.bands[b], dtype=np.float32) for b in need}
        results: dict[str, Any] = {}
        if cfg.check_inputs:
            results.update(check_reflectance(inputs, scene.item_id))

        model, device = prepared.model, prepared.device
        half = cfg.half and device == "cuda"
        if cfg.half and not half:
            log.warning("%s: steps.superres.half ignored on the CPU", scene.item_id)
        d = model.definition
        s = d.scale

        batch = _fit_batch(scene, cfg, model)
        stack, frame = model_input(scene, need, reads_20m(cfg.model))
        run = super_resolve(
            model, stack, tile_size=cfg.tile_size, overlap=cfg.overlap, batch_size=batch,
            half=half, progress=progress,
        )  # fmt: skip
        del stack
        run_batch, run_tiles, run_seconds = run.batch_size, run.tiles, run.seconds

        margin = d.receptive_radius() if cfg.nodata_margin is None else cfg.nodata_margin
        invalid = frame.crop(frame.invalid, 1)
        n_invalid = int(invalid.sum())
        if n_invalid:
            grown = _grow(frame.invalid, margin)
            fine = np.repeat(np.repeat(grown, s, axis=0), s, axis=1) if s > 1 else grown
            for a in run.bands.values():
                a[fine] = np.nan
            del fine

        fine_gbox = _fine_geobox(gbox, s)
        layers: dict[str, GridLayer] = dict(scene.layers)
        consistency: dict[str, float | None] = {}
        before: dict[str, float | None] = {}
        for band, arr in run.bands.items():
            lr = np.where(invalid, np.float32(np.nan), inputs[band]).astype(np.float32)
            if cfg.back_projection:
                before[band] = _consistency(arr, band, lr, frame, s)
                back_project(arr, *_back_projection_target(band, lr, frame, s))
            consistency[band] = _consistency(arr, band, lr, frame, s)
            out = frame.crop(arr, s)
            if out is not arr:
                out = np.ascontiguousarray(out)
            out_res = res / s
            layers[layer_key(band)] = GridLayer(
                data=out,
                geobox=fine_gbox,
                band=band,
                description=(
                    f"{band} surface reflectance super-resolved to {out_res:g} m by SEN2SR "
                    f"{d.variant} {d.kind} ({model.model_id})"
                ),
            )
        del run
        worst = max((v for v in consistency.values() if v is not None), default=None)
        h, w = gbox.shape.yx
        results.update(
            model_id=model.model_id,
            model=d.kind,
            variant=d.variant,
            model_source=model.source,
            weights_sha256=model.weights_sha256,
            weight_files=dict(model.weight_files),
            n_parameters=model.n_parameters,
            device=device,
            half=half,
            batch_size=run_batch,
            tiles=run_tiles,
            seconds=round(run_seconds, 3),
            input_radiometry=INPUT_RADIOMETRY,
            output_resolution_m=res / s,
            output_shape=[h * s, w * s],
            nodata_margin_px=margin,
            nodata_fraction=n_invalid / max(h * w, 1),
            back_projection=cfg.back_projection,
            consistency_rel_error=consistency,
            consistency_rel_error_max=worst,
        )
        if frame.native:
            aux = scene.aux[NATIVE_20M]
            results["inputs_20m"] = {
                "bands": list(frame.native),
                "grid_m": NATIVE_RES,
                "source": aux.source,
                "to_10m": "nearest (each 20 m pixel repeated 2 x 2)",
                "lead_px": list(frame.lead),
            }
        if cfg.back_projection:
            results["consistency_rel_error_before_back_projection"] = before
        log.info(
            "%s: super-resolved %d bands to %g m in %.1f s (%d tiles on %s; worst consistency "
            "error %s)",
            scene.item_id,
            len(consistency),
            res / s,
            run_seconds,
            run_tiles,
            device,
            worst,
        )
        params = {f.name: _recorded(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
        record = StepRecord(self.name, self.version, parameters=params, results=results)
        return StepResult(scene.replace(layers=layers), record)


_LOCAL_PATHS = ("bundle", "weights", "cache_dir")
"""Settings that name local files: the plug-in makes them absolute for the run."""


def _recorded(name: str, value: Any) -> Any:
    """A setting as the item records it: a local path by its name only (an item never carries a
    path of the machine that made it; the weights are identified by their sha256)."""
    if name in _LOCAL_PATHS and isinstance(value, str) and "://" not in value:
        return Path(value).name
    return jsonable(value)


def _consistency(sr: F32, band: str, lr: F32, frame: InputFrame, s: int) -> float | None:
    """:func:`consistency_error` of output band ``band`` (on ``frame``, ``s`` pixels per 10 m
    pixel) against its input, rounded: a 10 m band against ``lr`` (the scene's band, nodata NaN)
    over 10 m pixels, a 20 m band against its native 20 m pixels, over those inside the scene."""
    py, px = frame.lead
    if band in frame.native:
        native = frame.native[band][py:, px:]
        err = consistency_error(sr[2 * py * s :, 2 * px * s :], native, 2 * s)
    else:
        err = consistency_error(sr[py * s :, px * s :], lr, s)
    return None if err is None else round(err, 6)


def _back_projection_target(band: str, lr: F32, frame: InputFrame, s: int) -> tuple[F32, int]:
    """``(target, f)`` for :func:`back_project` of output band ``band`` on ``frame``: a 20 m band
    to its native 20 m pixels (``f = 2 s``), a 10 m band to ``lr`` (``f = s``)."""
    if band in frame.native:
        return frame.native[band], 2 * s
    py, px = frame.lead
    if py or px:
        lr = np.pad(lr, ((py, 0), (px, 0)), constant_values=np.nan)
    return lr, s


def _for_run(cfg: SuperResConfig, config: Config) -> tuple[SuperResStep, SuperResConfig]:
    """The step, with the local paths of ``cfg`` made absolute against the config file."""

    def local(p: str | None) -> str | None:
        return p if p is None or "://" in p else str(config.resolve_path(p))

    resolved = dataclasses.replace(
        cfg, bundle=local(cfg.bundle), weights=local(cfg.weights), cache_dir=local(cfg.cache_dir)
    )
    return SuperResStep(), resolved


PLUGIN: StepPlugin[SuperResConfig] = StepPlugin(
    name="superres",
    config=SuperResConfig,
    factory=_for_run,
    order=30,
    doc=(
        "Super-resolution with SEN2SR to 2.5 m (see docs/superres.md): adds `<band>_sr` assets "
        "on a 4x finer grid beside the 10 m bands (`swir_x2`: its 20 m bands sharpened on the "
        "10 m grid)."
    ),
)
"""The step's plug-in (entry point ``superres`` of the ``stac2cube.steps`` group)."""

__all__ = ["PLUGIN", "SuperResStep"]
