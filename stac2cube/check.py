"""Check a written catalog: STAC schemas (offline), COG validity, file sizes and checksums, and
the virtual cube's HEAD (items it lacks, COGs changed after their snapshot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rio_cogeo.cogeo import cog_validate

from .catalog import CatalogStore
from .catalog.virtual import CubeMovedError, check_virtual_cube, has_virtual_cube
from .cube.odc import catalog_items
from .io.cog import file_checksum
from .validation import validate_catalog_tree


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_catalog` found; empty ``problems`` means the catalog is sound."""

    n_items: int
    n_assets: int
    problems: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    """Not errors: files no item references (the next run removes its own leftovers)."""


def check_catalog(catalog: str | Path) -> CheckReport:
    """Validate every STAC object, COG and checksum under ``catalog`` (dir or catalog.json)."""
    root = Path(catalog)
    if root.is_dir():
        root = root / "catalog.json"
    problems = [
        f"{p.path}: {p.pointer or '/'}: {p.message} ({p.schema})"
        for p in validate_catalog_tree(root)
    ]
    warnings = tuple(
        f"{p}: not referenced by any item (leftover of an interrupted run, or added by hand)"
        for p in CatalogStore.open(root).orphans()
    )
    items = catalog_items(root, use_index=False)  # check the JSON on disk, not the index
    n_assets = 0
    for item in items:
        for key, asset in item.assets.items():
            href = asset.get_absolute_href()
            if href is None or not Path(href).exists():
                problems.append(f"{item.id}: asset {key}: file {href} is missing")
                continue
            n_assets += 1
            path = Path(href)
            if asset.media_type and "cloud-optimized" in asset.media_type:
                ok, errors, _ = cog_validate(str(path), quiet=True)
                if not ok:
                    problems.append(f"{item.id}: asset {key}: not a valid COG: {errors}")
            size, checksum = file_checksum(path)
            want = asset.extra_fields.get("file:checksum")
            if want is not None and want != checksum:
                problems.append(f"{item.id}: asset {key}: checksum mismatch ({path})")
            want_size = asset.extra_fields.get("file:size")
            if want_size is not None and want_size != size:
                problems.append(f"{item.id}: asset {key}: size {size} != file:size {want_size}")
    store = CatalogStore.open(root)
    if has_virtual_cube(store.root):
        try:
            stale, behind = check_virtual_cube(store)
            problems.extend(stale)
            warnings += tuple(behind)
        except CubeMovedError as exc:  # not wrong, but not readable until rebuilt
            warnings += (str(exc),)
    return CheckReport(len(items), n_assets, tuple(problems), warnings)
