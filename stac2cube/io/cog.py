"""Write one band as a Cloud-Optimized GeoTIFF, atomically: whole (:func:`write_cog`) or block by
block without holding the band in memory (:class:`CogWriter`). See docs/catalog.md."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.enums import ColorInterp, Resampling
from rasterio.rio.overview import get_maximum_overview_level
from rasterio.windows import Window
from rio_cogeo.profiles import cog_profiles

from .atomic import temp_path_for

log = logging.getLogger(__name__)

GDAL_CACHE_MB = 64
"""GDAL's block cache (MB) while a :class:`CogWriter` writes, builds overviews and copies."""


@dataclass(frozen=True)
class CogFile:
    """A written COG: where it is, its size and its multihash sha2-256 checksum."""

    path: Path
    size: int
    checksum: str


def _cog_profile(profile: str, blocksize: int, dtype: np.dtype[Any]) -> dict[str, Any]:
    """The creation options of the COG: a rio-cogeo profile, our block size, a predictor."""
    dst = cog_profiles.get(profile)  # type: ignore[no-untyped-call]
    dst.update(blockxsize=blocksize, blockysize=blocksize)
    if dtype.kind in "iu":
        dst["predictor"] = 2
    elif dtype.kind == "f":
        dst["predictor"] = 3
    return dict(dst)


def _gdal_config(blocksize: int, threads: int | None) -> dict[str, str]:
    return {
        "GDAL_NUM_THREADS": str(threads) if threads else "ALL_CPUS",
        "GDAL_TIFF_OVR_BLOCKSIZE": str(blocksize),
    }


