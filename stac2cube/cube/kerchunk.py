"""The cube as a virtual Zarr dataset: the catalog's COGs through their kerchunk references.

:func:`open_virtual_cube` stacks the items' reference files (written as items are committed,
:mod:`stac2cube.catalog.kerchunk`) along ``time`` into one zarr group, variables ``(time, y, x)``
per band, and opens it lazily with xarray: every read goes straight to the COG tiles, no GDAL.
It reads the stored tiles as they are (the catalog's grid, raw values); for another grid, masks
or same-day fusing use :func:`~stac2cube.cube.odc.open_cube` (see ``docs/cube.md``).
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
from ..errors import CatalogError

if TYPE_CHECKING:  # xarray is imported when a cube is opened
    import xarray as xr

log = logging.getLogger(__name__)


def _register_codecs() -> None:
    import imagecodecs.numcodecs

    imagecodecs.numcodecs.register_codecs(verbose=False)


BAND_VAR = "bands"
"""Name of the stacked variable (``time, band, y, x``) that ``band_dim=True`` returns."""


@overload
def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    band_dim: Literal[False] = False,
) -> xr.Dataset: ...


@overload
def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    band_dim: Literal[True],
) -> xr.DataArray: ...


def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    band_dim: bool = False,
) -> xr.Dataset | xr.DataArray:
    """Open the catalog's COGs as one lazy virtual Zarr dataset (``time, y, x`` per band).

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
    group: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2})}
    attrs: dict[str, dict[str, Any]] = {}
    layouts: dict[str, dict[str, Any]] = {}
    for name in names:
        metas = [r["assets"].get(name) for r in refs]
        if any(m is None for m in metas):
            missing = [r["id"] for r, m in zip(refs, metas, strict=True) if m is None]
            raise CatalogError(f"band {name} is missing from items {missing[:5]}")
        za = metas[0]["zarray"]  # type: ignore[index]
        for r, m in zip(refs, metas, strict=True):
            if m["zarray"] != za:  # type: ignore[index]
                raise CatalogError(
                    f"band {name}: item {r['id']} has another array layout (grid, dtype or "
                    "codec) than the others; the virtual view needs one grid"
                )
        layouts[name] = za
        if band_dim:
            continue
        group[f"{name}/.zarray"] = json.dumps(
            {**za, "shape": [len(refs), *za["shape"]], "chunks": [1, *za["chunks"]]}
        )
        group[f"{name}/.zattrs"] = json.dumps({"_ARRAY_DIMENSIONS": ["time", "y", "x"]})
        for t, m in enumerate(metas):
            for key, (rel, offset, size) in m["chunks"].items():  # type: ignore[index]
                group[f"{name}/{t}.{key}"] = [str(store.root / rel), offset, size]
        attrs[name] = {"nodata": za["fill_value"]}
    if band_dim:
        za = _common_layout(layouts)
        group[f"{BAND_VAR}/.zarray"] = json.dumps(
            {**za, "shape": [len(refs), len(names), *za["shape"]], "chunks": [1, 1, *za["chunks"]]}
        )
        group[f"{BAND_VAR}/.zattrs"] = json.dumps({"_ARRAY_DIMENSIONS": ["time", "band", "y", "x"]})
        for t, r in enumerate(refs):
            for b, name in enumerate(names):
                for key, (rel, offset, size) in r["assets"][name]["chunks"].items():
                    group[f"{BAND_VAR}/{t}.{b}.{key}"] = [str(store.root / rel), offset, size]
        attrs[BAND_VAR] = {"nodata": za["fill_value"]}
    import xarray as xr

    _register_codecs()
    ds = xr.open_dataset(
        "reference://",
        engine="zarr",
        mask_and_scale=False,
        chunks=dict(chunks) if chunks is not None else "auto",
        backend_kwargs={
            "consolidated": False,
            "zarr_format": 2,
            "storage_options": {"fo": {"version": 1, "refs": group}},
        },
    )
    for name, a in attrs.items():
        ds[name].attrs.update(a)
    height, width = layouts[names[0]]["shape"]
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
    tiles = "x".join(str(v) for v in za.get("chunks", []))
    codec = (za.get("compressor") or {}).get("id", "none")
    dtype = np.dtype(za.get("dtype")).name
    return f"{dtype}, {shape} px in {tiles} tiles, {codec}, nodata {za.get('fill_value')}"
