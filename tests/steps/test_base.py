"""The step protocol's values: a result says whether its scene is written, and why not."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube.provenance import StepRecord
from stac2cube.steps.base import UNSPECIFIED_SKIP, Scene, Skip, StepResult

SCENE = Scene(
    "s",
    GeoBox((2, 2), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), "EPSG:32633"),
    {"B04": np.zeros((2, 2), np.float32)},
)
RECORD = StepRecord("cloudmask", "1.0.0")


def test_a_result_is_written_unless_skipped() -> None:
    result = StepResult(SCENE, RECORD)
    assert result.write and result.skip is None


@pytest.mark.parametrize("write", [True, False])
def test_skip_means_not_written(write: bool) -> None:
    skip = Skip("too-cloudy", "92 % cloud over the AOI, more than max_cloud_fraction 0.8")
    result = StepResult(SCENE, RECORD, write=write, skip=skip)
    assert not result.write and result.skip == skip
    assert pickle.loads(pickle.dumps(result)).skip == skip


def test_write_false_without_a_reason_gets_one() -> None:
    result = StepResult(SCENE, RECORD, write=False)
    assert result.skip is not None and result.skip.code == UNSPECIFIED_SKIP
    assert "cloudmask" in result.skip.message
