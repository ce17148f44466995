from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from stac2cube.io.atomic import TMP_MARK
from stac2cube.io.cog import file_checksum, write_cog

GBOX = GeoBox.from_bbox((500000, 5000000, 507680, 5005120), "EPSG:32633", resolution=10)


@pytest.mark.parametrize(
    ("dtype", "nodata"), [("int16", -32768), ("uint16", 0), ("uint8", 0), ("float32", np.nan)]
)
def test_cog_is_valid_with_overviews_nodata_and_scale(
    tmp_path: Path, dtype: str, nodata: float
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, GBOX.shape.yx).astype(dtype)
    data[:10, :10] = nodata
    out = write_cog(
        data, GBOX, tmp_path / "b.tif", nodata=nodata, scale=1e-4, offset=-0.1, blocksize=256
    )
    ok, errors, _ = cog_validate(str(out.path), quiet=True)
    assert ok, errors
    with rasterio.open(out.path) as src:
        assert src.overviews(1), "internal overviews expected"
        assert src.block_shapes[0] == (256, 256)
        assert src.scales == (1e-4,) and src.offsets == (-0.1,)
        assert src.crs.to_epsg() == 32633 and src.transform == GBOX.transform
        back = src.read(1)
    if np.isnan(nodata):
        assert np.isnan(src.nodata) and np.array_equal(np.isnan(back), np.isnan(data))
    else:
        assert src.nodata == nodata
    np.testing.assert_array_equal(back, data)
    assert out.size == out.path.stat().st_size
    assert out.checksum == file_checksum(out.path)[1] and out.checksum.startswith("1220")
    assert not list(tmp_path.glob(f"*{TMP_MARK}*")), "no temporary file may stay behind"


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not fit grid"):
        write_cog(np.zeros((3, 3), "int16"), GBOX, tmp_path / "x.tif", nodata=0)
    assert not (tmp_path / "x.tif").exists()
