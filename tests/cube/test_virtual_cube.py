"""The versioned virtual cube: one Icechunk snapshot per run, values equal to odc-stac's, time
travel after updates and reprocessing, stale COGs refused, per-item encodings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stac2cube import cube_versions, load_config, open_cube, open_virtual_cube, run
from stac2cube.catalog import CatalogStore
from stac2cube.catalog.virtual import (
    LINKS_DIR,
    commit_snapshot,
    cube_dir,
    head_items,
    item_manifests,
    repository,
)
from stac2cube.check import check_catalog
from stac2cube.errors import CatalogError
from stac2cube.sample import Sample
from stac2cube.testing.configs import write_config


def _source(sample: Sample, **extra: Any) -> dict[str, Any]:
    return {"path": str(sample.l2a_items_path), "l1c_path": str(sample.l1c_items_path), **extra}


def _updated_time_steps(catalog: Path, before: str, after: str) -> dict[str, set[int]]:
    """Per array, the time indices whose chunks changed between two snapshots."""
    diff = repository(catalog).diff(from_snapshot_id=before, to_snapshot_id=after)
    out: dict[str, set[int]] = {}
    for path, chunks in diff.updated_chunks.items():
        if path.count("/") == 1 and all(len(c) == 3 for c in chunks):  # bands, not records
            out[path] = {c[0] for c in chunks}
    return out


@pytest.fixture(scope="module")
def versions(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run 1 writes 2 scenes, run 2 adds the other 2, run 3 reprocesses all 4 with another cloud
    threshold (stale). HEAD values are kept after each run."""
    tmp = tmp_path_factory.mktemp("virtual")
    catalog = tmp / "catalog"
    out: dict[str, Any] = {"catalog": catalog, "runs": [], "heads": []}
    steps = {"cloudmask": {"method": "scl"}}
    for source, cloud in (
        (_source(sample, max_items=2), {"scl_classes": [3, 8, 9, 10]}),
        (_source(sample), {"scl_classes": [3, 8, 9, 10]}),
        (_source(sample), {"scl_classes": [3, 9, 10]}),
    ):
        mask = {**steps["cloudmask"], **cloud}
        cfg = write_config(
            tmp, sample, source, steps={"cloudmask": mask}, run={"executor": "serial"}
        )
        summary = run(load_config(cfg))
        assert summary.snapshot_id is not None
        out["runs"].append(summary)
        out["heads"].append(open_virtual_cube(catalog).load())
    return out


def test_head_equals_the_odc_view(versions: dict[str, Any]) -> None:
    catalog = versions["catalog"]
    virtual = open_virtual_cube(catalog)
    odc = open_cube(catalog)
    assert list(virtual.data_vars) == list(odc.data_vars)
    assert virtual.B04.dims == ("time", "y", "x") and virtual.B04.chunks is not None
    for name in virtual.data_vars:
        assert virtual[name].dtype == odc[name].dtype, name
        np.testing.assert_array_equal(virtual[name].values, odc[name].values, err_msg=name)
        for key in ("scale_factor", "add_offset", "nodata"):
            assert virtual[name].attrs[key] == odc[name].attrs[key], (name, key)
    np.testing.assert_array_equal(virtual.x.values, odc.x.values)
    np.testing.assert_array_equal(virtual.y.values, odc.y.values)
    assert (virtual.time.values == odc.time.values).all()
    assert virtual.attrs["crs"] == "EPSG:32633"
    assert virtual.attrs["stac2cube_snapshot"] == versions["runs"][-1].snapshot_id
    stacked = open_virtual_cube(catalog, ["B02", "B04"], band_dim=True)
    assert stacked.dims == ("time", "band", "y", "x")
    np.testing.assert_array_equal(stacked.sel(band="B04").values, odc.B04.values)
    with pytest.raises(CatalogError, match="share dtype and nodata"):
        open_virtual_cube(catalog, ["B04", "SCL"], band_dim=True)


def test_each_run_is_a_tagged_snapshot(versions: dict[str, Any]) -> None:
    runs = versions["runs"]
    found = cube_versions(versions["catalog"])
    assert [v.snapshot_id for v in found[:3]] == [r.snapshot_id for r in reversed(runs)]
    assert [v.run_id for v in found[:3]] == [r.run_id for r in reversed(runs)]
    assert all(v.tags == (f"run-{v.run_id}",) for v in found[:3])
    with pytest.raises(CatalogError, match="no version of the virtual cube"):
        open_virtual_cube(versions["catalog"], version="no-such-run")


