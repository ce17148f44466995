"""The cube as a virtual Zarr dataset: kerchunk references to the catalog's COGs.

Each committed item gets one reference file, ``<catalog>/_kerchunk/<item id>.json``, holding,
per COG asset, the zarr array metadata (dtype, tile shape, codecs, fill value) and the byte range
of every internal tile, with paths relative to the catalog. Adding an item adds its file; nothing
is rebuilt. :func:`open_virtual_cube` stacks the items' references along ``time`` into one zarr
group (variables ``(time, y, x)`` per band, like :func:`~stac2cube.cube.odc.open_cube`) and opens
it lazily with xarray: every read goes straight to the COG tiles, no GDAL involved.

When to use which view: :func:`open_cube` (odc-stac) reprojects, resamples, groups by solar day
and applies masks; use it for analysis on another grid or CRS. :func:`open_virtual_cube` reads the
stored tiles as they are (the catalog's own grid, raw values); use it for fast repeated access in
the catalog's grid, from any zarr/fsspec tool, without GDAL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import CatalogError
from ..io.atomic import write_json_atomic
from ..io.catalog import CatalogStore

log = logging.getLogger(__name__)

REFS_DIR = "_kerchunk"


def _register_codecs() -> None:
    import imagecodecs.numcodecs

    imagecodecs.numcodecs.register_codecs(verbose=False)


def item_references(store: CatalogStore, item: Mapping[str, Any]) -> dict[str, Any]:
    """kerchunk references of every COG asset of a committed item (paths relative to the
    catalog root)."""
    from kerchunk.tiff import tiff_to_zarr

    item_dir = store.item_dir(str(item["id"]))
    assets: dict[str, Any] = {}
    for key, asset in item.get("assets", {}).items():
        if "cloud-optimized" not in str(asset.get("type", "")):
            continue
        path = item_dir / Path(asset["href"]).name
        refs = tiff_to_zarr(str(path))
        rel = path.relative_to(store.root).as_posix()
        chunks = {
            k: [rel, int(v[1]), int(v[2])]
            for k, v in refs.items()
            if not k.startswith(".") and isinstance(v, list)
        }
        assets[key] = {"zarray": json.loads(refs[".zarray"]), "chunks": chunks}
    return {
        "id": item["id"],
        "datetime": item["properties"]["datetime"],
        "proj:transform": item["properties"].get("proj:transform"),
        "proj:code": item["properties"].get("proj:code"),
        "assets": assets,
    }


def references_path(store: CatalogStore, item_id: str) -> Path:
    return store.root / REFS_DIR / f"{item_id}.json"


def write_item_references(store: CatalogStore, item: Mapping[str, Any]) -> Path:
    """Write (or replace) the reference file of one committed item."""
    path = references_path(store, str(item["id"]))
    write_json_atomic(path, item_references(store, item))
    return path


def remove_item_references(store: CatalogStore, item_id: str) -> None:
    references_path(store, item_id).unlink(missing_ok=True)


def build_references(catalog: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the reference files that are missing (all with ``overwrite``); returns them."""
    store = CatalogStore.open(catalog)
    written = []
    for item in store.iter_items():
        if overwrite or not references_path(store, str(item["id"])).exists():
            written.append(write_item_references(store, item))
    return written


def open_virtual_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open the catalog's COGs as one lazy virtual Zarr dataset (``time, y, x`` per band).

    Values are the stored ones (as :func:`~stac2cube.cube.odc.open_cube` gives them on the
    catalog's grid); ``nodata`` is in each variable's attributes.
    """
    store = CatalogStore.open(catalog)
    items = sorted(store.iter_items(), key=lambda i: (i["properties"]["datetime"], i["id"]))
    if not items:
        raise CatalogError(f"the catalog {catalog} holds no item yet: run `stac2cube run` first")
    refs = []
    for item in items:
        path = references_path(store, str(item["id"]))
        try:
            refs.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CatalogError(
                f"{path} is missing: build the references with "
                "`stac2cube.cube.kerchunk.build_references(catalog)`"
            ) from None
    names = list(bands) if bands else list(refs[0]["assets"])
    group: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2})}
    attrs: dict[str, dict[str, Any]] = {}
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
        group[f"{name}/.zarray"] = json.dumps(
            {**za, "shape": [len(refs), *za["shape"]], "chunks": [1, *za["chunks"]]}
        )
        group[f"{name}/.zattrs"] = json.dumps({"_ARRAY_DIMENSIONS": ["time", "y", "x"]})
        for t, m in enumerate(metas):
            for key, (rel, offset, size) in m["chunks"].items():  # type: ignore[index]
                group[f"{name}/{t}.{key}"] = [str(store.root / rel), offset, size]
        attrs[name] = {"nodata": za["fill_value"]}
    _register_codecs()
    ds = xr.open_dataset(
        "reference://",
        engine="zarr",
        mask_and_scale=False,
        chunks=dict(chunks) if chunks is not None else {},
        backend_kwargs={
            "consolidated": False,
            "zarr_format": 2,
            "storage_options": {"fo": {"version": 1, "refs": group}},
        },
    )
    for name, a in attrs.items():
        ds[name].attrs.update(a)
    height, width = json.loads(group[f"{names[0]}/.zarray"])["shape"][1:]
    a, _, c, _, e, f = refs[0]["proj:transform"][:6]
    times = [np.datetime64(r["datetime"].replace("Z", ""), "ns") for r in refs]
    ds = ds.assign_coords(
        time=times,
        y=f + e * (np.arange(height) + 0.5),
        x=c + a * (np.arange(width) + 0.5),
    )
    ds.attrs.update(stac2cube_catalog=str(catalog), crs=refs[0]["proj:code"])
    return ds
