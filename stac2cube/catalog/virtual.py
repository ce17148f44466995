"""The versioned virtual cube: one Icechunk snapshot of virtual Zarr v3 references per run.

The repository lives in ``<catalog>/_cube/repo``. Its root group holds one array per COG asset,
``time × y × x`` (assets on another grid than the item's get their own ``y_<res>m``/``x_<res>m``
dimensions), whose chunks are references into the items' COG tiles, parsed with virtual-tiff into
VirtualiZarr manifests and written with VirtualiZarr. The ``_items`` group holds, per time step,
the item's version and each band's scale, offset and nodata.

The references never point at the catalog's own item files, which a re-run replaces, but at hard
links of them in ``<catalog>/_cube/cogs/<item>/<version>/`` (a copy where the file system has no
hard links): a snapshot keeps reading the pixels it was made from after its items are
reprocessed, and a COG changed in place fails the read (Icechunk's last-modified check). The
time axis is in commit order; :func:`stac2cube.cube.virtual.open_virtual_cube` sorts it.
How to open, and what is kept: ``docs/cube.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CatalogError
from ..io.atomic import TMP_MARK
from .layout import CUBE_DIR
from .store import CatalogStore

if TYPE_CHECKING:
    import icechunk
    import xarray as xr
    from virtualizarr.manifests import ManifestArray

log = logging.getLogger(__name__)

REPO_DIR = "repo"
"""Directory (in :data:`~stac2cube.catalog.layout.CUBE_DIR`) of the Icechunk repository."""
LINKS_DIR = "cogs"
"""Directory (in ``CUBE_DIR``) of the COG links the snapshots' references point to."""
BRANCH = "main"
ITEMS_GROUP = "_items"
"""Group of the per-time-step item records: ``version`` (of the item), ``linked_mtime``, and
``encoding`` (``time × asset × field``: each asset's scale, offset and nodata in that item)."""
REMOVED_ATTR = "stac2cube:removed_steps"
"""Root attribute: the time steps removed items left (their ``item_id`` is "")."""
ENCODINGS_ATTR = "stac2cube:encodings"
"""Root attribute: per asset, the (scale, offset, nodata) every item written so far shares
(nodata as text: it may be NaN), or null once items differ; readers then need not load the
per-item encoding records."""
ENCODING_FIELDS = ("scale", "offset", "nodata")
TAG_PREFIX = "run-"
"""A run's snapshot is tagged ``run-<run id>``."""
RECORD_CHUNK = 8192
"""Time steps per chunk of the small per-item arrays (``item_id``, encodings): a read of them
takes one chunk per 8,192 items, not one per item, and an append rewrites at most that many."""
TIME_CHUNK = 65536
"""Time steps per chunk of the ``time`` coordinate, the one array every open reads whole: two
chunks at 100,000 items (one Icechunk object read each), and an append rewrites at most 512 KB."""
SPLIT_TIME_STEPS = 1024
"""Time steps per Icechunk manifest split: a commit rewrites the manifests of the splits it
touches (an append: the last one), not every reference of the array."""


