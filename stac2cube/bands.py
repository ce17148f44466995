"""The Sentinel-2 band catalogue, a provider-independent band → asset lookup, and the class codes
of the layers items carry (SCL, CLOUD_MASK). How each provider keys the bands, and the order
:func:`find_asset` tries them in: docs/sources.md."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

import pystac

from stac2cube.errors import ConfigError, MissingAssetError

__all__ = [
    "CLOUD_TESTS_PROPERTY",
    "MASK_CLASSES",
    "MASK_CLEAR",
    "MASK_CLOUD",
    "MASK_NODATA",
    "MASK_SHADOW",
    "PROB_NODATA",
    "S2_BANDS",
    "SCL_BAD",
    "SCL_CLASSES",
    "SCL_NODATA",
    "SCL_SATURATED",
    "SCL_SHADOW",
    "SCL_SNOW",
    "SCL_VALID",
    "SCL_WATER",
    "BandInfo",
    "BandKind",
    "accepted_band_names",
    "asset_resolution",
    "find_asset",
    "normalize_band_name",
    "normalize_band_names",
]

logger = logging.getLogger(__name__)

BandKind = Literal["reflectance", "classification", "auxiliary"]
"""What the pixels of a band are: reflectance, class codes (SCL) or an auxiliary quantity."""


@dataclass(frozen=True, slots=True)
class BandInfo:
    """Static description of one Sentinel-2 MSI band or L2A layer."""

    name: str
    """Canonical ESA name, e.g. ``"B04"``, ``"B8A"``, ``"SCL"``."""

    common_name: str | None
    """STAC ``eo`` v1.1 common name (``"red"``, ``"nir08"``, ``"rededge071"``), or None."""

    resolution: int
    """Native ground sampling distance in metres (10, 20 or 60)."""

    center_wavelength: float | None
    """Centre wavelength in micrometres (Sentinel-2A, as in STAC ``eo``); None if not spectral."""

    fwhm: float | None
    """Full width at half maximum in micrometres; None for non-spectral layers."""

    kind: BandKind
    """``"reflectance"`` (B01..B12), ``"classification"`` (SCL) or ``"auxiliary"`` (AOT, WVP)."""

    @property
    def is_reflectance(self) -> bool:
        """True for the thirteen MSI reflectance bands."""
        return self.kind == "reflectance"


def _refl(name: str, common: str, res: int, cw: float, fwhm: float) -> BandInfo:
    return BandInfo(name, common, res, cw, fwhm, "reflectance")


S2_BANDS: Mapping[str, BandInfo] = MappingProxyType(
    {
        b.name: b
        for b in (
            _refl("B01", "coastal", 60, 0.443, 0.027),
            _refl("B02", "blue", 10, 0.490, 0.098),
            _refl("B03", "green", 10, 0.560, 0.045),
            _refl("B04", "red", 10, 0.665, 0.038),
            _refl("B05", "rededge071", 20, 0.704, 0.019),
            _refl("B06", "rededge075", 20, 0.740, 0.018),
            _refl("B07", "rededge078", 20, 0.783, 0.028),
            _refl("B08", "nir", 10, 0.842, 0.145),
            _refl("B8A", "nir08", 20, 0.865, 0.033),
            _refl("B09", "nir09", 60, 0.945, 0.026),
            _refl("B10", "cirrus", 60, 1.3735, 0.075),
            _refl("B11", "swir16", 20, 1.610, 0.143),
            _refl("B12", "swir22", 20, 2.190, 0.242),
            BandInfo("SCL", None, 20, None, None, "classification"),
            BandInfo("AOT", None, 20, None, None, "auxiliary"),
            BandInfo("WVP", None, 20, None, None, "auxiliary"),
        )
    }
)
"""Sentinel-2 bands by canonical name, in ESA order."""

SCL_CLASSES: Mapping[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
"""Sen2Cor scene classification (``SCL``) values → class names (STAC classification extension)."""
SCL_VALID: frozenset[int] = frozenset(SCL_CLASSES)
"""Every value an SCL pixel can take (0-11)."""
SCL_NODATA: Final = 0
"""SCL class: no data."""
SCL_SATURATED: Final = 1
"""SCL class: saturated or defective."""
SCL_WATER: Final = 6
"""SCL class: water."""
SCL_SHADOW: Final = 3
"""SCL class: cloud shadows."""
SCL_SNOW: Final = 11
"""SCL class: snow (and ice)."""
SCL_BAD: Final = (0, 1, 3, 8, 9, 10, 11)
"""SCL classes that are bad data for image matching (co-registration without a ``CLOUD_MASK``):
no data, saturated/defective, cloud shadow, cloud medium/high probability, thin cirrus, snow."""

MASK_NODATA: Final = 0
"""``CLOUD_MASK`` value: no valid reflectance (outside the swath or the AOI)."""
MASK_CLEAR: Final = 1
"""``CLOUD_MASK`` value: clear (neither cloud nor cloud shadow)."""
MASK_CLOUD: Final = 2
"""``CLOUD_MASK`` value: cloud (thick, thin or cirrus), dilated."""
MASK_SHADOW: Final = 3
"""``CLOUD_MASK`` value: cloud shadow."""
MASK_CLASSES: Final[Mapping[int, str]] = {
    MASK_NODATA: "nodata",
    MASK_CLEAR: "clear",
    MASK_CLOUD: "cloud",
    MASK_SHADOW: "shadow",
}
"""Values of the ``CLOUD_MASK`` layer the cloud step writes → names (STAC classification
extension); what readers of a catalog (the cube views) select clear pixels with."""
PROB_NODATA: Final = 255
"""Nodata of the cloud step's ``CLOUD_PROB`` layer (valid values are 0-100 %): the L1C input
had no data there."""
CLOUD_TESTS_PROPERTY: Final = "stac2cube:cloud_tests"
"""The item property in which the cloud step says which of its tests ran over the whole scene
(``run`` or ``not run: <why>``); the quality step's incomplete-testing layer starts from it."""

