"""What every configuration class is made of: the documented field (:func:`doc`), the read-only
mapping (:class:`FrozenMap`), and the typed parsing of a section (:func:`build`) and its way back
(:func:`to_dict`). Here to avoid cycles: step modules define their config with them, and
:mod:`stac2cube.config` imports the steps."""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import ConfigError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


def doc(
    text: str,
    default: Any = dataclasses.MISSING,
    *,
    since: str | None = None,
    execution: bool = False,
    content: bool = False,
    **kw: Any,
) -> Any:
    """A dataclass field with its documentation attached (shown in the config reference).

    ``since`` marks an option added after catalogs already existed (the version that added it):
    while it keeps its default it is left out of the configuration hash, so adding the option
    does not make every existing item stale. ``execution`` marks a setting of how the work is
    done that provably leaves the output pixels as they are (a device, a batch size, a memory
    bound): it is never in the hash. ``content`` marks a path whose files, not the path, are in
    the hash: the section's ``content_for_hash`` hook puts them there
    (:meth:`~stac2cube.config.Config.processing_dict`)."""
    if isinstance(default, list | dict | set):
        raise TypeError("use an immutable default (tuple / Mapping) in config fields")
    meta: dict[str, Any] = {"doc": text}
    if since is not None:
        meta["since"] = since
    if execution or content:
        meta["hash"] = "execution" if execution else "content"
    return dataclasses.field(default=default, metadata=meta, **kw)


class FrozenMap(Mapping[K, V]):
    """A read-only mapping of a configuration: unlike ``types.MappingProxyType`` it pickles, so a
    :class:`~stac2cube.config.Config` travels to Dask workers as itself."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | None = None) -> None:
        self._data: dict[K, V] = dict(data or {})

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))


def type_name(tp: Any) -> str:
    """How messages and the configuration reference name a type."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` (as read from YAML) as type ``tp``; a ConfigError naming ``where`` if it is not
    one."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {type_name(tp)} fields")
        from_section = getattr(tp, "from_section", None)
        if from_section is not None:  # a section that parses itself (``steps``)
            return from_section(value, where)
        return build(tp, value, where)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return FrozenMap(
            {coerce(k, kt, where): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None
    if tp is Path:
        return Path(value)
    raise ConfigError(f"{where}: unsupported type {type_name(tp)}")  # pragma: no cover


def build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """The config dataclass ``cls`` from its section ``data``; unknown or missing keys are a
    ConfigError with the closest valid key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{k}{hint} (valid keys: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {key}: {f.metadata.get('doc', '')}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def to_dict(obj: Any, *, for_hash: bool = False, legacy: bool = False) -> Any:
    """A JSON-able dict of a config (dates as ISO strings, tuples as lists).

    ``for_hash`` gives what the configuration hash is made of: options added later (``since`` in
    their field) are left out while they keep their default, so that adding an option leaves the
    hash of existing configurations as it was, and so are execution-only settings and paths
    hashed by content (``execution`` and ``content`` in :func:`doc`). ``legacy`` keeps those two
    in, as the hash's earlier rule did (:attr:`~stac2cube.config.Config.legacy_config_hash`)."""

    def hashed(f: dataclasses.Field[Any]) -> bool:
        if f.metadata.get("since") and getattr(obj, f.name) == f.default:
            return False  # an option added later, at its default
        return legacy or "hash" not in f.metadata

    sections = getattr(obj, "sections", None)
    if callable(sections):  # a section whose keys are not its fields (``steps``)
        return {k: to_dict(v, for_hash=for_hash, legacy=legacy) for k, v in sections().items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), for_hash=for_hash, legacy=legacy)
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal") and (not for_hash or hashed(f))
        }
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v, for_hash=for_hash, legacy=legacy) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_dict(v, for_hash=for_hash, legacy=legacy) for v in obj]
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj
