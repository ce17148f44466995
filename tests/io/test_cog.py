from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.io import MemoryFile
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from stac2cube.catalog import CatalogStore
from stac2cube.io.atomic import TMP_MARK
from stac2cube.io.cog import CogWriter, file_checksum, write_cog

GBOX = GeoBox.from_bbox((500000, 5000000, 507680, 5005120), "EPSG:32633", resolution=10)
# 1300 x 1100 px: with 256-px tiles, three overview levels and partial tiles on the right and bottom
WIDE = GeoBox.from_bbox((500000, 5000000, 513000, 5011000), "EPSG:32633", resolution=10)


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


def _scene(dtype: str, nodata: float | None) -> np.ndarray:
    """A smooth field with noise (so that overviews average distinct values), nodata in a corner."""
    y, x = np.mgrid[0 : WIDE.shape.y, 0 : WIDE.shape.x]
    noise = np.random.default_rng(1).normal(0, 30, WIDE.shape.yx)
    data: np.ndarray = (1000 + 500 * np.sin(x / 97) * np.cos(y / 61) + noise).astype(dtype)
    if nodata is not None:
        data[:300, :200] = nodata
    return data


def _rio_cogeo(data: np.ndarray, path: Path, nodata: float | None, resampling: str) -> Path:
    """The reference: rio-cogeo's cog_translate of an in-memory GeoTIFF (write_cog before
    CogWriter)."""
    profile = cog_profiles.get("deflate")  # type: ignore[no-untyped-call]
    profile.update(blockxsize=256, blockysize=256, predictor=2 if data.dtype.kind in "iu" else 3)
    height, width = data.shape
    crs = str(WIDE.crs)
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            count=1,
            height=height,
            width=width,
            dtype=data.dtype.name,
            crs=crs,
            transform=WIDE.transform,
            nodata=nodata,
        ) as ds:
            ds.write(data, 1)
            ds.scales, ds.offsets = (1e-4,), (-0.1,)
            ds.set_band_description(1, "B04")
        with mem.open() as ds:
            cog_translate(
                ds,
                str(path),
                profile,
                nodata=nodata,
                overview_resampling=resampling,  # type: ignore[arg-type]
                in_memory=True,
                quiet=True,
                config={"GDAL_TIFF_OVR_BLOCKSIZE": "256"},
            )
    return path


def _assert_same_cog(a: Path, b: Path, overviews: int = 3) -> None:
    """Same pixels at every level, same grid, nodata, scale, offset, description and tags."""
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert {**ra.profile, "nodata": str(ra.nodata)} == {**rb.profile, "nodata": str(rb.nodata)}
        assert (ra.scales, ra.offsets, ra.descriptions) == (rb.scales, rb.offsets, rb.descriptions)
        assert ra.tags() == rb.tags()
        assert ra.tags(ns="IMAGE_STRUCTURE") == rb.tags(ns="IMAGE_STRUCTURE")
        assert ra.overviews(1) == rb.overviews(1) == [2**i for i in range(1, overviews + 1)]
        np.testing.assert_array_equal(ra.read(1), rb.read(1))
    for level in range(overviews):
        with (
            rasterio.open(a, overview_level=level) as ra,
            rasterio.open(b, overview_level=level) as rb,
        ):
            assert ra.shape == rb.shape
            np.testing.assert_array_equal(ra.read(1), rb.read(1))


def _blocks(block: tuple[int, int]) -> list[Window]:
    """The windows of ``block``-sized blocks over WIDE, the last row and column partial."""
    (bh, bw), (h, w) = block, WIDE.shape.yx
    return [
        Window(c, r, min(bw, w - c), min(bh, h - r))
        for r in range(0, h, bh)
        for c in range(0, w, bw)
    ]


@pytest.mark.parametrize(
    ("dtype", "nodata", "resampling", "block"),
    [
        ("int16", -32768, "average", (256, 256)),  # the COG's tiles
        ("int16", -32768, "average", (300, 700)),  # across tiles
        ("float32", np.nan, "average", (1100, 97)),  # column strips
        ("uint8", None, "nearest", (300, 700)),
        ("float32", np.nan, "average", (1100, 1300)),  # one block
    ],
)
def test_a_cog_written_by_blocks_is_the_cog_of_the_whole_array(
    tmp_path: Path, dtype: str, nodata: float | None, resampling: str, block: tuple[int, int]
) -> None:
    data = _scene(dtype, nodata)
    kw: dict[str, Any] = {"nodata": nodata, "scale": 1e-4, "offset": -0.1, "blocksize": 256}
    kw |= {"overview_resampling": resampling, "description": "B04"}
    whole = write_cog(data, WIDE, tmp_path / "whole.tif", **kw)
    with CogWriter(tmp_path / "blocks.tif", WIDE, dtype, **kw) as writer:
        for win in _blocks(block):
            writer.write(data[win.toslices()], win)
        blocks = writer.close()
    assert blocks.path == tmp_path / "blocks.tif" and blocks.size == blocks.path.stat().st_size
    assert cog_validate(str(blocks.path), quiet=True) == (True, [], [])
    _assert_same_cog(blocks.path, whole.path)
    reference = _rio_cogeo(data, tmp_path / "ref.tif", nodata, resampling)
    _assert_same_cog(blocks.path, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.tif", "ref.tif", "whole.tif"]


def test_blocks_may_come_from_several_threads_in_any_order(tmp_path: Path) -> None:
    data = _scene("int16", -32768)
    windows = _blocks((300, 700))
    np.random.default_rng(2).shuffle(windows)  # type: ignore[arg-type]
    with CogWriter(tmp_path / "b.tif", WIDE, "int16", nodata=-32768, blocksize=256) as writer:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda win: writer.write(data[win.toslices()], win), windows))
        out = writer.close()
    _assert_same_cog(
        out.path, write_cog(data, WIDE, tmp_path / "w.tif", nodata=-32768, blocksize=256).path
    )


