"""Misregistered scenes with a known displacement (global shift, rotation, a smooth warp; with or
without clouds), for co-registration tests and benchmarks; the truth per pixel comes with them.
How they are made, and why nothing in them favours a matcher: docs/sample.md."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine
from scipy import ndimage

from ..steps.base import AuxLayer, Scene
from .arrays import stream_rng
from .atmosphere import DIFFUSE, TRANSMITTANCE
from .clouds import CIRRUS_SPECTRUM, CLOUD_SPECTRUM, make_clouds
from .landcover import Landscape, make_landscape, surface_reflectance
from .msi import BAND_NAMES, NOISE_SIGMA
from .spec import SampleSpec

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]

DEFAULT_BANDS: Final = ("B02", "B03", "B04", "B08")
"""The 10 m bands a coreg scene carries by default."""
PIXEL: Final = 10.0
"""Pixel size of the scenes (m)."""
EPSG: Final = 32633
"""CRS of the scenes (UTM zone 33N)."""
ORIGIN: Final = (500000.0, 5300000.0)
"""Upper-left corner of the scene grid (m)."""
PAD: Final = 24
"""Pixels of surface rendered around the grid, so displaced samples stay on real surface."""
TRUTH_X: Final = "TRUTH_X"
"""Name of the band holding the true surface column of each pixel (see
:func:`with_truth_coordinates`)."""
TRUTH_Y: Final = "TRUTH_Y"
"""Name of the band holding the true surface row of each pixel."""

_SUN_ZENITH: Final = 35.0
_SUN_AZIMUTH: Final = 150.0
_STREAM: Final = 40  # rng streams of this module start here (sample.py uses 1-9)


@dataclass(frozen=True)
class Warp:
    """A known displacement of image content, in pixels: ``(+dx, +dy)`` moves content east and
    south. The sum of a constant shift, a rotation about the grid centre and a sinusoidal field.
    """

    shift: tuple[float, float] = (0.0, 0.0)
    """Constant part ``(dx, dy)`` in pixels."""
    rotation_deg: float = 0.0
    """Rotation of the content about the grid centre, degrees (counter-clockwise on the map)."""
    wave_amplitude: tuple[float, float] = (0.0, 0.0)
    """Amplitude ``(ax, ay)`` in pixels of the sinusoidal part."""
    wave_length: float = 1000.0
    """Wavelength of the sinusoidal part in pixels (along the diagonal)."""
    wave_phase: float = 0.0
    """Phase of the sinusoidal part, radians."""

    def field(self, shape: tuple[int, int]) -> tuple[F32, F32]:
        """``(dx, dy)`` at the centres of the pixels of a ``shape`` grid."""
        h, w = shape
        yy = np.arange(h, dtype=np.float64)[:, None] + 0.5 - h / 2.0
        xx = np.arange(w, dtype=np.float64)[None, :] + 0.5 - w / 2.0
        th = math.radians(self.rotation_deg)
        # content rotated counter-clockwise on the map (y up = -row): displacement R p - p
        c, s = math.cos(th), math.sin(th)
        dx = (c - 1.0) * xx + s * yy
        dy = -s * xx + (c - 1.0) * yy
        phase = 2.0 * math.pi * (xx + yy) / (math.sqrt(2.0) * self.wave_length) + self.wave_phase
        dx = dx + self.shift[0] + self.wave_amplitude[0] * np.sin(phase)
        dy = dy + self.shift[1] + self.wave_amplitude[1] * np.cos(phase)
        return dx.astype(np.float32), dy.astype(np.float32)

    @property
    def is_global(self) -> bool:
        """Whether the displacement is the same everywhere (a pure shift)."""
        return self.rotation_deg == 0.0 and self.wave_amplitude == (0.0, 0.0)


def random_shift(rng: np.random.Generator, lo: float = 0.3, hi: float = 3.0) -> Warp:
    """A global shift of length uniform in ``[lo, hi]`` pixels in a random direction."""
    r, a = rng.uniform(lo, hi), rng.uniform(0.0, 2.0 * math.pi)
    return Warp(shift=(float(r * math.cos(a)), float(r * math.sin(a))))


def random_warp(rng: np.random.Generator, size: int, max_px: float = 2.0) -> Warp:
    """A smooth warp whose displacement stays within about ``max_px`` pixels over a
    ``size``-pixel grid: a shift of up to 0.8 px, a rotation giving up to 0.6 px at the
    corners and a sinusoid of up to 0.6 px amplitude with a wavelength of 0.8-1.5 grid sizes."""
    budget = max_px / 2.0
    shift = random_shift(rng, 0.1, 0.4 * budget * 2.0).shift
    corner = size / math.sqrt(2.0)
    rot = math.degrees(rng.uniform(0.3, 0.6) * budget / corner) * rng.choice([-1.0, 1.0])
    amp = rng.uniform(0.3, 0.6, 2) * budget * rng.choice([-1.0, 1.0], 2)
    return Warp(
        shift=shift,
        rotation_deg=float(rot),
        wave_amplitude=(float(amp[0]), float(amp[1])),
        wave_length=float(rng.uniform(0.8, 1.5) * size),
        wave_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
    )


@dataclass(frozen=True)
class CoregTruth:
    """The true displacement of the target scene, per pixel (see :class:`Warp` for the sign)."""

    dx: F32
    dy: F32
    warp: Warp
    cloud: BoolA = field(repr=False)
    """True where the target has cloud or cloud shadow of any opacity."""
    cloud_fraction: float = 0.0
    """Fraction of the grid under cloud or shadow (truth, not the mask)."""


@dataclass(frozen=True)
class CoregScene:
    """A misregistered target scene (with ``aux["reference"]`` set) and its truth."""

    scene: Scene
    reference: AuxLayer
    truth: CoregTruth


def coreg_geobox(size: int | tuple[int, int]) -> GeoBox:
    """The 10 m UTM grid of the generated scenes (``size`` px square or ``(height, width)``)."""
    h, w = (size, size) if isinstance(size, int) else size
    return GeoBox((h, w), Affine(PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1]), f"EPSG:{EPSG}")


@functools.lru_cache(maxsize=2)
def _land(seed: int, shape: tuple[int, int]) -> Landscape:
    return make_landscape(SampleSpec(seed=seed, width=shape[1], height=shape[0]), shape)


def _surface_day(seed: int, shape: tuple[int, int], day: float, stream: int) -> F32:
    """13-band surface reflectance of ``day`` on the padded grid."""
    return surface_reflectance(
        _land(seed, shape), day, stream_rng(seed, _STREAM + stream, int(day * 10))
    )


def _noise(rng: np.random.Generator, shape: tuple[int, int], band: str) -> F32:
    i = BAND_NAMES.index(band)
    sigma = float(NOISE_SIGMA[i] / TRANSMITTANCE[i])
    return rng.normal(0.0, sigma, shape).astype(np.float32)


def make_coreg_scene(
    *,
    size: int = 400,
    warp: Warp | None = None,
    cloud_cover: float = 0.0,
    seed: int = 0,
    date: int = 0,
    bands: tuple[str, ...] = DEFAULT_BANDS,
    reference_band: str = "B08",
    reference_day: float = 0.0,
    day: float | None = None,
    flat: bool = False,
) -> CoregScene:
    """A ``size`` x ``size`` px scene at 10 m displaced by ``warp`` against its reference.

    ``seed`` picks the landscape (shared by all dates of a seed), ``date`` the acquisition (day
    ``10 + 5 * date`` unless ``day`` is given; its noise, illumination and clouds). ``cloud_cover``
    is the sample cloud model's target fraction (0-0.9); with clouds the scene gets a
    ``CLOUD_MASK`` class layer. ``flat`` replaces the surface by a uniform field plus sensor noise
    (nothing to match), for failure tests.
    """
    warp = warp if warp is not None else Warp()
    gbox = coreg_geobox(size)
    padded = (size + 2 * PAD, size + 2 * PAD)
    t_day = 10.0 + 5.0 * date if day is None else day
    rng = stream_rng(seed, _STREAM, 100 + date)

    ref_surface = _surface_day(seed, padded, reference_day, 1)
    tgt_surface = _surface_day(seed, padded, t_day, 2 + date)
    if flat:
        ref_surface = np.broadcast_to(
            ref_surface.mean(axis=(1, 2), keepdims=True), ref_surface.shape
        )
        tgt_surface = np.broadcast_to(
            tgt_surface.mean(axis=(1, 2), keepdims=True), tgt_surface.shape
        )

    dx, dy = warp.field((size, size))
    rows = np.arange(size, dtype=np.float32)[:, None] + PAD - dy
    cols = np.arange(size, dtype=np.float32)[None, :] + PAD - dx
    coords = np.stack([rows, cols])

    # Clouds and shadows in image geometry.
    cloud = np.zeros((size, size), dtype=bool)
    mask: NDArray[np.uint8] | None = None
    alpha = rho = shadow = cirrus = np.zeros((size, size), np.float32)
    if cloud_cover > 0.0:
        spec = SampleSpec(seed=seed, width=size, height=size, cloud_cover=(cloud_cover,))
        cl = make_clouds(spec, date, (size, size), (size, size), _SUN_ZENITH, _SUN_AZIMUTH)
        alpha, rho, shadow, cirrus = cl.alpha, cl.rho, cl.shadow, cl.cirrus
        cloud = (alpha > 0) | (shadow > 0) | (cirrus > 0)
        is_cloud = ndimage.binary_dilation(
            (alpha > 0.05) | (cirrus > 0.012), structure=np.ones((5, 5), bool)
        )
        mask = np.ones((size, size), np.uint8)
        mask[(shadow > 0) & ~is_cloud] = 3
        mask[is_cloud] = 2

    refl: dict[str, np.ndarray] = {}
    for b in bands:
        i = BAND_NAMES.index(b)
        s = ndimage.map_coordinates(tgt_surface[i], coords, order=3, mode="nearest")
        s = s.astype(np.float32)
        if cloud_cover > 0.0:
            s = s * (1.0 - (1.0 - DIFFUSE[i]) * shadow)
            s = (1.0 - alpha) * s + alpha * rho * CLOUD_SPECTRUM[i] + cirrus * CIRRUS_SPECTRUM[i]
        refl[b] = (s + _noise(rng, (size, size), b)).astype(np.float32)

    ri = BAND_NAMES.index(reference_band)
    inner = (slice(PAD, PAD + size), slice(PAD, PAD + size))
    ref = ref_surface[ri][inner] + _noise(
        stream_rng(seed, _STREAM + 1, 0), (size, size), reference_band
    )
    reference = AuxLayer(
        data=ref.astype(np.float32)[None],
        geobox=gbox,
        bands=(reference_band,),
        source=f"reference:synthetic-{seed}-day{reference_day:g}",
    )
    classes = {"CLOUD_MASK": mask} if mask is not None else {}
    scene = Scene(
        item_id=f"S2_COREG_{seed}_{date}",
        geobox=gbox,
        bands=refl,
        classes=classes,
        aux={"reference": reference},
    )
    truth = CoregTruth(dx, dy, warp, cloud, float(cloud.mean()))
    return CoregScene(scene, reference, truth)


def with_truth_coordinates(cs: CoregScene) -> Scene:
    """The scene with two extra smooth bands, :data:`TRUTH_X` / :data:`TRUTH_Y`: the true
    surface column / row (pixel centres, 0-based) that each pixel shows. A correction that moves
    these bands with the reflectance makes them read the pixel's own coordinates where it is
    perfect; :func:`residual_px` measures the difference. They are smooth (a few pixels of change
    over the grid), so any interpolating kernel carries them exactly enough (< 0.001 px)."""
    h, w = cs.scene.geobox.shape.yx
    cols = np.arange(w, dtype=np.float32)[None, :] - cs.truth.dx
    rows = np.arange(h, dtype=np.float32)[:, None] - cs.truth.dy
    bands = dict(cs.scene.bands)
    bands[TRUTH_X] = cols.astype(np.float32)
    bands[TRUTH_Y] = rows.astype(np.float32)
    return cs.scene.replace(bands=bands)


def residual_px(scene: Scene, margin: int = 0) -> tuple[F32, F32]:
    """Remaining misregistration ``(ex, ey)`` per pixel of a scene made by
    :func:`with_truth_coordinates` (after a correction): where the content a pixel shows truly
    lies minus where the pixel is, in pixels; NaN where the correction left no data. ``margin``
    pixels at the edges are set to NaN."""
    h, w = scene.geobox.shape.yx
    ex = scene.bands[TRUTH_X] - np.arange(w, dtype=np.float32)[None, :]
    ey = scene.bands[TRUTH_Y] - np.arange(h, dtype=np.float32)[:, None]
    if margin > 0:
        edge = np.ones((h, w), bool)
        edge[margin : h - margin, margin : w - margin] = False
        ex = np.where(edge, np.nan, ex)
        ey = np.where(edge, np.nan, ey)
    return ex.astype(np.float32), ey.astype(np.float32)


def rmse_px(ex: F32, ey: F32) -> float:
    """Root-mean-square length of the residual vectors over the finite pixels."""
    ok = np.isfinite(ex) & np.isfinite(ey)
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.mean(ex[ok] ** 2 + ey[ok] ** 2)))


__all__ = [
    "DEFAULT_BANDS",
    "EPSG",
    "ORIGIN",
    "PAD",
    "PIXEL",
    "TRUTH_X",
    "TRUTH_Y",
    "CoregScene",
    "CoregTruth",
    "Warp",
    "coreg_geobox",
    "make_coreg_scene",
    "random_shift",
    "random_warp",
    "residual_px",
    "rmse_px",
    "with_truth_coordinates",
]
