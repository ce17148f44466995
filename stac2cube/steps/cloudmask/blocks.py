"""The cloud step in blocks, for scenes that do not fit in memory whole (a 110 km tile).

:func:`plan_cloudmask` does what :meth:`~.step.CloudMaskStep.run` decides once per scene, reading
through a :class:`~stac2cube.steps.base.SceneSource`: whether s2cloudless runs, its probability
over the whole scene on its coarse grid (the TOA bands read in strips of rows), the
multi-temporal test's reference and gap, and the geometric shadow search, which runs on the
coarse grid. :class:`CloudPlan` applies that block by block. Every layer is bit-identical to the
scene processed whole, but for the geometric shadows (``docs/cloudmask.md``, "In blocks").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from ...bands import (
    CLOUD_TESTS_PROPERTY,
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_SHADOW,
    PROB_NODATA,
    SCL_NODATA,
    SCL_SHADOW,
)
from ...errors import StepError
from ...provenance import StepRecord
from ..base import AuxLayer, AuxRequest, LayerInfo, Scene, SceneSource, Skip, StepResult
from ..grids import pixel_cells, upsample_nearest
from .cirrus import cirrus_mask, snow_mask
from .config import CloudMaskConfig
from .layers import (
    MaskCounts,
    cloud_mask_info,
    cloud_mask_layer,
    cloud_tests,
    summarise_counts,
)
from .probability import (
    S2CLOUDLESS_BANDS,
    S2CLOUDLESS_MODEL,
    S2cloudlessInput,
    b10_handling,
    cloud_probability,
    probability_layer_infos,
    probability_products,
    s2cloudless_input,
    s2cloudless_mask,
    s2cloudless_version,
)
from .raster import radius_px, upsample_bilinear
from .shadows import (
    MIN_SEARCH_PIXELS,
    geometric_shadows,
    nir_source,
    require_sun_angles,
    shadow_offsets,
)
from .step import (
    CloudMaskStep,
    combine_clouds,
    parameters,
    require_scl,
    scl_clouds,
    scl_valid,
)
from .temporal import temporal_test

log = logging.getLogger(__name__)

STRIP_ROWS: int = 256
"""Rows of the probability's coarse grid read at a time: the ten TOA bands of a strip of a
whole tile at 60 m (256 x 1830 px) take 19 MB, the whole stack 134 MB."""
HALO_MARGIN: Final = 2
"""Pixels added to the halo the disks of the post-processing need."""
TALLY_AUX: Final = "cloudmask_tally"
"""The ``block.aux`` entry in which :meth:`CloudPlan.apply` leaves, for :meth:`CloudPlan.tally`,
the per-pixel figures of the record that the written layers do not show (not written)."""
TALLY_PLANES: Final = ("temporal_added", "cirrus", "cirrus_snow_excluded")
"""The boolean planes of :data:`TALLY_AUX`, in order."""

_B10 = S2CLOUDLESS_BANDS.index("B10")
_B08 = S2CLOUDLESS_BANDS.index("B08")
_TEMPORAL, _CIRRUS, _SNOW = range(len(TALLY_PLANES))

F32 = NDArray[np.float32]
BoolA = NDArray[np.bool_]


# --- the scene-wide analysis ------------------------------------------------------------------


@dataclass(frozen=True)
class CoarseProbability:
    """s2cloudless over the whole scene on the grid of its TOA input, and the two TOA planes
    the step takes from the same read."""

    geobox: GeoBox
    prob: F32
    """Cloud probability (0-1, NaN nodata), as :func:`~.probability.cloud_probability` gives
    it for the whole TOA layer."""
    b10: F32
    """TOA B10: the cirrus test."""
    b08: F32
    """TOA B08: the NIR of the shadow search when the scene has no L2A NIR band."""
    source: str
    """Where the TOA came from (``l1c:<item id>``, ``l2a``)."""
    b10_handling: str


def coarse_grid(source: SceneSource, cfg: CloudMaskConfig) -> GeoBox:
    """The grid s2cloudless runs on: ``cfg.resolution`` over the scene's extent, as the
    pipeline reads the TOA layer of a scene held whole."""
    g = source.geobox
    return GeoBox.from_bbox(g.extent.boundingbox, g.crs, resolution=cfg.resolution, tight=False)


def _read_toa(source: SceneSource, request: AuxRequest, coarse: GeoBox, r0: int) -> AuxLayer | None:
    """The TOA strip of ``coarse`` starting at row ``r0``."""
    r1 = min(r0 + STRIP_ROWS, coarse.shape.y)
    layer = source.aux("toa", request, geobox=coarse[r0:r1, :])
    if layer is None:
        return None
    if tuple(layer.bands) != S2CLOUDLESS_BANDS:
        raise StepError(
            f"{source.item_id}: the TOA layer has bands {layer.bands}, expected {S2CLOUDLESS_BANDS}"
        )
    if layer.data.shape[1:] != (r1 - r0, coarse.shape.x):
        raise StepError(
            f"{source.item_id}: the TOA strip of rows {r0}-{r1} has shape {layer.data.shape}, "
            f"expected ({len(S2CLOUDLESS_BANDS)}, {r1 - r0}, {coarse.shape.x})"
        )
    return layer


def coarse_probability(
    source: SceneSource, request: AuxRequest, coarse: GeoBox, first: AuxLayer
) -> CoarseProbability:
    """s2cloudless over ``coarse``, the TOA read in strips of :data:`STRIP_ROWS` rows
    (``first`` is the first strip, already read) so that the ten-band stack is never held
    whole; the probability of a pixel does not depend on the others."""
    shape = coarse.shape.yx
    prob = np.empty(shape, dtype=np.float32)
    b10 = np.empty(shape, dtype=np.float32)
    b08 = np.empty(shape, dtype=np.float32)
    others = [i for i in range(len(S2CLOUDLESS_BANDS)) if i != _B10]
    n = n_b10 = 0
    for r0 in range(0, shape[0], STRIP_ROWS):
        layer = first if r0 == 0 else _read_toa(source, request, coarse, r0)
        if layer is None:
            why = source.missing_aux.get("toa", "not provided")
            raise StepError(f"{source.item_id}: the TOA strip at row {r0} could not be read: {why}")
        data = np.asarray(layer.data, dtype=np.float32)
        rows = slice(r0, r0 + data.shape[1])
        prob[rows], _ = cloud_probability(data)
        b10[rows], b08[rows] = data[_B10], data[_B08]
        ok = np.logical_and.reduce([np.isfinite(data[i]) for i in others])
        n += int(ok.sum())
        n_b10 += int((np.isfinite(data[_B10]) & ok).sum())
    return CoarseProbability(coarse, prob, b10, b08, first.source, b10_handling(n, n - n_b10))


def _decide_s2cloudless(
    source: SceneSource, cfg: CloudMaskConfig, request: AuxRequest | None, coarse: GeoBox
) -> tuple[S2cloudlessInput, AuxLayer | None]:
    """Whether s2cloudless runs, decided as for the scene held whole (on its first TOA strip:
    its presence and source are those of the whole layer), and that strip."""
    first = _read_toa(source, request, coarse, 0) if request is not None else None
    stand_in = Scene(
        source.item_id,
        source.geobox,
        {},
        aux={"toa": first} if first is not None else {},
        missing_aux=source.missing_aux,
    )
    return s2cloudless_input(stand_in, cfg, "SCL" in source.band_names), first


def _decide_temporal(
    source: SceneSource, cfg: CloudMaskConfig, request: AuxRequest
) -> dict[str, Any]:
    """The multi-temporal test's record as :func:`~.temporal.temporal_test` decides it for the
    scene (reference, version, gap, threshold, or why it is skipped; its errors), from the
    reference's first pixel; ``added_fraction`` is counted over the blocks."""
    corner = source.geobox[0:1, 0:1]
    ref = source.aux("clear_reference", request, geobox=corner)
    blue = np.full((1, 1), np.nan, dtype=np.float32)
    stand_in = Scene(
        source.item_id,
        corner,
        {"B02": blue} if "B02" in source.band_names else {},
        aux={"clear_reference": ref} if ref is not None else {},
        source_properties=source.source_properties,
    )
    results: dict[str, Any] = {}
    temporal_test(stand_in, cfg, np.zeros((1, 1), dtype=bool), results)
    out: dict[str, Any] = results["temporal"]
    return out


