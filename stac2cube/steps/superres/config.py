"""The configuration of the super-resolution step (``steps.superres``).

A frozen :class:`SuperResConfig`, one documented field per option; it checks names and ranges
when it is made, so a bad value is a :class:`~stac2cube.errors.ConfigError` at load time, not a
failure on a worker. Which files a configuration names is only looked at by
:meth:`~.step.SuperResStep.prepare`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ...errors import ConfigError
from ...fields import doc
from .definitions import ARCHITECTURES, INPUT_BANDS, ModelKind, Variant

Device = Literal["auto", "cpu", "cuda"]

LAYER_SUFFIX: Final = "_sr"
"""Asset key of an output band: ``f"{band}{LAYER_SUFFIX}"`` (``B04_sr``)."""


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
        content=True,
    )
    weights: str | None = doc(
        "A single safetensors file holding the whole model (as "
        "`stac2cube.steps.superres.save_weights` writes it); needs `architecture`.",
        None,
        content=True,
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
        "Cache folder for `hub_id` downloads (None: the huggingface_hub default).",
        None,
        execution=True,
    )
    allow_download: bool = doc(
        "Allow fetching `hub_id` from the network when it is not in `cache_dir`.",
        False,
        execution=True,
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
    batch_size: int = doc(
        "Tiles per model call (lowered to fit `max_memory_mb`); the tiles of a batch are "
        "independent (no batch statistics at inference).",
        8,
        execution=True,
    )
    device: Device = doc(
        "`auto` (CUDA when available, else CPU), `cpu` or `cuda` (fails without a GPU). The "
        "same model on either, up to float rounding (CUDA convolutions may use TF32); the "
        "step's record names the device. `half` does change the pixels.",
        "auto",
        execution=True,
    )
    half: bool = doc(
        "Run the networks in float16 autocast on CUDA (the hard constraint stays float32); "
        "ignored, with a warning, when the step runs on the CPU.",
        False,
    )
    max_memory_mb: int | None = doc(
        "Bound (MiB, estimated) on the step's working memory: the output buffers plus one "
        "batch of tiles. The batch is made smaller to fit; a scene whose output alone does not "
        "fit is refused (a failure, retried by later runs). None: no bound.",
        None,
        execution=True,
    )
    nodata_margin: int | None = doc(
        "Pixels (10 m) by which nodata is grown before it is re-applied to the output. None: "
        "the model's receptive radius (23 for the Lite x4 model).",
        None,
    )
    back_projection: bool = doc(
        "Correct each output band after the network so that its block means equal the input "
        "(4x4 output pixels per 10 m pixel; 20 m bands over their native 20 m pixels): the "
        "residual is upsampled bicubically and added three times, then once per block. Off "
        "(the default): the published model's output as it is. On imposes a box point-spread "
        "function on the output, which SEN2SR was not trained for, and makes the consistency "
        "figure exact by construction (see docs/superres.md).",
        False,
    )
    check_inputs: bool = doc(
        "Refuse inputs that look like raw DN or doubly offset reflectance (see "
        "docs/superres.md); flag a likely left-in +0.1 offset. A check only: a refused scene "
        "fails (and is retried), a written one has the same pixels.",
        True,
        execution=True,
    )

    def __post_init__(self) -> None:
        k = "steps.superres"
        if self.model not in INPUT_BANDS:
            raise ConfigError(f"{k}.model {self.model!r} is not one of rgbn_x4, swir_x2, full_x4")
        if self.variant not in ARCHITECTURES:
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
            archs = tuple(ARCHITECTURES.values())
            if self.architecture not in archs:
                raise ConfigError(
                    f"{k}.architecture {self.architecture!r} is not one of {', '.join(archs)}"
                )
            if self.architecture != ARCHITECTURES[self.variant]:
                raise ConfigError(
                    f"{k}.architecture {self.architecture} does not match variant "
                    f"{self.variant!r} ({ARCHITECTURES[self.variant]}); set both consistently"
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

    def content_for_hash(self, resolve: Callable[[str], Path]) -> dict[str, Any]:
        """What identifies the model in the configuration hash in place of the paths of
        `bundle` and `weights`: the SHA-256 of its files (:func:`.identity.model_content`)."""
        from .identity import model_content

        return model_content(self, resolve)


def layer_key(band: str) -> str:
    """The ``scene.layers`` key (asset key) of a super-resolved band: ``B04`` → ``B04_sr``."""
    return f"{band}{LAYER_SUFFIX}"


__all__ = ["LAYER_SUFFIX", "Device", "SuperResConfig", "layer_key"]
