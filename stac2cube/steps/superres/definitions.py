"""What a SEN2SR model is, without its tensors: kinds, variants, bands and networks.

A :class:`ModelDefinition` names the sen2sr classes and constructor arguments of each network of
one of the three released models (``rgbn_x4``, ``swir_x2``, ``full_x4``). It needs no PyTorch, so
the configuration can check names against it; :mod:`.networks` builds the networks from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ...errors import StepError

ModelKind = Literal["rgbn_x4", "swir_x2", "full_x4"]
Variant = Literal["lite", "swin", "mamba"]

MODEL_KINDS: Final[tuple[str, ...]] = ("rgbn_x4", "swir_x2", "full_x4")
VARIANTS: Final[tuple[str, ...]] = ("lite", "swin", "mamba")
ARCHITECTURES: Final[Mapping[str, str]] = {"lite": "CNNSR", "swin": "Swin2SR", "mamba": "MambaSR"}
"""The sen2sr network class of each variant."""

RGBN_BANDS: Final = ("B04", "B03", "B02", "B08")
"""Input and output bands of ``rgbn_x4``, in the model's order (red, green, blue, NIR)."""
SWIR_BANDS: Final = ("B05", "B06", "B07", "B8A", "B11", "B12")
"""The six 20 m bands (red edge, narrow NIR, SWIR), in the models' order."""
FULL_BANDS: Final = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
"""Input bands of ``swir_x2`` and ``full_x4`` (and output bands of ``full_x4``), in order."""
INPUT_BANDS: Final[Mapping[str, tuple[str, ...]]] = {
    "rgbn_x4": RGBN_BANDS,
    "swir_x2": FULL_BANDS,
    "full_x4": FULL_BANDS,
}
"""The ``scene.bands`` each model reads, in the model's order."""
OUTPUT_BANDS: Final[Mapping[str, tuple[str, ...]]] = {
    "rgbn_x4": RGBN_BANDS,
    "swir_x2": SWIR_BANDS,
    "full_x4": FULL_BANDS,
}
"""The bands each model super-resolves (what the step writes), in the model's order."""

LITE_FEATURE_CHANNELS: Final = 24
"""``feature_channels`` of the published SEN2SR-Lite networks (all three stages)."""
LITE_NUM_BLOCKS: Final = 6
"""``num_blocks`` of the published SEN2SR-Lite networks."""
NATIVE_TILE: Final = 128
"""Input tile (10 m pixels) the released models and their low-pass masks are made for."""
MASK_KEY: Final = "weights"
"""Key of the low-pass mask tensor in a hard-constraint weights file."""
TRANSFORMER_RECEPTIVE_RADIUS: Final = 16
"""Receptive radius (10 m pixels) assumed for the windowed-attention variants (swin/mamba);
their true receptive field is the whole tile, this is where their influence is judged small."""


class ModelLoadError(StepError):
    """A super-resolution model could not be built or loaded (missing, corrupt or mismatched
    weights, an unknown architecture, a missing optional dependency)."""


@dataclass(frozen=True)
class Component:
    """One network of a model: its weight-file stem, sen2sr class and constructor arguments."""

    name: str
    """File stem (``model``, ``sr_model``, ``f2_model``)."""
    architecture: str
    """``CNNSR``, ``Swin2SR`` or ``MambaSR``."""
    params: Mapping[str, Any]
    """Keyword arguments of the class (``in_channels``, ``out_channels``, ``upscale``, ...)."""
    mask_scale: int
    """Ratio of the output grid to the grid whose frequencies the hard constraint keeps."""
    out_factor: int
    """Output pixels per 10 m input pixel of this network's output (mask side = tile x this)."""

    @property
    def mask_name(self) -> str:
        """Stem of the matching hard-constraint file (``hard_constraint``, ``f2_hard_...``)."""
        return self.name.replace("model", "hard_constraint")


