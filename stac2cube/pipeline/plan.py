"""Incremental planning: which scenes need work (new, failed before, stale) and why,
decided on the client from the catalog's items or its index."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pystac

from ..catalog import (
    CatalogStore,
)
from ..config import Config
from ..radiometry import (
    baseline_from_properties,
    processing_baseline,
)
from .read import _REFERENCE_LEVELS
from .steps import active_steps
from .summary import SceneOutcome

log = logging.getLogger(__name__)


def plan_scene(
    item: pystac.Item,
    twin: pystac.Item | None,
    config: Config,
    store: CatalogStore,
    failed_before: set[str],
    filtered: Mapping[str, Any] | None,
    l1c_readable: Callable[[pystac.Item], bool] | None = None,
    references: frozenset[str] = frozenset(),
) -> tuple[SceneOutcome | None, str | None, Mapping[str, Any] | None]:
    """Decide on the client whether a scene needs work: (skip outcome | None, reason, existing).

    ``references``: :func:`available_references`, once per run."""
    if (
        filtered is not None
        and _same_source_and_config(item, filtered, config)
        and not _filtered_without_reference(filtered, references)
    ):
        return (
            SceneOutcome(item.id, "skipped", "plan", f"filtered: {filtered['reason']}"),
            None,
            None,
        )
    existing = store.read_item(item.id)
    reason = needs_processing(
        item, existing, config, twin=twin, l1c_readable=l1c_readable, references=references
    )
    if reason is None:
        return SceneOutcome(item.id, "skipped", "plan", "up to date"), None, None
    if item.id in failed_before and reason == "new":
        if not config.run.reprocess_failed:
            return SceneOutcome(item.id, "skipped", "plan", "failed before"), None, None
        reason = "failed before"
    if reason.startswith("stale"):
        log.info("%s is %s: it will be replaced", item.id, reason)
    return None, reason, existing


def _same_source_and_config(source: pystac.Item, record: Mapping[str, Any], config: Config) -> bool:
    # a filter is decided before the superres step: its model files do not matter
    return bool(
        record.get("config_hash") in (config.config_hash, config.legacy_config_hash)
        and record.get("source_updated") == source.properties.get("updated")
        and record.get("processing_baseline") == processing_baseline(source)
    )


def needs_processing(
    source: pystac.Item,
    existing: Mapping[str, Any] | None,
    config: Config,
    *,
    twin: pystac.Item | None = None,
    l1c_readable: Callable[[pystac.Item], bool] | None = None,
    references: frozenset[str] = frozenset(),
) -> str | None:
    """Why ``source`` must be processed (``new``, ``stale: ...``), or None if up to date.

    ``references`` names the catalog references the catalog holds now
    (:func:`available_references`): an item made without one of them is stale.

    ``twin`` is the L1C twin found in this run (if a step needs one): an item built without it
    (masked without s2cloudless) or with another twin is stale. An item masked without it
    because reading this very twin was refused is stale only when ``l1c_readable(twin)`` says
    the storage serves it now (an update without L1C credentials must not redo every scene).
    """
    reason = _staleness(source.id, source.properties, existing, config, references)
    if reason is not None or existing is None:
        return reason
    props = existing.get("properties", {})
    if twin is not None:
        used = {
            i["item"] for i in props.get("stac2cube:inputs", []) if i["band"].startswith("toa:")
        }
        if used != {twin.id}:
            if not _l1c_refused(props, twin.id):
                return "stale: L1C twin now available"
            if l1c_readable is not None and l1c_readable(twin):
                return "stale: L1C twin readable now"
    return None


def _l1c_refused(props: Mapping[str, Any], twin_id: str) -> bool:
    """Whether the item (its properties) was masked without s2cloudless because reading the L1C
    twin ``twin_id`` was refused."""
    for step in props.get("stac2cube:steps", []):
        s2c = step.get("results", {}).get("s2cloudless")
        if step.get("name") == "cloudmask" and isinstance(s2c, Mapping):
            reason = str(s2c.get("reason", ""))
            return reason.startswith("L1C read refused") and twin_id in reason
    return False


def _staleness(
    source_id: str,
    source_props: Mapping[str, Any],
    existing: Mapping[str, Any] | None,
    config: Config,
    references: frozenset[str] = frozenset(),
) -> str | None:
    """:func:`needs_processing` without the L1C twin, from the source's id and properties."""
    if existing is None:
        return "new"
    props = existing.get("properties", {})
    if not _same_config(props, config):
        return "stale: other processing configuration"
    src = props.get("stac2cube:source", {})
    if src.get("updated") != source_props.get("updated"):
        return "stale: source item updated"
    if src.get("processing_baseline") != baseline_from_properties(source_id, source_props):
        return "stale: new processing baseline"
    if _lacked_reference(props, references):
        return REFERENCE_NOW_AVAILABLE
    return None


