"""The model bundle format: an mlstac / STAC-MLM folder, or one safetensors file.

A bundle is what the released SEN2SR models are (Hugging Face ``tacofoundation/sen2sr``): a folder
with an ``mlm.json`` (a STAC Item with the MLM extension) and safetensors weight files named as
upstream names them. :func:`write_bundle` writes one (with the architecture described in
``mlm:hyperparameters``, so that no ``load.py`` is needed), :func:`save_weights` the single-file
form; :mod:`.weights` reads both. The file layout is described in docs/superres.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .definitions import ModelLoadError

if TYPE_CHECKING:
    from .networks import ModelWeights

WEIGHT_SUFFIXES: Final = (".safetensor", ".safetensors")
META_KEY: Final = "stac2cube"
"""Key of the model description in ``mlm:hyperparameters`` and in a weights file's metadata."""
MLM_SCHEMA: Final = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"


def sha256_file(path: Path) -> str:
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
    import torch

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
            "mlm:hyperparameters": {META_KEY: d.to_dict()},
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
        item["assets"][stem]["file:checksum"] = "1220" + sha256_file(p)  # multihash sha2-256
    item["stac_extensions"].append("https://stac-extensions.github.io/file/v2.1.0/schema.json")
    (out / "mlm.json").write_text(json.dumps(item, indent=2) + "\n")
    return out


def save_weights(weights: ModelWeights, path: str | Path) -> Path:
    """Write ``weights`` as one safetensors file (keys ``<file stem>.<tensor>``), with the
    definition in the file's metadata: the ``weights`` + ``architecture`` form of the config."""
    from safetensors.torch import save_file

    flat = {f"{stem}.{k}": v for stem, ts in weights.tensors().items() for k, v in ts.items()}
    meta = {META_KEY: json.dumps(weights.definition.to_dict())}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(p), metadata=meta)
    return p


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


__all__ = [
    "META_KEY",
    "MLM_SCHEMA",
    "WEIGHT_SUFFIXES",
    "combined_sha256",
    "mlm_item",
    "read_mlm",
    "save_weights",
    "sha256_file",
    "write_bundle",
]
