"""The cube through its kerchunk export: the catalog's current COGs by their reference files.

:func:`open_kerchunk_cube` stacks the items' reference files (written as items are committed,
:mod:`stac2cube.catalog.kerchunk`) along ``time`` into one Zarr v3 group, variables
``(time, y, x)`` per band, and opens it lazily with xarray through fsspec's reference file
system: every read goes straight to the COG tiles, no GDAL, no Icechunk. Unlike the versioned
:func:`~stac2cube.cube.virtual.open_virtual_cube` it has no versions and no check that a COG is
unchanged since its references were made (see ``docs/cube.md``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from ..catalog.kerchunk import references_path
from ..catalog.store import CatalogStore
from ..catalog.virtual import asset_encoding, quiet_zarr
from ..errors import CatalogError

if TYPE_CHECKING:  # xarray is imported when a cube is opened
    import xarray as xr

log = logging.getLogger(__name__)


def _register_codecs() -> None:
    from .codecs import register_codecs

    register_codecs()  # virtual-tiff's TIFF codecs, deflate decoded by libdeflate


BAND_VAR = "bands"
"""Name of the stacked variable (``time, band, y, x``) that ``band_dim=True`` returns."""


@overload
def open_kerchunk_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    band_dim: Literal[False] = False,
) -> xr.Dataset: ...


@overload
def open_kerchunk_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    band_dim: Literal[True],
) -> xr.DataArray: ...


def open_kerchunk_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    band_dim: bool = False,
) -> xr.Dataset | xr.DataArray:
    """Open the catalog's COGs by their kerchunk references (``time, y, x`` per band).

    Values are the stored ones (as :func:`~stac2cube.cube.odc.open_cube` gives them on the
    catalog's grid); ``nodata`` is in each variable's attributes.

    ``chunks`` are the dask chunks (per dimension, like xarray's); by default dask sizes them
    (``"auto"``, up to its ``array.chunk-size``, whole tiles), so one task reads many tiles:
    with one task per 512 px tile, reading is about twice as slow.

    ``band_dim=True`` returns one :class:`xarray.DataArray` (named ``bands``) with dims
    ``time, band, y, x`` instead, still read lazily tile by tile; the bands must share one grid,
    tile size, dtype, codec and nodata (say the reflectance bands, without ``SCL``), otherwise a
    :class:`~stac2cube.errors.CatalogError` names the groups that could be stacked.
    """
    store = CatalogStore.open(catalog)
    item_ids = store.item_ids()
    if not item_ids:
        raise CatalogError(f"the catalog {catalog} holds no item yet: run `stac2cube run` first")
    refs = []
    for item_id in item_ids:  # each reference file holds its item's datetime: no item JSON read
        path = references_path(store, item_id)
        try:
            refs.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CatalogError(
                f"{path} is missing: build the references with "
                "`stac2cube.catalog.kerchunk.build_references(catalog)`"
            ) from None
    refs.sort(key=lambda r: (r["datetime"], r["id"]))
    item_grid = refs[0]["proj:transform"]

    def grid(ref: Mapping[str, Any], name: str) -> Any:
        return ref["assets"][name].get("proj:transform", ref["proj:transform"])

    # by default the assets on the item's grid (not, e.g., 2.5 m super-resolved bands)
    names = (
        list(bands) if bands else [n for n in refs[0]["assets"] if grid(refs[0], n) == item_grid]
    )
    grids = {n: grid(refs[0], n) for n in names if n in refs[0]["assets"]}
    if len({json.dumps(g) for g in grids.values()}) > 1:
        by_res = sorted({f"{n} ({abs(g[0]):g} m)" for n, g in grids.items()})
        raise CatalogError(
            f"bands on different grids cannot share one virtual cube: {', '.join(by_res)}; "
            "open each resolution with its own bands=[...]"
        )
    group: dict[str, Any] = {
        "zarr.json": json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    }
    attrs: dict[str, dict[str, Any]] = {}
    layouts: dict[str, dict[str, Any]] = {}
    for name in names:
        metas = [r["assets"].get(name) for r in refs]
        if any(m is None for m in metas):
            missing = [r["id"] for r, m in zip(refs, metas, strict=True) if m is None]
            raise CatalogError(f"band {name} is missing from items {missing[:5]}")
        za = metas[0]["zarr.json"]  # type: ignore[index]
        for r, m in zip(refs, metas, strict=True):
            if m["zarr.json"] != za:  # type: ignore[index]
                raise CatalogError(
                    f"band {name}: item {r['id']} has another array layout (grid, dtype or "
                    "codec) than the others; the virtual view needs one grid"
                )
        _check_encoding(name, refs)
        layouts[name] = za
        if band_dim:
            continue
        group[f"{name}/zarr.json"] = json.dumps(_stacked(za, [len(refs)], ["time", "y", "x"]))
        for t, m in enumerate(metas):
            for key, (rel, offset, size) in m["chunks"].items():  # type: ignore[index]
                group[f"{name}/c/{t}/{key.replace('.', '/')}"] = [
                    str(store.root / rel),
                    offset,
                    size,
                ]
        attrs[name] = _encoding_attrs(refs[0]["assets"][name], za)
    if band_dim:
        za = _common_layout(layouts)
        group[f"{BAND_VAR}/zarr.json"] = json.dumps(
            _stacked(za, [len(refs), len(names)], ["time", "band", "y", "x"])
        )
        for t, r in enumerate(refs):
            for b, name in enumerate(names):
                for key, (rel, offset, size) in r["assets"][name]["chunks"].items():
                    group[f"{BAND_VAR}/c/{t}/{b}/{key.replace('.', '/')}"] = [
                        str(store.root / rel),
                        offset,
                        size,
                    ]
        attrs[BAND_VAR] = _encoding_attrs(refs[0]["assets"][names[0]], za)
    import xarray as xr

    _register_codecs()
    with quiet_zarr():
        ds = xr.open_dataset(
            "reference://",
            engine="zarr",
            mask_and_scale=False,
            chunks=dict(chunks) if chunks is not None else "auto",
            backend_kwargs={
                "consolidated": False,
                "zarr_format": 3,
                "storage_options": {"fo": {"version": 1, "refs": group}},
            },
        )
    for name, a in attrs.items():
        ds[name].attrs.update(a)
    height, width = layouts[names[0]]["shape"][-2:]
    a, _, c, _, e, f = grids.get(names[0], item_grid)[:6]
    times = [np.datetime64(r["datetime"].replace("Z", ""), "ns") for r in refs]
    ds = ds.assign_coords(
        time=times,
        y=f + e * (np.arange(height) + 0.5),
        x=c + a * (np.arange(width) + 0.5),
    )
    ds.attrs.update(stac2cube_catalog=str(catalog), crs=refs[0]["proj:code"])
    if band_dim:
        da = ds[BAND_VAR].assign_coords(band=names)
        da.attrs.update(ds.attrs)
        return da
    return ds


def _common_layout(layouts: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The zarr layout all ``layouts`` share, or a CatalogError naming the groups that do."""
    groups: dict[str, list[str]] = {}
    for name, za in layouts.items():
        groups.setdefault(json.dumps(za, sort_keys=True), []).append(name)
    if len(groups) > 1:
        described = "; ".join(
            f"{names} ({_describe(json.loads(key))})" for key, names in groups.items()
        )
        raise CatalogError(
            "band_dim=True stacks bands that share one grid, tile size, dtype, codec and nodata, "
            f"but these differ: {described}. Open one group at a time with bands=[...]"
        )
    return next(iter(layouts.values()))


def _describe(za: Mapping[str, Any]) -> str:
    shape = "x".join(str(v) for v in za.get("shape", []))
    grid = za.get("chunk_grid", {}).get("configuration", {})
    tiles = "x".join(str(v) for v in grid.get("chunk_shape", []))
    codec = "+".join(str(c.get("name")) for c in za.get("codecs", [])) or "none"
    dtype = np.dtype(za.get("data_type")).name
    return f"{dtype}, {shape} px in {tiles} tiles, {codec}, nodata {za.get('fill_value')}"


def _stacked(za: Mapping[str, Any], lead: list[int], dims: list[str]) -> dict[str, Any]:
    """A 2-D array's Zarr v3 metadata with leading dimensions of one chunk each."""
    out = json.loads(json.dumps(za))
    out["shape"] = [*lead, *za["shape"]]
    grid = out["chunk_grid"]["configuration"]
    grid["chunk_shape"] = [1] * len(lead) + list(grid["chunk_shape"])
    out["dimension_names"] = dims
    out["attributes"] = {}
    return dict(out)


def _encoding_attrs(ref: Mapping[str, Any], za: Mapping[str, Any]) -> dict[str, Any]:
    scale, offset, nodata = asset_encoding(ref)
    if np.isnan(nodata) and "nodata" not in ((ref.get("raster:bands") or [{}])[0]):
        nodata = za.get("fill_value", np.nan)  # no raster:bands nodata: the array's fill value
    return {"scale_factor": scale, "add_offset": offset, "nodata": nodata}


def _check_encoding(name: str, refs: Sequence[Mapping[str, Any]]) -> None:
    """Raw values of items encoded differently cannot share one scale and offset."""
    seen: dict[str, str] = {}
    for r in refs:
        seen.setdefault(json.dumps(asset_encoding(r["assets"][name])), r["id"])
    if len(seen) > 1:
        raise CatalogError(
            f"band {name} is encoded differently across items (items {list(seen.values())[:3]} "
            "have different scale, offset or nodata): the kerchunk view cannot decode it with "
            "one set of attributes; use stac2cube.open_virtual_cube(..., decode=True)"
        )
