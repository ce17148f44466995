"""s2cloudless: whether it runs on a scene and on what (the L1C twin; L2A bands only with
``l1c: never``), the model's cloud probability, and its post-processing on the output grid with
sizes in metres (mean over a disk, threshold, dilation), which the optional cirrus test
(:mod:`.cirrus`) joins."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from ...bands import PROB_NODATA
from ...errors import StepError
from ..base import AuxLayer, LayerInfo, Scene
from .cirrus import cirrus_mask
from .config import CloudMaskConfig
from .layers import THRESHOLD_LAYER_NODATA, threshold_layer_name
from .raster import dilate, disk_mean, radius_px, upsample_bilinear

log = logging.getLogger(__name__)

S2CLOUDLESS_BANDS: Final = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
"""The ten L1C bands the s2cloudless model takes, in its order."""
S2CLOUDLESS_MODEL: Final = "pixel_s2_cloud_detector_lightGBM_v0.1"
"""The model shipped with the s2cloudless package and used here."""
B10_FALLBACK_REFLECTANCE: Final = 0.002
"""TOA reflectance put in place of a missing B10 (s2cloudless on L2A, ``l1c: never``): a
clear-sky value (the 1375 nm band sees the surface through ~1-2 % transmittance; Sen2Cor flags
thin cirrus from 0.012)."""

_B10 = S2CLOUDLESS_BANDS.index("B10")
_B08 = S2CLOUDLESS_BANDS.index("B08")

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]
BoolA = NDArray[np.bool_]


def s2cloudless_mask(
    prob: F32,
    valid: BoolA,
    pixel_m: float,
    threshold: float = 0.4,
    average_over_m: float = 40.0,
    dilation_m: float = 20.0,
) -> BoolA:
    """The s2cloudless post-processing of a cloud probability field, with sizes in metres.

    The mean of ``prob`` over a disk of radius ``round(average_over_m / pixel_m)`` pixels,
    ``> threshold``, dilated by a disk of radius ``round(dilation_m / pixel_m)`` pixels; False
    where ``valid`` is False or ``prob`` is NaN. Invalid pixels are left out of the mean
    (normalised convolution); edges are mirrored as OpenCV's ``BORDER_REFLECT`` does; the disks
    are s2cloudless' own. On a fully valid field this is
    ``S2PixelCloudDetector(threshold, average_over=r_avg, dilation_size=r_dil).get_mask_from_prob``
    (at 10 m with the defaults: 4 and 2 pixels), up to float rounding of the mean (< 1e-6).
    """
    ok = valid & np.isfinite(prob)
    avg = disk_mean(prob, ok, radius_px(average_over_m, pixel_m))
    m = np.greater(avg, threshold, where=ok, out=np.zeros(prob.shape, dtype=bool))
    out: BoolA = dilate(m, radius_px(dilation_m, pixel_m)) & ok
    return out


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    try:
        from s2cloudless.cloud_detector import S2PixelCloudDetector
    except ImportError as exc:
        raise StepError(
            "the cloudmask step needs the s2cloudless package for methods s2cloudless, union and "
            "intersection: pip install 'stac2cube[cloud]' (or use steps.cloudmask.method: scl)"
        ) from exc
    return S2PixelCloudDetector(all_bands=False, average_over=None, dilation_size=None)


def s2cloudless_version() -> str:
    """Version of the installed s2cloudless package (``unknown`` when it is missing)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("s2cloudless")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def b10_handling(n: int, n_filled: int) -> str:
    """How B10 was handled over ``n`` pixels with a probability, ``n_filled`` of which had no
    B10 (set to :data:`B10_FALLBACK_REFLECTANCE`)."""
    if n_filled == 0:
        return "l1c"
    if n_filled == n:
        return f"constant {B10_FALLBACK_REFLECTANCE} (no B10 in the input: cirrus not seen)"
    return (
        f"l1c; constant {B10_FALLBACK_REFLECTANCE} where B10 was nodata "
        f"({100.0 * n_filled / max(n, 1):.1f} % of pixels)"
    )


