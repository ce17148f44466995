"""Serve a catalog to other STAC tools: a real STAC API and the COGs over HTTP, on one port.

::

    client ──HTTP──▶ front (host:port, 127.0.0.1 unless told otherwise; a threaded HTTP server
                      │     in a child Python process)
                      ├─ /catalog/<path>  the catalog's files: GET/HEAD, single Range → 206
                      └─ anything else    proxied to the STAC API backend (127.0.0.1 only)

At start the catalog is read once (:func:`stac2cube.export.read_catalog`): its collections and
items, with every asset href rewritten to ``<internal>/catalog/<catalog-relative path>``, are
handed to the STAC API backend, which listens on a loopback port only. The front
rewrites that internal base URL in every proxied response to the public one (``public_url``, or
the ``Host`` the client used), so the landing page's ``self``/``root`` links, paging links and
asset hrefs all point at the port the client used. Files are served live; the API is a snapshot
of the catalog at start (restart the server after a run to see new items).

The front runs in its own process because GDAL (rasterio, odc-stac) sometimes does HTTP while
holding the GIL: a client in the same process would otherwise starve a server thread and hang.
The port is bound in the calling process (a taken port fails at once) and the socket is passed
to the child, which exits when told to, or when its parent goes away.

The file server never leaves the catalog root: URL paths are percent-decoded once, and any empty,
``.``, ``..`` or hidden (dot) segment, backslash or NUL is refused (403), as is the internal
``_stac2cube/`` state directory; the resolved path (symlinks followed) must still lie inside the
root, and only regular files are served (404 otherwise, directories are never listed).

Two STAC API backends answer behind the front (``backend``):

* ``rustac`` (default): ``rustac serve`` (in-memory backend). It searches by ``bbox``,
  ``intersects``, ``datetime``, ``ids`` and ``collections``, with paging, but has no ``filter``.
* ``static``: `stac-fastapi-static <https://pypi.org/project/stac-fastapi-static/>`_, a
  stac-fastapi application over a static catalog, run by uvicorn on a snapshot of the catalog
  written at start. It adds the **CQL2 filter** extension (``filter`` as text or JSON, e.g.
  ``eo:cloud_cover < 20``). Known upstream limitation (stac-fastapi-static 1.0.1): pages after the
  first of a paged search ignore ``datetime`` (``filter`` and ``bbox`` are kept), so combine
  ``datetime`` with a ``limit`` that holds every result (a CQL2 filter on ``datetime`` matches
  nothing there), or use ``rustac`` for time searches.

Neither implements the ``query`` or ``sortby`` extensions; rather than answer such a search with
an unfiltered or empty page, the front refuses the parameters its backend cannot honour with 400
and a message. Only ``GET``/``HEAD`` (and ``POST /search``, ``OPTIONS``) are allowed: the API is
read-only.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import functools
import http.client
import ipaddress
import json
import logging
import mimetypes
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .errors import CatalogError, ConfigError, Stac2CubeError
from .export import read_catalog
from .io.catalog import STATE_DIR
from .testing.stac_api import RustacServer, StacApiServerError, free_port, stop_process

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
FILES_PREFIX = "/catalog/"
"""URL prefix under which the catalog directory's files are served."""
Backend = Literal["static", "rustac"]
UNSUPPORTED_SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "static": ("query", "sortby"),
    "rustac": ("filter", "query", "sortby"),
}
"""Search parameters each backend cannot honour (refused with 400)."""
MAX_BODY = 1 << 20
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
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


class ServeError(Stac2CubeError, OSError):
    """The catalog server could not start (port in use, address not available, rustac missing)."""


class RangeNotSatisfiableError(Stac2CubeError, ValueError):
    """A ``Range`` header asks for bytes beyond the end of the file (HTTP 416)."""


def serve(
    catalog: str | Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    public_url: str | None = None,
    backend: Backend = "rustac",
) -> CatalogServer:
    """A STAC API plus the catalog's files over HTTP, on ``host:port`` (not yet started).

    Use it as a context manager (``with serve("catalog") as srv: ...``) or call
    :meth:`CatalogServer.start` and :meth:`CatalogServer.stop`. ``host`` is 127.0.0.1 by default;
    give another address (``0.0.0.0`` for every interface) only to serve other machines.
    ``port=0`` picks a free port. ``public_url`` fixes the base URL written into links and asset
    hrefs (say behind a reverse proxy); by default it follows the ``Host`` the client used.
    ``backend`` picks the STAC API: ``rustac`` (``rustac serve``, no filter) or ``static``
    (stac-fastapi-static, with the CQL2 filter extension; see the module docs for its paging
    limitation).
    """
    return CatalogServer(catalog, host=host, port=port, public_url=public_url, backend=backend)


