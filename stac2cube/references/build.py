"""The catalog's reference images, built on the client before the scenes are dispatched: the
co-registration reference of ``steps.coreg`` and the clear-sky reference of the cloud step's
multi-temporal test, both described by a :class:`ReferenceSpec` and built by one
:func:`ensure_reference`. A stored version is never changed, so history never needs
reprocessing; see docs/coreg.md and docs/cloudmask.md."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pystac
from odc.geo.geobox import GeoBox

from ..bands import MASK_CLEAR, SCL_BAD
from ..catalog import CLOUD_REFERENCE_ASSET, REFERENCE_ASSET, CatalogStore, reference_version_key
from ..config import Config
from ..errors import ConfigError, ReportedError, Stac2CubeError
from ..fields import to_dict
from ..steps.base import Scene
from ..steps.cloudmask import TEMPORAL_BAND, CloudMaskConfig
from .images import (
    MIN_TEXTURE,
    ReferenceChoice,
    candidate_order,
    candidate_scores,
    choose_reference,
    refresh_window,
    reproject_reference,
)
from .store import grid_parameters, reference_time, store_reference

log = logging.getLogger(__name__)

CandidateReader = Callable[[pystac.Item], Scene]
"""Reads a candidate scene on the target grid, clouds masked (``CLOUD_MASK``) where the run masks
them: :func:`stac2cube.pipeline.read.reference_reader`."""


@dataclass(frozen=True)
class ReferenceSpec:
    """What a catalog reference is and how it is built."""

    key: str
    """Its collection asset (version 1; later versions are ``<key>-v2``, ...)."""
    band: str
    mode: str
    """``clearest`` or ``median`` of candidate scenes (:func:`choose_reference`), or ``file``."""
    scenes: int
    """How many scenes a median combines (twice as many candidates are read)."""
    parameters: Mapping[str, Any]
    """What determines it: a stored version built with other parameters is rebuilt."""
    title: str
    what: str
    """How messages name it (``the co-registration reference``)."""
    stage: str
    """Its stage in the failure log (``coreg-reference``, ``cloud-reference``)."""
    geobox: GeoBox
    path: str | None = None
    """``file`` mode: the user's raster (a resolved path or a GDAL-readable URL)."""
    band_index: int = 1
    min_texture: float = MIN_TEXTURE
    """Texture below which a candidate is too flat (:func:`choose_reference`)."""
    refresh_days: float | None = None
    """A new version for scenes farther than this from every stored one (None: never)."""


def coreg_reference_spec(config: Config, geobox: GeoBox) -> ReferenceSpec | None:
    """The co-registration reference of ``steps.coreg`` (None without the step)."""
    cfg = config.steps.coreg
    if cfg is None:
        return None
    path = cfg.reference_path
    if path is not None and "://" not in path and not Path(path).is_absolute():
        path = str(config.base_dir / path)
    params = {
        "mode": cfg.reference,
        "band": cfg.match_band,
        "path": cfg.reference_path,
        "band_index": cfg.reference_band_index,
        "scenes": cfg.reference_scenes,
        "grid": grid_parameters(geobox),
    }
    return ReferenceSpec(
        key=REFERENCE_ASSET,
        band=cfg.match_band,
        mode=cfg.reference,
        scenes=cfg.reference_scenes,
        parameters=params,
        title=f"Co-registration reference ({cfg.match_band}, {cfg.reference})",
        what="the co-registration reference",
        stage="coreg-reference",
        geobox=geobox,
        path=path,
        band_index=cfg.reference_band_index,
    )


_DEFAULT_REFRESH_DAYS = CloudMaskConfig().temporal_refresh_days