warnings.filterwarnings(  # at every chunk read, not only where this package opens an array
    "ignore", message="(Numcodecs|Imagecodecs) codecs are not in the Zarr version 3 specification"
)
_QUIET = (
    # virtual-tiff's codecs wrap numcodecs and imagecodecs ones: zarr says so on every array
    "(Numcodecs|Imagecodecs) codecs are not in the Zarr version 3 specification",
    # the item_id coordinate (variable-length strings)
    "The data type",
)


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notes on the codecs and string dtype every virtual cube uses."""
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        yield


def _icechunk() -> ModuleType:
    """icechunk, with its warning that a local file system is unsafe for concurrent commits
    silenced (a catalog has one writer: the run that holds its lock) unless ICECHUNK_LOG is set."""
    import icechunk

    global _LOGS_SET
    if not _LOGS_SET and "ICECHUNK_LOG" not in os.environ:
        icechunk.set_logs_filter("icechunk=error")
    _LOGS_SET = True
    return icechunk


_LOGS_SET = False


class CubeMovedError(CatalogError):
    """The catalog was moved or copied after its virtual cube was made: the cube's references
    (absolute paths) point to the old place. The next run, or :func:`rebuild_virtual_cube`,
    builds it anew."""


def cube_dir(root: Path) -> Path:
    return root / CUBE_DIR


def repo_dir(root: Path) -> Path:
    return cube_dir(root) / REPO_DIR


def has_virtual_cube(root: Path) -> bool:
    return (repo_dir(root) / "refs").is_dir()


def _prefix(root: Path) -> str:
    return root.resolve().as_uri() + "/"


def repository(root: Path, *, create: bool = False) -> icechunk.Repository:
    """The catalog's Icechunk repository (created with ``create`` when missing), allowed to
    read the virtual chunks under the catalog's root and nowhere else."""
    icechunk = _icechunk()

    storage = icechunk.local_filesystem_storage(str(repo_dir(root)))
    prefix = _prefix(root)
    creds = icechunk.containers_credentials({prefix: None})
    # no manifest preloading when a session starts: Icechunk's default preloads the
    # manifests of coordinate-like arrays in the background, which at 100,000 time steps held
    # opening the cube up by 0.15 s; the cube reads the manifests its reads need
    no_preload = icechunk.ManifestConfig(preload=icechunk.ManifestPreloadConfig(max_total_refs=0))
    if has_virtual_cube(root):
        repo = icechunk.Repository.open(
            storage,
            config=icechunk.RepositoryConfig(manifest=no_preload),  # merged with the stored one
            authorize_virtual_chunk_access=creds,
        )
        containers = repo.config.virtual_chunk_containers or {}
        if prefix not in containers:
            where = ", ".join(containers) or "nowhere"
            raise CubeMovedError(
                f"the virtual cube of {root} references COGs under {where}, not under this "
                "catalog: it was moved or copied. The next run rebuilds it, or "
                "`stac2cube.catalog.virtual.rebuild_virtual_cube(catalog)` now"
            )
        return repo  # type: ignore[no-any-return]
    if not create:
        raise CatalogError(
            f"the catalog {root} has no virtual cube yet: a run with output.virtual_cube "
            "(the default) writes one, or `stac2cube.catalog.virtual.rebuild_virtual_cube`"
        )
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(root)))
    )
    split = icechunk.ManifestSplittingConfig.from_dict(
        {
            icechunk.ManifestSplitCondition.AnyArray(): {
                icechunk.ManifestSplitDimCondition.DimensionName("time"): SPLIT_TIME_STEPS
            }
        }
    )
    config.manifest = icechunk.ManifestConfig(preload=no_preload.preload, splitting=split)
    repo_dir(root).parent.mkdir(parents=True, exist_ok=True)
    created = icechunk.Repository.create(storage, config, authorize_virtual_chunk_access=creds)
    return created  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# per item: links and manifests


def item_version(item: Mapping[str, Any]) -> str:
    """A token naming one processing of an item (its ``stac2cube:finished`` time)."""
    props = item.get("properties", {})
    stamp = str(props.get("stac2cube:finished") or props.get("updated") or "")
    return re.sub(r"[^0-9A-Za-z]", "", stamp) or "0"


