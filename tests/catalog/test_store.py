from __future__ import annotations

from pathlib import Path

import pystac
import pytest

from stac2cube.catalog import REMOVING_MARK, CatalogStore
from stac2cube.io.atomic import TMP_MARK, write_json_atomic


def _item(item_id: str, day: int, x: float) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "stac_extensions": [],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x, 0], [x + 1, 0], [x + 1, 1], [x, 1], [x, 0]]],
        },
        "bbox": [x, 0, x + 1, 1],
        "properties": {"datetime": f"2023-06-{day:02d}T10:00:00Z"},
        "assets": {"B04": {"href": "./B04.tif", "type": "image/tiff", "roles": ["data"]}},
        "links": [],
    }


def test_create_add_and_read_back(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path / "cat", "ard", title="My ARD", description="d")
    store.create()
    store.create()  # idempotent
    store.add_item(_item("a", 5, 10.0))
    store.add_item(_item("b", 2, 12.0))
    store.add_item(_item("a", 5, 10.0))  # replacing keeps one link
    assert store.item_ids() == ["a", "b"]
    coll = store.read_collection()
    assert coll["title"] == "My ARD"
    assert coll["extent"]["spatial"]["bbox"][0] == [10.0, 0, 13.0, 1]
    assert coll["extent"]["temporal"]["interval"][0] == [
        "2023-06-02T10:00:00Z",
        "2023-06-05T10:00:00Z",
    ]
    assert "B04" in coll["item_assets"]
    cat = pystac.Catalog.from_file(str(store.catalog_path))
    items = list(cat.get_items(recursive=True))
    assert sorted(i.id for i in items) == ["a", "b"]
    assert items[0].collection_id == "ard"
    asset_href = items[0].assets["B04"].get_absolute_href()
    assert asset_href == str(store.item_dir(items[0].id) / "B04.tif")


def test_recover_cleans_leftovers_and_restores_a_half_replaced_item(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path, "ard")
    store.create()
    store.add_item(_item("a", 5, 10.0))
    junk = store.item_dir("a") / f"B04.tif{TMP_MARK}123-abc"
    junk.write_bytes(b"half a cog")
    staging = store.new_staging_dir("b")
    (staging / "B04.tif").write_bytes(b"a scene that never got its JSON")
    # a crash between the two renames of the fallback swap: only the old version exists
    store.item_dir("a").rename(store.item_dir("a").with_name(".replaced-a"))
    assert store.read_item("a") is None
    assert sorted(p.name for p in store.recover()) == sorted(
        [".replaced-a", ".staging-b", junk.name]
    )
    assert store.read_item("a") is not None and not junk.exists() and not staging.exists()


def test_the_clean_mark_is_taken_once_and_limits_recovery_to_the_collection_listing(
    tmp_path: Path,
) -> None:
    """After a run that ended normally, recovery skips the walk for temporary files (only a
    killed run leaves them) but still removes staging directories; without the mark it does
    everything."""
    store = CatalogStore(tmp_path, "ard")
    store.create()
    store.add_item(_item("a", 5, 10.0))
    assert store.take_clean_mark() is False  # a new catalog: no run ended here yet
    store.set_clean_mark()
    assert store.take_clean_mark() is True
    assert store.take_clean_mark() is False  # taken: a crash from here on leaves no mark
    junk = store.item_dir("a") / f"B04.tif{TMP_MARK}123-abc"
    junk.write_bytes(b"half a cog")
    staging = store.new_staging_dir("b")
    assert [p.name for p in store.recover(after_clean_exit=True)] == [".staging-b"]
    assert junk.exists() and not staging.exists()
    assert [p.name for p in store.recover()] == [junk.name] and not junk.exists()


def test_recover_links_an_item_swapped_in_but_not_linked(tmp_path: Path) -> None:
    """A crash inside add_item after the directory swap and before the collection link leaves a
    complete item that nothing links: the next run's recovery links it (it must not be taken for
    an item the catalog holds, nor be left as an orphan)."""
    store = CatalogStore(tmp_path, "ard")
    store.create()
    store.add_item(_item("a", 5, 10.0))
    doc = {**_item("b", 7, 12.0), "collection": "ard"}
    staging = store.new_staging_dir("b")
    (staging / "B04.tif").write_bytes(b"pixels")
    write_json_atomic(staging / "b.json", doc)
    store._swap_in("b", staging)  # ... and the process is killed here
    assert store.item_ids() == ["a"] and store.read_item("b") is not None
    assert [p.name for p in store.recover()] == ["b"]
    assert store.item_ids() == ["a", "b"]
    assert store.read_collection()["extent"]["spatial"]["bbox"][0] == [10.0, 0, 13.0, 1]
    assert store.recover() == []  # nothing left to do
    (store.item_dir("a").parent / "not-an-item").mkdir()  # a directory without its JSON stays
    assert store.recover() == [] and store.item_ids() == ["a", "b"]


@pytest.mark.parametrize("unlinked", [False, True])
def test_recover_finishes_an_interrupted_removal(tmp_path: Path, unlinked: bool) -> None:
    """A removal killed after marking the directory (and maybe after unlinking it) is finished
    by recovery, never undone by linking the item again."""
    store = CatalogStore(tmp_path, "ard")
    store.create()
    store.add_item(_item("a", 5, 10.0))
    store.add_item(_item("b", 7, 12.0))
    (store.item_dir("b") / REMOVING_MARK).touch()
    if unlinked:
        coll = store.read_collection()
        coll["links"] = [ln for ln in coll["links"] if "./b/" not in ln.get("href", "")]
        write_json_atomic(store.collection_path, coll)
    assert [p.name for p in store.recover()] == ["b"]
    assert store.item_ids() == ["a"] and not store.item_dir("b").exists()
    assert store.remove_item("a") and not store.item_dir("a").exists() and store.item_ids() == []


def test_replacing_an_item_swaps_the_whole_directory(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path, "ard")
    store.create()
    first = store.new_staging_dir("a")
    (first / "B04.tif").write_bytes(b"v1")
    (first / "OLD.tif").write_bytes(b"only in v1")
    store.add_item(_item("a", 5, 10.0))
    second = store.new_staging_dir("a")
    (second / "B04.tif").write_bytes(b"v2")
    store.add_item(_item("a", 5, 10.0))
    assert (store.item_dir("a") / "B04.tif").read_bytes() == b"v2"
    assert not (store.item_dir("a") / "OLD.tif").exists()
    assert sorted(p.name for p in store.item_dir("a").parent.iterdir()) == ["a", "collection.json"]
