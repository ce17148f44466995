"""The super-resolution step: SEN2SR architectures with small random weights, saved to and loaded
from the bundle format a user would use, run over generated scenes and constructed rectangles."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from stac2cube.config import config_from_dict
from stac2cube.errors import ConfigError, StepError
from stac2cube.sample import Sample
from stac2cube.sample.scenes import scene_from_sample
from stac2cube.steps.base import Scene, Step, StepResult

torch = pytest.importorskip("torch")
pytest.importorskip("sen2sr")
pytest.importorskip("safetensors")

from stac2cube.steps import superres as sm  # noqa: E402
from stac2cube.steps.superres import (  # noqa: E402
    PLUGIN,
    SuperResConfig,
    SuperResStep,
    TileGrid,
    back_project,
    clear_model_cache,
    consistency_error,
    layer_key,
    load_model,
)

STEP = SuperResStep()
TINY = {"feature_channels": 4, "num_blocks": 1}
"""A CNNSR small enough for fast tests (the published Lite one is 24 channels, 6 blocks)."""
TILE, OVERLAP = 64, 16


def _tiny(kind: str, seed: int = 1) -> sm.ModelWeights:
    d = sm.model_definition(
        kind,
        tile_size=TILE,
        feature_channels=TINY["feature_channels"],
        num_blocks=TINY["num_blocks"],
    )
    return sm.random_model(d, seed=seed)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random-weight bundle per model kind, written as a user's bundle would be."""
    root = tmp_path_factory.mktemp("bundles")
    return {k: sm.write_bundle(_tiny(k), root / k) for k in sm.MODEL_KINDS}


@pytest.fixture(scope="module")
def sample_scene(sample: Sample) -> Scene:
    """Date 0 of the generated sample (no nodata), the ten SEN2SR bands on its 10 m grid."""
    return scene_from_sample(sample, 0, bands=sm.FULL_BANDS, toa_resolution=None).scene


@pytest.fixture(scope="module")
def wedge_scene(sample: Sample) -> Scene:
    """The last date of the sample: a swath-edge nodata wedge in its upper right."""
    n = len(sample.scenes) - 1
    return scene_from_sample(sample, n, bands=sm.FULL_BANDS, toa_resolution=None).scene


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_model_cache()


def _run(scene: Scene, cfg: SuperResConfig) -> StepResult:
    """What the pipeline does on a worker: prepare the step once (loads the model), then run."""
    STEP.prepare(cfg)
    return STEP.run(scene, cfg)


def _cfg(bundle: Path, kind: str = "rgbn_x4", **kw: object) -> SuperResConfig:
    base: dict[str, object] = {"tile_size": TILE, "overlap": OVERLAP}
    base.update(kw)
    return SuperResConfig(model=kind, bundle=str(bundle), **base)  # type: ignore[arg-type]


def _crop(scene: Scene, h: int, w: int, x0: int = 0) -> Scene:
    sl = (slice(0, h), slice(x0, x0 + w))
    return scene.replace(bands={b: a[sl] for b, a in scene.bands.items()}, geobox=scene.geobox[sl])


