"""Read one band of a source item onto the target grid, windowed, with the right resampling."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pystac
import rasterio
import rasterio.errors
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.warp import reproject

from ..bands import S2_BANDS, find_asset
from ..errors import AssetReadError
from ..radiometry import Radiometry, RadiometryOverride, band_radiometry, to_reflectance

log = logging.getLogger(__name__)

SCL_NODATA = 0


@dataclass(frozen=True)
class BandRead:
    """One band of one scene on the target grid.

    ``data`` is float32 surface reflectance with NaN for nodata (reflectance bands), or the
    class values as uint8 with 0 for nodata (SCL and other classification bands).
    """

    band: str
    data: np.ndarray
    asset_key: str
    href: str
    radiometry: Radiometry
    resampling: str
    source_resolution: float


def asset_href(asset: pystac.Asset) -> str:
    """Where to read an asset: an absolute filesystem path stays a path (pystac would resolve it
    against an http self link, as for items of a local archive served by a STAC API)."""
    if asset.href.startswith("/") or (len(asset.href) > 2 and asset.href[1:3] == ":\\"):
        return asset.href
    return asset.get_absolute_href() or asset.href


def choose_resampling(kind: str, src_res: float, dst_res: float, same_crs: bool) -> Resampling:
    """Nearest for classes; for reflectance: exact copy on the same grid, area average when the
    source is finer, bilinear when it is coarser."""
    if kind != "reflectance":
        return Resampling.nearest
    if same_crs and abs(src_res - dst_res) < 1e-6 * dst_res:
        return Resampling.nearest
    return Resampling.average if src_res < dst_res else Resampling.bilinear


def read_band(
    item: pystac.Item,
    band: str,
    geobox: GeoBox,
    *,
    override: RadiometryOverride | None = None,
) -> BandRead:
    """Read ``band`` of ``item`` onto ``geobox``; reflectance bands are harmonised per item.

    Raises :class:`~stac2cube.errors.MissingAssetError` when the item has no such asset and
    :class:`~stac2cube.errors.AssetReadError` when its pixels cannot be read. A failed read is
    never replaced by nodata.
    """
    info = S2_BANDS[band]
    key, asset = find_asset(item, band, resolution=int(geobox.resolution.x))
    href = asset_href(asset)
    rad = band_radiometry(item, key, band=band, override=override)
    is_class = info.kind == "classification"
    dst_crs = geobox.crs
    assert dst_crs is not None
    try:
        with rasterio.open(href) as src:
            if src.crs is None:
                raise AssetReadError(f"{item.id}: asset {key} ({href}) has no CRS")
            src_res = float(abs(src.res[0]))
            resampling = choose_resampling(
                info.kind,
                src_res,
                float(geobox.resolution.x),
                src.crs == dst_crs.to_wkt() or src.crs.to_epsg() == dst_crs.epsg,
            )
            src_nodata = src.nodata if src.nodata is not None else rad.nodata
            if is_class:
                dst = np.zeros(geobox.shape.yx, dtype="uint8")
                dst_nodata: float = SCL_NODATA
            else:
                dst = np.full(geobox.shape.yx, np.nan, dtype="float32")
                dst_nodata = float("nan")
            reproject(
                source=rasterio.band(src, 1),
                destination=dst,
                src_nodata=src_nodata,
                dst_transform=geobox.transform,
                dst_crs=dst_crs.to_wkt(),
                dst_nodata=dst_nodata,
                resampling=resampling,
                init_dest_nodata=True,
            )
    except AssetReadError:
        raise
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise AssetReadError(
            f"{item.id}: cannot read band {band} (asset {key!r}) from {href}: {exc}. "
            "Check that the file exists and is a valid GeoTIFF/JP2, or that the network allows "
            "reading it."
        ) from exc
    if not is_class:
        # the warp mapped nodata to NaN; harmonise the resampled DNs per item
        dst = to_reflectance(dst, rad)
    return BandRead(band, dst, key, href, rad, resampling.name, src_res)
