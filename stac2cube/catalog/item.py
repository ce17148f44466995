"""Writing a scene: its COGs (and step sidecars) in the scene's staging directory, and
the output STAC item that describes them with their provenance."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely.geometry
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Bitfield, Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension

from ..angles import source_angles
from ..ard.profile import apply_profile
from ..bands import S2_BANDS, SCL_CLASSES
from ..catalog import (
    CatalogStore,
    load_template,
)
from ..config import Config, OutputConfig
from ..grid import footprint_lonlat, on_band_grid
from ..io.atomic import write_bytes_atomic
from ..io.cog import CogFile, file_checksum, write_cog
from ..io.threads import worker_threads
from ..provenance import InputRecord, Provenance, SourceRecord, StepRecord, software_versions
from ..radiometry import (
    from_reflectance,
    processing_baseline,
    storage_encoding,
)
from ..steps.base import LayerInfo, Scene, Sidecar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrittenAsset:
    """One COG written for a scene, as :func:`build_item` describes it."""

    cog: CogFile
    dtype: str
    scale: float
    offset: float
    nodata: float | None
    geobox: GeoBox
    band: str | None
    """The Sentinel-2 band of a reflectance asset (``eo:bands``); None for class layers."""
    info: LayerInfo | None = None
    """How a class layer is described (classification extension); None for reflectance."""


@dataclass(frozen=True)
class AssetEncoding:
    """How one asset's COG is encoded: its storage type, nodata, scale/offset, overviews and
    description; the same whether the COG is written whole or block by block."""

    dtype: str
    nodata: float | None
    scale: float
    offset: float
    overview_resampling: str
    description: str
    band: str | None = None
    """The Sentinel-2 band of a reflectance asset; None for class layers."""
    info: LayerInfo | None = None
    """How a class layer is described; None for reflectance."""

    @classmethod
    def reflectance(cls, out: OutputConfig, band: str, description: str) -> AssetEncoding:
        """Reflectance in the output encoding (``output.dtype``)."""
        scale, offset, nodata = storage_encoding(out.dtype)
        return cls(out.dtype, nodata, scale, offset, out.overview_resampling, description, band)

    @classmethod
    def classes(cls, info: LayerInfo, dtype: str, description: str) -> AssetEncoding:
        """A class or mask layer, as ``info`` describes it."""
        return cls(
            dtype,
            info.nodata,
            info.scale,
            info.offset,
            info.overview_resampling,
            description,
            info=info,
        )

    def encode(self, data: np.ndarray) -> np.ndarray:
        """Pixels as stored: reflectance encoded, class values as they are."""
        return data if self.band is None else from_reflectance(data, dtype=self.dtype)

    def cog_options(self, out: OutputConfig, threads: int | None) -> dict[str, Any]:
        """Keyword arguments of :func:`~stac2cube.io.cog.write_cog` and
        :class:`~stac2cube.io.cog.CogWriter`."""
        return {
            "nodata": self.nodata,
            "scale": self.scale,
            "offset": self.offset,
            "profile": out.cog_profile,
            "blocksize": out.blocksize,
            "overview_resampling": self.overview_resampling,
            "description": self.description,
            "threads": threads,
        }

    def written(self, cog: CogFile, geobox: GeoBox) -> WrittenAsset:
        """The written asset, for :func:`build_item`."""
        return WrittenAsset(
            cog, self.dtype, self.scale, self.offset, self.nodata, geobox, self.band, self.info
        )


def write_scene(
    scene: Scene,
    source: pystac.Item,
    inputs: tuple[InputRecord, ...],
    records: tuple[StepRecord, ...],
    config: Config,
    store: CatalogStore,
    *,
    started: float,
) -> dict[str, Any]:
    """Write the scene's COGs (and step sidecars) into its staging directory and return the
    output item's JSON."""
    t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=time.perf_counter() - started)
    out = config.output
    threads = worker_threads()
    item_dir = store.new_staging_dir(scene.item_id)  # swapped into place by store.add_item
    written: dict[str, WrittenAsset] = {}

    def write(key: str, data: np.ndarray, gbox: GeoBox, enc: AssetEncoding) -> None:
        options = enc.cog_options(out, threads)
        cog = write_cog(enc.encode(data), gbox, item_dir / f"{key}.tif", **options)
        written[key] = enc.written(cog, gbox)

    for band, refl in scene.bands.items():
        gbox, data = on_band_grid(scene.geobox, band, refl, native=out.native_resolution)
        write(band, data, gbox, AssetEncoding.reflectance(out, band, band))
    for name, layer in scene.classes.items():
        info = layer_info(scene, name)
        enc = AssetEncoding.classes(info, str(layer.dtype), info.description or name)
        gbox, data = on_band_grid(scene.geobox, name, layer, native=out.native_resolution)
        write(name, data, gbox, enc)
    for key, grid_layer in scene.layers.items():
        desc = grid_layer.description or key
        if grid_layer.band is not None:
            enc = AssetEncoding.reflectance(out, grid_layer.band, desc)
        else:
            info = grid_layer.info or LayerInfo(description=grid_layer.description)
            enc = AssetEncoding.classes(info, str(grid_layer.data.dtype), info.description or key)
        write(key, grid_layer.data, grid_layer.geobox, enc)
    prov = scene_provenance(source, inputs, records, config, t_start)
    return build_item(scene, source, written, prov, sidecars=write_sidecars(scene, item_dir))


