"""L2A-only archives and refused L1C reads: s2cloudless is never silently fed L2A bands; a scene
without a readable L1C twin is masked by SCL (recorded in the item, counted in the run summary),
or fails with ``l1c: require``; requester-pays L1C is read with ``AWS_REQUEST_PAYER``.

Refused reads are real: the L1C hrefs point to an HTTP server on 127.0.0.1 that answers 403,
or, for the requester-pays case, GDAL's S3 client talks to such a server as its endpoint."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
import rasterio

from stac2cube import load_config, run
from stac2cube.catalog import CatalogStore
from stac2cube.cli.run import report
from stac2cube.config import Config
from stac2cube.errors import AssetAccessError
from stac2cube.io.read import read_band, requester_pays
from stac2cube.sample import Sample
from stac2cube.sample.scenes import sample_geobox
from stac2cube.status import catalog_status
from stac2cube.testing.configs import write_config
from stac2cube.testing.data import load_item, load_item_collection

pytest.importorskip("s2cloudless")

BANDS = ["B02", "B04", "B08", "SCL"]
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


class _Refuser(http.server.BaseHTTPRequestHandler):
    """Answers every request with 403 AccessDenied and records what it was asked."""

    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("x-amz-request-payer")))
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(ACCESS_DENIED)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(ACCESS_DENIED)

    do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refuser() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """``(host:port, requests seen)`` of a local server that refuses everything (a new one per
    test: GDAL caches what a URL answered)."""
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (_Refuser,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _config(tmp: Path, sample: Sample, source: dict[str, Any], **cloudmask: Any) -> Config:
    tmp.mkdir(parents=True, exist_ok=True)
    return load_config(
        write_config(
            tmp,
            sample,
            source,
            bands=BANDS,
            steps={"cloudmask": cloudmask},
            run={"executor": "serial"},
        )
    )


def _l1c_items_at(sample: Sample, tmp: Path, href: str) -> Path:
    """A copy of the sample's L1C items whose data assets live at ``href/<id>/<key>.tif``."""
    fc = json.loads(sample.l1c_items_path.read_text())
    for feat in fc["features"]:
        for key, asset in feat["assets"].items():
            if "data" in asset.get("roles", []):
                asset["href"] = f"{href}/{feat['id']}/{key}.tif"
    out = tmp / "l1c-elsewhere.json"
    out.write_text(json.dumps(fc))
    return out


def _cloud_results(cfg: Config) -> dict[str, dict[str, Any]]:
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    out = {}
    for item in store.iter_items():
        steps = {s["name"]: s for s in item["properties"]["stac2cube:steps"]}
        out[item["id"]] = steps["cloudmask"]["results"] | {"_item": item}
    return out


def test_l2a_only_archive_is_masked_by_scl_recorded_and_counted(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sample, {"path": str(sample.l2a_items_path)})
    summary = run(cfg)
    assert summary.written == 4
    assert summary.without_s2cloudless() == {("no L1C twin", "scl"): 4}
    assert {o.cloud_method for o in summary.outcomes} == {"scl"}
    for res in _cloud_results(cfg).values():
        item = res["_item"]
        assert res["method"] == "union" and res["method_used"] == "scl"
        assert res["s2cloudless"] == {"status": "not run", "reason": "no L1C twin"}
        # nothing was read for s2cloudless, and no probability layer claims it ran
        inputs = item["properties"]["stac2cube:inputs"]
        assert {i["band"] for i in inputs} == set(BANDS)
        assert "CLOUD_PROB" not in item["assets"] and "CLOUD_MASK" in item["assets"]
    report(summary)
    out = capsys.readouterr().out
    assert "4 scenes masked without s2cloudless (no L1C twin): scl" in out
    assert catalog_status(cfg.catalog_dir).without_s2cloudless == {"no L1C twin": 4}


def test_l2a_only_with_the_temporal_test_counts_it(sample: Sample, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sample, {"path": str(sample.l2a_items_path)}, temporal_threshold=0.03)
    summary = run(cfg)
    assert summary.written == 4
    counts = summary.without_s2cloudless()
    assert sum(counts.values()) == 4
    assert {m for _, m in counts} == {"scl + multi-temporal test"}
    for res in _cloud_results(cfg).values():
        assert res["method_used"] == "scl" and res["temporal"]["status"] == "applied"


