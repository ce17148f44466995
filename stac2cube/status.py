"""What a catalog holds: scenes per state, open failures, filtered scenes, cube versions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .ard.assessment import AssessmentCounts, count_summaries
from .catalog import CatalogStore, FailureRecord
from .catalog.virtual import has_virtual_cube, head_items


@dataclass(frozen=True)
class CatalogStatus:
    """The state of a stac2cube catalog."""

    root: str
    collection: str
    written: int
    filtered: int
    failures: tuple[FailureRecord, ...]
    """The latest failure of every scene that is not in the catalog (yet)."""
    steps: dict[str, int] = field(default_factory=dict)
    """How many items each processing step produced."""
    orphans: tuple[str, ...] = ()
    without_s2cloudless: dict[str, int] = field(default_factory=dict)
    """Items whose cloud mask was made without the configured s2cloudless, by why (``no L1C
    twin``, ``L1C read refused``)."""
    cube_versions: tuple[tuple[str, str, str], ...] = ()
    """The virtual cube's snapshots, newest (HEAD) first: (run id, snapshot id, when)."""
    cube_items: int = 0
    """Items in the virtual cube's HEAD."""
    ard: AssessmentCounts = field(default_factory=AssessmentCounts)
    """Items at CEOS-ARD Threshold and Goal, per requirement (their ``stac2cube:ard``)."""


def catalog_status(catalog: str | Path) -> CatalogStatus:
    """Count written, filtered and failed scenes of a catalog."""
    store = CatalogStore.open(catalog)
    written = set(store.item_ids())
    steps: Counter[str] = Counter()
    without: Counter[str] = Counter()
    summaries = []
    for item in store.iter_items():
        summaries.append(item["properties"].get("stac2cube:ard"))
        records = item["properties"].get("stac2cube:steps", [])
        steps.update(s["name"] for s in records)
        for s in records:
            s2c = s.get("results", {}).get("s2cloudless") if s["name"] == "cloudmask" else None
            if isinstance(s2c, dict) and s2c.get("status") == "not run":
                without[str(s2c.get("reason", "")).partition(":")[0]] += 1
    filtered = set(store.filtered()) - written
    latest: dict[str, FailureRecord] = {}
    for rec in store.failures():
        latest[rec.item_id] = rec
    open_failures = tuple(
        r
        for i, r in latest.items()
        if (i not in written and i not in filtered) or r.stage == "virtual-cube"
    )
    versions: tuple[tuple[str, str, str], ...] = ()
    held = 0
    if has_virtual_cube(store.root):
        from .cube.virtual import cube_versions

        versions = tuple(
            (v.run_id, v.snapshot_id, v.written_at.isoformat(timespec="seconds"))
            for v in cube_versions(store.root)
            if v.run_id
        )
        held = len(head_items(store.root))
    return CatalogStatus(
        root=str(store.root),
        collection=store.collection_id,
        written=len(written),
        filtered=len(filtered),
        failures=open_failures,
        steps=dict(steps),
        orphans=tuple(str(p) for p in store.orphans()),
        without_s2cloudless=dict(without),
        cube_versions=versions,
        cube_items=held,
        ard=count_summaries(summaries),
    )
