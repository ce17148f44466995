"""Options shared by the CLI commands, and logging/progress set-up (the CLI's job only)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import ConfigError, Stac2CubeError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED_SCENES = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


def verbosity(f: F) -> F:
    """``-v``/``-q``: configure logging for the library's loggers."""

    @click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    @click.option("-q", "--quiet", is_flag=True, help="Only errors.")
    @functools.wraps(f)
    def wrapper(*args: Any, verbose: int, quiet: bool, **kwargs: Any) -> Any:
        level = (
            logging.ERROR
            if quiet
            else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
        )
        logging.basicConfig(
            level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        logging.getLogger("stac2cube").setLevel(level)
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def handle_errors(f: F) -> F:
    """Turn library errors into a one-line message and an exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ConfigError as exc:
            click.secho(f"config error: {exc}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        except Stac2CubeError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


overrides = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a config value (repeatable), e.g. --set output.dtype=float32.",
)
