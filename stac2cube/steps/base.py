"""The one small protocol every processing step follows.

A step has a ``name`` and a ``version``, a ``prepare(cfg)`` that does the I/O it needs once per
worker (loading a model), and a pure ``run(scene, cfg)``: pixels and their grid in, pixels and a
record of what it did out. ``run`` does no file or network I/O and prints nothing; the pipeline
reads the inputs, runs the steps in order and writes what they return. Steps are found through
:mod:`stac2cube.steps.registry`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import numpy as np
from odc.geo.geobox import GeoBox

from ..provenance import StepRecord

C_contra = TypeVar("C_contra", contravariant=True)


@dataclass(frozen=True)
class LayerInfo:
    """How a class/mask layer is written: its nodata value, class names and description."""

    nodata: int = 0
    classes: Mapping[int, str] = field(default_factory=dict)
    """Value → name (STAC classification extension); empty for continuous layers."""
    description: str = ""
    roles: tuple[str, ...] = ("data",)
    overview_resampling: str = "nearest"
    """``nearest`` for classes; ``average`` for continuous layers such as a probability."""
    bitfields: Mapping[int, str] = field(default_factory=dict)
    """Bit offset → name of a one-bit flag (STAC classification ``bitfields``), for a layer
    whose values pack flags; empty otherwise."""
    scale: float = 1.0
    """Stored value × scale + offset is the physical value (e.g. angles in 0.01 degree)."""
    offset: float = 0.0
    unit: str | None = None
    """Unit of the physical value (``deg``); None for classes and flags."""


@dataclass(frozen=True)
class AuxLayer:
    """An input a step needs that is not written (e.g. L1C TOA bands for s2cloudless).

    ``data`` is ``(len(bands), y, x)`` float32 with NaN for nodata, on its own ``geobox`` (which
    covers the same extent as the scene, possibly at another resolution).
    """

    data: np.ndarray
    geobox: GeoBox
    bands: tuple[str, ...]
    source: str
    """Where it came from, e.g. ``l1c:<item id>`` or ``l2a``."""
    datetime: dt.datetime | None = None
    """When it was observed, where a step needs it: the median acquisition time of the scenes a
    composite reference was built from (None: not known or not needed)."""
    version: str | None = None
    """Which stored version of a catalog reference this is (its collection asset key, e.g.
    ``cloud-reference-v2``); None for other inputs."""


@dataclass(frozen=True)
class GridLayer:
    """A layer written on a grid of its own, e.g. 2.5 m super-resolved reflectance.

    Reflectance layers (``band`` set) are float32 with NaN for nodata and are written with the
    output encoding; class layers (``band`` None) are uint8 and written as described by ``info``.
    """

    data: np.ndarray
    geobox: GeoBox
    band: str | None
    """The Sentinel-2 band it derives from (``B04``), for the asset's ``eo:bands``."""
    description: str = ""
    info: LayerInfo | None = None
    """How a class layer is written (nodata, classes); None for reflectance layers."""


@dataclass(frozen=True)
class Sidecar:
    """A small non-raster file a step wants written beside the scene's COGs as an asset,
    e.g. the co-registration tie-point table as GeoJSON."""

    filename: str
    data: bytes
    media_type: str
    title: str
    roles: tuple[str, ...] = ("metadata",)


