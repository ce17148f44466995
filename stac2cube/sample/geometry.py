"""The sample's grids (10/20/60 m), the swath-edge nodata wedge, lon/lat and the sun's position."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from pyproj import Transformer
from rasterio.transform import Affine

from .arrays import BoolA
from .spec import SampleSpec


def grid_shape(spec: SampleSpec, res: int) -> tuple[int, int]:
    f = res // 10
    return -(-spec.height // f), -(-spec.width // f)


def grid_transform(spec: SampleSpec, res: int) -> Affine:
    return Affine(float(res), 0.0, spec.origin[0], 0.0, -float(res), spec.origin[1])


def wedge_vertices(spec: SampleSpec) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two points (x, y in 10 m pixel units) on the swath edge; the upper-right side is nodata."""
    return (0.55 * spec.width, 0.0), (float(spec.width), 0.6 * spec.height)


def wedge_mask(spec: SampleSpec, res: int, active: bool) -> BoolA:
    shape = grid_shape(spec, res)
    if not active:
        return np.zeros(shape, bool)
    f = res / 10.0
    (x1, y1), (x2, y2) = wedge_vertices(spec)
    yy = (np.arange(shape[0], dtype=np.float64)[:, None] + 0.5) * f
    xx = (np.arange(shape[1], dtype=np.float64)[None, :] + 0.5) * f
    cross = (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1)
    return np.asarray(cross < 0)


def solar_angles(lon: float, lat: float, when: dt.datetime) -> tuple[float, float]:
    """(zenith, azimuth from north clockwise) in degrees, NOAA approximation (~0.1 deg)."""
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60.0 + when.second / 3600.0
    g = 2.0 * math.pi / 365.0 * (doy - 1 + (hour - 12.0) / 24.0)
    eqt = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )  # fmt: skip
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )  # fmt: skip
    tst = hour * 60.0 + eqt + 4.0 * lon
    ha = math.radians(tst / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_z = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.degrees(math.acos(max(-1.0, min(1.0, cos_z))))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return zen, (az + 180.0) % 360.0


def lonlat(spec: SampleSpec, pts: list[tuple[float, float]]) -> list[list[float]]:
    """Pixel (x, y) positions on the 10 m grid to [lon, lat]."""
    tr = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    out = []
    for px, py in pts:
        lon, lat = tr.transform(spec.origin[0] + 10.0 * px, spec.origin[1] - 10.0 * py)
        out.append([round(lon, 9), round(lat, 9)])
    return out


def lonlat_bbox(spec: SampleSpec) -> tuple[float, float, float, float]:
    tr = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    x0, y1 = spec.origin
    x1, y0 = x0 + 10.0 * spec.width, y1 - 10.0 * spec.height
    b = tr.transform_bounds(x0, y0, x1, y1, densify_pts=21)
    return (round(b[0], 7), round(b[1], 7), round(b[2], 7), round(b[3], 7))
