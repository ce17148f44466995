"""The virtual views decode deflate COG tiles with libdeflate, told each tile's size, and get
the values virtual-tiff's own codec gives."""

from __future__ import annotations

import asyncio
import zlib

import numpy as np
import pytest
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import Int16
from zarr.registry import get_codec_class

from stac2cube.cube.codecs import SizedDeflateCodec, _inflate, register_codecs


def _spec(shape: tuple[int, ...]) -> ArraySpec:
    return ArraySpec(
        shape=shape,
        dtype=Int16(),
        fill_value=0,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )


def _tile(shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 3000, size=shape, dtype=np.int16).cumsum(axis=-1, dtype=np.int16)


def test_zarr_takes_the_sized_codec_for_imagecodecs_deflate() -> None:
    register_codecs()
    register_codecs()  # once is enough; twice changes nothing
    assert get_codec_class("imagecodecs_deflate") is SizedDeflateCodec


@pytest.mark.parametrize("compress", [zlib.compress, lambda b: zlib.compress(b, 9)])
def test_a_tile_decodes_to_the_same_bytes(compress: object) -> None:
    tile = _tile((1, 64, 48))
    data = compress(tile.tobytes())  # type: ignore[operator]
    codec = SizedDeflateCodec()
    prototype = default_buffer_prototype()
    buf = prototype.buffer.from_bytes(data)
    out = asyncio.run(codec._decode_single(buf, _spec(tile.shape)))
    assert out.to_bytes() == tile.tobytes()


def test_a_tile_larger_than_its_chunk_is_decoded_the_slow_way() -> None:
    tile = _tile((1, 64, 48))
    data = np.frombuffer(zlib.compress(tile.tobytes()), dtype=np.uint8)
    codec = SizedDeflateCodec()._codec
    assert _inflate(codec, data, tile.nbytes) == tile.tobytes()
    # told a size too small (not a tile stac2cube wrote): the codec's own decode, all of it
    assert _inflate(codec, data, tile.nbytes // 2) == tile.tobytes()
