from __future__ import annotations

from pathlib import Path

import pytest

from stac2cube.catalog import CatalogStore, load_template, stac2cube_schema
from stac2cube.errors import CatalogError


def test_templates_render_and_missing_collection_is_clear(tmp_path: Path) -> None:
    coll = load_template(
        "collection.json",
        collection_id="c",
        title='a "quoted" title',
        description="d",
        license="CC-BY-4.0",
    )
    assert coll["title"] == 'a "quoted" title' and coll["license"] == "CC-BY-4.0"
    assert stac2cube_schema()["$id"].endswith("/v1.0.0/schema.json")
    with pytest.raises(CatalogError, match="needs a value"):
        load_template("collection.json", collection_id="c")
    with pytest.raises(CatalogError, match=r"is .* a stac2cube catalog"):
        CatalogStore(tmp_path / "nothing", "ard").read_collection()
