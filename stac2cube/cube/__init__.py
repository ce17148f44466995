"""Views of a stac2cube catalog as a data cube."""

from .kerchunk import open_virtual_cube
from .odc import catalog_items, open_cube, reflectance

__all__ = ["catalog_items", "open_cube", "open_virtual_cube", "reflectance"]