@dataclass(frozen=True)
class Scene:
    """The pixels of one scene on the target grid.

    ``bands`` hold surface reflectance (float32, NaN = nodata); ``classes`` hold class or mask
    layers (uint8, 0 = nodata), e.g. ``SCL``. ``properties`` carry item properties that steps
    set (e.g. ``eo:cloud_cover`` over the AOI).
    """

    item_id: str
    geobox: GeoBox
    bands: Mapping[str, np.ndarray]
    classes: Mapping[str, np.ndarray] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    source_properties: Mapping[str, Any] = field(default_factory=dict)
    layer_info: Mapping[str, LayerInfo] = field(default_factory=dict)
    """How each ``classes`` layer is written (default: nodata 0, SCL classes for ``SCL``)."""
    aux: Mapping[str, AuxLayer] = field(default_factory=dict)
    """Inputs for steps that are not written (e.g. ``"toa"``: L1C bands)."""
    missing_aux: Mapping[str, str] = field(default_factory=dict)
    """Inputs a step asked for that the pipeline could not provide, with why (e.g. ``"toa"``:
    ``"no L1C twin"`` or ``"L1C read refused: ..."``); the step decides what that means."""
    layers: Mapping[str, GridLayer] = field(default_factory=dict)
    """Layers on other grids, by asset key (e.g. ``"B04_sr"``: 2.5 m reflectance)."""
    sidecars: Mapping[str, Sidecar] = field(default_factory=dict)
    """Non-raster assets by asset key (e.g. ``"coreg_tiepoints"``)."""

    def replace(self, **changes: Any) -> Scene:
        """A copy with some fields changed (steps never mutate their input)."""
        return dataclasses.replace(self, **changes)

    def valid_mask(self) -> np.ndarray:
        """Pixels where every reflectance band has data."""
        masks = [np.isfinite(a) for a in self.bands.values()]
        if not masks:
            return np.zeros(self.geobox.shape.yx, dtype=bool)
        valid: np.ndarray = np.logical_and.reduce(masks)
        return valid


@dataclass(frozen=True)
class Skip:
    """Why a step decided that a scene must not be written."""

    code: str
    """A short machine-readable reason, e.g. ``too-cloudy``."""
    message: str
    """What happened, for the run's log and summary."""


UNSPECIFIED_SKIP: Final = "unspecified"
"""The :attr:`Skip.code` of a result made with ``write=False`` and no ``skip``."""


@dataclass(frozen=True)
class StepResult:
    """What a step returns: the new scene and the record that goes into provenance.

    A step that decides the scene must not be written says why with ``skip``. ``write`` is kept
    for steps that set it directly and always equals ``skip is None``: ``skip`` set makes
    ``write`` False, and ``write=False`` without a reason gets a ``Skip`` with code
    :data:`UNSPECIFIED_SKIP`.
    """

    scene: Scene
    record: StepRecord
    write: bool = True
    """False when the step decided the scene must not be written (e.g. too cloudy)."""
    skip: Skip | None = None
    """Why the scene must not be written; None: write it."""

    def __post_init__(self) -> None:
        if self.skip is not None:
            object.__setattr__(self, "write", False)
        elif not self.write:
            message = f"step {self.record.name} decided not to write the scene"
            object.__setattr__(self, "skip", Skip(UNSPECIFIED_SKIP, message))


@dataclass(frozen=True)
class AuxRequest:
    """What a step asks the pipeline to read, on a grid of ``resolution`` over the scene's extent:
    bands of the L1C twin, of the L2A item, or of the catalog's co-registration reference image.
    What cannot be provided (no L1C twin, a refused read) is named in ``Scene.missing_aux``."""

    bands: tuple[str, ...]
    resolution: float
    level: str = "l1c"
    """``l1c`` (TOA of the L1C twin; never replaced by L2A bands), ``l2a``, ``reference`` (the
    catalog's stored co-registration reference image; ``bands`` names the reference band) or
    ``cloud-reference`` (the clear-sky composite of the multi-temporal cloud test) or
    ``angles`` (the per-pixel sun zenith, sun azimuth, view zenith and view azimuth in degrees,
    :data:`~stac2cube.angles.ANGLE_BANDS`, interpolated from the source's granule metadata)."""


@runtime_checkable
class Step(Protocol[C_contra]):
    """A processing step."""

    name: str
    version: str

    def prepare(self, cfg: C_contra) -> None:
        """Do the I/O the step needs before :meth:`run` (e.g. load a model) and keep the result
        on the step; called once per worker with the configuration ``run`` will get."""
        ...

    def required_aux(self, cfg: C_contra) -> Mapping[str, AuxRequest]:
        """The auxiliary inputs the pipeline must read into ``scene.aux`` before :meth:`run`."""
        ...

    def run(self, scene: Scene, cfg: C_contra) -> StepResult:
        """Process ``scene`` with configuration ``cfg``; pure, no I/O (:meth:`prepare` has done
        it)."""
        ...


