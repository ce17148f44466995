"""Cloud and cloud-shadow masking: s2cloudless and/or SCL clouds, SCL and/or geometric shadows,
an optional multi-temporal test, written as the ``CLOUD_MASK`` layer (0 nodata, 1 clear,
2 cloud, 3 shadow). What each part does and why, and what it gives: ``docs/cloudmask.md``.

One module per part: :mod:`.config` (``steps.cloudmask``), :mod:`.probability` (s2cloudless),
:mod:`.cirrus`, :mod:`.shadows`, :mod:`.temporal`, :mod:`.layers` (the written layers and their
fractions), :mod:`.raster` (array helpers) and :mod:`.step` (:class:`CloudMaskStep`).
"""

from __future__ import annotations

from ...bands import (
    MASK_CLASSES,
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_NODATA,
    MASK_SHADOW,
    PROB_NODATA,
)
from .cirrus import NDSI_SNOW, snow_mask
from .config import CloudMaskConfig, L1CMode, Method, Shadows
from .layers import (
    THRESHOLD_LAYER_NODATA,
    threshold_layer_name,
)
from .probability import (
    B10_FALLBACK_REFLECTANCE,
    S2CLOUDLESS_BANDS,
    S2CLOUDLESS_MODEL,
    cloud_probability,
    s2cloudless_mask,
    s2cloudless_version,
)
from .raster import upsample_bilinear
from .shadows import (
    MAX_SEARCH_SAMPLES,
    MIN_SEARCH_PIXELS,
    ShadowSearch,
    geometric_shadows,
    shadow_offsets,
    sun_angles,
)
from .step import CloudMaskStep
from .temporal import TEMPORAL_BAND, TEMPORAL_DEFERRED, temporal_cloud_test

__all__ = [
    "B10_FALLBACK_REFLECTANCE",
    "MASK_CLASSES",
    "MASK_CLEAR",
    "MASK_CLOUD",
    "MASK_NODATA",
    "MASK_SHADOW",
    "MAX_SEARCH_SAMPLES",
    "MIN_SEARCH_PIXELS",
    "NDSI_SNOW",
    "PROB_NODATA",
    "S2CLOUDLESS_BANDS",
    "S2CLOUDLESS_MODEL",
    "TEMPORAL_BAND",
    "TEMPORAL_DEFERRED",
    "THRESHOLD_LAYER_NODATA",
    "CloudMaskConfig",
    "CloudMaskStep",
    "L1CMode",
    "Method",
    "ShadowSearch",
    "Shadows",
    "cloud_probability",
    "geometric_shadows",
    "s2cloudless_mask",
    "s2cloudless_version",
    "shadow_offsets",
    "snow_mask",
    "sun_angles",
    "temporal_cloud_test",
    "threshold_layer_name",
    "upsample_bilinear",
]
