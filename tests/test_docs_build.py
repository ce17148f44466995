"""The documentation site builds with ``mkdocs build --strict`` (broken links, missing anchors and
pages left out of the nav fail it), and the tutorial's commands work as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stac2cube.provenance import STAC2CUBE_SCHEMA
from stac2cube.validation import provenance_schema_file

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent  # this virtualenv's scripts: mkdocs, stac2cube


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=config.parent,
        timeout=300,
    )


def nav_pages(nav: Any) -> list[str]:
    """Every page path in a mkdocs ``nav`` (nested lists of ``{title: page | [...]}``)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for entry in nav for p in nav_pages(entry)]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in nav_pages(v)]
    return []


def mkdocs_config() -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return cfg


def test_strict_build(tmp_path: Path) -> None:
    res = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert res.returncode == 0, res.stderr
    for page in nav_pages(mkdocs_config()["nav"]):
        html = "index.html" if page == "index.md" else f"{page.removesuffix('.md')}/index.html"
        assert (tmp_path / "site" / html).exists(), html
    # the provenance extension's schema is published at its $id, the package's copy as it is
    published = STAC2CUBE_SCHEMA.removeprefix(mkdocs_config()["site_url"])
    assert published != STAC2CUBE_SCHEMA
    schema = (tmp_path / "site" / published).read_bytes()
    assert schema == provenance_schema_file().read_bytes()
    assert json.loads(schema)["$id"] == STAC2CUBE_SCHEMA


def test_every_page_is_in_the_nav() -> None:
    cfg = mkdocs_config()
    assert cfg["docs_dir"] == "docs" and cfg["strict"] is True
    pages = nav_pages(cfg["nav"])
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(pages)) == sorted(pages), "a page is listed twice in the nav"
    assert sorted(pages) == on_disk, (
        f"not in the nav: {sorted(set(on_disk) - set(pages))}; "
        f"in the nav but missing: {sorted(set(pages) - set(on_disk))}"
    )


@pytest.mark.parametrize(
    ("link", "complaint"),
    [
        ("[x](cube.md#no-such-heading)", "no-such-heading"),
        ("[x](no-such-page.md)", "no-such-page.md"),
        ("[x](../README.md)", "../README.md"),
        ("[x](/docs/cube.md)", "/docs/cube.md"),
    ],
)
def test_strict_build_fails_on_a_bad_link(tmp_path: Path, link: str, complaint: str) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "why.md"
    page.write_text(page.read_text() + f"\n{link}\n")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    res = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert res.returncode != 0 and complaint in res.stderr, res.stderr


def test_strict_build_fails_on_a_page_missing_from_the_nav(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    res = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert res.returncode != 0 and "orphan.md" in res.stderr, res.stderr


@pytest.mark.slow
def test_tutorial_commands_work(tmp_path: Path) -> None:
    """Every ``bash`` and ``python`` block of docs/tutorial.md, in order, in an empty directory."""
    text = (DOCS / "tutorial.md").read_text()
    blocks = re.findall(r"```(bash|python)\n(.*?)```", text, re.S)
    assert [k for k, _ in blocks].count("bash") >= 4 and any(k == "python" for k, _ in blocks)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = []
    for kind, code in blocks:
        cmd = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable]
        res = subprocess.run(
            cmd,
            input=code if kind == "python" else None,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert res.returncode == 0, f"{kind} block failed:\n{code}\n{res.stdout}\n{res.stderr}"
        out.append(res.stdout)
    log = "\n".join(out)
    assert "scenes: 4 written, 0 up to date, 0 filtered, 0 failed" in log
    assert "scenes: 0 written, 4 up to date, 0 filtered, 0 failed" in log
    assert "4 written, 0 filtered, 0 failed" in log  # stac2cube status
    assert "0 problem(s)" in log  # stac2cube validate
