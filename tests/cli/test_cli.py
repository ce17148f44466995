"""The CLI as a user runs it: real subprocesses, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config

EXE = str(Path(sys.executable).with_name("stac2cube"))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_the_commands() -> None:
    out = cli("--help").stdout
    for cmd in ("run", "cube", "demo", "validate", "status"):
        assert cmd in out


def test_run_cube_validate(sample: Sample, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, sample, {"path": str(sample.l2a_items_path)}, bands=["B04", "B08", "SCL"]
    )
    res = cli("run", str(cfg), "-q")
    assert res.returncode == 0, res.stderr
    assert "4 written, 0 up to date, 0 filtered, 0 failed" in res.stdout
    assert "scene/s" not in res.stderr  # -q hides the progress bar
    res = cli("cube", str(tmp_path / "catalog"), "-b", "red")
    assert res.returncode == 0 and "B04" in res.stdout and "time: 4" in res.stdout
    res = cli("validate", str(tmp_path / "catalog"))
    assert res.returncode == 0 and "0 problem(s)" in res.stdout
    res = cli("status", str(tmp_path / "catalog"))
    assert res.returncode == 0 and "4 written, 0 filtered, 0 failed" in res.stdout
    # a corrupted COG is caught by validate (checksum)
    tif = next((tmp_path / "catalog").rglob("B04.tif"))
    tif.write_bytes(tif.read_bytes()[:-10] + b"0123456789")
    res = cli("validate", str(tmp_path / "catalog"))
    assert res.returncode == 1 and "checksum mismatch" in res.stdout


def test_exit_codes_for_failed_scenes(sample: Sample, tmp_path: Path) -> None:
    doc = json.loads(sample.l2a_items_path.read_text())
    del doc["features"][0]["assets"]["red"]
    items = tmp_path / "items.json"
    items.write_text(json.dumps(doc))
    cfg = write_config(
        tmp_path, sample, {"path": str(items)}, bands=["B04"], steps={"cloudmask": None}
    )
    res = cli("run", str(cfg))
    assert res.returncode == 0, res.stderr  # some scenes succeeded
    assert "3 written" in res.stdout and "has no asset" not in res.stdout
    assert "failures.jsonl" in res.stderr and doc["features"][0]["id"] in res.stderr
    res = cli("run", str(cfg), "--strict")
    assert res.returncode == 1
    for feat in doc["features"]:
        feat["assets"].pop("red", None)
    items.write_text(json.dumps(doc))
    res = cli("run", str(cfg), "--set", "output.collection_id=other")
    assert res.returncode == 1 and "0 written" in res.stdout  # nothing succeeded


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.dtyp=int16", "did you mean 'dtype'"),
        ("bands=[B04, B99]", "B99"),
    ],
)
def test_config_errors_exit_2(sample: Sample, tmp_path: Path, override: str, message: str) -> None:
    cfg = write_config(tmp_path, sample, {"path": str(sample.l2a_items_path)})
    res = cli("run", str(cfg), "--set", override)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_unreachable_api_exit_3(sample: Sample, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sample, {"api": "http://127.0.0.1:9"})
    res = cli("run", str(cfg), "--set", "source.max_retries=0")
    assert res.returncode == 3 and "cannot open the STAC API" in res.stderr


@pytest.mark.slow
def test_demo_runs_offline_and_a_rerun_is_a_no_op(tmp_path: Path) -> None:
    res = cli("demo", str(tmp_path / "demo"))
    assert res.returncode == 0, res.stderr
    assert "4 written" in res.stdout and "rustac serve" in res.stdout
    res = cli("run", str(tmp_path / "demo" / "demo-offline.yaml"))
    assert res.returncode == 0 and "0 written, 4 up to date" in res.stdout
    assert cli("validate", str(tmp_path / "demo" / "catalog")).returncode == 0


def test_progress_bar_counts_statuses(sample: Sample, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        sample,
        {"path": str(sample.l2a_items_path)},
        bands=["B04", "SCL"],
        steps={"cloudmask": None},
    )
    res = cli("run", str(cfg))
    assert res.returncode == 0
    last = res.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "4/4" in last and "written=4" in last