@dataclass(frozen=True)
class ModelDefinition:
    """What a model is: its kind, variant and networks (everything but the tensors)."""

    kind: str
    variant: str
    components: tuple[Component, ...]
    tile_size: int = NATIVE_TILE
    """Input tile the masks were made for."""

    @property
    def input_bands(self) -> tuple[str, ...]:
        return INPUT_BANDS[self.kind]

    @property
    def output_bands(self) -> tuple[str, ...]:
        """The bands the model super-resolves (what the step writes)."""
        return OUTPUT_BANDS[self.kind]

    @property
    def module_bands(self) -> tuple[str, ...]:
        """The channels of the assembled model's output, in order (``swir_x2`` returns all ten
        bands, its 10 m bands passed through unchanged)."""
        return RGBN_BANDS if self.kind == "rgbn_x4" else FULL_BANDS

    @property
    def scale(self) -> int:
        """Output pixels per input pixel along each axis (4, or 1 for ``swir_x2``, whose 10 m
        output is on the input's 10 m grid)."""
        return 1 if self.kind == "swir_x2" else 4

    @property
    def alignment(self) -> int:
        """Tiles start on multiples of this (2 where a stage samples the 20 m grid)."""
        return 1 if self.kind == "rgbn_x4" else 2

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def receptive_radius(self) -> int:
        """Pixels (10 m) an input pixel influences: the 3x3 convolutions of each stage, plus 2
        for the bicubic/bilinear resampling of the hard constraint and the 20 m stage."""

        def r(c: Component) -> int:
            if c.architecture != "CNNSR":
                return TRANSFORMER_RECEPTIVE_RADIUS
            # conv_1 + 3 per block + conv_2 + the upsampler's conv, all 3x3 on the input grid
            return 3 * int(c.params.get("num_blocks", LITE_NUM_BLOCKS)) + 3

        if self.kind == "full_x4":
            fusion = math.ceil(r(self.component("model")) / 4)
            return (
                max(r(self.component("sr_model")), r(self.component("f2_model")) + 1) + fusion + 2
            )
        return r(self.components[0]) + 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "variant": self.variant,
            "tile_size": self.tile_size,
            "components": {
                c.name: {
                    "architecture": c.architecture,
                    "params": dict(c.params),
                    "mask_scale": c.mask_scale,
                    "out_factor": c.out_factor,
                }
                for c in self.components
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelDefinition:
        comps = tuple(
            Component(
                name,
                str(v["architecture"]),
                dict(v["params"]),
                int(v["mask_scale"]),
                int(v["out_factor"]),
            )
            for name, v in d["components"].items()
        )
        return cls(str(d["kind"]), str(d["variant"]), comps, int(d.get("tile_size", NATIVE_TILE)))


def _layout(kind: str) -> tuple[tuple[str, int, int, int, int, int], ...]:
    """(stem, in, out, upscale, mask_scale, out_factor) of each network of a model kind."""
    if kind == "rgbn_x4":
        return (("model", 4, 4, 4, 4, 4),)
    if kind == "swir_x2":
        return (("model", 10, 6, 1, 2, 1),)
    if kind == "full_x4":
        return (
            ("sr_model", 4, 4, 4, 4, 4),
            ("f2_model", 10, 6, 1, 2, 1),
            ("model", 10, 6, 1, 4, 4),
        )
    raise ModelLoadError(f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)}")


def model_definition(
    kind: str,
    variant: str = "lite",
    *,
    feature_channels: int = LITE_FEATURE_CHANNELS,
    num_blocks: int = LITE_NUM_BLOCKS,
    params: Mapping[str, Any] | None = None,
    tile_size: int = NATIVE_TILE,
) -> ModelDefinition:
    """The definition of a model kind: for ``lite`` the published SEN2SR-Lite networks (or a
    smaller CNNSR with ``feature_channels``/``num_blocks``, for tests); for ``swin``/``mamba``
    the sen2sr class with ``params`` (its defaults otherwise; not the released hyper-parameters,
    which only the released ``load.py`` states)."""
    if variant not in VARIANTS:
        raise ModelLoadError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    arch = ARCHITECTURES[variant]
    comps = []
    for stem, cin, cout, up, mscale, ofac in _layout(kind):
        p: dict[str, Any] = {"in_channels": cin, "out_channels": cout, "upscale": up}
        if arch == "CNNSR":
            p.update(
                feature_channels=feature_channels, bias=True, train_mode=False,
                num_blocks=num_blocks,
            )  # fmt: skip
        else:
            p.update(img_size=tile_size * (ofac // up if up else 1), upsampler="pixelshuffle")
            p.update(params or {})
        comps.append(Component(stem, arch, p, mscale, ofac))
    return ModelDefinition(kind, variant, tuple(comps), tile_size)
