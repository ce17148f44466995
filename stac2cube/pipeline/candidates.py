"""Reading a candidate scene of a catalog reference (:mod:`stac2cube.references.build`): the
reference's band on the target grid and the pixels a reference must not use, clouds masked by
the run's cloud step without its multi-temporal test (which needs a reference itself), or by
SCL without the step.

A scene larger than one block of ``run.block_size`` is streamed as a scene with steps is
(:mod:`.blocksteps`): the cloud step's scene-wide analysis from coarse grids, then the bands
block by block, so a candidate costs its one band and mask (600 MB for a 10980 px tile) instead
of every configured band of the whole scene and the step's full-resolution layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import pystac
from odc.geo.geobox import GeoBox

from ..config import Config
from ..grid import load_aoi, target_geobox
from ..references.build import CandidateReader
from ..steps.base import BlockStep, Scene, Step
from .blocks import block_windows
from .blocksteps import open_item_source, release_freed_memory
from .read import (
    band_has_data,
    check_overlap,
    counts_for_validity,
    read_aux,
    read_scene,
)
from .steps import active_steps

BAD_PIXEL_LAYERS = ("CLOUD_MASK", "SCL")
"""The class layers that say which pixels of a candidate a reference must not use, the first
a candidate has deciding (:func:`stac2cube.references.build.bad_pixels`): a candidate keeps
only that one."""


def reference_reader(
    config: Config, twins: Mapping[str, pystac.Item], band: str
) -> CandidateReader:
    """How a candidate scene of a catalog reference of ``band`` is read: a :class:`Scene` with
    ``band`` harmonised on the target grid and the class layer that decides its bad pixels
    (:data:`BAD_PIXEL_LAYERS`: the cloud step's mask, else SCL)."""
    geobox = target_geobox(load_aoi(config.aoi, config.base_dir), config.grid)
    cloud_steps = [
        (s, dataclasses.replace(c, temporal_threshold=None))
        for s, c in active_steps(config)
        if s.name == "cloudmask"
    ]
    for step, step_cfg in cloud_steps:
        step.prepare(step_cfg)
    streamed = candidates_in_blocks(config, cloud_steps, geobox.shape.yx)

    def read(item: pystac.Item) -> Scene:
        twin = twins.get(item.id)
        if streamed:
            return read_candidate_in_blocks(item, twin, config, geobox, cloud_steps, band)
        scene, _, _ = read_scene(item, config, geobox)
        if cloud_steps:
            scene, _ = read_aux(item, twin, scene, cloud_steps, config)
            for step, step_cfg in cloud_steps:
                scene = step.run(scene, step_cfg).scene
        return _kept(scene, band)

    return read


def candidates_in_blocks(
    config: Config, steps: Sequence[tuple[Step[Any], Any]], shape: tuple[int, int]
) -> bool:
    """Whether candidates of a grid of ``shape`` are streamed in blocks: the grid is larger than
    one block of ``run.block_size`` and the cloud step (if any) runs this configuration in
    blocks. Unlike a scene's own bands, a reference is always on the target grid, so
    ``output.native_resolution`` does not matter."""
    size = config.run.block_size
    if size <= 0 or max(shape) <= size:
        return False
    return all(isinstance(s, BlockStep) and s.in_blocks(c) for s, c in steps)


def read_candidate_in_blocks(
    item: pystac.Item,
    twin: pystac.Item | None,
    config: Config,
    geobox: GeoBox,
    steps: Sequence[tuple[Step[Any], Any]],
    band: str,
) -> Scene:
    """:func:`reference_reader`'s scene of ``item``, streamed: the steps planned over an
    :class:`~.blocksteps.ItemSource`, then every configured band read block by block (each
    block grown by the plans' halos), the plans applied, and ``band`` and the kept class
    layer copied into whole-grid arrays. Raises
    :class:`~stac2cube.errors.NoOverlapError` for a scene without a valid pixel, as
    :func:`~.read.read_scene` does."""
    if band not in config.bands:
        return Scene(item_id=item.id, geobox=geobox, bands={}, source_properties={})
    shape = geobox.shape.yx
    data = np.full(shape, np.nan, dtype=np.float32)
    mask: tuple[str, np.ndarray] | None = None
    n_valid = 0
    with ExitStack() as stack:
        source = open_item_source(stack, item, twin, config, geobox)
        for step, step_cfg in steps:
            assert isinstance(step, BlockStep)
            source = source.then(step.plan(source, step_cfg))
        release_freed_memory()
        for window in block_windows(shape, config.run.block_size):
            block = source.block(window)
            rows, cols = window.toslices()
            data[rows, cols] = block.bands[band]
            name = next((k for k in BAD_PIXEL_LAYERS if k in block.classes), None)
            if name is not None:
                if mask is None:
                    mask = name, np.zeros(shape, dtype=block.classes[name].dtype)
                mask[1][rows, cols] = block.classes[name]
            n_valid += int(_valid(block, config.bands).sum())
    check_overlap(item, n_valid)
    return Scene(
        item_id=item.id,
        geobox=geobox,
        bands={band: data},
        classes=dict([mask] if mask is not None else []),
        source_properties=dict(item.properties),
    )


def _valid(block: Scene, bands: Sequence[str]) -> np.ndarray:
    """Where every band of :func:`~.read.counts_for_validity` has data in ``block``, as
    :func:`~.read.valid_pixels` says of the reads."""
    layers = {**block.bands, **block.classes}
    masks = [band_has_data(b, layers[b]) for b in bands if counts_for_validity(b, bands)]
    out: np.ndarray = np.logical_and.reduce(masks)
    return out


def _kept(scene: Scene, band: str) -> Scene:
    """``scene`` with only ``band`` and the first class layer of :data:`BAD_PIXEL_LAYERS`."""
    name = next((k for k in BAD_PIXEL_LAYERS if k in scene.classes), None)
    return scene.replace(
        bands={b: a for b, a in scene.bands.items() if b == band},
        classes={name: scene.classes[name]} if name is not None else {},
        aux={},
    )
