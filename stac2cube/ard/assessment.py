"""The collection's CEOS-ARD self-assessment: how many items meet each requirement at
Threshold and at Goal, with the requirement table, written beside ``collection.json`` and
linked from it (``ceos-ard-assessment``); and the counts ``stac2cube status`` prints."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalog import CatalogStore
from ..io.atomic import write_json_atomic
from .profile import ASSESSMENT_FILE, CEOS_ARD_SCHEMA
from .requirements import (
    REQUIREMENTS,
    SPECIFICATION,
    SPECIFICATION_URL,
    SPECIFICATION_VERSION,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssessmentCounts:
    """Items of a collection at Threshold and at Goal, per requirement."""

    items: int = 0
    threshold: Mapping[str, int] = field(default_factory=dict)
    goal: Mapping[str, int] = field(default_factory=dict)
    why: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Per requirement, why items miss it (at Threshold, else at Goal): reason → items."""
    unassessed: int = 0
    """Items written before stac2cube assessed items (no ``stac2cube:ard``)."""
    every_threshold: int = 0
    """Items that meet every Threshold requirement."""


def count_summaries(summaries: Iterable[Mapping[str, Any] | None]) -> AssessmentCounts:
    """Add up items' ``stac2cube:ard`` summaries (None: an item without one)."""
    n = unassessed = every = 0
    threshold: Counter[str] = Counter()
    goal: Counter[str] = Counter()
    why: dict[str, Counter[str]] = {}
    for s in summaries:
        if not s:
            unassessed += 1
            continue
        n += 1
        every += not s.get("not_met")
        threshold.update(s.get("threshold", ()))
        goal.update(s.get("goal", ()))
        for rid, reason in (s.get("why") or {}).items():
            why.setdefault(rid, Counter())[str(reason)] += 1
    return AssessmentCounts(
        n,
        {r.id: threshold[r.id] for r in REQUIREMENTS},
        {r.id: goal[r.id] for r in REQUIREMENTS},
        {k: dict(v) for k, v in why.items()},
        unassessed,
        every,
    )


def collection_summaries(store: CatalogStore) -> list[Mapping[str, Any] | None]:
    """Every item's ``stac2cube:ard``: from the index when it is current (one column), else
    from the item files."""
    from ..catalog.index import read_index_table

    table = None
    try:
        table = read_index_table(store, columns=["stac2cube:ard"])
    except Exception as exc:  # a broken index only means reading the items
        log.debug("index not used for the assessment: %s", exc)
    if table is not None and "stac2cube:ard" in table.column_names:
        out: list[Mapping[str, Any] | None] = table.column("stac2cube:ard").to_pylist()
        return out
    return [item.get("properties", {}).get("stac2cube:ard") for item in store.iter_items()]


def assessment_document(counts: AssessmentCounts) -> dict[str, Any]:
    """The self-assessment document of a collection with ``counts``."""
    rows = []
    for r in REQUIREMENTS:
        rows.append(
            {
                "id": r.id,
                "name": r.name,
                "threshold": r.threshold or "not required",
                "goal": r.goal,
                "how": r.how,
                "evidence": r.evidence,
                "items_at_threshold": counts.threshold.get(r.id, 0),
                "items_at_goal": counts.goal.get(r.id, 0),
                "why_not": dict(counts.why.get(r.id, {}))
                or ({r.how: counts.items} if counts.items and not r.addressed else {}),
            }
        )
    return {
        "type": "ceos-ard-self-assessment",
        "ceosard:type": "optical",
        "ceosard:specification": SPECIFICATION,
        "ceosard:specification_version": SPECIFICATION_VERSION,
        "specification": SPECIFICATION_URL,
        "assessed_by": "stac2cube (self-assessment, not peer reviewed)",
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "items": counts.items,
        "items_not_assessed": counts.unassessed,
        "items_meeting_every_threshold": counts.every_threshold,
        "requirements": rows,
    }


def write_assessment(store: CatalogStore) -> AssessmentCounts:
    """Write the collection's self-assessment and link it (and the CEOS-ARD fields) from the
    collection; returns the counts. Call it holding the catalog's lock."""
    profile_collection(store)
    counts = count_summaries(collection_summaries(store))
    doc = assessment_document(counts)
    write_json_atomic(store.collection_path.parent / ASSESSMENT_FILE, doc)
    log.info(
        "CEOS-ARD self-assessment: %d of %d item(s) meet every Threshold requirement",
        counts.every_threshold,
        counts.items,
    )
    return counts


def profile_collection(store: CatalogStore) -> bool:
    """Give the collection its CEOS-ARD summaries, links and extension (written only when that
    changes it); whether it changed. The pipeline calls it before writing the catalog index,
    which holds a copy of the collection and is used only while the two are equal."""
    coll = store.read_collection()
    changed = _collection_profile(coll)
    if changed:
        write_json_atomic(store.collection_path, coll)
    return changed


def _collection_profile(coll: dict[str, Any]) -> bool:
    """Add the CEOS-ARD summaries, links and extension to a collection; whether it changed."""
    before = repr(coll)
    summaries = coll.setdefault("summaries", {})
    summaries["ceosard:type"] = ["optical"]
    summaries["ceosard:specification"] = [SPECIFICATION]
    summaries["ceosard:specification_version"] = [SPECIFICATION_VERSION]
    if CEOS_ARD_SCHEMA not in coll.setdefault("stac_extensions", []):
        coll["stac_extensions"].append(CEOS_ARD_SCHEMA)
    wanted = [
        {
            "rel": "ceos-ard-specification",
            "href": SPECIFICATION_URL,
            "type": "application/pdf",
            "title": f"CEOS-ARD PFS Surface Reflectance {SPECIFICATION_VERSION}",
        },
        {
            "rel": "ceos-ard-assessment",
            "href": f"./{ASSESSMENT_FILE}",
            "type": "application/json",
            "title": "stac2cube's CEOS-ARD self-assessment of this collection",
        },
    ]
    links = coll.get("links", [])
    if [ln for ln in links if ln.get("rel") in _RELS] != wanted:
        # left in place when already there: item links appended after them by later runs
        # must not make the collection (and so the index written with it) change every run
        links = [ln for ln in links if ln.get("rel") not in _RELS] + wanted
    coll["links"] = links
    return repr(coll) != before


_RELS = frozenset({"ceos-ard-specification", "ceos-ard-assessment"})
