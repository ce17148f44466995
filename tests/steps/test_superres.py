"""The super-resolution step: SEN2SR architectures with small random weights, saved to and loaded
from the bundle format a user would use, run over generated scenes and constructed rectangles."""

from __future__ import annotations

import dataclasses
import hashlib
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
from stac2cube.sample.scenes import aux_geobox, scene_from_sample
from stac2cube.steps.base import AuxLayer, AuxRequest, Scene, Step, StepResult

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


def _sample_scene(sample: Sample, index: int) -> Scene:
    """Scene ``index`` of the sample as the pipeline reads it for the step: the ten SEN2SR bands
    on the 10 m grid (the 20 m ones bilinear, as written to the item) and the six 20 m bands on
    their own 20 m grid in ``aux`` (what ``SuperResStep.required_aux`` asks for)."""
    sc = scene_from_sample(
        sample, index, bands=sm.FULL_BANDS, toa_resolution=20.0, toa="l2a",
        toa_bands=sm.SWIR_BANDS,
    ).scene  # fmt: skip
    return sc.replace(aux={sm.NATIVE_20M: sc.aux["toa"]})


@pytest.fixture(scope="module")
def sample_scene(sample: Sample) -> Scene:
    """Date 0 of the generated sample (no nodata); its grid starts on the 20 m grid."""
    return _sample_scene(sample, 0)


@pytest.fixture(scope="module")
def wedge_scene(sample: Sample) -> Scene:
    """The last date of the sample: a swath-edge nodata wedge in its upper right."""
    return _sample_scene(sample, len(sample.scenes) - 1)


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


def _crop(scene: Scene, h: int, w: int, x0: int = 0, y0: int = 0) -> Scene:
    """``h x w`` pixels of ``scene`` from ``(y0, x0)``, with the 20 m aux layer the pipeline
    would read for them (the 20 m grid over the crop's extent)."""
    sl = (slice(y0, y0 + h), slice(x0, x0 + w))
    bands = {b: a[sl].copy() for b, a in scene.bands.items()}  # tests may write into them
    out = scene.replace(bands=bands, geobox=scene.geobox[sl])
    aux = scene.aux.get(sm.NATIVE_20M)
    if aux is None:
        return out
    g = aux_geobox(out.geobox, 20.0)
    t, t0 = g.transform, aux.geobox.transform
    oy, ox = round((t0.f - t.f) / 20.0), round((t.c - t0.c) / 20.0)
    gy, gx = g.shape.yx
    data = aux.data[:, oy : oy + gy, ox : ox + gx]
    assert data.shape[1:] == (gy, gx)
    return out.replace(aux={sm.NATIVE_20M: dataclasses.replace(aux, data=data, geobox=g)})