def test_time_travel_after_an_update_and_a_reprocessing(versions: dict[str, Any]) -> None:
    catalog, runs, heads = versions["catalog"], versions["runs"], versions["heads"]
    assert [h.sizes["time"] for h in heads] == [2, 4, 4]
    # run 3 reprocessed every item with another cloud rule: its masks differ from run 2's
    assert not np.array_equal(heads[1].CLOUD_MASK.values, heads[2].CLOUD_MASK.values)
    for k, run_k in enumerate(runs):
        for version in (run_k.run_id, run_k.snapshot_id, f"run-{run_k.run_id}"):
            old = open_virtual_cube(catalog, version=version)
            for name in heads[k].data_vars:
                np.testing.assert_array_equal(old[name].values, heads[k][name].values, err_msg=name)
            assert (old.time.values == heads[k].time.values).all()
    # the reprocessed items' earlier COGs are kept for the earlier snapshots, by hard link
    links = cube_dir(catalog) / LINKS_DIR
    assert all(len(list(d.iterdir())) == 2 for d in links.iterdir())


def test_updates_append_and_replace_only_their_items(versions: dict[str, Any]) -> None:
    catalog, runs = versions["catalog"], versions["runs"]
    appended = _updated_time_steps(catalog, runs[0].snapshot_id, runs[1].snapshot_id)
    assert appended and all(steps == {2, 3} for steps in appended.values())
    replaced = _updated_time_steps(catalog, runs[1].snapshot_id, runs[2].snapshot_id)
    assert replaced and all(steps == {0, 1, 2, 3} for steps in replaced.values())
    assert len(head_items(catalog)) == 4


def test_kerchunk_export_has_the_same_references(versions: dict[str, Any]) -> None:
    catalog = versions["catalog"]
    store = CatalogStore.open(catalog)
    item_id = store.item_ids()[0]
    exported = json.loads((catalog / "_kerchunk" / f"{item_id}.json").read_text())["assets"]
    link = next((cube_dir(catalog) / LINKS_DIR / item_id).iterdir()) / "B04.tif"
    ours = item_manifests({"B04": link})["B04"]
    want = {k: [e["offset"], e["length"]] for k, e in ours.manifest.dict().items()}
    assert {k: v[1:] for k, v in exported["B04"]["chunks"].items()} == want
    assert exported["B04"]["zarr.json"] == json.loads(json.dumps(ours.metadata.to_dict()))


