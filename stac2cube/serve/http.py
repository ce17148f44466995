"""The front HTTP server: the catalog's files (range requests), our schema, the rest proxied.

``/catalog/<path>`` serves the catalog's files (GET/HEAD, a single ``Range`` → 206) through a
path guard that never leaves the catalog root (:func:`resolve_under`). :data:`SCHEMA_PATH` serves
the JSON Schema of the provenance extension, at the path of its ``$id``. ``/cube/<version>/<key>``
serves the versioned virtual cube as a read-only Zarr v3 store (:mod:`stac2cube.serve.cube`).
Any other path is proxied to the STAC API backend on its loopback port, with the backend's
internal base URL rewritten to the public one, and with the search parameters the backend cannot
honour refused (400). The server runs in a child process (:mod:`stac2cube.serve.front`).
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import json
import logging
import mimetypes
import os
import re
import socket
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..catalog import STATE_DIR
from ..errors import Stac2CubeError
from ..provenance import STAC2CUBE_SCHEMA
from .backends import UNSUPPORTED_SEARCH_PARAMS
from .cube import (
    CUBE_PREFIX,
    HEAD_VERSION,
    ChunkReadError,
    CubeGateway,
    CubeVersionError,
    StaleChunkError,
    split_cube_path,
)

log = logging.getLogger(__name__)

FILES_PREFIX = "/catalog/"
"""URL prefix under which the catalog directory's files are served."""
SCHEMA_PATH = urlsplit(STAC2CUBE_SCHEMA).path
"""URL path of the provenance extension's schema: that of its ``$id``."""
MAX_BODY = 1 << 20
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
SNAPSHOT_HEADER = "X-Stac2cube-Snapshot"
"""Response header naming the snapshot of the virtual cube a ``/cube/`` answer comes from."""
_OCTETS = "application/octet-stream"
_CHUNK = 1 << 20
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "date",
    "server",
}
_FORWARDED_HEADERS = (
    "Accept",
    "Content-Type",
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
)
_HOST_HEADER = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_ITEMS_ROUTE = re.compile(r"^/collections/[^/]+/items/?$")
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


class RangeNotSatisfiableError(Stac2CubeError, ValueError):
    """A ``Range`` header asks for bytes beyond the end of the file (HTTP 416)."""


def resolve_under(root: Path, url_path: str) -> Path | None:
    """The file that the URL path ``url_path`` (relative to :data:`FILES_PREFIX`) names inside
    ``root``, or None if the request must be refused: an empty, ``.``, ``..`` or hidden segment
    (also when percent-encoded), a backslash or NUL, the ``_stac2cube`` state directory, or a
    path that leaves ``root`` through a symlink. The file need not exist (nor be a file)."""
    try:
        decoded = unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        return None
    if not decoded or "\x00" in decoded or "\\" in decoded:
        return None
    if decoded.endswith("/"):
        decoded = decoded[:-1]  # a directory (never listed): 404, not 403
    parts = decoded.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts) or parts[0] == STATE_DIR:
        return None
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root.joinpath(*parts)))
    if target == real_root or not target.is_relative_to(real_root):
        return None
    return target


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte positions a ``Range`` header asks for, or None for the
    whole file (no header, or one this server ignores as HTTP allows: several ranges, another
    unit, bad syntax). Raises :class:`RangeNotSatisfiableError` past the end of the file."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(f"{header} of {size} bytes")
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(f"{header} of {size} bytes")
    return start, min(end, size - 1)


@functools.cache
def _schema_bytes() -> bytes:
    from ..validation import provenance_schema_file

    return provenance_schema_file().read_bytes()


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return COG_TYPE
    if suffix in (".json", ".geojson"):
        return "application/json"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class FrontConfig:
    """What the front server needs: the catalog root, the backend's internal base URL, the
    public base URL, and the access log it counts file responses in."""

    root: Path
    internal: str
    public_url: str | None
    url: str
    access_log: IO[str]
    unsupported: tuple[str, ...] = UNSUPPORTED_SEARCH_PARAMS["rustac"]
    backend: str = "rustac"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @functools.cached_property
    def internal_re(self) -> re.Pattern[bytes]:
        return re.compile(re.escape(self.internal.encode()) + rb"(?![0-9])")

    def count(self, status: int) -> None:
        with self.lock:
            self.access_log.write(f"{status}\n")
            self.access_log.flush()

    def public_base(self, host_header: str | None) -> str:
        if self.public_url:
            return self.public_url
        if host_header and _HOST_HEADER.match(host_header):
            return f"http://{host_header}"
        return self.url

    def rewrite(self, data: bytes, base: str) -> bytes:
        return self.internal_re.sub(base.encode().replace(b"\\", b"\\\\"), data)

    @functools.cached_property
    def cube(self) -> CubeGateway:
        return CubeGateway(self.root)