class CogWriter:
    """Write a band on ``geobox`` block by block, then lay it out as a COG at ``path``.

    Blocks go into a tiled, uncompressed GeoTIFF beside ``path`` (a :func:`temp_path_for` name,
    so that the catalog's recovery removes what a killed run left); pixels never written are
    ``nodata`` (0 when there is none). :meth:`close` builds the overviews in that file and copies
    it, compressed and with its overviews, in the COG layout to a second temporary file that is
    renamed to ``path``. These are the last two steps of rio-cogeo's ``cog_translate``, which is
    not called itself: its on-disk mode first copies the source to a ``tmpXXXX.tif`` that the
    recovery would not recognise. The file is byte for byte what ``cog_translate`` makes.

    Memory stays at the caller's block plus GDAL's cache (:data:`GDAL_CACHE_MB`), whatever the
    size of the band; the disk holds the band uncompressed until :meth:`close` returns.
    :meth:`write` may be called from several threads (the writes are serialised).

    Use it as a context manager, so that an exception removes the temporary files::

        with CogWriter(path, geobox, "int16", nodata=-32768) as w:
            for window, block in blocks:
                w.write(block, window)
            cog = w.close()
    """

    def __init__(
        self,
        path: Path,
        geobox: GeoBox,
        dtype: str,
        *,
        nodata: float | None,
        scale: float = 1.0,
        offset: float = 0.0,
        profile: str = "deflate",
        blocksize: int = 512,
        overview_resampling: str = "average",
        description: str | None = None,
        threads: int | None = None,
    ) -> None:
        crs = geobox.crs
        if crs is None:
            raise ValueError("the grid of a COG needs a CRS")
        self.path = Path(path)
        self.geobox = geobox
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        self._blocksize = blocksize
        self._resampling = Resampling[overview_resampling]
        self._threads = threads
        self._cog_profile = _cog_profile(profile, blocksize, self.dtype)
        self._lock = threading.Lock()
        self._done = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._blocks = temp_path_for(self.path)
        self._cog = temp_path_for(self.path)
        height, width = geobox.shape.yx
        try:
            with rasterio.open(
                self._blocks,
                "w",
                driver="GTiff",
                height=height,
                width=width,
                count=1,
                dtype=self.dtype.name,
                crs=crs.to_wkt(),
                transform=geobox.transform,
                nodata=nodata,
                tiled=True,
                blockxsize=blocksize,
                blockysize=blocksize,
                sparse_ok=True,  # blocks never written read as nodata and take no space
                bigtiff="IF_SAFER",
            ) as ds:
                ds.scales = (scale,)
                ds.offsets = (offset,)
                ds.colorinterp = [ColorInterp.gray]
                if description:
                    ds.set_band_description(1, description)
        except BaseException:
            self.abort()
            raise

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write the 2-D ``data`` at ``window`` (rows and columns of the grid). Blocks may be of
        any size and overlap the COG's tiles in any way; a pixel written twice keeps the last."""
        if self._done:
            raise ValueError(f"{self.path}: the writer is already closed or aborted")
        height, width = self.geobox.shape.yx
        bounds = (window.row_off, window.col_off, window.height, window.width)
        if any(int(v) != v for v in bounds):
            raise ValueError(f"window {window} is not on whole pixels")
        row, col, h, w = (int(v) for v in bounds)
        if row < 0 or col < 0 or h < 1 or w < 1 or row + h > height or col + w > width:
            raise ValueError(f"window {window} is outside the grid of {height} x {width} px")
        if data.ndim != 2 or data.shape != (h, w):
            raise ValueError(f"a block of shape {data.shape} does not fit window {window}")
        if not np.can_cast(data.dtype, self.dtype, casting="safe"):
            raise ValueError(f"cannot write {data.dtype} into a {self.dtype} COG: cast it first")
        # Opened per block and with a bounded cache: GDAL keeps written blocks in its cache (5 %
        # of the RAM by default) until the file is closed or the cache is full. Written by rows
        # of tiles, since rasterio copies what it writes.
        bs = self._blocksize
        cuts = [row, *range((row // bs + 1) * bs, row + h, bs), row + h]
        with (
            self._lock,
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
            rasterio.open(self._blocks, "r+") as ds,
        ):
            for top, bottom in pairwise(cuts):
                strip = data[top - row : bottom - row].astype(self.dtype, copy=False)
                ds.write(strip, 1, window=Window(col, top, w, bottom - top))

    def close(self) -> CogFile:
        """Build the overviews, lay out the COG, rename it to ``path``; remove the temporary
        files. On an error nothing is left, neither at ``path`` nor beside it."""
        if self._done:
            raise ValueError(f"{self.path}: the writer is already closed or aborted")
        self._done = True
        height, width = self.geobox.shape.yx
        levels = get_maximum_overview_level(width, height, minsize=self._blocksize)
        config = {**_gdal_config(self._blocksize, self._threads), "GDAL_CACHEMAX": GDAL_CACHE_MB}
        try:
            with rasterio.Env(**config):
                with rasterio.open(self._blocks, "r+") as ds:
                    ds.build_overviews([2**j for j in range(1, levels + 1)], self._resampling)
                    ds.update_tags(OVERVIEW_RESAMPLING=self._resampling.name.upper())
                rasterio.shutil.copy(
                    self._blocks, self._cog, copy_src_overviews=True, **self._cog_profile
                )
            os.replace(self._cog, self.path)
        finally:
            self.abort()
        size, checksum = file_checksum(self.path)
        return CogFile(self.path, size, checksum)

    def abort(self) -> None:
        """Remove the temporary files; ``path`` is not touched. Safe to call more than once."""
        self._done = True
        for p in (self._blocks, self._cog):
            p.unlink(missing_ok=True)

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.abort()


def write_cog(
    data: np.ndarray,
    geobox: GeoBox,
    path: Path,
    *,
    nodata: float | None,
    scale: float = 1.0,
    offset: float = 0.0,
    profile: str = "deflate",
    blocksize: int = 512,
    overview_resampling: str = "average",
    description: str | None = None,
    threads: int | None = None,
) -> CogFile:
    """Write a 2-D array on ``geobox`` to ``path`` as a COG (internal overviews, nodata set).

    The file appears under its final name only once complete (written beside it, then renamed),
    so a crash never leaves a half-written COG under a name the catalog refers to. GDAL
    compresses with ``threads`` threads (None: all CPUs; a Dask worker passes its own share, so
    that several workers on one node do not each use every core). One block of a
    :class:`CogWriter`: a band too large to hold is better written with one directly.
    """
    if data.ndim != 2 or data.shape != geobox.shape.yx:
        raise ValueError(f"array of shape {data.shape} does not fit grid {geobox.shape.yx}")
    with CogWriter(
        path,
        geobox,
        data.dtype.name,
        nodata=nodata,
        scale=scale,
        offset=offset,
        profile=profile,
        blocksize=blocksize,
        overview_resampling=overview_resampling,
        description=description,
        threads=threads,
    ) as writer:
        writer.write(data, Window(0, 0, data.shape[1], data.shape[0]))
        return writer.close()


def file_checksum(path: Path) -> tuple[int, str]:
    """Size in bytes and the multihash (sha2-256, hex) of a file, as the STAC file ext wants."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, "1220" + h.hexdigest()