def test_a_cog_changed_after_its_snapshot_fails_the_read(
    versions: dict[str, Any], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(versions["catalog"], catalog)
    from stac2cube.catalog.virtual import rebuild_virtual_cube

    with pytest.raises(CatalogError, match="moved or copied"):
        open_virtual_cube(catalog)
    assert len(rebuild_virtual_cube(catalog).appended) == 4
    assert check_catalog(catalog).problems == ()
    store = CatalogStore.open(catalog)
    victim, other = store.item_ids()[:2]
    # rewritten in place (same file): what the snapshot references is no longer what it read
    shutil.copyfile(store.item_dir(other) / "B04.tif", store.item_dir(victim) / "B04.tif")
    cube = open_virtual_cube(catalog, ["B04"])
    with pytest.raises(Exception, match=f"(?s)has changed.*{victim}"):
        cube.B04.load()
    problems = check_catalog(catalog).problems
    assert any(p.startswith(f"{victim}: B04: the virtual cube cannot read it") for p in problems)


def test_items_encoded_differently_are_decoded_per_item(
    versions: dict[str, Any], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(versions["catalog"], catalog)
    shutil.rmtree(cube_dir(catalog))
    store = CatalogStore.open(catalog)
    first = store.item_ids()[0]
    doc = store.read_item(first)
    assert doc is not None
    rb = doc["assets"]["B04"]["raster:bands"][0]
    rb["scale"], rb["offset"] = 0.0002, -0.1  # e.g. a later processing baseline
    store.item_path(first).write_text(json.dumps(doc))
    commit_snapshot(store, "mixed", store.item_ids())
    with pytest.raises(CatalogError, match=r"B04 is encoded differently.*decode=True"):
        open_virtual_cube(catalog, ["B04"])
    raw = open_cube(catalog, bands=["B04"]).B04
    decoded = open_virtual_cube(catalog, ["B04"], decode=True).B04
    assert decoded.dtype == np.float32
    for t, item_id in enumerate(decoded.item_id.values):
        scale, offset = (0.0002, -0.1) if item_id == first else (0.0001, 0.0)
        dn = raw.isel(time=t).values
        want = np.where(dn == -32768, np.nan, dn.astype("float32") * np.float32(scale) + offset)
        np.testing.assert_allclose(decoded.isel(time=t).values, want, rtol=1e-6)


def test_an_item_reprocessed_with_another_encoding_ends_the_shared_one(
    versions: dict[str, Any], tmp_path: Path
) -> None:
    """The cube's root attributes keep each band's encoding while every item shares it (an
    open then reads no encoding records); an item replaced with another encoding ends that,
    and raw values are refused as when the items differed from the start."""
    import zarr

    from stac2cube.catalog.virtual import ENCODINGS_ATTR, rebuild_virtual_cube

    catalog = tmp_path / "catalog"
    shutil.copytree(versions["catalog"], catalog)
    shutil.rmtree(cube_dir(catalog))
    rebuild_virtual_cube(catalog)

    def shared() -> dict[str, Any]:
        session = repository(catalog).readonly_session("main")
        return dict(zarr.open_group(session.store, mode="r").attrs)[ENCODINGS_ATTR]

    assert shared()["B04"] == ["0.0001", "0.0", "-32768.0"]
    before = open_virtual_cube(catalog, ["B04"])
    assert before.B04.attrs["scale_factor"] == 0.0001 and ENCODINGS_ATTR not in before.attrs
    # a cube written before the attribute reads the records, with the same result
    session = repository(catalog).writable_session("main")
    del zarr.open_group(session.store, mode="r+").attrs[ENCODINGS_ATTR]
    session.commit("as written before the attribute")
    old = open_virtual_cube(catalog, ["B04"])
    assert old.B04.attrs == before.B04.attrs
    np.testing.assert_array_equal(old.B04.values, before.B04.values)
    rebuild_virtual_cube(catalog)
    store = CatalogStore.open(catalog)
    first = store.item_ids()[0]
    doc = store.read_item(first)
    assert doc is not None
    rb = doc["assets"]["B04"]["raster:bands"][0]
    rb["scale"], rb["offset"] = 0.0002, -0.1
    doc["properties"]["stac2cube:finished"] = "2031-01-01T00:00:00Z"  # a new version
    store.item_path(first).write_text(json.dumps(doc))
    assert commit_snapshot(store, "reprocessed", [first]).replaced == [first]
    assert shared()["B04"] is None and shared()["B02"] == ["0.0001", "0.0", "-32768.0"]
    with pytest.raises(CatalogError, match=r"B04 is encoded differently"):
        open_virtual_cube(catalog, ["B04"])
    decoded = open_virtual_cube(catalog, ["B04"], decode=True).B04
    t = list(decoded.item_id.values).index(first)
    dn = before.B04.isel(time=t).values
    want = np.where(dn == -32768, np.nan, dn.astype("float32") * np.float32(0.0002) - 0.1)
    np.testing.assert_allclose(decoded.isel(time=t).values, want, rtol=1e-6)


@pytest.mark.parametrize("steps", [4097, 100_008])
@pytest.mark.parametrize("yx", [(122, 121), (1002, 1002), (10980, 10980), (4, 4)])
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32"])
def test_chunks_of_a_long_time_axis_are_dasks(steps: int, yx: tuple[int, int], dtype: str) -> None:
    """The virtual cube's dask chunks, worked out on a short time axis and repeated, are the
    ones dask's auto-chunking gives on the whole axis."""
    from dask.array.core import normalize_chunks

    from stac2cube.cube.virtual import _dask_chunks

    for stored in ((1, 512, 512), (1, *yx)):
        wanted = ("auto", "auto", "auto")
        shape = (steps, *yx)
        assert _dask_chunks(wanted, shape, np.dtype(dtype), stored) == normalize_chunks(
            wanted, shape, dtype=np.dtype(dtype), previous_chunks=stored
        ), stored
