"""The step registry: a toy step installed as another package would install it (a module and its
dist-info with an entry point) is found, configured, hashed, pickled and run like stac2cube's own;
an unknown step is a clear error."""

from __future__ import annotations

import importlib
import pickle
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube import load_config, run
from stac2cube.catalog import CatalogStore
from stac2cube.check import check_catalog
from stac2cube.config import config_from_dict, config_reference
from stac2cube.errors import ConfigError
from stac2cube.fields import to_dict
from stac2cube.sample import Sample
from stac2cube.steps import builtin, superres
from stac2cube.steps.base import Scene, Step
from stac2cube.steps.registry import (
    StepPlugin,
    clear_registry_cache,
    get_step,
    register_step,
    registered_steps,
    unregister_step,
)
from stac2cube.testing.configs import write_config

DOCS = Path(__file__).parents[2] / "docs" / "steps.md"

TOY_STEP = '''\
"""toy_step: a stac2cube step that flags bright pixels (the class layer ``BRIGHT``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stac2cube.errors import ConfigError, StepError
from stac2cube.fields import doc
from stac2cube.provenance import StepRecord
from stac2cube.steps.base import AuxRequest, LayerInfo, Scene, StepResult
from stac2cube.steps.registry import StepPlugin


@dataclass(frozen=True)
class ToyConfig:
    """Flag pixels brighter than a threshold (``steps.toy``)."""

    band: str = doc("The band compared with `threshold`.", "B03")
    threshold: float = doc("Reflectance above which a pixel is bright.", 0.3)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 2.0:
            raise ConfigError(f"steps.toy.threshold must be in (0, 2), got {self.threshold}")


class ToyStep:
    """Adds the class layer ``BRIGHT``: 0 nodata, 1 dark, 2 bright."""

    name = "toy"
    version = "0.1.0"

    def prepare(self, cfg: ToyConfig) -> None:
        """Nothing to load (a step with a model loads it here, once per worker)."""

    def required_aux(self, cfg: ToyConfig) -> Mapping[str, AuxRequest]:
        return {}  # only scene.bands

    def run(self, scene: Scene, cfg: ToyConfig) -> StepResult:
        if cfg.band not in scene.bands:
            raise StepError(f"{scene.item_id}: steps.toy needs {cfg.band}: add it to `bands`")
        a = scene.bands[cfg.band]
        valid = np.isfinite(a)
        layer = np.where(valid, np.where(a > cfg.threshold, 2, 1), 0).astype(np.uint8)
        info = LayerInfo(classes={1: "dark", 2: "bright"}, description="Bright pixels")
        bright = float((layer == 2).sum() / max(int(valid.sum()), 1))
        record = StepRecord(
            self.name,
            self.version,
            parameters={"band": cfg.band, "threshold": cfg.threshold},
            results={"bright_fraction": round(bright, 6)},
        )
        new = scene.replace(
            classes={**scene.classes, "BRIGHT": layer},
            layer_info={**scene.layer_info, "BRIGHT": info},
        )
        return StepResult(new, record)


def _for_run(cfg: ToyConfig, config: Any) -> tuple[ToyStep, ToyConfig]:
    return ToyStep(), cfg


PLUGIN = StepPlugin(
    name="toy",
    config=ToyConfig,
    factory=_for_run,
    order=40,  # after stac2cube's own steps (10, 20, 30)
    doc="Flags bright pixels as the class layer `BRIGHT` (the example of docs/steps.md).",
)
'''
"""The toy step's package: one module (docs/steps.md shows it as it is here)."""

BASE = {
    "source": {"api": "https://earth-search.aws.element84.com/v1"},
    "aoi": {"bbox": [11.0, 46.0, 11.1, 46.1]},
    "time": {"start": "2023-06-01", "end": "2023-06-30"},
}
OWN = ["cloudmask", "coreg", "nbar", "superres", "quality"]


