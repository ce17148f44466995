"""The versioned virtual cube as a read-only Zarr v3 store over HTTP: ``/cube/<version>/<key>``.

:class:`CubeGateway` answers a Zarr key with the bytes a read-only Icechunk session on
``version`` (``HEAD``, a run id, a tag or a snapshot id) gives for it: metadata, coordinate
chunks, and virtual chunks that Icechunk reads from the catalog's COGs, so that a remote client
needs neither the files nor Icechunk. HTTP cannot list, so every group's ``zarr.json`` is served
with Zarr v3 consolidated metadata of the group's members, built once per snapshot. How a client
opens it: ``docs/serve.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from ..errors import CatalogError

if TYPE_CHECKING:
    import icechunk

log = logging.getLogger(__name__)

CUBE_PREFIX = "/cube/"
"""URL prefix of the virtual cube: ``/cube/<version>/<zarr key>``."""
HEAD_VERSION = "HEAD"
"""The version that follows the cube's latest snapshot."""
HEAD_TTL = 1.0
"""Seconds for which ``HEAD`` keeps naming the snapshot it was last resolved to."""
MAX_SNAPSHOTS = 16
"""Snapshots whose sessions (and consolidated metadata) are kept open at once."""
METADATA_KEY = "zarr.json"
_CHANGED = re.compile(r"object owning the virtual chunk has changed \(([^)]*)\)")
_T = TypeVar("_T")


class CubeVersionError(CatalogError):
    """The catalog has no virtual cube, or no version of that name (HTTP 404)."""


class StaleChunkError(CatalogError):
    """A COG that a snapshot references changed after the snapshot was committed (HTTP 409)."""


class ChunkReadError(CatalogError):
    """Icechunk could not read a key for another reason (a COG link removed, say; HTTP 500)."""


def split_cube_path(url_path: str) -> tuple[str, str] | None:
    """The ``(version, key)`` that a URL path under :data:`CUBE_PREFIX` names (percent-decoded
    once), or None when it names no Zarr key: no version, an empty key, or an empty, ``.`` or
    ``..`` segment, a backslash or NUL. A doubled slash after the version (a client's base URL
    ending in ``/``, as obstore's ``HTTPStore`` joins it) is taken as one."""
    if not url_path.startswith(CUBE_PREFIX):
        return None
    version, _, raw_key = url_path[len(CUBE_PREFIX) :].partition("/")
    raw_key = raw_key.removeprefix("/")
    try:
        version = unquote(version, errors="strict")
        key = unquote(raw_key, errors="strict")
    except UnicodeDecodeError:
        return None
    if not version or not key or "\x00" in key or "\\" in key:
        return None
    if any(p in ("", ".", "..") for p in key.split("/")):
        return None
    return version, key


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on zarr's event loop thread (safe from any server thread)."""
    from zarr.core.sync import sync

    return sync(coro)


