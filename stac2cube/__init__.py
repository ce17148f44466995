"""stac2cube: Sentinel-2 archives to analysis-ready STAC catalogs of COGs, opened as cubes."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, load_config
from .cube import open_cube, open_virtual_cube, reflectance
from .errors import Stac2CubeError
from .pipeline import RunSummary, run

__all__ = [
    "Config",
    "RunSummary",
    "Stac2CubeError",
    "__version__",
    "load_config",
    "open_cube",
    "open_virtual_cube",
    "reflectance",
    "run",
]