def _rect_scene(h: int, w: int, seed: int = 0) -> Scene:
    """Smooth, plausible reflectance on a ``h x w`` 10 m grid."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    g = GeoBox((h, w), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), "EPSG:32633")
    bands = {}
    for b in sm.FULL_BANDS:
        t = ndimage.gaussian_filter(rng.random((h, w)), 1.5)
        bands[b] = (0.01 + 0.35 * (t - t.min()) / (t.max() - t.min())).astype(np.float32)
    return Scene("rect", g, bands)


# ------------------------------------------------------------------------------ configuration


def test_step_follows_the_protocol() -> None:
    assert isinstance(STEP, Step)
    assert STEP.required_aux(SuperResConfig()) == {}
    assert SuperResConfig().input_bands == ("B04", "B03", "B02", "B08")
    assert SuperResConfig(model="swir_x2").scale == 1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"model": "rgb_x8"}, "model"),
        ({"variant": "gan"}, "variant"),
        ({"bundle": "a", "hub_id": "b/c"}, "only one"),
        ({"weights": "w.safetensors"}, "together"),
        ({"weights": "w", "architecture": "UNet"}, "architecture"),
        ({"weights": "w", "architecture": "Swin2SR"}, "does not match"),
        ({"allow_download": True}, "hub_id"),
        ({"tile_size": 100}, "multiple of 16"),
        ({"overlap": 80}, "overlap"),
        ({"overlap": 10}, "multiple of 4"),
        ({"batch_size": 0}, "batch_size"),
        ({"half": True, "device": "cpu"}, "GPU"),
        ({"device": "tpu"}, "device"),
        ({"max_memory_mb": 8}, "max_memory_mb"),
        ({"nodata_margin": -1}, "nodata_margin"),
    ],
)
def test_invalid_config_is_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SuperResConfig(**kw)  # type: ignore[arg-type]


def test_no_model_configured_is_a_clear_error(sample_scene: Scene) -> None:
    with pytest.raises(StepError, match="has no model"):
        STEP.prepare(SuperResConfig(device="cpu"))


def test_run_uses_the_prepared_model_and_does_no_io(
    tmp_path: Path, bundles: dict[str, Path]
) -> None:
    """prepare loads the model; run needs it, reads no file, and refuses another model."""
    step = SuperResStep()
    scene = _rect_scene(20, 20)
    folder = tmp_path / "b"
    shutil.copytree(bundles["rgbn_x4"], folder)
    cfg = _cfg(folder)
    with pytest.raises(StepError, match=r"call step\.prepare\(cfg\)"):
        step.run(scene, cfg)
    step.prepare(cfg)
    shutil.rmtree(folder)
    clear_model_cache()
    assert step.run(scene, cfg).record.results["tiles"] == 1
    other = step.run(scene, dataclasses.replace(cfg, overlap=8, back_projection=False))
    assert other.record.parameters["overlap"] == 8  # run-time options need no new model
    with pytest.raises(StepError, match="prepared for another model"):
        step.run(scene, _cfg(bundles["swir_x2"], "swir_x2"))
    # a step sent to another process leaves its model behind: prepare it there
    with pytest.raises(StepError, match="prepare"):
        pickle.loads(pickle.dumps(step)).run(scene, cfg)


def test_plugin_resolves_local_paths_against_the_config_file(tmp_path: Path) -> None:
    config = config_from_dict(
        {
            "source": {"api": "https://earth-search.aws.element84.com/v1"},
            "aoi": {"bbox": [11.0, 46.0, 11.1, 46.1]},
            "time": {"start": "2023-06-01", "end": "2023-06-30"},
            "steps": {"superres": {"bundle": "models/rgbn"}},
        },
        base_dir=tmp_path,
    )
    [(plugin, section)] = config.steps.configured()
    assert plugin is PLUGIN and section == config.steps.superres
    step, cfg = plugin.build(section, config)
    assert isinstance(step, SuperResStep) and isinstance(step, Step)
    assert cfg.bundle == str(tmp_path.resolve() / "models" / "rgbn")


# ------------------------------------------------------------------------------ models, bundles


def test_published_lite_architecture_size() -> None:
    """The published SEN2SR-Lite RGBN x4 network: CNNSR(4, 4, 24, 4, True, False, 6)."""
    d = sm.model_definition("rgbn_x4")
    net = sm.build_network(d.components[0])
    assert sum(p.numel() for p in net.parameters()) == 572_336
    assert d.receptive_radius() == 23


def test_bundle_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    w = _tiny("rgbn_x4", seed=3)
    folder = sm.write_bundle(w, tmp_path / "b", model_id="tiny_rgbn")
    item = json.loads((folder / "mlm.json").read_text())
    assert item["type"] == "Feature" and sm.MLM_SCHEMA in item["stac_extensions"]
    props = item["properties"]
    assert props["mlm:tasks"] == ["super-resolution"] and props["mlm:framework"] == "pytorch"
    assert [b["name"] for b in props["mlm:input"][0]["bands"]] == list(sm.RGBN_BANDS)
    assert props["mlm:output"][0]["result"]["shape"] == [-1, 4, 4 * TILE, 4 * TILE]
    assert {"model", "hard_constraint"} <= set(item["assets"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "hard_constraint.safetensor", "mlm.json", "model.safetensor",
    ]  # fmt: skip

    loaded = sm.load_bundle(folder, kind="rgbn_x4", variant="lite", tile_size=TILE)
    direct = sm.assemble(w, tile_size=TILE, device="cpu")
    x = torch.rand(2, 4, TILE, TILE) * 0.3
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), direct(x))
    assert loaded.model_id == "tiny_rgbn" and len(loaded.weights_sha256) == 64
    assert set(loaded.weight_files) == {"model.safetensor", "hard_constraint.safetensor"}

    # the single-file form (weights + architecture)
    f = sm.save_weights(w, tmp_path / "tiny.safetensors")
    one = sm.load_weights_file(f, "CNNSR", kind="rgbn_x4", variant="lite", tile_size=TILE)
    with torch.inference_mode():
        assert torch.equal(one.module(x), direct(x))


def test_released_bundle_layout_loads_without_running_its_code(tmp_path: Path) -> None:
    """A bundle as mlstac downloads it (no architecture description, a load.py beside the
    weights) is built from sen2sr's classes with parameters read off the weights; its load.py
    runs only with trust_remote_code."""
    w = _tiny("rgbn_x4", seed=4)
    folder = sm.write_bundle(w, tmp_path / "released")
    item = json.loads((folder / "mlm.json").read_text())
    del item["properties"]["mlm:hyperparameters"]
    (folder / "mlm.json").write_text(json.dumps(item))
    marker = tmp_path / "load_py_ran"
    (folder / "load.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "def compiled_model(path, device='cpu'):\n"
        "    raise RuntimeError('remote code')\n"
    )
    loaded = sm.load_bundle(folder, kind="rgbn_x4", variant="lite", tile_size=TILE)
    assert not marker.exists()
    assert loaded.definition.components[0].params["feature_channels"] == TINY["feature_channels"]
    x = torch.rand(1, 4, TILE, TILE) * 0.3
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), sm.assemble(w, tile_size=TILE, device="cpu")(x))
    with pytest.raises(sm.ModelLoadError, match="holds a rgbn_x4 model"):
        sm.load_bundle(folder, kind="swir_x2", variant="lite", tile_size=TILE)
    with pytest.raises(sm.ModelLoadError, match="trust_remote_code"):
        sm.load_bundle(folder, kind="rgbn_x4", variant="mamba", tile_size=TILE)
    with pytest.raises(sm.ModelLoadError, match="remote code"):
        sm.load_bundle(
            folder, kind="rgbn_x4", variant="lite", tile_size=128, trust_remote_code=True
        )
    assert marker.exists()


def test_corrupt_or_missing_weights_are_clear_errors(
    tmp_path: Path, bundles: dict[str, Path]
) -> None:
    folder = tmp_path / "b"
    shutil.copytree(bundles["rgbn_x4"], folder)
    (folder / "model.safetensor").write_bytes(b"\x00not a safetensors file" * 10)
    with pytest.raises(sm.ModelLoadError, match="corrupt or not a safetensors"):
        sm.load_bundle(folder, kind="rgbn_x4", variant="lite", tile_size=TILE)
    data = (bundles["rgbn_x4"] / "model.safetensor").read_bytes()
    (folder / "model.safetensor").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(StepError, match="corrupt"):
        STEP.prepare(_cfg(folder))
    (folder / "model.safetensor").unlink()
    with pytest.raises(sm.ModelLoadError, match=r"lacks model\.safetensor"):
        sm.load_bundle(folder, kind="rgbn_x4", variant="lite", tile_size=TILE)
    with pytest.raises(sm.ModelLoadError, match=r"no mlm\.json"):
        sm.load_bundle(tmp_path, kind="rgbn_x4", variant="lite")
    # weights of another size than the bundle states
    other = sm.write_bundle(_tiny("rgbn_x4"), tmp_path / "other")
    big = sm.random_model(sm.model_definition("rgbn_x4", feature_channels=8, num_blocks=1))
    sm.write_bundle(big, tmp_path / "big")
    shutil.copy(tmp_path / "big" / "model.safetensor", other / "model.safetensor")
    with pytest.raises(sm.ModelLoadError, match="do not fit"):
        sm.load_bundle(other, kind="rgbn_x4", variant="lite", tile_size=TILE)


def test_transformer_variants_need_timm() -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(sm.ModelLoadError, match="timm"):
            sm.random_model(sm.model_definition("rgbn_x4", "swin"))
    else:  # pragma: no cover - timm not installed here
        pytest.skip("timm is installed")


# ------------------------------------------------------------------------------ the step


@pytest.mark.parametrize("kind", sm.MODEL_KINDS)
def test_each_model_runs_on_any_rectangle(kind: str, bundles: dict[str, Path]) -> None:
    """37 x 53 pixels: smaller than a tile, not square, odd sides."""
    scene = _rect_scene(37, 53)
    res = _run(scene, _cfg(bundles[kind], kind))
    s = 1 if kind == "swir_x2" else 4
    outs = sm.model_definition(kind).output_bands
    assert set(res.scene.layers) == {layer_key(b) for b in outs}
    for b in outs:
        layer = res.scene.layers[layer_key(b)]
        assert layer.band == b and layer.data.dtype == np.float32
        assert layer.data.shape == (37 * s, 53 * s)
        assert np.isfinite(layer.data).all()
        assert layer.geobox.shape.yx == (37 * s, 53 * s)
        assert abs(layer.geobox.resolution.x) == pytest.approx(10.0 / s)
        assert layer.geobox.extent.boundingbox == scene.geobox.extent.boundingbox
        assert "SEN2SR" in layer.description
    r = res.record
    assert r.name == "superres" and r.parameters["model"] == kind
    assert r.results["tiles"] == 1 and r.results["device"] == "cpu"
    assert r.results["model_source"].startswith("bundle:")
    assert set(r.results["consistency_rel_error"]) == set(outs)
    json.dumps(r.to_dict())  # provenance must serialise
    assert scene.layers == {}  # the input scene is not modified


def test_tiled_equals_untiled(sample_scene: Scene, bundles: dict[str, Path]) -> None:
    """A scene that fits one tile, run as one tile and as 3 x 3 overlapping tiles: no seams."""
    scene = _crop(sample_scene, 96, 96)
    one = _run(scene, _cfg(bundles["rgbn_x4"], tile_size=128, overlap=32))
    assert one.record.results["tiles"] == 1
    tiled = _run(scene, _cfg(bundles["rgbn_x4"], tile_size=64, overlap=32))
    assert tiled.record.results["tiles"] == 9
    for k, layer in one.scene.layers.items():
        diff = np.abs(layer.data - tiled.scene.layers[k].data)
        assert float(diff.max()) < 5e-4 and float(diff.mean()) < 1e-5, k
    coarse = _run(scene, _cfg(bundles["rgbn_x4"], tile_size=48, overlap=16))
    for k, layer in one.scene.layers.items():
        assert float(np.abs(layer.data - coarse.scene.layers[k].data).max()) < 2e-3, k


def test_tile_weights_are_a_partition_of_unity() -> None:
    for size, tile, overlap, align in [
        (37, 64, 16, 1),
        (53, 64, 16, 2),
        (300, 64, 16, 2),
        (129, 32, 8, 1),
    ]:
        g = TileGrid.make(size, tile, overlap, align)
        for s in (1, 4):
            total = np.zeros(size * s)
            for i in range(g.count):
                ts, ss = g.span(i, s)
                total[ss] += g.weights(i, s)[ts]
            np.testing.assert_allclose(total, 1.0, atol=1e-6)
        assert g.lead % align == 0 and g.step % align == 0


def test_hard_constraint_keeps_the_10m_content(
    sample_scene: Scene, bundles: dict[str, Path]
) -> None:
    """Averaged back to 10 m the output is the input to a few %, even with random weights: not
    much more than what bicubic upsampling alone gives back (the hard constraint takes the low
    frequencies from it); the network's own output (no constraint) is far from it."""
    scene = _crop(sample_scene, 96, 120)
    res = _run(scene, _cfg(bundles["rgbn_x4"], back_projection=False))
    errs = res.record.results["consistency_rel_error"]
    for b, err in errs.items():
        lr = torch.from_numpy(scene.bands[b])[None, None]
        up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", antialias=True)
        floor = consistency_error(up[0, 0].numpy(), scene.bands[b], 4)
        assert floor is not None and err < max(2 * floor, 0.01) and err < 0.08, (b, err, floor)
    assert res.record.results["consistency_rel_error_max"] == max(errs.values())
    model = load_model(_cfg(bundles["rgbn_x4"]), "cpu")
    net: Any = model.module.sr_model
    x = np.stack([scene.bands[b] for b in sm.RGBN_BANDS])[None, :, :64, :64]
    with torch.inference_mode():
        raw = net(torch.from_numpy(np.ascontiguousarray(x))).numpy()[0]
    raw_err = consistency_error(raw[0], x[0, 0], 4)
    assert raw_err is not None and raw_err > 5 * max(errs.values())


