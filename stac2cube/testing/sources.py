"""An in-memory :class:`~stac2cube.steps.base.SceneSource` over a whole :class:`Scene`, and a
runner that applies step plans block by block, for tests that compare a step run in blocks with
the same step run whole (the pipeline's own source reads items: ``stac2cube.pipeline.blocks``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from ..pipeline.blocks import block_windows
from ..pipeline.blocksteps import cut, grown
from ..steps.base import AuxLayer, AuxRequest, Scene, StepPlan
from ..steps.grids import offset_in


def crop_layer(layer: AuxLayer, geobox: GeoBox) -> AuxLayer:
    """``layer`` cut to ``geobox``, a window of its grid (NaN outside it)."""
    r0, c0 = offset_in(layer.geobox, geobox)
    h, w = geobox.shape.yx
    data = np.asarray(layer.data)
    out = np.full((data.shape[0], h, w), np.nan, dtype=data.dtype)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + h, data.shape[1]), min(c0 + w, data.shape[2])
    if re > rs and ce > cs:
        out[:, rs - r0 : re - r0, cs - c0 : ce - c0] = data[:, rs:re, cs:ce]
    return AuxLayer(out, geobox, layer.bands, layer.source, layer.datetime, layer.version)


class ArraySource:
    """A :class:`~stac2cube.steps.base.SceneSource` over ``scene`` held whole (tests only).

    :meth:`block` slices the scene's arrays and applies ``plans`` (with their ``block_aux``
    cut from ``scene.aux``). :meth:`aux` gives ``scene.aux[name]`` (cut to ``geobox`` when one
    is given, which must be a window of the layer's grid); ``l2a`` requests not in
    ``scene.aux`` are the scene's bands averaged (classes: the top-left pixel of each cell)
    over cells of ``request.resolution``, which must be a whole multiple of the scene's."""

    def __init__(self, scene: Scene, plans: Sequence[StepPlan] = ()) -> None:
        self.scene = scene
        self.item_id = scene.item_id
        self.geobox = scene.geobox
        self.band_names = (*scene.bands, *scene.classes)
        self.source_properties: Mapping[str, Any] = scene.source_properties
        self.missing_aux: dict[str, str] = dict(scene.missing_aux)
        self.plans = list(plans)

    def _cut(self, window: Window) -> Scene:
        h, w = self.geobox.shape.yx
        window = window.intersection(Window(0, 0, w, h))
        sl = window.toslices()
        s = self.scene
        return s.replace(
            geobox=self.geobox[sl],
            bands={k: np.asarray(v)[sl] for k, v in s.bands.items()},
            classes={k: np.asarray(v)[sl] for k, v in s.classes.items()},
            aux={},
            layers={},
        )

    def block(self, window: Window) -> Scene:
        """The scene's pixels over ``window`` with :attr:`plans` applied (on the window grown by
        their halos, cut back)."""
        shape = self.geobox.shape.yx
        window = window.intersection(Window(0, 0, shape[1], shape[0]))
        outer = grown(window, sum(p.halo for p in self.plans), shape)
        block = self._cut(outer)
        for plan in self.plans:
            block = plan.apply(self.with_block_aux(block, plan))
        for plan in self.plans:
            block = plan.apply_late(block)
        return cut(block, window, outer)

    def with_block_aux(self, block: Scene, plan: StepPlan) -> Scene:
        """``block`` with ``plan.block_aux`` cut from ``scene.aux`` onto its grid."""
        aux = dict(block.aux)
        for name, req in plan.block_aux.items():
            got = self.aux(name, req, block.geobox)
            if got is not None:
                aux[name] = got
        return block.replace(aux=aux, missing_aux=self.missing_aux)

    def aux(self, name: str, request: AuxRequest, geobox: GeoBox | None = None) -> AuxLayer | None:
        """``scene.aux[name]`` on ``geobox``, or the scene's bands decimated (``l2a``)."""
        layer = self.scene.aux.get(name)
        if layer is None and request.level == "l2a":
            layer = self._decimated(request)
        if layer is None:
            self.missing_aux.setdefault(name, f"the test scene has no aux layer {name!r}")
            return None
        res = float(self.geobox.resolution.x)
        if geobox is None and layer.geobox == self.geobox and request.resolution > res:
            layer = self._decimated(request, layer)  # a coarse read, as the pipeline's
        return layer if geobox is None else crop_layer(layer, geobox)

    def _decimated(self, request: AuxRequest, layer: AuxLayer | None = None) -> AuxLayer:
        res = float(self.geobox.resolution.x)
        f = round(request.resolution / res) if request.resolution > 0 else 1
        if f < 1 or abs(f * res - max(request.resolution, res)) > 1e-6:
            raise ValueError(f"resolution {request.resolution} is not a multiple of {res}")
        gbox = GeoBox.from_bbox(
            self.geobox.extent.boundingbox,
            self.geobox.crs,
            resolution=res * f,
            tight=False,
        )
        r0, c0 = offset_in(self.geobox, gbox) if f == 1 else _coarse_offset(self.geobox, gbox)
        planes = []
        if layer is not None:  # a layer on the scene's grid, averaged
            for plane in np.asarray(layer.data, dtype=np.float32):
                planes.append(_reduce(plane, gbox, r0, c0, f, mean=True))
            return AuxLayer(
                np.stack(planes), gbox, layer.bands, layer.source, layer.datetime, layer.version
            )
        for band in request.bands:
            if band in self.scene.bands:
                a = np.asarray(self.scene.bands[band], dtype=np.float32)
                planes.append(_reduce(a, gbox, r0, c0, f, mean=True))
            elif band in self.scene.classes:
                a = np.asarray(self.scene.classes[band]).astype(np.float32)
                planes.append(_reduce(a, gbox, r0, c0, f, mean=False))
            else:
                planes.append(np.full(gbox.shape.yx, np.nan, dtype=np.float32))
        return AuxLayer(np.stack(planes), gbox, tuple(request.bands), "l2a")


class RecordingSource(ArraySource):
    """An :class:`ArraySource` that records the windows read at full resolution."""

    def __init__(self, scene: Scene, plans: Sequence[StepPlan] = ()) -> None:
        super().__init__(scene, plans)
        self.reads: list[Window] = []

    def block(self, window: Window) -> Scene:
        """:meth:`ArraySource.block`, recorded."""
        self.reads.append(window)
        return super().block(window)


def _coarse_offset(fine: GeoBox, coarse: GeoBox) -> tuple[int, int]:
    """Row and column (fine pixels) of the coarse grid's origin on the fine grid."""
    a, b = fine.affine, coarse.affine
    return round((b.f - a.f) / a.e), round((b.c - a.c) / a.a)


def _reduce(a: np.ndarray, gbox: GeoBox, r0: int, c0: int, f: int, *, mean: bool) -> np.ndarray:
    h, w = gbox.shape.yx
    pad = np.full((h * f, w * f), np.nan, dtype=np.float32)
    rs, cs = max(-r0, 0), max(-c0, 0)
    src = a[max(r0, 0) :, max(c0, 0) :][: h * f - rs, : w * f - cs]
    pad[rs : rs + src.shape[0], cs : cs + src.shape[1]] = src
    cells = pad.reshape(h, f, w, f)
    if not mean:
        out: np.ndarray = cells[:, 0, :, 0]
        return out
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(cells)
        n = ok.sum(axis=(1, 3))
        s = np.where(ok, cells, 0.0).sum(axis=(1, 3))
        return np.where(n > 0, s / np.maximum(n, 1), np.nan).astype(np.float32)


def run_in_blocks(
    source: ArraySource, plans: Sequence[StepPlan], size: int
) -> tuple[Scene, list[Any]]:
    """Apply ``plans`` to ``source``'s scene block by block (blocks of ``size`` px grown by the
    sum of the plans' halos, cut back after :meth:`~StepPlan.apply_late`) as the pipeline does,
    and paste the blocks into whole arrays: the scene as a step run in blocks makes it, and the
    plans' results (:meth:`~StepPlan.finish`, in order)."""
    h, w = source.geobox.shape.yx
    halo = sum(p.halo for p in plans)
    bands: dict[str, np.ndarray] = {}
    classes: dict[str, np.ndarray] = {}
    base = ArraySource(source.scene)
    shell = source.scene.replace(bands={}, classes={}, aux={})
    for win in block_windows((h, w), size):
        outer = grown(win, halo, (h, w))
        block = base._cut(outer)
        for plan in plans:
            block = plan.apply(base.with_block_aux(block, plan))
        for plan in plans:
            block = plan.apply_late(block)
        own = cut(block, win, outer)
        for plan in plans:
            plan.tally(own)
        out = win.toslices()
        for k, v in own.bands.items():
            bands.setdefault(k, np.full((h, w), np.nan, np.float32))[out] = v
        for k, v in own.classes.items():
            classes.setdefault(k, np.zeros((h, w), v.dtype))[out] = v
        shell = shell.replace(layer_info={**shell.layer_info, **own.layer_info})
    results = []
    for plan in plans:
        r = plan.finish(shell)
        shell = r.scene
        results.append(r)
    return shell.replace(bands=bands, classes=classes), results