class FrontServer(ThreadingHTTPServer):
    """A threaded HTTP server on an already bound and listening socket."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, cfg: FrontConfig) -> None:
        self.address_family = sock.family
        self.cfg = cfg
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stac2cube-serve"
    timeout = 60

    @property
    def cfg(self) -> FrontConfig:
        server = self.server
        assert isinstance(server, FrontServer)
        return server.cfg

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if not self.path.startswith("/") or self.path.startswith("//"):
            self.send_error(400, "the request target must be an absolute path")
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ methods
    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_POST(self) -> None:
        if urlsplit(self.path).path.rstrip("/") != "/search":
            self.send_error(405, "read-only: only POST /search is allowed")
            return
        self._proxy("POST")

    def do_OPTIONS(self) -> None:
        path = urlsplit(self.path).path
        if self._is_file_route() or path == SCHEMA_PATH or path.startswith(CUBE_PREFIX):
            self.send_response(204)
            self._cors_headers()
            self.send_header("Allow", "GET, HEAD, OPTIONS")
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Range, If-Range")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._proxy("OPTIONS")

    def _is_file_route(self) -> bool:
        path = urlsplit(self.path).path
        return path.startswith(FILES_PREFIX) or path == FILES_PREFIX.rstrip("/")

    def _dispatch(self, *, head: bool) -> None:
        if self._is_file_route():
            self._send_file(head=head)
        elif urlsplit(self.path).path == SCHEMA_PATH:
            self._send_schema(head=head)
        elif urlsplit(self.path).path.startswith(CUBE_PREFIX):
            self._send_cube_key(head=head)
        else:
            self._proxy("HEAD" if head else "GET")

    # ------------------------------------------------------------------ files
    def _cors_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header(
            "Access-Control-Expose-Headers",
            f"Content-Range, Content-Length, Accept-Ranges, ETag, {SNAPSHOT_HEADER}",
        )

    def _send_unsatisfiable(self, size: int) -> None:
        """416: the ``Range`` asked for lies outside a body of ``size`` bytes."""
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{size}")
        self._cors_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file_error(self, status: int, message: str) -> None:
        self.cfg.count(status)
        self.send_error(status, message)

    def _send_file(self, *, head: bool) -> None:
        raw = urlsplit(self.path).path[len(FILES_PREFIX) :]
        target = resolve_under(self.cfg.root, raw)
        if target is None:
            self._file_error(403, "outside the served catalog")
            return
        try:
            f = open(target, "rb")  # noqa: SIM115 (closed below)
        except OSError:
            self._file_error(404, "no such file in the catalog")
            return
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._file_error(404, "not a file")
                return
            size = st.st_size
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if if_range and if_range not in (etag, modified):
                wanted = None  # the file changed: send it whole
            try:
                rng = byte_range(wanted, size)
            except RangeNotSatisfiableError:
                self.cfg.count(416)
                self._send_unsatisfiable(size)
                return
            first, last = rng if rng is not None else (0, size - 1)
            status = 206 if rng is not None else 200
            self.cfg.count(status)
            self.send_response(status)
            self.send_header("Content-Type", _content_type(target))
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            if rng is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self._cors_headers()
            self.end_headers()
            if head:
                return
            f.seek(first)
            left = last - first + 1
            try:
                while left > 0:
                    chunk = f.read(min(_CHUNK, left))
                    if not chunk:
                        break  # the file shrank while being served
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    def _send_schema(self, *, head: bool) -> None:
        body = _schema_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/schema+json")
        self.send_header("Content-Length", str(len(body)))
        self._cors_headers()
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # ------------------------------------------------------------------ the virtual cube
    def _send_cube_key(self, *, head: bool) -> None:
        where = split_cube_path(urlsplit(self.path).path)
        if where is None:
            self._send_json(404, {"code": "NotFound", "description": "no Zarr key in this path"})
            return
        version, key = where
        try:
            snapshot, body = self.cfg.cube.get(version, key)
        except CubeVersionError as exc:
            self._send_json(404, {"code": "UnknownVersion", "description": str(exc)})
            return
        except StaleChunkError as exc:
            log.warning("%s %s: %s", self.command, self.path, exc)
            self._send_json(409, {"code": "StaleChunk", "description": str(exc)})
            return
        except ChunkReadError as exc:
            log.warning("%s %s: %s", self.command, self.path, exc)
            self._send_json(500, {"code": "ChunkReadError", "description": str(exc)})
            return
        if body is None:
            self._send_json(
                404, {"code": "NotFound", "description": f"no key {key!r} in version {version}"}
            )
            return
        etag = f'"{snapshot}"'
        wanted = self.headers.get("Range")
        if self.headers.get("If-Range") not in (None, etag):
            wanted = None
        try:
            rng = byte_range(wanted, len(body))
        except RangeNotSatisfiableError:
            self._send_unsatisfiable(len(body))
            return
        first, last = rng if rng is not None else (0, len(body) - 1)
        self.send_response(206 if rng is not None else 200)
        json_key = key.rpartition("/")[2] == "zarr.json"
        self.send_header("Content-Type", "application/json" if json_key else _OCTETS)
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header(SNAPSHOT_HEADER, snapshot)
        if version == HEAD_VERSION:
            self.send_header("Cache-Control", "no-cache")
        if rng is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
        self._cors_headers()
        self.end_headers()
        if not head:
            try:
                self.wfile.write(body[first : last + 1])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    # ------------------------------------------------------------------ the STAC API
    def _send_json(self, status: int, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send_json(413, {"code": "PayloadTooLarge", "description": "body over 1 MiB"})
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _unsupported(self, method: str, body: bytes) -> list[str]:
        parts = urlsplit(self.path)
        names: set[str] = set()
        if method == "POST":
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = {}  # rustac answers a broken body itself
            if isinstance(doc, dict):
                names = set(doc)
        elif parts.path.rstrip("/") == "/search" or _ITEMS_ROUTE.match(parts.path):
            names = set(parse_qs(parts.query, keep_blank_values=True))
        return sorted(names.intersection(self.cfg.unsupported))

    def _proxy(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            return
        cfg = self.cfg
        bad = self._unsupported(method, body)
        if bad:
            self._send_json(
                400,
                {
                    "code": "BadRequest",
                    "description": (
                        f"this server (backend {cfg.backend}) does not support "
                        f"{', '.join(bad)}; search by bbox, intersects, datetime, ids and "
                        "collections"
                        + (" and filter with CQL2 (`filter`)" if cfg.backend == "static" else "")
                        + ", and filter the rest on the client or query a stac-geoparquet "
                        "export (stac2cube.export.export_geoparquet)"
                    ),
                },
            )
            return
        headers = {h: v for h in _FORWARDED_HEADERS if (v := self.headers.get(h)) is not None}
        conn = http.client.HTTPConnection(urlsplit(cfg.internal).netloc, timeout=60)
        try:
            conn.request(method, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            log.warning("the STAC API did not answer %s %s: %s", method, self.path, exc)
            self._send_json(502, {"code": "BadGateway", "description": "the STAC API is down"})
            return
        finally:
            conn.close()
        base = cfg.public_base(self.headers.get("Host"))
        ctype = resp.getheader("Content-Type", "")
        if any(t in ctype for t in ("json", "html", "text", "javascript")):
            data = cfg.rewrite(data, base)
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() in _HOP_BY_HOP:
                continue
            if name.lower() == "location":
                value = cfg.rewrite(value.encode(), base).decode()
            self.send_header(name, value)
        length = resp.getheader("Content-Length") if method == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)
