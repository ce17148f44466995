"""The registry of processing steps: stac2cube's own and third-party steps, found the same way.

A step plug-in (:class:`StepPlugin`) names its section under ``steps:`` in the configuration,
the config class that section parses into, how to build the step for a run, and its rank in the
run order. Plug-ins are declared in the entry-point group ``stac2cube.steps`` (stac2cube's own
in its ``pyproject.toml``) or registered at run time with :func:`register_step`; so a new step
needs no edit in :mod:`stac2cube.config` or the pipeline. Writing one: docs/steps.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from ..errors import ConfigError
from .base import Step

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

C = TypeVar("C")

ENTRY_POINT_GROUP: Final = "stac2cube.steps"
"""The entry-point group in which packages declare their step plug-ins."""


@dataclass(frozen=True)
class StepPlugin(Generic[C]):
    """A processing step as the configuration and the pipeline see it."""

    name: str
    """The step's key under ``steps:`` in the configuration (``cloudmask``); the step it builds
    has this ``name`` too (it names the step in provenance)."""
    config: type[C]
    """The frozen dataclass the step's section parses into (fields documented with
    :func:`stac2cube.fields.doc`: they make the configuration reference)."""
    factory: Callable[[C, Config], tuple[Step[C], C]]
    """Builds the step for a run from its section and the whole configuration; returns the step
    and the configuration it runs with (e.g. with local paths made absolute)."""
    order: int
    """Rank in the run order: steps run by increasing rank, then name (stac2cube's own:
    cloudmask 10, coreg 20, nbar 25, superres 30, quality 90)."""
    doc: str
    """One line for the configuration reference: what the step does, where it is documented."""
    validate: Callable[[C, Config], None] | None = None
    """Checks of the section against the whole configuration (e.g. that the bands it needs are
    in ``bands``), raising :class:`~stac2cube.errors.ConfigError`; None: nothing to check."""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"step plug-in name {self.name!r} is not an identifier")
        if not dataclasses.is_dataclass(self.config):
            raise ConfigError(f"step plug-in {self.name}: config must be a dataclass")

    def build(self, cfg: C, config: Config) -> tuple[Step[C], C]:
        """The step and its run configuration for ``cfg`` (the section) in ``config``."""
        step, run_cfg = self.factory(cfg, config)
        if step.name != self.name:
            raise ConfigError(
                f"step plug-in {self.name} built a step named {step.name!r}; the names must agree"
            )
        return step, run_cfg

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # a plug-in travels by name: the receiving process finds its own (entry points)
        return get_step, (self.name,)


_registered: dict[str, StepPlugin[Any]] = {}
"""Plug-ins registered at run time (:func:`register_step`)."""


def _load(ep: importlib.metadata.EntryPoint) -> StepPlugin[Any] | str:
    """The plug-in an entry point names, or why it is not one."""
    try:
        obj = ep.load()
    except Exception as exc:  # a broken third-party package must not stop the other steps
        return f"{ep.value} does not load: {type(exc).__name__}: {exc}"
    if not isinstance(obj, StepPlugin) or obj.name != ep.name:
        return f"{ep.value} is not a StepPlugin named {ep.name!r}"
    return obj


@functools.cache
def _entry_points() -> tuple[dict[str, StepPlugin[Any]], dict[str, str]]:
    """The plug-ins declared in :data:`ENTRY_POINT_GROUP`, and why others are left out."""
    found: dict[str, StepPlugin[Any]] = {}
    broken: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        got = _load(ep)
        if isinstance(got, StepPlugin) and found.get(ep.name, got) is got:
            found[ep.name] = got
            continue
        broken[ep.name] = got if isinstance(got, str) else f"{ep.value} is declared twice"
        found.pop(ep.name, None)
        log.warning("step plug-in %s left out: %s", ep.name, broken[ep.name])
    return found, broken


def _plugins() -> dict[str, StepPlugin[Any]]:
    return {**_entry_points()[0], **_registered}


def clear_registry_cache() -> None:
    """Look the entry points up again on next use (after installing a package at run time)."""
    _entry_points.cache_clear()


def registered_steps() -> tuple[StepPlugin[Any], ...]:
    """Every step plug-in, in run order."""
    return tuple(sorted(_plugins().values(), key=lambda p: (p.order, p.name)))


def get_step(name: str) -> StepPlugin[Any]:
    """The plug-in of the step configured as ``steps.<name>``; a ConfigError naming the
    registered steps when there is none."""
    plugins = _plugins()
    if name in plugins:
        return plugins[name]
    broken = _entry_points()[1]
    if name in broken:
        raise ConfigError(
            f"steps.{name}: the step plug-in {broken[name]}; reinstall the package that provides it"
        )
    close = difflib.get_close_matches(name, list(plugins), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(p.name for p in registered_steps())
    if not known:  # not even stac2cube's own: its package metadata is missing or stale
        known = (
            "none: reinstall stac2cube (`pip install -e .`), which declares its steps, and "
            "remove a stale stac2cube.egg-info beside its pyproject.toml"
        )
    raise ConfigError(f"unknown config key steps.{name}{hint} (registered steps: {known})")


def register_step(plugin: StepPlugin[Any]) -> StepPlugin[Any]:
    """Register ``plugin`` in this process (a step that no installed package declares);
    returns it. A name already taken by another plug-in is a ConfigError."""
    other = _plugins().get(plugin.name)
    if other is not None and other is not plugin:
        raise ConfigError(f"a step named {plugin.name!r} is already registered")
    _registered[plugin.name] = plugin
    return plugin


def unregister_step(name: str) -> None:
    """Forget a plug-in registered with :func:`register_step` (entry points stay)."""
    _registered.pop(name, None)


__all__ = [
    "ENTRY_POINT_GROUP",
    "StepPlugin",
    "clear_registry_cache",
    "get_step",
    "register_step",
    "registered_steps",
    "unregister_step",
]
