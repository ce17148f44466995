from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import pytest

from stac2cube.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_reference,
    load_config,
    to_dict,
)
from stac2cube.errors import ConfigError

BASE = {
    "source": {"api": "https://earth-search.aws.element84.com/v1"},
    "aoi": {"bbox": [11.0, 46.0, 11.1, 46.1]},
    "time": {"start": "2023-06-01", "end": "2023-06-30"},
}


def test_minimal_config_has_documented_defaults() -> None:
    cfg = config_from_dict(BASE)
    assert cfg.time.start == dt.date(2023, 6, 1)
    assert cfg.grid.crs == "auto" and cfg.grid.resolution == 10.0
    assert cfg.output.dtype == "int16"
    assert cfg.bands[0] == "B02" and "SCL" in cfg.bands
    assert cfg.time.interval == "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z"


def test_band_aliases_are_normalised() -> None:
    cfg = config_from_dict({**BASE, "bands": ["red", "b8", "nir08", "scl"]})
    assert cfg.bands == ("B04", "B08", "B8A", "SCL")


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"output": {"dtyp": "int16"}}, r"unknown config key output\.dtyp; did you mean 'dtype'"),
        ({"colour": 1}, "unknown config key colour"),
        ({"output": {"dtype": "int8"}}, r"output\.dtype: 'int8' is not one of"),
        ({"grid": {"resolution": "ten"}}, r"grid\.resolution: expected a number"),
        ({"grid": {"resolution": -10}}, "grid.resolution must be positive"),
        ({"time": {"start": "2023-07-01", "end": "2023-06-01"}}, "is before start"),
        ({"time": {"start": "June", "end": "2023-06-01"}}, "is not a date"),
        ({"aoi": {"bbox": [11.1, 46.0, 11.0, 46.1]}}, "west < east"),
        ({"aoi": {}}, "exactly one of `bbox` and `geojson`"),
        ({"source": {}}, "exactly one of `api`"),
        ({"source": {"path": "x", "max_cloud_cover": 120}}, "between 0 and 100"),
        ({"bands": ["B04", "B99"]}, "B99"),
        ({"output": {"cog_profile": "jpeg2000"}}, "not a rio-cogeo profile"),
        ({"run": {"strict": "maybe"}}, "expected true or false"),
        ({"bands": ["B04"], "steps": {"cloudmask": {}}}, "needs SCL: add SCL to `bands`"),
    ],
)
def test_bad_config_gives_a_message_that_names_the_key(patch: dict, match: str) -> None:
    data = {**BASE, **patch}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_missing_required_section() -> None:
    with pytest.raises(ConfigError, match="missing config key time"):
        config_from_dict({k: v for k, v in BASE.items() if k != "time"})


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "source: {path: items.json}\naoi: {bbox: [1, 2, 3, 4]}\n"
        "time: {start: 2020-01-01, end: 2020-02-01}\noutput: {catalog: out}\n"
    )
    cfg = load_config(p, ["output.dtype=float32", "grid.resolution=20", "run.strict=true"])
    assert cfg.output.dtype == "float32" and cfg.grid.resolution == 20.0 and cfg.run.strict
    assert cfg.catalog_dir == (tmp_path / "out").resolve()
    with pytest.raises(ConfigError, match="not of the form"):
        apply_overrides({}, ["output.dtype"])


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_options_added_later_leave_existing_hashes_alone() -> None:
    """An option added after catalogs existed (``since`` in its field) is left out of the hash
    while it keeps its default: upgrading stac2cube must not make every item stale. The pinned
    value is the hash that stac2cube 0.1.0 (before the multi-temporal cloud test) gave for its
    default cloud step, whose ``cirrus_threshold`` was 0.012 (the default is now off: a changed
    default changes the pixels, so it changes the hash, and such items are redone once)."""
    old_default = {"cloudmask": {"cirrus_threshold": 0.012}}
    cfg = config_from_dict({**BASE, "bands": ["B02", "B04", "SCL"], "steps": old_default})
    assert "temporal_threshold" not in cfg.processing_dict()["steps"]["cloudmask"]
    assert cfg.config_hash == (
        "sha256:0cd951f82a69522b7ece97121a7d1451caf0be6ffdc0ff614b1c7bde6663e542"
    )
    new_default = config_from_dict(
        {**BASE, "bands": ["B02", "B04", "SCL"], "steps": {"cloudmask": {}}}
    )
    assert new_default.config_hash != cfg.config_hash
    temporal = {"cloudmask": {"cirrus_threshold": 0.012, "temporal_threshold": 0.03}}
    on = config_from_dict({**BASE, "bands": ["B02", "B04", "SCL"], "steps": temporal})
    assert on.processing_dict()["steps"]["cloudmask"]["temporal_threshold"] == 0.03
    assert on.config_hash != cfg.config_hash
    # the full dump (provenance, `stac2cube config`) still shows every option
    assert "temporal_threshold" in to_dict(cfg)["steps"]["cloudmask"]


