"""F1 of the multi-temporal cloud test by the time between a scene and the catalog's first
clear-sky reference, with and without the reference's refresh (``temporal_f1_by_gap_days``).

A generated sample spans a year (a date every 5 days from 1 June, the sample's phenology:
cereals senesce, maize greens up, meadows are mown; its cloud cover cycles through 5 %, 20 %,
40 % and 0 %). The catalog's first run holds the first four dates (days 0-15); its reference is
built as :func:`stac2cube.references.build.ensure_reference` builds it: the cloud step without the
test on the candidates with the lowest provider cloud cover, the per-pixel B02 median of the
``temporal_scenes`` clearest (so its median date is day 5). Every later date is an update:

* ``frozen``: the test against the first reference, its threshold grown by the gap (the
  behaviour before ``temporal_refresh_days``; 0.03 at 0 days, 0.21 at 180, 0.395 at 365);
* ``refresh``: the versions the pipeline builds with the default ``temporal_refresh_days``
  (30): for each window of :func:`stac2cube.references.refresh_window`, a version from the
  update's scenes in that window (the scene under test may be one of them, as in the
  pipeline), and every scene tested against the version nearest in time;
* ``single_date``: the same configuration without the test, for comparison.

Scenes are grouped by their gap to the first reference (0-15, 60-120, 180-365 days); precision,
recall and F1 of ``CLOUD_MASK == cloud`` against the truth (thick, thin, cirrus) are pooled over
the valid pixels of each group, for ``SCL + temporal`` and the default ``union`` (60 m) +
temporal. Nothing is tuned: threshold 0.03 and time scale 30 days are Hagolle et al.'s.

    python benchmarks/_cloudmask_temporal.py --quick   # prints the JSON (~3 min on 2 shared cores)
    python benchmarks/_cloudmask_temporal.py           # 2 samples of 300 x 300 px (~7 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import Counts

TEMPORAL = 0.03
"""``temporal_threshold`` (Hagolle et al. 2010)."""
GAP_BINS: dict[str, tuple[float, float]] = {
    "0-15": (0.0, 15.0),
    "60-120": (60.0, 120.0),
    "180-365": (180.0, 365.0),
}
"""Days between a scene and the first reference's median date."""
FIRST_RUN_DATES = 4
"""Dates of the catalog's first run (days 0, 5, 10, 15)."""
N_DATES = 75
"""Days 0-370, one date every 5 days (the sample's spacing)."""
CONFIGS: dict[str, dict[str, Any]] = {
    "scl_temporal": {"method": "scl"},
    "union_60m_temporal": {"method": "union", "resolution": 60.0},
}
"""CloudMaskConfig keywords of the measured configurations (the test is added to each)."""


@dataclasses.dataclass(frozen=True)
class _Date:
    """One date of the sample, read once: the scene, its truth and what the reference needs."""

    index: int
    when: dt.datetime
    cover: float
    px: Any  # SampleScenePixels
    bad: dict[str, np.ndarray]  # per configuration: not clear without the temporal test
    cloud: dict[str, np.ndarray]  # per configuration: cloud without the temporal test


