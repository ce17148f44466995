"""The catalog server: :func:`serve` and :class:`CatalogServer`, which start the pieces.

At start the catalog is read once and handed, with every asset href rewritten to the internal
``/catalog/`` URL, to a STAC API backend on a loopback port (:mod:`~stac2cube.serve.backends`);
the front (:mod:`~stac2cube.serve.front`) then serves the files and proxies the API on
``host:port``. See ``docs/serve.md`` for the whole picture.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import re
import socket
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from ..errors import CatalogError, ConfigError
from ..export import read_catalog
from .backends import UNSUPPORTED_SEARCH_PARAMS, ApiBackend, Backend, make_backend
from .cube import CUBE_PREFIX, HEAD_VERSION
from .front import ACCESS_LOG, start_front
from .http import FILES_PREFIX
from .process import ServeError, StacApiServerError, free_port, stop_process

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


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
    (stac-fastapi-static, with the CQL2 filter extension; see ``docs/serve.md`` for its paging
    limitation).
    """
    return CatalogServer(catalog, host=host, port=port, public_url=public_url, backend=backend)


class CatalogServer:
    """The running pieces of :func:`serve`: the front HTTP server (a child process) and the
    STAC API backend.

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
        self._api: ApiBackend | None = None
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

    def cube_url(self, version: str = HEAD_VERSION) -> str:
        """The URL of the virtual cube at ``version`` (``HEAD``, a run id, a tag or a snapshot
        id) as a Zarr v3 store, for ``zarr.storage.ObjectStore(HTTPStore.from_url(url))``."""
        return f"{self.url}{CUBE_PREFIX}{quote(version, safe='')}"

    def file_responses(self) -> dict[int, int]:
        """How many file requests got each HTTP status so far (200, 206, 403, 404, 416)."""
        if self._tmp is None:
            return {}
        try:
            lines = (Path(self._tmp.name) / ACCESS_LOG).read_text().split()
        except FileNotFoundError:
            return {}
        return dict(Counter(int(v) for v in lines if v.isdigit()))

    # ------------------------------------------------------------------ life cycle
    @property
    def running(self) -> bool:
        """True while the front server runs."""
        return self._front is not None and self._front.poll() is None

    def start(self) -> CatalogServer:
        """Bind the port, start the STAC API backend over the catalog and the front server."""
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
        self._api = make_backend(self.backend, contents, tmp, internal_port, self.startup_timeout)
        try:
            self._api.start()
        except StacApiServerError as exc:
            raise ServeError(f"cannot start the STAC API: {exc}") from exc
        return internal

    def _start_front(self, sock: socket.socket, internal: str, tmp: Path) -> None:
        self._front = start_front(
            sock,
            {
                "fd": sock.fileno(),
                "root": str(self.root),
                "internal": internal,
                "public_url": self.public_url,
                "url": self.url,
                "access_log": str(tmp / ACCESS_LOG),
                "api_pid": self._api.pid if self._api is not None else None,
                "unsupported": list(UNSUPPORTED_SEARCH_PARAMS[self.backend]),
                "backend": self.backend,
            },
        )

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        stop_process(self._front)
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