def test_temporal_cloud_test_needs_the_blue_band() -> None:
    temporal = {"cloudmask": {"temporal_threshold": 0.03}}
    with pytest.raises(ConfigError, match=r"temporal_threshold.*B02"):
        config_from_dict({**BASE, "bands": ["B04", "SCL"], "steps": temporal})


def test_config_hash_tracks_pixels_not_paths() -> None:
    a = config_from_dict(BASE)
    b = config_from_dict({**BASE, "output": {"catalog": "elsewhere"}})
    c = config_from_dict({**BASE, "output": {"dtype": "float32"}})
    d = config_from_dict({**BASE, "grid": {"resolution": 20}})
    assert a.config_hash == b.config_hash
    assert len({a.config_hash, c.config_hash, d.config_hash}) == 3
    assert a.config_hash.startswith("sha256:") and len(a.config_hash) == 7 + 64


SR_BANDS = ["B02", "B03", "B04", "B08", "SCL"]
HUB = {"hub_id": "tacofoundation/sen2sr", "revision": "abc123"}


def _sr(section: dict[str, object], base_dir: Path | str = ".") -> Config:
    data = {**BASE, "bands": SR_BANDS, "steps": {"superres": section}}
    return config_from_dict(data, base_dir=base_dir)


def test_execution_settings_are_not_in_the_hash() -> None:
    """How the work is done (device, batch size, memory bound, the input check, the Hub cache)
    leaves the hash alone; what shapes the pixels (fp16, tiling, the model's revision) does not."""
    base = _sr(HUB)
    same = [
        {"device": "cpu"},
        {"batch_size": 1},
        {"max_memory_mb": 256},
        {"check_inputs": False},
        {"cache_dir": "/elsewhere"},
        {"allow_download": True},
    ]
    for change in same:
        assert _sr({**HUB, **change}).config_hash == base.config_hash, change
    other = [
        {"half": True},
        {"tile_size": 64},
        {"overlap": 16},
        {"nodata_margin": 4},
        {"revision": "def456"},
    ]
    hashes = {_sr({**HUB, **change}).config_hash for change in other}
    assert len(hashes) == len(other) and base.config_hash not in hashes
    # the dump keeps every setting (provenance, `stac2cube config`)
    assert to_dict(base)["steps"]["superres"]["device"] == "auto"


def test_the_earlier_hash_rule_is_kept_as_legacy() -> None:
    """``legacy_config_hash`` is the hash stac2cube gave before execution-only settings and
    model content (pinned: the value the previous code computes for this config), so items
    written before stay recognisable. A config without such settings hashes the same under
    both rules."""
    sr = {**HUB, "device": "cpu", "batch_size": 4, "back_projection": True}
    steps = {"cloudmask": {"method": "scl"}, "coreg": {}, "superres": sr}
    cfg = config_from_dict({**BASE, "bands": SR_BANDS, "steps": steps})
    assert cfg.legacy_config_hash == (
        "sha256:d3ee0bfbbd0f17116c4338e8318145cc87887237439827b7228e64836a98b011"
    )
    assert cfg.config_hash != cfg.legacy_config_hash
    plain = config_from_dict({**BASE, "steps": {"cloudmask": {}, "coreg": {}}})
    assert plain.config_hash == plain.legacy_config_hash