def test_refused_l1c_read_falls_back_records_and_is_not_retried(
    sample: Sample,
    tmp_path: Path,
    refuser: tuple[str, list[tuple[str, str | None]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, seen = refuser
    l1c = _l1c_items_at(sample, tmp_path, f"http://{host}")
    source = {"path": str(sample.l2a_items_path), "l1c_path": str(l1c)}
    cfg = _config(tmp_path, sample, source)
    summary = run(cfg)
    assert seen, "the L1C assets were never requested"
    assert summary.written == 4 and summary.failed == 0
    assert summary.without_s2cloudless() == {("L1C read refused", "scl"): 4}
    for res in _cloud_results(cfg).values():
        s2c = res["s2cloudless"]
        assert s2c["status"] == "not run" and res["method_used"] == "scl"
        reason = s2c["reason"]
        assert reason.startswith("L1C read refused: ")
        assert "HTTP response code: 403" in reason
        assert "source.sign" in reason  # what to set for an http server that refuses
    report(summary)
    captured = capsys.readouterr()
    assert "4 scenes masked without s2cloudless (L1C read refused): scl" in captured.out
    assert "HTTP response code: 403" in captured.err
    # an update does not redo every scene because the same twin is still refused (one probe)
    n = len(seen)
    again = run(cfg)
    assert again.written == 0 and {o.message for o in again.outcomes} == {"up to date"}
    assert len(seen) - n <= 3  # at most one open (GDAL may answer it from its cache)
    # once the twins can be read (same ids, same config hash), the scenes are redone with them
    readable = {**source, "l1c_path": str(sample.l1c_items_path)}
    fixed = run(_config(tmp_path, sample, readable))
    assert fixed.written == 4
    assert {o.message for o in fixed.outcomes} == {"stale: L1C twin readable now"}
    assert fixed.without_s2cloudless() == {}
    for res in _cloud_results(cfg).values():
        assert res["s2cloudless"] == {"status": "run", "input": "l1c"}


def test_refused_l1c_read_with_require_fails_each_scene_clearly(
    sample: Sample, tmp_path: Path, refuser: tuple[str, list[tuple[str, str | None]]]
) -> None:
    host, _ = refuser
    l1c = _l1c_items_at(sample, tmp_path, f"http://{host}")
    source = {"path": str(sample.l2a_items_path), "l1c_path": str(l1c)}
    cfg = _config(tmp_path, sample, source, l1c="require")
    summary = run(cfg)
    assert summary.written == 0 and summary.failed == 4
    assert summary.without_s2cloudless() == {}
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    failures = store.failures()
    assert {f.item_id for f in failures} == {s.l2a_item["id"] for s in sample.scenes}
    for f in failures:
        assert f.stage == "cloudmask" and f.error == "StepError"
        assert "'require'" in f.message and "L1C read refused" in f.message
        assert "HTTP response code: 403" in f.message
    # nothing half-written: no item, no staging leftovers
    assert list(store.iter_items()) == []
    assert not list(store.root.glob("**/*.tif"))


def test_requester_pays_l1c_is_read_with_aws_request_payer(
    sample: Sample,
    tmp_path: Path,
    refuser: tuple[str, list[tuple[str, str | None]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Earth Search v1 L1C twins live in ``s3://sentinel-s2-l1c`` (requester-pays): GDAL's S3
    client, pointed at a local endpoint, must send ``x-amz-request-payer: requester`` for the
    L1C reads, and the refusal must say what to set."""
    host, seen = refuser
    for k, v in {
        "AWS_S3_ENDPOINT": host,
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret",
    }.items():
        monkeypatch.setenv(k, v)
    l1c = _l1c_items_at(sample, tmp_path, "s3://sentinel-s2-l1c/tiles")
    source = {"path": str(sample.l2a_items_path), "l1c_path": str(l1c)}
    cfg = _config(tmp_path / "auto", sample, source)
    summary = run(cfg)
    assert summary.written == 4
    assert seen and all(payer == "requester" for _, payer in seen)
    assert all(path.startswith("/sentinel-s2-l1c/") for path, _ in seen)
    reason = next(iter(_cloud_results(cfg).values()))["s2cloudless"]["reason"]
    assert "AWS_ACCESS_KEY_ID" in reason and "AWS_REQUEST_PAYER=requester" in reason
    # switched off explicitly: no requester-pays header
    seen.clear()
    cfg = _config(tmp_path / "off", sample, {**source, "l1c_requester_pays": False})
    assert run(cfg).written == 4
    assert seen and all(payer is None for _, payer in seen)
    reason = next(iter(_cloud_results(cfg).values()))["s2cloudless"]["reason"]
    assert "source.l1c_requester_pays: true" in reason


def test_requester_pays_is_recognised_on_real_items() -> None:
    """Earth Search v1 L1C items carry no ``storage:*`` field but point into the requester-pays
    bucket; Sentinel-1 items say so in storage v1 fields; CDSE's own S3 is free."""
    page = load_item_collection("stac/searches/earth-search-v1-s2-cql2-cloud-lte40-page1.json")
    l1c = [i for i in page if i.collection_id == "sentinel-2-l1c"]
    assert l1c and all(requester_pays(i) for i in l1c)
    assert all(a.href.startswith("s3://sentinel-s2-l1c/") for a in l1c[0].assets.values())
    s1 = [i for i in page if i.collection_id == "sentinel-1-grd"]
    assert s1 and all(requester_pays(i) for i in s1)
    c1 = [i for i in page if i.collection_id == "sentinel-2-c1-l2a"]
    assert c1 and not any(requester_pays(i) for i in c1)
    cdse = load_item(
        "stac/items/cdse/"
        "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110.json"
    )
    assert not requester_pays(cdse)
    said = pystac.Item("x", None, None, l1c[0].datetime, {"storage:requester_pays": True})
    assert requester_pays(said)


def test_missing_aws_credentials_say_what_to_set(
    sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GDAL's own refusal when no AWS credentials exist at all (no request is sent)."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "NO")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    fc = json.loads(_l1c_items_at(sample, tmp_path, "s3://sentinel-s2-l1c/tiles").read_text())
    twin = pystac.Item.from_dict(fc["features"][0])
    with (
        rasterio.Env(AWS_REQUEST_PAYER="requester"),
        pytest.raises(AssetAccessError, match=r"refused.*set AWS_ACCESS_KEY_ID") as err,
    ):
        read_band(twin, "B01", sample_geobox(sample))
    assert "requester-pays" in str(err.value)