# Earth Search v1 asset keys (and, from 2023 items on, their ``eo:bands`` names). These are not all
# STAC common names: the red-edge bands are ``rededge1..3`` there, ``rededge071..078`` in eo v1.1.
_EARTH_SEARCH_V1_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "B01": "coastal",
        "B02": "blue",
        "B03": "green",
        "B04": "red",
        "B05": "rededge1",
        "B06": "rededge2",
        "B07": "rededge3",
        "B08": "nir",
        "B8A": "nir08",
        "B09": "nir09",
        "B10": "cirrus",
        "B11": "swir16",
        "B12": "swir22",
        "SCL": "scl",
        "AOT": "aot",
        "WVP": "wvp",
    }
)

_JP2_SUFFIX = "-jp2"
_RES_KEY = re.compile(r"^(?P<band>[A-Za-z0-9]+)_(?P<res>\d+)m$")
_BAND_NUMBER = re.compile(r"^b?0*(?P<num>\d{1,2}a?)$")


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name, info in S2_BANDS.items():
        aliases[name.lower()] = name
        if info.common_name is not None:
            aliases[info.common_name.lower()] = name
        aliases[_EARTH_SEARCH_V1_KEYS[name]] = name
    return aliases


_ALIASES: Mapping[str, str] = MappingProxyType(_build_aliases())


def accepted_band_names() -> dict[str, str]:
    """Every band name users may type, lower-cased, mapped to its canonical ESA name.

    Besides these, :func:`normalize_band_name` accepts any case and band numbers without the zero
    (``"B4"``, ``"b8a"``). The ambiguous eo v1.0 common name ``"rededge"`` is deliberately absent.
    """
    return dict(_ALIASES)