def cog_assets(item: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The item's COG assets, in the item's order."""
    return {
        k: a
        for k, a in item.get("assets", {}).items()
        if "cloud-optimized" in str(a.get("type", ""))
    }


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (a copy where hard links are refused); atomic. A ``dst``
    that is another file (a copied catalog) is linked anew: changes to ``src`` must reach it."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}{TMP_MARK}{os.getpid()}")  # a crash's leftover: recovered
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    # Icechunk checks last-modified times to the second: the file's time is set to a whole
    # second already past, which the snapshot records, so that a change made at any later
    # moment (also within the same second) is later than it
    settled = math.floor(time.time()) - 1
    st = tmp.stat()
    if st.st_mtime > settled:
        os.utime(tmp, ns=(st.st_atime_ns, settled * 1_000_000_000))
    os.replace(tmp, dst)


def link_item(store: CatalogStore, item: Mapping[str, Any]) -> dict[str, Path]:
    """Link the item's COGs into ``_cube/cogs/<item>/<version>/``; asset key -> link path."""
    item_id = str(item["id"])
    base = cube_dir(store.root) / LINKS_DIR / item_id / item_version(item)
    links = {}
    for key, asset in cog_assets(item).items():
        name = Path(str(asset["href"])).name
        src = store.item_dir(item_id) / name
        if not src.is_file():
            raise CatalogError(f"item {item_id}: asset {key} ({src}) is missing")
        _link(src, base / name)
        links[key] = base / name
    return links


def item_manifests(paths: Mapping[str, Path]) -> dict[str, ManifestArray]:
    """The full-resolution level of each COG as a VirtualiZarr manifest array (virtual-tiff)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtual_tiff import VirtualTIFF
    from virtualizarr.manifests import ManifestArray
    from zarr.core.metadata.v3 import ArrayV3Metadata

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    parse = VirtualTIFF(ifd=0)
    out = {}
    for key, path in paths.items():
        with quiet_zarr():
            arr = parse(path.resolve().as_uri(), registry)._group.arrays["0"]
        # the TIFF tags are no attributes of the cube, and its dimensions are named by the cube
        meta: dict[str, Any] = {
            **arr.metadata.to_dict(),
            "attributes": {},
            "dimension_names": None,
        }
        meta["codecs"] = [_THREADED.get(_codec_name(c), c) for c in meta["codecs"]]
        out[key] = ManifestArray(
            metadata=ArrayV3Metadata.from_dict(meta), chunkmanifest=arr.manifest
        )
    return out


_THREADED: Mapping[str, dict[str, Any]] = {
    "HorizontalDeltaCodec": {"name": "imagecodecs_delta", "configuration": {"axis": -1}},
    "numcodecs.zlib": {"name": "imagecodecs_deflate"},
}
"""The same decoding (TIFF predictor 2, zlib streams) by virtual-tiff's imagecodecs codecs, which
decode in worker threads (libdeflate) rather than on zarr's event loop: reads are faster."""


def _codec_name(codec: Any) -> str:
    return str(codec.get("name") if isinstance(codec, Mapping) else codec)


def asset_encoding(asset: Mapping[str, Any]) -> tuple[float, float, float]:
    """An asset's (scale, offset, nodata) from its ``raster:bands`` (nodata NaN when none)."""
    rb = (asset.get("raster:bands") or [{}])[0]
    nodata = rb.get("nodata")
    nodata_f = math.nan if nodata in (None, "nan") else float(nodata)
    return float(rb.get("scale", 1.0)), float(rb.get("offset", 0.0)), nodata_f


def _grid_dims(item: Mapping[str, Any], asset: Mapping[str, Any]) -> tuple[str, str]:
    own = asset.get("proj:transform")
    grid = item.get("properties", {}).get("proj:transform")
    if own is None or own == grid:
        return "y", "x"
    res = f"{abs(float(own[0])):g}".replace(".", "p")
    return f"y_{res}m", f"x_{res}m"


def _time(item: Mapping[str, Any]) -> np.datetime64:
    return np.datetime64(str(item["properties"]["datetime"]).replace("Z", "").split("+")[0], "ns")


def item_dataset(store: CatalogStore, item: Mapping[str, Any]) -> tuple[xr.Dataset, xr.Dataset]:
    """One item as a virtual dataset (one time step) and its ``_items`` record."""
    import xarray as xr

    assets = cog_assets(item)
    links = link_item(store, item)
    arrays = item_manifests(links)
    t = [_time(item)]
    data = {}
    rec: dict[str, Any] = {"version": ("time", np.array([item_version(item)], dtype=object))}
    mtime = max((p.stat().st_mtime for p in links.values()), default=0.0)
    rec["linked_mtime"] = ("time", np.array([mtime]))
    for key, arr in arrays.items():
        dims = ("time", *_grid_dims(item, assets[key]))
        data[key] = xr.Variable(dims, np.expand_dims(arr, axis=0))
    names = sorted(arrays)  # one order in every item: the cube's assets are those of each item
    table = np.array([[asset_encoding(assets[k]) for k in names]])
    rec["encoding"] = (("time", "asset", "field"), table)
    coords: dict[str, Any] = {
        "time": t,
        "item_id": ("time", np.array([str(item["id"])], dtype=object)),
    }
    for key, arr in arrays.items():  # cell centres of each grid
        ydim, xdim = (str(d) for d in data[key].dims[1:])
        transform = assets[key].get("proj:transform") or item["properties"]["proj:transform"]
        a, _, c, _, e, f = (float(v) for v in transform[:6])
        height, width = arr.shape
        coords[ydim] = f + e * (np.arange(height) + 0.5)
        coords[xdim] = c + a * (np.arange(width) + 0.5)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs["crs"] = str(item["properties"].get("proj:code", ""))
    return ds, xr.Dataset(rec, coords={"time": t, "asset": names, "field": list(ENCODING_FIELDS)})


# ---------------------------------------------------------------------------------------------
# snapshots


@dataclass
class SnapshotResult:
    """What one snapshot commit did."""

    snapshot_id: str | None
    appended: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    """Item id -> why it could not join the cube (a layout other than the cube's)."""


def _item_array(session: icechunk.Session) -> Any:
    """The cube's ``item_id`` array (a zarr array), or None while the cube holds no item."""
    import zarr

    try:
        return zarr.open_array(session.store, path="item_id", mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.ArrayNotFoundError):
        return None


def _item_ids(session: icechunk.Session) -> np.ndarray | None:
    arr = _item_array(session)
    return None if arr is None else np.asarray(arr[:], dtype=object)


def head_items(catalog: str | Path) -> dict[str, str]:
    """Item id -> item version of every item in the cube's HEAD."""
    session = repository(Path(catalog)).readonly_session(BRANCH)
    with quiet_zarr():
        return head_versions(session, _item_ids(session))


def _layout(arr: Any) -> dict[str, Any]:
    """What must match for an item's array to join a cube array: all but the time length."""
    meta = arr.metadata.to_dict()
    meta.pop("attributes", None)
    meta.pop("dimension_names", None)
    meta["shape"] = list(meta["shape"])[-2:]
    grid = meta.get("chunk_grid", {}).get("configuration", {})
    if "chunk_shape" in grid:
        grid["chunk_shape"] = list(grid["chunk_shape"])[-2:]
    return dict(meta)


def _stamp(mtime: float) -> dt.datetime:
    """The time the snapshot's last-modified check compares with: the newest link's (a whole
    second, see :func:`_link`; Icechunk keeps it to the second)."""
    return dt.datetime.fromtimestamp(math.ceil(mtime), dt.UTC)


def commit_snapshot(
    store: CatalogStore,
    run_id: str,
    changed: Iterable[str] = (),
    removed: Iterable[str] = (),
    *,
    sync: bool = False,
    fresh: bool = False,
    new: Iterable[str] = (),
    held: Mapping[str, Mapping[str, Any]] | None = None,
) -> SnapshotResult:
    """Commit one snapshot: items ``changed`` by the run are appended (new) or have their
    references replaced (already in the cube), ``removed`` ones leave it; with ``sync`` the
    cube is first compared with the whole catalog (after an interrupted run). Items whose COG
    layout differs from the cube's are refused (``SnapshotResult.refused``). ``fresh`` starts
    the cube's arrays anew in the same snapshot. ``new``: items of ``changed`` or ``removed`` the
    caller knows are not in the cube (the catalog had no such item): they are appended (or, when
    removed, left alone) without looking up the cube's item list, so that an update of new
    scenes costs the same in any cube; reprocessed and removed items are looked up at their
    datetime on the ``time`` axis. ``held``: the item JSON the catalog held for removed items
    it no longer has (read from the catalog otherwise). Nothing to do: no snapshot. A crash
    before the commit leaves the previous snapshot as HEAD."""
    with quiet_zarr():
        return _commit_snapshot(
            store,
            run_id,
            changed,
            removed,
            sync=sync,
            fresh=fresh,
            known_new=frozenset(new),
            held_items=held or {},
        )


def _commit_snapshot(
    store: CatalogStore,
    run_id: str,
    changed: Iterable[str],
    removed: Iterable[str],
    *,
    sync: bool,
    fresh: bool,
    known_new: frozenset[str] = frozenset(),
    held_items: Mapping[str, Mapping[str, Any]] | None = None,
) -> SnapshotResult:
    import virtual_tiff  # noqa: F401  (registers the TIFF codecs with zarr)
    import zarr

    repo = repository(store.root, create=True)
    session = repo.writable_session(BRANCH)
    if fresh:
        session.store.sync_clear()
    changed = list(dict.fromkeys(changed))
    # a scene filtered the first time it was seen (the catalog did not hold it) is not in the
    # cube either: nothing to remove, and no reason to read the item list
    removed = [i for i in dict.fromkeys(removed) if sync or fresh or i not in known_new]
    items: dict[str, dict[str, Any]] = {}  # item JSON of `changed`, read once
    index: dict[str, int] | None = None
    if sync or fresh:
        ids = _item_ids(session)
    else:  # the cube's item list is not read, only whether it has one
        ids = None if _item_array(session) is None else np.array([], dtype=object)
        old = [i for i in changed if i not in known_new]
        if ids is not None and (old or removed):  # looked up at their times
            items = {i: it for i in old if (it := store.read_item(i)) is not None}
            docs = _held_items(store, removed, held_items or {})
            if docs is not None and _lists_removed_steps(session):
                index = _positions_by_time(session, {**items, **docs})
            if index is None:  # not all found at their times: the whole list is read
                ids = _item_ids(session)
    if index is None:
        index = _positions(ids, [*changed, *removed])
    removed = [r for r in removed if r in index]
    if sync:
        in_catalog = set(store.item_ids())
        held = head_versions(session, ids)
        for item_id in sorted(in_catalog):
            item = store.read_item(item_id)
            if item is not None and held.get(item_id) != item_version(item):
                changed.append(item_id)
        removed += [i for i in held if i not in in_catalog and i not in removed]
        changed = list(dict.fromkeys(changed))
        index = _positions(ids, [*changed, *removed])
    result = SnapshotResult(None)
    new: list[tuple[xr.Dataset, xr.Dataset]] = []
    replace: dict[int, tuple[xr.Dataset, xr.Dataset]] = {}
    layouts = _cube_layouts(session) if ids is not None else {}
    for item_id in changed:
        item = items.get(item_id) or store.read_item(item_id)
        if item is None:
            continue
        vds, rec = item_dataset(store, item)
        why = _refusal(vds, layouts)
        if why:
            result.refused[item_id] = why
            continue
        if item_id in index:
            replace[index[item_id]] = (vds, rec)
            result.replaced.append(item_id)
        else:
            new.append((vds, rec))
            if not layouts:
                layouts = {str(k): _layout(v.data) for k, v in vds.data_vars.items()}
            result.appended.append(item_id)
    if result.refused and not fresh and _one_layout(store):
        # every item of the catalog now has the new layout (a changed grid, dtype or COG
        # profile reprocessed them all): the cube starts anew in this snapshot
        log.info("the items' COG layout changed: the virtual cube is rebuilt in this snapshot")
        return _commit_snapshot(store, run_id, store.item_ids(), (), sync=False, fresh=True)
    for start, group in _runs(replace):
        _write_region(session, group, start)
    if new:
        append_items(session, new, first=ids is None)
    if removed:
        arr = zarr.open_array(session.store, path="item_id", mode="r+")
        where = np.array(sorted(index[i] for i in removed))
        arr.set_orthogonal_selection((where,), np.array([""] * len(where), dtype=arr.dtype))
        result.removed = removed
    if not session.has_uncommitted_changes:
        return result
    root = zarr.open_group(session.store, mode="r+")
    root.attrs.update({"stac2cube:run_id": run_id})
    # the time steps removed items left (kept as a list: readers need not load the item ids)
    gone = sorted(index[i] for i in result.removed)
    before = root.attrs.get(REMOVED_ATTR)
    if fresh or ids is None:
        root.attrs[REMOVED_ATTR] = gone
    elif isinstance(before, list):
        if gone:
            root.attrs[REMOVED_ATTR] = sorted({*map(int, before), *gone})
    elif len(ids):  # a cube from before the list (its ids were read): listed once
        root.attrs[REMOVED_ATTR] = sorted({*np.flatnonzero(ids == "").tolist(), *gone})
    shared = _shared_encodings(
        [rec for _, rec in [*new, *replace.values()]],
        None if fresh or ids is None else root.attrs.get(ENCODINGS_ATTR, _UNKNOWN),
    )
    if shared is not None:
        root.attrs[ENCODINGS_ATTR] = shared
    if "stac2cube:assets" not in root.attrs and layouts:  # the items' asset order
        root.attrs["stac2cube:assets"] = list(layouts)
    sid = session.commit(
        f"stac2cube run {run_id}: +{len(result.appended)} ~{len(result.replaced)} "
        f"-{len(result.removed)} items",
        metadata={"run_id": run_id},
    )
    tag = f"{TAG_PREFIX}{run_id}"
    if tag not in repo.list_tags():
        repo.create_tag(tag, sid)
    result.snapshot_id = sid
    return result


_UNKNOWN = "unknown"


def _shared_encodings(
    recs: Sequence[xr.Dataset], before: Any
) -> dict[str, list[str] | None] | None:
    """The :data:`ENCODINGS_ATTR` after items with records ``recs`` were written into a cube
    whose attribute was ``before`` (None: a cube started anew; :data:`_UNKNOWN`: a cube written
    before the attribute, which keeps not having one); None: leave the attribute as it is."""
    if before == _UNKNOWN or (before is not None and not isinstance(before, dict)):
        return None
    out: dict[str, list[str] | None] = dict(before or {})
    for rec in recs:
        table = np.asarray(rec["encoding"].values, dtype=np.float64)  # (time, asset, field)
        for a, name in enumerate(str(n) for n in rec["asset"].values):
            for row in table[:, a, :]:
                triple = [repr(float(v)) for v in row]
                if name not in out and before is None:
                    out[name] = triple
                elif out.get(name) != triple:
                    out[name] = None
    return out


def head_versions(session: icechunk.Session, ids: np.ndarray | None) -> dict[str, str]:
    import zarr

    if ids is None:
        return {}
    versions = np.asarray(
        zarr.open_array(session.store, path=f"{ITEMS_GROUP}/version", mode="r")[:]
    )
    return {str(i): str(v) for i, v in zip(ids, versions, strict=True) if i}


def _cube_layouts(session: icechunk.Session) -> dict[str, dict[str, Any]]:
    import zarr

    root = zarr.open_group(session.store, mode="r")
    out = {}
    for name, arr in root.arrays():
        if name in ("time", "item_id") or arr.ndim != 3:
            continue
        out[name] = _layout(arr)
    return out


def _refusal(vds: xr.Dataset, layouts: Mapping[str, Mapping[str, Any]]) -> str:
    if not layouts:
        return ""
    have, want = set(vds.data_vars), set(layouts)
    if have != want:
        return (
            f"its COG assets {sorted(map(str, have))} are not the cube's {sorted(want)}; "
            "rebuild the cube (rebuild_virtual_cube) after changing the bands"
        )
    for name, var in vds.data_vars.items():
        if _layout(var.data) != layouts[str(name)]:
            return (
                f"its {name} COG has another layout (grid, tile size, dtype, codec or nodata) "
                "than the cube's; rebuild the cube (rebuild_virtual_cube) after changing the "
                "grid or the COG profile"
            )
    return ""


def _one_layout(store: CatalogStore) -> bool:
    """Whether all items of the catalog have the same COG assets, each of one layout (their
    current files' headers are read)."""
    seen: dict[str, str] = {}
    names: set[str] | None = None
    for item_id in store.item_ids():
        item = store.read_item(item_id)
        if item is None:
            continue
        paths = {
            k: store.item_dir(item_id) / Path(str(a["href"])).name
            for k, a in cog_assets(item).items()
        }
        if names is None:
            names = set(paths)
        elif set(paths) != names:
            return False
        for key, arr in item_manifests(paths).items():
            layout = json.dumps(_layout(arr), sort_keys=True, default=str)
            if seen.setdefault(key, layout) != layout:
                return False
    return names is not None


TIME_UNITS = "microseconds since 1970-01-01"
"""Fixed on the first write: units xarray picks from the first items (``days since`` for one
item) would not hold the times of later ones."""


def _chunk_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in {**ds.coords, **ds.data_vars}.items():
        if (var.dims[:1] == ("time",) and var.ndim < 3) or name == "encoding":
            enc[str(name)] = {"chunks": (RECORD_CHUNK, *var.shape[1:])}
    enc["time"].update(chunks=(TIME_CHUNK,), units=TIME_UNITS, dtype="int64")
    return enc


def append_items(
    session: icechunk.Session, new: Sequence[tuple[xr.Dataset, xr.Dataset]], *, first: bool
) -> None:
    """Append items (:func:`item_dataset` pairs) along ``time`` in ``session`` (``first``: the
    cube's first items, which create its arrays). Not committed."""
    import xarray as xr

    vds = xr.concat([v for v, _ in new], dim="time", coords="minimal", compat="override")
    rec = xr.concat([r for _, r in new], dim="time")
    stamp = _stamp(float(rec["linked_mtime"].max()))
    if first:
        for name, enc in _chunk_encoding(vds).items():
            vds[name].encoding.update(enc)
        vds.vz.to_icechunk(session.store, last_updated_at=stamp)
        rec.to_zarr(session.store, group=ITEMS_GROUP, mode="w", encoding=_chunk_encoding(rec))
    else:
        vds.vz.to_icechunk(session.store, append_dim="time", last_updated_at=stamp)
        rec.to_zarr(session.store, group=ITEMS_GROUP, append_dim="time")


def _positions(ids: np.ndarray | None, wanted: Sequence[str]) -> dict[str, int]:
    """Time step of each of ``wanted`` in the cube (numpy, not a dict of every item)."""
    if ids is None or not wanted:
        return {}
    where = np.flatnonzero(np.isin(ids, np.array(wanted, dtype=object)))
    return {str(ids[t]): int(t) for t in where}


def _held_items(
    store: CatalogStore, removed: Sequence[str], held: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]] | None:
    """The item JSON of each of ``removed`` (from ``held``, else from the catalog), to find
    them at their times; None when one of them is in neither (the whole list must be read)."""
    out: dict[str, Mapping[str, Any]] = {}
    for item_id in removed:
        item = held.get(item_id) or store.read_item(item_id)
        if item is None:
            return None
        out[item_id] = item
    return out