# --- steps in blocks --------------------------------------------------------------------------
#
# A whole 110 km tile does not fit in memory band by band (docs/hpc.md). A step that can run in
# blocks (:class:`BlockStep`) splits its work in two: a scene-wide analysis, :meth:`BlockStep.plan`,
# which reads what it needs through a :class:`SceneSource` (a coarse grid, some windows, never
# the whole scene at full resolution), and a :class:`StepPlan` the pipeline applies to each
# block of the scene (with a halo of neighbours where the step needs them) as it streams the
# scene from its sources into its COGs. See docs/architecture.md, "Steps in blocks".


@runtime_checkable
class SceneSource(Protocol):
    """A scene read piece by piece: what the scene-wide analysis of a :class:`BlockStep` sees.
    The whole scene is never in memory at full resolution."""

    item_id: str
    geobox: GeoBox
    """The target grid of the whole scene."""
    band_names: tuple[str, ...]
    """The configured bands, reflectance and class layers (``SCL``)."""
    source_properties: Mapping[str, Any]
    """The source item's properties (sun angles, ``datetime``)."""
    missing_aux: dict[str, str]
    """Inputs :meth:`aux` could not provide, by name, with why (e.g. ``"toa"``:
    ``"no L1C twin"``)."""

    def block(self, window: Any) -> Scene:
        """Every configured band over ``window`` (a :class:`rasterio.windows.Window` of
        :attr:`geobox`, clipped to it), harmonised, with the plans of the steps before this one
        applied: a :class:`Scene` on ``geobox[window]``. Reads from the sources each time."""
        ...

    def aux(self, name: str, request: AuxRequest, geobox: GeoBox | None = None) -> AuxLayer | None:
        """The input ``request`` (as :meth:`Step.required_aux` names them: ``l1c``, ``l2a``,
        ``reference``, ``cloud-reference``) on ``geobox``, any grid of the scene's CRS over
        part of the scene (None: the whole scene on a grid of ``request.resolution``, 0 being
        the target grid). ``l2a`` reads the scene's own bands: a decimated read (reflectance
        averaged, classes nearest) when the grid is coarser. None when it cannot be provided,
        with why in :attr:`missing_aux`."""
        ...


@runtime_checkable
class StepPlan(Protocol):
    """What a :class:`BlockStep` decided from its scene-wide analysis, applied block by block.

    The pipeline calls, for every block: :meth:`apply` of each step's plan in run order on the
    block grown by the sum of their :attr:`halo`, then :meth:`apply_late` of each, then cuts the
    halo off and calls :meth:`tally` of each on the block's own pixels before writing them. At
    the end it calls :meth:`finish` for the record. ``apply`` and ``apply_late`` are pure."""

    halo: int
    """Pixels of neighbours :meth:`apply` needs on each side of a block for its own pixels to
    be those of the scene processed whole (0: none)."""
    block_aux: Mapping[str, AuxRequest]
    """Inputs read onto each block's grid (``resolution`` 0) into ``block.aux`` before
    :meth:`apply` (e.g. the clear-sky reference of the multi-temporal test)."""
    skip: Skip | None
    """Set when the analysis alone says the scene must not be written (nothing is streamed)."""

    def apply(self, block: Scene) -> Scene:
        """The block processed by the step: same grid, bands changed, class layers added."""
        ...

    def apply_late(self, block: Scene) -> Scene:
        """What the step applies after every step's :meth:`apply` (the cloud step's deferred
        multi-temporal test, on co-registered pixels); most plans return ``block``."""
        ...

    def tally(self, block: Scene) -> None:
        """Count what the record needs over the block's own pixels (halo cut off), as written."""
        ...

    def finish(self, shell: Scene) -> StepResult:
        """The step's result once every block is written: ``shell`` (the scene without pixels,
        with the properties and sidecars of the steps so far) with this step's properties and
        sidecars, the record, and whether the scene is written after all (``skip``)."""
        ...


@runtime_checkable
class BlockStep(Step[C_contra], Protocol):
    """A step that can also run in blocks (see :class:`StepPlan`)."""

    def in_blocks(self, cfg: C_contra) -> bool:
        """Whether this configuration runs in blocks (else the pipeline holds the scene whole)."""
        ...

    def plan(self, source: SceneSource, cfg: C_contra) -> StepPlan:
        """The scene-wide analysis; reads through ``source`` only. Raises as :meth:`run`
        does."""
        ...