def _read_coarse(
    source: SceneSource, name: str, band: str, cfg: CloudMaskConfig, coarse: GeoBox
) -> F32:
    """L2A ``band`` decimated onto ``coarse`` (reflectance averaged, classes nearest)."""
    layer = source.aux(name, AuxRequest((band,), cfg.resolution, level="l2a"), geobox=coarse)
    if layer is None or layer.data.shape[1:] != coarse.shape.yx:
        why = source.missing_aux.get(name, "not on the grid asked for")
        raise StepError(
            f"{source.item_id}: the geometric shadow search in blocks reads {band} on a "
            f"{cfg.resolution:g} m grid, which failed: {why}"
        )
    out: F32 = np.asarray(layer.data[0], dtype=np.float32)
    return out


def coarse_shadow_search(
    source: SceneSource,
    cfg: CloudMaskConfig,
    coarse: GeoBox,
    method_used: str,
    probability: CoarseProbability | None,
) -> tuple[BoolA, dict[str, Any]]:
    """The geometric shadow search over the whole scene on ``coarse``: the clouds of
    ``method_used`` there (the s2cloudless mask of the coarse probability, the cells with SCL
    cloud, :func:`coarse_scl_clouds`), dark NIR (L2A B08, else B8A, decimated, else the TOA
    B08), the per-object height search (objects from the area of :data:`MIN_SEARCH_PIXELS`
    output pixels); returns the projection of the clouds at their heights and the record."""
    angles = require_sun_angles(source.item_id, source.source_properties)
    nir_src = nir_source(source.band_names, probability is not None)
    if nir_src == "toa:B08":
        assert probability is not None
        nir = probability.b08
    else:
        nir = _read_coarse(source, "shadow_nir", nir_src.removeprefix("l2a:"), cfg, coarse)
    valid = np.isfinite(nir)
    scl_cloud: BoolA | None = None
    if method_used != "s2cloudless":
        scl_cloud, scl_known = coarse_scl_clouds(source, cfg, coarse)
        valid &= scl_known
        scl_cloud &= valid
    s2c_cloud: BoolA | None = None
    valid_prob = valid
    if probability is not None and method_used != "scl":
        valid_prob = valid & np.isfinite(probability.prob)
        s2c_cloud = s2cloudless_mask(
            probability.prob,
            valid_prob,
            float(abs(coarse.resolution.x)),
            cfg.threshold,
            average_over_m=cfg.average_over,
            dilation_m=cfg.dilation_size,
        )
    cloud, known = combine_clouds(method_used, s2c_cloud, valid_prob, scl_cloud, valid)
    dark = np.less(nir, cfg.dark_nir, where=valid, out=np.zeros(valid.shape, dtype=bool))
    heights = cfg.heights()
    offsets = shadow_offsets(heights, angles[0], angles[1], coarse)
    # the same area as MIN_SEARCH_PIXELS pixels of the output grid
    ratio = float(abs(coarse.resolution.x) / abs(source.geobox.resolution.x))
    min_pixels = max(1, math.ceil(MIN_SEARCH_PIXELS / ratio**2))
    search = geometric_shadows(cloud, dark, known, offsets, heights, min_pixels)
    results = {
        "shadow_height_m": search.height_m,
        "shadow_objects": search.n_objects,
        "shadow_nir": nir_src,
        "sun_azimuth": angles[0],
        "sun_zenith": angles[1],
        "shadow_search": f"coarse grid {abs(coarse.resolution.x):g} m (blocks)",
    }
    return search.projected, results


