"""Reference images, the pure parts: how a candidate is rated, chosen and read.

The catalog's references (:mod:`stac2cube.references.build`) are chosen here; the
co-registration step rates its matching windows with the same measures:

* :func:`texture_score` and :func:`clear_fraction` rate a candidate band;
* :func:`choose_reference` picks the clearest textured candidate (``clearest``) or composites the
  per-pixel median of the ``n`` clearest (``median``), clouds masked;
* :func:`reproject_reference` reads a user-supplied reference raster (``reference: file``, any CRS,
  a path or a GDAL-readable URL) onto the scene grid.

Only :func:`reproject_reference` reads (one raster, through rasterio); nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ..errors import AssetReadError, ConfigError, NoOverlapError

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]

ReferenceChoice = Literal["clearest", "median"]

MIN_TEXTURE: Final = 0.003
"""Default texture (see :func:`texture_score`) below which a band is too flat to match: about
3x what 0.003 sensor noise alone gives, 5-10x below an agricultural landscape in B08."""


def _box3(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean over the 3x3 neighbourhood (valid part only: output is 2 px smaller per axis)."""
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), axis=0), axis=1)
    out: NDArray[np.float64] = (c[3:, 3:] - c[:-3, 3:] - c[3:, :-3] + c[:-3, :-3]) / 9.0
    return out


STRIP_ROWS: Final = 512
"""Rows of the band :func:`texture_score` works on at a time: its float64 temporaries stay
about 100 MB for a 10980 px wide tile, instead of 5 GB for the whole band."""


def texture_score(
    band: np.ndarray, bad: np.ndarray | None = None, *, strip_rows: int = STRIP_ROWS
) -> float:
    """How much fine structure a band has to match on: the RMS gradient (units of the band per
    pixel) of the band after a 3x3 mean, over pixels whose 4x4 neighbourhood is valid.

    The 3x3 mean takes most of the sensor noise out (white noise of standard deviation ``s``
    scores about ``0.3 s``) while keeping the 2-10 px structure that phase correlation locks on.
    ``bad`` (True = unusable, e.g. cloud) and NaN pixels are left out. 0.0 when fewer than 16
    pixels qualify.

    The band is worked through in strips of ``strip_rows`` rows of the 3x3 mean (each strip read
    with the 3 rows its means and vertical gradients reach past it), so memory does not grow
    with the band's height; the figure is the whole band's, up to floating-point rounding.
    """
    a = np.asarray(band)
    if a.ndim != 2 or min(a.shape) < 4:
        return 0.0
    bad_a = None if bad is None else np.asarray(bad, dtype=bool)
    rows = a.shape[0] - 2  # rows of the 3x3 mean
    step = max(1, int(strip_rows))
    energy, n = 0.0, 0
    for j0 in range(0, rows, step):
        own = min(step, rows - j0)
        # mean rows j0 .. j0 + own (one more for the vertical gradients) need band rows j0 ..
        # j0 + own + 2; the last strip has no mean row after its own
        sl = slice(j0, min(j0 + own + 3, a.shape[0]))
        e, k = _gradient_energy(a[sl], None if bad_a is None else bad_a[sl], own)
        energy += e
        n += k
    if n < 16:
        return 0.0
    return math.sqrt(2.0 * energy / n)


def _gradient_energy(a: np.ndarray, bad: np.ndarray | None, own: int) -> tuple[float, int]:
    """Sum of the squared gradients of the 3x3 mean of strip ``a`` and how many there are:
    horizontal ones on its first ``own`` mean rows, vertical ones between each of those and
    the next mean row of the strip, both where the 3x3 neighbourhoods are valid."""
    x = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(x)
    if bad is not None:
        ok &= ~bad
    s = _box3(np.where(ok, x, 0.0))
    okb = _box3(ok.astype(np.float64)) > 1.0 - 1e-9
    gx = np.diff(s[:own], axis=1)
    okx = okb[:own, 1:] & okb[:own, :-1]
    m = min(own + 1, s.shape[0])
    gy = np.diff(s[:m], axis=0)
    oky = okb[1:m, :] & okb[: m - 1, :]
    energy = float(np.sum(gx[okx] ** 2) + np.sum(gy[oky] ** 2))
    return energy, int(okx.sum()) + int(oky.sum())


