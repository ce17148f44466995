"""Clouds, their shadows and cirrus at their true positions, the clouds as each band sees them
(view parallax), and the truth map derived from them."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from .arrays import F32, U8, BoolA, fractal_noise, shifted, stream_rng
from .msi import ALONG_TRACK_DEG, TRACK_HEADING, parallax_px
from .spec import SampleSpec

logger = logging.getLogger(__name__)

_f = np.float32

TRUTH_CLASSES: Final[dict[int, str]] = {
    0: "clear",
    1: "thick cloud",
    2: "thin cloud",
    3: "cirrus",
    4: "cloud shadow",
    255: "nodata",
}
"""Codes of the ``truth`` rasters."""

CLOUD_SPECTRUM: Final = np.array(
    [1.0, 1.0, 1.0, 1.0, 0.99, 0.99, 0.98, 0.97, 0.97, 0.93, 0.0, 0.72, 0.50], _f
)
"""Cloud-top reflectance per band relative to the visible (B10 is modelled separately)."""
CIRRUS_SPECTRUM: Final = np.array(
    [1.35, 1.30, 1.25, 1.20, 1.18, 1.16, 1.15, 1.12, 1.12, 1.10, 1.0, 0.80, 0.60], _f
)
"""Cirrus reflectance per band relative to its reflectance at 1375 nm (B10)."""
_CIRRUS_HEIGHT: Final = 9000.0  # m


@dataclass(frozen=True)
class Clouds:
    """Cloud layers on one grid: opacity, cloud-top reflectance and height (m), shadow opacity and
    cirrus reflectance at 1375 nm."""

    alpha: F32
    rho: F32
    height: F32
    shadow: F32
    cirrus: F32


def make_clouds(
    spec: SampleSpec,
    date: int,
    shape: tuple[int, int],
    valid_hw: tuple[int, int],
    sun_zenith: float,
    sun_azimuth: float,
    pad: int = 0,
) -> Clouds:
    """Cloud opacity, cloud-top reflectance/height, shadow opacity and cirrus on the padded grid,
    at their true ground positions; ``pad`` pixels more on every side (for the view parallax)."""
    rng = stream_rng(spec.seed, 2, date)
    h, w = shape
    target = spec.cloud_cover[date % len(spec.cloud_cover)]
    zeros = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    if target <= 0.0:
        return Clouds(zeros, zeros, zeros, zeros, zeros)
    target *= rng.uniform(0.9, 1.1)
    if target <= 0.08:
        f_cu, f_thin, f_cir = target, 0.0, 0.0
    else:
        share_thin, share_cir = rng.uniform(0.12, 0.25), rng.uniform(0.12, 0.3)
        f_cu = target * (1.0 - share_thin - share_cir)
        f_thin, f_cir = target * share_thin * 1.25, target * share_cir * 1.25

    tan_z = math.tan(math.radians(sun_zenith))
    az = math.radians(sun_azimuth)

    def offset(height_m: float) -> tuple[int, int]:
        d = height_m * tan_z / 10.0  # pixels, shadow away from the sun
        return round(d * math.cos(az)), round(-d * math.sin(az))

    r_max = 60
    margin = max(math.ceil(3000.0 * tan_z / 10.0) + 2 * r_max, pad)
    eh, ew = h + 2 * margin, w + 2 * margin
    n_edge = fractal_noise(rng, (eh, ew), 2.0)
    n_tex = fractal_noise(rng, (eh, ew), 2.6)
    alpha = np.zeros((eh, ew), np.float32)
    rho = np.zeros((eh, ew), np.float32)
    top = np.zeros((eh, ew), np.float32)
    shadow = np.zeros((eh, ew), np.float32)
    inner = (slice(margin, margin + valid_hw[0]), slice(margin, margin + valid_hw[1]))
    n_valid = valid_hw[0] * valid_hw[1]

    # Cumulus cells until their union covers f_cu of the grid; a cell that would overshoot the
    # target by more than 10 % (of the target) is redrawn.
    n_cells = n_tries = 0
    covered = 0
    goal = f_cu * n_valid
    iy0, ix0, iy1, ix1 = margin, margin, margin + valid_hw[0], margin + valid_hw[1]
    # Cells are placed over the grid and where a cloud would cast its shadow into it.
    dr_max, dc_max = offset(3000.0)
    rows = (margin - r_max + min(0, -dr_max), margin + h + r_max + max(0, -dr_max))
    cols = (margin - r_max + min(0, -dc_max), margin + w + r_max + max(0, -dc_max))
    if f_cu > 0:
        while covered < 0.98 * goal and n_tries < 50000:
            n_tries += 1
            radius = min(6.0 * (1.0 - rng.random()) ** (-1.0 / 1.6), float(r_max))
            ry = radius * rng.uniform(0.7, 1.3)
            rx = radius * rng.uniform(0.7, 1.3)
            th = rng.uniform(0, math.pi)
            cy = rng.uniform(*rows)
            cx = rng.uniform(*cols)
            ext = int(1.7 * max(ry, rx)) + 2
            y0, y1 = max(int(cy) - ext, 0), min(int(cy) + ext, eh)
            x0, x1 = max(int(cx) - ext, 0), min(int(cx) + ext, ew)
            if y1 <= y0 or x1 <= x0:
                continue
            py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
            px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
            uu = (py * math.cos(th) + px * math.sin(th)) / ry
            vv = (-py * math.sin(th) + px * math.cos(th)) / rx
            r = np.sqrt(uu**2 + vv**2)
            edge = np.maximum(1.0 + 0.35 * n_edge[y0:y1, x0:x1], 0.2)
            a = np.clip((edge - r) / (0.3 * edge), 0.0, 1.0).astype(np.float32)
            a[a < 0.03] = 0.0
            if not a.any():
                continue
            rho_c = rng.uniform(0.45, 0.8)
            hgt = rng.uniform(500.0, 3000.0)
            win = (slice(y0, y1), slice(x0, x1))
            wy0, wy1, wx0, wx1 = max(y0, iy0), min(y1, iy1), max(x0, ix0), min(x1, ix1)
            gain = 0
            if wy1 > wy0 and wx1 > wx0:
                old_in = alpha[wy0:wy1, wx0:wx1] > 0
                new_in = old_in | (a[wy0 - y0 : wy1 - y0, wx0 - x0 : wx1 - x0] > 0)
                gain = int(new_in.sum()) - int(old_in.sum())
            if covered + gain > 1.1 * goal and n_tries < 40000:
                continue
            covered += gain
            n_cells += 1
            better = a > alpha[win]
            tex = rho_c * (0.85 + 0.15 * a) * (1.0 + 0.08 * n_tex[win])
            rho[win] = np.where(better, tex, rho[win])
            top[win] = np.where(better, np.float32(hgt), top[win])
            alpha[win] = np.maximum(alpha[win], a)
            dr, dc = offset(hgt)
            sy0, sy1, sx0, sx1 = y0 + dr, y1 + dr, x0 + dc, x1 + dc
            cy0, cy1, cx0, cx1 = max(sy0, 0), min(sy1, eh), max(sx0, 0), min(sx1, ew)
            if cy1 > cy0 and cx1 > cx0:
                part = a[cy0 - sy0 : cy1 - sy0, cx0 - sx0 : cx1 - sx0]
                shadow[cy0:cy1, cx0:cx1] = np.maximum(shadow[cy0:cy1, cx0:cx1], part)

    # A semi-transparent stratiform layer.
    if f_thin > 0:
        n_thin = fractal_noise(rng, (eh, ew), 3.2)
        thr = float(np.quantile(n_thin[inner], 1.0 - f_thin))
        a_t = (0.55 * np.clip((n_thin - thr) / 0.8, 0.0, 1.0)).astype(np.float32)
        a_t[a_t < 0.03] = 0.0
        hgt = rng.uniform(2000.0, 4000.0)
        dr, dc = offset(min(hgt, 3000.0 + 0.5 * (hgt - 3000.0)))
        shadow = np.maximum(shadow, shifted(a_t, dr, dc))
        thin_wins = a_t > alpha
        rho = np.where(thin_wins, np.float32(0.5) * (1.0 + 0.05 * n_tex), rho)
        top = np.where(thin_wins, np.float32(hgt), top)
        alpha = (1.0 - (1.0 - alpha) * (1.0 - a_t)).astype(np.float32)

    # Cirrus: elongated streaks; B10 TOA reflectance 0.006-0.05, no shadow.
    cirrus = np.zeros((eh, ew), np.float32)
    if f_cir > 0:
        n_cir = fractal_noise(rng, (eh, ew), 3.0, stretch=5.0, angle=rng.uniform(0, math.pi))
        thr = float(np.quantile(n_cir[inner], 1.0 - f_cir))
        cirrus = np.where(
            n_cir > thr, 0.006 + 0.044 * np.clip((n_cir - thr) / 1.2, 0.0, 1.0), 0.0
        ).astype(np.float32)

    shadow[shadow < 0.3] = 0.0
    crop = (slice(margin - pad, margin + h + pad), slice(margin - pad, margin + w + pad))
    logger.debug("date %d: %d cumulus cells, target cover %.3f", date, n_cells, target)
    return Clouds(
        alpha=np.ascontiguousarray(alpha[crop]),
        rho=np.ascontiguousarray(rho[crop]),
        height=np.ascontiguousarray(top[crop]),
        shadow=np.ascontiguousarray(shadow[crop]),
        cirrus=np.ascontiguousarray(cirrus[crop]),
    )


def apparent_clouds(
    cl: Clouds, pad: int, view_zenith: float, view_azimuth: float, band: int
) -> Clouds:
    """The clouds as ``band`` sees them: each pixel moved by its height's parallax (the highest
    opacity wins where two land on one pixel); the shadow stays where the sun cast it. Cirrus,
    which casts no shadow here, moves by the band's along-track part only."""
    hh, ww = cl.alpha.shape
    alpha = np.zeros_like(cl.alpha)
    rho = np.zeros_like(cl.rho)
    height = np.zeros_like(cl.height)
    rr, cc = np.nonzero(cl.alpha > 0)
    if rr.size:
        unit_r, unit_c = parallax_px(1.0, view_zenith, view_azimuth, band)
        hgt = cl.height[rr, cc].astype(np.float64)
        tr = rr + np.rint(hgt * unit_r).astype(np.intp)
        tc = cc + np.rint(hgt * unit_c).astype(np.intp)
        ok = (tr >= 0) & (tr < hh) & (tc >= 0) & (tc < ww)
        rr, cc, tr, tc = rr[ok], cc[ok], tr[ok], tc[ok]
        order = np.argsort(cl.alpha[rr, cc], kind="stable")[::-1]  # highest opacity first
        flat = (tr * ww + tc)[order]
        _, first = np.unique(flat, return_index=True)
        keep = order[first]
        alpha[tr[keep], tc[keep]] = cl.alpha[rr[keep], cc[keep]]
        rho[tr[keep], tc[keep]] = cl.rho[rr[keep], cc[keep]]
        height[tr[keep], tc[keep]] = cl.height[rr[keep], cc[keep]]
    ta = math.tan(math.radians(float(ALONG_TRACK_DEG[band])))
    ha = math.radians(TRACK_HEADING)
    d = _CIRRUS_HEIGHT * ta / 10.0
    cirrus = shifted(cl.cirrus, round(-d * math.cos(ha)), round(d * math.sin(ha)))
    crop = (slice(pad, hh - pad), slice(pad, ww - pad))
    return Clouds(
        alpha=np.ascontiguousarray(alpha[crop]),
        rho=np.ascontiguousarray(rho[crop]),
        height=np.ascontiguousarray(height[crop]),
        shadow=np.ascontiguousarray(cl.shadow[crop]),
        cirrus=np.ascontiguousarray(cirrus[crop]),
    )


def truth_map(clouds: Clouds, nodata: BoolA) -> U8:
    t = np.zeros(clouds.alpha.shape, np.uint8)
    t[clouds.shadow > 0] = 4
    t[clouds.cirrus > 0] = 3
    t[clouds.alpha > 0] = 2
    t[clouds.alpha >= 0.6] = 1
    t[nodata] = 255
    return t
