"""Read one band of a source item onto the target grid, windowed, with the right resampling."""

from __future__ import annotations

import contextlib
import logging
import math
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.env
import rasterio.errors
from odc.geo.geobox import GeoBox
from rasterio.enums import MaskFlags, Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from ..bands import S2_BANDS, find_asset
from ..errors import AssetAccessError, AssetReadError
from ..radiometry import Radiometry, RadiometryOverride, band_radiometry, to_reflectance

log = logging.getLogger(__name__)

SCL_NODATA = 0

REQUESTER_PAYS_BUCKETS = frozenset({"sentinel-s2-l1c", "sentinel-s2-l2a", "sentinel-s1-l1c"})
"""AWS Open Data buckets of Sentinel data that are requester-pays. Earth Search v1
``sentinel-2-l1c`` items point into ``s3://sentinel-s2-l1c`` without saying so (no
``storage:*`` field), hence this list."""
CDSE_S3_ENDPOINT = "eodata.dataspace.copernicus.eu"
"""GDAL's ``AWS_S3_ENDPOINT`` for the ``s3://eodata`` hrefs of CDSE items."""
_REFUSED = (
    "http response code: 401",
    "http response code: 403",
    "accessdenied",
    "access denied",
    "forbidden",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "configuration options not defined",  # GDAL /vsis3/ without any credentials
    "permission denied",
)


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


_CREDENTIAL_PARAMS = frozenset(
    {"sig", "se", "st", "sp", "sv", "sr", "spr", "skoid", "sktid", "skt", "ske", "sks", "skv"}
)
"""Query parameters of an Azure SAS token (Planetary Computer's signed hrefs)."""


def href_without_credentials(href: str) -> str:
    """``href`` without the credentials a signed URL carries in its query (an Azure SAS token,
    an S3 pre-signed ``X-Amz-*`` signature), for records that outlive them: the other query
    parameters stay."""
    parts = urllib.parse.urlsplit(href)
    if not parts.query:
        return href
    kept = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in _CREDENTIAL_PARAMS and not k.lower().startswith("x-amz-")
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept)))


def _bucket(href: str) -> str | None:
    for prefix in ("s3://", "/vsis3/"):
        if href.startswith(prefix):
            return href[len(prefix) :].split("/", 1)[0]
    return None


def requester_pays(item: pystac.Item) -> bool:
    """Whether reading (some of) ``item``'s assets needs GDAL's ``AWS_REQUEST_PAYER=requester``:
    the item or an asset says ``storage:requester_pays: true`` (storage extension v1), every
    storage scheme an asset refers to is requester-pays (v2 ``storage:schemes`` /
    ``storage:refs``), or an asset lies in one of :data:`REQUESTER_PAYS_BUCKETS`."""
    # raw fields, not pystac's StorageExtension: real items (Earth Search v1 Collection-1 L2A)
    # declare the extension without storage:schemes, which its accessor refuses
    props = item.properties
    if props.get("storage:requester_pays") is True:
        return True
    schemes = props.get("storage:schemes")
    schemes = schemes if isinstance(schemes, dict) else {}

    def paid(names: Any) -> bool:
        found = [schemes.get(n) for n in names]
        return bool(found) and all(isinstance(f, dict) and f.get("requester_pays") for f in found)

    for asset in item.assets.values():
        fields = asset.extra_fields
        if fields.get("storage:requester_pays") is True:
            return True
        # an asset without storage:refs is in every scheme of the item (v1 items migrated)
        if paid(fields.get("storage:refs") or list(schemes)):
            return True
        if _bucket(asset.href) in REQUESTER_PAYS_BUCKETS:
            return True
    return False


def is_access_refused(message: str) -> bool:
    """Whether a GDAL/rasterio error message says the storage refused access (HTTP 401/403,
    ``AccessDenied``, no credentials, file permissions) rather than that the data is bad."""
    m = message.lower()
    return any(s in m for s in _REFUSED)


def access_advice(href: str) -> str:
    """What to set when reading ``href`` was refused (see :func:`is_access_refused`)."""
    bucket = _bucket(href)
    if bucket == "eodata":
        return (
            f"CDSE S3 needs AWS_S3_ENDPOINT={CDSE_S3_ENDPOINT}, "
            "AWS_VIRTUAL_HOSTING=FALSE and your CDSE S3 keys in AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (environment variables; see docs/sources.md)"
        )
    if bucket is not None:
        payer = rasterio.env.getenv().get("AWS_REQUEST_PAYER") if rasterio.env.hasenv() else None
        rp = (
            "the request was sent as requester-pays (AWS_REQUEST_PAYER=requester): your AWS "
            "account pays the transfer"
            if payer
            else "if the bucket is requester-pays, also set source.l1c_requester_pays: true "
            "(GDAL's AWS_REQUEST_PAYER=requester)"
        )
        return (
            f"s3://{bucket} needs AWS credentials: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment; {rp}"
        )
    if href.startswith(("http://", "https://", "/vsicurl/")):
        return (
            "the server refused the request: its URLs may need signing (source.sign) or "
            "credentials (GDAL_HTTP_HEADERS, GDAL_HTTP_USERPWD, or a .netrc file)"
        )
    return "check that the file is readable by this user"


