"""``stac2cube validate CATALOG``: schemas, COGs and checksums, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..check import check_catalog
from .options import handle_errors, verbosity


@click.command("validate")
@click.argument("catalog", type=click.Path(exists=True, path_type=Path))
@verbosity
@handle_errors
def validate_cmd(catalog: Path) -> None:
    """Validate every catalog, collection and item against the STAC and extension schemas
    (offline), every COG with rio-cogeo, and every checksum. Exit 1 on any problem; files no
    item references are listed as warnings."""
    report = check_catalog(catalog)
    click.echo(
        f"{report.n_items} item(s), {report.n_assets} asset(s) checked: "
        f"{len(report.problems)} problem(s)"
    )
    for p in report.problems:
        click.secho(f"  {p}", fg="red")
    for w in report.warnings:
        click.secho(f"  warning: {w}", fg="yellow")
    sys.exit(1 if report.problems else 0)