WHITE_NOISE_TEXTURE: Final = 0.386
""":func:`texture_score` of white noise of unit standard deviation (measured on 512 x 512 px)."""

_LAPLACE: Final = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_sigma(band: np.ndarray, bad: np.ndarray | None = None) -> float:
    """Robust estimate of a band's white-noise standard deviation (units of the band).

    The band is filtered with the 3x3 kernel of Immerkaer (1996, "Fast noise variance
    estimation", CVIU 64(2)), which cancels planes and straight ramps, and the noise is the
    scaled median absolute response over pixels whose 3x3 neighbourhood is valid. The median
    (instead of Immerkaer's mean) keeps field edges from counting as noise, so on textured
    land the estimate stays close to the sensor noise. NaN when fewer than 16 pixels qualify.
    """
    from scipy import ndimage

    a = np.asarray(band, dtype=np.float64)
    if a.ndim != 2 or min(a.shape) < 3:
        return math.nan
    ok = np.isfinite(a)
    if bad is not None:
        ok &= ~np.asarray(bad, dtype=bool)
    resp = ndimage.convolve(np.where(ok, a, 0.0), _LAPLACE, mode="nearest")
    okb = ndimage.minimum_filter(ok, size=3, mode="constant", cval=False)
    okb[0, :] = okb[-1, :] = False
    okb[:, 0] = okb[:, -1] = False
    if int(okb.sum()) < 16:
        return math.nan
    # the kernel's L2 norm is 6; 1.4826 x MAD is the standard deviation of a normal variable
    return float(1.4826 * np.median(np.abs(resp[okb])) / 6.0)


def texture_snr(band: np.ndarray, bad: np.ndarray | None = None) -> float:
    """:func:`texture_score` in units of the texture the band's own noise gives
    (:func:`noise_sigma` x :data:`WHITE_NOISE_TEXTURE`): about 1 for a flat, noisy window,
    10-30 for real Sentinel-2 farmland in B03 (``benchmarks/results/coreg.json``). Infinite
    for a noise-free textured band; 0.0 when nothing qualifies."""
    tex = texture_score(band, bad)
    sigma = noise_sigma(band, bad)
    if tex <= 0.0 or not math.isfinite(sigma):
        return 0.0
    if sigma <= 0.0:
        return math.inf
    return tex / (WHITE_NOISE_TEXTURE * sigma)


def clear_fraction(band: np.ndarray, bad: np.ndarray | None = None) -> float:
    """Fraction of the grid that has data and is not flagged ``bad`` (cloud, shadow, ...)."""
    a = np.asarray(band)
    if a.size == 0:
        return 0.0
    ok = np.isfinite(a)
    if bad is not None:
        ok &= ~np.asarray(bad, dtype=bool)
    return float(ok.mean())


def candidate_scores(band: np.ndarray, bad: np.ndarray | None = None) -> tuple[float, float]:
    """``(clear fraction, texture)`` of a reference candidate: what :func:`choose_reference`
    ranks by (:func:`clear_fraction`, :func:`texture_score` of its clear pixels)."""
    frac = clear_fraction(band, bad)
    return frac, texture_score(band, bad) if frac > 0 else 0.0


def candidate_order(
    scores: tuple[float, float], index: int, min_texture: float = MIN_TEXTURE
) -> tuple[bool, float, float, int]:
    """The sort key of :func:`choose_reference`: textured candidates first, then by clear
    fraction, then texture, then ``index``. Candidates without a clear pixel sort after all
    others, so the best ``n`` of a stream of candidates can be kept as they come."""
    frac, tex = scores
    return (not tex >= min_texture, -frac, -tex, index)