def write_sidecars(scene: Scene, item_dir: Path) -> dict[str, tuple[Sidecar, CogFile]]:
    """Write the steps' sidecars of ``scene`` into its staging directory, atomically."""
    sidecars: dict[str, tuple[Sidecar, CogFile]] = {}
    for key, car in scene.sidecars.items():
        path = item_dir / car.filename
        write_bytes_atomic(path, car.data)
        size, checksum = file_checksum(path)
        sidecars[key] = (car, CogFile(path, size, checksum))
    return sidecars


def scene_provenance(
    source: pystac.Item,
    inputs: tuple[InputRecord, ...],
    records: tuple[StepRecord, ...],
    config: Config,
    started: dt.datetime,
) -> Provenance:
    """The provenance of a scene written now, whose processing began at ``started``."""
    return Provenance(
        source=SourceRecord(
            id=source.id,
            href=source.get_self_href(),
            collection=source.collection_id,
            processing_baseline=processing_baseline(source),
            updated=source.properties.get("updated"),
        ),
        inputs=inputs,
        steps=records,
        config_hash=config.config_hash,
        software=software_versions(),
        started=started,
        finished=dt.datetime.now(dt.UTC),
    )


def layer_info(scene: Scene, name: str) -> LayerInfo:
    """How a class/mask layer is written (SCL gets the Sen2Cor classes)."""
    if name in scene.layer_info:
        return scene.layer_info[name]
    if name == "SCL":
        return LayerInfo(0, SCL_CLASSES, "Sen2Cor scene classification")
    return LayerInfo()


def eo_common_name(name: str | None) -> str | None:
    """The eo v1.1 common name (which knows only ``rededge`` for B05-B07)."""
    return "rededge" if name and name.startswith("rededge") else name


