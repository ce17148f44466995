"""What reading records about its sources."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox

from stac2cube.io.read import BandReader, href_without_credentials
from stac2cube.sample import Sample
from stac2cube.sample.scenes import sample_geobox
from stac2cube.testing.data import load_item_collection


def test_signed_hrefs_are_recorded_without_their_credentials() -> None:
    sas = (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WN/B04.tif"
        "?st=2026-12-01T10%3A00Z&se=2026-12-02T11%3A00Z&sp=rl&sv=2024-05-04&sr=c"
        "&skoid=abc&sktid=def&skt=x&ske=y&sks=b&skv=2024-05-04&sig=SECRET%3D"
    )
    assert href_without_credentials(sas) == (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WN/B04.tif"
    )
    s3 = "https://b.s3.amazonaws.com/B04.tif?X-Amz-Signature=abc&X-Amz-Credential=k&v=2"
    assert href_without_credentials(s3) == "https://b.s3.amazonaws.com/B04.tif?v=2"
    for plain in ("./B04.tif", "s3://bucket/B04.tif", "https://host/B04.tif?version=3"):
        assert href_without_credentials(plain) == plain


def _reads(reader: BandReader, gbox: GeoBox, copy: bool) -> np.ndarray:
    reader._copyable = copy  # the warp the copy stands for, on the same reader
    return reader.read(gbox).data


@pytest.mark.parametrize(
    ("band", "res"), [("B02", 10.0), ("SCL", 20.0), ("B01", 60.0), ("SCL", 10.0), ("SCL", 60.0)]
)
def test_an_aligned_read_copies_exactly_what_the_warp_gives(
    sample: Sample, band: str, res: float
) -> None:
    """On a grid of the source's own lattice (or, for classes, a lattice whose pixels divide
    the source's: SCL at 10 m), a read copies the source pixels instead of warping them: the
    same values, nodata and edges outside the source included. SCL at 60 m is warped."""
    item = load_item_collection(sample.l2a_items_path)[-1]  # has a nodata wedge
    full = sample_geobox(sample)  # the sources' lattices start at its corner
    k = round(res / 10.0)
    grid = GeoBox((full.shape.y // k, full.shape.x // k), full.affine * Affine.scale(k), full.crs)
    n = grid.shape.y
    windows = [
        (slice(0, n), slice(0, n)),  # the whole grid
        (slice(3, n // 2), slice(n // 3, n - 1)),  # inside
        (slice(-5, 7), slice(n - 4, n + 9)),  # over two edges
        (slice(n + 2, n + 6), slice(1, 5)),  # outside
    ]
    with BandReader(item, band, grid) as reader:
        if (band, res) == ("SCL", 60.0):  # nearest onto coarser pixels: the warp decides
            assert reader._aligned_window(grid) is None
            return
        assert reader._copyable
        for rows, cols in windows:
            gbox = GeoBox(
                (rows.stop - rows.start, cols.stop - cols.start),
                grid.affine * Affine.translation(cols.start, rows.start),
                grid.crs,
            )
            assert reader._aligned_window(gbox) is not None
            copied, warped = _reads(reader, gbox, True), _reads(reader, gbox, False)
            assert copied.dtype == warped.dtype
            np.testing.assert_array_equal(copied, warped)
        # the nodata wedge and the outside are nodata in both
        whole = _reads(reader, grid, True)
        bad = np.isnan(whole) if whole.dtype.kind == "f" else whole == 0
        assert 0 < bad.mean() < 1
        # half a pixel off the lattice: warped
        off = GeoBox(grid.shape, grid.affine * Affine.translation(0.5, 0.0), grid.crs)
        assert reader._aligned_window(off) is None
