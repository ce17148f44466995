from __future__ import annotations

import json
from pathlib import Path

import pytest

from stac2cube import load_config, run
from stac2cube.check import check_catalog
from stac2cube.errors import CatalogError
from stac2cube.sample import Sample
from stac2cube.status import catalog_status
from stac2cube.testing.configs import write_config


def test_status_counts_written_filtered_and_failed(sample: Sample, tmp_path: Path) -> None:
    doc = json.loads(sample.l2a_items_path.read_text())
    clear = [
        f for f, s in zip(doc["features"], sample.scenes, strict=True) if s.cloud_fraction < 0.01
    ]
    broken = clear[0]["id"]
    clear[0]["assets"].pop("red")
    items = tmp_path / "items.json"
    items.write_text(json.dumps(doc))
    cfg = load_config(
        write_config(
            tmp_path,
            sample,
            {"path": str(items), "l1c_path": str(sample.l1c_items_path)},
            steps={"cloudmask": {"max_cloud_fraction": 0.3}},
        )
    )
    summary = run(cfg)
    st = catalog_status(cfg.catalog_dir)
    assert (st.written, st.filtered, len(st.failures)) == (
        summary.written,
        summary.filtered,
        summary.failed,
    )
    assert st.written + st.filtered + len(st.failures) == 4
    assert st.filtered >= 1 and [f.item_id for f in st.failures] == [broken]
    assert st.steps == {"harmonise": st.written, "cloudmask": st.written}
    assert st.orphans == ()
    # fixed input: the failure is no longer open
    items.write_text(sample.l2a_items_path.read_text())
    run(cfg)
    assert catalog_status(cfg.catalog_dir).failures == ()


def test_orphans_are_reported_by_validate_and_status(sample: Sample, tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            sample,
            {"path": str(sample.l2a_items_path)},
            bands=["B04", "SCL"],
            steps={"cloudmask": None},
        )
    )
    run(cfg)
    coll = cfg.catalog_dir / cfg.output.collection_id
    item_dir = next(p for p in coll.iterdir() if p.is_dir())
    (item_dir / "stray.tif").write_bytes(b"x")
    (coll / "S2X_NOT_LINKED").mkdir()
    st = catalog_status(cfg.catalog_dir)
    assert sorted(Path(p).name for p in st.orphans) == ["S2X_NOT_LINKED", "stray.tif"]
    report = check_catalog(cfg.catalog_dir)
    assert report.problems == ()  # the catalog itself is sound
    assert len(report.warnings) == 2 and all("not referenced" in w for w in report.warnings)


def test_status_of_something_that_is_not_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"no catalog\.json"):
        catalog_status(tmp_path)
