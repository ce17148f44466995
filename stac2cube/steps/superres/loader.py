"""The model a :class:`~.config.SuperResConfig` names, on the device it names, once per process.

A local bundle folder, a weights file, or a released bundle from the Hugging Face cache
(:mod:`.hub`): this is the I/O of the super-resolution step, done by
:meth:`~.step.SuperResStep.prepare`. Loaded models are cached per process, keyed by the file's
path, modification time and size, so a replaced file is loaded again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import StepError
from .config import SuperResConfig

if TYPE_CHECKING:
    from .weights import LoadedModel


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
    from .hub import download_bundle
    from .weights import load_bundle, load_weights_file

    what, where, arch = source
    if what == "bundle":
        return load_bundle(
            Path(where).expanduser(), kind=kind, variant=variant, device=device,
            tile_size=tile_size, trust_remote_code=trust,
        )  # fmt: skip
    if what == "weights":
        assert arch is not None
        return load_weights_file(
            Path(where).expanduser(), arch, kind=kind, variant=variant, device=device,
            tile_size=tile_size,
        )  # fmt: skip
    revision, cache_dir, allow = extra
    folder = download_bundle(
        where, kind, variant, cache_dir=cache_dir, revision=revision, allow_download=allow,
        include_code=trust,
    )  # fmt: skip
    return load_bundle(
        folder, kind=kind, variant=variant, device=device, tile_size=tile_size,
        trust_remote_code=trust, source=f"hub:{where}@{revision or 'main'}",
    )  # fmt: skip


def load_model(cfg: SuperResConfig, device: str) -> LoadedModel:
    """The model ``cfg`` names, on ``device`` (``cpu``/``cuda``), cached per process (keyed by
    the source's path, modification time and size, so a replaced file is reloaded)."""
    try:
        from . import weights  # noqa: F401
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


__all__ = ["clear_model_cache", "load_model", "resolve_device"]
