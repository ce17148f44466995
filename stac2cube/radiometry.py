"""Per-item radiometric harmonisation of Sentinel-2 digital numbers.

From processing baseline 04.00 on, ESA adds 1000 to every reflectance DN; which DNs carry the
offset is decided per item, from its metadata (override, provider flags, raster scale/offset,
processing baseline), never from its date. The rules, first match wins, and the providers'
quirks are in docs/radiometry.md.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pystac

from stac2cube.bands import S2_BANDS, normalize_band_name
from stac2cube.errors import ConfigError, MissingAssetError, RadiometryError

__all__ = [
    "BASELINE_OFFSET_THRESHOLD",
    "ESA_OFFSET",
    "ESA_SCALE",
    "Radiometry",
    "RadiometryOverride",
    "StorageDtype",
    "band_radiometry",
    "baseline_from_properties",
    "baseline_has_offset",
    "from_reflectance",
    "processing_baseline",
    "storage_encoding",
    "to_reflectance",
]

logger = logging.getLogger(__name__)

ESA_SCALE = 1e-4
"""Reflectance per DN of Sentinel-2 L1C/L2A reflectance bands (1 / QUANTIFICATION_VALUE)."""

ESA_OFFSET = -0.1
"""Reflectance offset of baselines ≥ 04.00 (RADIO_ADD_OFFSET / BOA_ADD_OFFSET of -1000 DN)."""

AUX_SCALE = 1e-3
"""Scale of the L2A AOT and WVP layers (AOT/WVP_QUANTIFICATION_VALUE = 1000; no offset)."""

BASELINE_OFFSET_THRESHOLD = (4, 0)
"""First processing baseline whose DNs carry the +1000 offset."""

_BASELINE_PROPERTIES = (
    "s2:processing_baseline",  # Planetary Computer, Earth Search v1
    "processing:version",  # CDSE (STAC 1.1)
    "sentinel:processing_baseline",  # Earth Search v0 (2022 on)
)
_PRODUCT_ID_PROPERTIES = ("s2:product_uri", "sentinel:product_id", "s2:product_id")
_BOA_FLAG_PROPERTIES = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})_")
_BASELINE_VALUE = re.compile(r"^\s*[Nn]?(\d{1,2})\.?(\d{2})\s*$")

RadiometrySource = Literal[
    "raster:bands",
    "raster:scale/offset (asset)",
    "processing_baseline",
    "earthsearch:boa_offset_applied",
    "default",
    "override",
]
"""Where a :class:`Radiometry` came from (see the rules table in the module docstring)."""


@dataclass(frozen=True, slots=True)
class Radiometry:
    """How to turn the DNs of one asset into physical values: ``value = DN * scale + offset``."""

    scale: float
    """Multiplier applied to the DN (1e-4 for Sentinel-2 reflectance)."""

    offset: float
    """Added after scaling, in reflectance units (-0.1 ⇔ subtracting 1000 DN before scaling)."""

    nodata: float | None
    """The DN that marks missing pixels (0 for Sentinel-2), NaN for float data, None if none."""

    source: str
    """Which rule decided scale and offset, one of :data:`RadiometrySource`."""

    note: str = ""
    """Why, when it is not obvious (flags honoured, contradictions found); empty otherwise."""

    @property
    def offset_dn(self) -> float:
        """The offset expressed in DN (-1000.0 for baselines ≥ 04.00), i.e. ``offset / scale``."""
        return self.offset / self.scale


@dataclass(frozen=True, slots=True)
class RadiometryOverride:
    """Per-collection replacement for what the items say about scale and offset.

    Set in the configuration (``radiometry.offset`` of a collection) when a provider's metadata is
    missing or known to be wrong. A field left at None keeps the value the item's metadata gives
    (scale defaults to 1e-4 when the item says nothing). Applies to reflectance bands only; SCL,
    AOT and WVP keep their own encoding.
    """

    scale: float | None = None
    """Reflectance per DN, e.g. 1e-4; None keeps the item's value."""

    offset: float | None = None
    """Reflectance offset: -0.1 (DNs carry +1000) or 0.0 (they do not); None keeps the item's."""

    def __post_init__(self) -> None:
        if self.scale is not None and (not math.isfinite(self.scale) or self.scale == 0):
            raise ConfigError(
                f"radiometry.scale must be a finite non-zero number, not {self.scale}"
            )
        if self.offset is not None and not math.isfinite(self.offset):
            raise ConfigError(f"radiometry.offset must be a finite number, not {self.offset}")

    @property
    def is_set(self) -> bool:
        """True when at least one field overrides the item."""
        return self.scale is not None or self.offset is not None


