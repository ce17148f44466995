"""Sun and view angles of a Sentinel-2 scene: the mean angles the item states, and the 5 km
angle grids of its tile metadata file (``MTD_TL.xml``), interpolated onto any grid.

Everything here is pure except :func:`read_granule_metadata`, which fetches the metadata file.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pystac
from affine import Affine
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from .errors import AssetAccessError, AssetReadError, Stac2CubeError
from .io.read import asset_href, href_without_credentials

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

ANGLE_BANDS: Final = ("sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth")
"""The bands of :attr:`AngleGrids.data`, in order."""
_AZIMUTHS: Final = (1, 3)  # positions of the azimuth bands in ANGLE_BANDS

GRANULE_ASSET_KEYS: Final = ("granule_metadata", "granule-metadata", "metadata")
"""Asset keys of the tile metadata file: Earth Search v1 and CDSE, Planetary Computer, Earth
Search v0 (its ``metadata.xml`` is the same document)."""
READ_TIMEOUT_S: Final = 30.0
"""Timeout of an http(s) read of a tile metadata file, seconds."""

_PC_VIEW: Final = re.compile(r"s2:mean_incidence_(zenith|azimuth)_angle_b\w+", re.IGNORECASE)


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class AngleGrids:
    """Sun and view angles of a scene on the granule metadata's coarse grid (5 km)."""

    geobox: GeoBox
    """The coarse grid: one cell per angle sample, cell centres at the sample points."""
    data: F32
    """float32 ``(4, y, x)`` in :data:`ANGLE_BANDS` order, degrees, NaN where not given
    (read-only: parsed grids are cached and shared)."""
    source: str
    """Where the grids came from, e.g. ``"granule metadata <href>"``."""

    def on(self, geobox: GeoBox) -> F32:
        """float32 ``(4, y, x)`` on any target grid (any CRS): bilinear interpolation of the
        coarse grid, azimuths interpolated as unit vectors (no jump at 0/360), NaN outside the
        coarse grid's coverage (up to half a coarse cell beyond the outer samples, so a tile's
        edge pixels get values: there the edge gradient is extrapolated).

        Where some of the four neighbouring samples are NaN (outside a swath), the valid ones are
        weighted alone; where none is, the result is NaN.
        """
        fx, fy = self._sample_index(geobox)
        ny, nx = self.geobox.shape.yx
        x0, tx, x_in = _axis(fx, nx)
        y0, ty, y_in = _axis(fy, ny)
        x1 = np.minimum(x0 + 1, nx - 1)
        y1 = np.minimum(y0 + 1, ny - 1)
        corners = ((y0, x0), (y0, x1), (y1, x0), (y1, x1))
        w_lin = ((1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx)
        cx, cy = np.clip(tx, 0.0, 1.0), np.clip(ty, 0.0, 1.0)
        w_clip = ((1 - cy) * (1 - cx), (1 - cy) * cx, cy * (1 - cx), cy * cx)
        inside = x_in & y_in
        out = np.full((len(ANGLE_BANDS), *fx.shape), np.nan, np.float32)
        for b in range(len(ANGLE_BANDS)):
            grid = self.data[b].astype(np.float64)
            vals = [grid[r, c] for r, c in corners]
            if b in _AZIMUTHS:
                rad = [np.radians(v) for v in vals]
                s = _blend([np.sin(v) for v in rad], w_lin, w_clip)
                c = _blend([np.cos(v) for v in rad], w_lin, w_clip)
                res = np.degrees(np.arctan2(s, c)) % 360.0
            else:
                res = _blend(vals, w_lin, w_clip)
            out[b] = np.where(inside, res, np.nan)
        return out

    def _sample_index(self, geobox: GeoBox) -> tuple[F64, F64]:
        """Fractional (column, row) sample indices of the pixel centres of ``geobox``."""
        h, w = geobox.shape.yx
        cols = np.arange(w, dtype=np.float64) + 0.5
        rows = np.arange(h, dtype=np.float64) + 0.5
        a = geobox.affine
        same_crs = geobox.crs == self.geobox.crs
        inv = ~self.geobox.affine
        if same_crs and a.b == 0 and a.d == 0 and inv.b == 0 and inv.d == 0:
            # axis-aligned on the same CRS: separable, computed on the axes only
            fx = inv.a * (a.a * cols + a.c) + inv.c - 0.5
            fy = inv.e * (a.e * rows + a.f) + inv.f - 0.5
            return np.broadcast_to(fx[None, :], (h, w)), np.broadcast_to(fy[:, None], (h, w))
        cc, rr = np.meshgrid(cols, rows)
        x = a.a * cc + a.b * rr + a.c
        y = a.d * cc + a.e * rr + a.f
        if not same_crs:
            assert geobox.crs is not None and self.geobox.crs is not None
            x, y = geobox.crs.transformer_to_crs(self.geobox.crs)(x, y)
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        fx = inv.a * x + inv.b * y + inv.c - 0.5
        fy = inv.d * x + inv.e * y + inv.f - 0.5
        return fx, fy


def _axis(f: F64, n: int) -> tuple[NDArray[np.intp], F64, NDArray[np.bool_]]:
    """Lower sample index, offset from it (outside [0, 1] when extrapolating) and whether the
    position lies within half a sample of the axis' samples."""
    eps = 1e-9
    inside = (f >= -0.5 - eps) & (f <= n - 0.5 + eps)
    if n == 1:
        zero = np.zeros(f.shape, np.intp)
        return zero, np.zeros(f.shape, np.float64), inside
    with np.errstate(invalid="ignore"):
        i0 = np.clip(np.floor(np.nan_to_num(f)), 0, n - 2).astype(np.intp)
    return i0, f - i0, inside


def _blend(vals: Sequence[F64], w_lin: Sequence[F64], w_clip: Sequence[F64]) -> F64:
    """Bilinear blend of four corner values: the linear weights where all four are valid, else
    the weights clipped to the cell renormalised over the valid corners."""
    valid = [np.isfinite(v) for v in vals]
    filled = [np.where(ok, v, 0.0) for v, ok in zip(vals, valid, strict=True)]
    full = valid[0] & valid[1] & valid[2] & valid[3]
    lin = sum((w * v for w, v in zip(w_lin, filled, strict=True)), np.zeros_like(filled[0]))
    num = sum(
        (np.where(ok, w * v, 0.0) for w, v, ok in zip(w_clip, filled, valid, strict=True)),
        np.zeros_like(filled[0]),
    )
    den = sum(
        (np.where(ok, w, 0.0) for w, ok in zip(w_clip, valid, strict=True)),
        np.zeros_like(filled[0]),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        partial = np.where(den > 1e-12, num / den, np.nan)
    out: F64 = np.where(full, lin, partial)
    return out


@dataclass(frozen=True)
class SceneAngles:
    """Mean angles of a scene, degrees, and where they came from."""

    sun_zenith: float | None
    """Mean sun zenith angle."""
    sun_azimuth: float | None
    """Mean sun azimuth angle, clockwise from north."""
    view_zenith: float | None
    """Mean view incidence (zenith) angle."""
    view_azimuth: float | None
    """Mean view azimuth angle (towards the satellite), clockwise from north."""
    source: str
    """``"item properties"``, ``"granule metadata"`` or ``"item properties + granule
    metadata"``."""

    def view_properties(self) -> dict[str, float]:
        """STAC view extension fields: ``view:sun_elevation`` (= 90 - sun zenith),
        ``view:sun_azimuth``, ``view:incidence_angle``, ``view:azimuth``; only those known;
        rounded to 6 decimals."""
        fields = {
            "view:sun_elevation": None if self.sun_zenith is None else 90.0 - self.sun_zenith,
            "view:sun_azimuth": self.sun_azimuth,
            "view:incidence_angle": self.view_zenith,
            "view:azimuth": self.view_azimuth,
        }
        return {k: round(v, 6) for k, v in fields.items() if v is not None}


_ANGLE_FIELDS: Final = ("sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth")


# ------------------------------------------------------------------------------ items


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _mean_azimuth(values: Sequence[float]) -> float:
    """Mean of azimuths in degrees: the arithmetic mean (as providers compute ``view:azimuth``)
    unless they straddle north, then the mean of unit vectors."""
    a = np.asarray(values, np.float64) % 360.0
    if float(a.max() - a.min()) <= 180.0:
        return float(a.mean())
    r = np.radians(a)
    return float(np.degrees(np.arctan2(np.sin(r).mean(), np.cos(r).mean())) % 360.0)


def angles_from_properties(props: Mapping[str, Any]) -> SceneAngles:
    """What a provider's item gives: Earth Search v1 / CDSE ``view:sun_elevation``,
    ``view:sun_azimuth``, ``view:incidence_angle``, ``view:azimuth``; Planetary Computer
    ``s2:mean_solar_zenith``, ``s2:mean_solar_azimuth`` (and per-band
    ``s2:mean_incidence_zenith_angle_b*`` / ``..._azimuth_angle_b*`` where present: their mean
    over bands). Unknown angles are None."""
    elevation = _number(props.get("view:sun_elevation"))
    sun_zenith = 90.0 - elevation if elevation is not None else None
    if sun_zenith is None:
        sun_zenith = _number(props.get("s2:mean_solar_zenith"))
    sun_azimuth = _number(props.get("view:sun_azimuth"))
    if sun_azimuth is None:
        sun_azimuth = _number(props.get("s2:mean_solar_azimuth"))
    view_zenith = _number(props.get("view:incidence_angle"))
    view_azimuth = _number(props.get("view:azimuth"))
    per_band: dict[str, list[float]] = {"zenith": [], "azimuth": []}
    for key, value in props.items():
        m = _PC_VIEW.fullmatch(key)
        v = _number(value) if m else None
        if m and v is not None:
            per_band[m.group(1).lower()].append(v)
    if view_zenith is None and per_band["zenith"]:
        view_zenith = float(np.mean(per_band["zenith"]))
    if view_azimuth is None and per_band["azimuth"]:
        view_azimuth = _mean_azimuth(per_band["azimuth"])
    return SceneAngles(sun_zenith, sun_azimuth, view_zenith, view_azimuth, "item properties")


def scene_angles(props: Mapping[str, Any], granule: SceneAngles | None) -> SceneAngles | None:
    """Item properties first, each missing angle filled from the granule metadata's means; None
    when neither gives both sun angles. ``source`` says which were used."""
    item = angles_from_properties(props)
    values: dict[str, float | None] = {}
    used: set[str] = set()
    for name in _ANGLE_FIELDS:
        v = getattr(item, name)
        if v is not None:
            used.add("item properties")
        elif granule is not None and getattr(granule, name) is not None:
            v = getattr(granule, name)
            used.add("granule metadata")
        values[name] = v
    if values["sun_zenith"] is None or values["sun_azimuth"] is None:
        return None
    source = " + ".join(s for s in ("item properties", "granule metadata") if s in used)
    return SceneAngles(**values, source=source)


def granule_metadata_asset(item: pystac.Item) -> tuple[str, pystac.Asset] | None:
    """The key and asset of the item's tile metadata: key ``granule_metadata`` (Earth Search
    v1, CDSE), ``granule-metadata`` (Planetary Computer), ``metadata`` (Earth Search v0) or any
    asset whose href ends with ``MTD_TL.xml``; None when it has none."""
    for key in GRANULE_ASSET_KEYS:
        if key in item.assets:
            return key, item.assets[key]
    for key, asset in item.assets.items():
        if urllib.parse.urlsplit(asset.href).path.endswith("MTD_TL.xml"):
            return key, asset
    return None


def granule_metadata_href(item: pystac.Item) -> str | None:
    """The absolute href of the item's tile metadata asset (:func:`granule_metadata_asset`);
    None when it has none."""
    found = granule_metadata_asset(item)
    return None if found is None else asset_href(found[1])


# ------------------------------------------------------------------------------ parsing


def _local(tag: Any) -> str:
    """An element's name without its namespace (comments and processing instructions: "")."""
    return tag.rpartition("}")[2].rpartition(":")[2] if isinstance(tag, str) else ""


def _children(el: ET.Element, name: str) -> Iterator[ET.Element]:
    return (c for c in el if _local(c.tag) == name)


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next(_children(el, name), None)


def _descendant(el: ET.Element, name: str) -> ET.Element | None:
    return next((d for d in el.iter() if _local(d.tag) == name), None)


class _Invalid(ValueError):
    """The document is not (usable) tile metadata; the message says why."""


def _float_of(el: ET.Element | None, what: str) -> float:
    if el is None or el.text is None:
        raise _Invalid(f"no <{what}>")
    try:
        return float(el.text.strip())
    except ValueError:
        raise _Invalid(f"<{what}> {el.text.strip()!r} is not a number") from None


def _values(grid: ET.Element, what: str) -> tuple[F64, float, float]:
    """The ``Values_List`` of a ``<Zenith>``/``<Azimuth>`` element and its column/row steps."""
    vl = _child(grid, "Values_List")
    if vl is None:
        raise _Invalid(f"{what} has no <Values_List>")
    try:
        rows = [[float(v) for v in (r.text or "").split()] for r in _children(vl, "VALUES")]
    except ValueError as exc:
        raise _Invalid(f"{what}: {exc}") from None
    if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
        raise _Invalid(f"{what}: <VALUES> rows are empty or of unequal length")
    col = _child(grid, "COL_STEP")
    row = _child(grid, "ROW_STEP")
    col_step = _float_of(col, "COL_STEP") if col is not None else 5000.0
    row_step = _float_of(row, "ROW_STEP") if row is not None else 5000.0
    return np.asarray(rows, np.float64), col_step, row_step


def _merge(stack: Sequence[F64], azimuth: bool) -> F64:
    """Per cell, the mean of the non-NaN layers (of unit vectors for azimuths); NaN where none."""
    a = np.stack(stack)
    valid = np.isfinite(a)
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if azimuth:
            r = np.radians(np.where(valid, a, 0.0))
            s = np.where(valid, np.sin(r), 0.0).sum(axis=0)
            c = np.where(valid, np.cos(r), 0.0).sum(axis=0)
            out = np.degrees(np.arctan2(s, c)) % 360.0
        else:
            out = np.where(valid, a, 0.0).sum(axis=0) / n
    merged: F64 = np.where(n > 0, out, np.nan)
    return merged


def _epsg(geocoding: ET.Element) -> int:
    code = _child(geocoding, "HORIZONTAL_CS_CODE")
    text = (code.text or "").strip() if code is not None else ""
    m = re.fullmatch(r"(?:EPSG:)?(\d+)", text, re.IGNORECASE)
    if m is None:
        raise _Invalid(f"<HORIZONTAL_CS_CODE> {text!r} is not an EPSG code")
    return int(m.group(1))


def _upper_left(geocoding: ET.Element) -> tuple[float, float]:
    positions = list(_children(geocoding, "Geoposition"))
    if not positions:
        raise _Invalid("<Tile_Geocoding> has no <Geoposition>")
    pos = next((p for p in positions if p.get("resolution") == "10"), positions[0])
    return _float_of(_child(pos, "ULX"), "ULX"), _float_of(_child(pos, "ULY"), "ULY")


def _parse(root: ET.Element, source: str) -> tuple[AngleGrids, SceneAngles]:
    geocoding = _descendant(root, "Tile_Geocoding")
    if geocoding is None:
        raise _Invalid("no <Tile_Geocoding>")
    epsg = _epsg(geocoding)
    ulx, uly = _upper_left(geocoding)
    sun = _descendant(root, "Sun_Angles_Grid")
    if sun is None:
        raise _Invalid("no <Sun_Angles_Grid>")
    tile_angles = _descendant(root, "Tile_Angles")
    angle_root = root if tile_angles is None else tile_angles
    grids: dict[str, F64] = {}
    steps = (5000.0, 5000.0)
    for name in ("Zenith", "Azimuth"):
        el = _child(sun, name)
        if el is None:
            raise _Invalid(f"<Sun_Angles_Grid> has no <{name}>")
        grids[name], col_step, row_step = _values(el, f"Sun_Angles_Grid/{name}")
        if name == "Zenith":
            steps = (col_step, row_step)
    shape = grids["Zenith"].shape
    if grids["Azimuth"].shape != shape:
        raise _Invalid(
            f"sun zenith grid {shape} and azimuth grid {grids['Azimuth'].shape} differ in shape"
        )
    by_band: dict[str, dict[str, list[F64]]] = {}
    for vg in _children(angle_root, "Viewing_Incidence_Angles_Grids"):
        band = vg.get("bandId", "?")
        where = f"Viewing_Incidence_Angles_Grids bandId={band} detectorId={vg.get('detectorId')}"
        for name in ("Zenith", "Azimuth"):
            el = _child(vg, name)
            if el is None:
                raise _Invalid(f"{where} has no <{name}>")
            values = _values(el, f"{where}/{name}")[0]
            if values.shape != shape:
                raise _Invalid(f"{where}/{name}: grid {values.shape}, sun grid {shape}")
            by_band.setdefault(band, {"Zenith": [], "Azimuth": []})[name].append(values)
    nan = np.full(shape, np.nan)
    if by_band:
        bands = list(by_band.values())
        view_zen = _merge([_merge(b["Zenith"], False) for b in bands], False)
        view_az = _merge([_merge(b["Azimuth"], True) for b in bands], True)
    else:
        view_zen, view_az = nan, nan
    data = np.stack([grids["Zenith"], grids["Azimuth"], view_zen, view_az]).astype(np.float32)
    data.flags.writeable = False
    col_step, row_step = steps
    affine = Affine(col_step, 0.0, ulx - col_step / 2, 0.0, -row_step, uly + row_step / 2)
    geobox = GeoBox(shape, affine, f"EPSG:{epsg}")
    where = "granule metadata" + (f" {source}" if source else "")
    return AngleGrids(geobox, data, where), _means(angle_root, data)


def _means(angle_root: ET.Element, data: F32) -> SceneAngles:
    """The metadata's mean angles (``Mean_Sun_Angle``, ``Mean_Viewing_Incidence_Angle_List``
    averaged over bands); where the file lacks them, the means of its grids."""
    out: list[float | None] = [None] * 4
    sun = _descendant(angle_root, "Mean_Sun_Angle")
    if sun is not None:
        out[0] = _number(getattr(_child(sun, "ZENITH_ANGLE"), "text", None))
        out[1] = _number(getattr(_child(sun, "AZIMUTH_ANGLE"), "text", None))
    view = _descendant(angle_root, "Mean_Viewing_Incidence_Angle_List")
    if view is not None:
        zen, az = [], []
        for band in _children(view, "Mean_Viewing_Incidence_Angle"):
            z = _number(getattr(_child(band, "ZENITH_ANGLE"), "text", None))
            a = _number(getattr(_child(band, "AZIMUTH_ANGLE"), "text", None))
            if z is not None:
                zen.append(z)
            if a is not None:
                az.append(a)
        out[2] = float(np.mean(zen)) if zen else None
        out[3] = _mean_azimuth(az) if az else None
    for i in range(4):
        if out[i] is None:
            grid = data[i][np.isfinite(data[i])].astype(np.float64)
            if grid.size:
                out[i] = _mean_azimuth(list(grid)) if i in _AZIMUTHS else float(grid.mean())
    return SceneAngles(out[0], out[1], out[2], out[3], "granule metadata")


def parse_granule_metadata(xml: bytes, source: str = "") -> tuple[AngleGrids, SceneAngles]:
    """Parse a Sentinel-2 tile metadata file (``MTD_TL.xml`` of L1C/L2A, also the Earth Search
    v0 ``metadata.xml``): the tile's CRS and upper-left corner (``Tile_Geocoding``), the sun angle
    grid, the view angle grids of every band and detector (detectors merged: per cell the
    non-NaN values, averaged where detectors overlap; then averaged over bands) and the mean
    angles (``Mean_Sun_Angle``, ``Mean_Viewing_Incidence_Angle_List`` averaged over bands).

    The first sample of a grid lies at (ULX, ULY), so the coarse grid's origin is
    ``(ULX - step/2, ULY + step/2)``. ``source`` (an href) is named in errors and in
    :attr:`AngleGrids.source`. Raises :class:`~stac2cube.errors.AssetReadError` for a document
    that is not tile metadata.
    """
    name = source or "document"
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise AssetReadError(
            f"{name} is not XML ({exc}); expected a Sentinel-2 tile metadata file (MTD_TL.xml)"
        ) from exc
    try:
        return _parse(root, source)
    except _Invalid as exc:
        raise AssetReadError(
            f"{name} (root <{_local(root.tag)}>) is not usable Sentinel-2 tile metadata "
            f"(MTD_TL.xml): {exc}; check that the item's granule metadata asset points to the "
            "tile's MTD_TL.xml"
        ) from exc


# ------------------------------------------------------------------------------ reading


def _local_path(href: str) -> Path | None:
    """The file an href names when it is a local path or a ``file://`` URL."""
    parts = urllib.parse.urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # a path (with a Windows drive letter)
        return Path(href)
    return None


def _fetch(href: str) -> bytes:
    shown = href_without_credentials(href)
    scheme = urllib.parse.urlsplit(href).scheme.lower()
    path = _local_path(href)
    try:
        if path is not None:
            return path.read_bytes()
        if scheme in ("http", "https"):
            with urllib.request.urlopen(href, timeout=READ_TIMEOUT_S) as response:
                return bytes(response.read())
    except urllib.error.HTTPError as exc:
        cls = AssetAccessError if exc.code in (401, 403) else AssetReadError
        raise cls(
            f"cannot read tile metadata {shown}: HTTP {exc.code} {exc.reason}; check the URL "
            "and, for signed hrefs, that the signature has not expired"
        ) from exc
    except OSError as exc:
        raise AssetReadError(f"cannot read tile metadata {shown}: {exc}") from exc
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError as exc:
        raise AssetReadError(
            f"cannot read tile metadata {shown}: {scheme}:// needs fsspec (pip install fsspec "
            "and the filesystem's package, e.g. s3fs)"
        ) from exc
    try:
        with fsspec.open(href, "rb") as f:
            return bytes(f.read())
    except Exception as exc:  # fsspec backends raise their own errors (botocore, aiohttp)
        raise AssetReadError(f"cannot read tile metadata {shown}: {exc}") from exc


@functools.lru_cache(maxsize=32)
def _read_parsed(href: str, stamp: tuple[int, int] | None) -> tuple[AngleGrids, SceneAngles]:
    """The parsed file at ``href``; ``stamp`` (a local file's mtime and size) keys the cache so
    that a file rewritten in place is read again."""
    shown = href_without_credentials(href)
    log.debug("reading tile metadata %s", shown)
    return parse_granule_metadata(_fetch(href), source=shown)


def read_granule_metadata(item: pystac.Item) -> tuple[AngleGrids, SceneAngles] | None:
    """Read and parse the item's tile metadata (a local path, ``file://``, ``http(s)://``, or
    other schemes such as ``s3://`` through fsspec); None when the item has none. Parsed results
    are cached per href (the blocks of one scene ask many times). Raises
    :class:`~stac2cube.errors.AssetReadError` naming the href when it cannot be read or parsed.
    """
    href = granule_metadata_href(item)
    if href is None:
        return None
    path = _local_path(href)
    stamp = None
    if path is not None:
        try:
            st = path.stat()
        except OSError:
            pass  # _fetch says what is wrong
        else:
            stamp = (st.st_mtime_ns, st.st_size)
    return _read_parsed(href, stamp)


def source_angles(item: pystac.Item) -> SceneAngles | None:
    """The mean angles of a source item: :func:`scene_angles` of its properties, its tile
    metadata read only when they lack an angle. A tile metadata file that cannot be read is
    logged and left out (the properties still serve); None when neither gives the sun angles."""
    granule = None
    if any(getattr(angles_from_properties(item.properties), f) is None for f in _ANGLE_FIELDS):
        try:
            got = read_granule_metadata(item)
        except Stac2CubeError as exc:
            log.warning("%s: tile metadata not read, angles from the item only: %s", item.id, exc)
        else:
            granule = None if got is None else got[1]
    return scene_angles(item.properties, granule)


__all__ = [
    "ANGLE_BANDS",
    "GRANULE_ASSET_KEYS",
    "AngleGrids",
    "SceneAngles",
    "angles_from_properties",
    "granule_metadata_asset",
    "granule_metadata_href",
    "parse_granule_metadata",
    "read_granule_metadata",
    "scene_angles",
    "source_angles",
]