def normalize_band_name(name: str) -> str:
    """Return the canonical ESA name of a user-supplied band name.

    ``"B04"``, ``"b4"``, ``"B4"``, ``"red"`` → ``"B04"``; ``"nir08"``, ``"b8a"`` → ``"B8A"``;
    ``"scl"`` → ``"SCL"``.

    Raises:
        ConfigError: the name is not a Sentinel-2 band; the message lists the valid names.
    """
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    match = _BAND_NUMBER.match(key)
    if match is not None:
        num = match.group("num")
        candidate = f"B{num.upper()}" if num.endswith("a") else f"B{int(num):02d}"
        if candidate in S2_BANDS:
            return candidate
    valid = ", ".join(S2_BANDS)
    extra = ", ".join(sorted(k for k in _ALIASES if k.upper() not in S2_BANDS))
    hint = (
        " ('rededge' is ambiguous: use B05/B06/B07 or rededge1/rededge2/rededge3)"
        if key == "rededge"
        else ""
    )
    raise ConfigError(
        f"Unknown Sentinel-2 band {name!r}{hint}. Use one of {valid} "
        f"(case-insensitive, 'B4' works for 'B04') or one of the aliases {extra}."
    )


def normalize_band_names(names: Iterable[str]) -> tuple[str, ...]:
    """Normalise several band names, keeping their order and dropping duplicates.

    Raises:
        ConfigError: one of the names is not a Sentinel-2 band.
    """
    out: dict[str, None] = {}
    for n in names:
        out[normalize_band_name(n)] = None
    return tuple(out)


def asset_resolution(asset_key: str, asset: pystac.Asset) -> float | None:
    """Ground sampling distance of an asset in metres, or None when the item does not say.

    Looked up in ``gsd``, then ``raster:bands[0].spatial_resolution`` (also STAC 1.1
    ``raster:spatial_resolution``), then a ``_<n>m`` suffix of the asset key (CDSE).
    """
    fields = asset.extra_fields
    gsd = fields.get("gsd")
    if isinstance(gsd, int | float):
        return float(gsd)
    rbands = fields.get("raster:bands")
    if isinstance(rbands, list) and rbands and isinstance(rbands[0], dict):
        res = rbands[0].get("spatial_resolution")
        if isinstance(res, int | float):
            return float(res)
    res = fields.get("raster:spatial_resolution")
    if isinstance(res, int | float):
        return float(res)
    match = _RES_KEY.match(asset_key)
    if match is not None:
        return float(match.group("res"))
    return None


def _pick_resolution(
    candidates: list[tuple[str, pystac.Asset]], target: float
) -> tuple[str, pystac.Asset]:
    """The candidate nearest ``target`` metres; ties go to the finer one, unknowns go last."""

    def rank(kv: tuple[str, pystac.Asset]) -> tuple[float, float]:
        res = asset_resolution(*kv)
        if res is None:
            return (float("inf"), float("inf"))
        return (abs(res - target), res)

    return min(candidates, key=rank)


def _band_entries(asset: pystac.Asset) -> list[dict[str, Any]]:
    """The per-band entries of an asset: ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1)."""
    for field in ("eo:bands", "bands"):
        entries = asset.extra_fields.get(field)
        if isinstance(entries, list) and entries:
            return [e for e in entries if isinstance(e, dict)]
    return []


def _matches_band_entries(asset: pystac.Asset, info: BandInfo) -> bool:
    """True when the asset holds exactly one band and that band is ``info``.

    Multi-band assets (``visual``, ``TCI_10m``) are never a match: they hold 8-bit renderings, not
    reflectance. Names are compared with the ESA name, the eo v1.1 common name and the Earth Search
    v1 key (which 2023 Earth Search items use as ``eo:bands`` name). A bare common name is trusted
    only when it is specific: the eo v1.0 name ``"rededge"`` is ambiguous and Planetary Computer
    even gives it to B8A.
    """
    entries = _band_entries(asset)
    if len(entries) != 1:
        return False
    entry = entries[0]
    names = {info.name.lower(), _EARTH_SEARCH_V1_KEYS[info.name]}
    if info.common_name is not None:
        names.add(info.common_name.lower())
    name = entry.get("name")
    if isinstance(name, str) and name.lower() in names:
        return True
    common = entry.get("common_name", entry.get("eo:common_name"))
    return (
        isinstance(common, str)
        and info.common_name is not None
        and common.lower() == info.common_name.lower()
    )


