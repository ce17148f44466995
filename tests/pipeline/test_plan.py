"""Planning across the configuration hash's two rules: an item written before execution-only
settings and model content entered the hash stays up to date, until its model's files or a
pixel-shaping setting change; an item written after keeps its hash when only execution settings
or the model's folder change. Real runs of one sample scene with a tiny random-weight bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from stac2cube import load_config, run
from stac2cube.catalog import CatalogStore
from stac2cube.catalog.index import read_index_table, write_index
from stac2cube.config import Config
from stac2cube.pipeline.plan import PLAN_COLUMNS, available_references, unchanged_check
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config

pytest.importorskip("torch")
pytest.importorskip("sen2sr")

from stac2cube.steps import superres as sm

BANDS = ["B02", "B03", "B04", "B08", "SCL"]
SR = {"bundle": "bundle", "tile_size": 64, "overlap": 16}


def _write_bundle(folder: Path, seed: int) -> None:
    d = sm.model_definition("rgbn_x4", tile_size=64, feature_channels=4, num_blocks=1)
    sm.write_bundle(sm.random_model(d, seed=seed), folder, model_id="tiny-rgbn")


def _with_superres(path: Path, **changes: Any) -> Config:
    """The config at ``path`` with other ``steps.superres`` settings."""
    doc = yaml.safe_load(path.read_text())
    doc["steps"]["superres"] = {**SR, **changes}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def _only_item(cfg: Config) -> dict[str, Any]:
    (item,) = CatalogStore(cfg.catalog_dir, cfg.output.collection_id).iter_items()
    return item


def _written_because(cfg: Config) -> str | None:
    """Why the last run replaced the catalog's one item (None: it did not)."""
    replaced = _only_item(cfg)["properties"].get("stac2cube:replaces") or [{}]
    reason: str | None = replaced[0].get("reason")
    return reason


def _index_says_unchanged(cfg: Config, item_id: str, source: dict[str, Any]) -> bool:
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    index = read_index_table(store, columns=PLAN_COLUMNS)
    assert index is not None
    return unchanged_check(cfg, store, index, available_references(cfg, store))(source)


def test_items_of_the_earlier_hash_rule_stay_up_to_date(sample: Sample, tmp_path: Path) -> None:
    _write_bundle(tmp_path / "bundle", seed=1)
    start = sample.scenes[0].l2a_item["properties"]["datetime"][:10]
    path = write_config(
        tmp_path,
        sample,
        {"path": str(sample.l2a_items_path)},
        bands=BANDS,
        steps={"superres": SR},
        time={"start": start, "end": start},
        run={"executor": "serial"},
    )
    cfg = load_config(path)
    assert run(cfg).written == 1
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    item = _only_item(cfg)
    assert item["properties"]["stac2cube:config_hash"] == cfg.config_hash
    source = sample.scenes[0].l2a_item

    # an item as stac2cube wrote it before: the hash of the earlier rule, in its JSON and index
    assert cfg.legacy_config_hash != cfg.config_hash
    item["properties"]["stac2cube:config_hash"] = cfg.legacy_config_hash
    store.item_path(item["id"]).write_text(json.dumps(item))
    write_index(store)
    assert _index_says_unchanged(cfg, item["id"], source)
    again = run(load_config(path))
    assert again.written == 0 and again.count("skipped") == 1, again

    # the model's weights replaced in place: the earlier rule cannot see it, the step's record
    # of the weight files does
    _write_bundle(tmp_path / "bundle", seed=2)
    assert not _index_says_unchanged(load_config(path), item["id"], source)
    assert run(load_config(path)).written == 1
    assert _written_because(cfg) == "stale: other processing configuration"
    assert _only_item(cfg)["properties"]["stac2cube:config_hash"] == load_config(path).config_hash

    # execution settings and the bundle's folder are not in the hash (the item's own rule)
    shutil.move(tmp_path / "bundle", tmp_path / "models")
    moved = _with_superres(
        path, bundle="models", device="cpu", batch_size=2, max_memory_mb=512, check_inputs=False
    )
    assert _index_says_unchanged(moved, item["id"], source)
    assert run(moved).written == 0

    # what shapes the pixels still does: the weights, and the tiling
    _write_bundle(tmp_path / "models", seed=3)
    assert run(_with_superres(path, bundle="models")).written == 1
    assert _written_because(cfg) == "stale: other processing configuration"
    assert run(_with_superres(path, bundle="models", overlap=8)).written == 1
    assert run(_with_superres(path, bundle="models", overlap=8)).written == 0
