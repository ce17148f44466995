"""Super-resolution of Sentinel-2 bands with SEN2SR (to 2.5 m), tiled over any rectangle.

What the step does, per scene
-----------------------------
1. **Model** (:mod:`stac2cube.steps.superres_models`): one of three released SEN2SR models,
   ``model`` = ``rgbn_x4`` (B04 B03 B02 B08, 10 m → 2.5 m), ``swir_x2`` (B05 B06 B07 B8A B11 B12,
   20 m → 10 m, taking all ten bands) or ``full_x4`` (the ten bands to 2.5 m: RGBN x4, the 20 m
   bands to 10 m, then fused to 2.5 m), in the ``lite`` (CNN) or ``swin``/``mamba`` variant. It is
   built from sen2sr's own classes and loaded from a local mlstac/STAC-MLM ``bundle`` folder, a
   ``weights`` file, or the Hugging Face cache (``hub_id``; downloaded only with
   ``allow_download``). Python code shipped with a bundle runs only with ``trust_remote_code``.
   A loaded model is cached per process.
2. **Inputs**: the bands come from ``scene.bands`` (float32 surface reflectance, NaN = nodata) on
   the scene's 10 m grid (20 m bands already resampled to it by the pipeline), harmonised
   (``DN / 10000`` after the processing-baseline offset). A scene that looks like raw digital
   numbers (99th percentile > :data:`DN_LIMIT`) or like reflectance with the baseline-04.00 offset
   removed twice (1st percentile < :data:`DOUBLE_OFFSET_LIMIT`) is refused; one whose darkest
   band never goes below :data:`OFFSET_LEFT_IN_LIMIT` (the +0.1 offset left in, or a scene that is
   all cloud or snow) is logged and flagged in the results. ``check_inputs: false`` skips this.
3. **Nodata** is set to 0 before inference (as sen2sr's examples do) and re-applied afterwards:
   a pixel is nodata in every output band when any input band is, grown by ``nodata_margin``
   pixels at 10 m (default: the model's receptive radius, 23 px = 230 m for the Lite x4 model,
   because every output pixel within it may have seen the zero fill), upsampled to the output grid.
4. **Tiling**: the scene is mirrored by ``overlap / 2`` pixels at its edges and cut into
   ``tile_size`` tiles that overlap by ``overlap`` pixels on a regular grid (padded at the far
   edges, so a scene smaller than a tile is one padded tile). In each overlap the outer quarter of
   each tile is discarded (tile edges suffer from zero padding and the circular FFT of the hard
   constraint) and the middle half is cross-faded with a raised-cosine ramp; the weights of the
   tiles covering a pixel sum to exactly 1, so tiles are added straight into the output.
   Tiles run in batches (``batch_size``, lowered to fit ``max_memory_mb``) on ``device`` (fp16
   autocast with ``half`` on CUDA; the hard constraint always in fp32). Each output band has its
   own buffer, filled tile by tile: the 2.5 m stack is never held twice.
5. **Output**: one :class:`~stac2cube.steps.base.GridLayer` per output band in ``scene.layers``,
   keyed ``"<band>_sr"`` (e.g. ``B04_sr``), float32 reflectance with NaN nodata, on the scene's
   geobox refined 4x (same extent; 2.5 m for a 10 m scene) or, for ``swir_x2``, on the scene's own
   10 m geobox. The record states the model (id, variant, weights SHA-256, source), the device
   used, the number of tiles, the time, and per band the *consistency error*: the output averaged
   back over each input pixel (and 20 m bands over 20 m blocks) against the input, mean absolute
   difference over mean absolute input, on valid pixels.

6. **Back-projection** (``back_projection``, on by default): the models' hard constraint takes
   the low frequencies from the bicubic-upsampled input, which under block averaging gives the
   input back only to 1-4 % on textured scenes (bicubic upsampling alone: 1-2 %). The step then
   corrects each band so that its block means equal the input (:func:`back_project`: three
   bicubic passes of the residual, then one per block), and records the error before and after.

``benchmarks/superres.py`` measures what the step costs and the consistency with and without
back-projection.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ..errors import ConfigError, StepError
from ..fields import doc
from ..provenance import StepRecord
from .base import AuxRequest, GridLayer, Scene, StepResult

if TYPE_CHECKING:
    from .superres_models import LoadedModel

log = logging.getLogger(__name__)

ModelKind = Literal["rgbn_x4", "swir_x2", "full_x4"]
Variant = Literal["lite", "swin", "mamba"]
Device = Literal["auto", "cpu", "cuda"]

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]

LAYER_SUFFIX: Final = "_sr"
"""Asset key of an output band: ``f"{band}{LAYER_SUFFIX}"`` (``B04_sr``)."""
DN_LIMIT: Final = 2.0
"""Reflectance above which (99th percentile of a band) the input is taken for raw DN."""
DOUBLE_OFFSET_LIMIT: Final = -0.05
"""1st percentile of a band below which the -0.1 baseline offset was applied twice."""
OFFSET_LEFT_IN_LIMIT: Final = 0.1
"""1st percentile that even the darkest band exceeds when the +0.1 offset was left in."""
INPUT_BANDS: Final[Mapping[str, tuple[str, ...]]] = {
    "rgbn_x4": ("B04", "B03", "B02", "B08"),
    "swir_x2": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    "full_x4": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
}
"""The ``scene.bands`` each model reads, in the model's order."""
_NATIVE_20M: Final = frozenset({"B05", "B06", "B07", "B8A", "B11", "B12"})
_ARCHS: Final = ("CNNSR", "Swin2SR", "MambaSR")
_ARCH_OF: Final = {"lite": "CNNSR", "swin": "Swin2SR", "mamba": "MambaSR"}


