"""``stac2cube serve`` as a user runs it: real subprocesses, their URLs, Ctrl-C and SIGTERM.

A taken port, a missing catalog and rustac missing are tested on the library
(tests/serve/test_server.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from stac2cube.catalog import CatalogStore
from stac2cube.testing.stac_api import free_port

EXE = str(Path(sys.executable).with_name("stac2cube"))


def start(catalog: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, "serve", str(catalog), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_prints_its_urls_and_stops_on_ctrl_c_or_sigterm(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    CatalogStore(catalog, "s2-ard", title="S2 ARD").create()  # a collection, no item yet
    ports = {signal.SIGINT: free_port(), signal.SIGTERM: free_port()}
    procs = {sig: start(catalog, port) for sig, port in ports.items()}  # started side by side
    try:
        for sig, proc in procs.items():
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.split() == ["STAC", "API", f"http://127.0.0.1:{ports[sig]}/"], first + (
                proc.communicate()[1] if proc.poll() is not None else ""
            )
        base = f"http://127.0.0.1:{ports[signal.SIGINT]}"
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            links = {ln["rel"]: ln["href"] for ln in json.load(r)["links"]}
        assert links["self"] == f"{base}/" and links["child"] == f"{base}/collections/s2-ard"
        with urllib.request.urlopen(f"{base}/catalog/catalog.json", timeout=10) as r:
            assert json.load(r)["id"] == "stac2cube"

        for sig, proc in procs.items():  # Ctrl-C, and what a service manager sends
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for port in ports.values():  # nothing is left listening
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
