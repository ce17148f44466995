"""What the SEN2SR model is handed: the 10 m bands as read, the 20 m bands from their own grid.

sen2sr's ``referencex2.resample_sentinel2_bands`` (used by ``swir_x2`` and, through its 20 → 10 m
stage, ``full_x4``) takes a 10 m stack, keeps every second pixel of the 20 m bands
(``F.interpolate(scale_factor=0.5, mode="nearest")``: pixel ``2i``) and upsamples that
bilinearly. So the 20 m bands are handed over as their native 20 m pixels repeated 2 x 2
(:func:`model_input`), on a frame whose even pixels start the 20 m pixels: sen2sr's own
downsampling then gives back the 20 m field exactly. docs/superres.md says why and what it
measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...errors import StepError
from ..base import AuxRequest, Scene
from .definitions import INPUT_BANDS, SWIR_BANDS

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]

NATIVE_20M: Final = "superres_20m"
"""``scene.aux`` key of the 20 m bands on their own 20 m grid (:func:`native_20m_request`)."""
NATIVE_RES: Final = 20.0
"""Resolution (m) of the bands the 20 m stage of SEN2SR reads."""


def native_20m_request() -> AuxRequest:
    """The pipeline reads the six 20 m bands of the L2A item on a 20 m grid over the scene's
    extent (edges on multiples of 20 m, as Sentinel-2's own 20 m grid in its UTM zone)."""
    return AuxRequest(bands=SWIR_BANDS, resolution=NATIVE_RES, level="l2a")


def reads_20m(kind: str) -> bool:
    """Whether model ``kind`` reads the 20 m bands (``swir_x2``, ``full_x4``)."""
    return any(b in SWIR_BANDS for b in INPUT_BANDS[kind])


@dataclass(frozen=True)
class InputFrame:
    """The 10 m frame the model runs on: the scene's grid with ``lead`` extra rows/columns (0
    or 1) before it, so that frame pixel ``(2i, 2j)`` is the first 10 m pixel of 20 m pixel
    ``(i, j)`` (for a model that reads no 20 m band, the scene's grid)."""

    invalid: BoolA
    """``(rows, cols)``: nodata in any input band."""
    lead: tuple[int, int]
    """Rows and columns of the frame before the scene's first pixel."""
    native: Mapping[str, F32]
    """The 20 m bands on their own grid (NaN nodata), 20 m pixel ``(0, 0)`` at frame ``(0, 0)``."""

    def crop(self, a: NDArray[Any], scale: int) -> NDArray[Any]:
        """The part of a frame array (``scale`` pixels per 10 m pixel) over the scene (``a``
        itself when the frame is the scene's grid)."""
        py, px = self.lead
        return a[py * scale :, px * scale :] if py or px else a


def _lead(scene_gbox: GeoBox, gbox20: GeoBox, item_id: str) -> tuple[int, int]:
    """Rows and columns (10 m) of the 20 m grid before the scene's first pixel: 0 or 1."""
    t, a = scene_gbox.transform, gbox20.transform
    ok = (
        gbox20.crs == scene_gbox.crs
        and t.b == 0.0 and t.d == 0.0 and a.b == 0.0 and a.d == 0.0
        and abs(a.a - 2 * t.a) < 1e-6 and abs(a.e - 2 * t.e) < 1e-6
    )  # fmt: skip
    lead = ((t.f - a.f) / t.e, (t.c - a.c) / t.a) if ok else (-1.0, -1.0)
    rounded = tuple(round(v) for v in lead)
    off_grid = any(abs(v - r) > 1e-6 or r not in (0, 1) for v, r in zip(lead, rounded, strict=True))
    if not ok or off_grid:
        raise StepError(
            f"{item_id}: the 20 m bands (scene.aux[{NATIVE_20M!r}], grid {gbox20.transform}) are "
            f"not on a 20 m grid aligned with the scene's 10 m grid ({t}); read them as "
            "SuperResStep.required_aux asks"
        )
    return int(rounded[0]), int(rounded[1])


def nearest_10m(native: F32, shape: tuple[int, int]) -> F32:
    """A 20 m field on a 10 m frame of ``shape`` that starts on its grid (each 20 m pixel
    repeated 2 x 2)."""
    h, w = shape
    ny, nx = math.ceil(h / 2), math.ceil(w / 2)
    if native.shape[0] < ny or native.shape[1] < nx:
        raise StepError(
            f"the 20 m grid ({native.shape[0]} x {native.shape[1]} pixels) does not cover the "
            f"{h} x {w}-pixel 10 m frame; read it as SuperResStep.required_aux asks"
        )
    out: F32 = np.repeat(np.repeat(native[:ny, :nx], 2, axis=0), 2, axis=1)[:h, :w]
    return out


def model_input(scene: Scene, bands: tuple[str, ...], needs_20m: bool) -> tuple[F32, InputFrame]:
    """The model input of ``scene`` and its frame: ``bands`` (model order, nodata filled with
    0) from ``scene.bands``; the 20 m bands of a ``needs_20m`` model from
    ``scene.aux[NATIVE_20M]`` instead, repeated 2 x 2 (see the module)."""
    h, w = scene.geobox.shape.yx
    native: dict[str, F32] = {}
    lead = (0, 0)
    if needs_20m:
        aux = scene.aux.get(NATIVE_20M)
        if aux is None:
            why = scene.missing_aux.get(NATIVE_20M)
            raise StepError(
                f"{scene.item_id}: the {', '.join(SWIR_BANDS)} bands on their native 20 m grid "
                f"(scene.aux[{NATIVE_20M!r}]) are missing{f' ({why})' if why else ''}: SEN2SR "
                "reads the 20 m bands from their own grid; the pipeline reads them as "
                "SuperResStep.required_aux asks (add them to scene.aux yourself when calling run "
                "directly)"
            )
        missing = [b for b in SWIR_BANDS if b not in aux.bands]
        if missing:
            raise StepError(
                f"{scene.item_id}: scene.aux[{NATIVE_20M!r}] lacks {', '.join(missing)}"
            )
        lead = _lead(scene.geobox, aux.geobox, scene.item_id)
        native = {b: np.asarray(aux.data[aux.bands.index(b)], dtype=np.float32) for b in SWIR_BANDS}
    py, px = lead
    shape = (h + py, w + px)
    stack = np.empty((len(bands), *shape), dtype=np.float32)
    for n, b in enumerate(bands):
        if b in native:
            stack[n] = nearest_10m(native[b], shape)
        else:
            a = np.asarray(scene.bands[b], dtype=np.float32)
            stack[n] = np.pad(a, ((py, 0), (px, 0)), mode="edge") if py or px else a
    invalid: BoolA = np.logical_not(np.isfinite(stack).all(axis=0))
    stack[:, invalid] = 0.0
    return stack, InputFrame(invalid, lead, native)


__all__ = [
    "NATIVE_20M",
    "NATIVE_RES",
    "InputFrame",
    "model_input",
    "native_20m_request",
    "nearest_10m",
    "reads_20m",
]
