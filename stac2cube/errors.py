"""The error hierarchy of stac2cube.

Every error the library raises on purpose derives from :class:`Stac2CubeError` and mixes in the
builtin that best describes it, so ``except ValueError`` in user code keeps working. Messages say
what was wrong *and* what to do about it. Only :mod:`stac2cube.cli` turns errors into exit codes.
"""

from __future__ import annotations


class Stac2CubeError(Exception):
    """Root of all stac2cube errors."""


class ConfigError(Stac2CubeError, ValueError):
    """The configuration has an unknown key, a wrong type or an invalid value."""


class SearchError(Stac2CubeError, RuntimeError):
    """The STAC API or local catalog could not be searched (unreachable, bad answer)."""


class EmptySearchError(SearchError):
    """The search succeeded but matched no scene."""


class ItemError(Stac2CubeError, ValueError):
    """A source STAC item is malformed or lacks what the pipeline needs (asset, CRS, date)."""


class MissingAssetError(ItemError):
    """A requested band has no asset in the source item."""


class RadiometryError(ItemError):
    """Scale/offset of a band cannot be determined unambiguously from the item."""


class AssetReadError(Stac2CubeError, OSError):
    """An asset exists in the item but its pixels could not be read (missing file, broken COG)."""


class AssetAccessError(AssetReadError):
    """The storage refused to serve an asset (HTTP 401/403, ``AccessDenied``, no credentials);
    the message says which settings or credentials are missing."""


class NoOverlapError(Stac2CubeError, ValueError):
    """A scene has no valid pixel inside the area of interest."""


class StepError(Stac2CubeError, RuntimeError):
    """A processing step failed on a scene."""


class CatalogError(Stac2CubeError, OSError):
    """The output catalog cannot be read or written."""


class CatalogLockedError(CatalogError):
    """Another stac2cube run holds the catalog's lock."""


class SchemaValidationError(Stac2CubeError, ValueError):
    """A STAC object does not validate against its JSON Schemas."""


class ReportedError(Exception):
    """An error that happened elsewhere (on a worker, or while building a reference), carried to
    the catalog's failure log under its own class name (``error_name``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.error_name = name


__all__ = [
    "AssetAccessError",
    "AssetReadError",
    "CatalogError",
    "CatalogLockedError",
    "ConfigError",
    "EmptySearchError",
    "ItemError",
    "MissingAssetError",
    "NoOverlapError",
    "RadiometryError",
    "ReportedError",
    "SchemaValidationError",
    "SearchError",
    "Stac2CubeError",
    "StepError",
]