def _find_in(
    item: pystac.Item,
    keys: list[str],
    info: BandInfo,
    resolution: int | None,
) -> tuple[str, pystac.Asset] | None:
    assets = item.assets
    target = float(resolution if resolution is not None else info.resolution)
    wanted = info.name.lower()

    # 1. CDSE: one asset per band and resolution, "B04_10m".
    per_res = []
    for key in keys:
        match = _RES_KEY.match(key)
        if match is not None and match.group("band").lower() == wanted:
            per_res.append((key, assets[key]))
    if per_res:
        return _pick_resolution(per_res, target)

    # 2. Earth Search v0 / Planetary Computer: the ESA name itself ("B04", "SCL").
    for key in keys:
        if key.lower() == wanted:
            return key, assets[key]

    # 3. Earth Search v1: "red", "nir08", "scl" (or their "-jp2" twins in the second pass).
    es_key = _EARTH_SEARCH_V1_KEYS[info.name]
    for key in keys:
        if key.removesuffix(_JP2_SUFFIX) == es_key:
            return key, assets[key]

    # 4. Anything else: the band list of a single-band asset.
    by_bands = [(k, assets[k]) for k in keys if _matches_band_entries(assets[k], info)]
    if by_bands:
        return _pick_resolution(by_bands, target)
    return None


def find_asset(
    item: pystac.Item, band: str, *, resolution: int | None = None
) -> tuple[str, pystac.Asset]:
    """Find the asset that holds ``band`` in ``item``, whatever the provider.

    Args:
        item: a Sentinel-2 STAC item (Earth Search v0/v1, Planetary Computer, CDSE or any item
            whose assets carry ``eo:bands``/``bands``).
        band: a band name as accepted by :func:`normalize_band_name` (``"B04"``, ``"red"``, ...).
        resolution: when the item offers the band at several resolutions (CDSE ``B04_10m``,
            ``B04_20m``, ``B04_60m``), take the one nearest this many metres (ties: the finer).
            By default the band's native resolution. Ignored when the item has one asset per band.

    Returns:
        ``(asset_key, asset)``.

    Raises:
        ConfigError: ``band`` is not a Sentinel-2 band name.
        MissingAssetError: the item has no asset for the band; the message lists the keys it has.

    Earth Search v1 ``sentinel-2-l2a`` items list every band twice: a COG (``red``) and the
    original ESA JPEG2000 (``red-jp2``). The twin is returned only when no other asset matches,
    because the COG is cheaper to read and, for that collection, radiometrically different (see
    :mod:`stac2cube.radiometry`).
    """
    canonical = normalize_band_name(band)
    info = S2_BANDS[canonical]
    keys = list(item.assets)
    primary = [k for k in keys if not k.endswith(_JP2_SUFFIX)]
    twins = [k for k in keys if k.endswith(_JP2_SUFFIX)]
    for pool in (primary, twins):
        found = _find_in(item, pool, info, resolution)
        if found is not None:
            if pool is twins:
                logger.debug(
                    "item %s: band %s only as JPEG2000 twin %r", item.id, canonical, found[0]
                )
            return found
    raise MissingAssetError(
        f"Item {item.id!r} has no asset for band {canonical}"
        + (f" (asked as {band!r})" if band != canonical else "")
        + f". Its assets are: {', '.join(sorted(keys)) or '(none)'}. "
        "Drop the band from the configuration or choose a collection that provides it "
        "(L1C has no SCL/AOT/WVP, L2A has no B10)."
    )