@dataclass(frozen=True)
class SuperResConfig:
    """Super-resolution with SEN2SR (``steps.superres``)."""

    model: ModelKind = doc(
        "Which SEN2SR model: `rgbn_x4` (B04 B03 B02 B08, 10 m → 2.5 m), `swir_x2` (the 20 m "
        "bands B05 B06 B07 B8A B11 B12 → 10 m, using all ten bands) or `full_x4` (the ten "
        "10 m and 20 m bands → 2.5 m). The bands it reads must be in `bands`.",
        "rgbn_x4",
    )
    variant: Variant = doc(
        "Network family: `lite` (the SEN2SR-Lite CNN, CPU-friendly), `swin` (Swin2SR) or "
        "`mamba` (MambaSR; both need `timm`, Mamba also `mamba-ssm` and CUDA).",
        "lite",
    )
    bundle: str | None = doc(
        "Local folder of an mlstac / STAC-MLM model bundle (an `mlm.json` and safetensors "
        "weights, e.g. what `mlstac.download` writes for tacofoundation/sen2sr "
        "`SEN2SRLite/NonReference_RGBN_x4`). Exactly one of `bundle`, `weights`, `hub_id`.",
        None,
    )
    weights: str | None = doc(
        "A single safetensors file holding the whole model (as "
        "`superres_models.save_weights` writes it); needs `architecture`.",
        None,
    )
    architecture: str | None = doc(
        "The network class of `weights`: `CNNSR` (lite), `Swin2SR` (swin) or `MambaSR` (mamba).",
        None,
    )
    hub_id: str | None = doc(
        "Hugging Face repository of the released bundles, e.g. `tacofoundation/sen2sr`; the "
        "folder for `model`/`variant` is looked up in `cache_dir` and downloaded there only "
        "with `allow_download` (needs huggingface_hub). Only `mlm.json` and weights are fetched.",
        None,
    )
    revision: str | None = doc(
        "Git revision (commit) of `hub_id` to use; pin it for reproducible catalogs.", None
    )
    cache_dir: str | None = doc(
        "Cache folder for `hub_id` downloads (None: the huggingface_hub default).", None
    )
    allow_download: bool = doc(
        "Allow fetching `hub_id` from the network when it is not in `cache_dir`.", False
    )
    trust_remote_code: bool = doc(
        "Run the `load.py` shipped in a bundle to build the model, where the bundle does not "
        "describe its architecture itself (the released Swin/Mamba bundles). Off: stac2cube "
        "builds the network from sen2sr's classes and loads tensors only.",
        False,
    )
    tile_size: int = doc(
        "Input tile side in 10 m pixels (multiple of 16, 32-1024). The released models and "
        "their hard-constraint masks are made for 128; other sizes resample the mask.",
        128,
    )
    overlap: int = doc(
        "Overlap of neighbouring tiles in 10 m pixels (multiple of 4, at most half a tile); "
        "its outer quarters are discarded and its middle half cross-faded.",
        32,
    )
    batch_size: int = doc("Tiles per model call (lowered to fit `max_memory_mb`).", 8)
    device: Device = doc(
        "`auto` (CUDA when available, else CPU), `cpu` or `cuda` (fails without a GPU).", "auto"
    )
    half: bool = doc(
        "Run the networks in float16 autocast on CUDA (the hard constraint stays float32); "
        "ignored, with a warning, when the step runs on the CPU.",
        False,
    )
    max_memory_mb: int | None = doc(
        "Bound (MiB, estimated) on the step's working memory: the output buffers plus one "
        "batch of tiles. The batch is made smaller to fit; a scene whose output alone does not "
        "fit is refused. None: no bound.",
        None,
    )
    nodata_margin: int | None = doc(
        "Pixels (10 m) by which nodata is grown before it is re-applied to the output. None: "
        "the model's receptive radius (23 for the Lite x4 model).",
        None,
    )
    back_projection: bool = doc(
        "After the network, correct each output band so that its block means equal the input "
        "(4x4 output pixels per 10 m pixel; 20 m bands over 20 m blocks): the residual is "
        "upsampled bicubically and added three times, then once per block. SEN2SR's hard "
        "constraint keeps the low frequencies of the bicubic-upsampled input, which is not the "
        "same as the block mean (about 1-4 % off on textured scenes); with this the 2.5 m bands "
        "aggregate back to the 10 m reflectance. Off: the network's output as it is.",
        True,
    )
    check_inputs: bool = doc(
        "Refuse inputs that look like raw DN or doubly offset reflectance (see the module "
        "docs); flag a likely left-in +0.1 offset.",
        True,
    )

    def __post_init__(self) -> None:
        k = "steps.superres"
        if self.model not in INPUT_BANDS:
            raise ConfigError(f"{k}.model {self.model!r} is not one of rgbn_x4, swir_x2, full_x4")
        if self.variant not in _ARCH_OF:
            raise ConfigError(f"{k}.variant {self.variant!r} is not one of lite, swin, mamba")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"{k}.device {self.device!r} is not one of auto, cpu, cuda")
        sources = [n for n in ("bundle", "weights", "hub_id") if getattr(self, n) is not None]
        if len(sources) > 1:
            raise ConfigError(
                f"{k}: set only one of bundle, weights and hub_id (got {', '.join(sources)})"
            )
        if (self.weights is None) != (self.architecture is None):
            raise ConfigError(f"{k}: weights and architecture go together; set both or neither")
        if self.architecture is not None:
            if self.architecture not in _ARCHS:
                raise ConfigError(
                    f"{k}.architecture {self.architecture!r} is not one of {', '.join(_ARCHS)}"
                )
            if self.architecture != _ARCH_OF[self.variant]:
                raise ConfigError(
                    f"{k}.architecture {self.architecture} does not match variant "
                    f"{self.variant!r} ({_ARCH_OF[self.variant]}); set both consistently"
                )
        if self.allow_download and self.hub_id is None:
            raise ConfigError(f"{k}.allow_download needs hub_id (what to download)")
        if (self.revision is not None or self.cache_dir is not None) and self.hub_id is None:
            raise ConfigError(f"{k}.revision / cache_dir apply to hub_id, which is not set")
        if not (32 <= self.tile_size <= 1024 and self.tile_size % 16 == 0):
            raise ConfigError(
                f"{k}.tile_size must be a multiple of 16 between 32 and 1024 (10 m pixels), "
                f"got {self.tile_size}"
            )
        if not (0 <= self.overlap <= self.tile_size // 2 and self.overlap % 4 == 0):
            raise ConfigError(
                f"{k}.overlap must be a multiple of 4 between 0 and tile_size / 2 "
                f"({self.tile_size // 2}), got {self.overlap}"
            )
        if not 1 <= self.batch_size <= 1024:
            raise ConfigError(f"{k}.batch_size must be between 1 and 1024, got {self.batch_size}")
        if self.half and self.device == "cpu":
            raise ConfigError(f"{k}.half needs a GPU: use device auto or cuda, or half: false")
        if self.max_memory_mb is not None and self.max_memory_mb < 64:
            raise ConfigError(f"{k}.max_memory_mb must be at least 64, got {self.max_memory_mb}")
        if self.nodata_margin is not None and not 0 <= self.nodata_margin <= 256:
            raise ConfigError(
                f"{k}.nodata_margin must be between 0 and 256 pixels, got {self.nodata_margin}"
            )

    @property
    def input_bands(self) -> tuple[str, ...]:
        """The bands the model reads, in its order."""
        return INPUT_BANDS[self.model]

    @property
    def scale(self) -> int:
        """Output pixels per 10 m pixel along each axis (4; 1 for ``swir_x2``)."""
        return 1 if self.model == "swir_x2" else 4


def layer_key(band: str) -> str:
    """The ``scene.layers`` key (asset key) of a super-resolved band: ``B04`` → ``B04_sr``."""
    return f"{band}{LAYER_SUFFIX}"


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of overlapping tiles along one axis of a scene of ``size`` pixels.

    The scene starts at ``lead`` on a canvas of ``count * step + overlap`` pixels; tile ``i``
    covers canvas ``[i * step, i * step + tile)``.
    """

    size: int
    tile: int
    overlap: int
    lead: int
    count: int

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def canvas(self) -> int:
        return self.count * self.step + self.overlap

    @classmethod
    def make(cls, size: int, tile: int, overlap: int, align: int = 1) -> TileGrid:
        """The grid for ``size`` pixels: ``overlap / 2`` of mirrored margin before the scene
        (rounded down to a multiple of ``align``), at least as much after it; a scene no larger
        than a tile is one tile, centred."""
        lead = (overlap // 2) // align * align
        if size <= tile < size + 2 * lead:  # one tile, with as much margin as fits
            lead = ((tile - size) // 2) // align * align
            return cls(size, tile, overlap, lead, 1)
        step = tile - overlap
        need = size + lead + overlap // 2
        count = max(1, math.ceil((need - overlap) / step))
        return cls(size, tile, overlap, lead, count)

    def weights(self, i: int, scale: int) -> F32:
        """Blending weights (length ``tile * scale``) of tile ``i``: 0 on the outer quarter of
        each overlap shared with a neighbour, a raised-cosine ramp over its middle half, 1
        elsewhere; the weights of neighbouring tiles sum to 1."""
        n = self.tile * scale
        w = np.ones(n, dtype=np.float32)
        ov = self.overlap * scale
        if ov == 0:
            return w
        q = ov // 4
        ramp_len = ov - 2 * q
        t = (np.arange(ramp_len, dtype=np.float64) + 0.5) / ramp_len
        ramp = (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)
        if i > 0:
            w[:q] = 0.0
            w[q : q + ramp_len] = ramp
        if i < self.count - 1:
            w[n - q :] = 0.0
            w[n - q - ramp_len : n - q] = ramp[::-1]
        return w

    def span(self, i: int, scale: int) -> tuple[slice, slice]:
        """(slice of the tile's output, slice of the scene's output) where tile ``i`` lands."""
        start = (i * self.step - self.lead) * scale
        lo = max(start, 0)
        hi = min(start + self.tile * scale, self.size * scale)
        return slice(lo - start, hi - start), slice(lo, hi)


def _pad_canvas(a: F32, gy: TileGrid, gx: TileGrid) -> F32:
    """``a`` (bands, y, x) mirrored onto the tile canvas."""
    pads = (
        (0, 0),
        (gy.lead, gy.canvas - gy.size - gy.lead),
        (gx.lead, gx.canvas - gx.size - gx.lead),
    )
    out: F32 = np.pad(a, pads, mode="symmetric")
    return out


# --------------------------------------------------------------------------------------------
# Input checks, masks, consistency
# --------------------------------------------------------------------------------------------


def check_reflectance(bands: Mapping[str, F32], item_id: str = "") -> dict[str, Any]:
    """Refuse raw DN and doubly offset reflectance; flag a likely left-in +0.1 offset.

    Returns ``{"input_p01": {...}, "input_p99": {...}, "suspect_offset_left_in": bool}``.
    """
    p01: dict[str, float] = {}
    p99: dict[str, float] = {}
    for b, a in bands.items():
        v = a[np.isfinite(a)]
        if v.size == 0:
            continue
        if v.size > 200_000:
            v = v[:: v.size // 200_000]
        lo, hi = np.percentile(v, [1.0, 99.0])
        p01[b], p99[b] = round(float(lo), 5), round(float(hi), 5)
    where = f"{item_id}: " if item_id else ""
    dn = {b: v for b, v in p99.items() if v > DN_LIMIT}
    if dn:
        raise StepError(
            f"{where}the super-resolution input looks like raw digital numbers, not reflectance "
            f"(99th percentile {dn}); SEN2SR needs DN / 10000 after the baseline offset. Check "
            "the radiometry settings (or set steps.superres.check_inputs: false)"
        )
    neg = {b: v for b, v in p01.items() if v < DOUBLE_OFFSET_LIMIT}
    if neg:
        raise StepError(
            f"{where}the super-resolution input has many reflectances below "
            f"{DOUBLE_OFFSET_LIMIT} (1st percentile {neg}): the processing-baseline 04.00 offset "
            "(-0.1) was probably applied twice. Check the radiometry settings (or set "
            "steps.superres.check_inputs: false)"
        )
    suspect = bool(p01) and min(p01.values()) > OFFSET_LEFT_IN_LIMIT
    if suspect:
        log.warning(
            "%sno band of the super-resolution input goes below %.2f (1st percentiles %s): the "
            "baseline +0.1 offset may have been left in (or the scene is all cloud or snow)",
            where,
            OFFSET_LEFT_IN_LIMIT,
            p01,
        )
    return {"input_p01": p01, "input_p99": p99, "suspect_offset_left_in": suspect}


def _grow(mask: BoolA, radius: int) -> BoolA:
    if radius <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk = (x * x + y * y) <= radius * radius
    out: BoolA = ndimage.binary_dilation(mask, structure=disk)
    return out


def _block_mean(a: F32, f: int) -> F32:
    """Mean over ``f x f`` blocks (trailing rows/columns that do not fill a block dropped)."""
    if f == 1:
        return a
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    out: F32 = a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float64)
    return out.astype(np.float32)


BACK_PROJECTION_ITERATIONS: Final = 3
"""Bicubic back-projection passes before the final per-block one (see :func:`back_project`)."""


def back_project(sr: F32, target: F32, f: int, iterations: int = BACK_PROJECTION_ITERATIONS) -> F32:
    """Correct ``sr`` in place so that its ``f x f`` block means equal ``target``.

    Iterative back-projection (Irani & Peleg): the residual ``target - block mean`` is upsampled
    bicubically and added ``iterations`` times (a smooth correction), then what is left is added
    per block, which makes the block means equal to ``target`` up to float rounding. Blocks with
    NaN in ``sr`` or ``target`` are not corrected; rows and columns that do not fill a block get
    the correction of the nearest block.
    """
    import torch

    hb, wb = min(sr.shape[0] // f, target.shape[0]), min(sr.shape[1] // f, target.shape[1])
    if hb == 0 or wb == 0:
        return sr
    goal = target[:hb, :wb]
    for k in range(iterations + 1):
        resid = np.nan_to_num(goal - _block_mean(sr, f)[:hb, :wb], nan=0.0).astype(np.float32)
        if k < iterations:
            t = torch.from_numpy(resid)[None, None]
            up = torch.nn.functional.interpolate(t, scale_factor=f, mode="bicubic")[0, 0].numpy()
        else:
            up = np.repeat(np.repeat(resid, f, axis=0), f, axis=1)
        pad = ((0, sr.shape[0] - hb * f), (0, sr.shape[1] - wb * f))
        sr += np.pad(up, pad, mode="edge") if any(p[1] for p in pad) else up
    return sr


def consistency_error(sr: F32, lr: F32, scale: int, native: int = 1) -> float | None:
    """Mean |block mean of ``sr`` − ``lr``| / mean |``lr``| over pixels valid in both, with
    blocks of ``scale`` output pixels per ``lr`` pixel, coarsened by ``native`` (2 for a 20 m
    band on the 10 m grid: both compared over 20 m blocks). None without valid pixels."""
    down = _block_mean(sr, scale * native)
    ref = _block_mean(lr, native)
    h, w = min(down.shape[0], ref.shape[0]), min(down.shape[1], ref.shape[1])
    down, ref = down[:h, :w], ref[:h, :w]
    ok = np.isfinite(down) & np.isfinite(ref)
    if not ok.any():
        return None
    den = float(np.abs(ref[ok]).mean())
    if den == 0.0:
        return None
    return float(np.abs(down[ok] - ref[ok]).mean()) / den


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise StepError(
            "steps.superres.device is 'cuda' but PyTorch sees no CUDA device (torch "
            f"{torch.__version__}); use device: auto or cpu, or install a CUDA build of torch"
        )
    return device


def _tile_bytes(m: LoadedModel, tile: int) -> int:
    """Rough working memory of one tile through the model (activations, FFTs, output)."""
    total = 0
    for c in m.definition.components:
        px_in = (tile * c.out_factor // max(int(c.params.get("upscale", 1)), 1)) ** 2
        px_out = (tile * c.out_factor) ** 2
        feats = int(c.params.get("feature_channels", c.params.get("embed_dim", 64)))
        cout = int(c.params.get("out_channels", 4))
        # ~8 live feature maps, the pixel-shuffle input, and the hard constraint's 2 complex
        # FFTs plus their shifts (x2 for complex) for the LR and SR planes
        total += 4 * (px_in * feats * 8 + px_out * cout * 12)
    return total


@dataclass(frozen=True)
class SRRun:
    """What :func:`super_resolve` computed: one array per output band and some facts."""

    bands: dict[str, F32]
    tiles: int
    batch_size: int
    seconds: float


def super_resolve(
    model: LoadedModel,
    data: F32,
    *,
    tile_size: int,
    overlap: int,
    batch_size: int,
    half: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SRRun:
    """Run ``model`` over ``data`` (``(bands, y, x)`` in the model's input order, no NaN) in
    overlapping tiles; returns one ``(y * s, x * s)`` float32 array per output band."""
    import torch

    d = model.definition
    s = d.scale
    _, h, w = data.shape
    gy = TileGrid.make(h, tile_size, overlap, d.alignment)
    gx = TileGrid.make(w, tile_size, overlap, d.alignment)
    canvas = _pad_canvas(data, gy, gx)
    outs = {b: np.zeros((h * s, w * s), dtype=np.float32) for b in d.output_bands}
    channel = {b: d.module_bands.index(b) for b in d.output_bands}
    tiles = [(i, j) for i in range(gy.count) for j in range(gx.count)]
    wy = [gy.weights(i, s) for i in range(gy.count)]
    wx = [gx.weights(j, s) for j in range(gx.count)]
    dev = torch.device(model.device)
    use_half = half and dev.type == "cuda"
    t0 = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for k in range(0, len(tiles), batch_size):
            batch = tiles[k : k + batch_size]
            x = np.stack(
                [
                    canvas[:, i * gy.step : i * gy.step + tile_size,
                           j * gx.step : j * gx.step + tile_size]
                    for i, j in batch
                ]
            )  # fmt: skip
            xt = torch.from_numpy(x).to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_half):
                yt = model.module(xt)
            y = yt.float().cpu().numpy()
            for n, (i, j) in enumerate(batch):
                ty, sy = gy.span(i, s)
                tx, sx = gx.span(j, s)
                wgt = wy[i][ty, None] * wx[j][None, tx]
                for band, b in channel.items():
                    outs[band][sy, sx] += y[n, b, ty, tx] * wgt
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))
    return SRRun(outs, len(tiles), batch_size, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Model cache
# --------------------------------------------------------------------------------------------


def _file_key(path: str) -> tuple[str, float, int]:
    p = Path(path).expanduser()
    try:
        if p.is_dir():
            st = [f.stat() for f in sorted(p.iterdir()) if f.is_file()]
            return str(p.resolve()), max((x.st_mtime for x in st), default=0.0), len(st)
        x = p.stat()
        return str(p.resolve()), x.st_mtime, x.st_size
    except OSError:
        return str(p), 0.0, 0


@functools.lru_cache(maxsize=4)
def _cached_model(
    source: tuple[str, str, str | None],
    key: tuple[str, float, int] | None,
    kind: str,
    variant: str,
    device: str,
    tile_size: int,
    trust: bool,
    extra: tuple[str | None, str | None, bool],
) -> LoadedModel:
    from . import superres_models as sm

    what, where, arch = source
    if what == "bundle":
        return sm.load_bundle(
            Path(where).expanduser(), kind=kind, variant=variant, device=device,
            tile_size=tile_size, trust_remote_code=trust,
        )  # fmt: skip
    if what == "weights":
        assert arch is not None
        return sm.load_weights_file(
            Path(where).expanduser(), arch, kind=kind, variant=variant, device=device,
            tile_size=tile_size,
        )  # fmt: skip
    revision, cache_dir, allow = extra
    folder = sm.download_bundle(
        where, kind, variant, cache_dir=cache_dir, revision=revision, allow_download=allow,
        include_code=trust,
    )  # fmt: skip
    return sm.load_bundle(
        folder, kind=kind, variant=variant, device=device, tile_size=tile_size,
        trust_remote_code=trust, source=f"hub:{where}@{revision or 'main'}",
    )  # fmt: skip


def load_model(cfg: SuperResConfig, device: str) -> LoadedModel:
    """The model ``cfg`` names, on ``device`` (``cpu``/``cuda``), cached per process (keyed by
    the source's path, modification time and size, so a replaced file is reloaded)."""
    try:
        from . import superres_models  # noqa: F401
    except ImportError as e:
        raise StepError(
            f"steps.superres needs PyTorch and safetensors ({e}); install stac2cube[sr] and "
            "sen2sr (`pip install --no-deps sen2sr==0.8.5`)"
        ) from e
    if cfg.bundle is not None:
        src: tuple[str, str, str | None] = ("bundle", cfg.bundle, None)
        key: tuple[str, float, int] | None = _file_key(cfg.bundle)
    elif cfg.weights is not None:
        src, key = ("weights", cfg.weights, cfg.architecture), _file_key(cfg.weights)
    elif cfg.hub_id is not None:
        src, key = ("hub", cfg.hub_id, None), None
    else:
        raise StepError(
            "steps.superres has no model: set bundle (a downloaded mlstac folder, e.g. "
            "SEN2SRLite/NonReference_RGBN_x4 of tacofoundation/sen2sr), weights + architecture, "
            "or hub_id (with allow_download)"
        )
    return _cached_model(
        src, key, cfg.model, cfg.variant, device, cfg.tile_size, cfg.trust_remote_code,
        (cfg.revision, cfg.cache_dir, cfg.allow_download),
    )  # fmt: skip


def clear_model_cache() -> None:
    """Forget the models loaded so far (frees their memory)."""
    _cached_model.cache_clear()


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


def _fine_geobox(gbox: GeoBox, scale: int) -> GeoBox:
    if scale == 1:
        return gbox
    h, w = gbox.shape.yx
    return gbox.zoom_to((h * scale, w * scale))


class SuperResStep:
    """Super-resolution with SEN2SR (see the module docstring)."""

    name = "superres"
    version = "1.0.0"

    def required_aux(self, cfg: SuperResConfig) -> Mapping[str, AuxRequest]:
        """Nothing: the bands come from ``scene.bands``."""
        return {}

    def run(
        self,
        scene: Scene,
        cfg: SuperResConfig,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> StepResult:
        """Super-resolve the bands of ``scene`` (pure apart from loading the model once)."""
        gbox = scene.geobox
        h, w = gbox.shape.yx
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
        inputs = {b: np.asarray(scene.bands[b], dtype=np.float32) for b in need}
        results: dict[str, Any] = {}
        if cfg.check_inputs:
            results.update(check_reflectance(inputs, scene.item_id))

        device = resolve_device(cfg.device)
        half = cfg.half and device == "cuda"
        if cfg.half and not half:
            log.warning("%s: steps.superres.half ignored on the CPU", scene.item_id)
        model = load_model(cfg, device)
        d = model.definition
        s = d.scale

        # memory bound: output buffers + the input canvas, then as many tiles as fit
        out_bytes = len(d.output_bands) * h * w * s * s * 4 + h * w * s * s
        in_bytes = 2 * len(need) * (h + cfg.tile_size) * (w + cfg.tile_size) * 4
        batch = cfg.batch_size
        if cfg.max_memory_mb is not None:
            budget = cfg.max_memory_mb * 2**20 - out_bytes - in_bytes
            per_tile = _tile_bytes(model, cfg.tile_size)
            if budget < per_tile:
                raise StepError(
                    f"{scene.item_id}: the {h}x{w}-pixel scene needs about "
                    f"{(out_bytes + in_bytes + per_tile) / 2**20:.0f} MiB for its "
                    f"{len(d.output_bands)} output bands and one tile, more than "
                    f"steps.superres.max_memory_mb ({cfg.max_memory_mb}); raise it, use a "
                    "smaller tile_size or a smaller area"
                )
            batch = max(1, min(batch, budget // per_tile))

        invalid = np.zeros((h, w), dtype=bool)
        for a in inputs.values():
            invalid |= ~np.isfinite(a)
        stack = np.empty((len(need), h, w), dtype=np.float32)
        for n, b in enumerate(need):
            stack[n] = np.where(invalid, np.float32(0.0), inputs[b])

        run = super_resolve(
            model, stack, tile_size=cfg.tile_size, overlap=cfg.overlap, batch_size=int(batch),
            half=half, progress=progress,
        )  # fmt: skip
        del stack

        margin = d.receptive_radius() if cfg.nodata_margin is None else cfg.nodata_margin
        n_invalid = int(invalid.sum())
        if n_invalid:
            grown = _grow(invalid, margin)
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
            native = 2 if band in _NATIVE_20M else 1
            if cfg.back_projection:
                err = consistency_error(arr, lr, s, native)
                before[band] = None if err is None else round(err, 6)
                back_project(arr, _block_mean(lr, native), s * native)
            err = consistency_error(arr, lr, s, native)
            consistency[band] = None if err is None else round(err, 6)
            out_res = res / s
            layers[layer_key(band)] = GridLayer(
                data=arr,
                geobox=fine_gbox,
                band=band,
                description=(
                    f"{band} surface reflectance super-resolved to {out_res:g} m by SEN2SR "
                    f"{d.variant} {d.kind} ({model.model_id})"
                ),
            )
        worst = max((v for v in consistency.values() if v is not None), default=None)
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
            batch_size=run.batch_size,
            tiles=run.tiles,
            seconds=round(run.seconds, 3),
            output_resolution_m=res / s,
            output_shape=[h * s, w * s],
            nodata_margin_px=margin,
            nodata_fraction=n_invalid / max(h * w, 1),
            consistency_rel_error=consistency,
            consistency_rel_error_max=worst,
        )
        if cfg.back_projection:
            results["consistency_rel_error_before_back_projection"] = before
        log.info(
            "%s: super-resolved %d bands to %g m in %.1f s (%d tiles on %s; worst consistency "
            "error %s)",
            scene.item_id,
            len(run.bands),
            res / s,
            run.seconds,
            run.tiles,
            device,
            worst,
        )
        params = {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
        record = StepRecord(self.name, self.version, parameters=params, results=results)
        return StepResult(scene.replace(layers=layers), record)


def super_resolve_array(
    model: LoadedModel,
    bands: Sequence[F32],
    *,
    tile_size: int = 128,
    overlap: int = 32,
    batch_size: int = 8,
) -> list[F32]:
    """Convenience: run ``model`` over NaN-free input planes (model order); list of outputs."""
    run = super_resolve(
        model, np.stack(bands).astype(np.float32), tile_size=tile_size, overlap=overlap,
        batch_size=batch_size,
    )  # fmt: skip
    return [run.bands[b] for b in model.definition.output_bands]


__all__ = [
    "DN_LIMIT",
    "DOUBLE_OFFSET_LIMIT",
    "INPUT_BANDS",
    "LAYER_SUFFIX",
    "OFFSET_LEFT_IN_LIMIT",
    "SRRun",
    "SuperResConfig",
    "SuperResStep",
    "TileGrid",
    "back_project",
    "check_reflectance",
    "clear_model_cache",
    "consistency_error",
    "layer_key",
    "load_model",
    "resolve_device",
    "super_resolve",
    "super_resolve_array",
]
