"""End to end: a real STAC API → stac2cube run → COGs + items → cube, and every way it can fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

from stac2cube import load_config, open_cube, reflectance, run
from stac2cube.catalog import CatalogStore
from stac2cube.catalog.index import read_index_table
from stac2cube.check import check_catalog
from stac2cube.errors import CatalogLockedError, EmptySearchError
from stac2cube.io.threads import worker_threads
from stac2cube.pipeline import dask_client
from stac2cube.pipeline.plan import unchanged_check
from stac2cube.sample import AEROSOL_PATH, TRANSMITTANCE, Sample
from stac2cube.testing.configs import write_config
from stac2cube.testing.stac_api import RustacServer

BAND_INDEX = {
    b: i + 1
    for i, b in enumerate(
        ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    )
}


@pytest.fixture(scope="module")
def built(sample: Sample, sample_api: RustacServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = load_config(write_config(tmp, sample, {"api": sample_api.url}))
    summary = run(cfg)
    return cfg, summary


def test_every_scene_is_written_and_the_catalog_is_sound(built, sample: Sample) -> None:
    cfg, summary = built
    assert summary.written == len(sample.scenes) and summary.failed == 0
    report = check_catalog(cfg.catalog_dir)  # schemas (offline), COGs, sizes and checksums
    assert report.problems == ()
    # every band plus the cloud step's CLOUD_PROB and CLOUD_MASK
    assert report.n_items == 4 and report.n_assets == 4 * (len(cfg.bands) + 2)
    for tif in cfg.catalog_dir.rglob("*.tif"):
        ok, errors, _ = cog_validate(str(tif), quiet=True)
        assert ok, (tif, errors)


def test_cube_equals_the_cogs(built) -> None:
    cfg, _ = built
    ds = open_cube(cfg.catalog_dir)
    assert ds.sizes["time"] == 4 and list(ds.data_vars)[:3] == ["B02", "B03", "B04"]
    assert ds.B04.dtype == np.int16 and ds.SCL.dtype == np.uint8
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    by_time = sorted(store.iter_items(), key=lambda i: i["properties"]["datetime"])
    for t, item_id in enumerate(i["id"] for i in by_time):
        for band in ("B04", "B8A", "SCL"):
            with rasterio.open(store.item_dir(item_id) / f"{band}.tif") as src:
                np.testing.assert_array_equal(ds[band].isel(time=t).values, src.read(1))


def _truth_window(scene, refl_shape, ds) -> tuple[slice, slice]:
    with rasterio.open(scene.surface_path) as src:
        tr = src.transform
    col = round((float(ds.x[0]) - tr.c) / tr.a - 0.5)
    row = round((float(ds.y[0]) - tr.f) / tr.e - 0.5)
    return slice(row, row + refl_shape[0]), slice(col, col + refl_shape[1])


@pytest.mark.parametrize("band", ["B04", "B08", "B11"])
def test_harmonised_reflectance_matches_the_true_surface(built, sample: Sample, band: str) -> None:
    """All three encodings in the sample (pre-04.00, +1000 with offset, ES-harmonised) agree."""
    cfg, _ = built
    ds = open_cube(cfg.catalog_dir, [band])
    refl = reflectance(ds)[band]
    for t, scene in enumerate(sample.scenes):
        r = refl.isel(time=t).values
        win = _truth_window(scene, r.shape, ds)
        with rasterio.open(scene.surface_path) as src:
            surf = src.read(BAND_INDEX[band])[win]
        with rasterio.open(scene.truth_path) as src:
            clear = src.read(1)[win] == 0
        if band == "B11":  # a 20 m pixel next to a (dark) shadow is not clear at 10 m
            clear = ndimage.binary_erosion(clear, iterations=2)
        clear &= np.isfinite(r)
        diff = r[clear] - surf[clear]
        # the sample's L2A correction leaves part of the haze (most in the short bands)
        haze = 0.25 * AEROSOL_PATH[BAND_INDEX[band] - 1] / TRANSMITTANCE[BAND_INDEX[band] - 1]
        assert abs(diff.mean()) < 0.002 + haze, (scene.l2a_item["id"], diff.mean())
        # 20 m bands are upsampled to 10 m, so fine texture is lost: a wider spread is expected
        assert diff.std() < (0.01 if band in ("B04", "B08") else 0.03)


def test_nodata_stays_nodata(built, sample: Sample) -> None:
    cfg, _ = built
    ds = open_cube(cfg.catalog_dir, ["B04", "SCL"])
    wedge = [t for t, sc in enumerate(sample.scenes) if sc.nodata_fraction > 0]
    assert wedge, "the sample has a scene with a nodata wedge"
    b04 = ds.B04.isel(time=wedge[0]).values
    scl = ds.SCL.isel(time=wedge[0]).values
    assert (b04 == -32768).any() and ((b04 == -32768) == (scl == 0)).mean() > 0.99
    refl = reflectance(ds).B04.isel(time=wedge[0]).values
    assert np.isnan(refl).sum() == (b04 == -32768).sum()
    assert not np.isclose(refl, -0.1).any()


def test_items_carry_provenance(built, sample: Sample, sample_api: RustacServer) -> None:
    cfg, _ = built
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    items = {i["id"]: i for i in store.iter_items()}
    for scene in sample.scenes:
        src = scene.l2a_item
        props = items[src["id"]]["properties"]
        prov = props["stac2cube:source"]
        assert prov["id"] == src["id"]
        assert prov["href"].startswith(sample_api.url)
        assert prov["processing_baseline"] == src["properties"]["s2:processing_baseline"]
        assert props["stac2cube:config_hash"] == cfg.config_hash
        step = props["stac2cube:steps"][0]
        assert step["name"] == "harmonise"
        b04 = step["results"]["bands"]["B04"]
        if src["properties"].get("earthsearch:boa_offset_applied"):
            assert (b04["offset"], b04["source"]) == (0.0, "earthsearch:boa_offset_applied")
        elif src["properties"]["s2:processing_baseline"] >= "04.00":
            assert b04["offset"] == -0.1
        else:
            assert b04["offset"] == 0.0
        assert step["results"]["bands"]["B05"]["resampling"] == "bilinear"  # 20 m → 10 m
        assert {"stac2cube", "gdal", "rasterio"} <= set(props["processing:software"])
        assert props["proj:code"].startswith("EPSG:326")
        assert items[src["id"]]["assets"]["SCL"]["classification:classes"][9]["name"] == (
            "cloud_high_probability"
        )


def test_rerun_touches_nothing_and_a_new_config_reprocesses(
    sample: Sample, sample_api: RustacServer, tmp_path: Path
) -> None:
    path = write_config(tmp_path, sample, {"api": sample_api.url}, bands=["B04", "SCL"])
    first = run(load_config(path))
    assert first.written == 4
    files = {
        p: (p.stat().st_mtime_ns, p.read_bytes())
        for p in (tmp_path / "catalog").rglob("*")
        if p.is_file() and "_stac2cube" not in p.parts
    }
    second = run(load_config(path))
    assert (second.written, second.skipped) == (0, 4)
    assert files == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    third = run(load_config(path, ["output.dtype=float32"]))
    assert third.written == 4
    assert {o.message for o in third.outcomes} == {"stale: other processing configuration"}
    ds = open_cube(tmp_path / "catalog", ["B04"])
    assert ds.B04.dtype == np.float32
    store = CatalogStore(tmp_path / "catalog", "sentinel-2-l2a-ard")
    for item in store.iter_items():  # the replaced version is recorded in the new one
        (prev,) = item["properties"]["stac2cube:replaces"]
        assert prev["reason"] == "stale: other processing configuration"
        assert prev["config_hash"] != item["properties"]["stac2cube:config_hash"]
    assert check_catalog(tmp_path / "catalog").problems == ()


def test_a_reprocessed_source_is_found_stale_among_unchanged_ones(
    sample: Sample, tmp_path: Path
) -> None:
    """An update reads the source items raw: the unchanged ones are skipped unparsed, an item
    with a new ``updated`` or processing baseline is replaced."""
    doc = _local_items(sample, tmp_path)
    items = tmp_path / "items.json"
    items.write_text(json.dumps(doc))
    path = write_config(
        tmp_path, sample, {"path": str(items)}, bands=["B04"], steps={"cloudmask": None}
    )
    assert run(load_config(path)).written == 4
    f = doc["features"]
    f[1]["properties"]["updated"] = "2030-01-01T00:00:00Z"
    old = f[2]["properties"]["s2:processing_baseline"]
    f[2]["properties"]["s2:processing_baseline"] = f"{old[:3]}{int(old[3:]) + 1:02d}"
    items.write_text(json.dumps(doc))
    again = run(load_config(path))
    reasons = {o.item_id: o.message for o in again.outcomes}
    assert reasons == {
        f[0]["id"]: "up to date",
        f[1]["id"]: "stale: source item updated",
        f[2]["id"]: "stale: new processing baseline",
        f[3]["id"]: "up to date",
    }
    assert (again.written, again.skipped) == (2, 2)
    # the comparison reads the catalog's index when it is current, else the item JSON files
    cfg = load_config(path)
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    table = read_index_table(store)
    assert table is not None
    for index in (table, None):
        check = unchanged_check(cfg, store, index)
        assert all(check(feat) for feat in f)
        assert not check({**f[0], "properties": {**f[0]["properties"], "updated": "2031"}})
        assert not check({**f[0], "id": "not-in-the-catalog"})
    hashes = table.column("stac2cube:config_hash").to_pylist()
    other = table.set_column(
        table.column_names.index("stac2cube:config_hash"),
        "stac2cube:config_hash",
        pa.array(["sha256:other"] * len(hashes)),
    )
    assert not any(unchanged_check(cfg, store, other)(feat) for feat in f)


def _local_items(sample: Sample, tmp_path: Path) -> dict:
    return json.loads(sample.l2a_items_path.read_text())


def test_bad_inputs_are_logged_and_the_rest_is_written(sample: Sample, tmp_path: Path) -> None:
    doc = _local_items(sample, tmp_path)
    f = doc["features"]
    # 0: missing asset
    del f[0]["assets"]["red"]
    # 1: broken COG (truncated file)
    broken = tmp_path / "broken.tif"
    data = Path(f[1]["assets"]["red"]["href"]).read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    f[1]["assets"]["red"]["href"] = str(broken)
    # 2: malformed item (no geometry)
    f[2]["geometry"] = None
    # 3 stays good; 4: no overlap (pixels elsewhere, footprint claims the AOI)
    shifted = json.loads(json.dumps(f[3]))
    shifted["id"] = "S2X_NO_OVERLAP"
    far = tmp_path / "far"
    far.mkdir()
    for key, asset in shifted["assets"].items():
        if "data" not in asset.get("roles", []):
            continue
        with rasterio.open(asset["href"]) as src:
            prof, arr = src.profile, src.read()
        t = prof["transform"]  # the same pixels 200 km east
        prof["transform"] = Affine(t.a, t.b, t.c + 200_000, t.d, t.e, t.f)
        with rasterio.open(far / f"{key}.tif", "w", **prof) as dst:
            dst.write(arr)
        asset["href"] = str(far / f"{key}.tif")
    f.append(shifted)
    items = tmp_path / "items.json"
    items.write_text(json.dumps(doc))
    cfg = load_config(write_config(tmp_path, sample, {"path": str(items)}))
    summary = run(cfg)
    by_id = {o.item_id: o for o in summary.outcomes}
    assert summary.written == 1 and by_id[f[3]["id"]].status == "written"
    assert by_id[f[0]["id"]].status == "failed" and "B04" in by_id[f[0]["id"]].message
    assert by_id[f[1]["id"]].stage == "read" and str(broken) in by_id[f[1]["id"]].message
    assert by_id[f[2]["id"]].status == "rejected" and "geometry" in by_id[f[2]["id"]].message
    assert "no valid pixel" in by_id["S2X_NO_OVERLAP"].message
    log = CatalogStore(cfg.catalog_dir, cfg.output.collection_id).failures()
    assert {(r.item_id, r.stage, r.error) for r in log} == {
        (f[0]["id"], "read", "MissingAssetError"),
        (f[1]["id"], "read", "AssetReadError"),
        (f[2]["id"], "search", "ItemError"),
        ("S2X_NO_OVERLAP", "read", "NoOverlapError"),
    }
    assert check_catalog(cfg.catalog_dir).problems == ()
    # fixing the input and re-running picks up exactly the failed scenes
    items.write_text(sample.l2a_items_path.read_text())
    again = run(cfg)
    assert again.written == 3 and again.skipped == 1
    assert {o.message for o in again.outcomes if o.status == "written"} == {"failed before"}


def test_empty_search_is_an_error_and_logged(sample: Sample, sample_api, tmp_path: Path) -> None:
    path = write_config(
        tmp_path, sample, {"api": sample_api.url}, time={"start": "2001-01-01", "end": "2001-01-31"}
    )
    with pytest.raises(EmptySearchError, match="widen"):
        run(load_config(path))
    store = CatalogStore(tmp_path / "catalog", "sentinel-2-l2a-ard")
    assert store.failures()[0].stage == "search"
    assert not store.take_clean_mark()  # a run that raised: the next one recovers in full


def test_a_second_run_refuses_while_the_first_holds_the_lock(sample: Sample, tmp_path) -> None:
    cfg = load_config(write_config(tmp_path, sample, {"path": str(sample.l2a_items_path)}))
    lock = CatalogStore(cfg.catalog_dir, cfg.output.collection_id).lock()
    with lock, pytest.raises(CatalogLockedError, match="another stac2cube run"):
        run(cfg)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import stac2cube.catalog.item as item
    from stac2cube import load_config, run
    real, n = item.write_cog, {"k": 0}
    def write_cog(*a, **kw):
        n["k"] += 1
        if n["k"] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)   # crash in the middle of a scene
        return real(*a, **kw)
    item.write_cog = write_cog
    run(load_config(sys.argv[1]))
""")