def cloud_probability(toa: F32) -> tuple[F32, str]:
    """s2cloudless probability (0-1, NaN nodata) of ``toa`` ``(10, y, x)`` TOA reflectance in
    the order of :data:`S2CLOUDLESS_BANDS`, and how B10 was handled.

    A pixel is nodata where any band other than B10 is NaN. Where B10 is NaN but the others are
    not (s2cloudless on L2A bands, ``l1c: never``), B10 is set to
    :data:`B10_FALLBACK_REFLECTANCE`.
    """
    if toa.ndim != 3 or toa.shape[0] != len(S2CLOUDLESS_BANDS):
        raise StepError(
            f"the TOA layer has shape {toa.shape}; expected ({len(S2CLOUDLESS_BANDS)}, y, x) "
            f"with bands {', '.join(S2CLOUDLESS_BANDS)}"
        )
    others = [i for i in range(toa.shape[0]) if i != _B10]
    valid = np.logical_and.reduce([np.isfinite(toa[i]) for i in others])
    prob = np.full(toa.shape[1:], np.nan, dtype=np.float32)
    n = int(valid.sum())
    b10_ok = np.isfinite(toa[_B10]) & valid
    how = b10_handling(n, n - int(b10_ok.sum()))
    if n == 0:
        return prob, how
    px = toa[:, valid].T.astype(np.float32)  # (n, 10)
    px[:, _B10] = np.where(np.isfinite(px[:, _B10]), px[:, _B10], B10_FALLBACK_REFLECTANCE)
    p = _detector().get_cloud_probability_maps(px[None, :, None, :])
    prob[valid] = p.reshape(-1)
    return prob, how


@dataclass(frozen=True)
class S2cloudlessInput:
    """Whether s2cloudless runs on a scene, on what, and if not, why."""

    status: Literal["run", "not run", "not used"]
    toa: AuxLayer | None = None
    """The TOA layer it runs on (None when it does not run)."""
    input: str = ""
    """``l1c`` or ``l2a surface reflectance`` (``l1c: never``)."""
    reason: str = ""
    """Why it does not run: ``no L1C twin``, ``L1C read refused: ...``, ``method: scl``."""

    def record(self) -> dict[str, str]:
        """The ``s2cloudless`` entry of the step's results."""
        out: dict[str, str] = {"status": self.status}
        if self.input:
            out["input"] = self.input
        if self.reason:
            out["reason"] = self.reason
        return out


def s2cloudless_input(scene: Scene, cfg: CloudMaskConfig, has_scl: bool) -> S2cloudlessInput:
    """Decide whether s2cloudless runs: on the L1C twin; on the L2A bands only with
    ``l1c: never``; otherwise not at all, and SCL (plus the temporal test) masks the scene."""
    if not cfg.uses_s2cloudless:
        return S2cloudlessInput("not used", reason=f"method: {cfg.method}")
    toa = scene.aux.get("toa")
    if cfg.l1c == "never":
        if toa is None:
            raise StepError(
                f"{scene.item_id}: the cloudmask step got no TOA layer (scene.aux['toa']); "
                "the pipeline must read what CloudMaskStep.required_aux asks for"
            )
        log.info(
            "%s: s2cloudless runs on L2A surface reflectance (steps.cloudmask.l1c: never), "
            "outside what it was trained on",
            scene.item_id,
        )
        return S2cloudlessInput("run", toa, "l2a surface reflectance (l1c: never)")
    if toa is not None and toa.source.startswith("l1c:"):
        return S2cloudlessInput("run", toa, "l1c")
    why = scene.missing_aux.get("toa") or (
        "no L1C twin" if toa is None else f"no L1C twin (TOA layer from {toa.source})"
    )
    if cfg.l1c == "require":
        raise StepError(
            f"{scene.item_id}: steps.cloudmask.l1c is 'require' but s2cloudless has no L1C "
            f"input: {why}. Check source.l1c_collection / source.l1c_path and access to the "
            "L1C assets, or set l1c: auto to mask such scenes with SCL"
        )
    if not has_scl:
        raise StepError(
            f"{scene.item_id}: s2cloudless cannot run ({why}) and the L2A method that "
            "replaces it needs the SCL layer: add SCL to `bands`, provide readable L1C twins, "
            "or set steps.cloudmask.l1c: never to run s2cloudless on L2A surface reflectance"
        )
    log.info("%s: s2cloudless not run (%s); clouds from SCL", scene.item_id, why)
    return S2cloudlessInput("not run", reason=why)


@dataclass(frozen=True)
class S2cloudlessLayers:
    """What s2cloudless gives a scene, on the scene's grid."""

    cloud: BoolA
    """Cloud at ``threshold`` after the post-processing (plus cirrus with ``cirrus_threshold``)."""
    valid: BoolA
    """Where the probability has a value."""
    toa_nir: F32
    """TOA B08 upsampled bilinearly: the NIR of the geometric shadow search when the scene has
    no L2A NIR band."""
    layers: dict[str, tuple[U8, LayerInfo]]
    """``CLOUD_PROB`` and one ``CLOUD_Txxx`` per extra threshold, with their layer info."""