def _rect_scene(h: int, w: int, seed: int = 0, x0: float = 600010.0) -> Scene:
    """Smooth, plausible reflectance on a ``h x w`` 10 m grid from ``x0`` (default: an odd
    multiple of 10 m, so the 20 m grid starts a pixel before it), the 20 m bands on their own
    20 m grid in ``aux`` and repeated 2 x 2 in ``bands``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    g = GeoBox((h, w), Affine(10.0, 0.0, x0, 0.0, -10.0, 5000010.0), "EPSG:32633")
    g20 = aux_geobox(g, 20.0)

    def field(shape: tuple[int, ...], sigma: float) -> np.ndarray:
        t = ndimage.gaussian_filter(rng.random(shape), sigma)
        return (0.01 + 0.35 * (t - t.min()) / (t.max() - t.min())).astype(np.float32)

    native = np.stack([field(g20.shape.yx, 0.75) for _ in sm.SWIR_BANDS])
    lead = (round((g20.transform.f - g.transform.f) / 10), round((x0 - g20.transform.c) / 10))
    bands = {b: field((h, w), 1.5) for b in sm.FULL_BANDS if b not in sm.SWIR_BANDS}
    for n, b in enumerate(sm.SWIR_BANDS):
        bands[b] = sm.nearest_10m(native[n], (h + lead[0], w + lead[1]))[lead[0] :, lead[1] :]
    aux = AuxLayer(native, g20, sm.SWIR_BANDS, "l2a")
    return Scene("rect", g, bands, aux={sm.NATIVE_20M: aux})


# ------------------------------------------------------------------------------ configuration


def test_step_follows_the_protocol() -> None:
    assert isinstance(STEP, Step)
    assert STEP.required_aux(SuperResConfig()) == {}
    want = {sm.NATIVE_20M: AuxRequest(sm.SWIR_BANDS, 20.0, "l2a")}  # 20 m bands on their grid
    assert STEP.required_aux(SuperResConfig(model="swir_x2")) == want
    assert STEP.required_aux(SuperResConfig(model="full_x4")) == want
    assert SuperResConfig().back_projection is False  # the published model's output
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


@pytest.mark.parametrize("kind", ["rgbn_x4", "swir_x2", "full_x4"])
def test_the_hard_constraint_masks_follow_the_model_to_its_device(kind: str) -> None:
    """sen2sr's ``HardConstraint`` keeps its low-pass mask as a plain attribute on the device
    it is given (default cpu), which ``model.to(device)`` does not move: on CUDA every tile
    failed ("found at least two devices"). The meta device shows it without a GPU."""
    from sen2sr.models.tricks import HardConstraint

    model = sm.assemble(_tiny(kind), tile_size=TILE, device="meta")
    masks = [m.low_pass_mask for m in model.modules() if isinstance(m, HardConstraint)]
    assert len(masks) == (3 if kind == "full_x4" else 1)
    assert {t.device.type for t in masks} == {"meta"}
    assert {p.device.type for p in model.parameters()} == {"meta"}


PUBLISHED_STAGES: dict[str, tuple[tuple[str, int, int, int, int, int], ...]] = {
    "rgbn_x4": (("model", 4, 4, 4, 4, 4),),
    "swir_x2": (("model", 10, 6, 1, 1, 2),),
    "full_x4": (
        ("sr_model", 4, 4, 4, 4, 4),
        ("f2_model", 10, 6, 1, 1, 2),
        ("model", 10, 6, 1, 4, 4),
    ),
}
"""Networks of the released SEN2SR-Lite bundles (docs/superres.md, "Bundle layout"): weight-file
stem, CNNSR in/out channels and upscale, output pixels per 10 m pixel, and the low-pass cutoff
divisor of the hard constraint's mask (``(side // 2) // d`` bins, as sen2sr's filters)."""
HF_RESOLVE = "https://huggingface.co/tacofoundation/sen2sr/resolve/main"

LOAD_PY = """\
# What a released bundle's load.py does, written for the test (mlstac runs compiled_model):
# sen2sr's classes, the tensors of the bundle's safetensors files.
import pathlib

import safetensors.torch
from sen2sr import nonreference, referencex2, referencex4
from sen2sr.models.opensr_baseline.cnn import CNNSR
from sen2sr.models.tricks import HardConstraint

MARKER = {marker!r}
STAGES = {stages!r}


def _stage(path, stem, cin, cout, up, device):
    net = CNNSR(cin, cout, 24, up, True, False, 6)
    net.load_state_dict(safetensors.torch.load_file(str(path / f"{{stem}}.safetensor")))
    mask_file = path / (stem.replace("model", "hard_constraint") + ".safetensor")
    mask = safetensors.torch.load_file(str(mask_file))["weights"]
    bands = "all" if cout == 4 else list(range(6))
    return net.eval(), HardConstraint(low_pass_mask=mask, bands=bands, device=device)


def compiled_model(path, device="cpu", **kwargs):
    pathlib.Path(MARKER).write_text("ran")
    path = pathlib.Path(path)
    nets = {{s[0]: _stage(path, *s[:4], device) for s in STAGES}}
    if len(STAGES) == 3:
        sr = nonreference.srmodel(*nets["sr_model"], device=device)
        f2 = referencex2.srmodel(*nets["f2_model"], device=device)
        return referencex4.srmodel(sr, f2, *nets["model"], device=device)
    wrap = nonreference if STAGES[0][2] == 4 else referencex2
    return wrap.srmodel(*nets["model"], device=device)


