"""Provenance of an output item, as a value.

Written into the item with the STAC processing extension (``processing:*``) and our own
``stac2cube`` extension (``stac2cube:*``), whose JSON Schema is
``catalog_templates/stac2cube/v1.0.0/schema.json``, published at :data:`STAC2CUBE_SCHEMA`.
:meth:`Provenance.to_properties` and :meth:`Provenance.from_properties` round-trip.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
STAC2CUBE_SCHEMA = "https://stac2cube.github.io/stac2cube/schemas/v1.0.0/schema.json"
"""The ``$id`` of our extension's schema: a file of the documentation site (``docs/schemas/``),
also served by ``stac2cube serve`` at the same path."""
LEGACY_STAC2CUBE_SCHEMAS = ("https://stac2cube.github.io/stac2cube-extension/v1.0.0/schema.json",)
"""Earlier URIs of the same schema (never resolvable), still declared by older catalogs."""

SOFTWARE: tuple[tuple[str, str], ...] = (
    ("stac2cube", "stac2cube"),
    ("pystac", "pystac"),
    ("rasterio", "rasterio"),
    ("rio-cogeo", "rio-cogeo"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("odc-geo", "odc-geo"),
    ("gdal-python", "GDAL"),
    ("arosics", "arosics"),
    ("geoarray", "geoarray"),
    ("py_tools_ds", "py_tools_ds"),
    ("s2cloudless", "s2cloudless"),
    ("lightgbm", "lightgbm"),
    ("torch", "torch"),
    ("sen2sr", "sen2sr"),
)
"""``processing:software`` key -> distribution, for every library that can shape the pixels:
reading and warping (rasterio, odc-geo, GDAL), harmonising and masks (numpy, scipy),
co-registration (arosics with GDAL's Python bindings, geoarray, py_tools_ds), cloud
probabilities (s2cloudless on lightgbm), super-resolution (torch, sen2sr), writing (rio-cogeo)."""


def software_versions() -> dict[str, str]:
    """Versions of the software that shapes the pixels: each of :data:`SOFTWARE` that is
    installed, and ``gdal``, the GDAL library rasterio reads and writes with (``gdal-python`` is
    the version of GDAL's Python bindings, used by AROSICS). A library that is not installed is
    left out: it cannot have shaped the pixels."""
    out = {}
    for key, dist in SOFTWARE:
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    import rasterio

    out["gdal"] = str(rasterio.__gdal_version__)
    return out


def jsonable(v: Any) -> Any:
    """``v`` as a step record holds it: tuples and lists, nested ones too, become lists (as
    JSON gives them back); any other value is returned as it is."""
    if isinstance(v, tuple | list):
        return [jsonable(x) for x in v]
    return v


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse(t: str) -> dt.datetime:
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))


@dataclass(frozen=True)
class SourceRecord:
    """The source scene an output item was made from."""

    id: str
    href: str | None
    """Where the source item was read from: the URL it was fetched from, or the file of a local
    source (the one local path an item may hold: it names the source, not the catalog)."""
    collection: str | None
    processing_baseline: str | None
    updated: str | None
    """The source item's ``updated`` timestamp (to notice reprocessed sources)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "href": self.href,
            "collection": self.collection,
            "processing_baseline": self.processing_baseline,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceRecord:
        return cls(
            d["id"],
            d.get("href"),
            d.get("collection"),
            d.get("processing_baseline"),
            d.get("updated"),
        )


@dataclass(frozen=True)
class InputRecord:
    """One input asset read for an output band."""

    band: str
    """The output band, or ``<aux layer>:<band>`` for a step's auxiliary input."""
    asset: str
    """The asset key in the item it was read from (for a catalog reference: the collection
    asset, e.g. ``coreg-reference``)."""
    href: str
    """The asset's href as the item it was read from gives it, never resolved: a relative href
    resolves against :attr:`item_href`, or without one against the source item's href
    (``stac2cube:source``), or, for a catalog reference, against the output item itself."""
    item: str
    """The id of the item read (for a catalog reference: the scenes it was built from)."""
    item_href: str | None = None
    """Where that item was read from, when it is not the source item (the L1C twin)."""

    def to_dict(self) -> dict[str, Any]:
        d = {"band": self.band, "asset": self.asset, "href": self.href, "item": self.item}
        if self.item_href is not None:
            d["item_href"] = self.item_href
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputRecord:
        return cls(d["band"], d["asset"], d["href"], d["item"], d.get("item_href"))


@dataclass(frozen=True)
class StepRecord:
    """What one processing step did: its name, version, parameters and results."""

    name: str
    version: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    results: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "parameters": dict(self.parameters),
            "results": dict(self.results),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        return cls(d["name"], d["version"], d.get("parameters", {}), d.get("results", {}))


@dataclass(frozen=True)
class Provenance:
    """Everything needed to tell how an output item was made."""

    source: SourceRecord
    inputs: tuple[InputRecord, ...]
    steps: tuple[StepRecord, ...]
    config_hash: str
    software: Mapping[str, str]
    started: dt.datetime
    finished: dt.datetime

    @property
    def lineage(self) -> str:
        names = ", ".join(s.name for s in self.steps) or "no step"
        return (
            f"Read from {self.source.collection or 'source'} item {self.source.id} "
            f"(processing baseline {self.source.processing_baseline or 'unknown'}); "
            f"steps: {names}; written as COGs by stac2cube {self.software.get('stac2cube', '?')}."
        )

    def to_properties(self) -> dict[str, Any]:
        """Item properties (processing + stac2cube extension fields)."""
        return {
            "processing:lineage": self.lineage,
            "processing:level": "L2A-ARD",
            "processing:software": dict(self.software),
            "processing:datetime": _iso(self.finished),
            "stac2cube:source": self.source.to_dict(),
            "stac2cube:inputs": [i.to_dict() for i in self.inputs],
            "stac2cube:steps": [s.to_dict() for s in self.steps],
            "stac2cube:config_hash": self.config_hash,
            "stac2cube:started": _iso(self.started),
            "stac2cube:finished": _iso(self.finished),
        }

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> Provenance:
        """Read the provenance back from item properties."""
        return cls(
            source=SourceRecord.from_dict(props["stac2cube:source"]),
            inputs=tuple(InputRecord.from_dict(d) for d in props.get("stac2cube:inputs", [])),
            steps=tuple(StepRecord.from_dict(d) for d in props.get("stac2cube:steps", [])),
            config_hash=props["stac2cube:config_hash"],
            software=dict(props.get("processing:software", {})),
            started=_parse(props["stac2cube:started"]),
            finished=_parse(props["stac2cube:finished"]),
        )

    @staticmethod
    def schema_uris() -> tuple[str, str]:
        """The extension schemas an item carrying provenance declares."""
        return (PROCESSING_SCHEMA, STAC2CUBE_SCHEMA)
