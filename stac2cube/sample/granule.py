"""The tile metadata file (``MTD_TL.xml``) of a sample scene: the sun and view angles the
generator uses, sampled on the products' 5 km angle grid and written in their XML layout.

The sun angles are those of :func:`.geometry.solar_angles` at each sample. The view angles
follow :mod:`.msi`: the items' view zenith and azimuth at the scene centre, the zenith growing
across track away from the satellite, each band's along-track look angle turning the azimuth,
and the grid's two detectors (split where :func:`.msi.across_track` puts their boundary) each
seeing a slightly different angle, with NaN outside their swath.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer

from .geometry import solar_angles
from .msi import ALONG_TRACK_DEG, BANDS, across_track, view_angles
from .spec import SampleSpec

if TYPE_CHECKING:
    from .stac import DateMeta

F64 = NDArray[np.float64]

ANGLE_STEP: Final = 5000.0
"""Spacing of the angle samples, metres (as in the products)."""
ORBIT_HEIGHT_M: Final = 786_000.0
"""Sentinel-2's mean orbit height: sets how fast the view zenith grows across track."""
DETECTOR_IDS: Final = (1, 2)
"""``detectorId`` of the detector on the low and on the high across-track side of the boundary."""
DETECTOR_OFFSETS: Final = ((-0.02, -0.4), (0.02, 0.4))
"""(zenith, azimuth) offset of each detector's view angles, degrees (staggered detectors see
slightly different angles); where both see a sample they average to the base angles."""
_SYNTHETIC_NOTE: Final = (
    " Synthetic tile metadata written by stac2cube.sample (not Copernicus data): the angle grid "
    "is centred on the sample scene, its first sample at Geoposition ULX/ULY. "
)
DETECTOR_MARGIN: Final = 0.6
"""How far beyond the detector boundary (in angle steps) a detector's grid still has values."""


@dataclass(frozen=True)
class GranuleAngles:
    """The angles written to one scene's tile metadata."""

    epsg: int
    """EPSG code of the grid (the sample's UTM zone)."""
    ulx: float
    """x of the first (upper-left) sample, metres; the file's ``Geoposition`` ULX."""
    uly: float
    """y of the first sample, metres; the file's ``Geoposition`` ULY."""
    step: float
    """Spacing of the samples in x and y, metres."""
    sun_zenith: F64
    """Sun zenith per sample ``(y, x)``, degrees."""
    sun_azimuth: F64
    """Sun azimuth per sample ``(y, x)``, degrees clockwise from north."""
    view_zenith: F64
    """View zenith ``(band, detector, y, x)`` (bands in :data:`.msi.BANDS` order = ``bandId``),
    NaN outside the detector's swath."""
    view_azimuth: F64
    """View azimuth ``(band, detector, y, x)``, NaN outside the detector's swath."""
    mean_sun: tuple[float, float]
    """``Mean_Sun_Angle`` (zenith, azimuth): the items' sun angles."""
    mean_view: F64
    """``Mean_Viewing_Incidence_Angle`` per band ``(band, 2)``: zenith, azimuth; their mean over
    bands is the items' ``view:incidence_angle`` / ``view:azimuth``."""

    @property
    def shape(self) -> tuple[int, int]:
        """Samples ``(y, x)``."""
        ny, nx = self.sun_zenith.shape
        return ny, nx


def _axis_samples(extent_m: float, step: float) -> int:
    """An odd number of samples, centred on the scene, that covers ``extent_m``."""
    return 2 * math.ceil(extent_m / (2 * step)) + 1


def granule_angles(spec: SampleSpec, meta: DateMeta) -> GranuleAngles:
    """The angle grids of date ``meta`` on a 5 km grid centred on the scene and covering it."""
    step = ANGLE_STEP
    x0, y0 = spec.origin
    xc, yc = x0 + 5.0 * spec.width, y0 - 5.0 * spec.height
    nx = _axis_samples(10.0 * spec.width, step)
    ny = _axis_samples(10.0 * spec.height, step)
    ulx = 10.0 * round((xc - step * (nx - 1) / 2) / 10.0)
    uly = 10.0 * round((yc + step * (ny - 1) / 2) / 10.0)
    xs = ulx + step * np.arange(nx, dtype=np.float64)
    ys = uly - step * np.arange(ny, dtype=np.float64)
    xx, yy = np.meshgrid(xs, ys)

    to_lonlat = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    lon, lat = (np.asarray(v, np.float64).ravel() for v in to_lonlat.transform(xx, yy))
    when = meta.sensing
    sun = np.array(
        [solar_angles(float(lo), float(la), when) for lo, la in zip(lon, lat, strict=True)]
    ).reshape(ny, nx, 2)

    vz0, va0 = view_angles(meta.index)
    towards = (xx - xc) * math.sin(math.radians(va0)) + (yy - yc) * math.cos(math.radians(va0))
    gradient = math.degrees(math.cos(math.radians(vz0)) ** 2 / ORBIT_HEIGHT_M)  # deg per metre
    zenith = vz0 - gradient * towards  # grows away from the satellite
    look = ALONG_TRACK_DEG - ALONG_TRACK_DEG.mean()  # per band, centred: band means stay put
    turn = np.degrees(look[:, None, None] / zenith[None])  # (band, y, x): small-angle azimuth turn

    ue, un, _, u_boundary = across_track(spec)
    u = (xx - x0) * ue + (yy - y0) * un
    margin = DETECTOR_MARGIN * step
    sees = (u <= u_boundary + margin, u >= u_boundary - margin)
    n_bands = len(BANDS)
    view_z = np.full((n_bands, len(DETECTOR_IDS), ny, nx), np.nan)
    view_a = np.full((n_bands, len(DETECTOR_IDS), ny, nx), np.nan)
    for d, ((dz, da), mask) in enumerate(zip(DETECTOR_OFFSETS, sees, strict=True)):
        view_z[:, d] = np.where(mask, zenith + dz, np.nan)
        view_a[:, d] = np.where(mask, (va0 + turn + da) % 360.0, np.nan)

    mean_view = np.stack([np.full(n_bands, vz0), va0 + np.degrees(look / vz0)], axis=1)
    return GranuleAngles(
        epsg=spec.epsg,
        ulx=ulx,
        uly=uly,
        step=step,
        sun_zenith=sun[..., 0],
        sun_azimuth=sun[..., 1],
        view_zenith=view_z,
        view_azimuth=view_a,
        mean_sun=(meta.sun_zenith, meta.sun_azimuth),
        mean_view=mean_view,
    )