def example_data(path, *args, **kwargs):
    return safetensors.torch.load_file(str(pathlib.Path(path) / "example_data.safetensor"))["data"]
"""


def _published_bundle(cache: Path, kind: str, seed: int, marker: Path) -> Path:
    """A SEN2SR-Lite bundle laid out as the released ones are (``tacofoundation/sen2sr``, folder
    ``hub.HUB_SUBFOLDERS[kind, "lite"]``), with random weights, where huggingface_hub keeps a
    download (``<cache>/models--tacofoundation--sen2sr/snapshots/<commit>/<folder>``): the
    networks' state dicts as sen2sr's ``CNNSR(in, out, 24, upscale, True, False, 6)`` names
    them, one ``<stem>.safetensor`` each, the hard-constraint masks (key ``weights``, output-tile
    sized), ``load.py``, ``example_data.safetensor`` and an ``mlm.json`` (STAC Item, MLM
    extension) whose assets point at the Hub, as ``mlstac.download`` leaves it. No stac2cube
    code writes it."""
    from safetensors.torch import save_file
    from sen2sr.models.opensr_baseline.cnn import CNNSR

    sub = sm.HUB_SUBFOLDERS[(kind, "lite")]
    commit = "5e2c" * 10
    repo = cache / "models--tacofoundation--sen2sr"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit / sub
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    stages = PUBLISHED_STAGES[kind]
    assets: dict[str, Any] = {}
    n_params = 0
    for stem, cin, cout, up, fac, div in stages:
        net = CNNSR(cin, cout, 24, up, True, False, 6)
        n_params += sum(p.numel() for p in net.parameters())
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()}, folder / f"{stem}.safetensor"
        )
        side = 128 * fac
        u = np.arange(side) - side // 2
        mask = (np.hypot(u[:, None], u[None, :]) <= (side // 2) // div).astype(np.float32)
        mask_stem = stem.replace("model", "hard_constraint")
        save_file({"weights": torch.from_numpy(mask)}, folder / f"{mask_stem}.safetensor")
        for name, role in ((stem, "mlm:model"), (mask_stem, "mlm:weights")):
            assets[name] = {
                "href": f"{HF_RESOLVE}/{sub}/{name}.safetensor",
                "type": "application/octet-stream; application=safetensors",
                "roles": [role, "mlm:weights"] if role == "mlm:model" else [role],
            }
    n_in = 4 if kind == "rgbn_x4" else 10
    save_file({"data": torch.rand(1, n_in, 128, 128) * 0.3}, folder / "example_data.safetensor")
    (folder / "load.py").write_text(LOAD_PY.format(marker=str(marker), stages=stages))
    for name, file, media, role in (
        ("load", "load.py", "text/x-python", "mlm:source_code"),
        ("example_data", "example_data.safetensor", "application/octet-stream", "mlm:sample"),
    ):
        assets[name] = {"href": f"{HF_RESOLVE}/{sub}/{file}", "type": media, "roles": [role]}
    bands = sm.INPUT_BANDS[kind]
    out_bands = sm.RGBN_BANDS if kind == "rgbn_x4" else sm.FULL_BANDS
    scale = 1 if kind == "swir_x2" else 4
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": ["https://stac-extensions.github.io/mlm/v1.4.0/schema.json"],
        "id": sub.replace("/", "_"),
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[-180, -90], [-180, 90], [180, 90], [180, -90], [-180, -90]]],
        },
        "bbox": [-180, -90, 180, 90],
        "properties": {
            "start_datetime": "1900-01-01T00:00:00Z",
            "end_datetime": "9999-01-01T00:00:00Z",
            "datetime": None,
            "description": f"SEN2SRLite {kind}",
            "mlm:name": sub.replace("/", "_"),
            "mlm:architecture": "CNNSR",
            "mlm:tasks": ["super-resolution"],
            "mlm:framework": "pytorch",
            "mlm:framework_version": "2.5.1",
            "mlm:accelerator": "cuda",
            "mlm:accelerator_constrained": False,
            "mlm:total_parameters": n_params,
            "mlm:pretrained": True,
            # the keys mlstac's ModelLoader.print_schema reads; no architecture description
            "mlm:hyperparameters": {"batch_size": 16, "learning_rate": 1e-4},
            "mlm:input": [{
                "name": "Sentinel-2 L2A reflectance (DN / 10000)",
                "bands": [{"name": b} for b in bands],
                "input": {"shape": [-1, len(bands), 128, 128],
                          "dim_order": ["batch", "bands", "height", "width"],
                          "data_type": "float32"},
                "pre_processing_function": None,
            }],
            "mlm:output": [{
                "name": "super-resolved reflectance",
                "tasks": ["super-resolution"],
                "result": {"shape": [-1, len(out_bands), 128 * scale, 128 * scale],
                           "dim_order": ["batch", "bands", "height", "width"],
                           "data_type": "float32"},
                "bands": [{"name": b} for b in out_bands],
                "post_processing_function": None,
            }],
        },
        "links": [],
        "assets": assets,
    }  # fmt: skip
    (folder / "mlm.json").write_text(json.dumps(item, indent=2))
    return folder


@pytest.mark.parametrize("kind", sm.MODEL_KINDS)
def test_published_bundle_layout_loads_as_downloaded(kind: str, tmp_path: Path) -> None:
    """A bundle laid out as the released ones, found in the Hugging Face cache as a download
    leaves it, loads through the download path (``hub_id``) without running its ``load.py``:
    the published Lite sizes read off the weights, the same network as its ``load.py`` builds,
    and the SHA-256 of the weight files it read in the record."""
    pytest.importorskip("huggingface_hub")
    marker = tmp_path / "load_py_ran"
    folder = _published_bundle(tmp_path / "hf", kind, seed=11, marker=marker)
    item = json.loads((folder / "mlm.json").read_text())
    cfg = SuperResConfig(model=kind, hub_id="tacofoundation/sen2sr", cache_dir=str(tmp_path / "hf"))
    STEP.prepare(cfg)
    model = load_model(cfg, "cpu")
    assert not marker.exists()
    assert model.source == "hub:tacofoundation/sen2sr@main" and model.model_id == item["id"]
    assert model.n_parameters == item["properties"]["mlm:total_parameters"]
    assert all(c.params["feature_channels"] == 24 and c.params["num_blocks"] == 6
               for c in model.definition.components)  # fmt: skip
    if kind == "rgbn_x4":
        assert model.n_parameters == 572_336
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.glob("*.safetensor")
        if p.stem != "example_data"
    }
    assert dict(model.weight_files) == files
    lines = "".join(f"{k}  {v}\n" for k, v in sorted(files.items()))
    assert model.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()

    # what the bundle's own load.py builds (run only when asked to): the same networks with the
    # same tensors and masks, in the same sen2sr wrappers, so the same output
    remote = sm.load_bundle(folder, kind=kind, variant="lite", trust_remote_code=True)
    assert marker.exists() and remote.source.startswith("remote-code:")
    from safetensors.torch import load_file
    from sen2sr.models.tricks import HardConstraint

    ours, theirs = model.module.state_dict(), remote.module.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    masks = [
        [m.low_pass_mask for m in net.modules() if isinstance(m, HardConstraint)]
        for net in (model.module, remote.module)
    ]
    assert len(masks[0]) == len(PUBLISHED_STAGES[kind]) == len(masks[1])
    assert all(torch.equal(a, b) for a, b in zip(*masks, strict=True))
    if kind != "full_x4":  # (the full model's 2.5 m fusion stage takes ~10 s on two cores)
        x = load_file(str(folder / "example_data.safetensor"))["data"]
        with torch.inference_mode():
            assert torch.equal(model.module(x), remote.module(x))

    if kind == "rgbn_x4":
        res = STEP.run(_rect_scene(24, 24), cfg).record.results  # the record names the weights
        assert res["weights_sha256"] == model.weights_sha256 and res["weight_files"] == files
        with pytest.raises(sm.ModelLoadError, match="holds a rgbn_x4 model"):
            sm.load_bundle(folder, kind="swir_x2", variant="lite")
        with pytest.raises(sm.ModelLoadError, match="trust_remote_code"):
            sm.load_bundle(folder, kind="rgbn_x4", variant="mamba")


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
    # device "auto": CUDA where there is a GPU
    assert r.results["tiles"] == 1
    assert r.results["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
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
    """With ``back_projection: true`` every band's block means are the input's (20 m bands:
    their native 20 m pixels); the record keeps the error of the network alone, that of the
    default run (the published model's output, left as it is)."""
    scene = _crop(sample_scene, 48, 64)
    scene.bands["B04"][10:14, 20:30] = np.nan  # nodata: its blocks stay NaN, the rest is exact
    on = _run(scene, _cfg(bundles[kind], kind, back_projection=True))
    off = _run(scene, _cfg(bundles[kind], kind))
    r_on, r_off = on.record.results, off.record.results
    assert r_on["back_projection"] is True and r_off["back_projection"] is False
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
    """Every output band averaged back is its own input band (not a neighbour's): a few % off
    (the hard constraint with tiny random networks), and flat levels come back."""
    res = _run(_crop(sample_scene, 48, 64), _cfg(bundles[kind], kind))
    errs = res.record.results["consistency_rel_error"]
    outs = sm.SWIR_BANDS if kind == "swir_x2" else sm.FULL_BANDS
    assert set(errs) == set(outs) and max(errs.values()) < 0.12, errs
    # bands set to distinct flat levels come back at their own level
    level = {b: 0.05 + 0.02 * i for i, b in enumerate(sm.FULL_BANDS)}
    flat = _crop(sample_scene, 40, 40)
    aux = flat.aux[sm.NATIVE_20M]
    flat = flat.replace(
        bands={b: np.full((40, 40), level[b], np.float32) for b in sm.FULL_BANDS},
        aux={
            sm.NATIVE_20M: dataclasses.replace(
                aux,
                data=np.stack(
                    [np.full(aux.data.shape[1:], level[b], np.float32) for b in aux.bands]
                ),
            )
        },
    )
    out = _run(flat, _cfg(bundles[kind], kind)).scene.layers
    for b in outs:
        assert float(np.mean(out[layer_key(b)].data)) == pytest.approx(level[b], abs=0.01), b


def _nearest_half(a: np.ndarray) -> np.ndarray:
    """sen2sr's own downsampling of the 20 m bands (``referencex2.resample_sentinel2_bands``)."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
    return torch.nn.functional.interpolate(t, scale_factor=0.5, mode="nearest")[0].numpy()


def test_20m_handover_gives_sen2sr_the_native_field(sample_scene: Scene) -> None:
    """sen2sr keeps pixel ``2i`` of each 20 m band on the 10 m grid: from what the step hands
    over (the native 20 m pixels repeated 2 x 2, on a frame that starts on the 20 m grid) that
    is the 20 m field itself, whatever the crop's offset and sides; from the bilinear 10 m bands
    the pipeline writes (what the step handed over before) it is not."""
    idx = [sm.FULL_BANDS.index(b) for b in sm.SWIR_BANDS]
    for y0, x0, h, w in ((0, 0, 64, 64), (1, 1, 63, 65), (0, 1, 50, 51), (3, 0, 41, 40)):
        scene = _crop(sample_scene, h, w, x0, y0)
        stack, frame = sm.model_input(scene, sm.FULL_BANDS, needs_20m=True)
        assert frame.lead == (y0 % 2, x0 % 2) and stack.shape[1:] == (h + y0 % 2, w + x0 % 2)
        down = _nearest_half(stack[idx])
        native = scene.aux[sm.NATIVE_20M].data[:, : down.shape[1], : down.shape[2]]
        assert float(np.abs(down - native).max()) == 0.0, (y0, x0)
        for n, b in enumerate(sm.FULL_BANDS):  # the 10 m bands are the scene's, unchanged
            if b not in sm.SWIR_BANDS:
                np.testing.assert_array_equal(frame.crop(stack[n], 1), scene.bands[b])
    scene = _crop(sample_scene, 64, 64)
    native = scene.aux[sm.NATIVE_20M].data[:, :32, :32]
    old = _nearest_half(np.stack([scene.bands[b] for b in sm.SWIR_BANDS]))
    rms = float(np.sqrt(np.mean((old - native) ** 2)))
    assert float(native.std()) > 5e-3 and rms > 1e-3, (float(native.std()), rms)


@pytest.mark.parametrize("kind", ["swir_x2", "full_x4"])
def test_sen2sr_sees_the_native_20m_field_in_every_tile(
    kind: str, sample_scene: Scene, bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 20 m bands as sen2sr's own downsampling gives them, captured inside the model while
    the step runs over a crop that starts 10 m into a 20 m pixel, with odd sides and several
    tiles: every sample is the 20 m pixel the pipeline read on the 20 m grid, exactly."""
    from sen2sr import referencex2

    real = referencex2.F
    seen: list[np.ndarray] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def interpolate(x: Any, *args: Any, **kw: Any) -> Any:
            y = real.interpolate(x, *args, **kw)
            if kw.get("scale_factor") == 0.5 and kw.get("mode") == "nearest":
                seen.extend(y.detach().cpu().numpy())
            return y

    monkeypatch.setattr(referencex2, "F", Spy())
    scene = _crop(sample_scene, 75, 93, x0=1, y0=3)
    res = _run(scene, _cfg(bundles[kind], kind, batch_size=3))
    r = res.record.results
    assert r["inputs_20m"]["lead_px"] == [1, 1] and r["inputs_20m"]["grid_m"] == 20.0
    native = scene.aux[sm.NATIVE_20M].data
    h, w = 76, 94  # the frame: one row and column of the 20 m grid before the scene
    gy, gx = TileGrid.make(h, TILE, OVERLAP, 2), TileGrid.make(w, TILE, OVERLAP, 2)
    assert len(seen) == gy.count * gx.count == r["tiles"] > 1
    covered = np.zeros(native.shape[1:], dtype=bool)
    for n, got in enumerate(seen):
        i, j = divmod(n, gx.count)
        rows = i * gy.step - gy.lead + 2 * np.arange(got.shape[1])  # frame rows sampled
        cols = j * gx.step - gx.lead + 2 * np.arange(got.shape[2])
        ri, ci = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        want = native[:, rows[ri] // 2][:, :, cols[ci] // 2]
        assert float(np.abs(got[:, ri][:, :, ci] - want).max()) == 0.0, (i, j)
        covered[np.ix_(rows[ri] // 2, cols[ci] // 2)] = True
    assert covered[: h // 2, : w // 2].all()


def test_20m_bands_must_come_on_their_own_grid(
    sample_scene: Scene, bundles: dict[str, Path]
) -> None:
    scene = _crop(sample_scene, 32, 32)
    cfg = _cfg(bundles["swir_x2"], "swir_x2")
    with pytest.raises(StepError, match=r"native 20 m grid .* missing \(no twin\)"):
        _run(scene.replace(aux={}, missing_aux={sm.NATIVE_20M: "no twin"}), cfg)
    aux = scene.aux[sm.NATIVE_20M]
    shifted = dataclasses.replace(aux, geobox=GeoBox(aux.geobox.shape, aux.geobox.transform
                                  * Affine.translation(0.25, 0), aux.geobox.crs))  # fmt: skip
    with pytest.raises(StepError, match="not on a 20 m grid aligned"):
        _run(scene.replace(aux={sm.NATIVE_20M: shifted}), cfg)
    assert _run(scene.replace(aux={}), _cfg(bundles["rgbn_x4"])).record  # RGBN reads none


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
    assert res.record.results["model_source"] == f"weights:{f.name}"
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
