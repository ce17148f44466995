"""The bundled sample, end to end: generate it, serve it as a real STAC API, run the pipeline.

``stac2cube demo DIR`` calls :func:`run_demo`. Nothing here touches the network beyond
127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import load_config
from .pipeline import ProgressCallback, RunSummary, run
from .sample import Sample, SampleSpec, generate_sample
from .serve import RustacServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced."""

    sample: Sample
    config_path: Path
    offline_config_path: Path
    api_url: str
    summary: RunSummary


def demo_config(
    sample: Sample, source: dict[str, str], catalog: Path, *, ard: bool = False
) -> dict[str, object]:
    """A run config over the sample (AOI: the sample's bbox shrunk by 10 %); ``ard`` adds the
    quality step with per-pixel angles (the demo's items then meet CEOS-ARD's per-pixel
    requirements, docs/ard.md)."""
    w, s, e, n = sample.bbox
    dx, dy = (e - w) * 0.05, (n - s) * 0.05
    dates = [
        dt.datetime.fromisoformat(sc.l2a_item["properties"]["datetime"].replace("Z", "+00:00"))
        for sc in sample.scenes
    ]
    return {
        "source": {**source, "collection": "sentinel-2-l2a", "l1c_collection": "sentinel-2-l1c"},
        "aoi": {"bbox": [round(v, 6) for v in (w + dx, s + dy, e - dx, n - dy)]},
        "time": {
            "start": min(dates).date().isoformat(),
            "end": max(dates).date().isoformat(),
        },
        "bands": ["B02", "B03", "B04", "B05", "B08", "B8A", "B11", "B12", "SCL"],
        "steps": {"cloudmask": {}, **({"quality": {"angles": True}} if ard else {})},
        "output": {"catalog": str(catalog), "collection_id": "sentinel-2-l2a-ard"},
    }


def serve_sample(sample: Sample) -> RustacServer:
    """A (not yet started) STAC API over the sample's L2A and L1C collections and items."""
    return RustacServer(
        [
            sample.l2a_collection_path,
            sample.l1c_collection_path,
            sample.l2a_items_path,
            sample.l1c_items_path,
        ]
    )


def run_demo(
    directory: str | Path,
    *,
    spec: SampleSpec | None = None,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Generate the sample in ``directory/sample``, serve it, and build ``directory/catalog``."""
    root = Path(directory).resolve()
    sample = generate_sample(root / "sample", spec or SampleSpec())
    catalog = root / "catalog"
    offline = root / "demo-offline.yaml"
    offline.write_text(
        yaml.safe_dump(
            demo_config(
                sample,
                {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path)},
                catalog,
                ard=True,
            ),
            sort_keys=False,
        )
    )
    with serve_sample(sample) as api:
        cfg_path = root / "demo.yaml"
        cfg_path.write_text(
            "# Written by `stac2cube demo`: the API below lived only while the demo ran.\n"
            "# demo-offline.yaml reads the same sample from its item collection file.\n"
            + yaml.safe_dump(
                demo_config(sample, {"api": api.url}, catalog, ard=True), sort_keys=False
            )
        )
        summary = run(load_config(cfg_path), progress=progress)
        url = api.url
    return DemoResult(sample, cfg_path, offline, url, summary)