def choose_resampling(
    kind: str, src_res: float, dst_res: float, same_crs: bool, *, repeat: bool = False
) -> Resampling:
    """Nearest for classes; for reflectance: exact copy on the same grid, area average when the
    source is finer, bilinear when it is coarser (nearest with ``repeat``: each source pixel
    repeated, for a band written back on its own grid, :func:`~stac2cube.grid.to_native`)."""
    if kind != "reflectance":
        return Resampling.nearest
    if same_crs and abs(src_res - dst_res) < 1e-6 * dst_res:
        return Resampling.nearest
    if repeat and src_res > dst_res:
        return Resampling.nearest
    return Resampling.average if src_res < dst_res else Resampling.bilinear


class BandReader:
    """One band of a source item, opened once and read onto any number of grids of one CRS and
    resolution (the blocks of a scene), harmonised the same way each time. A context manager;
    :func:`read_band` is one reader and one read.

    ``geobox`` is the grid the reads fall on (or any grid of its CRS and resolution): it
    chooses the asset (:func:`~stac2cube.bands.find_asset`) and the resampling
    (:func:`choose_resampling`; ``repeat``: a coarser source is repeated, not interpolated).
    Raises as :func:`read_band` does.
    """

    def __init__(
        self,
        item: pystac.Item,
        band: str,
        geobox: GeoBox,
        *,
        override: RadiometryOverride | None = None,
        repeat: bool = False,
    ) -> None:
        info = S2_BANDS[band]
        self.item, self.band = item, band
        self.asset_key, asset = find_asset(item, band, resolution=int(geobox.resolution.x))
        self.href = asset_href(asset)
        self.radiometry = band_radiometry(item, self.asset_key, band=band, override=override)
        self._is_class = info.kind == "classification"
        dst_crs = geobox.crs
        assert dst_crs is not None
        self._crs, self._res = dst_crs, geobox.resolution
        self._src: rasterio.DatasetReader | None = None
        with self._errors():
            self._src = src = rasterio.open(self.href)
            if src.crs is None:
                self.close()
                raise AssetReadError(f"{item.id}: asset {self.asset_key} ({self.href}) has no CRS")
            self.source_resolution = float(abs(src.res[0]))
            same_crs = src.crs == dst_crs.to_wkt() or src.crs.to_epsg() == dst_crs.epsg
            self.resampling = choose_resampling(
                info.kind,
                self.source_resolution,
                float(geobox.resolution.x),
                same_crs,
                repeat=repeat,
            )
            self._src_nodata = src.nodata if src.nodata is not None else self.radiometry.nodata
            # whether a read onto a grid of the source's lattice may copy instead of warping
            self._copyable = (
                same_crs
                and self.resampling == Resampling.nearest
                and _plain_pixels(src, self._is_class)
            )

    def read(self, geobox: GeoBox) -> BandRead:
        """The band on ``geobox`` (of the reader's CRS and resolution; a block of its grid)."""
        if self._src is None:
            raise ValueError(f"{self.item.id}: the reader of band {self.band} is closed")
        if geobox.crs != self._crs or geobox.resolution != self._res:
            raise ValueError(f"{geobox} is not on the reader's CRS and resolution")
        if self._is_class:
            dst = np.zeros(geobox.shape.yx, dtype="uint8")
            dst_nodata: float = SCL_NODATA
        else:
            dst = np.full(geobox.shape.yx, np.nan, dtype="float32")
            dst_nodata = float("nan")
        window = self._aligned_window(geobox) if self._copyable else None
        with self._errors():
            if window is not None:
                _copy_window(self._src, window, dst, self._src_nodata, dst_nodata)
            else:
                reproject(
                    source=rasterio.band(self._src, 1),
                    destination=dst,
                    src_nodata=self._src_nodata,
                    dst_transform=geobox.transform,
                    dst_crs=self._crs.to_wkt(),
                    dst_nodata=dst_nodata,
                    resampling=self.resampling,
                    init_dest_nodata=True,
                )
        if not self._is_class:
            # the copy or the warp mapped nodata to NaN; harmonise the resampled DNs per item
            dst = to_reflectance(dst, self.radiometry)
        return BandRead(
            self.band,
            dst,
            self.asset_key,
            self.href,
            self.radiometry,
            self.resampling.name,
            self.source_resolution,
        )

    def _aligned_window(self, geobox: GeoBox) -> tuple[int, int, int, int, int] | None:
        """``(row, col, height, width, k)`` of ``geobox`` when its grid is the source's lattice
        with pixels ``k`` times smaller (``k`` a whole number, the same on both axes; no
        rotation; ``row`` and ``col``: its corner in its own pixels from the source's corner).
        A nearest-neighbour warp onto it is then a copy of the source's pixels, each repeated
        ``k`` x ``k`` times (a target pixel's centre never falls on a source pixel's edge). None
        otherwise. The reader's CRS is the source's (``_copyable``)."""
        src = self._src
        assert src is not None
        st, dt_ = src.transform, geobox.transform
        if (st.b, st.d, dt_.b, dt_.d) != (0.0, 0.0, 0.0, 0.0) or st.a <= 0 or st.e >= 0:
            return None
        k = round(st.a / dt_.a)
        col, row = (dt_.c - st.c) / dt_.a, (dt_.f - st.f) / dt_.e
        exact = (st.a / dt_.a - k, st.e / dt_.e - k, col - round(col), row - round(row))
        if k < 1 or any(abs(v) > ALIGNED_TOLERANCE_PX for v in exact):
            return None
        h, w = geobox.shape.yx
        return round(row), round(col), h, w, k

    def close(self) -> None:
        """Close the source dataset (safe to call more than once)."""
        if self._src is not None:
            self._src.close()
            self._src = None

    def __enter__(self) -> BandReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """GDAL's errors as ours: a refused read or an unreadable asset, naming both."""
        band, key, href = self.band, self.asset_key, self.href
        try:
            yield
        except AssetReadError:
            raise
        except (rasterio.errors.RasterioError, OSError) as exc:
            if is_access_refused(str(exc)):
                raise AssetAccessError(
                    f"{self.item.id}: reading band {band} (asset {key!r}) from {href} was "
                    f"refused ({exc}): {access_advice(href)}"
                ) from exc
            raise AssetReadError(
                f"{self.item.id}: cannot read band {band} (asset {key!r}) from {href}: {exc}. "
                "Check that the file exists and is a valid GeoTIFF/JP2, or that the network "
                "allows reading it."
            ) from exc