def _reference(dates: Sequence[_Date], name: str, cfg: Any, gbox: Any, version: str) -> Any:
    """A clear-sky reference version from ``dates`` as the pipeline builds one: the
    ``2 * temporal_scenes`` (at least 3) lowest provider cloud covers, the per-pixel B02 median
    of the ``temporal_scenes`` clearest; its time is the median of theirs."""
    from stac2cube.references import choose_reference
    from stac2cube.steps.base import AuxLayer

    ranked = sorted(dates, key=lambda d: d.cover)[: max(2 * cfg.temporal_scenes, 3)]
    cands = [(str(d.index), d.px.scene.bands["B02"], d.bad[name]) for d in ranked]
    data, sources = choose_reference(cands, "median", cfg.temporal_scenes, min_texture=0.0)
    times = sorted(d.when for d in ranked if str(d.index) in sources)
    when = times[(len(times) - 1) // 2]
    return AuxLayer(data[None], gbox, ("B02",), f"sample#{','.join(sources)}", when, version)


def _versions(dates: Sequence[_Date], name: str, cfg: Any, gbox: Any) -> list[Any]:
    """The first run's reference and the versions the update's refresh adds, in the order
    :func:`stac2cube.references.build.ensure_reference` builds them."""
    from stac2cube.references import refresh_window

    first, update = dates[:FIRST_RUN_DATES], dates[FIRST_RUN_DATES:]
    versions = [_reference(first, name, cfg, gbox, "cloud-reference")]
    assert cfg.temporal_refresh_days is not None
    done_until: dt.datetime | None = None
    while True:
        pending = [d.when for d in update if done_until is None or d.when > done_until]
        window = refresh_window(pending, [v.datetime for v in versions], cfg.temporal_refresh_days)
        if window is None:
            return versions
        group = [d for d in update if window[0] <= d.when <= window[1]]
        versions.append(_reference(group, name, cfg, gbox, f"cloud-reference-v{len(versions) + 1}"))
        done_until = window[1]


def _gap_days(a: dt.datetime, b: dt.datetime) -> float:
    return abs((a - b).total_seconds()) / 86400.0


def _nearest(versions: Sequence[Any], when: dt.datetime) -> Any:
    """The version nearest in time to ``when``, as the pipeline picks it."""
    gaps = [_gap_days(when, v.datetime) for v in versions]
    return versions[gaps.index(min(gaps))]


def temporal_by_gap(quick: bool) -> dict[str, Any]:
    """``temporal_f1_by_gap_days`` and its details (see the module docstring)."""
    from stac2cube.sample import SampleSpec, generate_sample
    from stac2cube.sample.scenes import sample_geobox, scene_from_sample
    from stac2cube.steps.cloudmask import (
        MASK_CLEAR,
        MASK_CLOUD,
        MASK_NODATA,
        CloudMaskConfig,
        CloudMaskStep,
    )

    t_start = time.perf_counter()
    size, seeds = (128, (31,)) if quick else (300, (31, 32))
    step = CloudMaskStep()
    counts = {
        (name, b, how): Counts()
        for name in CONFIGS
        for b in GAP_BINS
        for how in ("refresh", "frozen", "single_date")
    }
    n_scenes = dict.fromkeys(GAP_BINS, 0)
    gaps: dict[tuple[str, str, str], list[float]] = {}
    thresholds: dict[tuple[str, str, str], list[float]] = {}
    skipped: dict[str, int] = dict.fromkeys(CONFIGS, 0)
    n_versions: dict[str, list[int]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="stac2cube-temporal-") as tmp:
        for seed in seeds:
            spec = SampleSpec(n_dates=N_DATES, width=size, height=size, seed=seed)
            sample = generate_sample(Path(tmp) / f"s{seed}", spec)
            gbox = sample_geobox(sample)
            cfgs = {
                name: CloudMaskConfig(shadows="none", temporal_threshold=TEMPORAL, **kw)
                for name, kw in CONFIGS.items()
            }
            dates: list[_Date] = []
            for i, s in enumerate(sample.scenes):
                px = scene_from_sample(sample, i, toa_resolution=60.0)
                bad, cloud = {}, {}
                for name, cfg in cfgs.items():
                    # candidates are masked as the pipeline masks them: no test, shadows both
                    # (the cloud pixels are those of shadows none: shadows never take a cloud)
                    base = dataclasses.replace(cfg, temporal_threshold=None, shadows="both")
                    mask = step.run(px.scene, base).scene.classes["CLOUD_MASK"]
                    bad[name], cloud[name] = mask != MASK_CLEAR, mask == MASK_CLOUD
                props = s.l2a_item["properties"]
                when = dt.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
                dates.append(_Date(i, when, float(props["eo:cloud_cover"]), px, bad, cloud))
            versions = {name: _versions(dates, name, cfg, gbox) for name, cfg in cfgs.items()}
            first_time = versions[next(iter(CONFIGS))][0].datetime
            for name in CONFIGS:
                n_versions[name].append(len(versions[name]))
            for d in dates:
                gap0 = _gap_days(d.when, first_time)
                b = next((k for k, (lo, hi) in GAP_BINS.items() if lo <= gap0 <= hi), None)
                # the long-gap group has most dates: in --quick every other one is enough
                if b is None or (quick and b == "180-365" and d.index % 2):
                    continue
                n_scenes[b] += 1
                truth = np.isin(d.px.truth, (1, 2, 3))
                for name, cfg in cfgs.items():
                    vs = versions[name]
                    nearest = _nearest(vs, d.when)
                    frozen = dataclasses.replace(cfg, temporal_refresh_days=None)
                    runs = {"refresh": (cfg, nearest), "frozen": (frozen, vs[0])}
                    results: dict[str, Any] = {}
                    for how, (c, ref) in runs.items():
                        if how == "frozen" and ref is nearest:  # the same reference
                            res = results["refresh"]
                        else:
                            aux = {**d.px.scene.aux, "clear_reference": ref}
                            res = step.run(d.px.scene.replace(aux=aux), c)
                        results[how] = res
                        mask = res.scene.classes["CLOUD_MASK"]
                        valid = (d.px.truth != 255) & (mask != MASK_NODATA)
                        counts[(name, b, how)].add(mask == MASK_CLOUD, truth, valid)
                        rec = res.record.results.get("temporal", {})
                        if rec.get("status") == "applied":
                            gaps.setdefault((name, b, how), []).append(rec["gap_days"])
                            thresholds.setdefault((name, b, how), []).append(rec["threshold"])
                        else:
                            skipped[name] += 1
                    counts[(name, b, "single_date")].add(d.cloud[name], truth, valid)

    def mean(v: list[float] | None) -> float | None:
        return round(float(np.mean(v)), 2) if v else None

    detail = {
        name: {
            b: {
                how: {
                    **counts[(name, b, how)].metrics(),
                    "mean_gap_days": mean(gaps.get((name, b, how))),
                    "mean_threshold": mean(thresholds.get((name, b, how))),
                }
                for how in ("refresh", "frozen", "single_date")
            }
            for b in GAP_BINS
        }
        for name in CONFIGS
    }
    return {
        "temporal_f1_by_gap_days": {
            name: {
                b: {how: detail[name][b][how]["f1"] for how in ("refresh", "frozen", "single_date")}
                for b in GAP_BINS
            }
            for name in CONFIGS
        },
        "detail": detail,
        "n_scenes_by_gap": n_scenes,
        "reference_versions": n_versions,
        "tests_skipped": skipped,
        "temporal_threshold": TEMPORAL,
        "temporal_days": CloudMaskConfig().temporal_days,
        "temporal_refresh_days": CloudMaskConfig().temporal_refresh_days,
        "gap": "days between the scene and the first run's reference (median date: day 5); "
        "refresh: tested against the nearest of the versions the pipeline builds; frozen: "
        "against the first reference; single_date: without the test",
        "samples": {"seeds": list(seeds), "width": size, "height": size, "n_dates": N_DATES,
                    "days_between_dates": 5, "first_run_dates": FIRST_RUN_DATES},
        "quick": quick,
        "seconds": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small sample")
    args = ap.parse_args()
    print(json.dumps(temporal_by_gap(args.quick), indent=1))


if __name__ == "__main__":
    main()
