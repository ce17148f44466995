"""The provider's scene classification (SCL), derived from the truth with the kinds of error
Sen2Cor is known to make (never from the cloud step's rules), and its agreement with the truth."""

from __future__ import annotations

from typing import Final

import numpy as np

from .arrays import F32, U8, BoolA, block_mean, stream_rng, uniform_field
from .msi import BAND_INDEX
from .spec import SampleSpec

_SCL_COMMISSION: Final[dict[int, float]] = {12: 0.06, 11: 0.05, 10: 0.03, 17: 0.04, 16: 0.03}
"""Share of the clear pixels of a land-cover code that the simulated SCL calls cloud (class 8)."""


def scl_from_truth(
    spec: SampleSpec,
    date: int,
    alpha: F32,
    cirrus: F32,
    shadow: BoolA,
    lc: U8,
    surf: F32,
    direct: F32,
    nodata: BoolA,
) -> U8:
    """Scene classification at 20 m from the 10 m truth (padded grid), see docs/sample.md."""
    s20 = nodata.shape
    rng = stream_rng(spec.seed, 9, date)
    u_cloud, u_cirrus, u_shadow, u_unclassified, u_bright = (
        uniform_field(rng, s20, 3.0) for _ in range(5)
    )
    a20 = block_mean(alpha, 2, s20)
    c20 = block_mean(cirrus, 2, s20)
    sh20 = block_mean(shadow.astype(np.float32), 2, s20)
    dark20 = block_mean((direct < 0.2).astype(np.float32), 2, s20) > 0.5
    nir, red = (
        block_mean(surf[BAND_INDEX["B08"]], 2, s20),
        block_mean(surf[BAND_INDEX["B04"]], 2, s20),
    )
    ndvi = (nir - red) / (nir + red + np.float32(1e-6))
    lc20 = lc[::2, ::2][: s20[0], : s20[1]]
    snow = lc20 == 16
    scl = np.full(s20, 5, np.uint8)
    scl[ndvi >= 0.4] = 4
    scl[dark20] = 2
    scl[np.isin(lc20, (1, 2))] = 6
    scl[snow] = 11
    clear = (a20 == 0) & (c20 == 0)
    for code, rate in _SCL_COMMISSION.items():
        sel = clear & (lc20 == code)
        if sel.any():
            scl[sel & (u_bright <= np.quantile(u_bright[sel], rate))] = 8
    scl[(sh20 >= 0.5) & (u_shadow < 0.5)] = 3
    detect = np.float32(0.15) + np.float32(0.30) * u_cloud
    cloud = a20 > detect
    scl[(a20 > 0.05) & ~cloud & (u_unclassified < 0.5)] = 7
    scl[cloud] = 8
    scl[a20 >= 0.6] = 9
    scl[cloud & snow & (a20 < 0.6)] = 11
    scl[(c20 > np.float32(0.006) + np.float32(0.014) * u_cirrus) & ~cloud] = 10
    scl[nodata] = 0
    return scl


def scl_stats(scl: U8, truth10: U8) -> dict[str, float | None]:
    t = truth10[::2, ::2][: scl.shape[0], : scl.shape[1]]
    s = scl[: t.shape[0], : t.shape[1]]
    valid = t != 255
    scl_cloud = np.isin(s, (8, 9, 10))

    def rate(num: BoolA, den: BoolA) -> float | None:
        n = int(den.sum())
        return None if n == 0 else round(float((num & den).sum()) / n, 4)

    tc = np.isin(t, (1, 2, 3)) & valid
    clear = (t == 0) & valid
    return {
        "cloud_recall": rate(scl_cloud, tc),
        "thick_cloud_recall": rate(np.isin(s, (8, 9)), t == 1),
        "thin_cloud_recall": rate(scl_cloud, t == 2),
        "cirrus_recall": rate(scl_cloud, t == 3),
        "cloud_false_alarm": rate(scl_cloud, clear | ((t == 4) & valid)),
        "shadow_recall": rate(s == 3, (t == 4) & valid),
        "shadow_false_alarm": rate(s == 3, clear),
        "unclassified_rate": rate(s == 7, valid),
    }
