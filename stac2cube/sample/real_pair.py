"""AROSICS' real misregistered Sentinel-2 pair (test case INTER1), read for co-registration.

Two S2A L1C acquisitions of tile 33UUU (2016-06-08 reference, cloud-free; 2016-05-29 target, with
cumulus, haze and shadows), one 10 m band each, uint16 TOA x 10000 with DN 0 = outside the data,
on the same 10 m lattice but with different extents (see the shared data README, section "Real
Sentinel-2 pixels for the science steps"). :func:`read_inter1` reads them from the pair's folder
(:data:`INTER1_DIR` of the shared data, see :mod:`.data`) and cuts both to their common overlap
(or a box inside it) as reflectance with NaN for nodata; :func:`pair_scene` wraps that as the
:class:`~stac2cube.steps.base.Scene` the coreg step takes. The files are read as they are: the
real displacement between the dates is what is being measured, so nothing is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from ..steps.base import AuxLayer, Scene

F32 = NDArray[np.float32]

INTER1_DIR: Final = "rasters/arosics-INTER1-T33UUU-2016"
"""Folder of the pair, relative to the shared data directory."""
REF_FILE: Final = "ref_S2A_20160608T153121_T33UUU_sub.jp2"
"""The reference image (cloud-free)."""
TGT_FILE: Final = "tgt_S2A_20160529T153631_T33UUU_sub.jp2"
"""The target image (about 25 % cumulus and haze, shadows)."""
SCALE: Final = 10000.0
"""DN per unit of TOA reflectance; DN 0 is nodata."""
EPSG: Final = 32633
"""CRS of both files."""
BAND: Final = "B03"
"""Band name the pixels are given in a scene (AROSICS' documentation uses B03 of the products)."""

WP_INSIDE: Final = (344720.0, 5848485.0)
"""AROSICS' own INTER1 window position "inside of overlap" (map x, y; its ``tests/cases.py``)."""
WP_COVERING_NODATA: Final = (339611.0, 5856426.0)
"""AROSICS' INTER1 window position close to the image edge, where a 256 px window covers nodata."""
WP_CLOSE_TO_EDGE: Final = (353810.0, 5840516.0)
"""AROSICS' INTER1 window position close to the image edge without nodata."""
WP_CLOUDY: Final = (353308.0, 5859404.0)
"""AROSICS' INTER1 window position on clouds of the target (AROSICS must fail there)."""


@dataclass(frozen=True)
class RealPair:
    """The pair on one grid: reflectance (float32, NaN = nodata) and where it came from."""

    reference: F32
    target: F32
    geobox: GeoBox
    ref_path: Path
    tgt_path: Path


def inter1_paths(root: Path) -> tuple[Path, Path]:
    """Paths of the reference and target files in ``root`` (the pair's :data:`INTER1_DIR`)."""
    return root / REF_FILE, root / TGT_FILE


def _read_box(path: Path, bounds: tuple[float, float, float, float]) -> tuple[F32, Affine]:
    import rasterio
    from rasterio.windows import from_bounds

    with rasterio.open(path) as ds:
        if ds.crs is None or ds.crs.to_epsg() != EPSG:
            raise ValueError(f"{path}: expected EPSG:{EPSG}, got {ds.crs}")
        win = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
        dn = ds.read(1, window=win, boundless=True, fill_value=0)
        transform = ds.window_transform(win)
    a = dn.astype(np.float32) / np.float32(SCALE)
    a[dn == 0] = np.nan
    return a, transform


def overlap_bounds(root: Path) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of the two files' common extent (map units)."""
    import rasterio

    ref, tgt = inter1_paths(root)
    with rasterio.open(ref) as a, rasterio.open(tgt) as b:
        ba, bb = a.bounds, b.bounds
    box = (
        max(ba.left, bb.left),
        max(ba.bottom, bb.bottom),
        min(ba.right, bb.right),
        min(ba.top, bb.top),
    )
    if box[0] >= box[2] or box[1] >= box[3]:  # pragma: no cover - the files overlap
        raise ValueError("the INTER1 files do not overlap")
    return box


def read_inter1(
    root: Path,
    bounds: tuple[float, float, float, float] | None = None,
    *,
    center: tuple[float, float] | None = None,
    size: int | None = None,
) -> RealPair:
    """The pair in ``root`` (the pair's :data:`INTER1_DIR`) on the common 10 m lattice, cut to
    ``bounds`` (map units, snapped to the lattice), or to a ``size`` px square around map position
    ``center``, or to the whole overlap. Reflectance = DN / 10000, DN 0 -> NaN."""
    ref_path, tgt_path = inter1_paths(root)
    if center is not None:
        if size is None:
            raise ValueError("read_inter1: give size with center")
        x0 = 10.0 * round(center[0] / 10.0) - 5.0 * size
        y1 = 10.0 * round(center[1] / 10.0) + 5.0 * size
        bounds = (x0, y1 - 10.0 * size, x0 + 10.0 * size, y1)
    if bounds is None:
        bounds = overlap_bounds(root)
    ref, t_ref = _read_box(ref_path, bounds)
    tgt, t_tgt = _read_box(tgt_path, bounds)
    if ref.shape != tgt.shape or not t_ref.almost_equals(t_tgt):
        raise ValueError(f"the INTER1 files are not on one lattice over {bounds}")
    geobox = GeoBox(ref.shape, t_ref, f"EPSG:{EPSG}")
    return RealPair(ref, tgt, geobox, ref_path, tgt_path)


def difference_cloud_mask(
    target: F32,
    reference: F32,
    *,
    bright: float = 0.2,
    delta: float = 0.04,
    smooth: int = 9,
    dilation: int = 15,
) -> NDArray[np.uint8]:
    """A simple ``CLOUD_MASK`` (0 nodata, 1 clear, 2 cloud, 3 shadow) of the target against a
    cloud-free reference of the same band: a multi-temporal difference test.

    The ``smooth`` px mean of ``target - reference``, less its median over the scene (the
    radiometric offset between the dates), above ``delta`` or a target brighter than ``bright``
    is cloud or haze, below ``-delta`` shadow; both are dilated by ``dilation`` px. It also flags
    strong surface changes between the dates, which are no good to match on either."""
    from scipy import ndimage

    ok = np.isfinite(target) & np.isfinite(reference)
    d = ndimage.uniform_filter(np.where(ok, target - reference, 0.0).astype(np.float32), smooth)
    if ok.any():
        d -= np.float32(np.median(d[ok]))
    cloud = ok & ((d > delta) | (np.nan_to_num(target) > bright))
    shadow = ok & (d < -delta) & ~cloud
    if dilation > 0:
        cloud = ndimage.binary_dilation(cloud, iterations=dilation) & ok
        shadow = ndimage.binary_dilation(shadow, iterations=dilation) & ok & ~cloud
    mask = np.zeros(target.shape, np.uint8)
    mask[np.isfinite(target)] = 1
    mask[cloud] = 2
    mask[shadow] = 3
    return mask


def pair_scene(
    target: F32,
    reference: F32,
    geobox: GeoBox,
    *,
    cloud_mask: NDArray[np.uint8] | None = None,
    item_id: str = "S2A_20160529T153631_T33UUU",
) -> Scene:
    """A scene of one band (:data:`BAND`) holding ``target``, with ``reference`` as its
    co-registration reference and, when given, ``cloud_mask`` as its ``CLOUD_MASK``."""
    ref = AuxLayer(
        data=np.asarray(reference, np.float32)[None],
        geobox=geobox,
        bands=(BAND,),
        source=f"reference:{REF_FILE}",
    )
    classes = {"CLOUD_MASK": cloud_mask} if cloud_mask is not None else {}
    return Scene(
        item_id=item_id,
        geobox=geobox,
        bands={BAND: np.asarray(target, np.float32)},
        classes=classes,
        aux={"reference": ref},
    )


__all__ = [
    "BAND",
    "EPSG",
    "INTER1_DIR",
    "REF_FILE",
    "SCALE",
    "TGT_FILE",
    "WP_CLOSE_TO_EDGE",
    "WP_CLOUDY",
    "WP_COVERING_NODATA",
    "WP_INSIDE",
    "RealPair",
    "difference_cloud_mask",
    "inter1_paths",
    "overlap_bounds",
    "pair_scene",
    "read_inter1",
]
