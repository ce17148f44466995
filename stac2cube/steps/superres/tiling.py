"""Tiled inference: a model run over a scene of any size in overlapping tiles without seams.

The scene is mirrored by ``overlap / 2`` pixels at its edges and cut into tiles on a regular
grid (:class:`TileGrid`); in each overlap the outer quarter of each tile is dropped and the middle
half cross-faded, with weights that sum to exactly 1, so tiles are added straight into one
output buffer per band. Pure computation: the model comes in loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from .weights import LoadedModel

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of overlapping tiles along one axis of a scene of ``size`` pixels.

    The scene starts at ``lead`` on a canvas of ``count * step + overlap`` pixels; tile ``i``
    covers canvas ``[i * step, i * step + tile)``.
    """

    size: int
    tile: int
    overlap: int
    lead: int
    count: int

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def canvas(self) -> int:
        return self.count * self.step + self.overlap

    @classmethod
    def make(cls, size: int, tile: int, overlap: int, align: int = 1) -> TileGrid:
        """The grid for ``size`` pixels: ``overlap / 2`` of mirrored margin before the scene
        (rounded down to a multiple of ``align``), at least as much after it; a scene no larger
        than a tile is one tile, centred."""
        lead = (overlap // 2) // align * align
        if size <= tile < size + 2 * lead:  # one tile, with as much margin as fits
            lead = ((tile - size) // 2) // align * align
            return cls(size, tile, overlap, lead, 1)
        step = tile - overlap
        need = size + lead + overlap // 2
        count = max(1, math.ceil((need - overlap) / step))
        return cls(size, tile, overlap, lead, count)

    def weights(self, i: int, scale: int) -> F32:
        """Blending weights (length ``tile * scale``) of tile ``i``: 0 on the outer quarter of
        each overlap shared with a neighbour, a raised-cosine ramp over its middle half, 1
        elsewhere; the weights of neighbouring tiles sum to 1."""
        n = self.tile * scale
        w = np.ones(n, dtype=np.float32)
        ov = self.overlap * scale
        if ov == 0:
            return w
        q = ov // 4
        ramp_len = ov - 2 * q
        t = (np.arange(ramp_len, dtype=np.float64) + 0.5) / ramp_len
        ramp = (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)
        if i > 0:
            w[:q] = 0.0
            w[q : q + ramp_len] = ramp
        if i < self.count - 1:
            w[n - q :] = 0.0
            w[n - q - ramp_len : n - q] = ramp[::-1]
        return w

    def span(self, i: int, scale: int) -> tuple[slice, slice]:
        """(slice of the tile's output, slice of the scene's output) where tile ``i`` lands."""
        start = (i * self.step - self.lead) * scale
        lo = max(start, 0)
        hi = min(start + self.tile * scale, self.size * scale)
        return slice(lo - start, hi - start), slice(lo, hi)


def _pad_canvas(a: F32, gy: TileGrid, gx: TileGrid) -> F32:
    """``a`` (bands, y, x) mirrored onto the tile canvas."""
    pads = (
        (0, 0),
        (gy.lead, gy.canvas - gy.size - gy.lead),
        (gx.lead, gx.canvas - gx.size - gx.lead),
    )
    out: F32 = np.pad(a, pads, mode="symmetric")
    return out


def tile_bytes(m: LoadedModel, tile: int) -> int:
    """Rough working memory of one tile through the model (activations, FFTs, output)."""
    total = 0
    for c in m.definition.components:
        px_in = (tile * c.out_factor // max(int(c.params.get("upscale", 1)), 1)) ** 2
        px_out = (tile * c.out_factor) ** 2
        feats = int(c.params.get("feature_channels", c.params.get("embed_dim", 64)))
        cout = int(c.params.get("out_channels", 4))
        # ~8 live feature maps, the pixel-shuffle input, and the hard constraint's 2 complex
        # FFTs plus their shifts (x2 for complex) for the LR and SR planes
        total += 4 * (px_in * feats * 8 + px_out * cout * 12)
    return total


@dataclass(frozen=True)
class SRRun:
    """What :func:`super_resolve` computed: one array per output band and some facts."""

    bands: dict[str, F32]
    tiles: int
    batch_size: int
    seconds: float


def super_resolve(
    model: LoadedModel,
    data: F32,
    *,
    tile_size: int,
    overlap: int,
    batch_size: int,
    half: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SRRun:
    """Run ``model`` over ``data`` (``(bands, y, x)`` in the model's input order, no NaN) in
    overlapping tiles; returns one ``(y * s, x * s)`` float32 array per output band."""
    import torch

    d = model.definition
    s = d.scale
    _, h, w = data.shape
    gy = TileGrid.make(h, tile_size, overlap, d.alignment)
    gx = TileGrid.make(w, tile_size, overlap, d.alignment)
    canvas = _pad_canvas(data, gy, gx)
    outs = {b: np.zeros((h * s, w * s), dtype=np.float32) for b in d.output_bands}
    channel = {b: d.module_bands.index(b) for b in d.output_bands}
    tiles = [(i, j) for i in range(gy.count) for j in range(gx.count)]
    wy = [gy.weights(i, s) for i in range(gy.count)]
    wx = [gx.weights(j, s) for j in range(gx.count)]
    dev = torch.device(model.device)
    use_half = half and dev.type == "cuda"
    t0 = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for k in range(0, len(tiles), batch_size):
            batch = tiles[k : k + batch_size]
            x = np.stack(
                [
                    canvas[:, i * gy.step : i * gy.step + tile_size,
                           j * gx.step : j * gx.step + tile_size]
                    for i, j in batch
                ]
            )  # fmt: skip
            xt = torch.from_numpy(x).to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_half):
                yt = model.module(xt)
            y = yt.float().cpu().numpy()
            for n, (i, j) in enumerate(batch):
                ty, sy = gy.span(i, s)
                tx, sx = gx.span(j, s)
                wgt = wy[i][ty, None] * wx[j][None, tx]
                for band, b in channel.items():
                    outs[band][sy, sx] += y[n, b, ty, tx] * wgt
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))
    return SRRun(outs, len(tiles), batch_size, time.perf_counter() - t0)


def super_resolve_array(
    model: LoadedModel,
    bands: Sequence[F32],
    *,
    tile_size: int = 128,
    overlap: int = 32,
    batch_size: int = 8,
) -> list[F32]:
    """Convenience: run ``model`` over NaN-free input planes (model order); list of outputs."""
    run = super_resolve(
        model, np.stack(bands).astype(np.float32), tile_size=tile_size, overlap=overlap,
        batch_size=batch_size,
    )  # fmt: skip
    return [run.bands[b] for b in model.definition.output_bands]


__all__ = ["SRRun", "TileGrid", "super_resolve", "super_resolve_array", "tile_bytes"]
