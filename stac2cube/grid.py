"""The area of interest and the one target grid every band of every scene is written on."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from .bands import S2_BANDS
from .config import AOIConfig, GridConfig
from .errors import ConfigError

log = logging.getLogger(__name__)


def load_aoi(aoi: AOIConfig, base_dir: Path | None = None) -> BaseGeometry:
    """The AOI as a shapely geometry in EPSG:4326 (bbox, or union of a GeoJSON's geometries)."""
    if aoi.bbox is not None:
        return shapely.geometry.box(*aoi.bbox)
    assert aoi.geojson is not None
    path = Path(aoi.geojson)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"aoi.geojson: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"aoi.geojson: {path} is not valid JSON ({exc})") from exc
    geoms = [shapely.geometry.shape(g) for g in _geojson_geometries(doc, path)]
    geom = unary_union(geoms)
    if geom.is_empty or not geom.is_valid:
        raise ConfigError(f"aoi.geojson: {path} holds an empty or invalid geometry")
    w, s, e, n = geom.bounds
    if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
        raise ConfigError(
            f"aoi.geojson: {path} is not in longitude/latitude degrees (EPSG:4326): bounds "
            f"{geom.bounds}"
        )
    return geom


def _geojson_geometries(doc: Any, path: Path) -> list[dict[str, Any]]:
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection":
        out = [f["geometry"] for f in doc.get("features", []) if f.get("geometry")]
    elif kind == "Feature":
        out = [doc["geometry"]] if doc.get("geometry") else []
    elif kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        out = [doc]
    else:
        raise ConfigError(
            f"aoi.geojson: {path} must hold a Polygon/MultiPolygon, a Feature or a "
            f"FeatureCollection (found type {kind!r})"
        )
    if not out:
        raise ConfigError(f"aoi.geojson: {path} holds no geometry")
    return out


def utm_crs_for(geom: BaseGeometry) -> str:
    """The UTM zone (as ``EPSG:326zz``/``EPSG:327zz``) that covers the largest part of ``geom``."""
    w, _, e, _ = geom.bounds
    best_zone, best_area = 0, -1.0
    for zone in range(_zone(w), _zone(e) + 1):
        lon0 = -180 + (zone - 1) * 6
        strip = shapely.geometry.box(lon0, -90, lon0 + 6, 90)
        area = geom.intersection(strip).area
        if area > best_area:
            best_zone, best_area = zone, area
    north = geom.centroid.y >= 0
    return f"EPSG:{(32600 if north else 32700) + best_zone}"


def _zone(lon: float) -> int:
    return min(60, max(1, math.floor((lon + 180) / 6) + 1))


NATIVE_ALIGNMENT = 60.0
"""Metres on which the edges of the target grid fall with ``output.native_resolution``: the
coarsest Sentinel-2 grid, so that the 20 m and 60 m grids of the bands nest in it exactly."""


def target_geobox(aoi: BaseGeometry, grid: GridConfig, *, align: float | None = None) -> GeoBox:
    """The target grid: the AOI's bounding box in the target CRS, snapped to the pixel grid.

    Pixel edges fall on multiples of the resolution, so in the scene's own UTM zone a 10 m grid
    coincides with Sentinel-2's native grid and reading needs no resampling. ``align`` (a
    multiple of the resolution, e.g. :data:`NATIVE_ALIGNMENT`) snaps the grid's outer edges
    outward to its multiples, so that a grid of that resolution covers exactly the same extent
    (:func:`nested_geobox`).
    """
    crs = CRS(utm_crs_for(aoi) if grid.crs.lower() == "auto" else grid.crs)
    transformer = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
    west, south, east, north = aoi.bounds
    bounds = transformer.transform_bounds(west, south, east, north, densify_pts=21)
    gbox = GeoBox.from_bbox(bounds, crs, resolution=align or grid.resolution, tight=False)
    if align is not None:
        gbox = nested_geobox(gbox, grid.resolution)
    log.debug("target grid %s", gbox)
    return gbox


def nested_geobox(geobox: GeoBox, resolution: float) -> GeoBox:
    """``geobox``'s extent on a grid of ``resolution`` whose pixels nest exactly in (or tile
    exactly) ``geobox``'s: same corner, the shape scaled by the ratio of the resolutions.

    Raises ValueError when the extent is not a whole number of pixels of ``resolution`` (snap
    the grid first: :func:`target_geobox` with ``align``) or the grid is rotated."""
    t = geobox.transform
    if t.b or t.d:
        raise ValueError(f"{geobox} is rotated: no nested grid")
    ny, nx = geobox.shape.yx
    rows, cols = ny * abs(t.e) / resolution, nx * abs(t.a) / resolution
    if abs(rows - round(rows)) > 1e-6 or abs(cols - round(cols)) > 1e-6:
        raise ValueError(f"the extent of {geobox} is not a whole number of {resolution:g} px")
    affine = Affine(
        math.copysign(resolution, t.a), 0.0, t.c, 0.0, math.copysign(resolution, t.e), t.f
    )
    return GeoBox((round(rows), round(cols)), affine, geobox.crs)


def band_geobox(geobox: GeoBox, band: str, *, native: bool) -> GeoBox:
    """The grid ``band`` is written on: the target grid, or with ``native``
    (``output.native_resolution``) the grid of the band's native resolution (never finer than
    the target's) over the same extent."""
    resolution = max(float(geobox.resolution.x), float(S2_BANDS[band].resolution))
    if not native or resolution == geobox.resolution.x:
        return geobox
    return nested_geobox(geobox, resolution)


def to_native(data: np.ndarray, factor: int, *, classes: bool = False) -> np.ndarray:
    """Pixels of the target grid onto a grid ``factor`` times coarser nested in it (the grid a
    band is written on with ``output.native_resolution``), for scenes whose steps run on the
    target grid: a reflectance pixel is the mean of the ``factor`` × ``factor`` target pixels it
    covers (NaN when any of them is: a pixel partly masked or outside the data is nodata); a
    class pixel is the first of them. ``data``'s shape must be a multiple of ``factor``.

    Read with nearest neighbour (:class:`~stac2cube.io.read.BandReader` with ``repeat``), a
    band's target pixels repeat its source pixels, so a pixel no step changed comes back bit for
    bit: the sum of at most 36 float32 values is exact in float64, and so is its mean when they
    are equal."""
    if factor == 1:
        return data
    h, w = data.shape
    if h % factor or w % factor:
        raise ValueError(f"{h} x {w} px is not a whole number of {factor} x {factor} cells")
    if classes:
        return np.ascontiguousarray(data[::factor, ::factor])
    cells = data.reshape(h // factor, factor, w // factor, factor)
    total: np.ndarray = cells.sum(axis=(1, 3), dtype=np.float64)
    mean: np.ndarray = (total / (factor * factor)).astype(data.dtype)
    return mean


def layer_geobox(geobox: GeoBox, name: str, *, native: bool) -> GeoBox:
    """The grid the layer ``name`` of a scene on ``geobox`` is written on: a Sentinel-2 band's
    (:func:`band_geobox`); ``geobox`` for the layers steps add (``CLOUD_MASK``). ``geobox`` may
    be a block of the target grid whose edges fall on the band's grid."""
    return band_geobox(geobox, name, native=native) if name in S2_BANDS else geobox


def on_band_grid(
    geobox: GeoBox, name: str, data: np.ndarray, *, native: bool
) -> tuple[GeoBox, np.ndarray]:
    """The grid the layer ``name`` of a scene on ``geobox`` is written on
    (:func:`layer_geobox`) and its pixels there (:func:`to_native`)."""
    gbox = layer_geobox(geobox, name, native=native)
    if gbox is geobox:
        return geobox, data
    factor = round(float(gbox.resolution.x) / geobox.resolution.x)
    return gbox, to_native(data, factor, classes=S2_BANDS[name].kind == "classification")


def footprint_lonlat(geobox: GeoBox, densify: int = 16) -> BaseGeometry:
    """The outline of ``geobox`` in EPSG:4326 (edges densified so curvature is kept)."""
    crs = geobox.crs
    assert crs is not None
    x0, y0, x1, y1 = geobox.extent.boundingbox
    ring = shapely.geometry.box(x0, y0, x1, y1).segmentize(max(x1 - x0, y1 - y0) / densify)
    to_ll = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    return shapely.transform(ring, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
