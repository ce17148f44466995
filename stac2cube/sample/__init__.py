"""A deterministic synthetic Sentinel-2 sample: STAC items, COGs and the truth behind them.

:func:`generate_sample` writes a small archive of L2A scenes and their L1C twins shaped like
Element84 Earth Search v1, with the truth that produced them (surface reflectance, cloud/shadow
truth, land cover, DEM); ``stac2cube demo``, the benchmarks, the examples and the tests use it.
The scene comes from a forward model, and the provider's products (the SCL) are derived from the
truth with documented errors, never with the rules the pipeline's steps test. The same spec gives
byte-identical outputs. What it models, the file layout, the modules and the sources:
``docs/sample.md``.

Beside the generator: :mod:`.scenes` reads a sample into step scenes, :mod:`.coreg_scenes` makes
misregistered scenes with a known shift, and :mod:`.real_pair`, :mod:`.eo_patch` and :mod:`.data`
read the shared real test data.
"""

from __future__ import annotations

from .atmosphere import AEROSOL_PATH, PATH_REFLECTANCE, TRANSMITTANCE
from .clouds import TRUTH_CLASSES
from .generate import generate_sample
from .landcover import ENDMEMBERS, LANDCOVER_CLASSES, SURFACE_TYPES
from .manifest import MANIFEST_NAME, load_sample
from .msi import BAND_NAMES, BANDS, NOISE_SIGMA
from .spec import Sample, SampleScene, SampleSpec
from .stac import L1C_COLLECTION, L2A_COLLECTION
from .terrain import SNOWLINE, VALLEY_ELEVATION

__all__ = [
    "AEROSOL_PATH",
    "BANDS",
    "BAND_NAMES",
    "ENDMEMBERS",
    "L1C_COLLECTION",
    "L2A_COLLECTION",
    "LANDCOVER_CLASSES",
    "MANIFEST_NAME",
    "NOISE_SIGMA",
    "PATH_REFLECTANCE",
    "SNOWLINE",
    "SURFACE_TYPES",
    "TRANSMITTANCE",
    "TRUTH_CLASSES",
    "VALLEY_ELEVATION",
    "Sample",
    "SampleScene",
    "SampleSpec",
    "generate_sample",
    "load_sample",
]
