"""The cube as a versioned virtual Zarr dataset: any snapshot of the catalog's Icechunk store.

:func:`open_virtual_cube` opens HEAD or the snapshot of any earlier run (written by
:mod:`stac2cube.catalog.virtual`) lazily with xarray: every read goes straight to the COG tiles
the snapshot references, no GDAL, and a COG changed after its snapshot fails the read.
:func:`cube_versions` lists the snapshots. Stored values are returned as they are (as
:func:`~stac2cube.cube.odc.open_cube` gives them on the catalog's grid), or with ``decode=True``
as reflectance decoded with each item's own scale and offset.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from ..catalog.store import CatalogStore
from ..catalog.virtual import (
    BRANCH,
    ENCODINGS_ATTR,
    ITEMS_GROUP,
    REMOVED_ATTR,
    TAG_PREFIX,
    quiet_zarr,
    repository,
)
from ..errors import CatalogError

if TYPE_CHECKING:
    import icechunk
    import xarray as xr

log = logging.getLogger(__name__)

BAND_VAR = "bands"
"""Name of the stacked variable (``time, band, y, x``) that ``band_dim=True`` returns."""


@dataclass(frozen=True)
class CubeVersion:
    """One snapshot of the virtual cube."""

    snapshot_id: str
    run_id: str
    """The run that committed it ("" for the repository's first, empty snapshot)."""
    written_at: dt.datetime
    message: str
    tags: tuple[str, ...]


def cube_versions(catalog: str | Path) -> list[CubeVersion]:
    """The snapshots of the catalog's virtual cube, newest first (HEAD is the first)."""
    repo = repository(CatalogStore.open(catalog).root)
    tags: dict[str, list[str]] = {}
    for tag in repo.list_tags():
        tags.setdefault(repo.lookup_tag(tag), []).append(tag)
    out = []
    for snap in repo.ancestry(branch=BRANCH):
        meta = snap.metadata or {}
        out.append(
            CubeVersion(
                snap.id,
                str(meta.get("run_id", "")),
                snap.written_at,
                snap.message,
                tuple(sorted(tags.get(snap.id, []))),
            )
        )
    return out


def readonly_session(root: Path, version: str | None = None) -> icechunk.Session:
    """A read-only session on HEAD (``version=None``), a run id, a tag or a snapshot id."""
    repo = repository(root)
    if version is None:
        return repo.readonly_session(BRANCH)
    tags = set(repo.list_tags())
    for tag in (version, f"{TAG_PREFIX}{version}"):
        if tag in tags:
            return repo.readonly_session(tag=tag)
    try:
        return repo.readonly_session(snapshot_id=version)
    except Exception:  # icechunk: no such snapshot (or not an id at all)
        known = sorted(t[len(TAG_PREFIX) :] for t in tags if t.startswith(TAG_PREFIX))
        raise CatalogError(
            f"{version!r} is no version of the virtual cube of {root}: give a run id "
            f"({', '.join(known[-5:]) or 'none yet'}), a tag or a snapshot id "
            "(stac2cube.cube_versions)"
        ) from None


@overload
def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    version: str | None = None,
    chunks: Mapping[str, int | str] | None = None,
    decode: bool = False,
    band_dim: Literal[False] = False,
) -> xr.Dataset: ...


@overload
def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    version: str | None = None,
    chunks: Mapping[str, int | str] | None = None,
    decode: bool = False,
    band_dim: Literal[True],
) -> xr.DataArray: ...