ALIGNED_TOLERANCE_PX = 1e-6
"""How far (target pixels) a grid's corner and pixel size may be from whole multiples of the
source's for a read onto it to be a copy of the source's pixels
(:meth:`BandReader._aligned_window`)."""
_COPYABLE_DTYPES = {
    False: frozenset({"uint8", "int8", "uint16", "int16", "float32"}),
    True: frozenset({"uint8"}),
}
"""Source dtypes whose values a copy converts exactly as the warp does, for reflectance (to
float32) and class bands (to uint8)."""


def _plain_pixels(src: rasterio.DatasetReader, is_class: bool) -> bool:
    """Whether the validity of ``src``'s first band is its nodata value alone (no mask band, no
    alpha) and its dtype converts exactly: a copy of its pixels then equals GDAL's
    nearest-neighbour warp onto an aligned grid."""
    flags = src.mask_flag_enums[0]
    plain = all(f in (MaskFlags.all_valid, MaskFlags.nodata) for f in flags)
    return plain and src.dtypes[0] in _COPYABLE_DTYPES[is_class]


def _copy_window(
    src: rasterio.DatasetReader,
    window: tuple[int, int, int, int, int],
    dst: np.ndarray,
    src_nodata: float | None,
    dst_nodata: float,
) -> None:
    """Copy the source pixels under ``window`` (:meth:`BandReader._aligned_window`; it may reach
    outside the source) into ``dst`` (filled with ``dst_nodata``), each repeated ``k`` x ``k``
    times, source nodata as ``dst_nodata``: what a nearest-neighbour warp onto the aligned grid
    gives, without the warp."""
    row, col, h, w, k = window
    # target rows and columns over the source, and the source pixels under them
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, src.height * k), min(col + w, src.width * k)
    if r1 <= r0 or c1 <= c0:
        return
    sr0, sc0 = r0 // k, c0 // k
    sr1, sc1 = (r1 - 1) // k + 1, (c1 - 1) // k + 1
    data = src.read(1, window=Window(sc0, sr0, sc1 - sc0, sr1 - sr0))
    if k > 1:
        data = data.repeat(k, axis=0).repeat(k, axis=1)
        data = data[r0 - sr0 * k : r1 - sr0 * k, c0 - sc0 * k : c1 - sc0 * k]
    out = dst[r0 - row : r1 - row, c0 - col : c1 - col]
    out[...] = data
    if src_nodata is not None:
        out[np.isnan(data) if math.isnan(src_nodata) else data == src_nodata] = dst_nodata


def read_band(
    item: pystac.Item,
    band: str,
    geobox: GeoBox,
    *,
    override: RadiometryOverride | None = None,
    repeat: bool = False,
) -> BandRead:
    """Read ``band`` of ``item`` onto ``geobox``; reflectance bands are harmonised per item
    (``repeat``: see :class:`BandReader`).

    Raises :class:`~stac2cube.errors.MissingAssetError` when the item has no such asset and
    :class:`~stac2cube.errors.AssetReadError` when its pixels cannot be read. A failed read is
    never replaced by nodata.
    """
    with BandReader(item, band, geobox, override=override, repeat=repeat) as reader:
        return reader.read(geobox)