@pytest.mark.parametrize(
    ("dtype", "nodata"), [("int16", -9999), ("float32", np.nan), ("uint16", None)]
)
def test_pixels_never_written_are_nodata(tmp_path: Path, dtype: str, nodata: float | None) -> None:
    with CogWriter(tmp_path / "b.tif", WIDE, dtype, nodata=nodata, blocksize=256) as writer:
        writer.write(np.full((100, 300), 7, dtype), Window(400, 250, 300, 100))  # across 4 tiles
        writer.write(np.full((2, 2), 9, "uint8"), Window(1298, 1098, 2, 2))  # safe cast, corner
        out = writer.close()
    expected = np.full(WIDE.shape.yx, 0 if nodata is None else nodata, dtype)
    expected[250:350, 400:700] = 7
    expected[-2:, -2:] = 9
    with rasterio.open(out.path) as src:
        np.testing.assert_array_equal(src.read(1), expected)
        assert str(src.nodata) == str(None if nodata is None else float(nodata))
    assert cog_validate(str(out.path), quiet=True) == (True, [], [])


def test_an_exception_inside_the_with_block_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "scene" / "B04.tif"
    with (
        pytest.raises(RuntimeError, match="step failed"),
        CogWriter(path, WIDE, "int16", nodata=0) as writer,
    ):
        writer.write(np.ones((10, 10), "int16"), Window(0, 0, 10, 10))
        assert any(TMP_MARK in p.name for p in path.parent.iterdir())
        raise RuntimeError("step failed")
    assert list(path.parent.iterdir()) == []
    with pytest.raises(ValueError, match="closed or aborted"):
        writer.write(np.ones((10, 10), "int16"), Window(0, 0, 10, 10))


def test_bad_blocks_are_refused(tmp_path: Path) -> None:
    with CogWriter(tmp_path / "b.tif", WIDE, "int16", nodata=0) as writer:
        one = np.ones((10, 10), "int16")
        with pytest.raises(ValueError, match="outside the grid"):
            writer.write(one, Window(1295, 0, 10, 10))
        with pytest.raises(ValueError, match="does not fit window"):
            writer.write(one, Window(0, 0, 10, 20))
        with pytest.raises(ValueError, match="whole pixels"):
            writer.write(one, Window(0.5, 0, 10, 10))
        with pytest.raises(ValueError, match="cast it first"):
            writer.write(one.astype("float32"), Window(0, 0, 10, 10))
        writer.close()
        with pytest.raises(ValueError, match="closed or aborted"):
            writer.close()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from odc.geo.geobox import GeoBox
    from rasterio.windows import Window
    import stac2cube.io.cog as cog
    gbox = GeoBox.from_bbox((500000, 5000000, 513000, 5011000), "EPSG:32633", resolution=10)
    def killed(*a):
        os.kill(os.getpid(), signal.SIGKILL)
    if sys.argv[2] == "close":  # between the COG's copy and its rename
        cog.os.replace = killed
    with cog.CogWriter(Path(sys.argv[1]), gbox, "int16", nodata=0) as w:
        w.write(np.ones((500, 500), "int16"), Window(0, 0, 500, 500))
        if sys.argv[2] == "write":
            killed()
        w.close()
""")


@pytest.mark.parametrize("when", ["write", "close"])
def test_what_a_killed_writer_leaves_is_removed_by_the_catalogs_recovery(
    tmp_path: Path, when: str
) -> None:
    store = CatalogStore(tmp_path, "ard")
    store.create()
    path = store.item_dir("a") / "B04.tif"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path), when], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(path.parent.iterdir())
    assert len(left) == (1 if when == "write" else 2)
    assert all(TMP_MARK in p.name for p in left) and not path.exists()
    assert sorted(store.recover()) == left
    assert list(path.parent.iterdir()) == []


PEAK = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import numpy as np
    from odc.geo.geobox import GeoBox
    from rasterio.windows import Window
    from stac2cube.io.cog import CogWriter
    n, b = 8000, 1024
    gbox = GeoBox.from_bbox((0, 0, 10 * n, 10 * n), "EPSG:32633", resolution=10)
    ramp = np.arange(b, dtype="int16")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with CogWriter(Path(sys.argv[1]), gbox, "int16", nodata=-32768, threads=2) as w:
        for r in range(0, n, b):
            for c in range(0, n, b):
                h, wd = min(b, n - r), min(b, n - c)
                w.write(np.add.outer(ramp[:h], ramp[:wd] + (r + c) % 999), Window(c, r, wd, h))
        w.close()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
""")


def test_writing_by_blocks_does_not_hold_the_band(tmp_path: Path) -> None:
    """An 8000 x 8000 int16 band (122 MiB) written in 1024-px blocks: the process grows by far
    less than the band (GDAL's bounded cache, one block, a strip of tiles)."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, str(tmp_path / "b.tif")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    grown, band = int(proc.stdout), 8000 * 8000 * 2
    assert grown < 0.6 * band, f"grew by {grown / 2**20:.0f} MiB for a {band / 2**20:.0f} MiB band"
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.shape == (8000, 8000) and src.overviews(1) == [2, 4, 8, 16]
        v = 2 * (7000 - 6144) + (6144 + 6144) % 999  # in the block at row 6144, column 6144
        assert src.read(1, window=Window(7000, 7000, 2, 2)).tolist() == [[v, v + 1], [v + 1, v + 2]]
