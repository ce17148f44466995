"""The STAC API backends that answer behind the catalog server's front, on a loopback port.

``rustac`` (default) is ``rustac serve`` over the catalog's collections and items, in memory: no
``filter``. ``static`` is stac-fastapi-static run by uvicorn over a snapshot of the catalog: it
adds CQL2 ``filter``. Neither has ``query`` or ``sortby``; the front refuses what its backend
cannot honour (:data:`UNSUPPORTED_SEARCH_PARAMS`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal, Protocol

from ..export import CatalogContents
from .process import RustacServer, ServeError, relay_log, stop_process, wait_until_serving

log = logging.getLogger(__name__)

Backend = Literal["static", "rustac"]
UNSUPPORTED_SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "static": ("query", "sortby"),
    "rustac": ("filter", "query", "sortby"),
}
"""Search parameters each backend cannot honour (refused with 400)."""


class ApiBackend(Protocol):
    """A STAC API server process on a loopback port."""

    @property
    def pid(self) -> int | None: ...

    def start(self) -> ApiBackend: ...

    def stop(self) -> None: ...


def make_backend(
    backend: Backend, contents: CatalogContents, tmp: Path, port: int, startup_timeout: float
) -> ApiBackend:
    """The (not yet started) ``backend`` over ``contents`` on 127.0.0.1:``port``, with the files
    it reads written under ``tmp``."""
    if backend == "static":
        catalog_json = _write_snapshot(contents, tmp / "snapshot")
        log.info(
            "serving %d collection(s) and %d item(s) with stac-fastapi-static",
            len(contents.collections),
            len(contents.items),
        )
        return _StaticBackend(catalog_json, port, startup_timeout)
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
    return _RustacBackend(hrefs, host="127.0.0.1", port=port, startup_timeout=startup_timeout)


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
            threading.Thread(target=relay_log, args=(stream, "rustac"), daemon=True).start()
        return self


def _write_snapshot(contents: CatalogContents, root: Path) -> Path:
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
    by_coll: dict[str, list[dict[str, Any]]] = {}
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
        try:
            err = wait_until_serving(
                self._proc, url, self.startup_timeout, request_timeout=2, interval=0.2
            )
        except TimeoutError:
            self.stop()
            raise ServeError(f"stac-fastapi-static did not answer on {url} in time") from None
        if err is not None:
            self._proc = None
            raise ServeError(f"stac-fastapi-static exited at start: {err.strip()[-2000:]}")
        if self._proc.stderr is not None:
            threading.Thread(
                target=relay_log, args=(self._proc.stderr, "stac-fastapi-static"), daemon=True
            ).start()
        return self

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
