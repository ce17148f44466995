"""Render the cloud-mask benchmark's figures for the docs from benchmarks/results/cloudmask.json.

    python benchmarks/plot_cloudmask.py     # writes docs/img/cloudmask-curve.png

Nothing is measured here: the figure only draws what ``benchmarks/cloudmask.py`` wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cloudmask.json"
OUT = ROOT / "docs" / "img" / "cloudmask-curve.png"


def main() -> None:
    res = json.loads(RESULTS.read_text())
    curve = res["curve"]
    ts = sorted(curve, key=float)
    x = [float(t) for t in ts]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, style in (("precision", "--"), ("recall", ":"), ("f1", "-")):
        ax.plot(x, [curve[t][key] for t in ts], style, marker="o", label=f"s2cloudless {key}")
    labels = {
        "scl": "SCL",
        "union_60m": "union 60 m (default)",
        "union_10m": "union 10 m",
        "union_10m_temporal": "union 10 m + multi-temporal",
        "scl_temporal": "SCL + multi-temporal",
    }
    colors = ("tab:purple", "tab:brown", "tab:gray", "tab:cyan", "tab:olive")
    for (name, label), color in zip(labels.items(), colors, strict=True):
        f1 = res["cloud"][name]["f1"]
        ls = "-." if name.endswith("_temporal") else "-"
        ax.axhline(f1, color=color, lw=1, ls=ls, label=f"{label}: F1 {f1:.2f}")
    ax.axhline(res["cloud_f1_target"], color="red", lw=1, ls=":", label="target F1")
    ax.set_xlabel("s2cloudless probability threshold (60 m)")
    ax.set_ylabel("score (clouds, all generated scenes)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Cloud detection on {res['n_scenes']} generated scenes")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
