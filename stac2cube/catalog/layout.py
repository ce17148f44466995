"""Where things are in a stac2cube catalog: the names of its files and directories, the keys of
its reference assets, and the templates its catalog and collection are rendered from.

The whole layout, and why it is crash safe, is described in ``docs/catalog.md``.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from ..errors import CatalogError

STATE_DIR = "_stac2cube"
"""Directory (in the catalog root) of the logs, the lock and the clean-exit mark."""
FAILURE_LOG = "failures.jsonl"
FILTERED_LOG = "filtered.jsonl"
STAGING_PREFIX = ".staging-"
"""An item is built in ``<collection>/.staging-<item>/`` before it is swapped into place."""
OLD_PREFIX = ".replaced-"
REMOVING_MARK = ".removing"
"""File put in an item directory that is being removed (see
:meth:`~stac2cube.catalog.store.CatalogStore.remove_item`)."""
CLEAN_MARK = "clean-exit"
"""In the state directory while the last run that wrote the catalog ended normally (see
:meth:`~stac2cube.catalog.store.CatalogStore.take_clean_mark`)."""
CATALOG_ID = "stac2cube"
REFERENCE_ASSET = "coreg-reference"
"""Key of the collection asset that holds the co-registration reference image."""
REFERENCE_DIR = "_coreg-reference"
CLOUD_REFERENCE_ASSET = "cloud-reference"
"""Key of the collection asset that holds the clear-sky reference of the multi-temporal cloud
test (``steps.cloudmask.temporal_threshold``)."""
REFERENCE_DIRS: Mapping[str, str] = {
    REFERENCE_ASSET: REFERENCE_DIR,
    CLOUD_REFERENCE_ASSET: "_cloud-reference",
}
"""Collection reference assets -> the directory (in the collection) that holds their file."""
VERSION_MARK = "-v"
"""Version ``n >= 2`` of reference ``key`` is the collection asset ``f"{key}-v{n}"``, its file in
the same directory as version 1 (the asset ``key`` itself)."""
INDEX_FILE = "items.parquet"
"""The collection's stac-geoparquet index (:mod:`stac2cube.catalog.index`), next to its JSON."""
PREVIOUS_INDEX_FILE = ".items-previous.parquet"
"""The index as it was before a run's commits, read back when the run writes the new one."""
CUBE_DIR = "_cube"
"""Directory (in the catalog root) of the versioned virtual cube: its Icechunk repository and
the COG links its references point to (:mod:`stac2cube.catalog.virtual`)."""
REFS_DIR = "_kerchunk"
"""Directory (in the catalog root) of the items' kerchunk references
(:mod:`stac2cube.catalog.kerchunk`)."""


def reference_version_key(key: str, version: int) -> str:
    """The collection asset of version ``version`` of reference ``key`` (1: ``key`` itself)."""
    return key if version == 1 else f"{key}{VERSION_MARK}{version}"


def reference_base_key(asset_key: str) -> tuple[str, int] | None:
    """``(reference key, version)`` of a reference asset key (``cloud-reference-v2`` ->
    ``("cloud-reference", 2)``), None when it is not one."""
    if asset_key in REFERENCE_DIRS:
        return asset_key, 1
    base, mark, n = asset_key.rpartition(VERSION_MARK)
    if mark and base in REFERENCE_DIRS and n.isdigit() and int(n) >= 2:
        return base, int(n)
    return None


def item_id_of(href: str) -> str:
    """The id of the item an item link points to (``./<id>/<id>.json``): ``Path(href).stem``
    without building a Path (done for every link of a large collection)."""
    return os.path.splitext(os.path.basename(href))[0]


def load_template(name: str, **values: str) -> dict[str, Any]:
    """A JSON template from ``catalog_templates/`` with ``${name}`` placeholders filled."""
    text = files("stac2cube.catalog_templates").joinpath(name).read_text()
    escaped = {k: json.dumps(v)[1:-1] for k, v in values.items()}
    try:
        doc: dict[str, Any] = json.loads(_BracedTemplate(text).substitute(escaped))
    except KeyError as exc:
        raise CatalogError(f"template {name} needs a value for {exc}") from exc
    doc.pop("$comment", None)
    return doc


class _BracedTemplate(string.Template):
    """Only ``${name}`` is a placeholder (so ``$comment``/``$schema`` keys stay as they are)."""

    _braced_only = (
        r"\$(?:(?P<escaped>\$)|\{(?P<braced>[_a-z][_a-z0-9]*)\}"
        r"|(?P<named>(?!))|(?P<invalid>(?!)))"
    )
    pattern = _braced_only  # type: ignore[assignment]


def stac2cube_schema() -> dict[str, Any]:
    """The JSON Schema of the stac2cube provenance extension."""
    path = files("stac2cube.catalog_templates").joinpath("stac2cube/v1.0.0/schema.json")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema
