"""The catalog's reference images on disk: writing a version as a COG linked from the
collection with its provenance, and reading the version nearest a scene onto its grid."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pystac
from odc.geo.geobox import GeoBox
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

from ..catalog import REFERENCE_ASSET, REFERENCE_DIRS, CatalogStore, reference_base_key
from ..config import Config
from ..io.cog import write_cog
from ..provenance import software_versions
from ..steps.base import AuxLayer
from .images import clear_fraction, reproject_reference, texture_score


def grid_parameters(geobox: GeoBox) -> dict[str, Any]:
    """The grid a reference was built on, as its parameters record it."""
    return {
        "crs": str(geobox.crs),
        "transform": list(geobox.transform)[:6],
        "shape": list(geobox.shape.yx),
    }


def read_reference(
    config: Config,
    geobox: GeoBox,
    bands: Sequence[str],
    key: str = REFERENCE_ASSET,
    *,
    when: dt.datetime | None = None,
) -> AuxLayer | None:
    """The catalog's reference ``key`` (co-registration or clear-sky) on ``geobox`` (None if it
    has none yet): of its stored versions (:meth:`CatalogStore.reference_versions`), the one
    whose median time is nearest to ``when`` (the first version when ``when`` or the versions'
    times are not known).

    ``AuxLayer.source`` is ``<href>#<sources>``, for the scene's provenance: the reference file
    as an item of the collection refers to it (:func:`href_from_item`) and the scenes (or user
    file) it was built from; ``AuxLayer.datetime`` the median acquisition time of those scenes,
    where recorded; ``AuxLayer.version`` the asset key of the version."""
    store = CatalogStore(config.catalog_dir, config.output.collection_id)
    versions = [(k, a, reference_time(a)) for _, k, a in store.reference_versions(key)]
    if not versions:
        return None
    asset_key, asset, t = versions[0]
    times = [v[2] for v in versions]
    if when is not None and all(times):
        gaps = [abs((v - when).total_seconds()) for v in times if v is not None]
        asset_key, asset, t = versions[gaps.index(min(gaps))]
    path = (store.root / store.collection_id / str(asset["href"])).resolve()
    data = reproject_reference(str(path), geobox, resampling="nearest")
    meta = asset.get("stac2cube:reference", {})
    sources = ",".join(meta.get("sources", [])) or key
    return AuxLayer(
        data[None],
        geobox,
        tuple(bands),
        f"{href_from_item(str(asset['href']))}#{sources}",
        datetime=t,
        version=asset_key,
    )


def href_from_item(collection_href: str) -> str:
    """A collection asset's href as seen from an item of the collection (the items live in
    ``<collection>/<id>/``): ``./_coreg-reference/r.tif`` -> ``../_coreg-reference/r.tif``. An
    absolute href or URL is returned as it is."""
    if "://" in collection_href or collection_href.startswith("/"):
        return collection_href
    return posixpath.normpath(posixpath.join("..", collection_href))


def reference_time(asset: Mapping[str, Any]) -> dt.datetime | None:
    """The median acquisition time a stored reference records (None if it records none)."""
    when = asset.get("stac2cube:reference", {}).get("datetime")
    return pystac.utils.str_to_datetime(when) if isinstance(when, str) else None


def store_reference(
    config: Config,
    store: CatalogStore,
    key: str,
    data: np.ndarray,
    geobox: GeoBox,
    title: str,
    meta: Mapping[str, Any],
    when: dt.datetime | None,
    run_id: str,
) -> None:
    """Write a reference COG and link it as the collection asset ``key`` with its provenance
    (``stac2cube:reference``: ``meta`` plus clear fraction, texture, time, software, run)."""
    out_dir = store.reference_dir(key)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = reference_base_key(key)
    assert ref is not None
    digest = hashlib.sha256(json.dumps(meta["parameters"], sort_keys=True).encode()).hexdigest()
    version = f"-v{meta['version']}" if meta.get("version", 1) > 1 else ""
    name = f"reference-{meta['band']}-{digest[:12]}{version}.tif"
    out = config.output
    cog = write_cog(
        data,
        geobox,
        out_dir / name,
        nodata=float("nan"),
        profile=out.cog_profile,
        blocksize=out.blocksize,
        overview_resampling="average",
        description=title,
    )
    crs = geobox.crs
    assert crs is not None
    provenance = dict(meta)
    if when is not None:
        provenance["datetime"] = pystac.utils.datetime_to_str(when)
    provenance.update(
        clear_fraction=round(clear_fraction(data), 6),
        texture=round(texture_score(data), 6),
        created=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        software=software_versions(),
        run_id=run_id,
    )
    asset_doc = {
        "href": f"./{REFERENCE_DIRS[ref[0]]}/{name}",
        "type": pystac.MediaType.COG,
        "title": title,
        "roles": ["data", "reference"],
        "proj:code": f"EPSG:{crs.epsg}" if crs.epsg else None,
        "proj:shape": list(geobox.shape.yx),
        "proj:transform": list(geobox.transform)[:6],
        "raster:bands": [
            {
                "data_type": "float32",
                "nodata": "nan",
                "spatial_resolution": float(geobox.resolution.x),
            }
        ],
        "file:size": cog.size,
        "file:checksum": cog.checksum,
        "stac2cube:reference": provenance,
    }
    store.set_reference(
        asset_doc,
        extensions=(
            ProjectionExtension.get_schema_uri(),
            RasterExtension.get_schema_uri(),
            FileExtension.get_schema_uri(),
        ),
        key=key,
    )
