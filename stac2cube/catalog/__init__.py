"""Writing a stac2cube catalog: its layout, the store that commits items, the one-writer lock,
the failure and filter logs, the stac-geoparquet index and the kerchunk reference files.

The read side, the cube views, is :mod:`stac2cube.cube`.
"""

from __future__ import annotations

from .layout import (
    CATALOG_ID,
    CLEAN_MARK,
    CLOUD_REFERENCE_ASSET,
    FAILURE_LOG,
    FILTERED_LOG,
    INDEX_FILE,
    OLD_PREFIX,
    PREVIOUS_INDEX_FILE,
    REFERENCE_ASSET,
    REFERENCE_DIR,
    REFERENCE_DIRS,
    REFS_DIR,
    REMOVING_MARK,
    STAGING_PREFIX,
    STATE_DIR,
    VERSION_MARK,
    item_id_of,
    load_template,
    reference_base_key,
    reference_version_key,
    stac2cube_schema,
)
from .lock import CatalogLock
from .logs import FailureRecord
from .store import CatalogStore

__all__ = [
    "CATALOG_ID",
    "CLEAN_MARK",
    "CLOUD_REFERENCE_ASSET",
    "FAILURE_LOG",
    "FILTERED_LOG",
    "INDEX_FILE",
    "OLD_PREFIX",
    "PREVIOUS_INDEX_FILE",
    "REFERENCE_ASSET",
    "REFERENCE_DIR",
    "REFERENCE_DIRS",
    "REFS_DIR",
    "REMOVING_MARK",
    "STAGING_PREFIX",
    "STATE_DIR",
    "VERSION_MARK",
    "CatalogLock",
    "CatalogStore",
    "FailureRecord",
    "item_id_of",
    "load_template",
    "reference_base_key",
    "reference_version_key",
    "stac2cube_schema",
]
