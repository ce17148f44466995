"""Run configs over the generated sample, for tests, benchmarks and examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..demo import demo_config
from ..sample import Sample


def write_config(directory: Path, sample: Sample, source: dict[str, Any], **sections: Any) -> Path:
    """Write ``directory/config.yaml`` over ``sample`` (catalog in ``directory/catalog``).

    ``sections`` replace top-level values; mappings are merged into the section
    (e.g. ``time={"start": "2001-01-01"}``).
    """
    cfg: dict[str, Any] = demo_config(sample, source, directory / "catalog")
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