@pytest.mark.parametrize("kill_at", [3, 15])
def test_a_killed_run_leaves_a_valid_catalog_and_a_rerun_completes_it(
    sample: Sample, tmp_path: Path, kill_at: int
) -> None:
    path = write_config(
        tmp_path,
        sample,
        {"path": str(sample.l2a_items_path)},
        bands=["B02", "B04", "B08", "B11", "SCL"],
        run={"executor": "serial"},  # the fault is injected into this process
    )
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), str(kill_at)], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    cat = tmp_path / "catalog"
    store = CatalogStore(cat, "sentinel-2-l2a-ard")
    done = store.item_ids()
    assert len(done) == (kill_at - 1) // 5  # only complete scenes are in the catalog
    assert check_catalog(cat).problems == ()
    summary = run(load_config(path))  # takes over the dead run's lock
    assert summary.written == 4 - len(done) and summary.skipped == len(done)
    report = check_catalog(cat)
    assert report.problems == () and report.warnings == ()  # leftovers were cleaned
    assert not [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name]
    assert open_cube(cat).sizes["time"] == 4


def test_a_killed_update_of_a_cleanly_finished_catalog_is_recovered_in_full(
    sample: Sample, tmp_path: Path
) -> None:
    """The first run ends normally and leaves the clean-exit mark; the update takes it before it
    writes anything, so when the update is killed the next run does the full recovery (the
    killed run's temporary files and staging directory are removed)."""
    items = json.loads(sample.l2a_items_path.read_text())
    first = tmp_path / "first.json"
    first.write_text(json.dumps({**items, "features": items["features"][:2]}))
    kw = {"bands": ["B02", "B04", "B08", "B11", "SCL"], "run": {"executor": "serial"}}
    cfg = load_config(write_config(tmp_path, sample, {"path": str(first)}, **kw))
    seen: list[bool] = []
    store = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    mark = store.state_dir / "clean-exit"
    assert run(cfg, progress=lambda ev: seen.append(mark.exists())).written == 2
    assert seen and not any(seen) and mark.exists()  # absent while the run writes
    path = write_config(tmp_path, sample, {"path": str(sample.l2a_items_path)}, **kw)
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), "3"], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    cat = tmp_path / "catalog"
    assert not mark.exists()
    leftovers = [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name or ".staging-" in p.name]
    assert leftovers  # the kill fell inside a scene
    summary = run(load_config(path))
    assert summary.written == 2 and summary.skipped == 2 and mark.exists()
    report = check_catalog(cat)
    assert report.problems == () and report.warnings == ()
    assert not [p for p in cat.rglob("*") if ".tmp-stac2cube-" in p.name]


