"""Loading a SEN2SR model from local files: a bundle folder or a single weights file.

Only tensors are read (safetensors); the networks come from :mod:`.networks`. A released bundle
that does not describe its architecture has its CNNSR sizes read off the weight shapes; its
``load.py`` runs only when asked to (``trust_remote_code``). The result, a :class:`LoadedModel`,
carries what provenance records about the model (id, source, SHA-256 of the weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .bundle import META_KEY, WEIGHT_SUFFIXES, combined_sha256, read_mlm, sha256_file
from .definitions import (
    MASK_KEY,
    NATIVE_TILE,
    Component,
    ModelDefinition,
    ModelLoadError,
    model_definition,
)
from .networks import ModelWeights, assemble, build_network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with what provenance needs about it."""

    module: nn.Module
    definition: ModelDefinition
    model_id: str
    source: str
    """``bundle:<dir name>``, ``weights:<file name>``, ``hub:<repo>/<folder>`` or
    ``remote-code:<dir name>``: names, never local paths (the weights are identified by their
    sha256, recorded beside)."""
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
            f"{e}); download it again or rewrite it with stac2cube.steps.superres."
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
                f"mlm:hyperparameters.{META_KEY}); the released Swin/Mamba bundles state it only "
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
        if c.mask_name not in tensors or MASK_KEY not in tensors[c.mask_name]:
            raise ModelLoadError(
                f"{where}: no hard-constraint mask {c.mask_name} (tensor {MASK_KEY!r})"
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
        m = tensors[c.mask_name][MASK_KEY]
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
    meta = (props.get("mlm:hyperparameters") or {}).get(META_KEY)
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
        needed = [n for c in model_definition(kind).components for n in (c.name, c.mask_name)]
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
    shas = {files[n].name: sha256_file(files[n]) for n in needed}
    module = assemble(weights, tile_size=tile_size, device=device)
    return LoadedModel(
        module,
        d,
        model_id,
        source or f"bundle:{Path(folder).name}",
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
    if META_KEY in meta:
        try:
            desc = json.loads(meta[META_KEY])
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
    sha = sha256_file(p)
    module = assemble(weights, tile_size=tile_size, device=device)
    return LoadedModel(
        module, d, p.stem, f"weights:{p.name}", sha, {p.name: sha}, device, tile_size,
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
    shas = {p.name: sha256_file(p) for p in files}
    d = model_definition(kind, variant)
    n = sum(int(p.numel()) for p in module.parameters())
    return LoadedModel(
        module.eval(), d, model_id, f"remote-code:{Path(folder).name}", combined_sha256(shas), shas,
        device, tile_size, n,
    )  # fmt: skip


__all__ = ["LoadedModel", "load_bundle", "load_weights_file"]
