"""The ``stac2cube`` command group. Each command lives in its own module."""

from __future__ import annotations

import click

from .. import __version__
from .cube import cube_cmd
from .demo import demo_cmd
from .run import run_cmd
from .serve import serve_cmd
from .status import status_cmd
from .validate import validate_cmd


@click.group()
@click.version_option(__version__, prog_name="stac2cube")
def cli() -> None:
    """Sentinel-2 scenes to an analysis-ready STAC catalog of COGs, opened as a cube."""


cli.add_command(run_cmd)
cli.add_command(cube_cmd)
cli.add_command(demo_cmd)
cli.add_command(validate_cmd)
cli.add_command(status_cmd)
cli.add_command(serve_cmd)
