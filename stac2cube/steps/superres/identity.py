"""What identifies a super-resolution model in the configuration hash: the content of its files,
not where they lie. A bundle moved to another folder keeps its hash; weights replaced in place
change it. A released model named by ``hub_id`` is identified by ``hub_id`` and ``revision``
(fields of the hash) and the folder of its kind and variant, whether or not it is downloaded yet:
a hash that changed when the download happens would make a whole catalog stale once. Pin
``revision`` to a commit: ``main`` can move.

The files are read once per configuration (:attr:`~stac2cube.config.Config.hashed_content`):
the run hashes its configuration before dispatching, and every task carries the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from .bundle import META_KEY, WEIGHT_SUFFIXES, read_mlm, sha256_file
from .definitions import ModelLoadError

if TYPE_CHECKING:
    from .config import SuperResConfig


def bundle_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a bundle folder, as the loader finds them (``example_data``,
    the released bundles' sample input, left out)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.stem != "example_data"
    )


def model_content(cfg: SuperResConfig, resolve: Callable[[str], Path]) -> dict[str, Any]:
    """The hash content of the model ``cfg`` names (``resolve`` makes a configured path
    absolute): ``weight_files`` (file → SHA-256; ``weights`` for the single-file form, whose
    name does not matter), the model description of a bundle's ``mlm.json`` and, for a bundle
    built by its own ``load.py`` (``trust_remote_code``), that file's SHA-256. Empty for a
    ``hub_id`` model. A ConfigError when the files cannot be read."""
    try:
        if cfg.bundle is not None:
            folder = resolve(cfg.bundle)
            item = read_mlm(folder)
            files = {p.name: sha256_file(p) for p in bundle_weight_files(folder)}
            if not files:
                raise ModelLoadError(f"model bundle {folder} holds no safetensors file")
            out: dict[str, Any] = {"weight_files": files}
            props = item.get("properties") or {}
            meta = (props.get("mlm:hyperparameters") or {}).get(META_KEY)
            if meta is not None:
                out["definition"] = meta
            elif cfg.trust_remote_code and (folder / "load.py").is_file():
                out["load_py"] = sha256_file(folder / "load.py")
            return out
        if cfg.weights is not None:
            return {"weight_files": {"weights": sha256_file(resolve(cfg.weights))}}
    except (ModelLoadError, OSError) as exc:
        what = "bundle" if cfg.bundle is not None else "weights"
        raise ConfigError(
            f"steps.superres.{what}: cannot read the model to hash it for the configuration "
            f"hash ({exc}); point it at the model's files (they must be readable where "
            "`stac2cube run` runs)"
        ) from exc
    return {}


__all__ = ["bundle_weight_files", "model_content"]
