"""The local mode in blocks (:meth:`CoregStep.plan`): the tie points are matched tile by tile
through a :class:`~stac2cube.steps.base.SceneSource`, filtered and judged as one table, and
their warp is applied block by block by a :class:`~stac2cube.steps.coreg.blocks.CoregPlan`.

* **Matching.** The scene's tie-point grid (a point every ``grid_res`` px from the top-left
  pixel, as ``COREG_LOCAL`` places it) is cut into tiles of about :data:`TILE_PX` px. Each tile
  is read at full resolution grown by the reach of a tie point's matching (a multiple of
  ``grid_res``, so that the tile's own grid is the scene's) and handed to ``COREG_LOCAL``
  unfiltered, with the points outside the tile kept out through the target's bad-data mask
  (read only at the points). The anomalies (:func:`~stac2cube.steps.coreg.inputs.anomaly_mask`)
  are found in each grown tile at full resolution, their radiometric fit made over the tile
  rather than the scene; a coarse read of the scene (160 m or coarser, dropped before the
  tiles are read) places nothing but tells whether the
  scene and the reference overlap at all.
* **Filtering and decision.** The tiles' tables, in the scene's point order, are filtered by
  AROSICS' ``Tie_Point_Refiner`` (RANSAC sees every point, as when matching whole) and judged
  by :func:`~stac2cube.steps.coreg.local.judge_tiepoints`, the whole scene's test.
* **Check.** A significant field is warped onto the match band block by block and kept only
  if it raises the clear-pixel correlation with the reference, summed over the blocks
  (:class:`~stac2cube.steps.coreg.significance.CorrelationSums`): the whole scene's check.
* **Warp.** Each block is warped by ``DESHIFTER``'s thin-plate spline through the valid tie
  points within :data:`GCP_MARGIN_SPACINGS` grid spacings of it: a noisy thin-plate spline's
  far points weigh nothing (6 spacings move a point by under 0.001 px), and a spline through
  a few hundred points is solved in milliseconds where one through a whole tile's thousands
  takes minutes. GDAL's warper approximates the transform to 0.125 px in both paths, so the
  pixels agree with the whole scene's to within that, not bit for bit (``docs/coreg.md``)."""

from __future__ import annotations

import logging
import math
from typing import Any, Final

import numpy as np
from rasterio.windows import Window

from ..base import Scene, SceneSource, Sidecar
from .backend import CoregFailure, apply_correction
from .blocks import KERNEL_REACH_PX, coarse_factor, coarse_inputs, full_res_inputs
from .config import CoregConfig
from .inputs import clear_overlap, first_match_band
from .local import (
    TiePointWarp,
    judge_tiepoints,
    refine_tiepoints,
    target_mask,
    tiepoint_table,
    tiepoint_warp,
)
from .significance import (
    CORRELATION_REACH_PX,
    CorrelationSums,
    clear_correlation_sums,
    improves,
)

log = logging.getLogger(__name__)

TILE_PX: Final = 1024
"""Tie points are matched in tiles of about this many pixels (a multiple of ``grid_res``)."""
OVERLAP_FACTOR: Final = 16
"""The scene is read this many times coarser (at least) to tell whether it overlaps the
reference on clear pixels at all (its grids are not held while the tiles are matched)."""
MATCH_REACH_MARGIN_PX: Final = 32
"""Pixels a tie point's matching reads beyond its window and twice ``max_shift`` (AROSICS'
wider second window and its iterations)."""


def decide_local(
    source: SceneSource, cfg: CoregConfig, results: dict[str, Any], sidecars: dict[str, Sidecar]
) -> tuple[TiePointWarp, int] | None:
    """Match, judge and check the tie points through ``source`` as :meth:`CoregStep.run` does
    on the whole scene: the warp and its halo when it is applied (the tie points go into
    ``sidecars`` in any case)."""
    found = _estimate(source, cfg, results, sidecars)
    if found is None or not _improves(source, cfg, found, results):
        return None
    return found, _warp_halo(cfg)


