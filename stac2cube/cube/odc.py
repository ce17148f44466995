"""The cube as a view: a lazy xarray Dataset over the catalog's COGs, through odc-stac."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pystac
import xarray as xr

from ..bands import S2_BANDS, normalize_band_names
from ..errors import CatalogError

log = logging.getLogger(__name__)


def catalog_items(
    catalog: str | Path, *, collection: str | None = None, use_index: bool = True
) -> list[pystac.Item]:
    """All items of a catalog (directory, ``catalog.json`` or ``collection.json``), by time.

    With ``use_index`` (default) the items come from the collection's stac-geoparquet index
    (:mod:`stac2cube.cube.index`) when it is current, so thousands of items cost one file read;
    otherwise, or when the index is missing or stale, every item JSON is read.
    """
    path = Path(catalog)
    if path.is_dir():
        path = path / "catalog.json"
    if not path.exists():
        raise CatalogError(f"{path} does not exist: give a stac2cube catalog directory or file")
    if use_index:
        from .index import read_index

        indexed = read_index(path, collection=collection)
        if indexed is not None:
            return _by_time(
                [it for it in indexed if collection is None or it.collection_id == collection]
            )
    try:
        root = pystac.read_file(str(path))
    except Exception as exc:  # pystac raises several types for broken JSON
        raise CatalogError(f"cannot read the STAC catalog {path}: {exc}") from exc
    if not isinstance(root, pystac.Catalog):
        raise CatalogError(f"{path} is a {type(root).__name__}, not a catalog or collection")
    return _by_time(
        [
            it
            for it in root.get_items(recursive=True)
            if collection is None or it.collection_id == collection
        ]
    )


def _by_time(items: list[pystac.Item]) -> list[pystac.Item]:
    items.sort(key=lambda it: (it.datetime or it.common_metadata.start_datetime, it.id))
    return items


def open_cube(
    catalog: str | Path,
    bands: Sequence[str] | None = None,
    *,
    groupby: Literal["scene", "solar_day"] = "scene",
    crs: str | None = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    chunks: dict[str, int] | None = None,
    dtype: str | None = None,
    resampling: str | dict[str, str] | None = None,
    collection: str | None = None,
    mask: Literal["clear", "not-cloud"] | None = None,
    **odc_kwargs: Any,
) -> xr.Dataset:
    """Open a stac2cube catalog as a lazy :class:`xarray.Dataset` (dims ``time, y, x``).

    Values are those of the COGs (no scale applied); each variable carries ``nodata``,
    ``scale_factor`` and ``add_offset`` attributes from ``raster:bands``, and :func:`reflectance`
    turns the dataset into float reflectance with NaN for nodata.

    ``mask="clear"`` sets every band to its nodata where the scene's ``CLOUD_MASK`` (written by
    the cloud-masking step) is not clear; ``"not-cloud"`` keeps shadows. Masks are applied on
    load, never burnt into the COGs, so they can be changed without reprocessing.

    ``groupby="scene"`` gives one time step per item; ``"solar_day"`` merges items of the same
    solar day (first valid pixel wins). By default the catalog's own grid is used; ``crs`` and
    ``resolution`` reproject on load.
    """
    import odc.stac

    items = catalog_items(catalog, collection=collection)
    if not items:
        raise CatalogError(f"the catalog {catalog} holds no item yet: run `stac2cube run` first")
    order = list(S2_BANDS)
    assets = items[0].assets
    names = (
        [b if b in assets else normalize_band_names([b])[0] for b in bands]
        if bands
        else sorted(assets, key=lambda k: order.index(k) if k in order else len(order))
    )
    missing = [b for b in names if b not in items[0].assets]
    if missing:
        raise CatalogError(
            f"band(s) {missing} are not in the catalog; it has {sorted(items[0].assets)}"
        )
    load_names = list(names)
    if mask is not None:
        if "CLOUD_MASK" not in items[0].assets:
            raise CatalogError(
                f"mask={mask!r} needs the CLOUD_MASK asset: run the catalog with "
                "`steps: {cloudmask: {}}` in the config"
            )
        if "CLOUD_MASK" not in load_names:
            load_names.append("CLOUD_MASK")
    kwargs: dict[str, Any] = {
        "bands": load_names,
        "groupby": "id" if groupby == "scene" else "solar_day",
        "chunks": chunks if chunks is not None else {"x": 2048, "y": 2048},
        **odc_kwargs,
    }
    if crs is not None:
        kwargs["crs"] = crs
    if resolution is not None:
        kwargs["resolution"] = resolution
    if crs is None and resolution is None and "geobox" not in kwargs and "like" not in kwargs:
        kwargs["crs"] = _item_crs(items[0])
        kwargs["resolution"] = abs(items[0].properties["proj:transform"][0])
    if bbox is not None:
        kwargs["bbox"] = bbox
    if dtype is not None:
        kwargs["dtype"] = dtype
    if resampling is not None:
        kwargs["resampling"] = resampling
    ds = odc.stac.load(items, **kwargs)
    if groupby == "scene":
        ds = ds.sortby("time")
    for name in names:
        rb = (items[0].assets[name].extra_fields.get("raster:bands") or [{}])[0]
        ds[name].attrs.update(scale_factor=rb.get("scale", 1.0), add_offset=rb.get("offset", 0.0))
        if "nodata" in rb:
            ds[name].attrs["nodata"] = float(rb["nodata"]) if rb["nodata"] != "nan" else np.nan
    if mask is not None:
        from ..steps.cloudmask import MASK_CLEAR, MASK_SHADOW

        keep = ds["CLOUD_MASK"] == MASK_CLEAR
        if mask == "not-cloud":
            keep = keep | (ds["CLOUD_MASK"] == MASK_SHADOW)
        for name in names:
            if name == "CLOUD_MASK":
                continue
            nd = ds[name].attrs.get("nodata", np.nan)
            ds[name] = ds[name].where(keep, nd).astype(ds[name].dtype).assign_attrs(ds[name].attrs)
        if "CLOUD_MASK" not in names:
            ds = ds.drop_vars("CLOUD_MASK")
        ds.attrs["stac2cube_mask"] = mask
    ds.attrs["stac2cube_catalog"] = str(catalog)
    return ds


def _item_crs(item: pystac.Item) -> str:
    code = item.properties.get("proj:code")
    if code:
        return str(code)
    epsg = item.properties.get("proj:epsg")
    if epsg:
        return f"EPSG:{epsg}"
    raise CatalogError(f"item {item.id} has no proj:code/proj:epsg; pass crs= to open_cube")


def reflectance(ds: xr.Dataset) -> xr.Dataset:
    """Float32 reflectance (``DN * scale_factor + add_offset``), NaN where nodata."""
    out = {}
    for name, da in ds.data_vars.items():
        scale = da.attrs.get("scale_factor", 1.0)
        offset = da.attrs.get("add_offset", 0.0)
        nodata = da.attrs.get("nodata")
        valid = da.notnull() if nodata is None or np.isnan(nodata) else da != nodata
        refl = (da.astype("float32") * np.float32(scale) + np.float32(offset)).where(valid)
        out[name] = refl.assign_attrs(
            {k: v for k, v in da.attrs.items() if k not in ("scale_factor", "add_offset", "nodata")}
        )
    return xr.Dataset(out, attrs=ds.attrs)
