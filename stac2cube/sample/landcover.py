"""The static landscape (land-cover map, parcels, phenology) and the surface reflectance of
each date as a mixture of endmember spectra."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from .arrays import F32, U8, BoolA, blur3, fractal_noise, segment_distance, stream_rng, voronoi
from .msi import BANDS
from .spec import SampleSpec

_f = np.float32

_ENDMEMBERS_PERMIL: Final[dict[str, tuple[int, ...]]] = {
    #               B01  B02  B03  B04  B05  B06  B07  B08  B8A  B09  B10  B11  B12
    "green_veg":    ( 30,  35,  75,  35, 110, 300, 400, 440, 460, 450, 100, 230, 110),
    "broadleaf":    ( 20,  25,  50,  25,  80, 230, 320, 350, 370, 360,  80, 190,  85),
    "conifer":      ( 15,  18,  35,  18,  55, 150, 210, 230, 240, 235,  50, 120,  55),
    "grass":        ( 35,  40,  80,  50, 120, 270, 330, 360, 375, 365, 100, 250, 140),
    "dry_veg":      ( 70,  85, 130, 170, 210, 240, 260, 280, 295, 300, 250, 380, 290),
    "soil_dark":    ( 50,  60,  80, 100, 120, 135, 145, 155, 165, 170, 180, 230, 200),
    "soil_bright":  (130, 160, 220, 280, 310, 325, 335, 345, 355, 360, 370, 420, 380),
    "sand":         (180, 210, 280, 330, 350, 360, 370, 380, 385, 385, 380, 420, 370),
    "water_clear":  ( 50,  45,  38,  20,  15,  10,   9,   8,   7,   5,   3,   4,   3),
    "water_turbid": ( 70,  75, 100,  85,  75,  45,  35,  30,  26,  15,   6,   9,   6),
    "concrete":     (150, 170, 190, 210, 220, 225, 230, 235, 240, 240, 240, 260, 240),
    "asphalt":      ( 60,  70,  80,  90,  95, 100, 105, 110, 112, 115, 120, 130, 125),
    "roof_tile":    ( 60,  65,  90, 190, 230, 250, 260, 270, 275, 280, 300, 340, 300),
    "snow_old":     (820, 830, 820, 800, 780, 760, 740, 720, 690, 560, 300,  60,  50),
    "limestone":    (230, 260, 300, 340, 360, 370, 380, 390, 395, 400, 420, 440, 380),
}  # fmt: skip
ENDMEMBERS: Final[dict[str, tuple[float, ...]]] = {
    k: tuple(x / 1000.0 for x in v) for k, v in _ENDMEMBERS_PERMIL.items()
}
"""Surface reflectance of the endmembers at the 13 band centres (approximate typical values)."""

_E: Final = {k: np.asarray(v, dtype=np.float32) for k, v in ENDMEMBERS.items()}


LANDCOVER_CLASSES: Final[dict[int, str]] = {
    1: "water, lake (clear, turbid near the shore)",
    2: "water, river (turbid)",
    3: "broadleaf forest",
    4: "coniferous forest",
    5: "winter cereal (senescing)",
    6: "maize (greening up)",
    7: "summer crop (near peak)",
    8: "meadow (may be mown between dates)",
    9: "bare soil, moist/dark",
    10: "bare soil, dry/bright",
    11: "sand/gravel (beach)",
    12: "built-up (roofs, concrete)",
    13: "road (asphalt)",
    14: "urban green (gardens, trees)",
    15: "field margin (grass strip)",
    16: "snow (old, granular; massif above the snowline)",
    17: "bare rock, bright (limestone wall and karst plateau)",
}
"""Codes of ``landcover.tif``."""

SURFACE_TYPES: Final[dict[str, tuple[int, ...]]] = {
    "snow": (16,),
    "bright_rock": (17,),
    "bright_soil": (10, 11),
    "urban": (12, 13),
    "water": (1, 2),
    "vegetation": (3, 4, 5, 6, 7, 8, 14, 15),
    "dark_soil": (9,),
}
"""Surface types (groups of :data:`LANDCOVER_CLASSES` codes) that benchmarks report per type."""


@dataclass(frozen=True)
class Landscape:
    """The static land: land-cover codes, parcels with their phenology, mixing fractions and
    texture, on the padded 10 m grid."""

    lc: U8
    parcel: NDArray[np.int32]
    mix: F32
    texture_fine: F32
    texture_mid: F32
    parcel_gain: F32
    g0: F32
    rate: F32
    mow_day: F32
    meadow: BoolA


_TEXTURE_AMP: Final = np.array(
    [
        0.0,
        0.04,
        0.05,
        0.14,
        0.16,
        0.06,
        0.07,
        0.06,
        0.06,
        0.07,
        0.06,
        0.05,
        0.15,
        0.05,
        0.12,
        0.06,
        0.04,
        0.10,
    ],
    _f,
)


def make_landscape(spec: SampleSpec, shape: tuple[int, int]) -> Landscape:
    rng = stream_rng(spec.seed, 1)
    h, w = shape
    size = min(h, w)
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * np.ones((1, w), np.float32)
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * np.ones((h, 1), np.float32)
    n_low = fractal_noise(rng, shape, 3.6)
    n_low2 = fractal_noise(rng, shape, 3.6)
    n_mid = fractal_noise(rng, shape, 2.4)
    n_fine = fractal_noise(rng, shape, 1.6)

    # Agricultural parcels.
    parcel = voronoi(rng, shape, 22)
    n_parcels = int(parcel.max()) + 1
    kinds = np.array([5, 6, 7, 8, 9, 10, 3], dtype=np.uint8)
    probs = np.array([0.24, 0.20, 0.12, 0.24, 0.10, 0.07, 0.03])
    parcel_kind = kinds[rng.choice(len(kinds), size=n_parcels, p=probs)]
    lc = parcel_kind[parcel]
    mix = np.zeros(shape, np.float32)
    soil_m = rng.uniform(0.0, 1.0, n_parcels).astype(np.float32)
    mix[:] = soil_m[parcel]
    edge = (parcel != np.roll(parcel, 1, axis=0)) | (parcel != np.roll(parcel, 1, axis=1))
    has_margin = rng.random(n_parcels) < 0.5
    lc = np.where(edge & has_margin[parcel] & (lc != 3), np.uint8(15), lc)

    # Forest zones (broadleaf or coniferous by a second low-frequency field).
    forest = n_low > np.quantile(n_low, 0.80)
    lc = np.where(forest, np.where(n_low2 > 0.3, np.uint8(4), np.uint8(3)), lc)
    canopy = np.clip(0.88 + 0.08 * n_mid, 0.55, 1.0).astype(np.float32)
    mix = np.where((lc == 3) | (lc == 4), canopy, mix)

    # Village: small Voronoi blocks of roofs, concrete, streets and gardens.
    uy, ux = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    ur = 0.13 * size
    r_u = np.sqrt((yy - uy) ** 2 + (xx - ux) ** 2) / ur
    urban = r_u < 1.0 + 0.3 * n_low2
    block = voronoi(rng, shape, 4)
    n_blocks = int(block.max()) + 1
    bkind = rng.choice(5, size=n_blocks, p=[0.35, 0.25, 0.15, 0.15, 0.10])
    bk = bkind[block]
    ulc = np.select([bk <= 1, bk == 2], [np.uint8(12), np.uint8(13)], np.uint8(14)).astype(np.uint8)
    umix = np.select([bk == 0, bk == 1, bk == 3], [1.0, 0.0, 0.2], 0.8).astype(np.float32)
    lc = np.where(urban, ulc, lc)
    mix = np.where(urban, umix, mix)

    # Lake with a turbid shore and a sandy beach.
    ly, lx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    lr = rng.uniform(0.08, 0.12) * size
    r_l = np.sqrt((yy - ly) ** 2 + (xx - lx) ** 2) / lr
    shore = 1.0 + 0.25 * n_low
    lake = (r_l < shore) & ~urban
    beach = (r_l >= shore) & (r_l < shore + 0.12) & (n_mid > 0.2) & ~urban
    lc = np.where(beach, np.uint8(11), lc)
    lc = np.where(lake, np.uint8(1), lc)
    turb = np.clip(0.1 + 0.8 * (r_l / np.maximum(shore, 1e-3)) ** 4 + 0.05 * n_mid, 0.0, 1.0)
    mix = np.where(lake, turb.astype(np.float32), mix)

    # Meandering river with riparian trees.
    ang = rng.uniform(0, math.pi)
    cu, cv = h / 2.0, w / 2.0
    u = (yy - cu) * math.cos(ang) + (xx - cv) * math.sin(ang)
    v = -(yy - cu) * math.sin(ang) + (xx - cv) * math.cos(ang)
    amp, lam, phase = 0.08 * size, rng.uniform(0.5, 0.8) * size, rng.uniform(0, 2 * math.pi)
    v0 = rng.uniform(-0.3, 0.3) * size
    vc = v0 + amp * np.sin(2 * math.pi * u / lam + phase)
    slope = amp * 2 * math.pi / lam * np.cos(2 * math.pi * u / lam + phase)
    dist = np.abs(v - vc) / np.sqrt(1.0 + slope**2)
    half = rng.uniform(1.2, 2.0)
    riparian = (dist < half + 3.0) & (n_mid > -0.3) & ~urban & ~lake
    river = (dist < half) & ~lake
    lc = np.where(riparian, np.uint8(3), lc)
    mix = np.where(riparian, np.float32(0.85), mix)
    lc = np.where(river, np.uint8(2), lc)
    mix = np.where(river, np.float32(0.85), mix)

    # Roads from the village to the edges (bridges over the river, none over the lake).
    road = np.zeros(shape, bool)
    for _ in range(3):
        side = rng.integers(4)
        t = rng.uniform(0.1, 0.9)
        end = [(0.0, t * w), (h, t * w), (t * h, 0.0), (t * h, w)][side]
        road |= segment_distance(yy, xx, (uy, ux), end) < 0.75
    lc = np.where(road & ~lake, np.uint8(13), lc)

    gain = rng.normal(1.0, 0.04, n_parcels).astype(np.float32)
    g0 = np.zeros(n_parcels, np.float32)
    rate = np.zeros(n_parcels, np.float32)
    g0[:] = rng.uniform(0.45, 0.80, n_parcels)  # cereals: start green, senesce
    rate[:] = -rng.uniform(0.010, 0.025, n_parcels)
    maize = parcel_kind == 6
    g0[maize] = rng.uniform(0.10, 0.35, int(maize.sum()))
    rate[maize] = rng.uniform(0.010, 0.020, int(maize.sum()))
    crop = parcel_kind == 7
    g0[crop] = rng.uniform(0.60, 0.90, int(crop.sum()))
    rate[crop] = rng.uniform(-0.004, 0.006, int(crop.sum()))
    meadow = parcel_kind == 8
    g0[meadow] = rng.uniform(0.65, 0.90, int(meadow.sum()))
    rate[meadow] = 0.0  # meadows: g0 until mown, then 0.25 regrowing by 0.02 per day
    soils = (parcel_kind == 9) | (parcel_kind == 10)
    g0[soils] = rng.uniform(0.0, 0.08, int(soils.sum()))
    rate[soils] = 0.0
    mow = rng.uniform(-10.0, 40.0, n_parcels).astype(np.float32)
    return Landscape(
        lc=np.ascontiguousarray(lc, dtype=np.uint8),
        parcel=parcel,
        mix=mix.astype(np.float32),
        texture_fine=n_fine,
        texture_mid=n_mid,
        parcel_gain=gain,
        g0=g0,
        rate=rate,
        mow_day=mow,
        meadow=meadow,
    )


def _greenness(land: Landscape, day: float) -> F32:
    """Green-vegetation cover fraction of every pixel on ``day`` (days since the first date)."""
    g = land.g0 + land.rate * day
    mown = np.minimum(0.25 + 0.02 * (day - land.mow_day), land.g0)
    g = np.where(land.meadow & (day >= land.mow_day), mown, np.where(land.meadow, land.g0, g))
    gp = np.clip(g, 0.0, 0.95).astype(np.float32)[land.parcel]
    out = np.clip(gp + 0.07 * land.texture_mid + 0.02 * land.texture_fine, 0.0, 1.0)
    return np.asarray(out, dtype=np.float32)


def surface_reflectance(land: Landscape, day: float, rng: np.random.Generator) -> F32:
    """True 13-band surface reflectance ``(13, h, w)`` on ``day``, with the date's BRDF factor."""
    lc, mix = land.lc, land.mix
    h, w = lc.shape
    g = _greenness(land, day)
    s = np.zeros((len(BANDS), h, w), np.float32)

    def put(mask: BoolA, parts: list[tuple[str, F32 | float]]) -> None:
        if not mask.any():
            return
        acc = np.zeros((len(BANDS), int(mask.sum())), np.float32)
        for name, weight in parts:
            wv = weight[mask] if isinstance(weight, np.ndarray) else np.float32(weight)
            acc += _E[name][:, None] * wv
        s[:, mask] = acc

    m = mix
    put(lc == 1, [("water_clear", 1 - m), ("water_turbid", m)])
    put(lc == 2, [("water_turbid", m), ("water_clear", 1 - m)])
    put(lc == 3, [("broadleaf", m), ("grass", 1 - m)])
    put(lc == 4, [("conifer", m), ("grass", (1 - m) * 0.5), ("soil_dark", (1 - m) * 0.5)])
    put(lc == 5, [("green_veg", g), ("dry_veg", (1 - g) * 0.8), ("soil_dark", (1 - g) * 0.2)])
    put(lc == 6, [("green_veg", g), ("soil_dark", (1 - g) * m), ("soil_bright", (1 - g) * (1 - m))])
    put(lc == 7, [("green_veg", g), ("soil_dark", 1 - g)])
    put(lc == 8, [("grass", g), ("dry_veg", 1 - g)])
    put(
        lc == 9,
        [
            ("green_veg", g),
            ("soil_dark", (1 - g) * (0.7 + 0.3 * m)),
            ("soil_bright", (1 - g) * 0.3 * (1 - m)),
        ],
    )
    put(
        lc == 10,
        [
            ("green_veg", g),
            ("soil_bright", (1 - g) * (0.75 + 0.25 * m)),
            ("soil_dark", (1 - g) * 0.25 * (1 - m)),
        ],
    )
    put(lc == 11, [("sand", 0.9), ("soil_bright", 0.1)])
    put(lc == 12, [("roof_tile", m), ("concrete", 1 - m)])
    put(lc == 13, [("asphalt", 0.8), ("grass", 0.2)])
    put(lc == 14, [("broadleaf", m), ("grass", 1 - m)])
    put(lc == 15, [("grass", 0.8), ("dry_veg", 0.2)])
    put(lc == 16, [("snow_old", m), ("limestone", 1 - m)])
    put(lc == 17, [("limestone", 1 - m), ("grass", m)])

    agri = (lc >= 5) & (lc <= 10)
    gain = np.where(agri, land.parcel_gain[land.parcel], np.float32(1.0))
    tex = 1.0 + _TEXTURE_AMP[lc] * land.texture_fine
    s *= (gain * np.clip(tex, 0.5, 1.6)).astype(np.float32)[None]
    s = blur3(s)
    # Per-date illumination / BRDF: a common and a per-band factor, plus a cross-track gradient.
    common = 1.0 + rng.normal(0.0, 0.012)
    per_band = 1.0 + rng.normal(0.0, 0.005, len(BANDS))
    grad = rng.uniform(-0.03, 0.03)
    across = 1.0 + grad * ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5)
    s *= (common * per_band).astype(np.float32)[:, None, None]
    s *= across.astype(np.float32)[None, None, :]
    return np.asarray(np.clip(s, 0.0, 1.0), dtype=np.float32)