def build_item(
    scene: Scene,
    source: pystac.Item,
    written: Mapping[str, WrittenAsset],
    prov: Provenance,
    *,
    sidecars: Mapping[str, tuple[Sidecar, CogFile]] | None = None,
) -> dict[str, Any]:
    """The output STAC item (proj, eo, raster, file, classification, processing, stac2cube).

    Assets on a grid other than the scene's (e.g. 2.5 m super-resolved bands) carry their own
    ``proj:shape`` and ``proj:transform``, so odc-stac loads each on its own grid.
    """
    gbox = scene.geobox
    footprint = footprint_lonlat(gbox)
    if source.geometry is not None:
        inter = footprint.intersection(shapely.geometry.shape(source.geometry))
        if not inter.is_empty and inter.area > 0:
            footprint = inter
    geom = shapely.geometry.mapping(footprint)
    tmpl = load_template("item.json")
    props = dict(tmpl.get("properties", {}))
    for key in (
        "platform",
        "constellation",
        "instruments",
        "gsd",
        "view:sun_azimuth",
        "view:sun_elevation",
        "mgrs:utm_zone",
        "mgrs:latitude_band",
        "mgrs:grid_square",
        "s2:processing_baseline",
        "sat:relative_orbit",
        "sat:orbit_state",
    ):
        if key in source.properties:
            props[key] = source.properties[key]
    props.update(scene.properties)
    props.update(prov.to_properties())
    props["created"] = props["stac2cube:finished"]
    props["updated"] = props["stac2cube:finished"]
    assert source.datetime is not None
    item = pystac.Item(
        id=scene.item_id,
        geometry=geom,
        bbox=list(footprint.bounds),
        datetime=source.datetime,
        properties=props,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = gbox.crs
    assert crs is not None
    proj.code = f"EPSG:{crs.epsg}" if crs.epsg else None
    if crs.epsg is None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = list(gbox.shape.yx)
    proj.transform = list(gbox.transform)[:6]
    proj.bbox = list(gbox.extent.boundingbox)
    for key, w in written.items():
        info = S2_BANDS.get(w.band) if w.band is not None else None
        if info is not None:
            title = key + (f" ({info.common_name})" if info.common_name else "")
            if key != w.band:
                title = f"{title}, {w.geobox.resolution.x:g} m"
        else:
            title = w.info.description if w.info and w.info.description else key
        asset = pystac.Asset(
            href=f"./{key}.tif",
            media_type=pystac.MediaType.COG,
            title=title,
            roles=list(w.info.roles) if w.info else ["data", "reflectance"],
        )
        item.add_asset(key, asset)
        if w.geobox != gbox:
            aproj = ProjectionExtension.ext(asset)
            aproj.shape = list(w.geobox.shape.yx)
            aproj.transform = list(w.geobox.transform)[:6]
        rb = RasterBand.create(
            nodata=w.nodata if w.nodata is None or not np.isnan(w.nodata) else NoDataStrings.NAN,
            data_type=DataType(w.dtype),
            spatial_resolution=float(w.geobox.resolution.x),
        )
        if w.info is None or w.info.scale != 1.0 or w.info.offset != 0.0:
            rb.scale, rb.offset = w.scale, w.offset
        if w.info is not None and w.info.unit:
            rb.unit = w.info.unit
        RasterExtension.ext(asset, add_if_missing=True).bands = [rb]
        if w.info is not None:
            if w.info.classes:
                classes = dict(w.info.classes)
                classes.setdefault(w.info.nodata, "no_data")
                ClassificationExtension.ext(asset, add_if_missing=True).classes = [
                    Classification.create(value=v, name=n, nodata=v == w.info.nodata or None)
                    for v, n in sorted(classes.items())
                ]
            if w.info.bitfields:
                ClassificationExtension.ext(asset, add_if_missing=True).bitfields = [
                    Bitfield.create(
                        offset=bit,
                        length=1,
                        name=name,
                        classes=[
                            Classification.create(value=0, name=f"not_{name}"),
                            Classification.create(value=1, name=name),
                        ],
                    )
                    for bit, name in sorted(w.info.bitfields.items())
                ]
        elif info is not None and w.band is not None:
            EOExtension.ext(asset, add_if_missing=True).bands = [
                Band.create(
                    name=w.band,
                    common_name=eo_common_name(info.common_name),
                    center_wavelength=info.center_wavelength,
                    full_width_half_max=info.fwhm,
                )
            ]
        fe = FileExtension.ext(asset, add_if_missing=True)
        fe.size = w.cog.size
        fe.checksum = w.cog.checksum
    for key, (car, f) in (sidecars or {}).items():
        asset = pystac.Asset(
            href=f"./{car.filename}",
            media_type=car.media_type,
            title=car.title,
            roles=list(car.roles),
        )
        item.add_asset(key, asset)
        fe = FileExtension.ext(asset, add_if_missing=True)
        fe.size = f.size
        fe.checksum = f.checksum
    for uri in prov.schema_uris():
        if uri not in item.stac_extensions:
            item.stac_extensions.append(uri)
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    return apply_profile(doc, angles=source_angles(source))