@pytest.mark.parametrize("kind", ["rgbn_x4", "swir_x2"])
def test_back_projection_gives_the_input_back_under_block_averaging(
    kind: str, sample_scene: Scene, bundles: dict[str, Path]
) -> None:
    """With ``back_projection`` (the default) every band's block means are the input's; the
    record keeps the error of the network alone, the same as a run without it."""
    scene = _crop(sample_scene, 48, 64)
    scene.bands["B04"][10:14, 20:30] = np.nan  # nodata: its blocks stay NaN, the rest is exact
    on = _run(scene, _cfg(bundles[kind], kind))
    off = _run(scene, _cfg(bundles[kind], kind, back_projection=False))
    r_on, r_off = on.record.results, off.record.results
    assert r_on["consistency_rel_error_before_back_projection"] == r_off["consistency_rel_error"]
    assert max(r_off["consistency_rel_error"].values()) > 1e-3
    assert max(r_on["consistency_rel_error"].values()) < 1e-5, r_on["consistency_rel_error"]
    assert "consistency_rel_error_before_back_projection" not in r_off
    for key, layer in on.scene.layers.items():
        np.testing.assert_array_equal(
            np.isnan(layer.data), np.isnan(off.scene.layers[key].data), err_msg=key
        )
    # only a smooth field is added: most of the change is below the 10 m pixel scale's mean
    key = next(iter(on.scene.layers))
    delta = on.scene.layers[key].data - off.scene.layers[key].data
    ok = np.isfinite(delta)
    assert np.abs(delta[ok]).mean() < 0.1 * np.abs(off.scene.layers[key].data[ok]).mean()


