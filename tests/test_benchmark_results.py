"""The committed benchmark results hold the keys their issues name (the figures the docs quote)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

TILE_KEYS = (
    # issue 17: whole tiles
    "tile_px",
    "seconds",
    "peak_rss_mb_per_worker",
    "rss_tile_vs_sixteenth_ratio",
    "floor_seconds",
    "ingest_floor_ratio",
    "steps_floor_ratio",
    "mpx_per_s_per_core",
    "dask_tile_speedup",
)


REQUIRED = {
    "tile": TILE_KEYS,
    # issue 20: the optional NBAR step on generated scenes with a known BRDF
    "nbar": ("cross_track_gradient_before", "cross_track_gradient_after"),
    "cloudmask": (
        "best_f1",
        "best_config",
        "scl_f1",
        "curve",
        # issue 15: real pixels, L2A-only archives, the temporal test over time, realistic surfaces
        "real_s2cloudless_max_abs_diff",
        "real_mask_pixels_differing",
        "l2a_only_f1",
        "temporal_f1_by_gap_days",
        "false_alarm_by_surface",
    ),
    "coreg": (
        # issue 15: real texture and the real misregistered pair
        "zero_shift_applied_px_max",
        "small_shift_rmse_px",
        "harm_rate",
        "real_pair_local_vs_arosics_px",
        "real_pair_global_vs_arosics_px",
        "global_rmse_px",
        "local_rmse_px",
        "global_rmse_px_on_warp",
        "temporal_std_before",
        "temporal_std_after",
    ),
    "superres": (
        # issue 18: the published model against back-projection; the 20 m hand-over
        "consistency_rel_error_published",
        "consistency_rel_error_backprojected",
        "sharpness_hf_ratio_published",
        "sharpness_hf_ratio_backprojected",
        "seam_max_abs_diff_published",
        "input_20m_reconstruction",
    ),
    "incremental": (
        "update_ratio",
        "old_cogs_rewritten",
        "memory_ratio",
        "dask_speedup",
        "open_1000_items_s",
        "kerchunk_vs_odc_read_ratio",
        "crash_trials_passed",
        "crash_trials",
    ),
    "virtual": (
        # issue 19: the versioned virtual cube
        "open_s_by_items",
        "commit_s_per_item",
        "commit_growth_ratio",
        "read_vs_odc_ratio",
        "read_values_equal",
        "time_travel_identical",
        "stale_read_raises",
        "method",
    ),
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_results_hold_the_named_keys(name: str) -> None:
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    missing = [k for k in REQUIRED[name] if k not in doc]
    assert not missing, f"benchmarks/results/{name}.json lacks {missing}: rerun the benchmark"
    assert doc.get("quick") is False, f"{name}.json is from a --quick run"


def test_cloudmask_best_is_the_best_of_its_table() -> None:
    doc = json.loads((RESULTS / "cloudmask.json").read_text())
    f1s = [v["f1"] for v in doc["cloud"].values()] + [v["f1"] for v in doc["curve"].values()]
    assert doc["best_f1"] == max(f1s)
    assert doc["scl_f1"] == doc["cloud"]["scl"]["f1"]
    assert doc["meets_target"] == (doc["best_f1"] >= doc["cloud_f1_target"])


def test_tile_results_are_of_a_whole_tile() -> None:
    doc = json.loads((RESULTS / "tile.json").read_text())
    assert doc["tile_px"] == 10980 and doc["complete"] is True


def test_tile_results_hold_the_named_keys_and_their_ratios_agree() -> None:
    path = RESULTS / "tile.json"
    if not path.exists():
        pytest.skip("no benchmarks/results/tile.json yet: python benchmarks/tile.py --quick")
    doc = json.loads(path.read_text())
    missing = [k for k in TILE_KEYS if k not in doc]
    assert not missing, f"benchmarks/results/tile.json lacks {missing}: rerun the benchmark"

    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 3) if x and y else None

    assert doc["ingest_floor_ratio"] == ratio(doc["seconds"].get("none"), doc["floor_seconds"])
    assert doc["steps_floor_ratio"] == ratio(
        doc["seconds"].get("cloudmask_global"), doc["floor_seconds"]
    )
    assert doc["dask_tile_speedup"] == ratio(doc["dask_seconds"]["1"], doc["dask_seconds"]["2"])
    for name, seconds in doc["seconds"].items():
        # a configuration has seconds only when it wrote its scene; else its status says why
        assert (seconds is not None) == (doc["status"][name] == "written"), name
        assert doc["rss_tile_vs_sixteenth_ratio"][name] == ratio(
            doc["peak_rss_mb_per_worker"][name], doc["sixteenth_peak_rss_mb_per_worker"][name]
        )


def test_virtual_results_cover_the_named_sizes_and_their_ratios_agree() -> None:
    doc = json.loads((RESULTS / "virtual.json").read_text())
    sizes = ["1000", "10000", "100000"]
    assert list(doc["open_s_by_items"]) == sizes and list(doc["commit_s_per_item"]) == sizes
    per_item = doc["commit_s_per_item"]
    assert doc["commit_growth_ratio"] == round(per_item["100000"] / per_item["1000"], 3)
    assert doc["commit_grows_with_size"] == (
        doc["commit_growth_ratio"] > doc["commit_growth_ratio_goal"]
    )
    mb_per_s = doc["read_mb_per_s"]
    assert abs(doc["read_vs_odc_ratio"] - mb_per_s["virtual"] / mb_per_s["odc"]) < 0.02
    assert doc["read_values_equal"] is True
