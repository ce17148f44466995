"""A scene with steps, streamed block by block: each step that can (:class:`~stac2cube.steps.base.
BlockStep`) analyses the scene through an :class:`ItemSource` (coarse grids and windows, never
the whole scene at full resolution) and returns a plan; the scene is then read block by block,
each block grown by the plans' halos, harmonised, run through the plans, cut back and written
into one streaming COG per layer. A worker holds a few blocks of every layer whatever the AOI
(docs/architecture.md, "Steps in blocks")."""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import functools
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
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
    write_sidecars,
)
from ..config import Config
from ..grid import layer_geobox, on_band_grid
from ..io.cog import CogWriter
from ..io.read import BandRead, BandReader
from ..io.threads import map_layers, scene_threads, worker_threads
from ..provenance import InputRecord, StepRecord
from ..steps.base import AuxLayer, AuxRequest, BlockStep, Scene, Step, StepPlan, StepResult
from .blocks import READ_CACHE_MB, block_windows
from .read import (
    aux_geobox,
    check_overlap,
    counts_for_validity,
    harmonise_record,
    has_data,
    input_record,
    native_reads,
    radiometry_override,
    read_aux_layer,
    scene_from_reads,
    source_env,
    valid_pixels,
)
from .steps import tell_cloud_plan_coregistered

log = logging.getLogger(__name__)

COARSE_CHECK_FACTOR = 16
"""Before any step analyses a scene, its first reflectance band is read on a grid this many
times coarser: a scene without a valid pixel fails at once (as when read whole), before its
steps read anything."""


def steps_in_blocks(
    config: Config, steps: Sequence[tuple[Step[Any], Any]], shape: tuple[int, int]
) -> bool:
    """Whether a scene of ``shape`` (rows, columns) with ``steps`` is streamed in blocks: it is
    larger than one block of ``run.block_size`` and every step runs this configuration in
    blocks. A scene that fits in one block is held whole:
    its steps then see all of it at full resolution."""
    size = config.run.block_size
    if size <= 0 or max(shape) <= size:
        return False
    return all(isinstance(s, BlockStep) and s.in_blocks(c) for s, c in steps)


def grown(window: Window, halo: int, shape: tuple[int, int]) -> Window:
    """``window`` grown by ``halo`` px on each side, clipped to a grid of ``shape``."""
    h, w = shape
    out = Window(
        window.col_off - halo,
        window.row_off - halo,
        window.width + 2 * halo,
        window.height + 2 * halo,
    )
    return out.intersection(Window(0, 0, w, h))


def cut(block: Scene, window: Window, outer: Window) -> Scene:
    """The part of ``block`` (on ``outer``) over ``window``; its ``aux`` layers stay whole, on
    their own grids (a plan's :meth:`~stac2cube.steps.base.StepPlan.tally` cuts what it left
    there)."""
    sl = cut_slices(window, outer)
    return block.replace(
        geobox=block.geobox[sl],
        bands={k: v[sl] for k, v in block.bands.items()},
        classes={k: v[sl] for k, v in block.classes.items()},
    )


