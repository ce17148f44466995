"""Build :class:`~stac2cube.steps.base.Scene` objects from a generated sample, the way the pipeline
does (same reader, same grids), for step tests and benchmarks that need the truth next to them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pystac
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from ..io.read import read_band
from ..steps.base import AuxLayer, Scene
from .spec import Sample, SampleScene

DEFAULT_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B8A", "B11", "SCL")


def sample_geobox(sample: Sample) -> GeoBox:
    """The sample's 10 m grid (its upper-left corner is ``spec.origin``)."""
    spec = sample.spec
    x0, y0 = spec.origin
    return GeoBox(
        (spec.height, spec.width), Affine(10.0, 0.0, x0, 0.0, -10.0, y0), f"EPSG:{spec.epsg}"
    )


def aux_geobox(geobox: GeoBox, resolution: float) -> GeoBox:
    """The grid the pipeline reads auxiliary layers on (``GeoBox.from_bbox(..., tight=False)``)."""
    return GeoBox.from_bbox(
        geobox.extent.boundingbox, geobox.crs, resolution=resolution, tight=False
    )


@dataclass(frozen=True)
class SampleScenePixels:
    """A scene read from the sample, with its truth on the same grid."""

    scene: Scene
    truth: np.ndarray
    """uint8: 0 clear, 1 thick, 2 thin cloud, 3 cirrus, 4 shadow, 255 nodata."""


def read_truth(s: SampleScene) -> np.ndarray:
    """The truth map of a sample scene (10 m grid)."""
    with rasterio.open(s.truth_path) as src:
        out: np.ndarray = src.read(1)
    return out


def scene_from_sample(
    sample: Sample,
    index: int,
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    toa_resolution: float | None = 60.0,
    toa: str = "l1c",
    toa_bands: Sequence[str] = (
        "B01",
        "B02",
        "B04",
        "B05",
        "B08",
        "B8A",
        "B09",
        "B10",
        "B11",
        "B12",
    ),
) -> SampleScenePixels:
    """Read scene ``index`` of ``sample`` onto its 10 m grid as the pipeline does.

    ``toa``: ``"l1c"`` reads ``scene.aux["toa"]`` from the L1C twin, anything else (e.g.
    ``"l2a"``) from the L2A item with a NaN plane for B10 (as the pipeline does for
    ``steps.cloudmask.l1c: never``); ``toa_resolution`` None reads no aux layer (as the pipeline
    does without a twin).
    """  # fmt: skip
    s = sample.scenes[index]
    gbox = sample_geobox(sample)
    l2a = pystac.Item.from_dict(s.l2a_item)
    reads = {b: read_band(l2a, b, gbox).data for b in bands}
    refl = {b: a for b, a in reads.items() if b != "SCL"}
    classes = {b: a for b, a in reads.items() if b == "SCL"}
    aux = {}
    if toa_resolution is not None:
        agbox = aux_geobox(gbox, toa_resolution)
        if toa == "l1c":
            src, source = pystac.Item.from_dict(s.l1c_item), f"l1c:{s.l1c_item['id']}"
        else:
            src, source = l2a, "l2a"
        planes = []
        for b in toa_bands:
            if b == "B10" and src is l2a:
                planes.append(np.full(agbox.shape.yx, np.nan, dtype=np.float32))
            else:
                planes.append(read_band(src, b, agbox).data)
        aux["toa"] = AuxLayer(np.stack(planes), agbox, tuple(toa_bands), source)
    scene = Scene(
        item_id=s.l2a_item["id"],
        geobox=gbox,
        bands=refl,
        classes=classes,
        source_properties=dict(s.l2a_item["properties"]),
        aux=aux,
    )
    return SampleScenePixels(scene, read_truth(s))


__all__ = [
    "DEFAULT_BANDS",
    "SampleScenePixels",
    "aux_geobox",
    "read_truth",
    "sample_geobox",
    "scene_from_sample",
]