def _lists_removed_steps(session: icechunk.Session) -> bool:
    """Whether the cube keeps the list of the time steps removed items left
    (:data:`REMOVED_ATTR`); a cube from before the list must have its item ids read once."""
    import zarr

    return isinstance(zarr.open_group(session.store, mode="r").attrs.get(REMOVED_ATTR), list)


def _positions_by_time(
    session: icechunk.Session, items: Mapping[str, Mapping[str, Any]]
) -> dict[str, int] | None:
    """Time step of each of ``items`` (id -> item JSON) found through the ``time`` axis: the
    ids of only the steps at their times are read, not the whole item list, so that
    replacing or removing an item costs the same in any cube. None when an item is not at its
    time (its datetime changed, or it is not in the cube): the caller then reads the whole
    list."""
    import zarr

    if not items:  # no item JSON left to look up: nothing to find
        return {}
    axis = zarr.open_array(session.store, path="time", mode="r")
    wanted = _axis_values(axis, np.array([_time(it) for it in items.values()]))
    steps = np.flatnonzero(np.isin(np.asarray(axis[:]), wanted))
    if not len(steps):
        return None
    at = zarr.open_array(session.store, path="item_id", mode="r").get_orthogonal_selection((steps,))
    ids = np.asarray(at, dtype=object)
    found = {str(i): int(t) for i, t in zip(ids, steps, strict=True) if str(i) in items}
    return found if len(found) == len(items) else None