class ItemSource:
    """A :class:`~stac2cube.steps.base.SceneSource` over a source item: its configured bands
    read and harmonised window by window from readers opened once (:class:`BandReader`), the
    plans of earlier steps applied; auxiliary inputs read as the scene read whole reads them
    (:func:`~stac2cube.pipeline.read.read_aux_layer`), on any grid."""

    def __init__(
        self,
        item: pystac.Item,
        twin: pystac.Item | None,
        config: Config,
        geobox: GeoBox,
        readers: Mapping[str, BandReader],
        plans: Sequence[StepPlan] = (),
    ) -> None:
        self.item, self.twin, self.config = item, twin, config
        self.item_id = item.id
        self.geobox = geobox
        self.band_names = tuple(config.bands)
        self.source_properties: Mapping[str, Any] = dict(item.properties)
        self.missing_aux: dict[str, str] = {}
        self.inputs: dict[str, InputRecord] = {}
        """What :meth:`aux` read, by input name: once each, however many reads it took."""
        self._readers = readers
        self.plans = list(plans)
        self.threads = scene_threads()
        """Threads the bands of a window are read in (:func:`~stac2cube.io.threads.map_layers`)."""

    def then(self, plan: StepPlan) -> ItemSource:
        """This source with ``plan`` applied after the others (the next step's view)."""
        nxt = ItemSource(
            self.item, self.twin, self.config, self.geobox, self._readers, [*self.plans, plan]
        )
        nxt.missing_aux, nxt.inputs = self.missing_aux, self.inputs
        return nxt

    def read(self, window: Window) -> tuple[Scene, dict[str, BandRead]]:
        """The configured bands over ``window``, harmonised, no step applied, and their reads."""
        gbox = self.geobox[window.toslices()]
        got = map_layers(lambda r: r.read(gbox), self._readers.values(), self.threads)
        reads = dict(zip(self._readers, got, strict=True))
        return scene_from_reads(self.item, gbox, reads), reads

    def with_block_aux(self, block: Scene, plan: StepPlan) -> Scene:
        """``block`` with what ``plan`` reads per block (``block_aux``) on its grid."""
        if not plan.block_aux:
            return block
        aux = dict(block.aux)
        for name, req in plan.block_aux.items():
            got = self.aux(name, req, block.geobox)
            if got is not None:
                aux[name] = got
        return block.replace(aux=aux, missing_aux=dict(self.missing_aux))

    def block(self, window: Window) -> Scene:
        """Every configured band over ``window`` with :attr:`plans` applied (on the window
        grown by their halos, cut back)."""
        shape = self.geobox.shape.yx
        window = window.intersection(Window(0, 0, shape[1], shape[0]))
        outer = grown(window, sum(p.halo for p in self.plans), shape)
        scene, _ = self.read(outer)
        for plan in self.plans:
            scene = plan.apply(self.with_block_aux(scene, plan))
        for plan in self.plans:
            scene = plan.apply_late(scene)
        return cut(scene, window, outer)

    def aux(self, name: str, request: AuxRequest, geobox: GeoBox | None = None) -> AuxLayer | None:
        """``request`` on ``geobox`` (None: the whole scene on a grid of its resolution)."""
        gbox = geobox if geobox is not None else aux_geobox(self.geobox, request)
        layer, why, got = read_aux_layer(self.item, self.twin, name, request, gbox, self.config)
        if layer is None:
            self.missing_aux[name] = why
        for rec in got:
            self.inputs.setdefault(rec.band, rec)
        return layer


class _Writers:
    """One streaming COG per layer of the scene, opened when its first block arrives, on the
    grid the layer is written on (:func:`~stac2cube.grid.on_band_grid`: a band's native grid
    with ``output.native_resolution``); the layers of a block are written in
    :func:`scene_threads` threads."""

    def __init__(self, stack: ExitStack, item_dir: Any, geobox: GeoBox, config: Config) -> None:
        self._stack, self._dir, self._gbox, self._config = stack, item_dir, geobox, config
        self.writers: dict[str, tuple[CogWriter, AssetEncoding]] = {}
        self.threads = scene_threads()

    def write(
        self,
        layers: Mapping[str, tuple[np.ndarray, Callable[[], AssetEncoding]]],
        window: Window,
    ) -> None:
        """Each layer's ``(pixels, encoding)`` over ``window`` of the target grid into its COG
        (a band on a coarser grid: over the window's pixels of that grid, whose edges
        ``run.block_size`` makes fall on it)."""
        native = self._config.output.native_resolution
        for key, (_, enc) in layers.items():
            if key not in self.writers:
                e = enc()
                gbox = layer_geobox(self._gbox, key, native=native)
                options = e.cog_options(self._config.output, worker_threads())
                w = CogWriter(self._dir / f"{key}.tif", gbox, e.dtype, **options)
                self.writers[key] = (self._stack.enter_context(w), e)

        def write(key: str) -> None:
            writer, e = self.writers[key]
            block = self._gbox[window.toslices()]
            gbox, data = on_band_grid(block, key, layers[key][0], native=native)
            factor = round(float(gbox.resolution.x) / block.resolution.x)
            own = Window(
                window.col_off // factor,
                window.row_off // factor,
                window.width // factor,
                window.height // factor,
            )
            writer.write(e.encode(data), own)

        map_layers(write, layers, self.threads)

    def close(self) -> dict[str, WrittenAsset]:
        """Every COG laid out, one after the other: each already compresses in GDAL's threads,
        and two at once took longer than one after the other (88 s against 78 s for the 11
        layers of a full tile)."""
        return {k: e.written(w.close(), w.geobox) for k, (w, e) in self.writers.items()}


