"""Committing a scene's result to the catalog (client side, the only writer of catalog
JSON), and the run summary's fields taken from the result."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from typing import Any

import pystac

from ..catalog import (
    CatalogStore,
)
from ..config import Config
from ..errors import ReportedError
from .plan import replaced_versions
from .summary import SceneOutcome
from .task import SceneResult, SceneTask

log = logging.getLogger(__name__)


def commit(
    result: SceneResult,
    task: SceneTask,
    source: pystac.Item,
    existing: Mapping[str, Any] | None,
    config: Config,
    store: CatalogStore,
    run_id: str,
) -> SceneOutcome:
    """Apply a scene's result to the catalog (client side: the only writer of catalog JSON)."""
    outcome = SceneOutcome(
        result.item_id,
        result.status,
        result.stage,
        result.message,
        result.seconds,
        **_cloud_outcome(result),
        **_coreg_outcome(result),
    )
    if result.status == "failed":
        store.record_failure(
            result.item_id,
            result.stage,
            ReportedError(result.error, result.message),
            run_id=run_id,
        )
        shutil.rmtree(store.staging_dir(result.item_id), ignore_errors=True)
    elif result.status == "filtered":
        from ..catalog.kerchunk import remove_item_references

        store.record_filtered(source, config.config_hash, result.message, result.results or {})
        store.remove_item(result.item_id)
        remove_item_references(store, result.item_id)
    else:
        assert result.doc is not None
        doc = result.doc
        if existing is not None:
            doc["properties"]["stac2cube:replaces"] = replaced_versions(existing, task.reason)
        store.add_item(doc)
        if config.output.kerchunk:
            from ..catalog.kerchunk import write_item_references

            try:
                write_item_references(store, doc)
            except Exception as exc:  # the item is fine; only its virtual-view entry is missing
                log.warning("kerchunk references of %s failed: %s", result.item_id, exc)
                store.record_failure(result.item_id, "kerchunk", exc, run_id=run_id)
    return outcome


def _coreg_outcome(result: SceneResult) -> dict[str, str]:
    """``SceneOutcome`` fields of the co-registration step's outcome."""
    if result.doc is None:
        return {}
    steps = result.doc.get("properties", {}).get("stac2cube:steps", [])
    found = [s.get("results", {}) for s in steps if s.get("name") == "coreg"]
    if not found:
        return {}
    status = str(found[0].get("status", ""))
    return {
        "coreg_status": status,
        "coreg_reason": "" if status == "ok" else str(found[0].get("reason", "")),
    }


def _cloud_outcome(result: SceneResult) -> dict[str, str]:
    """``SceneOutcome`` fields of a scene masked without the configured s2cloudless."""
    if result.doc is not None:
        steps = result.doc.get("properties", {}).get("stac2cube:steps", [])
        found = [s.get("results", {}) for s in steps if s.get("name") == "cloudmask"]
        res: Mapping[str, Any] = found[0] if found else {}
    else:  # filtered by the cloud step: its results came back
        res = result.results or {}
    s2c = res.get("s2cloudless")
    if not isinstance(s2c, Mapping) or s2c.get("status") != "not run":
        return {}
    method = str(res.get("method_used", "scl"))
    if res.get("temporal", {}).get("status") == "applied":
        method += " + multi-temporal test"
    return {"s2cloudless_not_run": str(s2c.get("reason", "")), "cloud_method": method}
