"""Offline JSON-Schema validation of STAC objects.

The official STAC core and extension JSON Schemas that stac2cube reads or writes ship inside the
package (``stac2cube/schemas/<host>/<path>``, listed in ``stac2cube/schemas/index.json``); the
JSON Schema of our own provenance extension ships in :mod:`stac2cube.catalog_templates`. Every
``$ref`` is resolved from those files: validation never touches the network, and a schema that is
not shipped is reported as a :class:`SchemaProblem` instead of being downloaded.

Typical use::

    problems = validate_catalog_tree("out/catalog.json")
    raise_for_problems(problems)
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

import jsonschema.validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT7

from stac2cube.errors import CatalogError, SchemaValidationError
from stac2cube.provenance import LEGACY_STAC2CUBE_SCHEMAS, STAC2CUBE_SCHEMA

__all__ = [
    "PROVENANCE_SCHEMA_URL",
    "SchemaProblem",
    "core_schema_url",
    "provenance_schema_file",
    "raise_for_problems",
    "schema_registry",
    "shipped_schema_urls",
    "validate_catalog_tree",
    "validate_stac_dict",
    "validate_stac_file",
]

logger = logging.getLogger(__name__)

PROVENANCE_SCHEMA_URL = STAC2CUBE_SCHEMA
"""Canonical URL (``$id``) of the stac2cube provenance extension schema; it is also registered
under its earlier URIs (:data:`~stac2cube.provenance.LEGACY_STAC2CUBE_SCHEMAS`), which older
catalogs declare."""

_TEMPLATES_PACKAGE = "stac2cube.catalog_templates"
_PROVENANCE_SCHEMA_PARTS = ("stac2cube", "v1.0.0", "schema.json")
"""Location of the provenance extension schema inside :mod:`stac2cube.catalog_templates`."""

_CORE_SCHEMA_PATHS = {
    "Feature": "item-spec/json-schema/item.json",
    "Catalog": "catalog-spec/json-schema/catalog.json",
    "Collection": "collection-spec/json-schema/collection.json",
}
_CORE_STAC_VERSIONS = ("1.0.0", "1.1.0")
_MAX_PROBLEMS_IN_MESSAGE = 20
_FOLLOWED_RELS = ("child", "item")


@dataclass(frozen=True)
class SchemaProblem:
    """One reason why a STAC object does not validate."""

    path: str
    """The file (and, for a feature of a FeatureCollection, ``#/features/<i>``) or the object id."""
    schema: str
    """URL of the schema that failed, or that could not be used (empty when none applies)."""
    pointer: str
    """JSON pointer (RFC 6901) into the instance at the offending value; ``""`` is the root."""
    message: str
    """What is wrong, in words."""

    def __str__(self) -> str:
        schema = f" [{self.schema}]" if self.schema else ""
        return f"{self.path}: #{self.pointer}: {self.message}{schema}"


# --------------------------------------------------------------------------------------------
# registry


def _refuse_retrieval(uri: str) -> Resource[Any]:
    """The registry's retrieve function: nothing is ever fetched over the network."""
    raise SchemaValidationError(
        f"JSON Schema {uri!r} is not shipped with stac2cube and is never downloaded. "
        "Put a copy in a directory laid out as <host>/<path> and pass it as extra_dirs."
    )


def _strip_fragment(url: str) -> str:
    return urldefrag(url.strip())[0]


def _resource(contents: Any, origin: str) -> Resource[Any]:
    try:
        return Resource.from_contents(contents, default_specification=DRAFT7)
    except Exception as exc:  # referencing raises its own errors for an unknown $schema
        raise SchemaValidationError(
            f"{origin} is not a JSON Schema stac2cube can use ({exc}); check its '$schema'."
        ) from exc


def _add(resources: dict[str, Resource[Any]], contents: Any, url: str | None, origin: str) -> None:
    """Register ``contents`` under ``url`` and under its own ``$id`` (these may differ, e.g. the
    ``.../json-schema/commonjson`` typo of STAC 1.1.0 ``common.json``)."""
    if not isinstance(contents, dict):
        return
    resource = _resource(contents, origin)
    keys = set()
    if url:
        keys.add(_strip_fragment(url))
    schema_id = contents.get("$id")
    if isinstance(schema_id, str) and schema_id.strip("#"):
        keys.add(_strip_fragment(schema_id))
    for key in keys:
        resources[key] = resource


def _read_json(source: Traversable | Path) -> Any:
    return json.loads(source.read_text(encoding="utf-8"))


def _iter_json_files(
    root: Traversable, parts: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Traversable]]:
    """Every ``*.json`` below ``root``, with its path parts relative to ``root``."""
    for child in sorted(root.iterdir(), key=lambda t: t.name):
        if child.is_dir():
            yield from _iter_json_files(child, (*parts, child.name))
        elif child.name.endswith(".json"):
            yield (*parts, child.name), child