def write_scene_with_steps_in_blocks(
    item: pystac.Item,
    twin: pystac.Item | None,
    config: Config,
    geobox: GeoBox,
    store: CatalogStore,
    steps: Sequence[tuple[Step[Any], Any]],
    *,
    started: float,
    at: Callable[[str], None],
) -> tuple[dict[str, Any] | None, StepResult | None]:
    """Plan every step, then stream ``item`` block by block through the plans into COGs in its
    staging directory. Returns the output item's JSON, or (``None``, the result of the step that
    decided the scene is not written). On any error the staging directory is removed; a scene
    without a valid pixel raises :class:`~stac2cube.errors.NoOverlapError` as when read whole."""
    t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=time.perf_counter() - started)
    shape = geobox.shape.yx
    with ExitStack() as stack:
        at("read")
        source = open_item_source(stack, item, twin, config, geobox)
        plans: list[StepPlan] = []
        for step, step_cfg in steps:
            at(step.name)
            assert isinstance(step, BlockStep)
            plan = step.plan(source, step_cfg)
            plans.append(plan)
            source = source.then(plan)
            if plan.skip is not None:
                return None, plan.finish(_shell(item, geobox))
        tell_cloud_plan_coregistered(steps, plans)
        release_freed_memory()  # what the analyses freed, before the blocks take theirs
        halo = sum(p.halo for p in plans)
        log.info(
            "%s: %d steps planned; streaming %d x %d px in blocks of %d px (halo %d px)",
            item.id,
            len(plans),
            shape[0],
            shape[1],
            config.run.block_size,
            halo,
        )
        n_valid = 0
        first: dict[str, BandRead] = {}
        item_dir = store.new_staging_dir(item.id)  # swapped into place by store.add_item
        try:
            writers = _Writers(stack, item_dir, geobox, config)
            info_scene = _shell(item, geobox)
            for window in block_windows(shape, config.run.block_size):
                at("read")
                outer = grown(window, halo, shape)
                block, reads = source.read(outer)
                for b, r in reads.items():
                    if b not in first:
                        first[b] = dataclasses.replace(r, data=np.empty((0, 0), r.data.dtype))
                n_valid += int(valid_pixels(reads)[cut_slices(window, outer)].sum())
                for plan, (step, _) in zip(plans, steps, strict=True):
                    at(step.name)
                    block = plan.apply(source.with_block_aux(block, plan))
                for plan in plans:
                    block = plan.apply_late(block)
                own = cut(block, window, outer)
                for plan in plans:
                    plan.tally(own)
                at("write")
                info_scene = info_scene.replace(
                    layer_info={**info_scene.layer_info, **own.layer_info}
                )
                layers: dict[str, tuple[np.ndarray, Callable[[], AssetEncoding]]] = {
                    band: (
                        data,
                        functools.partial(AssetEncoding.reflectance, config.output, band, band),
                    )
                    for band, data in own.bands.items()
                }
                for name, data in own.classes.items():
                    layers[name] = (
                        data,
                        functools.partial(_class_encoding, info_scene, name, data),
                    )
                writers.write(layers, window)
            at("read")
            check_overlap(item, n_valid)
            at("write")
            written = writers.close()
        except BaseException:
            shutil.rmtree(item_dir, ignore_errors=True)
            raise
    shell = _shell(item, geobox).replace(layer_info=info_scene.layer_info)
    harmonised = harmonise_record(item, geobox, first, n_valid / (shape[0] * shape[1]))
    blocks = {"size": config.run.block_size, "halo": halo}
    records: list[StepRecord] = [
        dataclasses.replace(harmonised, parameters={**harmonised.parameters, "blocks": blocks})
    ]
    for plan, (step, _) in zip(plans, steps, strict=True):
        at(step.name)
        result = plan.finish(shell)
        shell = result.scene
        records.append(result.record)
        if result.skip is not None:
            shutil.rmtree(item_dir, ignore_errors=True)
            return None, result
    at("write")
    inputs = tuple(input_record(b, r, item) for b, r in first.items()) + tuple(
        source.inputs.values()
    )
    prov = scene_provenance(item, inputs, tuple(records), config, t_start)
    order = [b for b in written if b in S2_BANDS and S2_BANDS[b].kind != "classification"]
    order += [k for k in written if k not in order]
    sidecars = write_sidecars(shell, item_dir)
    return build_item(shell, item, {k: written[k] for k in order}, prov, sidecars=sidecars), None