def choose_reference(
    candidates: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    mode: ReferenceChoice = "clearest",
    n: int = 5,
    *,
    min_texture: float = MIN_TEXTURE,
    scores: Sequence[tuple[float, float]] | None = None,
) -> tuple[F32, tuple[str, ...]]:
    """Build a reference band from ``(id, band, bad)`` candidates on one grid.

    ``band`` is 2-D reflectance (NaN = nodata), ``bad`` a boolean mask of unusable pixels (cloud,
    shadow; None for none). Candidates are ranked by clear fraction (:func:`clear_fraction`),
    ties broken by texture; candidates whose clear pixels score below ``min_texture``
    (:func:`texture_score`) rank after all textured ones.

    * ``clearest``: the best candidate, bad pixels set to NaN; returns its id.
    * ``median``: the per-pixel median of the ``n`` best candidates over their clear pixels (NaN
      where none is clear); returns their ids in rank order. A median of several dates averages
      out noise and phenology but also blurs whatever misregistration the dates have among
      themselves, so it is best built from already co-registered scenes.

    ``scores``: each candidate's :func:`candidate_scores`, when already worked out.

    Raises :class:`~stac2cube.errors.ConfigError` for an unknown ``mode`` or ``n < 1``, and
    :class:`~stac2cube.errors.NoOverlapError` when no candidate has a clear pixel.
    """
    if mode not in ("clearest", "median"):
        raise ConfigError(f"reference mode {mode!r} is not one of clearest, median")
    if n < 1:
        raise ConfigError(f"the number of reference candidates must be >= 1, got {n}")
    if not candidates:
        raise NoOverlapError("no candidate scene for the co-registration reference")
    shape = np.asarray(candidates[0][1]).shape
    if scores is not None and len(scores) != len(candidates):
        raise ValueError(f"{len(scores)} scores for {len(candidates)} reference candidates")
    ranked: list[tuple[bool, float, float, int]] = []
    for i, (cid, band, bad) in enumerate(candidates):
        if np.asarray(band).shape != shape:
            raise ValueError(
                f"reference candidate {cid!r} has shape {np.asarray(band).shape}, expected {shape}"
            )
        frac, tex = candidate_scores(band, bad) if scores is None else scores[i]
        ranked.append((tex >= min_texture, frac, tex, i))
        log.debug("reference candidate %s: clear %.3f, texture %.4f", cid, frac, tex)
    ranked.sort(key=lambda r: candidate_order((r[1], r[2]), r[3], min_texture))
    usable = [r for r in ranked if r[1] > 0.0]
    if not usable:
        raise NoOverlapError(
            "no reference candidate has a clear pixel on the grid; add clearer scenes or give "
            "steps.coreg.reference: file with a reference_path"
        )
    if not usable[0][0]:
        log.warning(
            "no reference candidate reaches texture %.4f; the best has %.4f",
            min_texture,
            usable[0][2],
        )

    def masked(i: int, rows: slice = slice(None)) -> F32:
        _, band, bad = candidates[i]
        a = np.array(np.asarray(band)[rows], dtype=np.float32, copy=True)
        if bad is not None:
            a[np.asarray(bad, dtype=bool)[rows]] = np.nan
        return a

    if mode == "clearest":
        i = usable[0][3]
        return masked(i), (candidates[i][0],)
    chosen = [r[3] for r in usable[:n]]
    med = np.full(shape, np.nan, dtype=np.float32)
    # strip by strip: a pixel's median is its own, and the stack of a strip is small
    for r0 in range(0, shape[0], STRIP_ROWS):
        rows = slice(r0, r0 + STRIP_ROWS)
        stack = np.stack([masked(i, rows) for i in chosen])
        with np.errstate(all="ignore"):
            any_ok = np.isfinite(stack).any(axis=0)
            if any_ok.any():
                med[rows][any_ok] = np.nanmedian(stack[:, any_ok], axis=0).astype(np.float32)
    return med, tuple(candidates[i][0] for i in chosen)


