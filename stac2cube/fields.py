"""The documented dataclass field used by every configuration class (here to avoid cycles:
step modules define their config with it, and :mod:`stac2cube.config` imports the steps)."""

from __future__ import annotations

import dataclasses
from typing import Any


def doc(
    text: str, default: Any = dataclasses.MISSING, *, since: str | None = None, **kw: Any
) -> Any:
    """A dataclass field with its documentation attached (shown in the config reference).

    ``since`` marks an option added after catalogs already existed (the version that added it):
    while it keeps its default it is left out of the configuration hash, so adding the option
    does not make every existing item stale."""
    if isinstance(default, list | dict | set):
        raise TypeError("use an immutable default (tuple / Mapping) in config fields")
    meta: dict[str, Any] = {"doc": text}
    if since is not None:
        meta["since"] = since
    return dataclasses.field(default=default, metadata=meta, **kw)
