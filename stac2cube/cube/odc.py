"""The cube as a view: a lazy xarray Dataset over the catalog's COGs, through odc-stac."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pystac
import xarray as xr

from ..bands import MASK_CLEAR, MASK_SHADOW, S2_BANDS, normalize_band_names
from ..errors import CatalogError, ConfigError

log = logging.getLogger(__name__)


def catalog_items(
    catalog: str | Path,
    *,
    collection: str | None = None,
    use_index: bool = True,
    assets: Sequence[str] | None = None,
    drop_properties: Sequence[str] = (),
) -> list[pystac.Item]:
    """All items of a catalog (directory, ``catalog.json`` or ``collection.json``), by time.

    With ``use_index`` (default) the items come from the collection's stac-geoparquet index
    (:mod:`stac2cube.catalog.index`) when it is current, so thousands of items cost one file read;
    otherwise, or when the index is missing or stale, every item JSON is read.

    ``assets`` keeps only those asset keys in the items, and ``drop_properties`` leaves out the
    properties with these name prefixes (what a lazy load does not need: fewer assets and
    properties make both reading the index and ``odc.stac.load`` faster).
    """
    path = Path(catalog)
    if path.is_dir():
        path = path / "catalog.json"
    if not path.exists():
        raise CatalogError(f"{path} does not exist: give a stac2cube catalog directory or file")
    if use_index:
        from ..catalog.index import read_index

        indexed = read_index(
            path, collection=collection, assets=assets, drop_properties=drop_properties
        )
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
    items = [
        it
        for it in root.get_items(recursive=True)
        if collection is None or it.collection_id == collection
    ]
    prefixes = tuple(drop_properties)
    for it in items:
        if assets is not None:
            for key in [k for k in it.assets if k not in assets]:
                del it.assets[key]
        if prefixes:
            for key in [k for k in it.properties if k.startswith(prefixes)]:
                del it.properties[key]
    return _by_time(items)


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

    wanted = None if bands is None else [*_band_keys(bands), "CLOUD_MASK"]
    items = catalog_items(
        catalog, collection=collection, assets=wanted, drop_properties=LAZY_LOAD_DROPS
    )
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
        shared = _shared_geobox(items, load_names) if bbox is None else None
        if shared is not None:
            kwargs["geobox"] = shared  # the catalog's grid: odc-stac need not derive it
        else:
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


LAZY_LOAD_DROPS = ("stac2cube:", "processing:")
"""Item properties :func:`open_cube` does not read (the provenance); left out for speed."""


def _band_keys(bands: Sequence[str]) -> list[str]:
    """Asset keys a band list may mean: each name as given and, where it is a known alias
    (``red``, ``b4``), its Sentinel-2 name."""
    keys = []
    for b in bands:
        keys.append(b)
        with contextlib.suppress(ConfigError):  # not a band name we know: the key as given
            keys += normalize_band_names([b])
    return keys


def _shared_geobox(items: Sequence[pystac.Item], assets: Sequence[str]) -> Any:
    """The one grid of ``assets`` in every item, as an odc-geo GeoBox, or None if they differ.

    A stac2cube catalog writes every scene on the config's grid, so this is the usual case and
    the output grid is known without odc-stac taking the union of 1,000 footprints.
    """
    from affine import Affine
    from odc.geo.geobox import GeoBox

    grids = set()
    for it in items:
        props = it.properties
        for key in assets:
            extra = it.assets[key].extra_fields if key in it.assets else {}
            transform = extra.get("proj:transform", props.get("proj:transform"))
            shape = extra.get("proj:shape", props.get("proj:shape"))
            if transform is None or shape is None:
                return None
            grids.add((props.get("proj:code"), tuple(transform[:6]), tuple(shape)))
        if len(grids) > 1:
            return None
    if not grids:
        return None
    code, transform, shape = grids.pop()
    if code is None:
        return None
    return GeoBox(shape, Affine(*transform), code)


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
