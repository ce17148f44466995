"""SEN2SR models for :mod:`stac2cube.steps.superres`: definitions, building, bundles, loading.

The released SEN2SR models (Hugging Face ``tacofoundation/sen2sr``) are *mlstac bundles*: a folder
with an ``mlm.json`` (a STAC Item with the MLM extension), safetensors weight files and a
``load.py`` whose ``compiled_model(path, device)`` builds the network with sen2sr's classes and
loads the weights. This module never runs that ``load.py`` unless asked to
(``trust_remote_code``): it builds the same architectures from sen2sr's own classes
(:class:`~sen2sr.models.opensr_baseline.cnn.CNNSR` inside the ``srmodel`` wrappers of
``sen2sr.nonreference``, ``sen2sr.referencex2`` and ``sen2sr.referencex4``, with sen2sr's
:class:`~sen2sr.models.tricks.HardConstraint`) and loads only tensors.

Bundle layout (one folder per model; file names as in the released bundles)
---------------------------------------------------------------------------
=============  ====================================================================================
``rgbn_x4``    ``model.safetensor`` (the SR network), ``hard_constraint.safetensor`` (key
               ``weights``: the Fourier low-pass mask, output-tile sized). Input and output bands
               B04 B03 B02 B08 at 10 m → 2.5 m (``SEN2SRLite/NonReference_RGBN_x4``).
``swir_x2``    same two files; input the ten bands :data:`FULL_BANDS` on the 10 m grid, output
               B05 B06 B07 B8A B11 B12 sharpened from 20 m to 10 m
               (``SEN2SRLite/Reference_RSWIR_x2``).
``full_x4``    ``sr_model`` / ``sr_hard_constraint`` (the RGBN x4 stage), ``f2_model`` /
               ``f2_hard_constraint`` (the 20 → 10 m stage), ``model`` / ``hard_constraint`` (the
               fusion of the six 20 m bands at 2.5 m): ten bands to 2.5 m (``SEN2SRLite/main``).
=============  ====================================================================================

The published Lite networks are ``CNNSR(in, out, feature_channels=24, upscale, bias=True,
train_mode=False, num_blocks=6)`` (572,336 parameters for RGBN x4). Bundles written by
:func:`write_bundle` also describe their architecture in ``mlm:hyperparameters`` (which the
released ones do not: for Lite the parameters are then read off the weight shapes; Swin/Mamba
bundles need that description, or ``trust_remote_code``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.util
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from torch import nn

from ..errors import StepError

log = logging.getLogger(__name__)

ModelKind = Literal["rgbn_x4", "swir_x2", "full_x4"]
Variant = Literal["lite", "swin", "mamba"]
Architecture = Literal["CNNSR", "Swin2SR", "MambaSR"]

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

HUB_SUBFOLDERS: Final[Mapping[tuple[str, str], str]] = {
    ("rgbn_x4", "lite"): "SEN2SRLite/NonReference_RGBN_x4",
    ("swir_x2", "lite"): "SEN2SRLite/Reference_RSWIR_x2",
    ("full_x4", "lite"): "SEN2SRLite/main",
    ("rgbn_x4", "mamba"): "SEN2SR/NonReference_RGBN_x4",
    ("swir_x2", "swin"): "SEN2SR/Reference_RSWIR_x2",
    ("full_x4", "mamba"): "SEN2SR/main",
}
"""Folder of each released model in the ``tacofoundation/sen2sr`` Hugging Face repository."""

LITE_FEATURE_CHANNELS: Final = 24
"""``feature_channels`` of the published SEN2SR-Lite networks (all three stages)."""
LITE_NUM_BLOCKS: Final = 6
"""``num_blocks`` of the published SEN2SR-Lite networks."""
NATIVE_TILE: Final = 128
"""Input tile (10 m pixels) the released models and their low-pass masks are made for."""
TRANSFORMER_RECEPTIVE_RADIUS: Final = 16
"""Receptive radius (10 m pixels) assumed for the windowed-attention variants (swin/mamba);
their true receptive field is the whole tile, this is where their influence is judged small."""
WEIGHT_SUFFIXES: Final = (".safetensor", ".safetensors")
_MASK_KEY: Final = "weights"
_META_KEY: Final = "stac2cube"
MLM_SCHEMA: Final = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"


class ModelLoadError(StepError):
    """A super-resolution model could not be built or loaded (missing, corrupt or mismatched
    weights, an unknown architecture, a missing optional dependency)."""


# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------


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
        return RGBN_BANDS if self.kind == "rgbn_x4" else FULL_BANDS

    @property
    def output_bands(self) -> tuple[str, ...]:
        """The bands the model super-resolves (what the step writes)."""
        return {"rgbn_x4": RGBN_BANDS, "swir_x2": SWIR_BANDS, "full_x4": FULL_BANDS}[self.kind]

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


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _sen2sr_class(arch: str) -> Callable[..., nn.Module]:
    try:
        if arch == "CNNSR":
            from sen2sr.models.opensr_baseline.cnn import CNNSR

            return CNNSR  # type: ignore[no-any-return]
        if arch == "Swin2SR":
            from sen2sr.models.opensr_baseline.swin import Swin2SR

            return Swin2SR  # type: ignore[no-any-return]
        if arch == "MambaSR":
            from sen2sr.models.opensr_baseline.mamba import MambaSR

            return MambaSR  # type: ignore[no-any-return]
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        if missing and missing.split(".")[0] == "sen2sr":
            hint = "install it with `pip install --no-deps sen2sr==0.8.5`"
        else:
            hint = (
                f"sen2sr's {arch} needs `{missing}` (pip install {missing}); the Lite variant "
                "(CNNSR) needs only torch"
            )
        raise ModelLoadError(f"cannot build the {arch} network: {e}; {hint}") from e
    raise ModelLoadError(f"unknown architecture {arch!r}; use CNNSR, Swin2SR or MambaSR")


def build_network(c: Component) -> nn.Module:
    """A freshly initialised network (random weights) of component ``c``."""
    net = _sen2sr_class(c.architecture)(**dict(c.params))
    return net


def low_pass_mask(size: int, scale: int, order: int = 6) -> torch.Tensor:
    """A centred Butterworth low-pass mask of ``size x size`` with its cutoff at the coarse
    grid's Nyquist frequency (radius ``(size // 2) // scale`` bins, as sen2sr's filters), used
    for the hard constraint of models made here; released models carry their own mask."""
    c = size // 2
    cutoff = max(c // scale, 1)
    u = np.arange(size, dtype=np.float64) - c
    d = np.hypot(u[:, None], u[None, :])
    m = 1.0 / (1.0 + (d / cutoff) ** (2 * order))
    return torch.from_numpy(m.astype(np.float32))


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A centred frequency-domain mask resampled to ``size x size`` in normalised frequency
    (bilinear; bin ``k`` of the new mask samples frequency ``(k - size//2) / size``)."""
    n = int(mask.shape[-1])
    if n == size and int(mask.shape[-2]) == size:
        return mask
    from scipy import ndimage

    m = mask.detach().to("cpu", torch.float32).numpy()
    f = (np.arange(size, dtype=np.float64) - size // 2) / size
    ry = f * m.shape[0] + m.shape[0] // 2
    rx = f * m.shape[1] + m.shape[1] // 2
    yy, xx = np.meshgrid(ry, rx, indexing="ij")
    out = ndimage.map_coordinates(m, [yy, xx], order=1, mode="nearest")
    return torch.from_numpy(out.astype(np.float32))


class Float32Constraint(nn.Module):
    """sen2sr's :class:`HardConstraint`, always evaluated in float32 (outside autocast): its FFT
    split of low and high frequencies is not safe in half precision."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, lr: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=lr.device.type, enabled=False):
            out: torch.Tensor = self.inner(lr.float(), sr.float())
        return out


def _constraint(mask: torch.Tensor, bands: list[int] | str, device: str) -> nn.Module:
    from sen2sr.models.tricks import HardConstraint

    return Float32Constraint(HardConstraint(low_pass_mask=mask.to(device), bands=bands))


@dataclass
class ModelWeights:
    """A model as saved: its definition, the networks (with their weights) and the low-pass
    masks of the hard constraints, keyed by file stem."""

    definition: ModelDefinition
    networks: Mapping[str, nn.Module]
    masks: Mapping[str, torch.Tensor]

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """File stem → tensors, as written to the bundle's safetensors files."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for c in self.definition.components:
            sd = self.networks[c.name].state_dict()
            out[c.name] = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
            out[c.mask_name] = {_MASK_KEY: self.masks[c.mask_name].detach().to("cpu").contiguous()}
        return out

    def n_parameters(self) -> int:
        return sum(int(p.numel()) for n in self.networks.values() for p in n.parameters())


def random_model(definition: ModelDefinition, *, seed: int = 0) -> ModelWeights:
    """A model of ``definition`` with random weights (PyTorch's default initialisation, seeded)
    and :func:`low_pass_mask` masks: the real architecture, for tests and benchmarks."""
    torch.manual_seed(seed)
    nets = {c.name: build_network(c).eval() for c in definition.components}
    masks = {
        c.mask_name: low_pass_mask(definition.tile_size * c.out_factor, c.mask_scale)
        for c in definition.components
    }
    return ModelWeights(definition, nets, masks)


def assemble(weights: ModelWeights, *, tile_size: int, device: str) -> nn.Module:
    """The inference model: sen2sr's ``srmodel`` wrappers around the networks, with the
    hard-constraint masks resampled to ``tile_size`` (see :func:`resize_mask`), on ``device``,
    in eval mode, without gradients."""
    from sen2sr import nonreference, referencex2, referencex4

    d = weights.definition

    def mask(c: Component) -> torch.Tensor:
        return resize_mask(weights.masks[c.mask_name], tile_size * c.out_factor)

    def prep(name: str) -> nn.Module:
        net = weights.networks[name].to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    six = list(range(6))
    if d.kind == "rgbn_x4":
        c = d.component("model")
        model: nn.Module = nonreference.srmodel(prep("model"), _constraint(mask(c), "all", device))
    elif d.kind == "swir_x2":
        c = d.component("model")
        model = referencex2.srmodel(prep("model"), _constraint(mask(c), six, device))
    else:
        sr = nonreference.srmodel(
            prep("sr_model"), _constraint(mask(d.component("sr_model")), "all", device)
        )
        f2 = referencex2.srmodel(
            prep("f2_model"), _constraint(mask(d.component("f2_model")), six, device)
        )
        model = referencex4.srmodel(
            sr, f2, prep("model"), _constraint(mask(d.component("model")), six, device)
        )
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def combined_sha256(files: Mapping[str, str]) -> str:
    """One SHA-256 over the per-file SHA-256 (name-sorted), or the file's own for one file."""
    if len(files) == 1:
        return next(iter(files.values()))
    lines = "".join(f"{k}  {v}\n" for k, v in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _band_list(bands: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": b} for b in bands]


def mlm_item(weights: ModelWeights, model_id: str, *, description: str = "") -> dict[str, Any]:
    """The ``mlm.json`` STAC Item (MLM extension v1.4) of a bundle (hrefs relative)."""
    import safetensors
    import sen2sr

    d = weights.definition
    t = d.tile_size
    s = d.scale
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    archs = sorted({c.architecture for c in d.components})
    assets: dict[str, Any] = {}
    for c in d.components:
        assets[c.name] = {
            "href": f"./{c.name}.safetensor",
            "type": "application/octet-stream; application=safetensors",
            "title": f"{c.architecture} weights ({c.name})",
            "roles": ["mlm:model", "mlm:weights"],
            "mlm:artifact_type": "safetensors",
        }
        assets[c.mask_name] = {
            "href": f"./{c.mask_name}.safetensor",
            "type": "application/octet-stream; application=safetensors",
            "title": f"hard-constraint low-pass mask of {c.name} (key 'weights')",
            "roles": ["mlm:weights"],
            "mlm:artifact_type": "safetensors",
        }
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA],
        "id": model_id,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]],
        },
        "bbox": [-180, -90, 180, 90],
        "properties": {
            "datetime": now,
            "description": description
            or f"SEN2SR {d.variant} {d.kind} ({', '.join(archs)}), written by stac2cube",
            "mlm:name": model_id,
            "mlm:architecture": "+".join(archs),
            "mlm:tasks": ["super-resolution"],
            "mlm:framework": "pytorch",
            "mlm:framework_version": torch.__version__.split("+")[0],
            "mlm:total_parameters": weights.n_parameters(),
            "mlm:pretrained": False,
            "mlm:accelerator": "cuda",
            "mlm:accelerator_constrained": False,
            "mlm:input": [
                {
                    "name": "surface reflectance (DN / 10000, nodata filled with 0)",
                    "bands": _band_list(d.input_bands),
                    "input": {
                        "shape": [-1, len(d.input_bands), t, t],
                        "dim_order": ["batch", "bands", "height", "width"],
                        "data_type": "float32",
                    },
                    "pre_processing_function": None,
                }
            ],
            "mlm:output": [
                {
                    "name": "super-resolved surface reflectance",
                    "tasks": ["super-resolution"],
                    "result": {
                        "shape": [-1, len(d.module_bands), t * s, t * s],
                        "dim_order": ["batch", "bands", "height", "width"],
                        "data_type": "float32",
                    },
                    "bands": _band_list(d.module_bands),
                    "post_processing_function": None,
                }
            ],
            "mlm:hyperparameters": {_META_KEY: d.to_dict()},
            "dependencies": {
                "sen2sr": getattr(sen2sr, "__version__", "unknown"),
                "safetensors": getattr(safetensors, "__version__", "unknown"),
            },
        },
        "links": [],
        "assets": assets,
    }


