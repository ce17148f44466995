"""Local mode: AROSICS ``COREG_LOCAL`` tie points every ``grid_res`` px, filtered, and a warp
through the valid ones, applied only when their shift field is significant (an F test against
no displacement, allowing for the overlap of their windows). The tie points are written as a
GeoJSON sidecar."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ..base import Sidecar
from ..grids import offset_in
from .backend import FILL, CoregFailure, arosics_call, crs, geoarray, num
from .config import CoregConfig
from .global_shift import global_info
from .inputs import MatchInputs, for_matching
from .significance import field_significance

TIEPOINTS_SIDECAR: Final = "coreg_tiepoints"
"""Key of the tie-point sidecar in ``scene.sidecars`` (local mode)."""
GCP_MARGIN_SPACINGS: Final = 6
"""A block is warped through the tie points within this many grid spacings of it."""
MIN_BLOCK_GCPS: Final = 10
"""Fewer tie points than this near a block (cloud): the margin is doubled until there are."""
MAX_GCPS: Final = 7000
"""Tie points a warp goes through at most (AROSICS' ``to_GCPList``: GDAL's spline solver grows
with the cube of the points); more are sampled, with a fixed seed."""
MAX_RANSAC_POINTS: Final = 2000
"""Tie points one RANSAC fit takes at most: scikit-image's affine fit takes a full SVD of a
matrix of twice the points squared (16,800 points: 9 GB; 2,000: 128 MB). More are split into
random groups of at most this many, each fitted on its own; a group samples the whole scene's
field."""


def _tiepoints_geojson(tbl: Any, gbox: GeoBox, valid: NDArray[np.bool_]) -> bytes:
    """The tie-point table as a GeoJSON FeatureCollection (lon/lat, WGS 84)."""
    from pyproj import Transformer

    x = np.asarray(tbl["X_MAP"], dtype=np.float64)
    y = np.asarray(tbl["Y_MAP"], dtype=np.float64)
    tr = Transformer.from_crs(crs(gbox).to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    cols = set(tbl.columns)

    def col(name: str, i: int) -> Any:
        return tbl[name].iloc[i] if name in cols else None

    def flag(name: str, i: int) -> bool | None:
        v = col(name, i)
        if v is None or (num(v) is None and not isinstance(v, bool | np.bool_)):
            return None
        return bool(v)

    feats = []
    for i in range(len(tbl)):
        sx, sy = num(col("X_SHIFT_PX", i)), num(col("Y_SHIFT_PX", i))
        mx, my = num(col("X_SHIFT_M", i)), num(col("Y_SHIFT_M", i))
        matched = sx is not None and sy is not None
        props = {
            "point_id": int(col("POINT_ID", i)),
            "col": float(col("X_IM", i)),
            "row": float(col("Y_IM", i)),
            "x": float(x[i]),
            "y": float(y[i]),
            "matched": matched,
            "dx_px": None if sx is None else round(-sx, 4),
            "dy_px": None if sy is None else round(-sy, 4),
            "dx_m": None if mx is None else round(-mx, 3),
            "dy_m": None if my is None else round(-my, 3),
            "reliability": num(col("RELIABILITY", i)),
            "ssim_before": num(col("SSIM_BEFORE", i)),
            "ssim_after": num(col("SSIM_AFTER", i)),
            "outlier_reliability": flag("L1_OUTLIER", i) if matched else None,
            "outlier_ssim": flag("L2_OUTLIER", i) if matched else None,
            "outlier_ransac": flag("L3_OUTLIER", i) if matched else None,
            "valid": bool(valid[i]),
        }
        feats.append(
            {
                "type": "Feature",
                "id": props["point_id"],
                "geometry": {"type": "Point", "coordinates": [float(lon[i]), float(lat[i])]},
                "properties": props,
            }
        )
    doc_: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": feats,
        # foreign member (RFC 7946 section 6.1): the CRS of the x/y properties
        "stac2cube:crs": str(crs(gbox)),
        "stac2cube:convention": (
            "dx/dy: displacement of the scene's content relative to the reference; px with x to "
            "the east and y to the south, m with y to the north"
        ),
    }
    return json.dumps(doc_, allow_nan=False, separators=(",", ":")).encode()


def match_local(
    inp: MatchInputs,
    gbox: GeoBox,
    cfg: CoregConfig,
    results: dict[str, Any],
    sidecars: dict[str, Sidecar],
) -> tuple[dict[str, Any], bool]:
    """Match the tie points, filter (:func:`refine_tiepoints`), check them and decide whether
    their warp is applied. Returns AROSICS' correction info and whether to apply it (the
    reason is in ``results``); the tie-point table goes into ``sidecars``."""
    tbl, _ = tiepoint_table(inp, gbox, cfg, 0)
    tbl = refine_tiepoints(tbl, cfg, results)
    if not judge_tiepoints(tbl, gbox, cfg, results, sidecars):
        return {}, False
    return tiepoint_warp(tbl, gbox, cfg).info_on(gbox), True


def target_mask(inp: MatchInputs, cfg: CoregConfig) -> NDArray[np.bool_]:
    """The pixels no tie point is placed on: bad or anomalous in the scene, or the centre of a
    window with more than ``max_bad_fraction`` bad pixels (AROSICS reads the target's bad-data
    mask at the points)."""
    out: NDArray[np.bool_] = inp.bad_tgt | inp.anomaly | (inp.frac > cfg.max_bad_fraction)
    return out


def tiepoint_table(
    inp: MatchInputs,
    gbox: GeoBox,
    cfg: CoregConfig,
    filter_level: int,
    exclude: NDArray[np.bool_] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """AROSICS' tie-point table over ``gbox`` (a point every ``grid_res`` px from its top-left
    pixel) and its correction info, filtered at ``filter_level``; tie points on ``exclude``
    pixels are not matched (they only enter AROSICS' point placement, not the windows)."""
    from arosics import COREG_LOCAL

    win = cfg.window
    tgt_mask = target_mask(inp, cfg)
    if exclude is not None:
        tgt_mask = tgt_mask | exclude

    def run() -> tuple[Any, dict[str, Any]]:
        cl = COREG_LOCAL(
            geoarray(for_matching(inp.reference, inp.bad_ref), gbox, FILL),
            geoarray(for_matching(inp.target, inp.bad_tgt), gbox, FILL),
            grid_res=cfg.grid_res,
            window_size=(win, win),
            max_shift=cfg.max_shift,
            tieP_filter_level=filter_level,
            min_reliability=cfg.min_reliability,
            nodata=(FILL, FILL),
            mask_baddata_ref=geoarray(inp.bad_ref, gbox, None),
            mask_baddata_tgt=geoarray(tgt_mask, gbox, None),
            CPUs=1,
            progress=False,
            q=True,
            ignore_errors=True,
        )
        return cl.CoRegPoints_table, cl.coreg_info

    return arosics_call("tie-point matching", run)


def refine_tiepoints(tbl: Any, cfg: CoregConfig, results: dict[str, Any]) -> Any:
    """AROSICS' tie-point filtering (``Tie_Point_Refiner`` at ``tiepoint_filter_level``, with
    ``COREG_LOCAL``'s outlier settings) applied to a table matched unfiltered, as
    ``COREG_LOCAL`` applies it to its own; RANSAC in random groups of at most
    :data:`MAX_RANSAC_POINTS` (``results["ransac_groups"]`` when more than one)."""
    import inspect

    from arosics import COREG_LOCAL
    from arosics.Tie_Point_Grid import Tie_Point_Refiner

    cols = set(getattr(tbl, "columns", ()))
    level = cfg.tiepoint_filter_level
    if len(tbl) == 0 or "ABS_SHIFT" not in cols or level == 0:
        return tbl
    matched = tbl[tbl.ABS_SHIFT != FILL].copy()
    if len(matched) == 0:
        return tbl
    # tables joined from tiles hold Python objects where a tile had an unmatched point; the
    # refiner's SSIM filter negates SSIM_IMPROVED, and ~True is -2 on a Python bool (every
    # point an outlier): hand it real booleans (anything but True, e.g. AROSICS' fill value,
    # is not improved, as AROSICS treats it) and floats
    matched["SSIM_IMPROVED"] = np.asarray(matched["SSIM_IMPROVED"] == True, dtype=bool)  # noqa: E712
    for name in ("X_MAP", "Y_MAP", "X_SHIFT_M", "Y_SHIFT_M", "RELIABILITY"):
        matched[name] = np.asarray(matched[name], dtype=np.float64)
    defaults = inspect.signature(COREG_LOCAL).parameters
    names = ("rs_max_outlier", "rs_tolerance", "rs_random_state")
    settings = {k: defaults[k].default for k in names}

    def refiner(gdf: Any) -> Any:
        return Tie_Point_Refiner(gdf, min_reliability=cfg.min_reliability, q=True, **settings)

    def run() -> Any:
        grouped = level == 3 and len(matched) > MAX_RANSAC_POINTS
        filtered, new_cols = refiner(matched).run_filtering(level=2 if grouped else level)
        if grouped:
            kept = filtered[~filtered["OUTLIER"].astype(bool)]
            n_groups = math.ceil(len(kept) / MAX_RANSAC_POINTS)
            rng = np.random.default_rng(settings["rs_random_state"])
            l3 = np.zeros(len(filtered), dtype=bool)
            for part in np.array_split(rng.permutation(len(kept)), n_groups):
                group = kept.iloc[np.sort(part)]
                out, _ = refiner(group).run_filtering(level=3)
                l3[filtered.index.get_indexer(group.index)] = np.asarray(
                    out["L3_OUTLIER"], dtype=bool
                )
            filtered["L3_OUTLIER"] = l3
            filtered["OUTLIER"] = np.asarray(filtered["OUTLIER"], dtype=bool) | l3
            new_cols = ["L1_OUTLIER", "L2_OUTLIER", "L3_OUTLIER", "OUTLIER"]
            results["ransac_groups"] = n_groups
        out = tbl.merge(filtered[["POINT_ID", *new_cols]], on="POINT_ID", how="outer")
        return out.replace([np.nan, None], int(FILL))

    return arosics_call("tie-point filtering", run)


def valid_tiepoints(tbl: Any, cfg: CoregConfig) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which rows of the table were matched, and which of those passed the filtering."""
    cols = set(getattr(tbl, "columns", ()))
    if len(tbl) == 0 or "ABS_SHIFT" not in cols:
        none = np.zeros(len(tbl), bool)
        return none, none
    matched = np.asarray(tbl["ABS_SHIFT"], dtype=np.float64) != FILL
    outlier = (
        np.asarray(tbl["OUTLIER"]).astype(bool)
        if "OUTLIER" in cols and cfg.tiepoint_filter_level > 0
        else np.zeros(len(tbl), bool)
    )
    return matched, matched & ~outlier


def judge_tiepoints(
    tbl: Any,
    gbox: GeoBox,
    cfg: CoregConfig,
    results: dict[str, Any],
    sidecars: dict[str, Sidecar],
) -> bool:
    """Check the tie-point table of the scene ``gbox`` and decide whether its warp is applied
    (the reason is in ``results``); the table goes into ``sidecars``. Raises
    :class:`CoregFailure` when there is no trustworthy field."""
    win = cfg.window
    n_grid = int(np.ceil((gbox.shape.x + cfg.grid_res) / cfg.grid_res)) * int(
        np.ceil((gbox.shape.y + cfg.grid_res) / cfg.grid_res)
    )
    cols = set(getattr(tbl, "columns", ()))
    if len(tbl) == 0 or "ABS_SHIFT" not in cols:
        results.update(tiepoints_grid=n_grid, tiepoints_total=len(tbl), tiepoints_matched=0)
        results["tiepoints_valid"] = 0
        raise CoregFailure(
            f"no tie point could be placed on clear, textured pixels ({len(tbl)} of {n_grid} "
            "grid points are off cloud and nodata)"
        )
    matched, valid = valid_tiepoints(tbl, cfg)
    sidecars[TIEPOINTS_SIDECAR] = Sidecar(
        filename="coreg_tiepoints.geojson",
        data=_tiepoints_geojson(tbl, gbox, valid),
        media_type="application/geo+json",
        title="Co-registration tie points",
        roles=("metadata",),
    )
    n_valid = int(valid.sum())
    counts: dict[str, Any] = {
        "tiepoints_grid": n_grid,
        "tiepoints_total": len(tbl),
        "tiepoints_matched": int(matched.sum()),
        "tiepoints_valid": n_valid,
    }
    for lvl, name in ((1, "L1_OUTLIER"), (2, "L2_OUTLIER"), (3, "L3_OUTLIER")):
        if name in cols:
            v = np.asarray(tbl[name])
            counts[f"tiepoints_outliers_l{lvl}"] = int(np.sum(matched & (v == True)))  # noqa: E712
    results.update(counts)
    if n_valid < cfg.min_valid_tiepoints and "L2_OUTLIER" in cols:
        # AROSICS' SSIM filter drops every tie point whose correction does not improve the
        # similarity, which is what a well-registered scene looks like: test the points the
        # other filters kept for a significant field before calling the match failed.
        kept = matched.copy()
        for name in ("L1_OUTLIER", "L3_OUTLIER"):
            if name in cols:
                kept &= ~(np.asarray(tbl[name]) == True)  # noqa: E712
        if int(kept.sum()) >= cfg.min_valid_tiepoints:
            kdx = -np.asarray(tbl["X_SHIFT_PX"], dtype=np.float64)[kept]
            kdy = -np.asarray(tbl["Y_SHIFT_PX"], dtype=np.float64)[kept]
            kcol = np.asarray(tbl["X_IM"], dtype=np.float64)[kept]
            krow = np.asarray(tbl["Y_IM"], dtype=np.float64)[kept]
            k_eff = int(kept.sum()) * min(1.0, (cfg.grid_res / win) ** 2)
            f_stat, f_crit = field_significance(kcol, krow, kdx, kdy, k_eff)
            if f_stat is not None and f_crit is not None and f_stat <= f_crit:
                results.update(
                    shift_px=[round(float(kdx.mean()), 4), round(float(kdy.mean()), 4)],
                    field_f=round(f_stat, 2),
                    field_f_critical=round(f_crit, 2),
                    tiepoints_effective=round(k_eff, 1),
                    window_size_px=[win, win],
                    status_if_not_applied="not_significant",
                    decision=(
                        f"not applied: AROSICS' SSIM check rejected {int(kept.sum())} tie "
                        "points because correcting them would not improve the similarity, and "
                        "their shift field is not distinguishable from noise (F "
                        f"{f_stat:.2f} <= {f_crit:.2f} at p = 0.01): no misregistration found"
                    ),
                )
                return False
    if n_valid == 0:
        raise CoregFailure("no tie point survived AROSICS' filtering")
    dx = -np.asarray(tbl["X_SHIFT_PX"], dtype=np.float64)[valid]
    dy = -np.asarray(tbl["Y_SHIFT_PX"], dtype=np.float64)[valid]
    mx = -np.asarray(tbl["X_SHIFT_M"], dtype=np.float64)[valid]
    my = -np.asarray(tbl["Y_SHIFT_M"], dtype=np.float64)[valid]
    rel = np.asarray(tbl["RELIABILITY"], dtype=np.float64)[valid]
    mdx, mdy = float(dx.mean()), float(dy.mean())
    results.update(
        shift_px=[round(mdx, 4), round(mdy, 4)],
        shift_m=[round(float(mx.mean()), 3), round(float(my.mean()), 3)],
        shift_std_px=[round(float(dx.std()), 4), round(float(dy.std()), 4)],
        shift_rmse_px=round(float(np.sqrt(np.mean(dx**2 + dy**2))), 4),
        residual_rmse_px=round(float(np.sqrt(np.mean((dx - mdx) ** 2 + (dy - mdy) ** 2))), 4),
        reliability=round(float(rel.mean()), 2),
        window_size_px=[win, win],
    )
    if n_valid < cfg.min_valid_tiepoints:
        raise CoregFailure(
            f"only {n_valid} valid tie point(s) of {len(tbl)} (min_valid_tiepoints "
            f"{cfg.min_valid_tiepoints}); the scene is too cloudy or too flat for a local warp"
        )
    if float(np.median(rel)) < cfg.min_reliability:
        raise CoregFailure(
            f"median tie-point reliability {float(np.median(rel)):.1f} % is below "
            f"min_reliability {cfg.min_reliability} %"
        )
    if max(abs(mdx), abs(mdy)) > cfg.max_shift:
        raise CoregFailure(
            f"mean shift {mdx:.2f}/{mdy:.2f} px is larger than max_shift {cfg.max_shift}"
        )
    col = np.asarray(tbl["X_IM"], dtype=np.float64)[valid]
    row = np.asarray(tbl["Y_IM"], dtype=np.float64)[valid]
    n_eff = n_valid * min(1.0, (cfg.grid_res / win) ** 2)
    f_stat, f_crit = field_significance(col, row, dx, dy, n_eff)
    results["field_f"] = None if f_stat is None else round(f_stat, 2)
    results["field_f_critical"] = None if f_crit is None else round(f_crit, 2)
    results["tiepoints_effective"] = round(n_eff, 1)
    if f_stat is None or f_crit is None:
        results["status_if_not_applied"] = "not_significant"
        results["decision"] = (
            f"not applied: {n_valid} tie points are only {n_eff:.1f} independent ones (their "
            f"{win} px windows overlap at a {cfg.grid_res} px spacing), too few to tell a shift "
            "field from noise; use a larger grid_res or a smaller window_size"
        )
        return False
    if f_stat <= f_crit:
        results["status_if_not_applied"] = "not_significant"
        results["decision"] = (
            "not applied: the tie points' shift field (mean and affine trend) is not "
            f"distinguishable from their noise (F {f_stat:.2f} <= {f_crit:.2f} at p = 0.01 with "
            f"{n_eff:.0f} effective tie points)"
        )
        return False
    results["decision"] = "applied"
    return True


@dataclass(frozen=True)
class TiePointWarp:
    """The valid tie points of a scene as AROSICS' correction info for any block of it: the
    scene pixel ``(col, row)`` of each and the map position ``(x, y)`` it moves to."""

    scene: GeoBox
    col: NDArray[np.float64]
    row: NDArray[np.float64]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    margin: int
    mean_shift_px: tuple[float, float]

    def near(self, geobox: GeoBox) -> NDArray[np.bool_]:
        """The tie points the block on ``geobox`` is warped through: those within the margin,
        which is doubled until there are :data:`MIN_BLOCK_GCPS` of them, not all on one line
        (a spline through them would be degenerate), or all of them; at most
        :data:`MAX_GCPS` of them."""
        r0, c0 = offset_in(self.scene, geobox)
        h, w = geobox.shape.yx
        m = self.margin
        while True:
            sel = (
                (self.col >= c0 - m)
                & (self.col < c0 + w + m)
                & (self.row >= r0 - m)
                & (self.row < r0 + h + m)
            )
            if sel.all() or (
                int(sel.sum()) >= MIN_BLOCK_GCPS and _spread(self.col[sel], self.row[sel])
            ):
                break
            m *= 2
        if int(sel.sum()) > MAX_GCPS:
            keep = np.random.default_rng(0).choice(np.flatnonzero(sel), MAX_GCPS, replace=False)
            sel = np.zeros_like(sel)
            sel[keep] = True
        return sel

    def info_on(self, geobox: GeoBox) -> dict[str, Any]:
        """``DESHIFTER``'s input for the block on ``geobox``: the tie points near it as GCPs in
        its own pixels, on its own grid (and the mean shift, which ``DESHIFTER`` applies
        instead below 5 points)."""
        from osgeo import gdal

        r0, c0 = offset_in(self.scene, geobox)
        sel = self.near(geobox)
        pts = zip(self.col[sel], self.row[sel], self.x[sel], self.y[sel], strict=True)
        gcps = [
            gdal.GCP(float(x), float(y), 0.0, float(c - c0), float(r - r0)) for c, r, x, y in pts
        ]
        dx, dy = self.mean_shift_px
        info = global_info({}, geobox, dx, dy)
        gt = geobox.affine.to_gdal()
        info.update(
            {
                "GCPList": gcps,
                "mean_shifts_px": {"x": -dx, "y": -dy},
                "updated map info means": info["updated map info"],
                "reference projection": crs(geobox).to_wkt(),
                "reference geotransform": list(gt),
                "reference grid": [[gt[0], gt[0] + gt[1]], [gt[3], gt[3] + gt[5]]],
                "success": True,
            }
        )
        return info


def _spread(col: NDArray[np.float64], row: NDArray[np.float64]) -> bool:
    """Whether the points are not all on one line."""
    pts = np.column_stack([col, row, np.ones_like(col)])
    return int(np.linalg.matrix_rank(pts)) == 3


def tiepoint_warp(tbl: Any, scene: GeoBox, cfg: CoregConfig) -> TiePointWarp:
    """The valid tie points as the warp AROSICS' ``to_GCPList`` gives (the point's scene pixel
    moves to its map position plus its measured shift)."""
    _, valid = valid_tiepoints(tbl, cfg)

    def col(name: str) -> NDArray[np.float64]:
        return np.asarray(tbl[name], dtype=np.float64)[valid]

    dx, dy = -col("X_SHIFT_PX"), -col("Y_SHIFT_PX")
    return TiePointWarp(
        scene,
        col("X_IM"),
        col("Y_IM"),
        col("X_MAP") + col("X_SHIFT_M"),
        col("Y_MAP") + col("Y_SHIFT_M"),
        GCP_MARGIN_SPACINGS * cfg.grid_res,
        (float(dx.mean()), float(dy.mean())),
    )
