"""``stac2cube demo [DIR]``: the whole pipeline, offline, on the bundled sample."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import handle_errors, verbosity
from .run import ProgressBar, exit_code, report


@click.command("demo")
@click.argument("directory", default="stac2cube-demo", type=click.Path(path_type=Path))
@verbosity
@handle_errors
def demo_cmd(directory: Path) -> None:
    """Generate the sample in DIRECTORY, serve it as a STAC API on 127.0.0.1 and run on it."""
    from ..demo import run_demo  # imports the sample generator only when needed

    click.echo(f"generating the sample in {directory / 'sample'} ...")
    bar = ProgressBar()

    try:
        res = run_demo(directory, progress=bar)
    finally:
        bar.close()
    click.echo(f"served the sample at {res.api_url} (rustac serve) and ran {res.config_path}")
    report(res.summary)
    click.echo(
        "\nOpen the cube:\n"
        f"  stac2cube cube {res.summary.catalog}\n"
        '  python -c "import stac2cube; print(stac2cube.open_cube('
        f"'{res.summary.catalog}'))\"\n"
        f"Re-run offline (nothing new to do, every scene is up to date):\n"
        f"  stac2cube run {res.offline_config_path}"
    )
    sys.exit(exit_code(res.summary, strict=False))
