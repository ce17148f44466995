"""Super-resolution of Sentinel-2 bands with SEN2SR (to 2.5 m), tiled over any rectangle.

One module per part: :mod:`.config` (``steps.superres``), :mod:`.definitions` (what a model is),
:mod:`.networks` (the PyTorch networks), :mod:`.bundle` (the bundle format, writing),
:mod:`.weights` (loading from local files), :mod:`.hub` (the Hugging Face cache),
:mod:`.loader` (the model a configuration names), :mod:`.checks` (input checks),
:mod:`.inputs` (what the model is handed), :mod:`.tiling` (tiled inference),
:mod:`.consistency` (back-projection) and :mod:`.step` (:class:`SuperResStep` and its plug-in).
What it does, why, and what it gives: docs/superres.md.

The names of :mod:`.networks` and :mod:`.weights` import PyTorch and are loaded on first use, so
that the configuration can be read without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from .bundle import MLM_SCHEMA, combined_sha256, mlm_item, read_mlm, save_weights, write_bundle
from .checks import (
    DN_LIMIT,
    DOUBLE_OFFSET_LIMIT,
    INPUT_RADIOMETRY,
    OFFSET_LEFT_IN_LIMIT,
    check_reflectance,
)
from .config import LAYER_SUFFIX, SuperResConfig, layer_key
from .consistency import BACK_PROJECTION_ITERATIONS, back_project, consistency_error
from .definitions import (
    ARCHITECTURES,
    FULL_BANDS,
    INPUT_BANDS,
    LITE_FEATURE_CHANNELS,
    LITE_NUM_BLOCKS,
    MODEL_KINDS,
    NATIVE_TILE,
    RGBN_BANDS,
    SWIR_BANDS,
    VARIANTS,
    Component,
    ModelDefinition,
    ModelLoadError,
    model_definition,
)
from .hub import HUB_SUBFOLDERS, download_bundle
from .inputs import (
    NATIVE_20M,
    InputFrame,
    model_input,
    native_20m_request,
    nearest_10m,
    reads_20m,
)
from .loader import clear_model_cache, load_model, resolve_device
from .step import PLUGIN, SuperResStep
from .tiling import SRRun, TileGrid, super_resolve, super_resolve_array

if TYPE_CHECKING:
    from .networks import (
        Float32Constraint,
        ModelWeights,
        assemble,
        build_network,
        low_pass_mask,
        random_model,
        resize_mask,
    )
    from .weights import LoadedModel, load_bundle, load_weights_file

_NEED_TORCH: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("Float32Constraint", "ModelWeights", "assemble", "build_network", "low_pass_mask",
         "random_model", "resize_mask"),
        "networks",
    ),
    **dict.fromkeys(("LoadedModel", "load_bundle", "load_weights_file"), "weights"),
}  # fmt: skip
"""Names whose module imports PyTorch, by module."""


def __getattr__(name: str) -> Any:
    module = _NEED_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ARCHITECTURES",
    "BACK_PROJECTION_ITERATIONS",
    "DN_LIMIT",
    "DOUBLE_OFFSET_LIMIT",
    "FULL_BANDS",
    "HUB_SUBFOLDERS",
    "INPUT_BANDS",
    "INPUT_RADIOMETRY",
    "LAYER_SUFFIX",
    "LITE_FEATURE_CHANNELS",
    "LITE_NUM_BLOCKS",
    "MLM_SCHEMA",
    "MODEL_KINDS",
    "NATIVE_20M",
    "NATIVE_TILE",
    "OFFSET_LEFT_IN_LIMIT",
    "PLUGIN",
    "RGBN_BANDS",
    "SWIR_BANDS",
    "VARIANTS",
    "Component",
    "Float32Constraint",
    "InputFrame",
    "LoadedModel",
    "ModelDefinition",
    "ModelLoadError",
    "ModelWeights",
    "SRRun",
    "SuperResConfig",
    "SuperResStep",
    "TileGrid",
    "assemble",
    "back_project",
    "build_network",
    "check_reflectance",
    "clear_model_cache",
    "combined_sha256",
    "consistency_error",
    "download_bundle",
    "layer_key",
    "load_bundle",
    "load_model",
    "load_weights_file",
    "low_pass_mask",
    "mlm_item",
    "model_definition",
    "model_input",
    "native_20m_request",
    "nearest_10m",
    "random_model",
    "read_mlm",
    "reads_20m",
    "resize_mask",
    "resolve_device",
    "save_weights",
    "super_resolve",
    "super_resolve_array",
    "write_bundle",
]