@dataclass
class _Snapshot:
    """One snapshot's read-only session and, once asked for, its groups' consolidated
    ``zarr.json`` documents (group path -> bytes)."""

    session: icechunk.Session
    groups: dict[str, bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def snapshot_id(self) -> str:
        return str(self.session.snapshot_id)

    def group_metadata(self) -> dict[str, bytes]:
        with self.lock:
            if self.groups is None:
                self.groups = consolidated_groups(_run(_read_hierarchy(self.session)))
            return self.groups


async def _read_hierarchy(session: icechunk.Session) -> dict[str, dict[str, Any]]:
    """Node path ("" for the root) -> its ``zarr.json`` document, for every node of the store."""
    from zarr.core.buffer import default_buffer_prototype

    store = session.store
    proto = default_buffer_prototype()
    docs: dict[str, dict[str, Any]] = {}

    async def visit(path: str) -> None:
        prefix = f"{path}/" if path else ""
        raw = await store.get(prefix + METADATA_KEY, proto)
        if raw is None:
            return
        doc = json.loads(raw.to_bytes())
        docs[path] = doc
        if doc.get("node_type") != "group":
            return
        names = [n async for n in store.list_dir(prefix)]
        await asyncio.gather(*(visit(prefix + n) for n in names if n != METADATA_KEY))

    await visit("")
    return docs


def _order(path: str) -> tuple[int, str]:
    """zarr-python's order of consolidated keys: by depth, then by name."""
    return path.count("/"), unicodedata.normalize("NFKC", path).casefold()


def consolidated_groups(docs: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """Each group's ``zarr.json`` (group path -> bytes) with the Zarr v3 ``consolidated_metadata``
    of all its members, as ``zarr.consolidate_metadata`` writes it: flat, keyed by the path
    relative to the group, member groups with an empty inline entry of their own."""
    empty = {"kind": "inline", "must_understand": False, "metadata": {}}
    out = {}
    for group, doc in docs.items():
        if doc.get("node_type") != "group":
            continue
        prefix = f"{group}/" if group else ""
        members = {}
        for path in sorted((p for p in docs if p and p.startswith(prefix)), key=_order):
            member = dict(docs[path])
            if member.get("node_type") == "group":
                member["consolidated_metadata"] = empty
            members[path[len(prefix) :]] = member
        cm = {"kind": "inline", "must_understand": False, "metadata": members}
        out[group] = json.dumps({**doc, "consolidated_metadata": cm}).encode()
    return out


class CubeGateway:
    """Zarr keys of the catalog's virtual cube, at any version, as bytes.

    Sessions are kept per snapshot (the :data:`MAX_SNAPSHOTS` last used); a run id, tag or
    snapshot id is resolved once, ``HEAD`` again after :data:`HEAD_TTL` seconds so that it
    follows new commits. Thread-safe: the front server's threads share one gateway.
    """

    def __init__(self, root: Path, *, head_ttl: float = HEAD_TTL) -> None:
        self.root = root
        self.head_ttl = head_ttl
        self._lock = threading.Lock()
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._versions: dict[str, str] = {}
        self._head: tuple[float, str] | None = None

    def get(self, version: str, key: str) -> tuple[str, bytes | None]:
        """The snapshot id that ``version`` names and the bytes of ``key`` in it (None: no such
        key). A group's ``zarr.json`` carries consolidated metadata. Raises
        :class:`CubeVersionError`, :class:`StaleChunkError` or :class:`ChunkReadError`."""
        snap = self._snapshot(version)
        if key == METADATA_KEY or key.endswith("/" + METADATA_KEY):
            group = key[: -len(METADATA_KEY)].rstrip("/")
            body = self._read(snap, lambda: snap.group_metadata().get(group))
            if body is not None:
                return snap.snapshot_id, body
        return snap.snapshot_id, self._read(snap, lambda: self._get(snap, key))

    @staticmethod
    def _get(snap: _Snapshot, key: str) -> bytes | None:
        from zarr.core.buffer import default_buffer_prototype

        buf = _run(snap.session.store.get(key, default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def _read(self, snap: _Snapshot, read: Callable[[], bytes | None]) -> bytes | None:
        import icechunk

        try:
            return read()
        except icechunk.IcechunkError as exc:
            message = str(exc)
            changed = _CHANGED.search(message)
            if changed:
                raise StaleChunkError(
                    f"{self._name(changed.group(1))} changed after snapshot "
                    f"{snap.snapshot_id} of the virtual cube of {self.root} was committed: its "
                    "references no longer match the file. Rebuild the cube "
                    "(stac2cube.catalog.virtual.rebuild_virtual_cube) to reference it as it is"
                ) from None
            first = next((ln.strip(" x|`->") for ln in message.splitlines() if ln.strip()), "")
            raise ChunkReadError(
                f"the virtual cube of {self.root} (snapshot {snap.snapshot_id}) cannot be "
                f"read: {first}"
            ) from None

    def _name(self, uri: str) -> str:
        """A COG's URI as a path relative to the catalog (the URI where it lies outside)."""
        path = Path(unquote(uri.removeprefix("file://")))
        try:
            return str(path.relative_to(self.root.resolve()))
        except ValueError:
            return uri

    # ------------------------------------------------------------------ sessions
    def _snapshot(self, version: str) -> _Snapshot:
        with self._lock:
            if version == HEAD_VERSION:
                head = self._head
                fresh = head is not None and time.monotonic() - head[0] < self.head_ttl
                sid = head[1] if fresh and head is not None else None
            else:
                sid = self._versions.get(version)
            snap = self._snapshots.get(sid) if sid is not None else None
            if snap is not None:
                self._snapshots.move_to_end(sid)  # type: ignore[arg-type]
                return snap
        session = self._open(version)
        with self._lock:
            sid = str(session.snapshot_id)
            snap = self._snapshots.get(sid) or _Snapshot(session)
            self._snapshots[sid] = snap
            self._snapshots.move_to_end(sid)
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
            if version == HEAD_VERSION:
                self._head = (time.monotonic(), sid)
            else:
                self._versions[version] = sid
            return snap

    def _open(self, version: str) -> icechunk.Session:
        from ..cube.virtual import readonly_session

        try:
            return readonly_session(self.root, None if version == HEAD_VERSION else version)
        except CatalogError as exc:
            raise CubeVersionError(str(exc)) from None