def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    version: str | None = None,
    chunks: Mapping[str, int | str] | None = None,
    decode: bool = False,
    band_dim: bool = False,
) -> xr.Dataset | xr.DataArray:
    """Open the catalog's virtual cube lazily: ``time, y, x`` per band, time sorted.

    ``version``: ``None`` for HEAD, or a run id (the run's snapshot, ``stac2cube status`` and
    :func:`cube_versions` list them), a tag or a snapshot id: version *k* gives exactly the
    cube run *k* produced, also after later updates and reprocessing.

    By default ``bands`` are the assets on the item's grid; assets on another grid (20 m
    bands written at native resolution, super-resolved bands) are opened by name, one grid at a
    time, and then come on ``y``, ``x`` of their own grid.

    Values are the stored ones, with ``scale_factor``, ``add_offset`` and ``nodata`` attributes
    as :func:`~stac2cube.cube.odc.open_cube` gives them; when items encode a band differently
    (another scale or offset), raw values cannot share one set of attributes and a
    :class:`~stac2cube.errors.CatalogError` says so, unless ``decode=True``, which returns
    float32 reflectance decoded with each item's own encoding (NaN where nodata).

    ``chunks`` are the dask chunks (per dimension, like xarray's; default ``"auto"``: whole
    COG tiles, many per task). ``band_dim=True`` returns one :class:`xarray.DataArray` named
    ``bands`` with dims ``time, band, y, x`` instead (the bands must share dtype and nodata).
    """
    import xarray as xr

    root = CatalogStore.open(catalog).root
    session = readonly_session(root, version)
    from .codecs import register_codecs

    register_codecs()  # virtual-tiff's TIFF codecs, deflate decoded by libdeflate

    with quiet_zarr():
        ds = xr.open_zarr(
            session.store, consolidated=False, zarr_format=3, mask_and_scale=False, chunks=None
        )
    if "item_id" not in ds.coords:
        raise CatalogError(f"the virtual cube of {root} holds no item yet")
    removed = ds.attrs.pop(REMOVED_ATTR, None)
    if isinstance(removed, list):  # the steps removed items left: the ids stay lazy
        keep = np.ones(ds.sizes["time"], dtype=bool)
        keep[np.asarray(removed, dtype=np.int64)] = False
    else:  # a cube written before the list
        keep = np.asarray(ds["item_id"].values != "", dtype=bool)
    order = [str(n) for n in ds.attrs.get("stac2cube:assets", [])]
    order += sorted(str(n) for n in ds.data_vars if n not in order)
    names = list(bands) if bands else [n for n in order if ds[n].dims[1:] == ("y", "x")]
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise CatalogError(
            f"bands {missing} are not in the virtual cube of {root}; it holds "
            f"{sorted(map(str, ds.data_vars))}"
        )
    grids = {ds[n].dims[1:] for n in names}
    if len(grids) > 1:
        raise CatalogError(
            f"bands on different grids cannot share one virtual cube: "
            f"{', '.join(f'{n} {ds[n].dims[1:]}' for n in names)}; open each grid with its own "
            "bands=[...]"
        )
    ds = ds[names]
    (ydim, xdim) = grids.pop()
    if (ydim, xdim) != ("y", "x"):  # the bands of another grid, on their own dimensions
        ds = ds.drop_vars([d for d in ("y", "x") if d in ds.variables])
        ds = ds.rename({ydim: "y", xdim: "x"})
    # one selection of the time steps kept, in time order (removed items left empty steps; an
    # update may append scenes older than those already in the cube)
    steps = None if keep.all() else np.flatnonzero(keep)
    times = ds["time"].values if steps is None else ds["time"].values[steps]
    if len(times) > 1 and not (times[1:] >= times[:-1]).all():
        by_time = np.argsort(times, kind="stable")
        if (times[by_time][1:] == times[by_time][:-1]).any():  # ties: by item id (slower)
            ids = ds["item_id"].values if steps is None else ds["item_id"].values[steps]
            by_time = np.lexsort((ids, times))
        steps = by_time if steps is None else steps[by_time]
    if steps is not None:
        ds = ds.isel(time=steps)
    shared = ds.attrs.pop(ENCODINGS_ATTR, None)
    if isinstance(shared, dict) and all(shared.get(n) for n in names):
        # every item shares each band's encoding: the records need not be read
        triples = [[float(v) for v in shared[n]] for n in names]
        encodings = np.broadcast_to(np.array(triples), (ds.sizes["time"], len(names), 3))
    else:
        encodings = _encodings(session, names)  # (time, band, field)
        encodings = encodings if steps is None else encodings[steps]
    sizes: dict[tuple[Any, ...], tuple[tuple[int, ...], ...]] = {}  # bands share their chunking
    for b, name in enumerate(names):
        da = _chunked(ds[name], chunks, f"{session.snapshot_id}-{name}-{keep.all()}", sizes)
        ds[name] = _with_encoding(da, encodings[:, b], name, decode, root)
    ds.attrs.pop("stac2cube:assets", None)
    ds.attrs.update(stac2cube_catalog=str(catalog), stac2cube_snapshot=session.snapshot_id)
    if band_dim:  # the bands share a grid (checked above)
        dtypes = {ds[n].dtype for n in names}
        nodata = {str(ds[n].attrs.get("nodata")) for n in names}
        if len(dtypes) > 1 or len(nodata) > 1:
            raise CatalogError(
                "band_dim=True stacks bands that share dtype and nodata, but these differ: "
                + "; ".join(
                    f"{n} ({ds[n].dtype}, nodata {ds[n].attrs.get('nodata')})" for n in names
                )
                + ". Open one group at a time with bands=[...]"
            )
        da = ds.to_dataarray("band", name=BAND_VAR).transpose("time", "band", ...)
        da.attrs.update(ds.attrs)
        da.attrs.update({k: v for k, v in ds[names[0]].attrs.items()})
        return da  # type: ignore[no-any-return]
    return ds  # type: ignore[no-any-return]