def _install(root: Path, entry_points: str) -> None:
    """``toy_step.py`` and the dist-info pip would write for it, under ``root``."""
    (root / "toy_step.py").write_text(TOY_STEP)
    info = root / "toy_step-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-step\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[stac2cube.steps]\n{entry_points}\n")


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The toy step installed in ``tmp_path``, put on ``sys.path``; gone after the test."""
    _install(tmp_path, "toy = toy_step:PLUGIN")
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_registry_cache()
    yield importlib.import_module("toy_step")
    clear_registry_cache()
    sys.modules.pop("toy_step", None)


def test_own_steps_are_entry_points_in_run_order() -> None:
    assert [p.name for p in registered_steps()] == OWN
    assert get_step("cloudmask") is builtin.CLOUDMASK and get_step("coreg") is builtin.COREG
    assert get_step("superres") is superres.PLUGIN
    assert [p.order for p in registered_steps()] == [10, 20, 25, 30, 90]


def test_toy_step_is_found_through_its_entry_point(toy: ModuleType) -> None:
    # the toy step (order 40) runs after superres (30), before quality (90)
    assert [p.name for p in registered_steps()] == [*OWN[:4], "toy", "quality"]
    plugin = get_step("toy")
    assert plugin is toy.PLUGIN and plugin.config is toy.ToyConfig
    assert isinstance(toy.ToyStep(), Step)
    assert pickle.loads(pickle.dumps(plugin)) is plugin  # a plug-in travels by name


def test_toy_section_parses_hashes_round_trips_and_pickles(toy: ModuleType) -> None:
    cfg = config_from_dict({**BASE, "steps": {"toy": {"threshold": 0.25}}})
    section = cfg.steps.plugins["toy"]
    assert section == toy.ToyConfig(threshold=0.25)
    assert cfg.steps.configured() == [(toy.PLUGIN, section)]
    d = to_dict(cfg)
    assert d["steps"]["toy"] == {"band": "B03", "threshold": 0.25}
    again = config_from_dict(d)
    assert again == cfg and again.config_hash == cfg.config_hash
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    other = config_from_dict({**BASE, "steps": {"toy": {"threshold": 0.3}}})
    assert len({cfg.config_hash, other.config_hash, config_from_dict(BASE).config_hash}) == 3
    with pytest.raises(ConfigError, match=r"steps\.toy\.threshold must be in"):
        config_from_dict({**BASE, "steps": {"toy": {"threshold": 5}}})
    with pytest.raises(ConfigError, match=r"unknown config key steps\.toy\.treshold"):
        config_from_dict({**BASE, "steps": {"toy": {"treshold": 0.2}}})
    reference = config_reference()
    assert "## `steps.toy`" in reference and "| `steps.toy.threshold` | float |" in reference


def test_configured_steps_run_in_rank_order(toy: ModuleType) -> None:
    steps = {"toy": {}, "superres": {"bundle": "b"}, "cloudmask": {}}
    cfg = config_from_dict({**BASE, "steps": steps})
    assert [p.name for p, _ in cfg.steps.configured()] == ["cloudmask", "superres", "toy"]
    # the typed sections (set or not), then the plug-ins' sections that are set
    assert list(to_dict(cfg)["steps"]) == ["cloudmask", "coreg", "superres", "toy"]


def test_toy_step_runs(toy: ModuleType) -> None:
    config = config_from_dict({**BASE, "steps": {"toy": {"band": "B04", "threshold": 0.2}}})
    [(plugin, section)] = config.steps.configured()
    step, cfg = plugin.build(section, config)
    step.prepare(cfg)
    g = GeoBox((2, 2), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), "EPSG:32633")
    red = np.array([[0.1, 0.3], [np.nan, 0.25]], np.float32)
    result = step.run(Scene("s", g, {"B04": red}), cfg)
    assert result.write and result.skip is None
    np.testing.assert_array_equal(result.scene.classes["BRIGHT"], [[1, 2], [0, 2]])
    assert result.record.results["bright_fraction"] == pytest.approx(2 / 3, abs=1e-6)


def test_toy_step_runs_through_the_pipeline(
    toy: ModuleType, sample: Sample, tmp_path: Path
) -> None:
    """Installed, the toy runs in a real run after stac2cube's own step: its layer is a COG
    asset with its classes, its record is in the provenance, the catalog checks clean."""
    path = write_config(
        tmp_path,
        sample,
        {"path": str(sample.l2a_items_path)},
        bands=["B02", "B03", "B04", "B08", "SCL"],
        steps={"cloudmask": {"l1c": "never"}, "toy": {"band": "B03", "threshold": 0.1}},
        run={"executor": "serial"},
    )
    summary = run(load_config(path))
    assert summary.written == len(sample.scenes) and summary.failed == 0, summary
    store = CatalogStore.open(summary.catalog)
    for item_id in store.item_ids():
        item = store.read_item(item_id)
        assert item is not None
        asset = item["assets"]["BRIGHT"]
        classes = {c["value"]: c["name"] for c in asset["classification:classes"]}
        assert classes == {0: "no_data", 1: "dark", 2: "bright"}
        steps = [s["name"] for s in item["properties"]["stac2cube:steps"]]
        assert steps == ["harmonise", "cloudmask", "toy"]
        bright = item["properties"]["stac2cube:steps"][-1]["results"]["bright_fraction"]
        assert 0.0 < bright < 1.0
    assert check_catalog(summary.catalog).problems == ()


def test_unknown_step_names_the_registered_ones(toy: ModuleType) -> None:
    registered = r"\(registered steps: cloudmask, coreg, nbar, superres, toy, quality\)"
    with pytest.raises(ConfigError, match=r"unknown config key steps\.toi; did you mean 'toy'\? "):
        config_from_dict({**BASE, "steps": {"toi": {}}})
    with pytest.raises(ConfigError, match=registered):
        config_from_dict({**BASE, "steps": {"denoise": {}}})


def test_unknown_step_without_the_toy() -> None:
    with pytest.raises(
        ConfigError, match=r"\(registered steps: cloudmask, coreg, nbar, superres, quality\)"
    ):
        config_from_dict({**BASE, "steps": {"toy": {}}})


def test_register_step_at_run_time(toy: ModuleType) -> None:
    plugin = StepPlugin("toy2", toy.ToyConfig, toy.PLUGIN.factory, 5, "The toy, earlier.")
    with pytest.raises(ConfigError, match="already registered"):
        register_step(StepPlugin("toy", toy.ToyConfig, toy.PLUGIN.factory, 5, "Another toy."))
    try:
        assert register_step(plugin) is plugin
        assert [p.name for p in registered_steps()][:2] == ["toy2", "cloudmask"]
        cfg = config_from_dict({**BASE, "steps": {"toy2": {}, "toy": {}}})
        assert [p.name for p, _ in cfg.steps.configured()] == ["toy2", "toy"]
        with pytest.raises(ConfigError, match="built a step named 'toy'"):
            plugin.build(cfg.steps.plugins["toy2"], cfg)
    finally:
        unregister_step("toy2")
    assert "toy2" not in [p.name for p in registered_steps()]


def test_a_broken_plugin_is_left_out_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, "toy = toy_step:ToyStep\nlost = toy_step_gone:PLUGIN")
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_registry_cache()
    try:
        assert [p.name for p in registered_steps()] == OWN
        with pytest.raises(ConfigError, match=r"toy_step:ToyStep is not a StepPlugin named 'toy'"):
            get_step("toy")
        with pytest.raises(ConfigError, match=r"steps\.lost: .* does not load: ModuleNotFound"):
            config_from_dict({**BASE, "steps": {"lost": {}}})
    finally:
        clear_registry_cache()
        sys.modules.pop("toy_step", None)


def test_docs_show_the_toy_step() -> None:
    """docs/steps.md shows the toy module exactly as this test installs it."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert TOY_STEP in blocks
