"""``stac2cube run CONFIG``: search and write every new, failed or stale scene."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import click
from tqdm import tqdm

from ..config import load_config
from ..pipeline import ProgressEvent, RunSummary, run
from .options import EXIT_FAILED_SCENES, handle_errors, overrides, verbosity


class ProgressBar:
    """A tqdm bar on stderr fed by the pipeline's progress events: scenes done, counts per
    status, ETA. Hidden with -q."""

    def __init__(self) -> None:
        self.quiet = logging.getLogger("stac2cube").level >= logging.ERROR
        self.bar: tqdm | None = None  # type: ignore[type-arg]
        self.counts: Counter[str] = Counter()

    def __call__(self, ev: ProgressEvent) -> None:
        if self.bar is None:
            self.bar = tqdm(total=ev.total, unit="scene", disable=self.quiet, file=sys.stderr)
        if ev.outcome is not None:
            self.counts[ev.outcome.status] += 1
            self.bar.set_postfix(dict(sorted(self.counts.items())), refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_with_progress(config_path: Path, sets: tuple[str, ...]) -> RunSummary:
    """Run the pipeline with a progress bar on stderr (hidden with -q)."""
    cfg = load_config(config_path, sets)
    bar = ProgressBar()
    try:
        return run(cfg, progress=bar)
    finally:
        bar.close()


def report(summary: RunSummary) -> None:
    """Print the run summary."""
    click.echo(
        f"catalog: {summary.catalog}\n"
        f"scenes: {summary.written} written, {summary.skipped} up to date, "
        f"{summary.filtered} filtered, {summary.failed} failed  "
        f"(search: {summary.search_method}, run {summary.run_id})"
    )
    if summary.snapshot_id:
        click.echo(
            f"  virtual cube: snapshot {summary.snapshot_id} "
            f"(open_virtual_cube(catalog, version={summary.run_id!r}))"
        )
    for (why, method), n in sorted(summary.without_s2cloudless().items()):
        scenes = "scene" if n == 1 else "scenes"
        click.echo(f"  {n} {scenes} masked without s2cloudless ({why}): {method}")
    coreg = summary.coreg_statuses()
    if coreg:
        counts = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(coreg.items()))
        click.echo(f"  co-registration: {counts} (only 'ok' scenes were shifted)")
        for o in summary.outcomes:
            if o.coreg_status == "failed":
                click.secho(f"  {o.item_id} [coreg]: {o.coreg_reason}", fg="yellow", err=True)
    refused = next((o for o in summary.outcomes if o.s2cloudless_not_run.startswith("L1C ")), None)
    if refused is not None:
        click.secho(f"  {refused.item_id}: {refused.s2cloudless_not_run}", fg="yellow", err=True)
    for o in summary.outcomes:
        if o.status in ("failed", "rejected"):
            click.secho(f"  {o.item_id} [{o.stage}]: {o.message}", fg="yellow", err=True)
    if summary.failed:
        click.echo("  failures are logged in <catalog>/_stac2cube/failures.jsonl", err=True)


def exit_code(summary: RunSummary, strict: bool) -> int:
    """Non-zero if asked (--strict) and something failed, or if nothing succeeded."""
    ok = summary.written + summary.skipped
    if summary.failed and (strict or ok == 0):
        return EXIT_FAILED_SCENES
    return 0


@click.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@overrides
@click.option("--strict", is_flag=True, default=None, help="Exit 1 if any scene failed.")
@verbosity
@handle_errors
def run_cmd(config: Path, overrides: tuple[str, ...], strict: bool | None) -> None:
    """Search the source of CONFIG and write new, failed or stale scenes into its catalog."""
    cfg_strict = load_config(config, overrides).run.strict
    summary = run_with_progress(config, overrides)
    report(summary)
    sys.exit(exit_code(summary, cfg_strict if strict is None else strict))