# ------------------------------------------------------------------------------ XML


def _fmt(v: float) -> str:
    """A value as the products write it ("NaN"), exactly (integers without a decimal point)."""
    if math.isnan(v):
        return "NaN"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _text(parent: ET.Element, tag: str, text: str, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    el.text = text
    return el


def _grid(parent: ET.Element, tag: str, values: F64, step: float) -> None:
    el = ET.SubElement(parent, tag)
    _text(el, "COL_STEP", _fmt(step), unit="m")
    _text(el, "ROW_STEP", _fmt(step), unit="m")
    vl = ET.SubElement(el, "Values_List")
    for row in values:
        _text(vl, "VALUES", " ".join(_fmt(float(v)) for v in row))


def _angle_pair(parent: ET.Element, tag: str, zenith: float, azimuth: float, **at: str) -> None:
    el = ET.SubElement(parent, tag, at)
    _text(el, "ZENITH_ANGLE", _fmt(zenith), unit="deg")
    _text(el, "AZIMUTH_ANGLE", _fmt(azimuth), unit="deg")


def granule_xml(angles: GranuleAngles, level: str, tile_id: str, sensing_time: str) -> bytes:
    """The tile metadata document of a ``level`` ("L1C" or "L2A") scene: the products' layout
    (namespaced root, unprefixed children) with general info, geocoding and the angles."""
    name = f"Level-{level[1:]}"
    root = ET.Element(
        f"n1:{name}_Tile_ID",
        {"xmlns:n1": f"https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{name}_Tile_Metadata.xsd"},
    )
    root.append(ET.Comment(_SYNTHETIC_NOTE))
    general = ET.SubElement(root, "n1:General_Info")
    _text(general, "TILE_ID", tile_id, metadataLevel="Brief")
    _text(general, "SENSING_TIME", sensing_time, metadataLevel="Standard")
    geometric = ET.SubElement(root, "n1:Geometric_Info")
    geocoding = ET.SubElement(geometric, "Tile_Geocoding", metadataLevel="Brief")
    zone = angles.epsg % 100
    hemi = "N" if angles.epsg < 32700 else "S"
    _text(geocoding, "HORIZONTAL_CS_NAME", f"WGS84 / UTM zone {zone:02d}{hemi}")
    _text(geocoding, "HORIZONTAL_CS_CODE", f"EPSG:{angles.epsg}")
    for res in (10, 20, 60):
        pos = ET.SubElement(geocoding, "Geoposition", resolution=str(res))
        _text(pos, "ULX", _fmt(angles.ulx))
        _text(pos, "ULY", _fmt(angles.uly))
        _text(pos, "XDIM", str(res))
        _text(pos, "YDIM", str(-res))
    tile_angles = ET.SubElement(geometric, "Tile_Angles", metadataLevel="Standard")
    sun = ET.SubElement(tile_angles, "Sun_Angles_Grid")
    _grid(sun, "Zenith", angles.sun_zenith, angles.step)
    _grid(sun, "Azimuth", angles.sun_azimuth, angles.step)
    _angle_pair(tile_angles, "Mean_Sun_Angle", *angles.mean_sun)
    for b in range(angles.view_zenith.shape[0]):
        for d, det in enumerate(DETECTOR_IDS):
            vg = ET.SubElement(
                tile_angles, "Viewing_Incidence_Angles_Grids", bandId=str(b), detectorId=str(det)
            )
            _grid(vg, "Zenith", angles.view_zenith[b, d], angles.step)
            _grid(vg, "Azimuth", angles.view_azimuth[b, d], angles.step)
    means = ET.SubElement(tile_angles, "Mean_Viewing_Incidence_Angle_List")
    for b, (z, a) in enumerate(angles.mean_view):
        _angle_pair(means, "Mean_Viewing_Incidence_Angle", float(z), float(a), bandId=str(b))
    ET.indent(root, "  ")
    head = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
    return (head + ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


def write_granule(
    path: Path, angles: GranuleAngles, level: str, item_props: Mapping[str, Any]
) -> None:
    """Write the tile metadata of the item with properties ``item_props`` to ``path``."""
    doc = granule_xml(angles, level, str(item_props["s2:tile_id"]), str(item_props["datetime"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(doc)