def _any_per_cell(a: BoolA, rows: NDArray[np.intp], cols: NDArray[np.intp], out: BoolA) -> None:
    """Set the cells of ``out`` in which a pixel of ``a`` is True; ``rows`` and ``cols`` (not
    decreasing) are the cells of ``a``'s rows and columns."""
    ur, r_start = np.unique(rows, return_index=True)
    uc, c_start = np.unique(cols, return_index=True)
    pooled = np.logical_or.reduceat(np.logical_or.reduceat(a, r_start, axis=0), c_start, axis=1)
    out[np.ix_(ur, uc)] |= pooled


def coarse_scl_clouds(
    source: SceneSource, cfg: CloudMaskConfig, coarse: GeoBox
) -> tuple[BoolA, BoolA]:
    """The cells of ``coarse`` with an SCL cloud pixel (classes of ``cfg.scl_classes``) and
    those with a valid SCL pixel, from SCL read on the output grid in strips of
    :data:`STRIP_ROWS` coarse rows: a decimated SCL (one pixel per cell) misses the small
    clouds whose shadows the search on the output grid finds."""
    rows, cols = pixel_cells(source.geobox, coarse)
    request = AuxRequest(("SCL",), 0.0, level="l2a")
    cloud = np.zeros(coarse.shape.yx, dtype=bool)
    known = np.zeros(coarse.shape.yx, dtype=bool)
    for r0 in range(0, coarse.shape.y, STRIP_ROWS):
        f0, f1 = np.searchsorted(rows, [r0, r0 + STRIP_ROWS])
        if f1 <= f0:
            continue
        layer = source.aux("scl_cells", request, geobox=source.geobox[int(f0) : int(f1), :])
        if layer is None or layer.data.shape[1:] != (f1 - f0, source.geobox.shape.x):
            why = source.missing_aux.get("scl_cells", "not on the grid asked for")
            raise StepError(
                f"{source.item_id}: the geometric shadow search in blocks reads SCL, which "
                f"failed: {why}"
            )
        data = np.asarray(layer.data[0])
        scl = np.where(np.isfinite(data), data, SCL_NODATA).astype(np.uint8)
        ok = scl != SCL_NODATA
        _any_per_cell(scl_clouds(scl, cfg, ok), rows[f0:f1], cols, cloud)
        _any_per_cell(ok, rows[f0:f1], cols, known)
    return cloud, known