class CatalogServer:
    """The running pieces of :func:`serve`: the front HTTP server (a child process) and
    ``rustac serve``.

    The front runs in its own Python process so that a client in *this* process (rasterio,
    odc-stac) can never deadlock it: GDAL sometimes does HTTP while holding the GIL, which would
    starve a server thread here. The listening socket is bound here (so a taken port fails at
    once, with a clear error) and handed to the child.
    """

    def __init__(
        self,
        catalog: str | Path,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        public_url: str | None = None,
        backend: Backend = "rustac",
        startup_timeout: float = 30.0,
    ) -> None:
        if backend not in UNSUPPORTED_SEARCH_PARAMS:
            raise ConfigError(f"backend must be one of static, rustac, not {backend!r}")
        root = Path(catalog)
        if root.name == "catalog.json":
            root = root.parent
        if not (root / "catalog.json").is_file():
            raise CatalogError(
                f"{root} is not a stac2cube catalog (no catalog.json); give the directory "
                "that `stac2cube run` wrote"
            )
        if public_url is not None and not re.match(r"^https?://[^/?#]+", public_url):
            raise ConfigError(f"public_url must be an http(s) URL, not {public_url!r}")
        self.root = root.resolve()
        self.host = host
        self.port = port
        self.public_url = public_url.rstrip("/") if public_url else None
        self.startup_timeout = startup_timeout
        self.backend: Backend = backend
        self._api: _RustacBackend | _StaticBackend | None = None
        self._front: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # ------------------------------------------------------------------ URLs
    @property
    def url(self) -> str:
        """The API's landing page (``public_url``, or ``http://host:port``)."""
        if self.public_url:
            return self.public_url
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def file_url(self, relative_path: str) -> str:
        """The served URL of a file of the catalog (``"coll/item/B04.tif"``)."""
        return f"{self.url}{FILES_PREFIX}{quote(relative_path.lstrip('/'))}"

    @property
    def catalog_url(self) -> str:
        """The static ``catalog.json``, served as a file."""
        return self.file_url("catalog.json")

    def file_responses(self) -> dict[int, int]:
        """How many file requests got each HTTP status so far (200, 206, 403, 404, 416)."""
        if self._tmp is None:
            return {}
        try:
            lines = (Path(self._tmp.name) / _ACCESS_LOG).read_text().split()
        except FileNotFoundError:
            return {}
        return dict(Counter(int(v) for v in lines if v.isdigit()))

    # ------------------------------------------------------------------ life cycle
    @property
    def running(self) -> bool:
        """True while the front server runs."""
        return self._front is not None and self._front.poll() is None

    def start(self) -> CatalogServer:
        """Bind the port, start ``rustac serve`` over the catalog and the front server."""
        if self._front is not None:
            return self
        sock = self._bind()
        try:
            self.port = int(sock.getsockname()[1])
            self._tmp = tempfile.TemporaryDirectory(prefix="stac2cube-serve-")
            internal = self._start_api(Path(self._tmp.name))
            self._start_front(sock, internal, Path(self._tmp.name))
        except BaseException:
            self.stop()
            raise
        finally:
            sock.close()  # the child holds its own copy
        log.info("serving %s: STAC API %s, files %s", self.root, self.url, self.catalog_url)
        return self

    def _bind(self) -> socket.socket:
        try:
            family = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise ServeError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(
                    f"port {self.port} on {self.host} is already in use; choose another "
                    "with --port (or port=0 for any free port)"
                ) from exc
            raise ServeError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        if not _is_loopback(self.host):
            log.warning(
                "serving %s on %s:%d: anyone who can reach this address can read the catalog",
                self.root,
                self.host,
                sock.getsockname()[1],
            )
        return sock

    def _start_api(self, tmp: Path) -> str:
        internal_port = free_port("127.0.0.1")
        internal = f"http://127.0.0.1:{internal_port}"
        base = internal + FILES_PREFIX
        contents = read_catalog(self.root, lambda rel: base + quote(rel))
        if self.backend == "static":
            catalog_json = _write_snapshot(contents, tmp / "snapshot")
            log.info(
                "serving %d collection(s) and %d item(s) with stac-fastapi-static",
                len(contents.collections),
                len(contents.items),
            )
            self._api = _StaticBackend(catalog_json, internal_port, self.startup_timeout)
            self._api.start()
            return internal
        hrefs: list[Path] = []
        for i, coll in enumerate(contents.collections):
            hrefs.append(tmp / f"collection-{i}.json")
            hrefs[-1].write_text(json.dumps(coll))
        if contents.items:
            hrefs.append(tmp / "items.json")
            hrefs[-1].write_text(
                json.dumps({"type": "FeatureCollection", "features": list(contents.items)})
            )
        log.info(
            "loading %d collection(s) and %d item(s) into rustac serve",
            len(contents.collections),
            len(contents.items),
        )
        self._api = _RustacBackend(
            hrefs, host="127.0.0.1", port=internal_port, startup_timeout=self.startup_timeout
        )
        try:
            self._api.start()
        except StacApiServerError as exc:
            raise ServeError(f"cannot start the STAC API: {exc}") from exc
        return internal

    def _start_front(self, sock: socket.socket, internal: str, tmp: Path) -> None:
        cfg = {
            "fd": sock.fileno(),
            "root": str(self.root),
            "internal": internal,
            "public_url": self.public_url,
            "url": self.url,
            "access_log": str(tmp / _ACCESS_LOG),
            "api_pid": self._api.pid if self._api is not None else None,
            "unsupported": list(UNSUPPORTED_SEARCH_PARAMS[self.backend]),
            "backend": self.backend,
        }
        package_dir = str(Path(__file__).resolve().parent)
        self._front = subprocess.Popen(
            [sys.executable, "-c", _FRONT_MAIN, json.dumps(cfg), package_dir],
            pass_fds=(sock.fileno(),),
            stdin=subprocess.PIPE,  # the child exits when this process goes away
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._front.stderr is not None
        ready = self._front.stderr.readline().decode(errors="replace").strip()
        if ready != _READY:
            rest = self._front.stderr.read().decode(errors="replace").strip()
            self._front.wait()
            raise ServeError(f"the catalog server did not start: {ready} {rest}".strip())
        threading.Thread(
            target=_relay_log, args=(self._front.stderr,), name="stac2cube-serve-log", daemon=True
        ).start()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._front is not None:
            if self._front.poll() is None:
                self._front.terminate()
                try:
                    self._front.wait(timeout=10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    self._front.kill()
                    self._front.wait()
            for stream in (self._front.stdin, self._front.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._front = None
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the server stops (or ``timeout`` seconds pass)."""
        if self._front is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._front.wait(timeout)

    def __enter__(self) -> CatalogServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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


# ---------------------------------------------------------------------------- internals
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return COG_TYPE
    if suffix in (".json", ".geojson"):
        return "application/json"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class _RustacBackend(RustacServer):
    """``rustac serve`` whose stderr is relayed to the log while it runs (a long-running server
    would otherwise stall once the pipe's buffer is full), and whose pid the front knows (to stop
    it should this process die without stopping it)."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> _RustacBackend:
        super().start()
        stream = self._proc.stderr if self._proc is not None else None
        if stream is not None:
            threading.Thread(target=_relay_log, args=(stream, "rustac"), daemon=True).start()
        return self


def _write_snapshot(contents: Any, root: Path) -> Path:
    """A static catalog (best-practice layout) of ``contents`` under ``root``, for
    stac-fastapi-static: the served asset hrefs are absolute, the links relative."""
    json_type = "application/json"
    cat: dict[str, Any] = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "stac2cube",
        "description": "stac2cube catalog",
        "links": [{"rel": "root", "href": "./catalog.json", "type": json_type}],
    }
    by_coll: dict[str, list[Mapping[str, Any]]] = {}
    for item in contents.items:
        by_coll.setdefault(str(item.get("collection", "")), []).append(item)
    for coll in contents.collections:
        cid = str(coll["id"])
        cdir = root / cid
        cdir.mkdir(parents=True, exist_ok=True)
        doc = dict(coll)
        doc["links"] = [
            {"rel": "root", "href": "../catalog.json", "type": json_type},
            {"rel": "parent", "href": "../catalog.json", "type": json_type},
        ]
        for item in by_coll.get(cid, []):
            iid = str(item["id"])
            (cdir / iid).mkdir(exist_ok=True)
            idoc = dict(item)
            idoc["links"] = [
                {"rel": "root", "href": "../../catalog.json", "type": json_type},
                {"rel": "parent", "href": "../collection.json", "type": json_type},
                {"rel": "collection", "href": "../collection.json", "type": json_type},
            ]
            (cdir / iid / f"{iid}.json").write_text(json.dumps(idoc))
            doc["links"].append({"rel": "item", "href": f"./{iid}/{iid}.json", "type": json_type})
        (cdir / "collection.json").write_text(json.dumps(doc))
        cat["links"].append({"rel": "child", "href": f"./{cid}/collection.json", "type": json_type})
    (root / "catalog.json").write_text(json.dumps(cat))
    return root / "catalog.json"


class _StaticBackend:
    """stac-fastapi-static (a stac-fastapi application over a static catalog) run by uvicorn on
    a loopback port, with its log relayed."""

    def __init__(self, catalog_json: Path, port: int, startup_timeout: float) -> None:
        self.catalog_json = catalog_json
        self.port = port
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> _StaticBackend:
        import importlib.util

        if importlib.util.find_spec("stac_fastapi.static") is None:
            raise ServeError(
                "the static backend needs stac-fastapi-static: `pip install 'stac2cube[serve]'` "
                "(or serve with backend rustac)"
            )
        env = {
            **os.environ,
            "CATALOG_HREF": str(self.catalog_json),
            "ASSUME_BEST_PRACTICE_LAYOUT": "true",
            "RELOAD": "false",
            "LOG_LEVEL": "warning",
            "STAC_FASTAPI_TITLE": "stac2cube",
            "STAC_FASTAPI_DESCRIPTION": "Analysis-ready Sentinel-2 scenes written by stac2cube",
            "STAC_FASTAPI_LANDING_ID": "stac2cube",
        }
        cmd = [sys.executable, "-m", "uvicorn", "stac_fastapi.static.app:app", "--host",
               "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
               "--no-access-log"]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise ServeError(f"stac-fastapi-static exited at start: {err.strip()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            self.stop()
            raise ServeError(f"stac-fastapi-static did not answer on {url} in time")
        if self._proc.stderr is not None:
            threading.Thread(
                target=_relay_log, args=(self._proc.stderr, "stac-fastapi-static"), daemon=True
            ).start()
        return self

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None


def _relay_log(stream: IO[bytes], source: str = "front") -> None:
    """Log the lines a child process writes to stderr (``LEVEL message`` from the front)."""
    with contextlib.suppress(OSError, ValueError):
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            level, _, msg = line.partition(" ")
            if source == "front" and level in ("WARNING", "ERROR", "CRITICAL"):
                log.log(logging.getLevelName(level), "%s", msg)
            else:
                log.debug("%s: %s", source, line)


_ACCESS_LOG = "access.log"
_READY = "stac2cube-serve ready"
# The child imports this module without running the package's __init__ (which loads xarray,
# dask and the pipeline: seconds), by registering a bare ``stac2cube`` package first.
_FRONT_MAIN = (
    "import sys, types; pkg = types.ModuleType('stac2cube'); pkg.__path__ = [sys.argv[2]]; "
    "sys.modules['stac2cube'] = pkg; from stac2cube.serve import _front_main; _front_main()"
)


@dataclass(frozen=True)
class _FrontConfig:
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


def _front_main() -> None:
    """Entry point of the front server's child process (see :meth:`CatalogServer.start`)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cfg = json.loads(sys.argv[1])
    sock = socket.socket(fileno=int(cfg["fd"]))
    with open(cfg["access_log"], "a", encoding="ascii") as access:
        front = _FrontServer(
            sock,
            _FrontConfig(
                root=Path(cfg["root"]),
                internal=cfg["internal"],
                public_url=cfg["public_url"],
                url=cfg["url"],
                access_log=access,
                unsupported=tuple(cfg["unsupported"]),
                backend=cfg["backend"],
            ),
        )
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        watch = threading.Thread(target=_exit_with_parent, args=(front, cfg.get("api_pid")))
        watch.daemon = True
        watch.start()
        sys.stderr.write(_READY + "\n")
        sys.stderr.flush()
        try:
            front.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            front.server_close()


def _exit_with_parent(front: _FrontServer, api_pid: int | None) -> None:
    """Once stdin (a pipe from the parent) closes, the parent is gone without stopping us:
    stop ``rustac serve`` in its place, then serve no more."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):  # raw fd: a buffered reader's lock would stall the exit
            pass
    if api_pid is not None:
        with contextlib.suppress(OSError):
            os.kill(api_pid, signal.SIGTERM)
    front.shutdown()


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, cfg: _FrontConfig) -> None:
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
    def cfg(self) -> _FrontConfig:
        server = self.server
        assert isinstance(server, _FrontServer)
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
        if self._is_file_route():
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
        else:
            self._proxy("HEAD" if head else "GET")

    # ------------------------------------------------------------------ files
    def _cors_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header(
            "Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges, ETag"
        )

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
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self._cors_headers()
                self.send_header("Content-Length", "0")
                self.end_headers()
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
        cfg = self.cfg
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


__all__ = [
    "COG_TYPE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FILES_PREFIX",
    "UNSUPPORTED_SEARCH_PARAMS",
    "CatalogServer",
    "RangeNotSatisfiableError",
    "ServeError",
    "byte_range",
    "resolve_under",
    "serve",
]