def write_bundle(
    weights: ModelWeights, path: str | Path, *, model_id: str | None = None, description: str = ""
) -> Path:
    """Write ``weights`` as an mlstac / STAC-MLM bundle: ``mlm.json`` and one safetensors file
    per network and per mask, named as in the released bundles (no ``load.py``: stac2cube
    builds the architecture from ``mlm:hyperparameters``). Returns the folder."""
    from safetensors.torch import save_file

    d = weights.definition
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    mid = model_id or f"stac2cube_SEN2SR_{d.variant}_{d.kind}"
    for stem, tensors in weights.tensors().items():
        save_file(tensors, str(out / f"{stem}.safetensor"))
    item = mlm_item(weights, mid, description=description)
    for stem in weights.tensors():
        p = out / f"{stem}.safetensor"
        item["assets"][stem]["file:size"] = p.stat().st_size
        item["assets"][stem]["file:checksum"] = "1220" + _sha256(p)  # multihash sha2-256
    item["stac_extensions"].append("https://stac-extensions.github.io/file/v2.1.0/schema.json")
    (out / "mlm.json").write_text(json.dumps(item, indent=2) + "\n")
    return out


def save_weights(weights: ModelWeights, path: str | Path) -> Path:
    """Write ``weights`` as one safetensors file (keys ``<file stem>.<tensor>``), with the
    definition in the file's metadata: the ``weights`` + ``architecture`` form of the config."""
    from safetensors.torch import save_file

    flat = {f"{stem}.{k}": v for stem, ts in weights.tensors().items() for k, v in ts.items()}
    meta = {_META_KEY: json.dumps(weights.definition.to_dict())}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(p), metadata=meta)
    return p


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with what provenance needs about it."""

    module: nn.Module
    definition: ModelDefinition
    model_id: str
    source: str
    """``bundle:<dir>``, ``weights:<file>``, ``hub:<repo>/<folder>`` or ``remote-code:<dir>``."""
    weights_sha256: str
    weight_files: Mapping[str, str] = field(default_factory=dict)
    """File name → SHA-256."""
    device: str = "cpu"
    tile_size: int = NATIVE_TILE
    n_parameters: int = 0


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:  # type: ignore[no-untyped-call]
            meta = f.metadata() or {}
            for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[k] = f.get_tensor(k)
        return tensors, dict(meta)
    except FileNotFoundError as e:
        raise ModelLoadError(f"weights file {path} does not exist") from e
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ValueError
        raise ModelLoadError(
            f"weights file {path} is corrupt or not a safetensors file ({type(e).__name__}: "
            f"{e}); download it again or rewrite it with stac2cube.steps.superres_models."
            "write_bundle"
        ) from e


def _infer_cnnsr(c: Component, sd: Mapping[str, torch.Tensor]) -> Component:
    """The CNNSR parameters of a state dict (for released bundles that do not state them)."""
    try:
        w = sd["conv_1.sk.weight"]
        blocks = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
        up = sd["upsampler.0.weight"]
    except KeyError as e:
        raise ModelLoadError(
            f"the {c.name} weights are not a CNNSR (SEN2SR-Lite) state dict: no tensor {e}"
        ) from e
    p = dict(c.params)
    p.update(in_channels=int(w.shape[1]), feature_channels=int(w.shape[0]), num_blocks=len(blocks))
    if int(up.shape[0]) != int(p["out_channels"]) * int(p["upscale"]) ** 2:
        raise ModelLoadError(
            f"the {c.name} weights upsample to {int(up.shape[0])} channels, not the "
            f"{p['out_channels']} x {p['upscale']}² of this model kind; is it another model?"
        )
    return dataclasses.replace(c, params=p)


def _guess_kind(stems: set[str], sd_model: Mapping[str, torch.Tensor] | None) -> str | None:
    if {"sr_model", "f2_model", "model"} <= stems:
        return "full_x4"
    if sd_model is not None and "conv_1.sk.weight" in sd_model:
        return "rgbn_x4" if int(sd_model["conv_1.sk.weight"].shape[1]) == 4 else "swir_x2"
    return None


def _definition_for(
    kind: str,
    variant: str,
    meta: Mapping[str, Any] | None,
    tensors: Mapping[str, Mapping[str, torch.Tensor]],
    where: str,
) -> ModelDefinition:
    if meta is not None:
        try:
            d = ModelDefinition.from_dict(meta)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{where}: unreadable model description ({e!r})") from e
    else:
        guessed = _guess_kind(set(tensors), tensors.get("model"))
        if guessed is not None and guessed != kind:
            raise ModelLoadError(
                f"{where} holds a {guessed} model but steps.superres.model is {kind!r}"
            )
        if variant != "lite":
            raise ModelLoadError(
                f"{where} does not describe its {variant} architecture (no "
                f"mlm:hyperparameters.{_META_KEY}); the released Swin/Mamba bundles state it only "
                "in their load.py: set steps.superres.trust_remote_code: true to run it, or use "
                "a bundle written by stac2cube"
            )
        d = model_definition(kind, "lite")
        d = dataclasses.replace(
            d,
            components=tuple(_infer_cnnsr(c, tensors.get(c.name, {})) for c in d.components),
        )
    if d.kind != kind:
        raise ModelLoadError(f"{where} holds a {d.kind} model but steps.superres.model is {kind!r}")
    if d.variant != variant:
        raise ModelLoadError(
            f"{where} holds a {d.variant} model but steps.superres.variant is {variant!r}"
        )
    return d


def _weights_from(
    d: ModelDefinition, tensors: Mapping[str, Mapping[str, torch.Tensor]], where: str
) -> ModelWeights:
    nets: dict[str, nn.Module] = {}
    masks: dict[str, torch.Tensor] = {}
    for c in d.components:
        if c.name not in tensors:
            raise ModelLoadError(f"{where}: no weights for the {c.name} network")
        if c.mask_name not in tensors or _MASK_KEY not in tensors[c.mask_name]:
            raise ModelLoadError(
                f"{where}: no hard-constraint mask {c.mask_name} (tensor {_MASK_KEY!r})"
            )
        net = build_network(c)
        try:
            net.load_state_dict(dict(tensors[c.name]), strict=True)
        except RuntimeError as e:
            raise ModelLoadError(
                f"{where}: the {c.name} weights do not fit a {c.architecture} with "
                f"{dict(c.params)}: {str(e).splitlines()[0]}"
            ) from e
        nets[c.name] = net.eval()
        m = tensors[c.mask_name][_MASK_KEY]
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ModelLoadError(f"{where}: mask {c.mask_name} is not a square 2-D tensor")
        masks[c.mask_name] = m.float()
    return ModelWeights(d, nets, masks)


def _find_weight_file(folder: Path, stem: str, hrefs: Mapping[str, str]) -> Path | None:
    if stem in hrefs:
        p = folder / hrefs[stem]
        if p.is_file():
            return p
    for suf in WEIGHT_SUFFIXES:
        p = folder / f"{stem}{suf}"
        if p.is_file():
            return p
    return None


def read_mlm(folder: Path) -> dict[str, Any]:
    """The bundle's ``mlm.json`` (a STAC Item), checked to be one."""
    f = folder / "mlm.json"
    if not folder.is_dir():
        raise ModelLoadError(f"model bundle {folder} is not a directory")
    if not f.is_file():
        raise ModelLoadError(
            f"model bundle {folder} has no mlm.json; point steps.superres.bundle at the folder "
            "mlstac.download wrote (or write_bundle made)"
        )
    try:
        item: dict[str, Any] = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{f} is not valid JSON: {e}") from e
    if not isinstance(item, dict) or item.get("type") != "Feature" or "assets" not in item:
        raise ModelLoadError(f"{f} is not a STAC Item with assets (MLM extension)")
    return item


