"""Views of a stac2cube catalog as a data cube.

The views import xarray, odc-stac and kerchunk when first used, not with this package: a Dask
worker or a CLI command that only writes a catalog never pays for them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kerchunk import open_virtual_cube
    from .odc import catalog_items, open_cube, reflectance

_LAZY = {
    "catalog_items": "odc",
    "open_cube": "odc",
    "reflectance": "odc",
    "open_virtual_cube": "kerchunk",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in ("odc", "kerchunk"):  # ``stac2cube.cube.odc.X`` after ``import stac2cube``
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["catalog_items", "open_cube", "open_virtual_cube", "reflectance"]