def _chunked(
    da: xr.DataArray,
    chunks: Mapping[str, int | str] | None,
    token: str,
    known: dict[tuple[Any, ...], tuple[tuple[int, ...], ...]],
) -> xr.DataArray:
    """``da`` as dask chunks aligned with its Zarr chunks (``"auto"``: many per task);
    ``known`` keeps the chunk sizes of arrays already chunked."""
    stored = tuple(da.encoding.get("chunks") or da.shape)
    wanted = tuple(
        (chunks or {}).get(str(d), "auto" if chunks is None else c)
        for d, c in zip(da.dims, stored, strict=True)
    )
    key = (wanted, da.shape, str(da.dtype), stored)
    if key not in known:
        known[key] = _dask_chunks(wanted, da.shape, da.dtype, stored)
    sizes = known[key]
    # a snapshot never changes: its id names the dask arrays (no hashing of the coordinates)
    return da.chunk(dict(zip(da.dims, sizes, strict=True)), token=f"{token}-{sizes}")


_PROBE_STEPS = 4096


def _dask_chunks(
    wanted: tuple[Any, ...], shape: tuple[int, ...], dtype: Any, stored: tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """dask's ``normalize_chunks`` of ``wanted``, without its O(time) cost on a long time axis:
    auto-chunking a stored chunk of one time step gives equal blocks of k steps (and the rest),
    so k is worked out on a shorter axis and repeated; k as long as that axis: in full."""
    import dask
    from dask.array.core import normalize_chunks
    from dask.utils import parse_bytes

    def normalize(n: int) -> tuple[tuple[int, ...], ...]:
        return normalize_chunks(  # type: ignore[no-untyped-call, no-any-return]
            wanted, (n, *shape[1:]), dtype=dtype, previous_chunks=stored
        )

    n = shape[0]
    step_bytes = max(1, math.prod(shape[1:]) * np.dtype(dtype).itemsize)
    limit = parse_bytes(dask.config.get("array.chunk-size"))
    steps = max(_PROBE_STEPS, 2 * math.ceil(limit / step_bytes))  # longer than one block
    if n <= steps or wanted[0] != "auto" or stored[0] != 1:
        return normalize(n)
    probe = normalize(steps)
    k = probe[0][0]
    if k >= steps:
        return normalize(n)
    return ((k,) * (n // k) + ((n % k,) if n % k else ()), *probe[1:])


def _encodings(session: icechunk.Session, names: Sequence[str]) -> np.ndarray:
    """Each time step's (scale, offset, nodata) of ``names``: one small array read."""
    import zarr

    def read(name: str) -> np.ndarray:
        return np.asarray(zarr.open_array(session.store, path=f"{ITEMS_GROUP}/{name}", mode="r")[:])

    assets = [str(a) for a in read("asset")]
    table = read("encoding").astype("float64")
    return table[:, [assets.index(n) for n in names], :]


def _with_encoding(
    da: xr.DataArray, encoding: np.ndarray, name: str, decode: bool, root: Path
) -> xr.DataArray:
    import xarray as xr

    scale, offset, nodata = encoding[:, 0], encoding[:, 1], encoding[:, 2]
    if decode:
        s = xr.DataArray(scale.astype("float32"), dims="time")
        o = xr.DataArray(offset.astype("float32"), dims="time")
        valid = _valid(da, xr.DataArray(nodata, dims="time"))
        out = (da.astype("float32") * s + o).where(valid)
        return out.drop_vars([c for c in out.coords if c not in da.coords]).assign_attrs(
            {k: v for k, v in da.attrs.items() if k not in ("scale_factor", "add_offset", "nodata")}
        )
    if len(scale) and not (_uniform(scale) and _uniform(offset) and _uniform(nodata)):
        triples = zip(scale, offset, nodata, strict=True)
        encodings = {(float(a), float(b), str(c)) for a, b, c in triples}
        ids = da["item_id"].values
        first = (float(scale[0]), float(offset[0]), str(nodata[0]))
        other = [
            str(i)
            for i, a, b, c in zip(ids, scale, offset, nodata, strict=True)
            if (float(a), float(b), str(c)) != first
        ]
        raise CatalogError(
            f"band {name} is encoded differently across items of {root} "
            f"({len(encodings)} (scale, offset, nodata) sets, e.g. items {other[:3]} differ "
            f"from {first}): raw values cannot be decoded with one scale and offset. Open with "
            "decode=True for reflectance decoded per item"
        )
    if len(scale):
        nd = float(nodata[0])
        da.attrs.update(
            scale_factor=float(scale[0]),
            add_offset=float(offset[0]),
            nodata=nd if not math.isnan(nd) else np.nan,
        )
    return da


def _uniform(values: np.ndarray) -> bool:
    """All equal to the first (NaN equal to NaN)."""
    if values.strides == (0,):  # one value broadcast along time (a shared encoding)
        return True
    first = values[0]
    if np.isnan(first):
        return bool(np.isnan(values).all())
    return bool((values == first).all())


def _valid(da: xr.DataArray, nodata: xr.DataArray) -> xr.DataArray:
    """Valid pixels where each time step has its own nodata (NaN or a number)."""
    isnan = nodata.isnull()
    number = nodata.fillna(0).astype(da.dtype)
    valid: xr.DataArray = (isnan & da.notnull()) | (~isnan & (da != number))
    return valid
