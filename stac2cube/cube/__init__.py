"""Views of a stac2cube catalog as a data cube.

The views import xarray, odc-stac, Icechunk and kerchunk when first used, not with this package:
a Dask worker or a CLI command that only writes a catalog never pays for them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kerchunk import open_kerchunk_cube
    from .odc import catalog_items, open_cube, reflectance
    from .virtual import cube_versions, open_virtual_cube

_LAZY = {
    "catalog_items": "odc",
    "open_cube": "odc",
    "reflectance": "odc",
    "open_kerchunk_cube": "kerchunk",
    "open_virtual_cube": "virtual",
    "cube_versions": "virtual",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in ("odc", "kerchunk", "virtual"):  # ``stac2cube.cube.odc.X`` after the package
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "catalog_items",
    "cube_versions",
    "open_cube",
    "open_kerchunk_cube",
    "open_virtual_cube",
    "reflectance",
]
