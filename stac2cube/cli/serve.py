"""``stac2cube serve CATALOG``: a STAC API and the COGs of CATALOG over HTTP until Ctrl-C."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from ..catalog.virtual import has_virtual_cube
from ..serve import DEFAULT_HOST, DEFAULT_PORT, Backend, serve
from .options import handle_errors, verbosity


@click.command("serve")
@click.argument("catalog", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on. 0.0.0.0 serves every interface: anyone who can reach this "
    "machine can then read the catalog.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--public-url",
    default=None,
    metavar="URL",
    help="Base URL written into links and asset hrefs, e.g. behind a reverse proxy "
    "(default: the address each client used).",
)
@click.option(
    "--backend",
    type=click.Choice(["rustac", "static"]),
    default="rustac",
    show_default=True,
    help="STAC API behind the server: rustac (rustac serve) or static (stac-fastapi-static, "
    "adds CQL2 `filter`, e.g. on eo:cloud_cover; see docs/serve.md for its paging limit).",
)
@verbosity
@handle_errors
def serve_cmd(
    catalog: Path, host: str, port: int, public_url: str | None, backend: Backend
) -> None:
    """Serve CATALOG as a STAC API (search with pystac-client, load with odc-stac), its
    files, COGs included, with HTTP range requests (GDAL /vsicurl), and its versioned virtual
    cube as a Zarr v3 store (xarray.open_zarr), until Ctrl-C."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Ctrl-C stops the server even when started from a non-interactive shell's background job,
    # which starts its children with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with serve(catalog, host=host, port=port, public_url=public_url, backend=backend) as srv:
        click.echo(f"STAC API        {srv.url}/")
        click.echo(f"item search     {srv.url}/search")
        click.echo(f"static catalog  {srv.catalog_url}")
        if has_virtual_cube(srv.root):
            click.echo(f"Zarr cube       {srv.cube_url()}  (or /cube/<run id>)")
        click.echo("Press Ctrl-C to stop.")
        try:
            while srv.running:
                srv.wait(0.5)
        except KeyboardInterrupt:
            click.echo("stopping")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)  # unwinds the `with`, which stops the STAC API backend as well