def s2cloudless_layers(
    scene: Scene, cfg: CloudMaskConfig, toa: AuxLayer, valid: BoolA, results: dict[str, Any]
) -> S2cloudlessLayers:
    """s2cloudless on ``toa``, its probability upsampled bilinearly onto the scene's grid and
    post-processed there (:func:`s2cloudless_mask`); pixels outside ``valid`` have no value.
    What it ran on and found goes into ``results``."""
    gbox = scene.geobox
    pixel = float(abs(gbox.resolution.x))
    if tuple(toa.bands) != S2CLOUDLESS_BANDS:
        raise StepError(
            f"{scene.item_id}: the TOA layer has bands {toa.bands}, expected {S2CLOUDLESS_BANDS}"
        )
    prob, b10 = cloud_probability(np.asarray(toa.data, dtype=np.float32))
    results["toa_source"] = toa.source
    results["b10_handling"] = b10
    results["probability_resolution_m"] = float(abs(toa.geobox.resolution.x))
    results["model"] = f"s2cloudless {s2cloudless_version()} {S2CLOUDLESS_MODEL}"
    prob_up = upsample_bilinear(prob, toa.geobox, gbox)
    prob_ok = np.isfinite(prob_up) & valid
    res = float(results["probability_resolution_m"])
    infos = probability_layer_infos(cfg, res, toa.source)
    prob_u8, cloud, extra = probability_products(prob_up, prob_ok, pixel, cfg)
    b10_toa = np.asarray(toa.data[_B10], np.float32)
    if cfg.cirrus_threshold is not None and np.isfinite(b10_toa).any():
        b10_up = upsample_bilinear(b10_toa, toa.geobox, gbox)
        r_dil = radius_px(cfg.dilation_size, pixel)
        cloud = cloud | cirrus_mask(scene, b10_up, prob_ok, cfg.cirrus_threshold, r_dil, results)
    layers: dict[str, tuple[U8, LayerInfo]] = {"CLOUD_PROB": (prob_u8, infos["CLOUD_PROB"])}
    layers.update({name: (layer, infos[name]) for name, layer in extra.items()})
    toa_nir = upsample_bilinear(np.asarray(toa.data[_B08], np.float32), toa.geobox, gbox)
    return S2cloudlessLayers(cloud, prob_ok, toa_nir, layers)


def probability_layer_infos(
    cfg: CloudMaskConfig, resolution_m: float, source: str
) -> dict[str, LayerInfo]:
    """How ``CLOUD_PROB`` (computed at ``resolution_m`` from the TOA of ``source``) and the
    ``CLOUD_Txxx`` layers of ``cfg.thresholds`` are written."""
    infos = {
        "CLOUD_PROB": LayerInfo(
            nodata=PROB_NODATA,
            classes={PROB_NODATA: "no_data"},  # 0-100 are percentages, not classes
            overview_resampling="average",
            description=(
                f"s2cloudless cloud probability (%), {S2CLOUDLESS_MODEL}, computed at "
                f"{resolution_m:g} m from {source} and upsampled bilinearly"
            ),
        )
    }
    for t in cfg.thresholds:
        infos[threshold_layer_name(t)] = LayerInfo(
            nodata=THRESHOLD_LAYER_NODATA,
            classes={0: "clear", 1: "cloud"},
            description=f"s2cloudless cloud mask at threshold {t:g}",
        )
    return infos


def probability_products(
    prob_up: F32, prob_ok: BoolA, pixel: float, cfg: CloudMaskConfig
) -> tuple[U8, BoolA, dict[str, U8]]:
    """From the probability on the output grid (``prob_up``, valid where ``prob_ok``; pixels
    of ``pixel`` m): the ``CLOUD_PROB`` layer (percent), the s2cloudless clouds at
    ``cfg.threshold`` (:func:`s2cloudless_mask`, without the cirrus test) and the
    ``CLOUD_Txxx`` layers of ``cfg.thresholds``."""
    shape = prob_up.shape
    prob_u8 = np.full(shape, PROB_NODATA, dtype=np.uint8)
    prob_u8[prob_ok] = np.rint(np.clip(prob_up[prob_ok], 0.0, 1.0) * 100).astype(np.uint8)
    s2c_mask = functools.partial(
        s2cloudless_mask,
        prob_up,
        prob_ok,
        pixel,
        average_over_m=cfg.average_over,
        dilation_m=cfg.dilation_size,
    )
    extra: dict[str, U8] = {}
    for t in cfg.thresholds:
        layer = np.full(shape, THRESHOLD_LAYER_NODATA, dtype=np.uint8)
        layer[prob_ok] = s2c_mask(t)[prob_ok]
        extra[threshold_layer_name(t)] = layer
    return prob_u8, s2c_mask(cfg.threshold), extra