def _shipped_root() -> Traversable:
    return importlib.resources.files("stac2cube") / "schemas"


def _add_shipped(resources: dict[str, Resource[Any]]) -> None:
    root = _shipped_root()
    index: dict[str, str] = _read_json(root / "index.json")
    for url, relative in index.items():
        source = root.joinpath(*relative.split("/"))
        _add(resources, _read_json(source), url, f"shipped schema {relative}")


def _add_catalog_templates(resources: dict[str, Resource[Any]], root: Traversable) -> None:
    """Register the JSON Schemas among the catalog templates below ``root``: the provenance
    extension schema (under :data:`PROVENANCE_SCHEMA_URL` and its ``$id``) and any other file
    with a ``$schema`` (under its ``$id``). Collection and item templates are skipped."""
    for parts, source in _iter_json_files(root):
        contents = _read_json(source)
        if parts == _PROVENANCE_SCHEMA_PARTS:
            _add(resources, contents, PROVENANCE_SCHEMA_URL, "the provenance extension schema")
        elif isinstance(contents, dict) and "$schema" in contents:
            _add(resources, contents, None, f"catalog template {'/'.join(parts)}")


def _add_extra_dir(resources: dict[str, Resource[Any]], directory: Path) -> None:
    """Register every ``*.json`` in ``directory`` under ``https://<relative path>``, its ``$id``
    and, where the directory has an ``index.json`` mapping URLs to files, those URLs."""
    if not directory.is_dir():
        raise SchemaValidationError(f"Schema directory {directory} does not exist.")
    index_file = directory / "index.json"
    index: dict[str, str] = _read_json(index_file) if index_file.is_file() else {}
    urls_by_file: dict[str, list[str]] = {}
    for url, relative in index.items():
        urls_by_file.setdefault(relative, []).append(url)
    for source in sorted(directory.rglob("*.json")):
        if source == index_file:
            continue
        relative = source.relative_to(directory).as_posix()
        contents = _read_json(source)
        _add(resources, contents, f"https://{relative}", str(source))
        for url in urls_by_file.get(relative, []):
            _add(resources, contents, url, str(source))


@functools.lru_cache(maxsize=8)
def _registry_for(extra_dirs: tuple[Path, ...]) -> Registry[Any]:
    resources: dict[str, Resource[Any]] = {}
    _add_shipped(resources)
    _add_catalog_templates(resources, importlib.resources.files(_TEMPLATES_PACKAGE))
    for directory in extra_dirs:
        _add_extra_dir(resources, directory)
    for url in LEGACY_STAC2CUBE_SCHEMAS:  # older catalogs declare it: the same schema
        resources.setdefault(url, resources[PROVENANCE_SCHEMA_URL])
    logger.debug("registering %d schema URLs (extra dirs: %s)", len(resources), extra_dirs)
    registry: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
    return registry.with_resources(resources.items()).crawl()


def _normalise_dirs(extra_dirs: Iterable[str | PathLike[str]]) -> tuple[Path, ...]:
    return tuple(Path(d).resolve() for d in extra_dirs)


def schema_registry(extra_dirs: Sequence[str | PathLike[str]] = ()) -> Registry[Any]:
    """A :class:`referencing.Registry` of every schema stac2cube ships, built once and cached.

    Each schema is registered under its canonical URL and under its ``$id`` (without ``#``); the
    provenance extension's also under its earlier URIs, which older catalogs declare.
    ``extra_dirs`` adds directories of further schemas laid out as ``<host>/<path>`` (optionally
    with an ``index.json`` of URL → relative file); they override shipped schemas of the same URL.
    Looking up any other URL raises :class:`referencing.exceptions.Unretrievable` whose cause is a
    :class:`~stac2cube.errors.SchemaValidationError`: the registry never downloads anything.
    """
    return _registry_for(_normalise_dirs(extra_dirs))


def provenance_schema_file() -> Traversable:
    """The provenance extension's JSON Schema as shipped in the package: the one copy, which the
    documentation site publishes at :data:`PROVENANCE_SCHEMA_URL` and ``stac2cube serve``
    serves at that URL's path."""
    return importlib.resources.files(_TEMPLATES_PACKAGE).joinpath(*_PROVENANCE_SCHEMA_PARTS)


def shipped_schema_urls() -> list[str]:
    """The canonical URLs of the STAC core and extension schemas shipped in the package."""
    index: dict[str, str] = _read_json(_shipped_root() / "index.json")
    return sorted(index)


