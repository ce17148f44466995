"""Write one band as a Cloud-Optimized GeoTIFF with rio-cogeo, atomically."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from .atomic import temp_path_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CogFile:
    """A written COG: where it is, its size and its multihash sha2-256 checksum."""

    path: Path
    size: int
    checksum: str


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
    that several workers on one node do not each use every core).
    """
    if data.ndim != 2 or data.shape != geobox.shape.yx:
        raise ValueError(f"array of shape {data.shape} does not fit grid {geobox.shape.yx}")
    crs = geobox.crs
    assert crs is not None
    src_profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": str(data.dtype),
        "crs": crs.to_wkt(),
        "transform": geobox.transform,
        "nodata": nodata,
    }
    dst_profile = cog_profiles.get(profile)  # type: ignore[no-untyped-call]
    dst_profile.update(blockxsize=blocksize, blockysize=blocksize)
    if data.dtype.kind in "iu":
        dst_profile["predictor"] = 2
    elif data.dtype.kind == "f":
        dst_profile["predictor"] = 3
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with MemoryFile() as mem:
            with mem.open(**src_profile) as ds:
                ds.write(data, 1)
                ds.scales = (scale,)
                ds.offsets = (offset,)
                if description:
                    ds.set_band_description(1, description)
            with mem.open() as ds:
                cog_translate(
                    ds,
                    str(tmp),
                    dst_profile,
                    nodata=nodata,
                    overview_resampling=overview_resampling,  # type: ignore[arg-type]
                    in_memory=True,
                    quiet=True,
                    config={
                        "GDAL_NUM_THREADS": str(threads) if threads else "ALL_CPUS",
                        "GDAL_TIFF_OVR_BLOCKSIZE": str(blocksize),
                    },
                )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    size, checksum = file_checksum(path)
    return CogFile(path, size, checksum)


def file_checksum(path: Path) -> tuple[int, str]:
    """Size in bytes and the multihash (sha2-256, hex) of a file, as the STAC file ext wants."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, "1220" + h.hexdigest()