def test_model_weights_enter_the_hash_by_content(tmp_path: Path) -> None:
    """A bundle (or weights file) moved elsewhere keeps the hash; the same folder with other
    weights changes it; a model that cannot be read is a ConfigError naming the key."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from stac2cube.steps import superres as sm

    def tiny(seed: int) -> sm.ModelWeights:
        d = sm.model_definition("rgbn_x4", tile_size=64, feature_channels=4, num_blocks=1)
        return sm.random_model(d, seed=seed)

    sm.write_bundle(tiny(1), tmp_path / "a")
    sr = {"bundle": "a", "tile_size": 64, "overlap": 16}
    first = _sr(sr, tmp_path)
    assert "weight_files" in first.hashed_content["superres"]  # read now, before the move
    (tmp_path / "models").mkdir()
    (tmp_path / "a").rename(tmp_path / "models" / "b")
    moved = _sr({**sr, "bundle": str(tmp_path / "models" / "b")}, tmp_path)
    assert moved.config_hash == first.config_hash
    assert moved.legacy_config_hash != first.legacy_config_hash  # the earlier rule: by path
    sm.write_bundle(tiny(2), tmp_path / "models" / "b")  # replaced in place
    replaced = _sr({**sr, "bundle": "models/b"}, tmp_path)
    assert replaced.config_hash != first.config_hash
    assert replaced.legacy_config_hash == _sr({**sr, "bundle": "models/b"}).legacy_config_hash

    f = sm.save_weights(tiny(1), tmp_path / "w" / "tiny.safetensors")
    single = {"weights": str(f), "architecture": "CNNSR", "tile_size": 64, "overlap": 16}
    one = _sr(single)
    assert one.hashed_content["superres"]["weight_files"].keys() == {"weights"}
    renamed = f.rename(tmp_path / "elsewhere.safetensors")
    assert _sr({**single, "weights": str(renamed)}).config_hash == one.config_hash
    sm.save_weights(tiny(3), renamed)
    assert _sr({**single, "weights": str(renamed)}).config_hash != one.config_hash

    with pytest.raises(ConfigError, match=r"steps\.superres\.bundle: cannot read the model"):
        _ = _sr({**sr, "bundle": "nowhere"}, tmp_path).config_hash


def test_config_is_frozen() -> None:
    cfg = config_from_dict(BASE)
    with pytest.raises(AttributeError):
        cfg.bands = ("B04",)  # type: ignore[misc]
    assert isinstance(cfg, Config)


def test_config_pickles_as_itself_and_stays_read_only() -> None:
    """A config travels to Dask workers as itself (SceneTask): every section, the radiometry
    overrides and every step's section included; its mappings stay read-only."""
    data = {
        **BASE,
        "radiometry": {"overrides": {"sentinel-2-l2a": {"scale": 1e-4, "offset": 0.0}}},
        "steps": {"cloudmask": {}, "coreg": {"match_band": "B08"}},
    }
    cfg = config_from_dict(data, base_dir="/some/where")
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.config_hash == cfg.config_hash
    assert (
        again.base_dir == cfg.base_dir and again.radiometry.overrides["sentinel-2-l2a"].offset == 0
    )
    with pytest.raises(TypeError):
        cfg.radiometry.overrides["other"] = cfg.radiometry.overrides["sentinel-2-l2a"]  # type: ignore[index]


def test_docs_configuration_reference_is_current() -> None:
    doc = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert doc.read_text() == config_reference(), "run `make docs-reference`"
    for key in ("source.api", "aoi.bbox", "output.dtype", "radiometry.overrides"):
        assert f"`{key}`" in doc.read_text()
