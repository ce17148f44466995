"""NBAR (c-factor) on generated scenes with a known BRDF: the cross-track gradient and the
error to the true nadir reflectance, before and after the step.

A strip across the whole Sentinel-2 swath (290 km; view zenith from 0 at the ground track to
11.5° at the edges, the view azimuth flipping from ~103° west of the track to ~283° east of
it, as for the descending orbit's ~193° heading) is seen under the sun of a realistic date and
place (10:30 local solar time; declination and hour angle per pixel). The surface is a
patchwork of five land-cover classes (broadleaf and needleleaf forest, cropland, grassland, bare
soil) with their own nadir spectra and their own kernel-driven BRDF (RossThick +
LiSparse-Reciprocal): per class and spectral region a volume and a geometric weight relative to
the isotropic one (``vol/iso`` 0.12-0.8, ``geo/iso`` 0.05-0.25), jittered per pixel by 25 %
(log-normal, truncated to x0.6-x1.6 so that the surface's reflectance stays positive). These
shapes are invented, of the order of MODIS BRDF parameters, and are never the method's own
fixed coefficients (``surface_shape`` lists both), so the benchmark measures what one set of
global coefficients leaves of anisotropies it does not know. The observed reflectance is the
true nadir reflectance (at the observed sun zenith: what the default ``sun_zenith: observed``
normalises to) times ``R_surface(observed) / R_surface(nadir)``; no sensor noise.

* ``cross_track_gradient_before`` / ``_after`` / ``_truth``: per band, the slope of a straight
  line fitted to the per-column mean reflectance against the across-track distance, times the
  swath width (290 km), over the mean reflectance: the relative change from one swath edge to
  the other (0.05 = 5 %); averaged (absolute values) over the scenarios, and over the bands
  (``overall``). ``_truth`` is that of the true nadir reflectance: the floor the landscape's
  own layout leaves.
* ``cross_track_residual_gradient_before`` / ``_after``: the same line fitted to the per-column
  mean of (reflectance - true nadir reflectance), over the mean true reflectance: the BRDF
  gradient alone, without the landscape's floor.
* ``nadir_rmse_before`` / ``_after``: per band, the RMSE of the observed / corrected reflectance
  against the true nadir reflectance over all pixels, relative to the mean true reflectance;
  averaged over the scenarios (and the bands: ``overall``).
* ``seconds_per_megapixel``: the step alone (ten bands, whole scene), on this machine.

    python benchmarks/nbar.py --quick   # 80 x 580 px strips (500 m pixels): ~1 s
    python benchmarks/nbar.py           # 800 x 2900 px strips (100 m pixels): ~15 s

Results go to ``benchmarks/results/nbar.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_results
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube.angles import ANGLE_BANDS
from stac2cube.steps.base import AuxLayer, Scene
from stac2cube.steps.nbar import COEFFICIENTS, NbarConfig, kernels
from stac2cube.steps.nbar.step import ANGLES, NbarStep

RESULTS = Path(__file__).parent / "results" / "nbar.json"
F64 = NDArray[np.float64]

SWATH_KM = 290.0
MAX_VIEW_ZENITH = 11.5
HEADING = 193.0
"""Ground-track heading of the descending orbit (degrees clockwise from north)."""
LOCAL_TIME_H = 10.5
BANDS = tuple(COEFFICIENTS)
REGION = {
    "B02": "vis", "B03": "vis", "B04": "vis", "B05": "vis", "B06": "nir", "B07": "nir",
    "B08": "nir", "B8A": "nir", "B11": "swir", "B12": "swir",
}  # fmt: skip
"""Which BRDF shape of a class each band takes."""


@dataclass(frozen=True)
class LandCover:
    """A class of the generated surface: its nadir spectrum and BRDF shape per region."""

    name: str
    share: float
    nadir: tuple[float, ...]
    """Nadir reflectance per band of :data:`BANDS`."""
    shape: dict[str, tuple[float, float]]
    """``(vol/iso, geo/iso)`` per region (``vis``, ``nir``, ``swir``)."""


CLASSES = (
    LandCover(
        "broadleaf forest",
        0.25,
        (0.03, 0.06, 0.035, 0.09, 0.25, 0.32, 0.35, 0.36, 0.18, 0.08),
        {"vis": (0.55, 0.20), "nir": (0.70, 0.08), "swir": (0.45, 0.15)},
    ),
    LandCover(
        "needleleaf forest",
        0.15,
        (0.02, 0.04, 0.025, 0.06, 0.16, 0.20, 0.22, 0.23, 0.11, 0.05),
        {"vis": (0.40, 0.25), "nir": (0.55, 0.15), "swir": (0.35, 0.22)},
    ),
    LandCover(
        "cropland",
        0.30,
        (0.04, 0.08, 0.05, 0.12, 0.30, 0.38, 0.42, 0.43, 0.22, 0.10),
        {"vis": (0.35, 0.12), "nir": (0.80, 0.05), "swir": (0.30, 0.10)},
    ),
    LandCover(
        "grassland",
        0.20,
        (0.05, 0.09, 0.07, 0.13, 0.24, 0.28, 0.30, 0.31, 0.26, 0.15),
        {"vis": (0.30, 0.10), "nir": (0.45, 0.08), "swir": (0.28, 0.10)},
    ),
    LandCover(
        "bare soil",
        0.10,
        (0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.26, 0.27, 0.33, 0.28),
        {"vis": (0.15, 0.22), "nir": (0.12, 0.20), "swir": (0.12, 0.24)},
    ),
)
JITTER = 0.25
"""Log-normal spread of each pixel's vol/iso and geo/iso around its class's, truncated to
:data:`JITTER_RANGE` (so that the surface's reflectance stays positive at every angle)."""
JITTER_RANGE = (0.6, 1.6)


@dataclass(frozen=True)
class Scenario:
    name: str
    latitude: float
    day_of_year: int


SCENARIOS = (
    Scenario("46N 21 June", 46.0, 172),
    Scenario("46N 20 October", 46.0, 293),
    Scenario("5N 21 March (sun near the across-track plane)", 5.0, 80),
)


def sun_position(lat: F64, day: int, hour_angle: F64) -> tuple[F64, F64]:
    """Sun zenith and azimuth (degrees, azimuth clockwise from north) for latitude ``lat``,
    day of year ``day`` and hour angle ``hour_angle`` (degrees, negative before noon)."""
    decl = math.radians(-23.44 * math.cos(math.radians(360.0 / 365.0 * (day + 10))))
    phi, h = np.radians(lat), np.radians(hour_angle)
    cos_z = np.sin(phi) * math.sin(decl) + np.cos(phi) * math.cos(decl) * np.cos(h)
    zenith = np.degrees(np.arccos(np.clip(cos_z, -1.0, 1.0)))
    east = -math.cos(decl) * np.sin(h)
    north = math.sin(decl) * np.cos(phi) - math.cos(decl) * np.sin(phi) * np.cos(h)
    azimuth = np.degrees(np.arctan2(east, north)) % 360.0
    return zenith, azimuth


def class_map(rows: int, cols: int, patch: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """A patchwork of land-cover classes (square-ish fields of ``patch`` px, shares as
    :data:`CLASSES`)."""
    ch, cw = -(-rows // patch), -(-cols // patch)
    shares = np.array([c.share for c in CLASSES])
    coarse = rng.choice(len(CLASSES), size=(ch, cw), p=shares / shares.sum())
    out: NDArray[np.intp] = np.repeat(np.repeat(coarse, patch, 0), patch, 1)[:rows, :cols]
    return out


@dataclass
class Generated:
    scene: Scene
    truth: dict[str, F64]
    across_km: F64
    sun_zenith: float
    sun_azimuth: float


def generate(scenario: Scenario, rows: int, cols: int, patch: int, seed: int) -> Generated:
    """One strip across the swath under ``scenario``'s sun, fields of ``patch`` px."""
    rng = np.random.default_rng(seed)
    pixel_km = SWATH_KM / cols
    across: F64 = (np.arange(cols, dtype=np.float64) - (cols - 1) / 2.0) * pixel_km  # east: > 0
    along = (np.arange(rows) - (rows - 1) / 2.0) * pixel_km
    height = (SWATH_KM / 2.0) / math.tan(math.radians(MAX_VIEW_ZENITH))
    vz = np.broadcast_to(np.degrees(np.arctan(np.abs(across) / height)), (rows, cols))
    vaz = np.broadcast_to(
        np.where(across < 0, HEADING - 90.0, HEADING + 90.0) % 360.0, (rows, cols)
    )
    lat = np.broadcast_to(scenario.latitude - along[:, None] / 111.32, (rows, cols))
    lon_deg = across / (111.32 * math.cos(math.radians(scenario.latitude)))
    hour_angle = np.broadcast_to(15.0 * (LOCAL_TIME_H - 12.0) + lon_deg, (rows, cols))
    sz, saz = sun_position(lat, scenario.day_of_year, hour_angle)
    raa = saz - vaz
    observed = kernels(sz, vz, raa)
    nadir = kernels(sz, 0.0, raa)
    classes = class_map(rows, cols, patch, rng)
    # each pixel's BRDF shape: its class's per region, jittered (one draw per pixel and region)
    jitter = {
        r: np.clip(rng.lognormal(0.0, JITTER, (2, rows, cols)), *JITTER_RANGE)
        for r in ("vis", "nir", "swir")
    }
    truth: dict[str, F64] = {}
    bands: dict[str, NDArray[np.float32]] = {}
    for i, band in enumerate(BANDS):
        region = REGION[band]
        spectrum = np.array([c.nadir[i] for c in CLASSES])
        ratios = np.array([c.shape[region] for c in CLASSES])  # (classes, 2)
        vol = ratios[classes, 0] * jitter[region][0]
        geo = ratios[classes, 1] * jitter[region][1]
        t = spectrum[classes] * rng.lognormal(0.0, 0.1, (rows, cols))
        r_obs = 1.0 + vol * observed[0] + geo * observed[1]
        r_nadir = 1.0 + vol * nadir[0] + geo * nadir[1]
        assert min(r_obs.min(), r_nadir.min()) > 0.1, "the generated BRDF must stay positive"
        truth[band] = t
        bands[band] = (t * r_obs / r_nadir).astype(np.float32)
    geobox = GeoBox(
        (rows, cols),
        Affine(pixel_km * 1000.0, 0.0, 500000.0, 0.0, -pixel_km * 1000.0, 5100000.0),
        "EPSG:32632",
    )
    angles = np.stack([sz, saz, vz, vaz]).astype(np.float32)
    layer = AuxLayer(angles, geobox, ANGLE_BANDS, source="generated")
    scene = Scene(scenario.name, geobox, bands, aux={ANGLES: layer})
    return Generated(scene, truth, across, float(sz.mean()), float(saz.mean()))


def gradient(a: NDArray[Any], across_km: F64) -> float:
    """Edge-to-edge relative change of the per-column mean along a fitted line."""
    means = np.nanmean(np.asarray(a, np.float64), axis=0)
    slope = np.polyfit(across_km, means, 1)[0]
    return float(slope * SWATH_KM / np.mean(means))


def residual_gradient(a: NDArray[Any], truth: F64, across_km: F64) -> float:
    """Edge-to-edge change of the per-column mean of ``a - truth``, over the mean truth."""
    d = np.mean(np.asarray(a, np.float64) - truth, axis=0)
    return float(np.polyfit(across_km, d, 1)[0] * SWATH_KM / np.mean(truth))


def relative_rmse(a: NDArray[Any], truth: F64) -> float:
    d = np.asarray(a, np.float64) - truth
    return float(np.sqrt(np.mean(d**2)) / np.mean(truth))


def surface_shape() -> dict[str, Any]:
    """The generated surface's mean BRDF shape per band against the method's coefficients."""
    out: dict[str, Any] = {}
    for band in BANDS:
        region = REGION[band]
        shares = np.array([c.share for c in CLASSES])
        vol = np.array([c.shape[region][0] for c in CLASSES])
        geo = np.array([c.shape[region][1] for c in CLASSES])
        coef = COEFFICIENTS[band]
        out[band] = {
            "surface_vol_iso_by_class": dict(
                zip([c.name for c in CLASSES], vol.tolist(), strict=True)
            ),
            "surface_geo_iso_by_class": dict(
                zip([c.name for c in CLASSES], geo.tolist(), strict=True)
            ),
            "surface_vol_iso_mean": round(float((shares * vol).sum()), 3),
            "surface_geo_iso_mean": round(float((shares * geo).sum()), 3),
            "method_vol_iso": round(coef.vol / coef.iso, 3),
            "method_geo_iso": round(coef.geo / coef.iso, 3),
        }
    return out


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="80 x 580 px strips")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows, cols, patch = (80, 580, 4) if args.quick else (800, 2900, 8)
    step, cfg = NbarStep(), NbarConfig()
    per: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    pixels = 0
    for k, scenario in enumerate(SCENARIOS):
        g = generate(scenario, rows, cols, patch, seed=k)
        t0 = time.perf_counter()
        res = step.run(g.scene, cfg)
        seconds += time.perf_counter() - t0
        pixels += rows * cols
        assert res.record.results["applied"] is True
        out: dict[str, Any] = {
            "sun_zenith_deg": round(g.sun_zenith, 2),
            "sun_azimuth_deg": round(g.sun_azimuth, 2),
            "cross_track_gradient_before": {},
            "cross_track_gradient_after": {},
            "cross_track_gradient_truth": {},
            "cross_track_residual_gradient_before": {},
            "cross_track_residual_gradient_after": {},
            "nadir_rmse_before": {},
            "nadir_rmse_after": {},
            "c_factor": res.record.results["c_factor"],
        }
        for band in BANDS:
            before, after = g.scene.bands[band], res.scene.bands[band]
            out["cross_track_gradient_before"][band] = round(gradient(before, g.across_km), 4)
            out["cross_track_gradient_after"][band] = round(gradient(after, g.across_km), 4)
            out["cross_track_gradient_truth"][band] = round(gradient(g.truth[band], g.across_km), 4)
            t = g.truth[band]
            out["cross_track_residual_gradient_before"][band] = round(
                residual_gradient(before, t, g.across_km), 4
            )
            out["cross_track_residual_gradient_after"][band] = round(
                residual_gradient(after, t, g.across_km), 4
            )
            out["nadir_rmse_before"][band] = round(relative_rmse(before, g.truth[band]), 4)
            out["nadir_rmse_after"][band] = round(relative_rmse(after, g.truth[band]), 4)
        per[scenario.name] = out

    result: dict[str, Any] = {
        "benchmark": "nbar",
        "quick": args.quick,
        "data": "generated",
        "method": (
            "c-factor NBAR (Roy et al. 2016, 2017 fixed coefficients; RossThick + "
            "LiSparse-Reciprocal) on strips across the 290 km swath (view zenith 0-11.5°) under "
            "three sun geometries, over a five-class surface whose per-pixel kernel weights "
            "differ from the method's; truth = nadir reflectance at the observed sun zenith"
        ),
        "definitions": {
            "cross_track_gradient": (
                "slope of a line fitted to the per-column mean reflectance vs across-track "
                "distance x 290 km / mean reflectance: the relative change from one swath edge "
                "to the other; per band the mean of its absolute value over the scenarios, "
                "overall the mean over the bands (signed values per scenario)"
            ),
            "cross_track_residual_gradient": (
                "the same line fitted to the per-column mean of (reflectance - true nadir "
                "reflectance) x 290 km / mean true reflectance: the BRDF gradient without the "
                "landscape's own (cross_track_gradient_truth)"
            ),
            "nadir_rmse": (
                "RMSE against the true nadir reflectance / mean true reflectance, all pixels; "
                "per band the mean over the scenarios, overall the mean over the bands"
            ),
        },
        "config": {"view_zenith": cfg.view_zenith, "sun_zenith": cfg.sun_zenith},
        "strip_px": [rows, cols],
        "field_px": patch,
        "pixel_m": round(SWATH_KM * 1000.0 / cols, 1),
    }
    for key in (
        "cross_track_gradient_before",
        "cross_track_gradient_after",
        "cross_track_gradient_truth",
        "cross_track_residual_gradient_before",
        "cross_track_residual_gradient_after",
        "nadir_rmse_before",
        "nadir_rmse_after",
    ):
        by_band = {b: _mean([abs(per[s.name][key][b]) for s in SCENARIOS]) for b in BANDS}
        result[key] = {**by_band, "overall": _mean(list(by_band.values()))}
    gb, ga = result["cross_track_gradient_before"], result["cross_track_gradient_after"]
    rb, ra = result["nadir_rmse_before"], result["nadir_rmse_after"]
    result["gradient_after_over_before"] = round(ga["overall"] / gb["overall"], 3)
    res_b = result["cross_track_residual_gradient_before"]["overall"]
    res_a = result["cross_track_residual_gradient_after"]["overall"]
    result["residual_gradient_after_over_before"] = round(res_a / res_b, 3)
    result["rmse_after_over_before"] = round(ra["overall"] / rb["overall"], 3)
    result["bands_worse_after"] = sorted(
        {
            b
            for s in SCENARIOS
            for b in BANDS
            if per[s.name]["nadir_rmse_after"][b] > per[s.name]["nadir_rmse_before"][b]
        }
    )
    result["seconds_per_megapixel"] = round(seconds / (pixels / 1e6), 3)
    result["scenarios"] = per
    result["surface_shape"] = surface_shape()
    write_results(result, args.out)
    for key in ("cross_track_gradient_before", "cross_track_gradient_after", "nadir_rmse_before"):
        print(key, result[key]["overall"])
    print("nadir_rmse_after", result["nadir_rmse_after"]["overall"])


if __name__ == "__main__":
    main()
