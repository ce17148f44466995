"""Co-registration of a scene onto the catalog's reference image with AROSICS: a global shift
from refined window matches, or a local tie-point warp, applied once and only when it is
significant and improves the alignment. What each part does and why, the sign conventions of
the record, and what it gives on real and generated pixels: ``docs/coreg.md``.

One module per part: :mod:`.config` (``steps.coreg``), :mod:`.inputs` (bad pixels, anomalies),
:mod:`.windows` (where to match), :mod:`.estimate` (one window's refined estimate),
:mod:`.significance` (whether a correction helps), :mod:`.global_shift` and :mod:`.local` (the
two modes), :mod:`.blocks` (the global mode in blocks), :mod:`.backend` (AROSICS calls),
:mod:`.outcome` (record and failure policy) and :mod:`.step` (:class:`CoregStep`).
"""

from __future__ import annotations

from ...bands import SCL_BAD
from .backend import CoregFailure
from .config import (
    DEFAULT_MIN_TEXTURE_SNR,
    DEFAULT_WINDOW,
    CoregConfig,
    Mode,
    OnFailure,
    ReferenceMode,
    Resampling,
)
from .estimate import MAX_REFINEMENT_PX, REFINE_LOWPASS_PX, REFINE_PASSES
from .inputs import (
    ANOMALY_MADS,
    ANOMALY_MIN_DIFF,
    CLOUD_MASK_CLEAR,
    MATCH_BAND_FALLBACK,
    anomaly_mask,
    bad_data_mask,
)
from .local import TIEPOINTS_SIDECAR
from .significance import DEFAULT_WINDOW_SIGMA_PX, MIN_SE_PX, SIGNIFICANCE
from .step import CoregStep
from .windows import MAX_WINDOWS, MIN_FALLBACK_WINDOW

__all__ = [
    "ANOMALY_MADS",
    "ANOMALY_MIN_DIFF",
    "CLOUD_MASK_CLEAR",
    "DEFAULT_MIN_TEXTURE_SNR",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_SIGMA_PX",
    "MATCH_BAND_FALLBACK",
    "MAX_REFINEMENT_PX",
    "MAX_WINDOWS",
    "MIN_FALLBACK_WINDOW",
    "MIN_SE_PX",
    "REFINE_LOWPASS_PX",
    "REFINE_PASSES",
    "SCL_BAD",
    "SIGNIFICANCE",
    "TIEPOINTS_SIDECAR",
    "CoregConfig",
    "CoregFailure",
    "CoregStep",
    "Mode",
    "OnFailure",
    "ReferenceMode",
    "Resampling",
    "anomaly_mask",
    "bad_data_mask",
]