# --------------------------------------------------------------------------------------------
# processing baseline


def _normalise_baseline(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = f"{float(value):.2f}"
    if not isinstance(value, str):
        return None
    match = _BASELINE_VALUE.match(value)
    if match is None:
        return None
    return f"{int(match.group(1)):02d}.{match.group(2)}"


def processing_baseline(item: pystac.Item) -> str | None:
    """The item's processing baseline as ``"NN.NN"`` (``"02.12"``, ``"05.11"``), None if unknown.

    Looked up in ``s2:processing_baseline`` (Planetary Computer, Earth Search v1),
    ``processing:version`` (CDSE, STAC 1.1), ``sentinel:processing_baseline``, then parsed from the
    ``_Nxxyy_`` part of ``s2:product_uri`` / ``sentinel:product_id`` / the item id.
    """
    return baseline_from_properties(item.id, item.properties)


def baseline_from_properties(item_id: str, props: Mapping[str, Any]) -> str | None:
    """:func:`processing_baseline` of an item given as its id and properties (raw JSON)."""
    for name in _BASELINE_PROPERTIES:
        baseline = _normalise_baseline(props.get(name))
        if baseline is not None:
            return baseline
    for text in [*(props.get(n) for n in _PRODUCT_ID_PROPERTIES), item_id]:
        if isinstance(text, str):
            match = _BASELINE_IN_ID.search(text)
            if match is not None:
                return f"{match.group(1)}.{match.group(2)}"
    return None


def baseline_has_offset(baseline: str) -> bool:
    """True when DNs of this baseline carry the +1000 offset (baseline ≥ 04.00).

    Raises:
        RadiometryError: ``baseline`` is not of the form ``"NN.NN"``.
    """
    norm = _normalise_baseline(baseline)
    if norm is None:
        raise RadiometryError(f"Cannot parse processing baseline {baseline!r} (expected 'NN.NN').")
    major, minor = (int(p) for p in norm.split("."))
    return (major, minor) >= BASELINE_OFFSET_THRESHOLD


# --------------------------------------------------------------------------------------------
# raster metadata


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in {"nan", "+nan", "-nan"}:
        return math.nan
    return None


def _first_raster_band(asset: pystac.Asset) -> dict[str, Any]:
    rbands = asset.extra_fields.get("raster:bands")
    if isinstance(rbands, list) and rbands and isinstance(rbands[0], dict):
        return cast(dict[str, Any], rbands[0])
    return {}


@dataclass(frozen=True, slots=True)
class _RasterScaling:
    scale: float
    offset: float
    source: RadiometrySource


def _raster_scaling(asset: pystac.Asset) -> _RasterScaling | None:
    """Scale/offset from the asset's raster metadata, None when it gives neither."""
    fields = asset.extra_fields
    scale, offset = _number(fields.get("raster:scale")), _number(fields.get("raster:offset"))
    if scale is not None or offset is not None:
        return _RasterScaling(
            1.0 if scale is None else scale,
            0.0 if offset is None else offset,
            "raster:scale/offset (asset)",
        )
    band = _first_raster_band(asset)
    scale, offset = _number(band.get("scale")), _number(band.get("offset"))
    if scale is not None or offset is not None:
        return _RasterScaling(
            1.0 if scale is None else scale,
            0.0 if offset is None else offset,
            "raster:bands",
        )
    return None


def _nodata(asset: pystac.Asset) -> float:
    value = _number(_first_raster_band(asset).get("nodata"))
    if value is None:
        value = _number(asset.extra_fields.get("nodata"))
    if value is None:
        bands = asset.extra_fields.get("bands")
        if isinstance(bands, list) and bands and isinstance(bands[0], dict):
            value = _number(bands[0].get("nodata"))
    return 0.0 if value is None else value


def _boa_offset_flag(item: pystac.Item) -> tuple[str, bool] | None:
    for name in _BOA_FLAG_PROPERTIES:
        value = item.properties.get(name)
        if isinstance(value, bool):
            return name, value
    return None


# --------------------------------------------------------------------------------------------
# the rules


def _auxiliary(item: pystac.Item, asset_key: str, asset: pystac.Asset) -> Radiometry:
    nodata = _nodata(asset)
    raster = _raster_scaling(asset)
    if raster is None:
        return Radiometry(AUX_SCALE, 0.0, nodata, "default", "AOT/WVP: quantification value 1000")
    if raster.offset != 0.0:
        # ESA defines no additive offset for AOT/WVP; an offset here means the provider copied the
        # reflectance encoding onto these layers (CDSE does: 1e-4 / -0.1), so its scale is suspect.
        note = (
            f"item {item.id}: asset {asset_key!r} lists scale {raster.scale} / offset "
            f"{raster.offset}, the reflectance encoding; AOT/WVP have no offset and a "
            f"quantification value of 1000, so scale {AUX_SCALE} / offset 0 is used instead"
        )
        logger.warning(note)
        return Radiometry(AUX_SCALE, 0.0, nodata, "default", note)
    return Radiometry(raster.scale, 0.0, nodata, raster.source)


def _contradiction(item: pystac.Item, asset_key: str, baseline: str | None, offset: float) -> str:
    """A warning when raster metadata and the processing baseline disagree, else ""."""
    if baseline is None:
        return ""
    try:
        expects_offset = baseline_has_offset(baseline)
    except RadiometryError:
        return ""
    has_offset = offset != 0.0
    if expects_offset == has_offset:
        return ""
    expected = ESA_OFFSET if expects_offset else 0.0
    note = (
        f"item {item.id}: asset {asset_key!r} raster metadata gives offset {offset} but "
        f"processing baseline {baseline} implies {expected}; trusting the raster metadata. "
        "If pixels look shifted by 0.1, set radiometry.offset for this collection."
    )
    logger.warning(note)
    return note


def _from_item(item: pystac.Item, asset_key: str, asset: pystac.Asset, band: str) -> Radiometry:
    """Rules 2 to 5 for a reflectance band."""
    nodata = _nodata(asset)
    raster = _raster_scaling(asset)
    baseline = processing_baseline(item)

    flag = _boa_offset_flag(item)
    if flag is not None and flag[1] and not asset_key.endswith("-jp2"):
        name = flag[0]
        listed = "" if raster is None else f" (raster metadata lists offset {raster.offset})"
        note = (
            f"item {item.id}: {name} is true, so the 1000 DN offset was already removed from "
            f"these pixels; offset 0 is used{listed}. This flag has been reported wrong on some "
            "items (Element84/earth-search#66, #71); if a collection is mislabelled, set "
            "radiometry.offset for it."
        )
        scale = ESA_SCALE if raster is None else raster.scale
        return Radiometry(scale, 0.0, nodata, "earthsearch:boa_offset_applied", note)

    if raster is not None:
        note = _contradiction(item, asset_key, baseline, raster.offset)
        return Radiometry(raster.scale, raster.offset, nodata, raster.source, note)

    if baseline is None:
        collection = item.collection_id or "<no collection>"
        raise RadiometryError(
            f"Item {item.id!r} (collection {collection}) has no raster scale/offset for band "
            f"{band} (asset {asset_key!r}) and no processing baseline, so it is unknown whether "
            "its DNs carry the +1000 offset of baselines ≥ 04.00. Set radiometry.offset for "
            f"collection {collection} in the configuration (-0.1 if they do, 0 if they do not)."
        )
    offset = ESA_OFFSET if baseline_has_offset(baseline) else 0.0
    return Radiometry(ESA_SCALE, offset, nodata, "processing_baseline", f"baseline {baseline}")


def band_radiometry(
    item: pystac.Item,
    asset_key: str,
    *,
    band: str,
    override: RadiometryOverride | None = None,
) -> Radiometry:
    """Decide how to convert the DNs of ``item.assets[asset_key]`` (holding ``band``) to values.

    The rules are in the module docstring. Warnings (contradictory metadata) are logged on this
    module's logger and repeated in :attr:`Radiometry.note`.

    Args:
        item: the source STAC item.
        asset_key: the asset to read, as returned by :func:`stac2cube.bands.find_asset`.
        band: the band the asset holds (any name :func:`~stac2cube.bands.normalize_band_name`
            accepts).
        override: the collection's configured override; it wins for reflectance bands.

    Raises:
        ItemError: ``asset_key`` is not an asset of ``item`` (as :class:`MissingAssetError`).
        RadiometryError: scale/offset cannot be determined and no override gives the offset.
        ConfigError: ``band`` is not a Sentinel-2 band.
    """
    info = S2_BANDS[normalize_band_name(band)]
    asset = item.assets.get(asset_key)
    if asset is None:
        raise MissingAssetError(
            f"Item {item.id!r} has no asset {asset_key!r} (band {info.name}); "
            f"its assets are: {', '.join(sorted(item.assets))}."
        )
    if info.kind == "classification":
        return Radiometry(1.0, 0.0, _nodata(asset), "default", "classification: class codes")
    if info.kind == "auxiliary":
        return _auxiliary(item, asset_key, asset)

    if override is None or not override.is_set:
        return _from_item(item, asset_key, asset, info.name)

    try:
        base: Radiometry | None = _from_item(item, asset_key, asset, info.name)
    except RadiometryError:
        if override.offset is None:
            raise
        base = None
    scale = override.scale if override.scale is not None else (base.scale if base else ESA_SCALE)
    offset = override.offset if override.offset is not None else (base.offset if base else 0.0)
    item_said = (
        "the item gave no usable scale/offset"
        if base is None
        else f"the item gave scale {base.scale} / offset {base.offset} ({base.source})"
    )
    nodata = base.nodata if base is not None else _nodata(asset)
    return Radiometry(scale, offset, nodata, "override", f"configured override; {item_said}")


# --------------------------------------------------------------------------------------------
# pixels


def to_reflectance(dn: npt.ArrayLike, rad: Radiometry) -> npt.NDArray[np.float32]:
    """Convert DNs to float32 reflectance (``DN * scale + offset``); nodata pixels become NaN.

    A nodata DN of 0 becomes NaN, never ``0 * scale + offset`` (-0.1). NaN inputs stay NaN.
    """
    arr = np.asarray(dn)
    out = arr.astype(np.float32, copy=True)
    out *= np.float32(rad.scale)
    out += np.float32(rad.offset)
    if rad.nodata is not None:
        if math.isnan(rad.nodata):
            if np.issubdtype(arr.dtype, np.floating):
                out[np.isnan(arr)] = np.nan
        else:
            out[arr == rad.nodata] = np.nan
    return out


StorageDtype = Literal["int16", "uint16", "float32"]
"""Dtypes stac2cube writes reflectance COGs in."""

_STORAGE: dict[str, tuple[float, float, float]] = {
    # int16: signed, keeps negative reflectance; -32768 is nodata.
    "int16": (ESA_SCALE, 0.0, -32768.0),
    # uint16: ESA's own ≥ 04.00 encoding (DN = 10000 * refl + 1000), so reflectance down to
    # -0.0999 survives; 0 is nodata, lower values clip to DN 1.
    "uint16": (ESA_SCALE, ESA_OFFSET, 0.0),
    "float32": (1.0, 0.0, math.nan),
}


def storage_encoding(dtype: str = "int16") -> tuple[float, float, float]:
    """``(scale, offset, nodata)`` with which stac2cube stores reflectance in ``dtype``.

    ================  =======  ======  ========  ============================================
    dtype             scale    offset  nodata    representable reflectance
    ================  =======  ======  ========  ============================================
    ``int16``         1e-4     0       -32768    -3.2767 .. 3.2767
    ``uint16``        1e-4     -0.1    0         -0.0999 .. 6.4535 (ESA's ≥ 04.00 encoding)
    ``float32``       1        0       NaN       any
    ================  =======  ======  ========  ============================================

    The writer records these values in ``raster:bands`` (``scale``, ``offset``, ``nodata``).

    Raises:
        ConfigError: ``dtype`` is not one of int16, uint16, float32.
    """
    try:
        return _STORAGE[dtype]
    except KeyError:
        raise ConfigError(
            f"Unsupported storage dtype {dtype!r}; use one of {', '.join(_STORAGE)}."
        ) from None


def from_reflectance(
    refl: npt.ArrayLike,
    *,
    dtype: str = "int16",
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
) -> npt.NDArray[Any]:
    """Encode reflectance for storage: ``DN = round((refl - offset) / scale)``.

    Scale, offset and nodata default to :func:`storage_encoding` of ``dtype``. Rounding is half to
    even; values outside the dtype's range clip to its ends, skipping the nodata value (int16:
    -32767..32767, uint16: 1..65535), so no valid pixel can turn into nodata. NaN becomes nodata.
    For float32 the result is ``(refl - offset) / scale`` without rounding and NaN stays NaN.

    Raises:
        ConfigError: unsupported ``dtype`` or a zero ``scale``.
    """
    d_scale, d_offset, d_nodata = storage_encoding(dtype)
    scale = d_scale if scale is None else scale
    offset = d_offset if offset is None else offset
    nodata = d_nodata if nodata is None else nodata
    if scale == 0 or not math.isfinite(scale):
        raise ConfigError(f"storage scale must be finite and non-zero, not {scale}")

    values = np.asarray(refl, dtype=np.float64)
    if dtype == "float32":
        out = ((values - offset) / scale).astype(np.float32)
        if not math.isnan(nodata):
            out[np.isnan(values)] = np.float32(nodata)
        return out

    info = np.iinfo(np.dtype(dtype))
    lo, hi = float(info.min), float(info.max)
    if nodata == lo:
        lo += 1
    elif nodata == hi:
        hi -= 1
    q = np.clip(np.rint((values - offset) / scale), lo, hi)
    q[np.isnan(values)] = nodata
    return q.astype(np.dtype(dtype))