def test_back_project_is_exact_with_nan_and_ragged_edges() -> None:
    rng = np.random.default_rng(3)
    lr = (0.1 + 0.05 * rng.random((20, 30))).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(lr)[None, None], scale_factor=4)
    sr = (up[0, 0].numpy() + 0.02 * rng.standard_normal((80, 120))).astype(np.float32)
    sr = np.ascontiguousarray(sr[:-3, :-2])  # rows/columns that do not fill a block
    sr[8:16, 40:44] = np.nan
    target = lr.copy()
    target[0, 0] = np.nan
    before = consistency_error(sr, target, 4)
    out = back_project(sr, target, 4)
    assert out is sr  # in place
    after = consistency_error(sr, target, 4)
    assert before is not None and before > 0.01 and after is not None and after < 1e-6
    assert np.isnan(sr[8:16, 40:44]).all() and np.isfinite(sr[-3:, :]).all()


@pytest.mark.parametrize("kind", ["swir_x2", "full_x4"])
def test_20m_bands_stay_consistent(
    kind: str, sample_scene: Scene, bundles: dict[str, Path]
) -> None:
    """Every output band averaged back is its own input band (not a neighbour's)."""
    res = _run(_crop(sample_scene, 48, 64), _cfg(bundles[kind], kind))
    errs = res.record.results["consistency_rel_error"]
    outs = sm.SWIR_BANDS if kind == "swir_x2" else sm.FULL_BANDS
    assert set(errs) == set(outs) and max(errs.values()) < 0.08, errs
    # bands set to distinct flat levels come back at their own level
    flat = sample_scene.replace(
        bands={
            b: np.full((40, 40), 0.05 + 0.02 * i, np.float32) for i, b in enumerate(sm.FULL_BANDS)
        },
        geobox=sample_scene.geobox[:40, :40],
    )
    out = _run(flat, _cfg(bundles[kind], kind)).scene.layers
    for b in outs:
        level = 0.05 + 0.02 * sm.FULL_BANDS.index(b)
        assert float(np.mean(out[layer_key(b)].data)) == pytest.approx(level, abs=0.01), b


