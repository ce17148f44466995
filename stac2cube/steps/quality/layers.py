"""The quality layers of a scene (or a block of it), pixel by pixel, and the bit layout of the
packed ``QA`` layer. Pure numpy: the same for a scene held whole and for each of its blocks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from ...bands import (
    CLOUD_TESTS_PROPERTY,
    MASK_CLOUD,
    MASK_NODATA,
    MASK_SHADOW,
    PROB_NODATA,
    S2_BANDS,
    SCL_SATURATED,
    SCL_SNOW,
    SCL_WATER,
)
from ..base import LayerInfo, Scene

BoolA = NDArray[np.bool_]

MASK_FILL: Final = 255
"""Nodata of the one-flag layers (``CLOUD``, ``SNOW_ICE``, ...): no data or not assessed."""
ANGLE_NODATA: Final = 65535
ANGLE_SCALE: Final = 0.01


@dataclass(frozen=True)
class QaBit:
    """One bit of the ``QA`` layer."""

    bit: int
    name: str
    meaning: str


QA_BITS: Final[tuple[QaBit, ...]] = (
    QaBit(0, "nodata", "no data: a reflectance band has no value (the pixel's value is 1)"),
    QaBit(1, "cloud", "cloud, as the cloud step's CLOUD_MASK says"),
    QaBit(2, "cloud_shadow", "cloud shadow, as the cloud step's CLOUD_MASK says"),
    QaBit(3, "snow_ice", "snow or ice: Sen2Cor SCL class 11 of the source"),
    QaBit(4, "water", "water: Sen2Cor SCL class 6 of the source"),
    QaBit(5, "saturation", "at least one band saturated (DN at the saturation value, or SCL 1)"),
    QaBit(6, "incomplete_testing", "a configured cloud test could not run on this pixel"),
    QaBit(7, "low_sun", "sun zenith above steps.quality.low_sun_zenith"),
    QaBit(8, "no_scl", "no SCL for this pixel: snow/ice and water were not assessed"),
    QaBit(9, "no_angles", "no per-pixel angles: low sun was not assessed"),
)
"""The bits of ``QA`` (uint16), FORCE-QAI style: a bit set means the flag holds."""
QA_NODATA: Final = 1
"""``QA`` of a pixel without data: only bit 0 set."""

FLAG_LAYERS: Final[Mapping[str, tuple[str, str, str]]] = {
    "CLOUD": ("cloud", "cloud", "cloud (1) or not (0), from the cloud step's CLOUD_MASK"),
    "CLOUD_SHADOW": (
        "cloud-shadow",
        "cloud_shadow",
        "cloud shadow (1) or not (0), from CLOUD_MASK",
    ),
    "SNOW_ICE": (
        "snow-ice",
        "snow_ice",
        "snow or ice (1) or not (0): Sen2Cor SCL class 11 of the source",
    ),
    "LAND_WATER": (
        "land-water",
        "water",
        "water (1) or land (0): Sen2Cor SCL class 6 of the source",
    ),
    "INCOMPLETE_TESTING": (
        "incomplete-testing",
        "incomplete_testing",
        "1 where a configured cloud test could not run (no L1C, no clear-sky reference, nodata "
        "in an input, no cloud step), 0 where every test ran",
    ),
}
"""The one-flag layers: asset key → (CEOS-ARD role, flag name as in :data:`QA_BITS`,
description)."""
ANGLE_LAYERS: Final[Mapping[str, tuple[str, str]]] = {
    "SUN_ELEVATION": ("sun-elevation", "sun elevation angle"),
    "SUN_AZIMUTH": ("sun-azimuth", "sun azimuth angle"),
    "VIEW_INCIDENCE": ("incidence-angle", "view incidence (zenith) angle, mean of the bands"),
    "VIEW_AZIMUTH": ("azimuth", "view azimuth angle, mean of the bands"),
}


def saturation_reflectance(saturation_dn: int) -> float:
    """The lowest reflectance a saturated DN becomes under ESA's encodings (scale 0.0001,
    offset 0 or -0.1): pixels at or above it are saturated."""
    return saturation_dn * 1e-4 - 0.1 - 1e-4


def band_order(scene: Scene) -> tuple[str, ...]:
    """The reflectance bands of ``scene`` in Sentinel-2 order: bit ``i`` of ``SATURATION``."""
    order = list(S2_BANDS)
    return tuple(sorted(scene.bands, key=lambda b: order.index(b) if b in order else len(order)))


def layer_infos(
    bands: tuple[str, ...], source: str, *, angles: bool, cloud: bool, scl: bool
) -> dict[str, LayerInfo]:
    """How each quality layer is written (nodata, classes or bits, roles, description).
    ``QA`` takes the CEOS-ARD roles of the flags it holds: cloud and shadow only from a cloud
    step (``cloud``), snow/ice and land/water only from SCL (``scl``)."""
    roles = ["metadata", "saturation", "incomplete-testing"]
    if cloud:
        roles += ["cloud", "cloud-shadow"]
    if scl:
        roles += ["snow-ice", "land-water"]
    infos: dict[str, LayerInfo] = {
        "QA": LayerInfo(
            nodata=QA_NODATA,
            description="quality bits (see docs/ard.md): "
            + ", ".join(f"{b.bit} {b.name}" for b in QA_BITS),
            roles=tuple(roles),
            bitfields={b.bit: b.name for b in QA_BITS},
        ),
        "SATURATION": LayerInfo(
            nodata=np.iinfo(np.uint16).max,
            description="saturated bands, one bit each (bit i: the i-th band of "
            + ", ".join(bands)
            + f"), from the DN saturation value and the SCL of {source}",
            roles=("metadata", "saturation"),
            bitfields=dict(enumerate(bands)),
        ),
    }
    for key, (role, name, text) in FLAG_LAYERS.items():
        infos[key] = LayerInfo(
            nodata=MASK_FILL,
            classes={0: f"not_{name}", 1: name},
            description=text.replace("the source", source),
            roles=("metadata", role),
        )
    if angles:
        for key, (role, text) in ANGLE_LAYERS.items():
            infos[key] = LayerInfo(
                nodata=ANGLE_NODATA,
                description=f"{text}, degrees, from the granule metadata's 5 km grids",
                roles=("metadata", role),
                overview_resampling="average",
                scale=ANGLE_SCALE,
                unit="deg",
            )
    return infos


@dataclass
class Counts:
    """Pixels per flag, added up over blocks (the step's record)."""

    total: int = 0
    flags: dict[str, int] = field(default_factory=dict)

    def add(self, qa: NDArray[np.uint16]) -> None:
        self.total += int(qa.size)
        for b in QA_BITS:
            n = int(((qa >> b.bit) & 1).sum())
            self.flags[b.name] = self.flags.get(b.name, 0) + n

    def fractions(self) -> dict[str, float]:
        """Each flag's fraction of the pixels (nodata: of all; the others: of valid pixels)."""
        n = max(self.total, 1)
        valid = max(self.total - self.flags.get("nodata", 0), 1)
        out = {"nodata": round(self.flags.get("nodata", 0) / n, 6)}
        for b in QA_BITS[1:]:
            out[b.name] = round(self.flags.get(b.name, 0) / valid, 6)
        return out


def _angle_u16(deg: NDArray[np.float32]) -> NDArray[np.uint16]:
    out = np.full(deg.shape, ANGLE_NODATA, dtype=np.uint16)
    ok = np.isfinite(deg)
    out[ok] = np.clip(np.round(deg[ok] / ANGLE_SCALE), 0, ANGLE_NODATA - 1).astype(np.uint16)
    return out


def quality_layers(
    scene: Scene,
    bands: tuple[str, ...],
    *,
    saturation_dn: int,
    low_sun_zenith: float,
    angles: NDArray[np.float32] | None,
    write_angles: bool,
) -> dict[str, np.ndarray]:
    """The quality layers of ``scene`` (a whole scene or a block), by asset key.

    ``angles`` is ``(4, y, x)`` sun zenith, sun azimuth, view zenith, view azimuth on the
    scene's grid (None: not known). ``bands`` fixes the bit of each band in ``SATURATION``.
    """
    shape = scene.geobox.shape.yx
    refl = [np.asarray(scene.bands[b]) for b in bands]
    nodata: BoolA = (
        np.logical_or.reduce([~np.isfinite(a) for a in refl])
        if refl
        else np.ones(shape, dtype=bool)
    )
    scl = scene.classes.get("SCL")
    scl_a = np.asarray(scl) if scl is not None else None
    mask = scene.classes.get("CLOUD_MASK")
    mask_a = np.asarray(mask) if mask is not None else None

    # saturation, per band
    limit = saturation_reflectance(saturation_dn)
    sat_bits = np.zeros(shape, dtype=np.uint16)
    for i, a in enumerate(refl):
        with np.errstate(invalid="ignore"):
            hit = a >= limit
        sat_bits |= hit.astype(np.uint16) << np.uint16(i)
    scl_sat = scl_a == SCL_SATURATED if scl_a is not None else np.zeros(shape, dtype=bool)
    if scl_sat.any():  # SCL does not say which band: every band is flagged
        sat_bits[scl_sat] |= np.uint16((1 << len(bands)) - 1)
    saturated = sat_bits != 0
    # a saturated pixel is not nodata: a band at the saturation value can be NaN-free
    sat_layer = sat_bits.copy()
    sat_layer[nodata & ~saturated] = np.iinfo(np.uint16).max

    # cloud and shadow, and where testing was incomplete
    if mask_a is not None:
        cloud = mask_a == MASK_CLOUD
        shadow = mask_a == MASK_SHADOW
        incomplete = (mask_a == MASK_NODATA) | nodata
        prob = scene.classes.get("CLOUD_PROB")
        if prob is not None:
            incomplete |= np.asarray(prob) == PROB_NODATA
        tests = scene.properties.get(CLOUD_TESTS_PROPERTY, {})
        if any(str(v) != "run" for v in tests.values()):
            incomplete[:] = True
    else:
        cloud = shadow = np.zeros(shape, dtype=bool)
        incomplete = np.ones(shape, dtype=bool)

    # snow/ice and water from SCL
    if scl_a is not None:
        no_scl = scl_a == 0
        snow = scl_a == SCL_SNOW
        water = scl_a == SCL_WATER
    else:
        no_scl = np.ones(shape, dtype=bool)
        snow = water = np.zeros(shape, dtype=bool)

    if angles is not None:
        with np.errstate(invalid="ignore"):
            low_sun = angles[0] > low_sun_zenith
        no_angles = ~np.isfinite(angles[0])
    else:
        low_sun = np.zeros(shape, dtype=bool)
        no_angles = np.ones(shape, dtype=bool)

    flags = {
        "cloud": cloud,
        "cloud_shadow": shadow,
        "snow_ice": snow,
        "water": water,
        "saturation": saturated,
        "incomplete_testing": incomplete,
        "low_sun": low_sun,
        "no_scl": no_scl,
        "no_angles": no_angles,
    }
    qa = np.zeros(shape, dtype=np.uint16)
    for b in QA_BITS[1:]:  # bit 0, nodata, is the whole value below
        qa |= flags[b.name].astype(np.uint16) << np.uint16(b.bit)
    gone = nodata & ~saturated
    qa[gone] = QA_NODATA

    def flag_layer(flag: BoolA, unknown: BoolA) -> NDArray[np.uint8]:
        out = flag.astype(np.uint8)
        out[unknown] = MASK_FILL
        return out

    scl_unknown = gone | no_scl
    layers: dict[str, np.ndarray] = {
        "QA": qa,
        "SATURATION": sat_layer,
        "INCOMPLETE_TESTING": incomplete.astype(np.uint8),
    }
    if scl_a is not None:
        layers["SNOW_ICE"] = flag_layer(snow, scl_unknown)
        layers["LAND_WATER"] = flag_layer(water, scl_unknown)
    if mask_a is not None:
        cloud_unknown = gone | (mask_a == MASK_NODATA)
        layers["CLOUD"] = flag_layer(cloud, cloud_unknown)
        layers["CLOUD_SHADOW"] = flag_layer(shadow, cloud_unknown)
    if write_angles and angles is not None:
        zen, saz, vzen, vaz = (np.asarray(a, dtype=np.float32) for a in angles)
        layers["SUN_ELEVATION"] = _angle_u16(np.float32(90.0) - zen)
        layers["SUN_AZIMUTH"] = _angle_u16(saz % np.float32(360.0))
        layers["VIEW_INCIDENCE"] = _angle_u16(vzen)
        layers["VIEW_AZIMUTH"] = _angle_u16(vaz % np.float32(360.0))
    return layers
