"""Global mode: one shift for the scene, the mean of the refined estimates of up to
:data:`~stac2cube.steps.coreg.windows.MAX_WINDOWS` windows after dropping outliers, applied only
when significant and improving the alignment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from odc.geo.geobox import GeoBox

from .backend import CoregFailure, crs
from .config import CoregConfig
from .estimate import WindowMatch, match_window, window_support
from .inputs import MatchInputs, WindowCrop
from .significance import shift_helps, standard_error
from .windows import MAX_WINDOWS, MIN_FALLBACK_WINDOW, pick_windows, window_bad_fraction

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class GlobalShift:
    """The combined estimate of the global mode: the displacement ``(dx, dy)`` px, AROSICS'
    correction info of the first window used (a template for :func:`global_info`) and whether
    to apply it (the reason is in the results)."""

    dx: float
    dy: float
    template: Mapping[str, Any]
    apply: bool

    def info_on(self, geobox: GeoBox) -> dict[str, Any]:
        """AROSICS' correction info that moves the grid ``geobox`` by this shift."""
        return global_info(self.template, geobox, self.dx, self.dy)


def match_global(
    inp: MatchInputs, gbox: GeoBox, cfg: CoregConfig, results: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Match up to :data:`MAX_WINDOWS` windows, combine their refined estimates and decide
    whether the shift is significant and improves the alignment. Returns AROSICS' correction
    info for the combined shift and whether to apply it (the reason is in ``results``)."""

    def pick(win: int) -> list[tuple[int, int]]:
        frac = inp.frac if win == cfg.window else window_bad_fraction(inp.bad_any, win)
        return pick_windows(inp.target, inp.bad_any, frac, win, cfg.max_bad_fraction, MAX_WINDOWS)

    centres, win = place_windows(pick, cfg)
    crops = [crop_window(inp, gbox, r, c, win, cfg) for r, c in centres]
    shift = match_crops(crops, cfg, win, results)
    return global_info(shift.template, gbox, shift.dx, shift.dy), shift.apply


def place_windows(pick: Callable[[int], list[T]], cfg: CoregConfig) -> tuple[list[T], int]:
    """The windows (centres, or crops) ``pick(window)`` gives for ``cfg.window`` px windows,
    else for windows halved down to :data:`MIN_FALLBACK_WINDOW` px, and that window size.
    Raises :class:`CoregFailure` when no window qualifies."""
    win = cfg.window
    while not (centres := pick(win)):
        if win // 2 < MIN_FALLBACK_WINDOW:
            raise CoregFailure(
                f"no matching window of {cfg.window} down to {win} px has at most "
                f"{cfg.max_bad_fraction:.0%} cloud, shadow, anomaly or nodata pixels"
            )
        win //= 2
    return centres, win


def crop_window(
    inp: MatchInputs, gbox: GeoBox, r: int, c: int, win: int, cfg: CoregConfig
) -> WindowCrop:
    """The window of ``win`` px centred on ``(r, c)`` of ``inp`` (on ``gbox``) as a crop of
    the pixels its matching can touch."""
    sl = window_support(inp.target.shape, r, c, win, cfg)
    return WindowCrop(inp.cut(sl), gbox[sl], r - sl[0].start, c - sl[1].start, (c, r))


def match_crops(
    crops: Sequence[WindowCrop], cfg: CoregConfig, win: int, results: dict[str, Any]
) -> GlobalShift:
    """Match each window on its crop, drop outliers, combine the refined estimates and decide
    whether the shift is significant and improves the alignment; ``results`` get the windows'
    records, the combined estimate and the decision. Raises :class:`CoregFailure` when no
    window matches."""
    windows: list[dict[str, Any]] = []
    matched: list[tuple[WindowCrop, WindowMatch]] = []
    for crop in crops:
        rec: dict[str, Any] = {"center_px": list(crop.center_px)}
        try:
            if crop.reject is not None:
                raise CoregFailure(crop.reject)
            m = match_window(crop.inp, crop.geobox, cfg, win, crop.row, crop.col, rec)
            matched.append((crop, m))
            rec["status"] = "matched"
        except CoregFailure as exc:
            rec.update(status="rejected", reason=str(exc))
            log.debug("matching window at col %d row %d: %s", *crop.center_px, exc)
        windows.append(rec)
    results.update(window_size_px=[win, win], windows_tried=len(windows), windows=windows)
    if not matched:
        reasons = sorted({w["reason"] for w in windows})
        raise CoregFailure(
            f"{len(windows)} matching window(s) failed: " + "; ".join(reasons)
            if len(reasons) > 1
            else reasons[0]
        )
    first = next(w for w in windows if w["status"] == "matched")
    results["window_center_px"] = first["center_px"]
    results["texture"] = first["texture"]
    d = np.asarray([(m.dx, m.dy) for _, m in matched], dtype=np.float64)
    inlier = np.ones(len(matched), dtype=bool)
    if len(matched) >= 3:
        dist = np.hypot(*(d - np.median(d, axis=0)).T)
        inlier = dist <= 3.0 * 1.4826 * float(np.median(dist)) + 0.02
        for w, m_ok in zip((w for w in windows if w["status"] == "matched"), inlier, strict=True):
            if not m_ok:
                w["status"] = "outlier"
    used = [cm for cm, ok in zip(matched, inlier, strict=True) if ok]
    du = d[inlier]
    mdx, mdy = (float(v) for v in du.mean(axis=0))
    se, noise_from = standard_error(cfg, used, du, win)
    rels = [m.reliability for _, m in used if m.reliability is not None]
    ssim0 = [m.ssim_before for _, m in used if m.ssim_before is not None]
    ssim1 = [m.ssim_after for _, m in used if m.ssim_after is not None]
    affine = used[0][0].geobox.affine
    res_x, res_y = affine.a, abs(affine.e)
    results.update(
        shift_px=[round(mdx, 4), round(mdy, 4)],
        shift_m=[round(mdx * res_x, 3), round(-mdy * res_y, 3)],
        windows_used=len(used),
        reliability=round(float(np.mean(rels)), 2) if rels else None,
        ssim_before=round(float(np.mean(ssim0)), 4) if ssim0 else None,
        ssim_after=round(float(np.mean(ssim1)), 4) if ssim1 else None,
        noise_floor_from=noise_from,
    )
    apply = shift_helps(used, mdx, mdy, se, results)
    return GlobalShift(mdx, mdy, used[0][1].info, apply)


def global_info(template: Mapping[str, Any], gbox: GeoBox, dx: float, dy: float) -> dict[str, Any]:
    """AROSICS' ``coreg_info`` for a global correction of the displacement ``(dx, dy)`` px."""
    from py_tools_ds.geo.map_info import geotransform2mapinfo

    _x0, res_x, _, _y0, _, res_y = gbox.affine.to_gdal()
    xm, ym = -dx * res_x, dy * abs(res_y)  # the correction in map units (AROSICS' convention)
    info = dict(template)
    prj = crs(gbox).to_wkt()
    original = geotransform2mapinfo(gbox.affine.to_gdal(), prj)
    updated = list(original)
    updated[3] = str(float(original[3]) + xm)
    updated[4] = str(float(original[4]) + ym)
    info.update(
        corrected_shifts_px={"x": -dx, "y": -dy},
        corrected_shifts_map={"x": xm, "y": ym},
        **{"original map info": original, "updated map info": updated},
    )
    return info
