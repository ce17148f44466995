"""Docs cannot rot: links resolve, the README's config and the examples load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stac2cube.config import config_from_dict, load_config

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [ln for ln in links if not re.match(r"[a-z]+://", ln)]
    missing = [ln for ln in local if not (page.parent / ln).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_config_example_is_valid() -> None:
    block = re.search(
        r"### Point it at Earth Search\n\n```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    assert block, "README lost its Earth Search example"
    cfg = config_from_dict(yaml.safe_load(block.group(1)))
    assert cfg.source.api == "https://earth-search.aws.element84.com/v1"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.source.api and cfg.source.api.startswith("https://")


def test_readme_quick_start_is_two_make_targets() -> None:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, re.M)
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: setup", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