def _snow_from(band_names: tuple[str, ...]) -> str | None:
    """Where :func:`~.cirrus.snow_mask` takes snow from on a scene with ``band_names``."""
    if all(b in band_names for b in ("B03", "B08", "B11")):
        return "ndsi"
    return "scl" if "SCL" in band_names else None


def _probability_infos(cfg: CloudMaskConfig, p: CoarseProbability) -> dict[str, LayerInfo]:
    """How ``CLOUD_PROB`` and the ``CLOUD_Txxx`` layers are written, as the whole path says."""
    return probability_layer_infos(cfg, float(abs(p.geobox.resolution.x)), p.source)


def plan_cloudmask(step: CloudMaskStep, source: SceneSource, cfg: CloudMaskConfig) -> CloudPlan:
    """The scene-wide analysis of ``step`` over ``source``; raises as ``step.run`` does."""
    has_scl = "SCL" in source.band_names
    require_scl(source.item_id, cfg, has_scl)
    aux = step.required_aux(cfg)
    coarse = coarse_grid(source, cfg)
    s2c, first = _decide_s2cloudless(source, cfg, aux.get("toa"), coarse)
    method_used = cfg.method if s2c.status == "run" else "scl"
    head: dict[str, Any] = {
        "method": cfg.method,
        "method_used": method_used,
        "s2cloudless": s2c.record(),
    }
    probability: CoarseProbability | None = None
    infos: dict[str, LayerInfo] = {}
    if s2c.status == "run":
        assert first is not None and "toa" in aux
        probability = coarse_probability(source, aux["toa"], coarse, first)
        head.update(
            toa_source=probability.source,
            b10_handling=probability.b10_handling,
            probability_resolution_m=float(abs(coarse.resolution.x)),
            model=f"s2cloudless {s2cloudless_version()} {S2CLOUDLESS_MODEL}",
        )
        infos.update(_probability_infos(cfg, probability))
    infos["CLOUD_MASK"] = cloud_mask_info(method_used, cfg)
    cirrus = (
        probability is not None
        and cfg.cirrus_threshold is not None
        and bool(np.isfinite(probability.b10).any())
    )
    temporal = None
    if cfg.temporal_threshold is not None:
        temporal = _decide_temporal(source, cfg, aux["clear_reference"])
    projected: BoolA | None = None
    shadow_results: dict[str, Any] = {}
    if cfg.shadows in ("geometric", "both"):
        projected, shadow_results = coarse_shadow_search(
            source, cfg, coarse, method_used, probability
        )
    halo = 0  # the disks of the post-processing; the rest is pixel by pixel
    if probability is not None:
        pixel = float(abs(source.geobox.resolution.x))
        reach = radius_px(cfg.average_over, pixel) + radius_px(cfg.dilation_size, pixel)
        halo = reach + HALO_MARGIN
    applies = temporal is not None and temporal["status"] == "applied"
    if probability is not None:  # keep only the coarse planes the blocks use
        toa_nir = shadow_results.get("shadow_nir") == "toa:B08"
        none = np.empty((0, 0), dtype=np.float32)
        probability = dataclasses.replace(
            probability,
            b10=probability.b10 if cirrus else none,
            b08=probability.b08 if toa_nir else none,
        )
    return CloudPlan(
        name=step.name,
        version=step.version,
        cfg=cfg,
        item_id=source.item_id,
        head=head,
        probability=probability,
        cirrus=cirrus,
        snow_from=_snow_from(source.band_names) if cirrus else None,
        temporal=temporal,
        defer_temporal=step.defer_temporal,
        coarse=coarse,
        projected=projected,
        shadow_results=shadow_results,
        infos=infos,
        halo=halo,
        block_aux={"clear_reference": aux["clear_reference"]} if applies else {},
    )