def _runs(
    by_step: Mapping[int, tuple[xr.Dataset, xr.Dataset]],
) -> Iterator[tuple[int, Sequence[tuple[xr.Dataset, xr.Dataset]]]]:
    """Consecutive time steps grouped: one region write per run, not one per item."""
    steps = sorted(by_step)
    start = 0
    for k in range(1, len(steps) + 1):
        if k == len(steps) or steps[k] != steps[k - 1] + 1:
            yield steps[start], [by_step[t] for t in steps[start:k]]
            start = k


def _write_region(
    session: icechunk.Session, group: Sequence[tuple[xr.Dataset, xr.Dataset]], t: int
) -> None:
    """Replace the references and records of consecutive time steps from ``t``."""
    import xarray as xr

    vds = xr.concat([v for v, _ in group], dim="time", coords="minimal", compat="override")
    rec = xr.concat([r for _, r in group], dim="time")
    stamp = _stamp(float(rec["linked_mtime"].max()))
    region = {"time": slice(t, t + len(group))}
    vds = vds.drop_vars([n for n, v in vds.variables.items() if "time" not in v.dims])
    rec = rec.drop_vars([n for n, v in rec.variables.items() if "time" not in v.dims])
    vds.vz.to_icechunk(session.store, region=region, last_updated_at=stamp)
    rec.to_zarr(session.store, group=ITEMS_GROUP, region=region)
    for path in ("time", f"{ITEMS_GROUP}/time"):
        _write_times(session, path, t, vds["time"].values)