def load_bundle(
    folder: str | Path,
    *,
    kind: str,
    variant: str,
    device: str = "cpu",
    tile_size: int = NATIVE_TILE,
    trust_remote_code: bool = False,
    source: str | None = None,
) -> LoadedModel:
    """Build a model from a local mlstac / STAC-MLM bundle folder, loading only tensors.

    With ``trust_remote_code`` and a ``load.py`` in the bundle, its ``compiled_model(path,
    device)`` builds the model instead (that runs the bundle's Python code)."""
    folder = Path(folder)
    item = read_mlm(folder)
    model_id = str(item.get("id") or folder.name)
    props = item.get("properties") or {}
    hrefs: dict[str, str] = {}
    for a in (item.get("assets") or {}).values():
        href = str(a.get("href", ""))
        name = Path(href).name
        for suf in WEIGHT_SUFFIXES:
            if name.endswith(suf):
                hrefs[name[: -len(suf)]] = name
    meta = (props.get("mlm:hyperparameters") or {}).get(_META_KEY)
    if trust_remote_code and meta is None and (folder / "load.py").is_file():
        return _load_remote_code(folder, kind, variant, device, tile_size, model_id)
    stems = set(hrefs)
    for suf in WEIGHT_SUFFIXES:
        stems |= {p.name[: -len(suf)] for p in folder.glob(f"*{suf}")}
    stems.discard("example_data")
    files: dict[str, Path] = {}
    for stem in sorted(stems):
        p = _find_weight_file(folder, stem, hrefs)
        if p is not None:
            files[stem] = p
    where = f"model bundle {folder}"
    if meta is None:  # a released bundle: the files its kind needs, named as upstream names them
        needed = [n for s, *_ in _layout(kind) for n in (s, s.replace("model", "hard_constraint"))]
        if "model" in files and not ({"sr_model", "f2_model"} <= set(files)) and kind == "full_x4":
            raise ModelLoadError(f"{where} holds a single-stage model, not full_x4")
        missing = [n for n in needed if n not in files]
        if missing:
            raise ModelLoadError(
                f"{where} lacks {', '.join(f'{m}.safetensor' for m in missing)} (a {kind} "
                f"model needs {', '.join(needed)})"
            )
    tensors = {stem: _load_safetensors(p)[0] for stem, p in files.items()}
    d = _definition_for(kind, variant, meta, tensors, where)
    needed = [n for c in d.components for n in (c.name, c.mask_name)]
    missing = [n for n in needed if n not in files]
    if missing:
        raise ModelLoadError(
            f"{where} lacks {', '.join(f'{m}.safetensor' for m in missing)} (a {d.kind} model "
            f"needs {', '.join(needed)})"
        )
    weights = _weights_from(d, tensors, where)
    shas = {files[n].name: _sha256(files[n]) for n in needed}
    module = assemble(weights, tile_size=tile_size, device=device)
    return LoadedModel(
        module,
        d,
        model_id,
        source or f"bundle:{folder}",
        combined_sha256(shas),
        shas,
        device,
        tile_size,
        weights.n_parameters(),
    )


