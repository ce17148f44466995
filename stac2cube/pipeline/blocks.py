"""A scene without steps, streamed block by block: each band is read window by window of the grid
it is written on, harmonised, encoded and written with the streaming COG writer, so a worker holds
one block of one band at a time whatever the AOI. The pixels and the item are those of the scene
read whole (docs/catalog.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from ..bands import S2_BANDS
from ..catalog import CatalogStore
from ..catalog.item import (
    AssetEncoding,
    WrittenAsset,
    build_item,
    layer_info,
    scene_provenance,
)
from ..config import Config
from ..grid import band_geobox
from ..io.cog import CogFile, CogWriter
from ..io.read import BandRead, BandReader
from ..io.threads import worker_threads
from ..steps.base import Scene
from .read import (
    check_overlap,
    counts_for_validity,
    harmonise_record,
    has_data,
    input_record,
    radiometry_override,
    source_env,
)

READ_CACHE_MB = 64
"""GDAL's block cache while a band is read in blocks. By default (5 % of the RAM) it would keep
every source tile read, up to the whole band: 240 MB for a 10 m band of a full tile."""


def in_blocks(config: Config) -> bool:
    """Whether a scene without steps is streamed in blocks (``run.block_size``), or must be
    because its bands have grids of their own (``output.native_resolution``)."""
    return config.run.block_size > 0 or config.output.native_resolution


def block_windows(shape: tuple[int, int], size: int) -> Iterator[Window]:
    """The windows of a grid of ``shape`` (rows, columns) in blocks of ``size`` px square, row by
    row; those on the last row and column are cut at the grid's edge. ``size`` 0: one block."""
    height, width = shape
    size = size or max(height, width)
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


class ValidPixels:
    """Which pixels of the target grid have data in every band that counts
    (:func:`~stac2cube.pipeline.read.counts_for_validity`), a bit each (15 MB for a 10980 px
    tile), filled block by block and band by band."""

    def __init__(self, shape: tuple[int, int]) -> None:
        height, width = shape
        row = np.packbits(np.ones((1, width), dtype=bool), axis=1)  # padding bits are 0
        self._bits = np.repeat(row, height, axis=0)

    def add(self, window: Window, mask: np.ndarray, factor: int = 1) -> None:
        """Keep only the pixels where ``mask`` (of ``window`` on a grid whose pixels are
        ``factor`` × ``factor`` target pixels) is True. Columns start on a multiple of 8."""
        row0, col0 = int(window.row_off) * factor, int(window.col_off) * factor
        if col0 % 8:
            raise ValueError(f"window {window} does not start on a byte of the mask")
        step = max(1, 256 // factor)
        for i in range(0, mask.shape[0], step):
            packed = np.packbits(np.repeat(mask[i : i + step], factor, axis=1), axis=1)
            packed = np.repeat(packed, factor, axis=0)
            r = row0 + i * factor
            self._bits[r : r + packed.shape[0], col0 // 8 : col0 // 8 + packed.shape[1]] &= packed

    def count(self) -> int:
        """How many pixels are valid."""
        return int(np.bitwise_count(self._bits).sum(dtype=np.int64))


def write_scene_in_blocks(
    item: pystac.Item,
    config: Config,
    geobox: GeoBox,
    store: CatalogStore,
    *,
    started: float,
    at: Callable[[str], None],
) -> dict[str, Any]:
    """Read, harmonise and write every configured band of ``item`` block by block into its
    staging directory and return the output item's JSON: the same pixels and item as
    :func:`~stac2cube.pipeline.read.read_scene` then
    :func:`~stac2cube.catalog.item.write_scene` give without steps. ``at`` is told the stage
    (``read``, ``write``). On any error the staging directory is removed; a scene without a
    valid pixel raises :class:`~stac2cube.errors.NoOverlapError` as when read whole, as soon
    as the bands written so far leave none."""
    t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=time.perf_counter() - started)
    out = config.output
    shell = Scene(item_id=item.id, geobox=geobox, bands={}, source_properties=item.properties)
    override = radiometry_override(item, config)
    valid = ValidPixels(geobox.shape.yx)
    reads: dict[str, BandRead] = {}
    written: dict[str, WrittenAsset] = {}
    item_dir = store.new_staging_dir(item.id)  # swapped into place by store.add_item
    try:
        with source_env(GDAL_CACHEMAX=READ_CACHE_MB):
            for band in config.bands:
                at("read")
                gbox = band_geobox(geobox, band, native=out.native_resolution)
                factor = round(gbox.resolution.x / geobox.resolution.x)
                enc = _encoding(shell, band, config)
                with BandReader(item, band, gbox, override=override) as reader:
                    reads[band], cog = _stream_band(
                        reader,
                        gbox,
                        enc,
                        item_dir / f"{band}.tif",
                        config,
                        valid if counts_for_validity(band, config.bands) else None,
                        factor,
                        at,
                    )
                written[band] = enc.written(cog, gbox)
                if counts_for_validity(band, config.bands):
                    at("read")
                    n_valid = valid.count()  # only falls: no need to write the other bands
                    check_overlap(item, n_valid)
    except BaseException:
        shutil.rmtree(item_dir, ignore_errors=True)
        raise
    inputs = tuple(input_record(b, r, item) for b, r in reads.items())
    height, width = geobox.shape.yx
    record = harmonise_record(item, geobox, reads, n_valid / (height * width))
    prov = scene_provenance(item, inputs, (record,), config, t_start)
    # the assets in the order of the scene read whole: reflectance bands, then class layers
    order = sorted(written, key=lambda b: S2_BANDS[b].kind == "classification")
    return build_item(shell, item, {b: written[b] for b in order}, prov)


def _encoding(shell: Scene, band: str, config: Config) -> AssetEncoding:
    if S2_BANDS[band].kind != "classification":
        return AssetEncoding.reflectance(config.output, band, band)
    info = layer_info(shell, band)
    return AssetEncoding.classes(info, "uint8", info.description or band)


def _stream_band(
    reader: BandReader,
    gbox: GeoBox,
    enc: AssetEncoding,
    path: Path,
    config: Config,
    valid: ValidPixels | None,
    factor: int,
    at: Callable[[str], None],
) -> tuple[BandRead, CogFile]:
    """One band, block by block of ``gbox``, into the COG at ``path``; its first read without
    pixels (every block of a band is harmonised alike: checked) and the COG."""
    first: BandRead | None = None
    options = enc.cog_options(config.output, worker_threads())
    with CogWriter(path, gbox, enc.dtype, **options) as writer:
        for window in block_windows(gbox.shape.yx, config.run.block_size):
            at("read")
            read = reader.read(gbox[window.toslices()])
            if first is None:
                first = dataclasses.replace(read, data=np.empty((0, 0), read.data.dtype))
            elif _harmonisation(read) != _harmonisation(first):
                raise RuntimeError(
                    f"{reader.item.id}: band {reader.band} was harmonised differently in block "
                    f"{window} ({_harmonisation(read)}) than in the first "
                    f"({_harmonisation(first)})"
                )
            if valid is not None:
                valid.add(window, has_data(read), factor)
            at("write")
            writer.write(enc.encode(read.data), window)
        cog = writer.close()
    assert first is not None
    return first, cog


def _harmonisation(read: BandRead) -> tuple[Any, ...]:
    """What the harmonise record says of a read (its pixels left out)."""
    return (read.asset_key, read.href, read.radiometry, read.resampling, read.source_resolution)