def test_nodata_is_masked_again(wedge_scene: Scene, bundles: dict[str, Path]) -> None:
    scene = _crop(wedge_scene, 96, 96, x0=wedge_scene.geobox.shape.x - 96)  # upper right
    invalid = ~np.isfinite(scene.bands["B04"])
    assert invalid.any()
    margin = 3
    res = _run(scene, _cfg(bundles["rgbn_x4"], nodata_margin=margin))
    out = res.scene.layers["B04_sr"].data
    nan10 = np.isnan(out).reshape(out.shape[0] // 4, 4, out.shape[1] // 4, 4)
    assert (nan10.all(axis=(1, 3)) == nan10.any(axis=(1, 3))).all()  # whole 10 m pixels
    nan10 = nan10.all(axis=(1, 3))
    assert nan10[invalid].all()  # every nodata pixel stays nodata
    from scipy import ndimage

    grown = ndimage.binary_dilation(invalid, iterations=margin + 1)
    assert not nan10[~grown].any()  # and valid data beyond the margin stays valid
    assert nan10.sum() > invalid.sum()
    assert res.record.results["nodata_margin_px"] == margin
    # the default margin is the model's receptive radius
    default = _run(scene, _cfg(bundles["rgbn_x4"]))
    assert default.record.results["nodata_margin_px"] == 3 * TINY["num_blocks"] + 5


def test_raw_dn_and_offset_mistakes_are_caught(
    sample_scene: Scene, bundles: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    scene = _crop(sample_scene, 40, 40)
    cfg = _cfg(bundles["rgbn_x4"])
    dn = scene.replace(bands={b: a * 10000 for b, a in scene.bands.items()})
    with pytest.raises(StepError, match="digital numbers"):
        _run(dn, cfg)
    twice = scene.replace(bands={b: a - 0.1 for b, a in scene.bands.items()})
    with pytest.raises(StepError, match="applied twice"):
        _run(twice, cfg)
    left_in = scene.replace(bands={b: a + 0.1 for b, a in scene.bands.items()})
    with caplog.at_level(logging.WARNING, logger="stac2cube.steps.superres"):
        res = _run(left_in, cfg)
    assert res.record.results["suspect_offset_left_in"] is True
    assert "offset may have been left in" in caplog.text
    assert _run(scene, cfg).record.results["suspect_offset_left_in"] is False
    _run(dn, _cfg(bundles["rgbn_x4"], check_inputs=False))  # the check can be turned off


def test_missing_bands_are_named(sample_scene: Scene, bundles: dict[str, Path]) -> None:
    scene = _crop(sample_scene, 32, 32)
    scene = scene.replace(bands={b: a for b, a in scene.bands.items() if b not in ("B08", "B12")})
    with pytest.raises(StepError, match=r"; B08, B12 are not loaded: add them to `bands`"):
        _run(scene, _cfg(bundles["full_x4"], "full_x4"))
    with pytest.raises(StepError, match="B08 is not loaded"):
        _run(scene, _cfg(bundles["rgbn_x4"]))


def test_scene_not_at_10m_is_refused(bundles: dict[str, Path]) -> None:
    scene = _rect_scene(20, 20)
    g20 = GeoBox((20, 20), Affine(20.0, 0.0, 600000.0, 0.0, -20.0, 5000000.0), "EPSG:32633")
    with pytest.raises(StepError, match="10 m pixels"):
        _run(scene.replace(geobox=g20), _cfg(bundles["rgbn_x4"]))


def test_cuda_without_gpu_is_a_clear_error(
    bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StepError, match="no CUDA device"):
        STEP.prepare(_cfg(bundles["rgbn_x4"], device="cuda"))
    res = _run(_rect_scene(20, 20), _cfg(bundles["rgbn_x4"], device="auto", half=True))
    assert res.record.results["device"] == "cpu" and res.record.results["half"] is False


def test_memory_bound_limits_the_batch(bundles: dict[str, Path]) -> None:
    scene = _rect_scene(100, 100)
    res = _run(scene, _cfg(bundles["rgbn_x4"], batch_size=64, max_memory_mb=72))
    assert 1 <= res.record.results["batch_size"] < 64
    with pytest.raises(StepError, match="max_memory_mb"):
        _run(_rect_scene(1200, 1200), _cfg(bundles["rgbn_x4"], max_memory_mb=64))


def test_weights_file_config(tmp_path: Path, bundles: dict[str, Path]) -> None:
    f = sm.save_weights(_tiny("swir_x2"), tmp_path / "x2.safetensors")
    cfg = SuperResConfig(
        model="swir_x2", weights=str(f), architecture="CNNSR", tile_size=TILE, overlap=OVERLAP
    )
    res = _run(_rect_scene(30, 40), cfg)
    assert res.record.results["model_source"] == f"weights:{f}"
    assert res.scene.layers["B11_sr"].geobox == _rect_scene(30, 40).geobox
    with pytest.raises(sm.ModelLoadError, match="holds a swir_x2 model"):
        STEP.prepare(SuperResConfig(weights=str(f), architecture="CNNSR"))


def test_hub_cache_without_download_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    cfg = SuperResConfig(hub_id="tacofoundation/sen2sr", cache_dir=str(tmp_path))
    with pytest.raises(StepError, match="allow_download"):
        STEP.prepare(cfg)


@pytest.mark.gpu
def test_half_precision_on_gpu(sample_scene: Scene, bundles: dict[str, Path]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    scene = _crop(sample_scene, 96, 96)
    f32 = _run(scene, _cfg(bundles["full_x4"], "full_x4", device="cuda"))
    f16 = _run(scene, _cfg(bundles["full_x4"], "full_x4", device="cuda", half=True))
    assert f16.record.results["half"] is True and f16.record.results["device"] == "cuda"
    for k, layer in f32.scene.layers.items():
        assert float(np.abs(layer.data - f16.scene.layers[k].data).max()) < 5e-3, k
    cpu = _run(scene, _cfg(bundles["full_x4"], "full_x4", device="cpu"))
    for k, layer in f32.scene.layers.items():  # cuDNN may use TF32 for fp32 convolutions
        assert float(np.abs(layer.data - cpu.scene.layers[k].data).max()) < 2e-3, k
