"""``stac2cube cube CATALOG``: summarise the catalog as the cube ``open_cube`` returns."""

from __future__ import annotations

from pathlib import Path

import click

from ..cube import open_cube
from .options import handle_errors, verbosity


@click.command("cube")
@click.argument("catalog", type=click.Path(exists=True, path_type=Path))
@click.option("--bands", "-b", multiple=True, help="Bands to include (default: all).")
@click.option(
    "--groupby", type=click.Choice(["scene", "solar_day"]), default="scene", show_default=True
)
@verbosity
@handle_errors
def cube_cmd(catalog: Path, bands: tuple[str, ...], groupby: str) -> None:
    """Print the lazy cube of CATALOG (dimensions, bands, times) and how to open it."""
    ds = open_cube(catalog, list(bands) or None, groupby=groupby)  # type: ignore[arg-type]
    click.echo(ds)
    click.echo(
        "\nOpen it in Python:\n"
        f"  import stac2cube\n  ds = stac2cube.open_cube({str(catalog)!r})\n"
        "  refl = stac2cube.reflectance(ds)   # float reflectance, NaN for nodata"
    )
