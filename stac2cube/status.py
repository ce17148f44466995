"""What a catalog holds: scenes per state, open failures, filtered scenes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .io.catalog import CatalogStore, FailureRecord


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


def catalog_status(catalog: str | Path) -> CatalogStatus:
    """Count written, filtered and failed scenes of a catalog."""
    store = CatalogStore.open(catalog)
    written = set(store.item_ids())
    steps: Counter[str] = Counter()
    for item in store.iter_items():
        steps.update(s["name"] for s in item["properties"].get("stac2cube:steps", []))
    filtered = set(store.filtered()) - written
    latest: dict[str, FailureRecord] = {}
    for rec in store.failures():
        latest[rec.item_id] = rec
    open_failures = tuple(r for i, r in latest.items() if i not in written and i not in filtered)
    return CatalogStatus(
        root=str(store.root),
        collection=store.collection_id,
        written=len(written),
        filtered=len(filtered),
        failures=open_failures,
        steps=dict(steps),
        orphans=tuple(str(p) for p in store.orphans()),
    )
