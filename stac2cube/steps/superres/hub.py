"""The released SEN2SR bundles on the Hugging Face Hub, found in (or downloaded to) a local cache.

Only ``mlm.json`` and the weights are fetched, and only with ``allow_download``; without it a
bundle must already be in the cache. Needs ``huggingface_hub``; offline machines use a local
bundle folder instead (``steps.superres.bundle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from .bundle import WEIGHT_SUFFIXES
from .definitions import ModelLoadError

HUB_SUBFOLDERS: Final[Mapping[tuple[str, str], str]] = {
    ("rgbn_x4", "lite"): "SEN2SRLite/NonReference_RGBN_x4",
    ("swir_x2", "lite"): "SEN2SRLite/Reference_RSWIR_x2",
    ("full_x4", "lite"): "SEN2SRLite/main",
    ("rgbn_x4", "mamba"): "SEN2SR/NonReference_RGBN_x4",
    ("swir_x2", "swin"): "SEN2SR/Reference_RSWIR_x2",
    ("full_x4", "mamba"): "SEN2SR/main",
}
"""Folder of each released model in the ``tacofoundation/sen2sr`` Hugging Face repository."""


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


__all__ = ["HUB_SUBFOLDERS", "download_bundle"]
