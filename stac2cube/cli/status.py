"""``stac2cube status CATALOG``: scenes per state and the open failures."""

from __future__ import annotations

from pathlib import Path

import click

from ..ard import REQUIREMENTS, SPECIFICATION, SPECIFICATION_VERSION, AssessmentCounts
from ..status import catalog_status
from .options import handle_errors, verbosity


@click.command("status")
@click.argument("catalog", type=click.Path(exists=True, path_type=Path))
@verbosity
@handle_errors
def status_cmd(catalog: Path) -> None:
    """Count written, filtered and failed scenes of CATALOG and list the failures."""
    st = catalog_status(catalog)
    click.echo(
        f"{st.root} (collection {st.collection}): {st.written} written, {st.filtered} filtered, "
        f"{len(st.failures)} failed"
    )
    if st.steps:
        click.echo("steps: " + ", ".join(f"{k} ×{v}" for k, v in sorted(st.steps.items())))
    for why, n in sorted(st.without_s2cloudless.items()):
        click.echo(f"cloud masks without s2cloudless ({why}): {n} (SCL instead)")
    for f in st.failures:
        click.secho(f"  {f.item_id} [{f.stage}, {f.error}, {f.time}]: {f.message}", fg="yellow")
    if st.cube_versions:
        run_id, snap, when = st.cube_versions[0]
        click.echo(
            f"virtual cube: {len(st.cube_versions)} version(s); HEAD: run {run_id} "
            f"(snapshot {snap}, {when}), {st.cube_items} item(s)"
        )
        for run_id, snap, when in st.cube_versions[1:6]:
            click.echo(f"  earlier: run {run_id} (snapshot {snap}, {when})")
    if st.ard.items:
        _print_ard(st.ard)
    if st.orphans:
        click.echo(f"{len(st.orphans)} file(s) not referenced by any item (see `validate`)")


def _print_ard(ard: AssessmentCounts) -> None:
    """Items at CEOS-ARD Threshold and Goal, one line per requirement."""
    click.echo(
        f"CEOS-ARD {SPECIFICATION} {SPECIFICATION_VERSION} (self-assessment of {ard.items} "
        "item(s); why: the collection's ceos-ard-assessment.json)"
    )
    click.echo(f"  {'req':5} {'requirement':38} {'Threshold':>10} {'Goal':>6}")
    for r in REQUIREMENTS:
        t = "n/a" if r.threshold is None else str(ard.threshold.get(r.id, 0))
        click.echo(f"  {r.id:5} {r.name[:38]:38} {t:>10} {ard.goal.get(r.id, 0):>6}")
    if ard.unassessed:
        click.echo(f"  {ard.unassessed} item(s) written before stac2cube assessed items")
