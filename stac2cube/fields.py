"""The documented dataclass field used by every configuration class (here to avoid cycles:
step modules define their config with it, and :mod:`stac2cube.config` imports the steps)."""

from __future__ import annotations

import dataclasses
from typing import Any


def doc(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with its documentation attached (shown in the config reference)."""
    if isinstance(default, list | dict | set):
        raise TypeError("use an immutable default (tuple / Mapping) in config fields")
    return dataclasses.field(default=default, metadata={"doc": text}, **kw)