def load_weights_file(
    path: str | Path,
    architecture: str,
    *,
    kind: str,
    variant: str,
    device: str = "cpu",
    tile_size: int = NATIVE_TILE,
) -> LoadedModel:
    """Build a model from one safetensors file written by :func:`save_weights` (tensors keyed
    ``<file stem>.<name>``; the definition in its metadata, else inferred for CNNSR)."""
    p = Path(path)
    where = f"weights file {p}"
    flat, meta = _load_safetensors(p)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        stem, _, name = k.partition(".")
        if not name:
            raise ModelLoadError(
                f"{where}: tensor {k!r} has no '<network>.' prefix; the file must hold a whole "
                "model as save_weights writes it (for a released bundle folder use "
                "steps.superres.bundle)"
            )
        tensors.setdefault(stem, {})[name] = v
    desc = None
    if _META_KEY in meta:
        try:
            desc = json.loads(meta[_META_KEY])
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{where}: unreadable model description ({e})") from e
    d = _definition_for(kind, variant, desc, tensors, where)
    archs = {c.architecture for c in d.components}
    if archs != {architecture}:
        raise ModelLoadError(
            f"{where} holds {'+'.join(sorted(archs))} networks, not {architecture!r} "
            "(steps.superres.architecture)"
        )
    weights = _weights_from(d, tensors, where)
    sha = _sha256(p)
    module = assemble(weights, tile_size=tile_size, device=device)
    return LoadedModel(
        module, d, p.stem, f"weights:{p}", sha, {p.name: sha}, device, tile_size,
        weights.n_parameters(),
    )  # fmt: skip


