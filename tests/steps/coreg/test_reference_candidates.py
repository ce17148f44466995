"""Reference candidates are kept as they are read: only the best ``keep`` bands are held, and
the reference built from them is the one built from all candidates."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pystac
import pytest

from stac2cube.bands import MASK_CLEAR, MASK_CLOUD
from stac2cube.errors import AssetReadError
from stac2cube.references import choose_reference
from stac2cube.references.build import reference_candidates
from stac2cube.sample.coreg_scenes import coreg_geobox
from stac2cube.steps.base import Scene

N = 8


def _candidates() -> tuple[list[pystac.Item], dict[str, Scene]]:
    """N scenes: textured or flat, with clouds over different shares of the grid, one that
    cannot be read, one without a clear pixel; provider cloud cover not in clearness order."""
    gbox = coreg_geobox(64)
    rng = np.random.default_rng(5)
    texture = rng.normal(0.2, 0.05, (64, 64)).astype(np.float32)
    items, scenes = [], {}
    for k in range(N):
        item_id = f"s{k}"
        when = dt.datetime(2024, 5, 1 + k, tzinfo=dt.UTC)
        item = pystac.Item(item_id, None, None, when, {"eo:cloud_cover": float((k * 37) % 11)})
        items.append(item)
        band = texture + np.float32(0.01 * k) if k % 3 else np.full((64, 64), 0.2, np.float32)
        mask = np.full((64, 64), MASK_CLEAR, np.uint8)
        mask[: (k * 7) % 64] = MASK_CLOUD  # not clear
        if k == 5:
            mask[:] = MASK_CLOUD  # no clear pixel
        scenes[item_id] = Scene(
            item_id=item_id,
            geobox=gbox,
            bands={"B08": band},
            classes={"CLOUD_MASK": mask},
            source_properties=item.properties,
        )
    return items, scenes


@pytest.mark.parametrize("mode,n", [("clearest", 5), ("median", 3), ("median", 1)])
def test_keeping_the_best_candidates_gives_the_same_reference(mode: str, n: int) -> None:
    items, scenes = _candidates()

    def read(item: pystac.Item) -> Scene:
        if item.id == "s4":
            raise AssetReadError("refused")
        return scenes[item.id]

    every, _, _ = reference_candidates(read, items, "B08", N)
    assert len(every) == N - 1  # s4 could not be read
    want, want_ids = choose_reference(every, mode, n)  # type: ignore[arg-type]
    keep = 1 if mode == "clearest" else n
    kept, times, scores = reference_candidates(read, items, "B08", N, keep=keep)
    assert len(kept) == keep == len(scores)
    # in the order they were read, which is by provider cloud cover
    order = [it.id for it in sorted(items, key=lambda it: it.properties["eo:cloud_cover"])]
    assert [c[0] for c in kept] == [i for i in order if i in {c[0] for c in kept}]
    got, got_ids = choose_reference(kept, mode, n, scores=scores)  # type: ignore[arg-type]
    assert got_ids == want_ids and set(got_ids) <= set(times)
    np.testing.assert_array_equal(got, want)


def test_scores_must_match_the_candidates() -> None:
    items, scenes = _candidates()
    kept, _, scores = reference_candidates(lambda it: scenes[it.id], items, "B08", N, keep=2)
    with pytest.raises(ValueError, match="2 scores for 1"):
        choose_reference(kept[:1], "clearest", scores=scores)
