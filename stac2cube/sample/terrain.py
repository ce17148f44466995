"""The DEM (rolling relief and the optional limestone massif with snow) and the terrain's
illumination: slope and aspect against the sun, cast shadows and the sky-view factor."""

from __future__ import annotations

import dataclasses
import math
from typing import Final

import numpy as np

from .arrays import F32, BoolA, fractal_noise, shifted, stream_rng
from .landcover import Landscape
from .spec import SampleSpec

VALLEY_ELEVATION: Final = 600.0
"""Mean elevation of the valley floor (m): the level the date's atmosphere is given for."""
SNOWLINE: Final = 2100.0
"""Mean elevation (m) above which the massif keeps old snow (early summer, northern Alps)."""
_WALL_WIDTH: Final = 400.0  # m: horizontal extent of the massif's rock wall
_PLATEAU_GRADE: Final = 0.2  # rise of the karst plateau per metre inland


def add_terrain(spec: SampleSpec, land: Landscape) -> tuple[Landscape, F32]:
    """The DEM (m) of the padded grid, and the landscape with the massif's rock and snow."""
    rng = stream_rng(spec.seed, 6)
    h, w = land.lc.shape
    shape = (h, w)
    hills = fractal_noise(rng, shape, 4.0)
    n_rim = fractal_noise(rng, shape, 3.0)
    n_karst = fractal_noise(rng, shape, 3.0)
    n_snow = fractal_noise(rng, shape, 2.8)
    n_cover = fractal_noise(rng, shape, 2.2)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    z = np.full(shape, VALLEY_ELEVATION, np.float32)
    if spec.terrain:
        z += np.float32(40.0) * hills
    if spec.mountain <= 0.0:
        return land, z
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    size = min(spec.height, spec.width)
    s = (yy - h / 2) * math.cos(theta) + (xx - w / 2) * math.sin(theta) + 0.04 * size * n_rim
    s0 = float(np.quantile(s[: spec.height, : spec.width], 1.0 - spec.mountain))
    d = (s - s0) * 10.0  # metres into the massif
    massif = d > 0.0
    rim = 2000.0 + 50.0 * n_rim
    t = np.clip(d / _WALL_WIDTH, 0.0, 1.0)
    wall = z + (rim - z) * (t * t * (3.0 - 2.0 * t))
    inland = d - _WALL_WIDTH
    plateau = rim + _PLATEAU_GRADE * inland + 40.0 * n_karst * np.clip(inland / 200.0, 0.0, 1.0)
    z = np.where(massif, np.where(inland < 0.0, wall, plateau), z).astype(np.float32)
    snowline = SNOWLINE + 80.0 * n_snow
    snow = massif & (z > snowline)
    lc = np.where(snow, np.uint8(16), np.where(massif, np.uint8(17), land.lc)).astype(np.uint8)
    grass = np.clip(0.2 + 0.2 * n_cover, 0.0, 0.6) * (inland > 0.0)  # alpine grass in the karst
    snow_cover = np.clip(0.6 + (z - snowline) / 100.0 + 0.1 * n_cover, 0.5, 1.0)
    mix = np.where(snow, snow_cover, np.where(massif, grass, land.mix)).astype(np.float32)
    return dataclasses.replace(land, lc=np.ascontiguousarray(lc), mix=mix), z


def _cast_shadow(dem: F32, sun_zenith: float, sun_azimuth: float) -> BoolA:
    """Pixels that terrain hides from the sun (a ray towards the sun meets higher ground)."""
    tan_elev = 1.0 / math.tan(math.radians(sun_zenith))
    relief = float(dem.max() - dem.min())
    out = np.zeros(dem.shape, bool)
    if relief <= 0.0:
        return out
    az = math.radians(sun_azimuth)
    dr, dc = -math.cos(az), math.sin(az)  # towards the sun, in rows (down = south) and columns
    n = min(int(relief / (10.0 * tan_elev)) + 2, max(dem.shape))
    seen: set[tuple[int, int]] = set()
    for k in range(1, n + 1):
        r, c = round(k * dr), round(k * dc)
        if (r, c) in seen:
            continue
        seen.add((r, c))
        ahead = shifted(dem, -r, -c)  # ahead[x] = dem[x + (r, c)]; 0 (below all) outside
        out |= ahead > dem + np.float32(10.0 * math.hypot(r, c) * tan_elev)
    return out


def illumination(dem: F32, level: BoolA, sun_zenith: float, sun_azimuth: float) -> tuple[F32, F32]:
    """Direct-sunlight factor ``cos(incidence) / cos(zenith)`` (0 where the terrain casts a
    shadow) and sky-view factor ``(1 + cos(slope)) / 2``; both 1 on ``level`` (water) pixels."""
    gy, gx = np.gradient(dem.astype(np.float64), 10.0)
    dzdx, dzdy = gx, -gy  # towards east and north
    norm = np.sqrt(1.0 + dzdx**2 + dzdy**2)
    sz, az = math.radians(sun_zenith), math.radians(sun_azimuth)
    cos_i = (
        math.cos(sz) - dzdx * math.sin(sz) * math.sin(az) - dzdy * math.sin(sz) * math.cos(az)
    ) / norm
    direct = np.clip(cos_i, 0.0, None) / math.cos(sz)
    direct[_cast_shadow(dem, sun_zenith, sun_azimuth)] = 0.0
    sky = 0.5 * (1.0 + 1.0 / norm)
    direct[level] = 1.0
    sky[level] = 1.0
    return direct.astype(np.float32), sky.astype(np.float32)