def _same_config(props: Mapping[str, Any], config: Config) -> bool:
    """Whether the item was made with ``config``: its hash is the current one, or the one the
    earlier rule gives (:attr:`~stac2cube.config.Config.legacy_config_hash`), which named the
    model by its path; then the model files its step records must be the ones there now."""
    recorded = props.get("stac2cube:config_hash")
    if recorded == config.config_hash:
        return True
    if recorded != config.legacy_config_hash:
        return False
    records = {s.get("name"): s.get("results", {}) for s in props.get("stac2cube:steps", [])}
    for name, content in config.hashed_content.items():
        now = set(content.get("weight_files", {}).values())
        used = set((records.get(name) or {}).get("weight_files", {}).values())
        if now and not (used and used <= now):
            return False
    return True


REFERENCE_NOW_AVAILABLE = "stale: reference now available"
"""The reason of an item made without a catalog reference its steps read, once the catalog
holds it."""


def available_references(config: Config, store: CatalogStore) -> frozenset[str]:
    """The catalog references the configured steps read that the catalog holds now, by the
    name a scene reads them under (``reference``: co-registration, ``clear_reference``: the
    multi-temporal cloud test). Read once per run, before the run builds any: an item made
    without one of them (:func:`needs_processing`) is stale from the run after it exists."""
    names = set()
    for step, cfg in active_steps(config):
        for name, req in step.required_aux(cfg).items():
            key = _REFERENCE_LEVELS.get(req.level)
            if key is not None and store.reference_versions(key):
                names.add(name)
    return frozenset(names)


def _lacked_reference(props: Mapping[str, Any], references: frozenset[str]) -> bool:
    """Whether the item was made without one of ``references``: a scene that read a reference
    lists it in ``stac2cube:inputs`` as ``<name>:<band>`` (``reference:B08``)."""
    if not references:
        return False
    used = {str(i.get("band", "")).partition(":")[0] for i in props.get("stac2cube:inputs") or ()}
    return not references <= used


def _filtered_without_reference(record: Mapping[str, Any], references: frozenset[str]) -> bool:
    """Whether a filter record is of a scene that co-registration did not write
    (``on_failure: skip``) for want of the reference the catalog holds now."""
    res = record.get("results") or {}
    # the step records ``reference: None`` when it had none
    missing = "reference" in res and res["reference"] is None
    return "reference" in references and res.get("status") == "failed" and missing


PLAN_COLUMNS = ("id", "stac2cube:config_hash", "stac2cube:source", "stac2cube:inputs")


def unchanged_check(
    config: Config,
    store: CatalogStore,
    index: Any = None,
    references: frozenset[str] = frozenset(),
) -> Callable[[Mapping[str, Any]], bool]:
    """What ``search(unchanged=...)`` asks about each raw source item: does the catalog already
    hold it, up to date? (Only used when no step needs an L1C twin, whose search needs the
    parsed items.) With the catalog's current index (:func:`read_index_table`) the answer comes
    from its columns, without reading one item JSON per scene; the item JSON decides only for
    an item hashed by the earlier rule (its model check reads the step records).
    ``references``: :func:`available_references`."""
    known: dict[str, dict[str, Any]] | None = None
    if index is not None and set(PLAN_COLUMNS) <= set(index.column_names):
        ids, hashes, sources = (index.column(c).to_pylist() for c in PLAN_COLUMNS[:3])
        # the inputs only matter when a reference an item may lack exists
        inputs = index.column(PLAN_COLUMNS[3]).to_pylist() if references else None
        known = {
            str(i): {
                "properties": {
                    PLAN_COLUMNS[1]: hashes[n],
                    PLAN_COLUMNS[2]: sources[n] or {},
                    PLAN_COLUMNS[3]: (inputs[n] or []) if inputs is not None else [],
                }
            }
            for n, i in enumerate(ids)
        }
    legacy = config.legacy_config_hash if config.hashed_content else None

    def check(feat: Mapping[str, Any]) -> bool:
        item_id = str(feat["id"])
        existing = known.get(item_id) if known is not None else store.read_item(item_id)
        hashed = existing["properties"][PLAN_COLUMNS[1]] if known and existing else None
        if legacy is not None and hashed == legacy != config.config_hash:
            existing = store.read_item(item_id)  # the index lacks the step records
        return (
            existing is not None
            and _staleness(item_id, feat["properties"], existing, config, references) is None
        )

    return check


def replaced_versions(existing: Mapping[str, Any], reason: str) -> list[dict[str, Any]]:
    """The ``stac2cube:replaces`` record of a new item version: what it replaced and why
    (the last 10 versions)."""
    props = existing.get("properties", {})
    prev = {
        "reason": reason,
        "config_hash": props.get("stac2cube:config_hash"),
        "source": props.get("stac2cube:source"),
        "finished": props.get("stac2cube:finished"),
        "software": props.get("processing:software", {}).get("stac2cube"),
    }
    return [prev, *props.get("stac2cube:replaces", [])][:10]