def _warp_halo(cfg: CoregConfig) -> int:
    """Pixels a block is grown by before it is warped: the largest accepted shift (the spline
    may reach it between points) and the resampling kernel's reach."""
    return math.ceil(cfg.max_shift) + KERNEL_REACH_PX + 1


def match_reach(cfg: CoregConfig) -> int:
    """Pixels around a tie point that its matching reads, rounded up to whole grid spacings."""
    reach = cfg.window // 2 + 2 * math.ceil(cfg.max_shift) + MATCH_REACH_MARGIN_PX
    return math.ceil(reach / cfg.grid_res) * cfg.grid_res


def tile_size(cfg: CoregConfig) -> int:
    """Tiles of tie points: about :data:`TILE_PX` px, a whole number of grid spacings."""
    return max(1, TILE_PX // cfg.grid_res) * cfg.grid_res


def _tiles(shape: tuple[int, int], size: int) -> list[tuple[int, int, int, int]]:
    h, w = shape
    return [
        (r, c, min(r + size, h), min(c + size, w))
        for r in range(0, h, size)
        for c in range(0, w, size)
    ]


def _grown(tile: tuple[int, int, int, int], reach: int, shape: tuple[int, int]) -> Window:
    """``tile`` (rows ``r0:r1``, columns ``c0:c1``) grown by ``reach`` px, inside ``shape``."""
    r0, c0, r1, c1 = tile
    h, w = shape
    orow, ocol = max(r0 - reach, 0), max(c0 - reach, 0)
    return Window(ocol, orow, min(c1 + reach, w) - ocol, min(r1 + reach, h) - orow)


def _estimate(
    source: SceneSource,
    cfg: CoregConfig,
    results: dict[str, Any],
    sidecars: dict[str, Sidecar],
) -> TiePointWarp | None:
    """Match the tie points tile by tile, filter and judge them; the warp when the field is
    significant (None when it is not, the reason in ``results``). Raises
    :class:`CoregFailure`."""
    band = first_match_band(source.item_id, source.band_names, cfg)
    factor = max(coarse_factor(cfg), OVERLAP_FACTOR)
    clear_overlap(coarse_inputs(source, cfg, band, factor, results).inp, results)
    size = tile_size(cfg)
    results["placement"] = f"tiles of {size} px (blocks)"
    tables: list[Any] = []
    failed: list[str] = []
    found: dict[str, float] = {}
    for tile in _tiles(source.geobox.shape.yx, size):
        try:
            tbl = _tile_table(source, cfg, tile, found)
        except CoregFailure as exc:
            failed.append(str(exc))
            continue
        if tbl is not None:
            tables.append(tbl)
    area = found.pop("area", 0.0)
    results["anomalies"] = {k: round(v / max(area, 1.0), 4) for k, v in found.items()}
    if failed:
        results["tiles_failed"] = len(failed)
        log.warning(
            "%s: tie-point matching failed in %d tile(s), first: %s",
            source.item_id,
            len(failed),
            failed[0],
        )
    tbl = refine_tiepoints(_merged(tables), cfg, results)
    if not judge_tiepoints(tbl, source.geobox, cfg, results, sidecars):
        return None
    return tiepoint_warp(tbl, source.geobox, cfg)


def _tile_table(
    source: SceneSource,
    cfg: CoregConfig,
    tile: tuple[int, int, int, int],
    found: dict[str, float],
) -> Any | None:
    """The unfiltered tie-point table of the points in ``tile`` (scene pixels and point ids);
    None when no point of it lies on a usable pixel. ``found`` sums the tile's anomaly
    fractions weighted by its area (``"area"``)."""
    r0, c0, r1, c1 = tile
    g = cfg.grid_res
    h, w = source.geobox.shape.yx
    window = _grown(tile, match_reach(cfg), (h, w))
    orow, ocol = int(window.row_off), int(window.col_off)
    block, inp = full_res_inputs(source, cfg, window)
    n = float((r1 - r0) * (c1 - c0))
    found["area"] = found.get("area", 0.0) + n
    for key, value in inp.anomalies.items():
        found[key] = found.get(key, 0.0) + float(value) * n
    # the tile's points: COREG_LOCAL places its grid from the grown tile's corner, a whole
    # number of spacings from the scene's; the others are kept out through the target mask
    bh, bw = block.geobox.shape.yx
    exclude = np.zeros((bh, bw), dtype=bool)
    rows = np.arange(0, bh, g)
    cols = np.arange(0, bw, g)
    out_r = rows[(rows + orow < r0) | ((rows + orow >= r1) & (r1 < h))]
    out_c = cols[(cols + ocol < c0) | ((cols + ocol >= c1) & (c1 < w))]
    exclude[np.ix_(out_r, cols)] = True
    exclude[np.ix_(rows, out_c)] = True
    tgt_bad = target_mask(inp, cfg) | exclude
    if not (~tgt_bad[np.ix_(rows, cols)] & ~inp.bad_ref[np.ix_(rows, cols)]).any():
        return None
    tbl, _ = tiepoint_table(inp, block.geobox, cfg, 0, exclude)
    if len(tbl) == 0:
        return None
    tbl = tbl.copy()
    nx = len(np.arange(0, w + g, g))
    tbl["X_IM"] = tbl["X_IM"].astype(np.int64) + ocol
    tbl["Y_IM"] = tbl["Y_IM"].astype(np.int64) + orow
    tbl["POINT_ID"] = (tbl["Y_IM"] // g) * nx + tbl["X_IM"] // g
    # a point on the grown tile's far edge lies on its overlap polygon, which AROSICS may count
    # as inside: only the tile's own points are kept (the scene's far edge belongs to the last)
    x, y = tbl["X_IM"], tbl["Y_IM"]
    own = (x >= c0) & ((x < c1) | (c1 == w)) & (y >= r0) & ((y < r1) | (r1 == h))
    return tbl[own] if bool(own.any()) else None


def _merged(tables: list[Any]) -> Any:
    """The tiles' tables as one, in the scene's point order (AROSICS' RANSAC draws from it)."""
    import pandas as pd
    from geopandas import GeoDataFrame

    if not tables:
        return GeoDataFrame(columns=["geometry", "POINT_ID", "X_IM", "Y_IM", "X_MAP", "Y_MAP"])
    out = pd.concat(tables, ignore_index=True)
    return out.sort_values("POINT_ID", kind="stable").reset_index(drop=True)


def _improves(
    source: SceneSource,
    cfg: CoregConfig,
    warp: TiePointWarp,
    results: dict[str, Any],
) -> bool:
    """Whether the warp raises the clear-pixel correlation of the match band with the
    reference over the scene (:func:`~stac2cube.steps.coreg.significance.warp_improves`),
    summed over blocks read with the reach of the warp and of the low-pass."""
    before, after = CorrelationSums(), CorrelationSums()
    h, w = source.geobox.shape.yx
    reach = _warp_halo(cfg) + CORRELATION_REACH_PX
    for tile in _tiles((h, w), TILE_PX):
        r0, c0, r1, c1 = tile
        window = _grown(tile, reach, (h, w))
        orow, ocol = int(window.row_off), int(window.col_off)
        block, inp = full_res_inputs(source, cfg, window)
        one = Scene(block.item_id, block.geobox, {inp.band: block.bands[inp.band]}, {})
        warped = apply_correction(one, warp.info_on(block.geobox), cfg)
        moved = np.asarray(warped.bands[inp.band], dtype=np.float32)
        ok = ~inp.bad_any & np.isfinite(moved)
        core = (slice(r0 - orow, r1 - orow), slice(c0 - ocol, c1 - ocol))
        before.extend(clear_correlation_sums(inp.target, inp.reference, ok, core))
        after.extend(clear_correlation_sums(moved, inp.reference, ok, core))
    return improves(before.ncc(), after.ncc(), results)