def _axis_values(axis: Any, when: np.ndarray) -> np.ndarray:
    """Datetimes ``when`` as the time axis ``axis`` (a zarr array) stores them: in its own CF
    units (:data:`TIME_UNITS` since they were fixed) and dtype."""
    from xarray.coding.times import encode_cf_datetime

    calendar = axis.attrs.get("calendar")
    num, _, _ = encode_cf_datetime(
        when, units=str(axis.attrs["units"]), calendar=None if calendar is None else str(calendar)
    )
    return np.asarray(num, dtype=axis.dtype)


def _write_times(session: icechunk.Session, path: str, start: int, when: np.ndarray) -> None:
    """A region write leaves an index coordinate as it was: the times of replaced items (a
    datetime may change upstream) are written here, in the array's own units, when they
    differ."""
    import zarr

    arr = zarr.open_array(session.store, path=path, mode="r+")
    new = _axis_values(arr, when)
    stop = start + len(new)
    if not np.array_equal(np.asarray(arr[start:stop]), new):
        arr[start:stop] = new


def check_virtual_cube(store: CatalogStore) -> tuple[list[str], list[str]]:
    """What ``stac2cube validate`` says of the cube's HEAD: problems (COGs changed since their
    snapshot: one chunk per band and item is read through Icechunk, whose last-modified check
    fails on a changed file) and warnings (catalog items it lacks or holds in an older version,
    as a killed run leaves them: the next run brings the cube up to date)."""
    import virtual_tiff  # noqa: F401  (registers the TIFF codecs with zarr)
    import zarr

    with quiet_zarr():
        session = repository(store.root).readonly_session(BRANCH)
        ids = _item_ids(session)
        held = head_versions(session, ids)
        problems: list[str] = []
        behind: list[str] = []
        for item_id in store.item_ids():
            item = store.read_item(item_id)
            if item is None:
                continue
            if item_id not in held:
                behind.append(f"{item_id}: not in the virtual cube's HEAD (the next run adds it)")
            elif held[item_id] != item_version(item):
                behind.append(
                    f"{item_id}: the virtual cube's HEAD holds an earlier version of it (the "
                    "next run replaces it)"
                )
        if ids is None:
            return problems, behind
        root = zarr.open_group(session.store, mode="r")
        arrays = [(name, arr) for name, arr in root.arrays() if arr.ndim == 3]
        for t, item_id in enumerate(ids):
            if not item_id:
                continue
            for name, arr in arrays:
                try:
                    arr[t, 0, 0]
                except Exception as exc:  # icechunk: the COG changed, or is gone
                    first = str(exc).strip().splitlines()[0].strip(" x|")
                    problems.append(
                        f"{item_id}: {name}: the virtual cube cannot read it ({first}); the COG "
                        "changed after its snapshot: rebuild_virtual_cube, or reprocess the item"
                    )
    return problems, behind


def rebuild_virtual_cube(catalog: str | Path, run_id: str = "rebuild") -> SnapshotResult:
    """Commit a snapshot that holds the catalog's items as they are now, from scratch (after a
    change of bands, grid or COG profile, or after the catalog was moved). Earlier snapshots
    stay readable where their links are."""
    store = CatalogStore.open(catalog)
    root = store.root
    if has_virtual_cube(root):
        try:
            repository(root)
        except CubeMovedError:  # start a new repository, the old one kept aside
            aside = repo_dir(root).with_name(f"{REPO_DIR}-moved")
            shutil.rmtree(aside, ignore_errors=True)
            repo_dir(root).rename(aside)
    return commit_snapshot(store, run_id, store.item_ids(), fresh=True)