def cut_slices(window: Window, outer: Window) -> tuple[slice, slice]:
    """The slices of ``window`` in arrays over ``outer``."""
    r0, c0 = int(window.row_off - outer.row_off), int(window.col_off - outer.col_off)
    return slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))


def _class_encoding(scene: Scene, name: str, data: np.ndarray) -> AssetEncoding:
    info = layer_info(scene, name)
    return AssetEncoding.classes(info, str(data.dtype), info.description or name)


def _shell(item: pystac.Item, geobox: GeoBox) -> Scene:
    """The scene without pixels."""
    return Scene(item_id=item.id, geobox=geobox, bands={}, source_properties=dict(item.properties))


def open_item_source(
    stack: ExitStack,
    item: pystac.Item,
    twin: pystac.Item | None,
    config: Config,
    geobox: GeoBox,
) -> ItemSource:
    """An :class:`ItemSource` over ``item``'s configured bands, its readers open in ``stack``
    (GDAL's cache at :data:`~.blocks.READ_CACHE_MB` while it is open, the heap steadied:
    :func:`steady_heap`), once a coarse read found a valid pixel (:func:`check_some_valid`)."""
    steady_heap()
    stack.enter_context(source_env(GDAL_CACHEMAX=READ_CACHE_MB))
    override = radiometry_override(item, config)
    readers = {
        b: stack.enter_context(
            BandReader(item, b, geobox, override=override, repeat=native_reads(config))
        )
        for b in config.bands
    }
    check_some_valid(item, config, geobox)
    return ItemSource(item, twin, config, geobox, readers)


def check_some_valid(item: pystac.Item, config: Config, geobox: GeoBox) -> None:
    """:class:`~stac2cube.errors.NoOverlapError` when the first band that counts for validity
    has no valid pixel on a coarse grid over the scene (its average keeps any valid pixel)."""
    band = next(b for b in config.bands if counts_for_validity(b, config.bands))
    res = float(geobox.resolution.x) * COARSE_CHECK_FACTOR
    coarse = GeoBox.from_bbox(geobox.extent.boundingbox, geobox.crs, resolution=res, tight=False)
    override = radiometry_override(item, config)
    with BandReader(item, band, coarse, override=override) as reader:
        read = reader.read(coarse)
    check_overlap(item, int(has_data(read).sum()))


MMAP_THRESHOLD_BYTES = 4 * 2**20
"""Allocations from this size up get their own memory map (:func:`steady_heap`)."""

_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` (malloc.h)."""


def steady_heap() -> None:
    """Have glibc give every allocation of :data:`MMAP_THRESHOLD_BYTES` or more its own memory
    map, returned to the system as soon as it is freed (``mallopt(M_MMAP_THRESHOLD)``, which
    also stops glibc from raising the threshold itself); a no-op elsewhere.

    By default glibc raises the threshold to the largest block freed, up to 32 MB, after which
    a block's arrays (16 MB for a band of a 2048 px block) come from the heap, whose holes grow
    the process over the blocks of a scene: the peak of a full tile with the cloud mask and the
    global shift went from 1,021 to 954 MB (842 MB for its sixteenth) with this threshold."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        return


def release_freed_memory() -> None:
    """Give the C heap's freed pages back to the system (glibc's ``malloc_trim``), so that the
    memory the scene-wide analyses freed (arrays of a few MB, below glibc's mmap threshold)
    does not stay in the worker's RSS under the blocks' own; a no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return
