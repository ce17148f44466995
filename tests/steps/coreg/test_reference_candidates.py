"""Reference candidates are kept as they are read: only the best ``keep`` bands are held, and
the reference built from them is the one built from all candidates."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pystac
import pytest

from stac2cube.bands import MASK_CLEAR, MASK_CLOUD
from stac2cube.errors import AssetReadError
from stac2cube.references import choose_reference, texture_score
from stac2cube.references.build import reference_candidates
from stac2cube.references.images import STRIP_ROWS
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


def _texture_whole(band: np.ndarray, bad: np.ndarray) -> float:
    """texture_score's definition over the whole band at once (float64 temporaries of 8x
    its size: what the strips avoid)."""
    a = np.asarray(band, dtype=np.float64)
    ok = np.isfinite(a) & ~bad

    def box3(x: np.ndarray) -> np.ndarray:
        return (
            sum(
                x[i : x.shape[0] - 2 + i, j : x.shape[1] - 2 + j]
                for i in range(3)
                for j in range(3)
            )
            / 9.0
        )  # type: ignore[no-any-return]

    s, okb = box3(np.where(ok, a, 0.0)), box3(ok.astype(np.float64)) > 1.0 - 1e-9
    okx, oky = okb[:, 1:] & okb[:, :-1], okb[1:] & okb[:-1]
    energy = np.sum(np.diff(s, axis=1)[okx] ** 2) + np.sum(np.diff(s, axis=0)[oky] ** 2)
    n = okx.sum() + oky.sum()
    return float(np.sqrt(2.0 * energy / n)) if n >= 16 else 0.0


@pytest.mark.parametrize("shape", [(5, 9), (8, 12), (97, 40), (1100, 6)])
def test_texture_in_strips_is_the_texture_of_the_whole_band(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(11)
    band = rng.normal(0.2, 0.05, shape).astype(np.float32)
    band[rng.random(shape) < 0.02] = np.nan
    bad = rng.random(shape) < 0.05
    want = _texture_whole(band, bad)
    assert (want > 0.0) == (shape != (5, 9))  # too few valid gradients in 5 x 9
    for rows in (1, 2, 3, 50, STRIP_ROWS):
        assert texture_score(band, bad, strip_rows=rows) == pytest.approx(want, rel=1e-12)


def test_a_median_reference_taller_than_a_strip_is_the_per_pixel_median() -> None:
    rng = np.random.default_rng(12)
    shape = (STRIP_ROWS * 2 + 37, 9)
    cands = []
    for k in range(4):
        band = rng.normal(0.2, 0.05, shape).astype(np.float32)
        bad = rng.random(shape) < 0.3
        bad[:, k] = True  # column k: one candidate fewer; all four bad in none
        cands.append((f"c{k}", band, bad))
    cands[0][2][5, :] = cands[1][2][5, :] = cands[2][2][5, :] = cands[3][2][5, :] = True
    got, ids = choose_reference(cands, "median", 4, min_texture=0.0)
    stack = np.stack([np.where(bad, np.nan, band) for _, band, bad in cands])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(stack, axis=0).astype(np.float32)
    assert sorted(ids) == ["c0", "c1", "c2", "c3"]
    assert np.isnan(got[5]).all()  # no candidate is clear there
    np.testing.assert_array_equal(got, want)
