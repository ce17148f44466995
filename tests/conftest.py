"""Shared fixtures: real shared STAC data, the generated sample, a real STAC API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stac2cube.demo import serve_sample
from stac2cube.sample import Sample, SampleSpec, generate_sample
from stac2cube.testing.data import require_shared_data
from stac2cube.testing.stac_api import RustacServer

PC_SITE2 = "stac/item-collections/planetary-computer/site2-2020_jun_jul-35MNM.geojson"
PC_COLLECTION = "stac/collections/planetary-computer/sentinel-2-l2a.collection.json"


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def pc_api(shared: Path) -> Iterator[RustacServer]:
    """rustac serve over 13 real Planetary Computer items (tile 35MNM, Jun-Jul 2020)."""
    with RustacServer([shared / PC_COLLECTION, shared / PC_SITE2]) as api:
        yield api


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The bundled sample (4 dates, L2A + L1C, clouds, shadows, a nodata wedge), made once."""
    return generate_sample(tmp_path_factory.mktemp("sample"), SampleSpec())


@pytest.fixture(scope="session")
def sample_api(sample: Sample) -> Iterator[RustacServer]:
    """A real STAC API (rustac serve, 127.0.0.1) over the sample's L2A and L1C items."""
    with serve_sample(sample) as api:
        yield api