def test_demo_config_with_a_copy_of_the_sample_moved_elsewhere(sample: Sample, tmp_path) -> None:
    """Item hrefs are absolute: a moved sample fails per scene with a clear read error."""
    moved = tmp_path / "items.json"
    doc = json.loads(sample.l2a_items_path.read_text())
    for feat in doc["features"]:
        for asset in feat["assets"].values():
            asset["href"] = asset["href"].replace(str(sample.root), str(tmp_path / "gone"))
    moved.write_text(json.dumps(doc))
    summary = run(load_config(write_config(tmp_path, sample, {"path": str(moved)})))
    assert summary.written == 0 and summary.failed == 4
    assert all("No such file" in o.message for o in summary.outcomes)
    shutil.rmtree(tmp_path / "catalog")
    assert os.path.exists(sample.l2a_items_path)


def test_a_serial_run_does_not_import_dask_distributed(sample: Sample, tmp_path: Path) -> None:
    """distributed costs half a second to import: a one-scene run (in-process) skips it."""
    doc = json.loads(sample.l2a_items_path.read_text())
    one = tmp_path / "one.json"
    one.write_text(json.dumps({**doc, "features": doc["features"][:1]}))
    path = write_config(
        tmp_path,
        sample,
        {"path": str(one)},
        bands=["B04", "B08", "SCL"],
        run={"executor": "local"},
        # the virtual cube's snapshot and kerchunk export (VirtualiZarr: xarray) are made on the
        # client after the scenes
        output={"virtual_cube": False, "kerchunk": False},
    )
    code = (
        "import sys; from stac2cube import load_config, run; "
        f"s = run(load_config({str(path)!r})); "
        "print(s.written, 'distributed' in sys.modules, 'xarray' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # nor xarray (the cube views import it when they are used): a worker starts faster
    assert proc.stdout.split() == ["1", "False", "False"]


@pytest.mark.slow
def test_a_local_dask_cluster_writes_the_same_catalog(sample: Sample, tmp_path: Path) -> None:
    """Scenes run on a real LocalCluster (2 worker processes); the client alone commits."""
    doc = json.loads(sample.l2a_items_path.read_text())
    broken_id = doc["features"][1]["id"]
    del doc["features"][1]["assets"]["red"]
    items = tmp_path / "items.json"
    items.write_text(json.dumps(doc))
    source = {"path": str(items), "l1c_path": str(sample.l1c_items_path)}
    serial_dir, dask_dir = tmp_path / "serial", tmp_path / "dask"
    serial_dir.mkdir()
    dask_dir.mkdir()
    serial = run(load_config(write_config(serial_dir, sample, source, run={"executor": "serial"})))
    cfg = load_config(
        write_config(dask_dir, sample, source, run={"executor": "local", "workers": 2})
    )
    dask = run(cfg)
    assert (dask.written, dask.failed) == (serial.written, serial.failed) == (3, 1)
    assert check_catalog(cfg.catalog_dir).problems == ()
    a = CatalogStore(serial_dir / "catalog", cfg.output.collection_id)
    b = CatalogStore(cfg.catalog_dir, cfg.output.collection_id)
    assert sorted(a.item_ids()) == sorted(b.item_ids())
    for item_id in a.item_ids():
        ia, ib = a.read_item(item_id), b.read_item(item_id)
        assert ia is not None and ib is not None
        checksums = {k: v["file:checksum"] for k, v in ia["assets"].items()}
        assert checksums == {k: v["file:checksum"] for k, v in ib["assets"].items()}
    (failure,) = b.failures()
    assert (failure.item_id, failure.stage, failure.error) == (
        broken_id,
        "read",
        "MissingAssetError",
    )
    assert not list((cfg.catalog_dir / cfg.output.collection_id).glob(".staging-*"))
    # on a worker GDAL compresses with the worker's threads, not every core of the node
    with dask_client(cfg, n_tasks=2) as client:
        assert client.submit(worker_threads, pure=False).result() == 1
    assert worker_threads() is None