def cloud_reference_spec(config: Config, geobox: GeoBox) -> ReferenceSpec | None:
    """The clear-sky reference of the multi-temporal cloud test: the per-pixel median of the
    ``B02`` reflectance of the ``temporal_scenes`` clearest scenes, clouds masked by the cloud
    step without the test (None when the test is off)."""
    cfg = config.steps.cloudmask
    if cfg is None or cfg.temporal_threshold is None:
        return None
    # how far apart versions are is not what a version is: refresh_days at its default
    masking = to_dict(
        dataclasses.replace(
            cfg, temporal_threshold=None, temporal_refresh_days=_DEFAULT_REFRESH_DAYS
        ),
        for_hash=True,
    )
    params = {
        "mode": "median",
        "band": TEMPORAL_BAND,
        "scenes": cfg.temporal_scenes,
        "cloudmask": masking,
        "grid": grid_parameters(geobox),
    }
    return ReferenceSpec(
        key=CLOUD_REFERENCE_ASSET,
        band=TEMPORAL_BAND,
        mode="median",
        scenes=cfg.temporal_scenes,
        parameters=params,
        title=f"Clear-sky reference of the multi-temporal cloud test ({TEMPORAL_BAND}, median)",
        what="the clear-sky reference of the cloud test",
        stage="cloud-reference",
        geobox=geobox,
        # a flat clear scene (water, desert) is as good a clear-sky reference
        min_texture=0.0,
        refresh_days=cfg.temporal_refresh_days,
    )


def reference_specs(config: Config, geobox: GeoBox) -> list[ReferenceSpec]:
    """The references the configured steps need, in the order they are built."""
    specs = (cloud_reference_spec(config, geobox), coreg_reference_spec(config, geobox))
    return [s for s in specs if s is not None]


def ensure_reference(
    spec: ReferenceSpec,
    config: Config,
    items: Sequence[pystac.Item],
    store: CatalogStore,
    run_id: str,
    read: CandidateReader,
) -> None:
    """Make sure the catalog holds reference ``spec`` near every scene of ``items``.

    * Version 1 (the asset ``spec.key``) from all of ``items``, unless the catalog holds one
      built with ``spec.parameters`` (a version with other parameters is replaced, and the later
      versions built with them are removed).
    * With ``spec.refresh_days``, a new version for each group of scenes farther than that from
      every stored version (:func:`refresh_window`), from the scenes of ``items`` in that window.

    A failure is logged (stage ``spec.stage``) and the run goes on: the step then records that
    it had no reference (or none near the scene), and the next run tries again.
    """
    versions = store.reference_versions(spec.key)
    current = [
        v
        for v in versions
        if v[2].get("stac2cube:reference", {}).get("parameters") == spec.parameters
    ]
    if not current or current[0][0] != 1:
        built, _ = _build(spec, config, items, store, run_id, read, 1)
        if not built:
            return
        for _, key, _ in versions:  # later versions of the reference just replaced
            if key != spec.key:
                store.remove_reference(key)
        current = store.reference_versions(spec.key)
    if spec.refresh_days is None:
        return
    known = [reference_time(a) for _, _, a in current]
    times = [t for t in known if t is not None]
    if len(times) < len(known):
        log.warning("a version of %s records no time: it is not refreshed", spec.what)
        return
    dated = sorted(((it.datetime, it) for it in items if it.datetime), key=lambda p: p[0])
    # after every stored version, whatever its parameters: a file name is never reused
    version = max(v[0] for v in store.reference_versions(spec.key)) + 1
    done_until: dt.datetime | None = None
    while True:
        pending = [t for t, _ in dated if done_until is None or t > done_until]
        window = refresh_window(pending, times, spec.refresh_days)
        if window is None:
            return
        group = [it for t, it in dated if window[0] <= t <= window[1]]
        _, when = _build(spec, config, group, store, run_id, read, version, window=window)
        if when is not None:
            times.append(when)
            version += 1
        done_until = window[1]


