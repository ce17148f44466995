"""The SEN2SR networks in PyTorch: built from sen2sr's own classes, assembled for inference.

:func:`build_network` makes one network of a :class:`~.definitions.ModelDefinition` (CNNSR for
``lite``, Swin2SR or MambaSR); :func:`assemble` wraps the networks in sen2sr's ``srmodel``
classes with the hard constraint, its low-pass mask resampled to the tile size. Building never
runs code shipped with a model; :mod:`.weights` loads tensors into these networks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .definitions import MASK_KEY, Component, ModelDefinition, ModelLoadError


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
    """sen2sr's hard constraint with its low-pass mask on ``device``. The mask is a plain
    attribute, not a buffer, so ``Module.to`` never moves it, and ``HardConstraint`` puts it on
    its own ``device`` argument (default ``cpu``): it must be given."""
    from sen2sr.models.tricks import HardConstraint

    return Float32Constraint(HardConstraint(low_pass_mask=mask, bands=bands, device=device))


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
            out[c.mask_name] = {MASK_KEY: self.masks[c.mask_name].detach().to("cpu").contiguous()}
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

    # sen2sr's wrappers move what they wrap to their own ``device`` argument (default cpu)
    six = list(range(6))
    if d.kind == "rgbn_x4":
        c = d.component("model")
        model: nn.Module = nonreference.srmodel(
            prep("model"), _constraint(mask(c), "all", device), device=device
        )
    elif d.kind == "swir_x2":
        c = d.component("model")
        model = referencex2.srmodel(prep("model"), _constraint(mask(c), six, device), device=device)
    else:
        sr = nonreference.srmodel(
            prep("sr_model"),
            _constraint(mask(d.component("sr_model")), "all", device),
            device=device,
        )
        f2 = referencex2.srmodel(
            prep("f2_model"), _constraint(mask(d.component("f2_model")), six, device), device=device
        )
        model = referencex4.srmodel(
            sr,
            f2,
            prep("model"),
            _constraint(mask(d.component("model")), six, device),
            device=device,
        )
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


__all__ = [
    "Float32Constraint",
    "ModelWeights",
    "assemble",
    "build_network",
    "low_pass_mask",
    "random_model",
    "resize_mask",
]
