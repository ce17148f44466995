"""stac2cube: Sentinel-2 archives to analysis-ready STAC catalogs of COGs, opened as cubes."""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from .config import Config, load_config
from .errors import Stac2CubeError
from .pipeline import RunSummary, run

if TYPE_CHECKING:
    from .cube import (
        cube_versions,
        open_cube,
        open_kerchunk_cube,
        open_virtual_cube,
        reflectance,
    )


def __getattr__(name: str) -> Any:
    """The cube views, imported on first use (xarray and odc-stac are not needed to write)."""
    if name in (
        "cube",
        "cube_versions",
        "open_cube",
        "open_kerchunk_cube",
        "open_virtual_cube",
        "reflectance",
    ):
        cube = importlib.import_module(".cube", __name__)
        return cube if name == "cube" else getattr(cube, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Config",
    "RunSummary",
    "Stac2CubeError",
    "__version__",
    "cube_versions",
    "load_config",
    "open_cube",
    "open_kerchunk_cube",
    "open_virtual_cube",
    "reflectance",
    "run",
]