def _build(
    spec: ReferenceSpec,
    config: Config,
    items: Sequence[pystac.Item],
    store: CatalogStore,
    run_id: str,
    read: CandidateReader,
    version: int,
    *,
    window: tuple[dt.datetime, dt.datetime] | None = None,
) -> tuple[bool, dt.datetime | None]:
    """Build and store version ``version`` of ``spec`` from ``items``: (built, median time of
    its scenes); a failure is recorded in the failure log."""
    what = spec.what
    if window is not None:
        what = (
            f"version {version} of {spec.what} (scenes of "
            f"{window[0]:%Y-%m-%d} to {window[1]:%Y-%m-%d})"
        )
    when: dt.datetime | None = None
    try:
        if spec.mode == "file":
            assert spec.path is not None
            data = reproject_reference(spec.path, spec.geobox, spec.band_index)
            sources: tuple[str, ...] = (str(spec.parameters["path"]),)
        else:
            mode = cast(ReferenceChoice, spec.mode)
            cands, times, scores = reference_candidates(
                read,
                items,
                spec.band,
                2 * spec.scenes,
                keep=1 if mode == "clearest" else spec.scenes,
                min_texture=spec.min_texture,
            )
            data, sources = choose_reference(
                cands, mode, spec.scenes, min_texture=spec.min_texture, scores=scores
            )
            when = median_time([times[s] for s in sources])
    except Stac2CubeError as exc:
        log.warning("cannot build %s: %s", what, exc)
        err = exc if window is None else ReportedError(type(exc).__name__, f"{what}: {exc}")
        store.record_failure(f"<{spec.stage}>", spec.stage, err, run_id=run_id)
        return False, None
    title = spec.title
    meta: dict[str, Any] = {
        "mode": spec.mode,
        "band": spec.band,
        "sources": list(sources),
        "parameters": dict(spec.parameters),
    }
    if version > 1:
        title += f", version {version}"
        meta["version"] = version
    key = reference_version_key(spec.key, version)
    store_reference(config, store, key, data, spec.geobox, title, meta, when, run_id)
    log.info("%s built from %s", key, ", ".join(sources))
    return True, when


def median_time(times: Sequence[dt.datetime | None]) -> dt.datetime | None:
    """The median of the known times (the earlier of the two middle ones), None if none."""
    known = sorted(t for t in times if t is not None)
    return known[(len(known) - 1) // 2] if known else None


def bad_pixels(scene: Scene) -> np.ndarray | None:
    """Pixels a reference must not use: not clear in ``CLOUD_MASK`` or cloud/shadow/snow in SCL."""
    if "CLOUD_MASK" in scene.classes:
        bad: np.ndarray = scene.classes["CLOUD_MASK"] != MASK_CLEAR
        return bad
    if "SCL" in scene.classes:
        bad = np.isin(scene.classes["SCL"], SCL_BAD)
        return bad
    return None


def reference_candidates(
    read: CandidateReader,
    items: Sequence[pystac.Item],
    band: str,
    n: int,
    *,
    keep: int | None = None,
    min_texture: float = MIN_TEXTURE,
) -> tuple[
    list[tuple[str, np.ndarray, np.ndarray | None]],
    dict[str, dt.datetime | None],
    list[tuple[float, float]],
]:
    """``(id, band, bad pixels)`` of the ``n`` (at least 3) items with the lowest provider cloud
    cover that ``read`` can read, the items' acquisition times, and each kept candidate's
    :func:`candidate_scores`.

    ``keep``: only the best ``keep`` candidates in :func:`choose_reference`'s order are kept
    (in the order they were read) and the others' pixels dropped as soon as a better one is
    read: the reference is the same, and a run holds ``keep`` bands instead of ``n`` (600 MB
    each for a 10980 px tile)."""
    ranked = sorted(items, key=lambda it: float(it.properties.get("eo:cloud_cover", 100.0)))
    out: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    scores: list[tuple[float, float]] = []
    order: list[tuple[bool, float, float, int]] = []
    times: dict[str, dt.datetime | None] = {}
    for k, item in enumerate(ranked[: max(n, 3)]):
        try:
            scene = read(item)
        except Stac2CubeError as exc:
            log.info("reference candidate %s skipped: %s", item.id, exc)
            continue
        if band not in scene.bands:
            raise ConfigError(f"the reference band {band} is not in `bands`; add it there")
        bad = bad_pixels(scene)
        data = scene.bands[band]
        del scene  # the other bands and layers
        times[item.id] = item.datetime
        score = candidate_scores(data, bad)
        out.append((item.id, data, bad))
        scores.append(score)
        order.append(candidate_order(score, k, min_texture))
        if keep is not None and len(out) > keep:
            worst = max(range(len(out)), key=order.__getitem__)
            log.debug("reference candidate %s dropped: %d better ones held", out[worst][0], keep)
            for held in (out, scores, order):
                del held[worst]
    return out, times, scores
