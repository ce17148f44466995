"""L1C twins: pairing each L2A scene with its L1C acquisition (for s2cloudless), and
the GDAL settings and access probe of their reads."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import pystac
import rasterio
import rasterio.errors

from ..bands import find_asset
from ..catalog import (
    CatalogStore,
)
from ..config import Config
from ..errors import (
    EmptySearchError,
    SearchError,
    Stac2CubeError,
)
from ..io.read import asset_href, requester_pays
from ..search import search
from ..steps.cloudmask import S2CLOUDLESS_BANDS

log = logging.getLogger(__name__)


_TILE_RE = re.compile(r"_T?(\d{2}[C-X][A-Z]{2})_")


def mgrs_tile(item: pystac.Item) -> str | None:
    """The MGRS tile of a Sentinel-2 item (``33TWN``) from its properties or id."""
    p = item.properties
    if p.get("mgrs:utm_zone") and p.get("mgrs:latitude_band") and p.get("mgrs:grid_square"):
        return f"{int(p['mgrs:utm_zone']):02d}{p['mgrs:latitude_band']}{p['mgrs:grid_square']}"
    for key in ("s2:mgrs_tile", "sentinel:mgrs_tile", "grid:code"):
        if p.get(key):
            return str(p[key]).removeprefix("MGRS-")
    m = _TILE_RE.search(item.id + "_")
    return m.group(1) if m else None


def find_l1c_twins(
    config: Config,
    aoi: Any,
    items: Sequence[pystac.Item],
    store: CatalogStore,
    run_id: str,
) -> dict[str, pystac.Item]:
    """Pair each L2A item with its L1C twin: same MGRS tile, acquired within 60 s.

    A failing L1C search is logged (stage ``search-l1c``); the cloud step then masks without
    s2cloudless (SCL), and its provenance says so. Dates are never mismatched.
    """
    src = config.source
    coll = src.l1c_collection
    if coll is None:
        log.info("source.l1c_collection is null: cloud masking runs without s2cloudless (SCL)")
        return {}
    l1c_source = dataclasses.replace(
        src,
        max_cloud_cover=None,
        max_items=None,
        path=src.l1c_path if src.l1c_path is not None else src.path,
    )
    try:
        found = search(l1c_source, aoi, config.time, collection=coll, base_dir=config.base_dir)
    except EmptySearchError:
        log.info("no %s twins found; cloud masking runs without s2cloudless (SCL)", coll)
        return {}
    except SearchError as exc:
        store.record_failure("<search-l1c>", "search-l1c", exc, run_id=run_id)
        log.warning("L1C search failed (%s); cloud masking runs without s2cloudless (SCL)", exc)
        return {}
    twins: dict[str, pystac.Item] = {}
    for item in items:
        tile, t = mgrs_tile(item), item.datetime
        best: tuple[float, pystac.Item] | None = None
        for cand in found.items:
            if cand.datetime is None or t is None or mgrs_tile(cand) != tile:
                continue
            gap = abs((cand.datetime - t).total_seconds())
            if gap <= 60 and (best is None or gap < best[0]):
                best = (gap, cand)
        if best is not None:
            twins[item.id] = best[1]
    log.info("paired %d of %d scenes with an L1C twin", len(twins), len(items))
    return twins


def l1c_env(twin: pystac.Item, config: Config) -> rasterio.Env:
    """GDAL settings of the L1C reads: requester-pays (``source.l1c_requester_pays``, or when the
    twin says so, see :func:`~stac2cube.io.read.requester_pays`)."""
    pays = config.source.l1c_requester_pays
    if pays is None:
        pays = requester_pays(twin)
    opts = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "3"}
    if pays:
        opts["AWS_REQUEST_PAYER"] = "requester"
    return rasterio.Env(**opts)


def l1c_access_probe(config: Config) -> Callable[[pystac.Item], bool]:
    """``probe(twin)``: whether the storage serves the L1C twin's assets now (opens one asset,
    reads no pixels). Asked once per run, on the first twin: the twins of a run share a store
    and the credentials."""
    answer: list[bool] = []

    def probe(twin: pystac.Item) -> bool:
        if not answer:
            try:
                _, asset = find_asset(twin, S2CLOUDLESS_BANDS[0], resolution=60)
                with l1c_env(twin, config), rasterio.open(asset_href(asset)):
                    answer.append(True)
            except (Stac2CubeError, rasterio.errors.RasterioError, OSError) as exc:
                log.info("L1C twins still not readable: %s", exc)
                answer.append(False)
        return answer[0]

    return probe
