"""Where the shared offline test data lives (real provider STAC items, schemas, small rasters).

The data lives outside the repository: in ``$STAC2CUBE_SHARED_DATA`` when that is set, else in
``<repository>/../shared/data`` (where CI puts it beside the clone). The benchmarks and the
readers of its real rasters (:mod:`.real_pair`, :mod:`.eo_patch`) find it here; the tests go
through ``stac2cube.testing.data``, which skips them when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["ENV_VAR", "shared_data_dir"]

ENV_VAR: Final = "STAC2CUBE_SHARED_DATA"
"""Environment variable naming the shared data directory."""


def shared_data_dir() -> Path | None:
    """The shared data directory, or None when it does not exist."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        path = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path if path.is_dir() else None
