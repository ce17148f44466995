"""docs/cli.md is the generated reference of the click commands, and it is current."""

from __future__ import annotations

import re
from pathlib import Path

import click

from stac2cube.cli.main import cli
from stac2cube.cli.reference import cli_reference

DOC = Path(__file__).parents[2] / "docs" / "cli.md"
REGENERATE = (
    'python -c "from stac2cube.cli.reference import cli_reference; '
    "print(cli_reference(), end='')\" > docs/cli.md"
)


def test_cli_reference_is_current() -> None:
    assert DOC.read_text() == cli_reference(), f"docs/cli.md is out of date: run {REGENERATE}"


def test_every_command_and_option_is_documented() -> None:
    text = cli_reference()
    ctx = click.Context(cli, info_name="stac2cube")
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        assert f"## `stac2cube {name}`" in text
        section = text.split(f"## `stac2cube {name}`", 1)[1].split("\n## ", 1)[0]
        sub = click.Context(cmd, info_name=name, parent=ctx)
        for param in cmd.get_params(sub):
            if isinstance(param, click.Option):
                assert all(f"`{o}`" in section for o in param.opts), (name, param.opts)
            else:
                assert f"`{param.human_readable_name}`" in section, (name, param.name)


def test_anchors_match_headings() -> None:
    text = cli_reference()
    headings = re.findall(r"^## `([^`]+)`$", text, re.M)
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert anchors == {h.replace(" ", "-") for h in headings if " " in h}


def test_a_group_of_its_own_renders() -> None:
    @click.group()
    def tool() -> None:
        """A tool."""

    @tool.command("go")
    @click.argument("target", default="here")
    @click.option("--mode", type=click.Choice(["a", "b"]), default="a", help="How | where.")
    @click.option("--hidden", hidden=True)
    @click.option("-n", "--count", type=click.IntRange(min=1), default=2, show_default=True)
    def go(target: str, mode: str, hidden: str | None, count: int) -> None:
        """Go to TARGET.

        Second paragraph,
        wrapped."""

    text = cli_reference(tool, prog="tool")
    assert "## `tool go`\n\n```\ntool go [OPTIONS] [TARGET]\n```" in text
    assert "Go to TARGET.\n\nSecond paragraph, wrapped." in text
    assert "| `TARGET` | text | `here` |" in text
    assert "| `--mode` | `a` \\| `b` | `a` | How \\| where. |" in text
    assert "| `-n`, `--count` | integer ≥ 1 | `2` |  |" in text
    assert "--hidden" not in text