# --- the plan applied block by block ----------------------------------------------------------


@dataclass
class _Counts:
    """What :meth:`CloudPlan.tally` adds up over the blocks."""

    mask: MaskCounts = field(default_factory=MaskCounts)
    prob_valid: int = 0
    """Pixels with a probability (``CLOUD_PROB`` not nodata): the cirrus figures' base."""
    planes: list[int] = field(default_factory=lambda: [0] * len(TALLY_PLANES))
    """Pixels of each plane of :data:`TALLY_PLANES`."""


@dataclass(eq=False)
class CloudPlan:
    """The cloud step's plan (:class:`~stac2cube.steps.base.StepPlan`), made by
    :func:`plan_cloudmask`.

    :meth:`apply` gives a block the ``CLOUD_MASK``, ``CLOUD_PROB`` and ``CLOUD_Txxx`` pixels
    of the scene processed whole: the coarse probability upsampled onto the block, then the
    same post-processing, cirrus test, SCL combination and multi-temporal test; the halo
    covers the disks of the post-processing. Geometric shadows are the coarse projection
    (nearest) on dark, cloud-free pixels. The record's figures that the written layers do not
    show (temporal and cirrus pixels) travel to :meth:`tally` in ``block.aux`` under
    :data:`TALLY_AUX`, which a driver must keep through the halo cut."""

    name: str
    version: str
    cfg: CloudMaskConfig
    item_id: str
    head: dict[str, Any]
    """The record's results decided scene-wide: method, s2cloudless input, model."""
    probability: CoarseProbability | None
    cirrus: bool
    """Whether the cirrus test runs (a threshold and B10 somewhere in the scene)."""
    snow_from: str | None
    temporal: dict[str, Any] | None
    """The multi-temporal test's record as decided scene-wide (None: off)."""
    defer_temporal: bool
    """Whether :meth:`apply_late`, not :meth:`apply`, runs the multi-temporal test."""
    coarse: GeoBox
    projected: BoolA | None
    """The geometric search's projection of the clouds on :attr:`coarse` (None: no search)."""
    shadow_results: dict[str, Any]
    infos: dict[str, LayerInfo]
    """How the layers of the step are written."""
    halo: int = 0
    block_aux: Mapping[str, AuxRequest] = field(default_factory=dict)
    skip: Skip | None = None
    coregistered: bool = True
    """Whether the pixels the deferred multi-temporal test compares are co-registered (set by
    the pipeline; recorded as ``on_coregistered_pixels``)."""
    counts: _Counts = field(default_factory=_Counts)

    @property
    def method_used(self) -> str:
        """``cfg.method``, or ``scl`` when s2cloudless does not run."""
        out: str = self.head["method_used"]
        return out

    @property
    def temporal_applies(self) -> bool:
        """Whether the multi-temporal test runs on the pixels (a reference near enough)."""
        return self.temporal is not None and self.temporal["status"] == "applied"

    @property
    def _tally_planes(self) -> bool:
        return self.cirrus or self.temporal_applies

    def apply(self, block: Scene) -> Scene:
        """``block`` with the step's layers, as :meth:`~.step.CloudMaskStep.run` makes them."""
        cfg = self.cfg
        valid = block.valid_mask()
        scl = block.classes.get("SCL")
        if cfg.uses_scl and scl is not None:
            valid = scl_valid(valid, scl, bool(block.bands))
        if self.probability is None and scl is not None:  # SCL decides: its nodata is nodata
            valid = scl_valid(valid, scl, bool(block.bands))
        classes: dict[str, np.ndarray] = dict(block.classes)
        planes = np.zeros((len(TALLY_PLANES), *block.geobox.shape.yx), dtype=bool)
        s2c_cloud: BoolA | None = None
        valid_prob = valid
        if self.probability is not None:
            s2c_cloud, valid_prob = self._s2cloudless(block, valid, classes, planes)
        scl_cloud = scl_clouds(scl, cfg, valid) if scl is not None else None
        cloud, known = combine_clouds(self.method_used, s2c_cloud, valid_prob, scl_cloud, valid)
        if self.temporal_applies and not self.defer_temporal:
            hit = self._temporal(block, known & ~cloud)
            cloud = cloud | hit
            planes[_TEMPORAL] = hit
        shadow = self._shadows(block, cloud, known)
        classes["CLOUD_MASK"] = cloud_mask_layer(known, shadow, cloud)
        aux = dict(block.aux)
        if self._tally_planes:
            aux[TALLY_AUX] = AuxLayer(planes, block.geobox, TALLY_PLANES, self.name)
        tests = cloud_tests(cfg, {**self.head, "temporal": self.temporal or {}})
        return block.replace(
            classes=classes,
            layer_info={**block.layer_info, **self.infos},
            aux=aux,
            properties={**block.properties, CLOUD_TESTS_PROPERTY: tests},
        )

    def _s2cloudless(
        self, block: Scene, valid: BoolA, classes: dict[str, np.ndarray], planes: BoolA
    ) -> tuple[BoolA, BoolA]:
        """The probability layers and the s2cloudless (plus cirrus) clouds of ``block``, as
        :func:`~.probability.s2cloudless_layers` makes them from the same probability."""
        p, cfg = self.probability, self.cfg
        assert p is not None
        gbox = block.geobox
        pixel = float(abs(gbox.resolution.x))
        prob_up = upsample_bilinear(p.prob, p.geobox, gbox)
        prob_ok = np.isfinite(prob_up) & valid
        classes["CLOUD_PROB"], cloud, extra = probability_products(prob_up, prob_ok, pixel, cfg)
        if self.cirrus:
            assert cfg.cirrus_threshold is not None
            b10_up = upsample_bilinear(p.b10, p.geobox, gbox)
            r_dil = radius_px(cfg.dilation_size, pixel)
            cirrus = cirrus_mask(block, b10_up, prob_ok, cfg.cirrus_threshold, r_dil, {})
            cloud = cloud | cirrus
            planes[_CIRRUS] = cirrus
            thin = np.greater(
                b10_up,
                cfg.cirrus_threshold,
                where=np.isfinite(b10_up) & prob_ok,
                out=np.zeros(prob_ok.shape, dtype=bool),
            )
            snow, _ = snow_mask(block)
            if snow is not None:
                planes[_SNOW] = thin & snow
        classes.update(extra)
        return cloud, prob_ok

    def _temporal(self, block: Scene, candidates: BoolA) -> BoolA:
        """The pixels of ``candidates`` the multi-temporal test calls cloud."""
        if "clear_reference" not in block.aux:
            why = block.missing_aux.get("clear_reference", "not in block.aux")
            raise StepError(
                f"{self.item_id}: the block has no clear-sky reference, which the scene-wide "
                f"analysis found: {why}"
            )
        return temporal_test(block, self.cfg, candidates, {})

    def _shadows(self, block: Scene, cloud: BoolA, known: BoolA) -> BoolA:
        """SCL shadows and/or the coarse projection on the block's dark NIR, off ``cloud``."""
        cfg = self.cfg
        shadow = np.zeros(block.geobox.shape.yx, dtype=bool)
        if cfg.shadows in ("scl", "both"):
            shadow |= block.classes["SCL"] == SCL_SHADOW
        if self.projected is not None:
            nir_src = self.shadow_results["shadow_nir"]
            if nir_src == "toa:B08":
                assert self.probability is not None
                p = self.probability
                nir = upsample_bilinear(p.b08, p.geobox, block.geobox)
            else:
                nir = np.asarray(block.bands[nir_src.removeprefix("l2a:")], dtype=np.float32)
            dark = np.less(
                nir, cfg.dark_nir, where=np.isfinite(nir), out=np.zeros(shadow.shape, bool)
            )
            shadow |= upsample_nearest(self.projected, self.coarse, block.geobox) & dark
        shadow &= known & ~cloud
        return shadow

    def apply_late(self, block: Scene) -> Scene:
        """The deferred multi-temporal test (``defer_temporal``) on the block as the steps
        after this one left it: clear and shadow pixels it flags become cloud, as
        :meth:`~.step.CloudMaskStep.apply_deferred_temporal` does."""
        if not (self.temporal_applies and self.defer_temporal):
            return block
        mask = np.array(block.classes["CLOUD_MASK"], dtype=np.uint8, copy=True)
        hit = self._temporal(block, (mask == MASK_CLEAR) | (mask == MASK_SHADOW))
        mask[hit] = MASK_CLOUD
        tally = block.aux.get(TALLY_AUX)
        if tally is None or tally.geobox != block.geobox:
            raise StepError(f"{self.item_id}: apply_late got a block apply did not make")
        planes = np.array(tally.data, copy=True)
        planes[_TEMPORAL] = hit
        aux = {**block.aux, TALLY_AUX: AuxLayer(planes, block.geobox, TALLY_PLANES, self.name)}
        return block.replace(classes={**block.classes, "CLOUD_MASK": mask}, aux=aux)

    def tally(self, block: Scene) -> None:
        """Add up the mask's classes, the pixels with a probability and the temporal and
        cirrus pixels over the block's own pixels."""
        c = self.counts
        c.mask = c.mask + MaskCounts.of(np.asarray(block.classes["CLOUD_MASK"]))
        if self.probability is not None:
            c.prob_valid += int((np.asarray(block.classes["CLOUD_PROB"]) != PROB_NODATA).sum())
        if not self._tally_planes:
            return
        layer = block.aux.get(TALLY_AUX)
        if layer is None:
            raise StepError(
                f"{self.item_id}: the block has no {TALLY_AUX!r} in its aux: the driver must "
                "keep block.aux through the halo cut for the cloud step's record"
            )
        planes = _window(layer, block.geobox)
        for i in range(len(TALLY_PLANES)):
            c.planes[i] += int(planes[i].sum())

    def finish(self, shell: Scene) -> StepResult:
        """The record of the whole scene from the blocks' counts, ``eo:cloud_cover`` and the
        layers' info in ``shell``, and whether the scene is written."""
        cfg, c = self.cfg, self.counts
        results = dict(self.head)
        if self.cirrus:
            base = max(c.prob_valid, 1)
            if self.snow_from is not None:
                results["cirrus_snow_excluded_fraction"] = round(float(c.planes[_SNOW]) / base, 6)
                results["cirrus_snow_from"] = self.snow_from
            results["cirrus_fraction"] = round(float(c.planes[_CIRRUS]) / base, 6)
        if self.temporal is not None:
            temporal = dict(self.temporal)
            if self.temporal_applies:
                hits = c.planes[_TEMPORAL]
                candidates = c.mask.known - c.mask.cloud + hits
                temporal["added_fraction"] = round(float(hits) / max(candidates, 1), 6)
            if self.defer_temporal:
                temporal["on_coregistered_pixels"] = self.coregistered
            results["temporal"] = temporal
        results.update(self.shadow_results)
        props = dict(shell.properties)
        props[CLOUD_TESTS_PROPERTY] = cloud_tests(cfg, results)
        skip = summarise_counts(c.mask, cfg, results, props)
        log.info(
            "%s: cloud %.1f %%, shadow %.1f %% of %d valid pixels (%s; in blocks)",
            self.item_id,
            100.0 * results["cloud_fraction"],
            100.0 * results["shadow_fraction"],
            c.mask.known,
            results.get("toa_source", "scl"),
        )
        record = StepRecord(self.name, self.version, parameters=parameters(cfg), results=results)
        new = shell.replace(properties=props, layer_info={**shell.layer_info, **self.infos})
        return StepResult(new, record, skip=skip)


def _window(layer: AuxLayer, geobox: GeoBox) -> np.ndarray:
    """``layer``'s data over ``geobox``, a window of its grid."""
    a, b = layer.geobox.affine, geobox.affine
    r0, c0 = round((b.f - a.f) / a.e), round((b.c - a.c) / a.a)
    h, w = geobox.shape.yx
    if r0 < 0 or c0 < 0 or r0 + h > layer.geobox.shape.y or c0 + w > layer.geobox.shape.x:
        raise StepError(f"{geobox} is not inside the grid of the {TALLY_AUX!r} layer")
    out: np.ndarray = np.asarray(layer.data)[:, r0 : r0 + h, c0 : c0 + w]
    return out
