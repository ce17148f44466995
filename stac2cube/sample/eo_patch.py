"""eo-learn's ``TestEOPatch``: real Sentinel-2 L1C with s2cloudless' expected outputs, read for
the cloud step's tests and benchmark.

A 1 km x 1 km patch in Slovenia, 2015, about 10 m (shared data
``rasters/eo-learn-TestEOPatch-2015/``, see its README): TOA reflectance of all 13 L1C bands for
5 dates, and the s2cloudless probabilities and masks (threshold 0.4, average_over 4, dilation_size
2 pixels) that eo-learn's own test expects for all 68 dates. :func:`read_test_eopatch` reads it;
:meth:`Patch.toa` hands a scene's bands over as the pipeline hands them to the step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from ..steps.cloudmask import S2CLOUDLESS_BANDS

PATCH_DIR: Final = "rasters/eo-learn-TestEOPatch-2015"
"""Folder of the patch, relative to the shared data directory."""


@dataclass(frozen=True)
class Patch:
    scenes: np.ndarray
    """(5, y, x, 13) float32 TOA reflectance, bands in ``order``."""
    order: list[str]
    time_index: list[int]
    """Index into the 68 dates of each of the 5 scenes."""
    clp: np.ndarray
    """(68, y, x) float32 expected probabilities."""
    clm: np.ndarray
    """(68, y, x) bool expected masks."""
    valid: np.ndarray
    """(68, y, x) bool valid data."""
    timestamps: list[str]
    """The dates ``meta.json`` lists (only the first 5 of the 68, despite its key's name)."""

    def toa(self, k: int, bands: tuple[str, ...] = S2CLOUDLESS_BANDS) -> np.ndarray:
        """``(len(bands), y, x)`` float32 TOA of scene ``k``, bands in ``bands`` order."""
        idx = [self.order.index(b) for b in bands]
        return np.ascontiguousarray(np.moveaxis(self.scenes[k][..., idx], -1, 0), np.float32)


def read_test_eopatch(root: Path) -> Patch:
    """The patch in ``root`` (the ``PATCH_DIR`` folder of the shared data)."""
    meta = json.loads((root / "meta.json").read_text())
    return Patch(
        scenes=np.load(root / "REFERENCE_SCENES.npy"),
        order=list(meta["band_order"]),
        time_index=[int(t) for t in meta["REFERENCE_SCENES_time_index"]],
        clp=np.load(root / "CLP_S2C.npy")[..., 0],
        clm=np.load(root / "CLM_S2C.npy")[..., 0].astype(bool),
        valid=np.load(root / "IS_DATA.npy")[..., 0].astype(bool),
        timestamps=list(meta.get("all_68_timestamps", [])),
    )


__all__ = ["PATCH_DIR", "Patch", "read_test_eopatch"]