def core_schema_url(stac_type: str, stac_version: str) -> str:
    """The URL of the core schema for a STAC ``type`` (``Feature``, ``Catalog``, ``Collection``)
    and ``stac_version``, whether or not it is shipped."""
    path = _CORE_SCHEMA_PATHS.get(stac_type)
    if path is None:
        raise SchemaValidationError(
            f"{stac_type!r} is not a STAC object type; "
            f"expected one of {sorted(_CORE_SCHEMA_PATHS)}."
        )
    return f"https://schemas.stacspec.org/v{stac_version}/{path}"


# --------------------------------------------------------------------------------------------
# validation of one object


@functools.lru_cache(maxsize=256)
def _validator(url: str, extra_dirs: tuple[Path, ...]) -> Any:
    """A compiled validator for the schema at ``url``, or ``None`` if it is not registered."""
    registry = _registry_for(extra_dirs)
    resource = registry.get(url)
    if resource is None:
        return None
    schema = resource.contents
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema, registry=registry)


def _pointer(path: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _is_type_mismatch(error: ValidationError) -> bool:
    """Whether ``error`` says the instance is another kind of object (``type`` const/enum)."""
    return list(error.path) == ["type"] and error.validator in ("const", "enum")


def _leaves(error: ValidationError) -> list[ValidationError]:
    """The most specific errors behind ``error``.

    For ``oneOf``/``anyOf`` failures, picks the branch that best fits the instance: STAC extension
    schemas branch on the object type (Item vs Collection), so branches whose errors say the
    ``type`` is wrong are skipped, and of the rest the one with the fewest errors wins.
    """
    if not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branch = sub.relative_schema_path[0] if sub.relative_schema_path else None
        branches.setdefault(branch, []).append(sub)
    best = min(
        branches.values(),
        key=lambda errs: (any(_is_type_mismatch(e) for e in errs), len(errs)),
    )
    if all(_is_type_mismatch(e) for e in best):
        return [error]  # no branch fits the object: the top-level message says it best
    leaves: list[ValidationError] = []
    for sub in best:
        leaves.extend(_leaves(sub))
    return leaves


def _check(
    obj: Mapping[str, Any], url: str, where: str, extra_dirs: tuple[Path, ...], pointer: str
) -> list[SchemaProblem]:
    """Validate ``obj`` against the schema at ``url``; ``pointer`` locates ``url`` in ``obj``."""
    validator = _validator(url, extra_dirs)
    if validator is None:
        return [
            SchemaProblem(
                where,
                url,
                pointer,
                f"schema {url} is not shipped with stac2cube; it cannot be validated offline",
            )
        ]
    try:
        errors = list(validator.iter_errors(obj))
    except Unresolvable as exc:
        return [
            SchemaProblem(
                where,
                url,
                pointer,
                f"schema {url} refers to {exc.ref!r}, which is not shipped with stac2cube",
            )
        ]
    problems: list[SchemaProblem] = []
    seen: set[tuple[str, str]] = set()
    for error in errors:
        for leaf in _leaves(error):
            key = (_pointer(leaf.absolute_path), leaf.message)
            if key not in seen:
                seen.add(key)
                problems.append(SchemaProblem(where, url, key[0], key[1]))
    return sorted(problems, key=lambda p: (p.pointer, p.message))


def validate_stac_dict(
    obj: Mapping[str, Any],
    *,
    where: str = "",
    extra_dirs: Sequence[str | PathLike[str]] = (),
) -> list[SchemaProblem]:
    """Validate one STAC Item, Catalog or Collection, without network access.

    ``obj`` is checked against the core schema of its ``type`` (``Feature`` → item) and
    ``stac_version`` and against the schema of every URL in ``stac_extensions``. A core version or
    extension whose schema is not shipped yields a :class:`SchemaProblem` saying so. ``where``
    names the object in the problems (default: its ``id``); ``extra_dirs`` as for
    :func:`schema_registry`. Returns an empty list when ``obj`` is valid.
    """
    dirs = _normalise_dirs(extra_dirs)
    name = where or str(obj.get("id", "<object without id>"))
    stac_type = obj.get("type")
    stac_version = obj.get("stac_version")
    problems: list[SchemaProblem] = []
    if stac_type not in _CORE_SCHEMA_PATHS:
        problems.append(
            SchemaProblem(
                name,
                "",
                "/type",
                f"'type' is {stac_type!r}; a STAC object has 'Feature', 'Catalog' or 'Collection'",
            )
        )
    elif not isinstance(stac_version, str):
        problems.append(
            SchemaProblem(name, "", "/stac_version", "'stac_version' is missing or not a string")
        )
    else:
        url = core_schema_url(stac_type, stac_version)
        if stac_version in _CORE_STAC_VERSIONS or _validator(url, dirs) is not None:
            problems.extend(_check(obj, url, name, dirs, ""))
        else:
            problems.append(
                SchemaProblem(
                    name,
                    url,
                    "/stac_version",
                    f"no core schema is shipped for STAC {stac_version}; "
                    f"stac2cube validates STAC {' and '.join(_CORE_STAC_VERSIONS)}",
                )
            )
    extensions = obj.get("stac_extensions", [])
    if not isinstance(extensions, list):
        problems.append(
            SchemaProblem(name, "", "/stac_extensions", "'stac_extensions' is not a list")
        )
        extensions = []
    for i, extension in enumerate(extensions):
        if not isinstance(extension, str):
            continue  # the core schema reports it
        problems.extend(
            _check(obj, _strip_fragment(extension), name, dirs, f"/stac_extensions/{i}")
        )
    return problems


# --------------------------------------------------------------------------------------------
# files and catalogs


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def _validate_document(
    document: Any, name: str, dirs: Sequence[str | PathLike[str]]
) -> list[SchemaProblem]:
    if not isinstance(document, dict):
        return [SchemaProblem(name, "", "", "the file does not hold a JSON object")]
    if document.get("type") == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            return [SchemaProblem(name, "", "/features", "'features' is missing or not a list")]
        problems: list[SchemaProblem] = []
        for i, feature in enumerate(features):
            if isinstance(feature, dict):
                where = f"{name}#/features/{i}"
                problems.extend(validate_stac_dict(feature, where=where, extra_dirs=dirs))
            else:
                problems.append(SchemaProblem(name, "", f"/features/{i}", "not a JSON object"))
        return problems
    return validate_stac_dict(document, where=name, extra_dirs=dirs)


def validate_stac_file(
    path: str | PathLike[str], *, extra_dirs: Sequence[str | PathLike[str]] = ()
) -> list[SchemaProblem]:
    """Validate the STAC object in a JSON file, or each feature of a (STAC API / item collection)
    FeatureCollection. Invalid JSON is a problem; an unreadable file raises
    :class:`~stac2cube.errors.CatalogError`."""
    file = Path(path)
    try:
        document = _load(file)
    except json.JSONDecodeError as exc:
        return [SchemaProblem(str(file), "", "", f"not valid JSON: {exc}")]
    return _validate_document(document, str(file), extra_dirs)


def _local_target(href: str, base: Path) -> Path | None:
    """The file a link ``href`` in a document at ``base`` points to, or ``None`` if remote."""
    parsed = urlparse(href)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # http(s), s3, ...; one letter = Windows drive
        return None
    target = Path(unquote(urldefrag(href)[0]))
    return target if target.is_absolute() else base.parent / target


def validate_catalog_tree(
    root_catalog_path: str | PathLike[str], *, extra_dirs: Sequence[str | PathLike[str]] = ()
) -> list[SchemaProblem]:
    """Validate a static STAC catalog on disk: the root catalog and every catalog, collection and
    item reachable through ``child`` and ``item`` links, without network access.

    Each file is validated once. A link to a missing file, or to a remote URL (which an offline
    validation cannot follow), is reported as a problem at that link.
    """
    root = Path(root_catalog_path).resolve()
    if not root.is_file():
        raise CatalogError(f"Root catalog {root} does not exist; pass the path of catalog.json.")
    problems: list[SchemaProblem] = []
    seen = {root}
    queue = deque([root])
    while queue:
        current = queue.popleft()
        name = str(current)
        try:
            document = _load(current)
        except json.JSONDecodeError as exc:
            problems.append(SchemaProblem(name, "", "", f"not valid JSON: {exc}"))
            continue
        problems.extend(_validate_document(document, name, extra_dirs))
        links = document.get("links") if isinstance(document, dict) else None
        for i, link in enumerate(links if isinstance(links, list) else []):
            if not isinstance(link, dict) or link.get("rel") not in _FOLLOWED_RELS:
                continue
            href = link.get("href")
            if not isinstance(href, str):
                continue  # the core schema reports it
            target = _local_target(href, current)
            pointer = f"/links/{i}/href"
            if target is None:
                problems.append(
                    SchemaProblem(name, "", pointer, f"remote link {href} not followed (offline)")
                )
                continue
            target = target.resolve()
            if not target.is_file():
                problems.append(
                    SchemaProblem(name, "", pointer, f"link target {href} does not exist")
                )
            elif target not in seen:
                seen.add(target)
                queue.append(target)
    return problems


def raise_for_problems(problems: Sequence[SchemaProblem]) -> None:
    """Raise :class:`~stac2cube.errors.SchemaValidationError` listing ``problems`` (the first
    20 in the message) if there are any; return quietly otherwise."""
    if not problems:
        return
    shown = [f"  - {problem}" for problem in problems[:_MAX_PROBLEMS_IN_MESSAGE]]
    hidden = len(problems) - len(shown)
    if hidden:
        shown.append(f"  ... and {hidden} more")
    raise SchemaValidationError(
        f"{len(problems)} STAC schema problem(s); fix the objects below "
        "(or the code that wrote them):\n" + "\n".join(shown)
    )
