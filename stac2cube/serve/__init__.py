"""Serve a catalog to other STAC tools: a real STAC API, the COGs and the virtual cube over HTTP,
on one port.

:func:`serve` starts a front HTTP server that serves the catalog's files (with range requests),
its versioned virtual cube as a read-only Zarr v3 store (:mod:`~stac2cube.serve.cube`), and
proxies a STAC API backend (``rustac serve``, or stac-fastapi-static for CQL2 filters) that
listens on 127.0.0.1 only. How the pieces fit, and the backends' limits: ``docs/serve.md``.
"""

from __future__ import annotations

from .backends import UNSUPPORTED_SEARCH_PARAMS, Backend
from .cube import (
    CUBE_PREFIX,
    HEAD_VERSION,
    ChunkReadError,
    CubeGateway,
    CubeVersionError,
    StaleChunkError,
)
from .http import (
    COG_TYPE,
    FILES_PREFIX,
    MAX_BODY,
    SCHEMA_PATH,
    SNAPSHOT_HEADER,
    RangeNotSatisfiableError,
    byte_range,
    resolve_under,
)
from .process import RustacServer, ServeError, StacApiServerError, free_port, stop_process
from .server import DEFAULT_HOST, DEFAULT_PORT, CatalogServer, serve

__all__ = [
    "COG_TYPE",
    "CUBE_PREFIX",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FILES_PREFIX",
    "HEAD_VERSION",
    "MAX_BODY",
    "SCHEMA_PATH",
    "SNAPSHOT_HEADER",
    "UNSUPPORTED_SEARCH_PARAMS",
    "Backend",
    "CatalogServer",
    "ChunkReadError",
    "CubeGateway",
    "CubeVersionError",
    "RangeNotSatisfiableError",
    "RustacServer",
    "ServeError",
    "StacApiServerError",
    "StaleChunkError",
    "byte_range",
    "free_port",
    "resolve_under",
    "serve",
    "stop_process",
]