def refresh_window(
    times: Sequence[dt.datetime], version_times: Sequence[dt.datetime], max_gap_days: float
) -> tuple[dt.datetime, dt.datetime] | None:
    """The next time window that needs a new version of a reference refreshed every
    ``max_gap_days`` (the clear-sky reference of the multi-temporal cloud test), or None.

    The window starts at the earliest of the scene ``times`` farther than ``max_gap_days`` from
    every time in ``version_times`` (the median times of the stored versions) and spans
    ``max_gap_days``. A version built from scenes of that window has its median time inside
    it, so it lies within ``max_gap_days`` of every scene of the window, the first included.
    """
    limit = dt.timedelta(days=max_gap_days)
    far = [t for t in times if all(abs(t - v) > limit for v in version_times)]
    if not far:
        return None
    start = min(far)
    return start, start + limit


def reproject_reference(
    path_or_url: str,
    geobox: GeoBox,
    band_index: int = 1,
    *,
    resampling: str = "cubic",
) -> F32:
    """Read band ``band_index`` (1-based) of a raster in any CRS onto ``geobox``.

    Returns float32 of the geobox's shape with NaN for nodata (the file's nodata value, its mask,
    and everything outside its footprint). ``resampling`` is a rasterio resampling name (cubic
    by default: a reference is continuous reflectance). Scale/offset tags of the band are applied.

    Raises :class:`~stac2cube.errors.AssetReadError` when the raster cannot be opened or read or
    has no such band, and :class:`~stac2cube.errors.NoOverlapError` when it has no valid pixel
    over the grid.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.warp import reproject

    try:
        rs = Resampling[resampling]
    except KeyError as exc:
        raise ConfigError(f"unknown resampling {resampling!r} for the reference") from exc
    if geobox.crs is None:
        raise ConfigError("the grid to read the reference onto has no CRS")
    dst_crs = geobox.crs.to_wkt()
    dst = np.full(geobox.shape.yx, np.nan, dtype=np.float32)
    scale, offset = 1.0, 0.0
    try:
        with rasterio.open(path_or_url) as src:
            if not 1 <= band_index <= src.count:
                raise AssetReadError(
                    f"reference {path_or_url} has {src.count} band(s), band_index {band_index} "
                    "does not exist; set steps.coreg.reference_band_index"
                )
            if src.crs is None:
                raise AssetReadError(
                    f"reference {path_or_url} has no CRS; give a georeferenced raster (GeoTIFF)"
                )
            scale = float(src.scales[band_index - 1]) if src.scales else 1.0
            offset = float(src.offsets[band_index - 1]) if src.offsets else 0.0
            # warps from the band directly (windowed reads), not from a full in-memory copy
            reproject(
                source=rasterio.band(src, band_index),
                destination=dst,
                src_nodata=src.nodata,
                dst_transform=geobox.affine,
                dst_crs=dst_crs,
                dst_nodata=np.nan,
                resampling=rs,
            )
    except RasterioError as exc:
        raise AssetReadError(
            f"cannot read the co-registration reference {path_or_url}: {exc}; check the path "
            "or URL (steps.coreg.reference_path) and that it is a GDAL-readable raster"
        ) from exc
    if scale != 1.0 or offset != 0.0:
        dst = (dst * np.float32(scale) + np.float32(offset)).astype(np.float32)
    if not np.isfinite(dst).any():
        raise NoOverlapError(
            f"the co-registration reference {path_or_url} has no valid pixel over the scene grid "
            f"({geobox.crs}, bounds {tuple(round(v, 1) for v in geobox.extent.boundingbox)}); "
            "give a reference that covers the area of interest"
        )
    return dst


__all__ = [
    "MIN_TEXTURE",
    "STRIP_ROWS",
    "WHITE_NOISE_TEXTURE",
    "ReferenceChoice",
    "candidate_order",
    "candidate_scores",
    "choose_reference",
    "clear_fraction",
    "noise_sigma",
    "refresh_window",
    "reproject_reference",
    "texture_score",
    "texture_snr",
]