def _load_remote_code(
    folder: Path, kind: str, variant: str, device: str, tile_size: int, model_id: str
) -> LoadedModel:
    """Run the bundle's ``load.py`` (``compiled_model(path, device)``): opted in by
    ``trust_remote_code``. The masks are whatever it builds, so ``tile_size`` must be the
    bundle's native tile."""
    if tile_size != NATIVE_TILE:
        raise ModelLoadError(
            f"with trust_remote_code the bundle's own code builds the model for "
            f"{NATIVE_TILE}-pixel tiles; set steps.superres.tile_size: {NATIVE_TILE}"
        )
    log.warning("running the Python code of model bundle %s (trust_remote_code)", folder)
    name = f"_stac2cube_bundle_{hashlib.sha1(str(folder).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, folder / "load.py")
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {folder / 'load.py'}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        module: nn.Module = mod.compiled_model(folder, device=device)
    except Exception as e:
        raise ModelLoadError(f"the load.py of {folder} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(name, None)
    files = sorted(
        p for suf in WEIGHT_SUFFIXES for p in folder.glob(f"*{suf}") if p.stem != "example_data"
    )
    shas = {p.name: _sha256(p) for p in files}
    d = model_definition(kind, variant)
    n = sum(int(p.numel()) for p in module.parameters())
    return LoadedModel(
        module.eval(), d, model_id, f"remote-code:{folder}", combined_sha256(shas), shas,
        device, tile_size, n,
    )  # fmt: skip


def download_bundle(
    hub_id: str,
    kind: str,
    variant: str,
    *,
    cache_dir: str | None = None,
    revision: str | None = None,
    allow_download: bool = False,
    include_code: bool = False,
) -> Path:
    """The local folder of a released bundle from a Hugging Face repository (e.g.
    ``tacofoundation/sen2sr``), downloaded into ``cache_dir`` when ``allow_download``.

    Only ``mlm.json`` and the safetensors files are fetched (``load.py`` too with
    ``include_code``). Needs ``huggingface_hub`` and the network; not exercised by the tests,
    which run offline.
    """
    sub = HUB_SUBFOLDERS.get((kind, variant))
    if sub is None:
        raise ModelLoadError(
            f"no released {variant} {kind} model is known; released: "
            + ", ".join(f"{k}/{v}" for k, v in HUB_SUBFOLDERS)
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ModelLoadError(
            "downloading a model needs huggingface_hub (pip install huggingface_hub); or "
            "download the bundle yourself (mlstac.download) and set steps.superres.bundle"
        ) from e
    patterns = [f"{sub}/mlm.json", *(f"{sub}/*{s}" for s in WEIGHT_SUFFIXES)]
    if include_code:
        patterns.append(f"{sub}/load.py")
    try:
        root = snapshot_download(
            repo_id=hub_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=patterns,
            local_files_only=not allow_download,
        )
    except Exception as e:
        if not allow_download:
            raise ModelLoadError(
                f"{hub_id}/{sub} is not in the model cache ({cache_dir or 'default'}); set "
                "steps.superres.allow_download: true to fetch it, or set steps.superres.bundle "
                "to a downloaded folder"
            ) from e
        raise ModelLoadError(f"downloading {hub_id}/{sub} failed: {e}") from e
    return Path(root) / sub


__all__ = [
    "ARCHITECTURES",
    "FULL_BANDS",
    "HUB_SUBFOLDERS",
    "LITE_FEATURE_CHANNELS",
    "LITE_NUM_BLOCKS",
    "MODEL_KINDS",
    "NATIVE_TILE",
    "RGBN_BANDS",
    "SWIR_BANDS",
    "VARIANTS",
    "Component",
    "Float32Constraint",
    "LoadedModel",
    "ModelDefinition",
    "ModelLoadError",
    "ModelWeights",
    "assemble",
    "build_network",
    "combined_sha256",
    "download_bundle",
    "load_bundle",
    "load_weights_file",
    "low_pass_mask",
    "mlm_item",
    "model_definition",
    "random_model",
    "read_mlm",
    "resize_mask",
    "save_weights",
    "write_bundle",
]
