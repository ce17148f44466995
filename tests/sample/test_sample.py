"""Tests of the synthetic Sentinel-2 sample generator (stac2cube.sample)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from numpy.typing import NDArray
from scipy import ndimage

from stac2cube.errors import CatalogError, ConfigError
from stac2cube.sample import (
    AEROSOL_PATH,
    BANDS,
    LANDCOVER_CLASSES,
    NOISE_SIGMA,
    SURFACE_TYPES,
    TRANSMITTANCE,
    Sample,
    SampleScene,
    SampleSpec,
    generate_sample,
    load_sample,
)

L2A_KEYS = {
    "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
    "swir16", "swir22", "scl",
}  # fmt: skip
L1C_KEYS = (L2A_KEYS - {"scl"}) | {"cirrus"}
METADATA_KEYS = {"granule_metadata"}  # the tile metadata (MTD_TL.xml), not a raster
BAND_INDEX = {b.key: i for i, b in enumerate(BANDS)}
RES = {b.key: b.res for b in BANDS} | {"scl": 20}
SCHEMAS = Path("/work/shared/data/stac/schemas")

F64 = NDArray[np.float64]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return generate_sample(tmp_path_factory.mktemp("sample"))


def read(path: str | Path) -> NDArray[Any]:
    with rasterio.open(path) as src:
        return np.asarray(src.read())


def decode_l2a(scene: SampleScene, key: str) -> F64:
    """DN -> reflectance the way a harmonising reader must do it for Earth Search v1 items."""
    asset = scene.l2a_item["assets"][key]
    rb = asset["raster:bands"][0]
    dn = read(asset["href"])[0].astype(np.float64)
    offset = rb["offset"]
    if scene.l2a_item["properties"]["earthsearch:boa_offset_applied"]:
        offset = 0.0  # Element84 already removed the +1000; the listed -0.1 must not be applied
    out: F64 = dn * rb["scale"] + offset
    out[dn == 0] = np.nan
    return out


def block_mean(a: F64, f: int, shape: tuple[int, int]) -> F64:
    h, w = a.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    pad = np.pad(a, ((0, hp - h), (0, wp - w)), mode="edge")
    out: F64 = pad.reshape(hp // f, f, wp // f, f).mean(axis=(1, 3))
    return out[: shape[0], : shape[1]]


def clear_at(truth: NDArray[Any], f: int, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Native pixels whose whole f x f block of 10 m truth is clear and inside the 10 m grid."""
    h, w = truth.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    t = np.pad(truth.astype(np.int32), ((0, hp - h), (0, wp - w)), constant_values=999)
    blocks = t.reshape(hp // f, f, wp // f, f)
    return np.asarray((blocks == 0).all(axis=(1, 3))[: shape[0], : shape[1]])


# ------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_arrays_and_items(tmp_path: Path) -> None:
    spec = SampleSpec(n_dates=2, width=96, height=84, seed=7)
    a = generate_sample(tmp_path / "a", spec)
    b = generate_sample(tmp_path / "b", spec)
    c = generate_sample(tmp_path / "c", SampleSpec(n_dates=2, width=96, height=84, seed=8))
    for sa, sb, sc in zip(a.scenes, b.scenes, c.scenes, strict=True):
        for key in L2A_KEYS:
            xa = read(sa.l2a_item["assets"][key]["href"])
            np.testing.assert_array_equal(xa, read(sb.l2a_item["assets"][key]["href"]))
        for key in L1C_KEYS:
            np.testing.assert_array_equal(
                read(sa.l1c_item["assets"][key]["href"]), read(sb.l1c_item["assets"][key]["href"])
            )
        np.testing.assert_array_equal(read(sa.truth_path), read(sb.truth_path))
        np.testing.assert_array_equal(read(sa.surface_path), read(sb.surface_path))
        # Items are equal up to the root directory in their absolute hrefs.
        ja = json.dumps(sa.l2a_item).replace(str(a.root), "ROOT")
        assert ja == json.dumps(sb.l2a_item).replace(str(b.root), "ROOT")
        assert sa.cloud_fraction == sb.cloud_fraction
        # Another seed gives another scene.
        assert not np.array_equal(read(sa.surface_path), read(sc.surface_path))


def test_first_dates_do_not_depend_on_n_dates(tmp_path: Path) -> None:
    one = generate_sample(
        tmp_path / "one", SampleSpec(n_dates=1, width=72, height=72, nodata_date=None)
    )
    two = generate_sample(
        tmp_path / "two", SampleSpec(n_dates=2, width=72, height=72, nodata_date=None)
    )
    np.testing.assert_array_equal(
        read(one.scenes[0].l2a_item["assets"]["red"]["href"]),
        read(two.scenes[0].l2a_item["assets"]["red"]["href"]),
    )
    assert one.scenes[0].l2a_item["id"] == two.scenes[0].l2a_item["id"]


# ------------------------------------------------------------------------------ grids


def test_assets_are_on_native_grids_aligned_to_origin(sample: Sample) -> None:
    spec = sample.spec
    x0, y0 = spec.origin
    for scene in sample.scenes:
        for item in (scene.l2a_item, scene.l1c_item):
            for key, asset in item["assets"].items():
                if key in METADATA_KEYS:
                    continue
                res = RES[key]
                f = res // 10
                shape = (-(-spec.height // f), -(-spec.width // f))
                with rasterio.open(asset["href"]) as src:
                    assert src.crs.to_epsg() == spec.epsg
                    assert (src.height, src.width) == shape == tuple(asset["proj:shape"])
                    assert tuple(src.transform)[:6] == (res, 0.0, x0, 0.0, -res, y0)
                    assert list(src.transform)[:6] == asset["proj:transform"]
                    assert src.nodata == 0
                    assert src.dtypes[0] == ("uint8" if key == "scl" else "uint16")
                    assert src.profile["tiled"] and src.profile["compress"] == "deflate"
                assert asset["raster:bands"][0]["spatial_resolution"] == res
        for path, count, dtype in (
            (scene.truth_path, 1, "uint8"),
            (scene.surface_path, 13, "float32"),
        ):
            with rasterio.open(path) as src:
                assert (src.count, src.height, src.width) == (count, spec.height, spec.width)
                assert src.dtypes[0] == dtype
                assert tuple(src.transform)[:6] == (10.0, 0.0, x0, 0.0, -10.0, y0)


def test_coarse_bands_are_block_means_not_point_samples(sample: Sample) -> None:
    """A 60 m pixel equals the mean of its 36 surface pixels, not the value of one of them."""
    scene = sample.scenes[-1]  # the clear date
    truth = read(scene.truth_path)[0]
    surf = read(scene.surface_path).astype(np.float64)
    b01 = decode_l2a(scene, "coastal")
    ok = clear_at(truth, 6, b01.shape) & np.isfinite(b01)
    mean = block_mean(surf[0], 6, b01.shape)
    point = surf[0][2::6, 2::6]
    ph, pw = point.shape
    err_mean = np.abs(b01 - mean)[ok].mean()
    err_point = np.abs(b01[:ph, :pw] - point)[ok[:ph, :pw]].mean()
    assert err_mean < 0.006
    assert err_mean < 0.8 * err_point


# ------------------------------------------------------------------------------ STAC


def test_items_parse_and_have_earth_search_shape(sample: Sample) -> None:
    dates = []
    for i, scene in enumerate(sample.scenes):
        for item, coll, keys in (
            (scene.l2a_item, "sentinel-2-l2a", L2A_KEYS),
            (scene.l1c_item, "sentinel-2-l1c", L1C_KEYS),
        ):
            parsed = pystac.Item.from_dict(item)
            assert parsed.collection_id == coll
            assert set(item["assets"]) == keys | METADATA_KEYS
            assert re.fullmatch(r"S2[AB]_33TWN_\d{8}_0_L(2A|1C)", item["id"])
            props = item["properties"]
            assert props["platform"] == ("sentinel-2b" if i % 2 == 0 else "sentinel-2a")
            assert props["proj:epsg"] == 32633 and props["mgrs:grid_square"] == "WN"
            assert 50 < props["view:sun_elevation"] < 70  # June, 47.8 N, 10 UTC
            assert 120 < props["view:sun_azimuth"] < 180
            self_href = parsed.get_single_link("self").href  # type: ignore[union-attr]
            assert Path(self_href).is_absolute() and json.loads(Path(self_href).read_text()) == item
            coll_href = parsed.get_single_link("collection").href  # type: ignore[union-attr]
            assert pystac.Collection.from_file(coll_href).id == coll
            for key, asset in item["assets"].items():
                assert Path(asset["href"]).is_absolute() and Path(asset["href"]).exists()
                if key in METADATA_KEYS:
                    assert asset["roles"] == ["metadata"]
                    continue
                roles = ["data"] if key == "scl" else ["data", "reflectance"]
                assert asset["roles"] == roles
                if key != "scl":
                    assert asset["eo:bands"][0]["name"] == BANDS[BAND_INDEX[key]].name
                    assert asset["raster:bands"][0]["scale"] == 0.0001
        assert "earthsearch:boa_offset_applied" in scene.l2a_item["properties"]
        assert "earthsearch:boa_offset_applied" not in scene.l1c_item["properties"]
        dates.append(np.datetime64(scene.l2a_item["properties"]["datetime"][:10]))
    assert all(np.diff(dates) == np.timedelta64(5, "D"))
    fc = pystac.ItemCollection.from_file(str(sample.l2a_items_path))
    assert [it.id for it in fc] == [s.l2a_item["id"] for s in sample.scenes]
    assert len(pystac.ItemCollection.from_file(str(sample.l1c_items_path))) == len(sample.scenes)


@pytest.mark.skipif(not (SCHEMAS / "index.json").exists(), reason="offline STAC schemas missing")
def test_items_and_collections_validate_against_stac_schemas(sample: Sample) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    index = json.loads((SCHEMAS / "index.json").read_text())
    resources = [
        (url, referencing.Resource.from_contents(json.loads((SCHEMAS / rel).read_text())))
        for url, rel in index.items()
    ]
    registry = referencing.Registry().with_resources(resources)

    def validate(obj: dict[str, Any], url: str) -> None:
        schema = registry.contents(url)
        jsonschema.Draft7Validator(schema, registry=registry).validate(obj)

    base = "https://schemas.stacspec.org/v1.0.0/"
    for scene in sample.scenes:
        for item in (scene.l2a_item, scene.l1c_item):
            validate(item, base + "item-spec/json-schema/item.json")
            for ext in item["stac_extensions"]:
                validate(item, ext)
    for path in (sample.l2a_collection_path, sample.l1c_collection_path):
        validate(json.loads(path.read_text()), base + "collection-spec/json-schema/collection.json")


# ------------------------------------------------------------------------------ radiometry


def test_dn_round_trip_against_surface_for_every_radiometry_variant(sample: Sample) -> None:
    variants = set()
    for scene in sample.scenes:
        props = scene.l2a_item["properties"]
        offset = scene.l2a_item["assets"]["red"]["raster:bands"][0]["offset"]
        variants.add(
            (props["s2:processing_baseline"], offset, props["earthsearch:boa_offset_applied"])
        )
        truth = read(scene.truth_path)[0]
        surf = read(scene.surface_path).astype(np.float64)
        for key in ("blue", "red", "nir", "rededge2", "swir16", "coastal"):
            refl = decode_l2a(scene, key)
            f = RES[key] // 10
            ok = clear_at(truth, f, refl.shape) & np.isfinite(refl)
            expected = block_mean(surf[BAND_INDEX[key]], f, refl.shape)
            ok &= expected > 0.02  # avoid DN clipping of noisy dark water at DN 1
            assert ok.sum() > 100
            diff = (refl - expected)[ok]
            i = BAND_INDEX[key]
            sigma = NOISE_SIGMA[i] / TRANSMITTANCE[i]
            # The L2A correction removes only the smooth part of the haze: the residual (a
            # share of the aerosol path) adds to the noise, most in the blue.
            haze = 0.25 * AEROSOL_PATH[i] / TRANSMITTANCE[i]
            assert abs(np.median(diff)) < 0.0015 + haze, (scene.l2a_item["id"], key)
            assert 0.5 * sigma < diff.std() < 2.0 * sigma + haze, (scene.l2a_item["id"], key)
        if props["earthsearch:boa_offset_applied"]:
            # Applying the listed offset as well would be off by 0.1: the pair must be interpreted.
            dn = read(scene.l2a_item["assets"]["red"]["href"])[0].astype(np.float64)
            naive = dn * 1e-4 + offset
            ok = clear_at(truth, 1, naive.shape)
            assert np.median((naive - surf[3])[ok]) < -0.09
    assert variants == {("03.01", 0.0, False), ("05.09", -0.1, False), ("05.10", -0.1, True)}


def test_dn_offsets_in_pixels_match_baselines(sample: Sample) -> None:
    for scene in sample.scenes:
        baseline = float(scene.l2a_item["properties"]["s2:processing_baseline"])
        l1c_off = scene.l1c_item["assets"]["red"]["raster:bands"][0]["offset"]
        assert scene.l1c_dn_offset == (1000 if baseline >= 4 else 0)
        assert l1c_off == (-0.1 if baseline >= 4 else 0.0)
        dn = read(scene.l1c_item["assets"]["blue"]["href"])[0]
        valid = dn > 0
        # Clear TOA blue is >= ~0.05 (path radiance), so the offset shows in the darkest DN.
        assert np.percentile(dn[valid], 1) > (1300 if baseline >= 4 else 300)
        assert dn.max() <= 32767


def test_l1c_is_top_of_atmosphere(sample: Sample) -> None:
    for scene in sample.scenes:
        truth = read(scene.truth_path)[0]
        clear = clear_at(truth, 1, truth.shape)
        toa = {}
        for key in ("blue", "nir"):
            asset = scene.l1c_item["assets"][key]
            rb = asset["raster:bands"][0]
            toa[key] = read(asset["href"])[0] * rb["scale"] + rb["offset"]
        boa_blue = decode_l2a(scene, "blue")
        # Path radiance brightens blue; transmittance < 1 darkens bright NIR.
        assert np.median((toa["blue"] - boa_blue)[clear]) > 0.02
        boa_nir = decode_l2a(scene, "nir")
        veg = clear & (boa_nir > 0.3)
        assert np.median((toa["nir"] - boa_nir)[veg]) < 0
        cirrus = scene.l1c_item["assets"]["cirrus"]
        b10 = read(cirrus["href"])[0] * 1e-4 + cirrus["raster:bands"][0]["offset"]
        clear60 = clear_at(truth, 6, b10.shape)
        assert np.median(b10[clear60]) < 0.01
        cirrus60 = block_mean((truth == 3).astype(np.float64), 6, b10.shape) > 0.8
        if cirrus60.sum() > 3:
            assert np.median(b10[cirrus60]) > np.median(b10[clear60]) + 0.008


# ------------------------------------------------------------------------------ clouds


def test_cloud_fraction_differs_per_date_and_matches_truth(sample: Sample) -> None:
    fractions = []
    for scene in sample.scenes:
        truth = read(scene.truth_path)[0]
        valid = truth != 255
        assert set(np.unique(truth)) <= {0, 1, 2, 3, 4, 255}
        expected = np.isin(truth[valid], (1, 2, 3)).mean()
        assert scene.cloud_fraction == pytest.approx(expected)
        fractions.append(scene.cloud_fraction)
    assert len({round(f, 2) for f in fractions}) == len(fractions)
    assert min(fractions) == 0.0 and max(fractions) > 0.25
    # Targets 5 %, 20 %, 40 %, 0 %: the realised fractions keep that order.
    assert np.argsort(fractions).tolist() == [3, 0, 1, 2]
    covers = [s.l2a_item["properties"]["eo:cloud_cover"] for s in sample.scenes]
    assert np.argmax(covers) == np.argmax(fractions)
    assert covers[3] < 2.0


def test_truth_classes_are_consistent_with_pixels(sample: Sample) -> None:
    scene = max(sample.scenes, key=lambda s: s.cloud_fraction)
    truth = read(scene.truth_path)[0]
    surf = read(scene.surface_path)
    blue = decode_l2a(scene, "blue")
    thick, thin, clear = truth == 1, truth == 2, truth == 0
    assert thick.sum() > 100 and thin.sum() > 100
    assert np.median(blue[thick]) > 0.35
    # Thin cloud: brighter than the surface below, darker than thick cloud. Truth class 2 also
    # holds the rims that only some bands see (the view parallax differs per band), so the
    # blue lift is checked inside the thin cloud, 3 pixels from its edge.
    thin = ndimage.binary_erosion(thin, iterations=3)
    assert thin.sum() > 100
    lift = (blue - surf[1])[thin]
    assert np.median(lift) > 0.03
    assert np.median(blue[thin]) < np.median(blue[thick])
    haze = 0.25 * AEROSOL_PATH[1] / TRANSMITTANCE[1]  # residual haze of the L2A correction
    assert abs(np.median((blue - surf[1])[clear])) < 0.002 + haze


def test_shadows_are_darker_than_the_same_surface_clear(sample: Sample) -> None:
    checked = 0
    for scene in sample.scenes:
        truth = read(scene.truth_path)[0]
        shadow = truth == 4
        if shadow.sum() < 200:
            continue
        surf = read(scene.surface_path)
        nir = decode_l2a(scene, "nir")
        ratio = nir[shadow] / surf[7][shadow]
        assert 0.15 < np.median(ratio) < 0.8
        assert np.percentile(ratio, 95) < 1.0
        checked += 1
    assert checked >= 2


def test_scl_is_derived_and_imperfect(sample: Sample) -> None:
    allowed = {0, 3, 4, 5, 6, 7, 8, 9, 10}
    for scene in sample.scenes:
        scl = read(scene.l2a_item["assets"]["scl"]["href"])[0]
        assert set(np.unique(scl)) <= allowed
        stats = scene.scl_stats
        if scene.cloud_fraction > 0.1:
            assert stats["thick_cloud_recall"] is not None and stats["thick_cloud_recall"] > 0.9
            assert stats["thin_cloud_recall"] is not None and stats["thin_cloud_recall"] < 0.95
            assert stats["shadow_recall"] is not None and 0.05 < stats["shadow_recall"] < 0.95
        props = scene.l2a_item["properties"]
        valid = scl != 0
        cover = 100 * np.isin(scl[valid], (8, 9, 10)).mean()
        assert props["eo:cloud_cover"] == pytest.approx(cover, abs=1e-4)
        assert props["s2:vegetation_percentage"] > 10  # a rural landscape
    # Vegetation and water are found where they are.
    clear = sample.scenes[-1]
    scl = read(clear.l2a_item["assets"]["scl"]["href"])[0]
    assert sample.landcover_path is not None
    lc = read(sample.landcover_path)[0][::2, ::2]
    assert (scl[lc == 1] == 6).mean() > 0.8  # lake
    assert (scl[np.isin(lc, (3, 4))] == 4).mean() > 0.8  # forest


def test_nodata_wedge(sample: Sample) -> None:
    wedged = [s for s in sample.scenes if s.nodata_fraction > 0]
    assert len(wedged) == 1
    scene = wedged[0]
    assert 0.05 < scene.nodata_fraction < 0.3
    assert read(scene.truth_path)[0][0, -1] == 255
    for item in (scene.l2a_item, scene.l1c_item):
        for key, asset in item["assets"].items():
            if key in METADATA_KEYS:
                continue
            data = read(asset["href"])[0]
            assert data[0, -1] == 0 and data[-1, 0] > 0  # upper-right corner only
            assert 0.03 < (data == 0).mean() < 0.35
        assert len(item["geometry"]["coordinates"][0]) == 6  # pentagon, closed
    for other in sample.scenes:
        if other is not scene:
            assert (read(other.l2a_item["assets"]["red"]["href"]) > 0).all()
            assert len(other.l2a_item["geometry"]["coordinates"][0]) == 5


# ------------------------------------------------------------------------------ surface


def test_surface_spectra_are_plausible(sample: Sample) -> None:
    assert sample.landcover_path is not None
    lc = read(sample.landcover_path)[0]
    scene = sample.scenes[-1]
    surf = read(scene.surface_path)
    red, nir, swir = surf[3], surf[7], surf[11]
    veg = np.isin(lc, (3, 4, 7))
    water = lc == 1
    soil = lc == 10
    assert veg.sum() > 1000 and water.sum() > 200 and soil.sum() > 200
    ndvi = (nir - red) / (nir + red)
    assert np.median(ndvi[veg]) > 0.7
    assert (nir[veg] > red[veg]).mean() > 0.99
    assert np.median(nir[water]) < 0.05 and np.median(swir[water]) < 0.02
    assert np.median(red[soil]) > 0.18 and np.median(swir[soil]) > np.median(red[soil])
    # Red-edge rise of vegetation: B05 < B06 < B07.
    assert np.median(surf[4][veg]) < np.median(surf[5][veg]) < np.median(surf[6][veg])
    # Fine texture inside classes, not flat patches.
    assert np.std(nir[lc == 3]) / np.mean(nir[lc == 3]) > 0.05


def test_crop_phenology_changes_between_dates(sample: Sample) -> None:
    assert sample.landcover_path is not None
    lc = read(sample.landcover_path)[0]
    first, last = read(sample.scenes[0].surface_path), read(sample.scenes[-1].surface_path)

    def ndvi(s: NDArray[Any], mask: NDArray[np.bool_]) -> float:
        return float(np.median(((s[7] - s[3]) / (s[7] + s[3]))[mask]))

    assert ndvi(last, lc == 6) > ndvi(first, lc == 6) + 0.05  # maize greens up
    assert ndvi(last, lc == 5) < ndvi(first, lc == 5) - 0.05  # cereals senesce
    assert abs(ndvi(last, lc == 4) - ndvi(first, lc == 4)) < 0.03  # forest stays
    # Some meadows are mown between the dates: a sharp NDVI drop on part of them only.
    drop = ((last[7] - last[3]) / (last[7] + last[3])) - (
        (first[7] - first[3]) / (first[7] + first[3])
    )
    mown = (drop[lc == 8] < -0.2).mean()
    assert 0.02 < mown < 0.6


# ------------------------------------------------------------------------------ API


def test_load_sample_round_trips(sample: Sample) -> None:
    assert load_sample(sample.root) == sample


def test_refuses_to_overwrite_unless_told(sample: Sample, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="overwrite=True"):
        generate_sample(sample.root, sample.spec)
    spec = SampleSpec(n_dates=1, width=60, height=60)
    generate_sample(tmp_path, spec)
    again = generate_sample(tmp_path, spec, overwrite=True)
    assert len(again.scenes) == 1


def test_load_sample_without_manifest_fails(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="generate the sample first"):
        load_sample(tmp_path)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_dates": 0},
        {"width": 5},
        {"origin": (500005.0, 5300000.0)},
        {"epsg": 32632},
        {"tile": "banana"},
        {"start": "2023-13-01"},
        {"cloud_cover": (1.5,)},
        {"nodata_date": 4},
    ],
)
def test_spec_rejects_invalid_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SampleSpec(**kwargs)


# ------------------------------------------------------------------------------ what the methods
# do not assume: snow and high terrain, terrain light, haze, parallax, striping, an independent SCL


@pytest.fixture(scope="module")
def mountain(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """A sample with the limestone massif: a clear date and a cloudy one."""
    spec = SampleSpec(
        n_dates=2, width=300, height=300, seed=3, mountain=0.45, cloud_cover=(0.0, 0.3),
        nodata_date=None,
    )  # fmt: skip
    return generate_sample(tmp_path_factory.mktemp("mountain"), spec)


def toa(scene: SampleScene, key: str) -> F64:
    asset = scene.l1c_item["assets"][key]
    rb = asset["raster:bands"][0]
    out: F64 = read(asset["href"])[0].astype(np.float64) * rb["scale"] + rb["offset"]
    return out


def test_surface_types_group_every_landcover_code_once() -> None:
    codes = [c for group in SURFACE_TYPES.values() for c in group]
    assert sorted(codes) == sorted(LANDCOVER_CLASSES)
    assert {"snow", "bright_soil", "urban", "water"} <= set(SURFACE_TYPES)


def test_snow_and_high_rock_exceed_the_cirrus_threshold_under_clear_sky(mountain: Sample) -> None:
    """Dry air above high ground lets the 1375 nm band see the surface: clear-sky B10 over snow
    and bright rock exceeds Sen2Cor's 0.012, over the valley's bright soil it does not."""
    assert mountain.landcover_path is not None and mountain.dem_path is not None
    lc, dem = read(mountain.landcover_path)[0], read(mountain.dem_path)[0]
    snow, rock, soil = lc == 16, lc == 17, lc == 10
    assert snow.sum() > 500 and rock.sum() > 2000 and soil.sum() > 100
    assert np.median(dem[snow]) > 2000 and np.median(dem[soil]) < 1000
    scene = mountain.scenes[0]  # clear
    assert read(scene.truth_path)[0].max() == 0
    b10 = toa(scene, "cirrus")
    lc60 = lc[3::6, 3::6][: b10.shape[0], : b10.shape[1]]
    assert np.median(b10[lc60 == 16]) > 0.012
    dem60 = dem[3::6, 3::6][: b10.shape[0], : b10.shape[1]]
    assert np.median(b10[(lc60 == 17) & (dem60 > 1900)]) > 0.012  # the plateau, not the wall foot
    assert np.median(b10[lc60 == 10]) < 0.01
    # snow: bright in the visible, dark in the SWIR (NDSI high)
    surf = read(scene.surface_path)
    green, swir = surf[2][snow], surf[11][snow]
    assert np.median(green) > 0.5 and np.median(swir) < 0.15
    assert np.median((green - swir) / (green + swir)) > 0.6


def test_terrain_illumination_follows_slope_aspect_and_sun(mountain: Sample) -> None:
    assert mountain.landcover_path is not None and mountain.dem_path is not None
    lc, dem = read(mountain.landcover_path)[0], read(mountain.dem_path)[0].astype(np.float64)
    scene = mountain.scenes[0]
    props = scene.l2a_item["properties"]
    sz = np.radians(90.0 - props["view:sun_elevation"])
    az = np.radians(props["view:sun_azimuth"])
    gy, gx = np.gradient(dem, 10.0)
    cos_i = (np.cos(sz) - gx * np.sin(sz) * np.sin(az) + gy * np.sin(sz) * np.cos(az)) / np.sqrt(
        1 + gx**2 + gy**2
    )
    nir = read(scene.surface_path)[7].astype(np.float64)
    rock = (lc == 17) & (cos_i > 0.05)
    assert np.corrcoef(cos_i[rock], nir[rock])[0, 1] > 0.5
    # sunlit and shaded slopes of the same rock differ by far more than its texture
    lit, shaded = rock & (cos_i > 0.9), rock & (cos_i < 0.4)
    assert lit.sum() > 100 and shaded.sum() > 100
    assert np.median(nir[shaded]) < 0.7 * np.median(nir[lit])
    # the rock wall casts a terrain shadow: only diffuse light reaches part of the sunlit-facing
    # ground (cos_i > 0.3 but darker than a slope facing away from the sun)
    cast = rock & (cos_i > 0.3) & (nir < 0.5 * np.median(nir[lit]))
    assert cast.sum() > 20
    # the bundled sample has rolling relief too, not a flat plane
    assert mountain.spec.terrain and SampleSpec().terrain


def twins(tmp: Path, feature: str, **kw: Any) -> tuple[SampleScene, SampleScene]:
    """The same one-date scene with ``feature`` on (default spec) and off."""
    spec = SampleSpec(n_dates=1, width=120, height=120, nodata_date=None, **kw)
    off = {"haze": 0.0} if feature == "haze" else {feature: False}
    on = generate_sample(tmp / "on", spec).scenes[0]
    return on, generate_sample(tmp / "off", replace(spec, **off)).scenes[0]


def test_haze_is_smooth_strongest_in_blue_and_only_partly_removed_in_l2a(tmp_path: Path) -> None:
    on, off = twins(tmp_path, "haze", cloud_cover=(0.0,))
    d_toa = {k: toa(on, k) - toa(off, k) for k in ("blue", "red", "nir")}
    d_l2a = decode_l2a(on, "blue") - decode_l2a(off, "blue")
    sd = {k: float(v.std()) for k, v in d_toa.items()}
    assert sd["blue"] > 0.001 and sd["blue"] > 1.5 * sd["nir"] and sd["red"] > sd["nir"]
    # smooth: neighbouring pixels share the haze (only DN rounding differs)
    assert float(np.diff(d_toa["blue"], axis=1).std()) < 0.2 * sd["blue"]
    # the L2A correction removes the smooth part only: a smooth residual stays, most in blue
    assert float(np.sqrt(np.mean(d_l2a**2))) > 0.0005
    assert float(np.diff(d_l2a, axis=1).std()) < 0.2 * float(d_l2a.std())
    d_nir = decode_l2a(on, "nir") - decode_l2a(off, "nir")
    assert float(np.sqrt(np.mean(d_nir**2))) < float(np.sqrt(np.mean(d_l2a**2)))


def test_clouds_are_seen_with_parallax_and_shadows_are_not(tmp_path: Path) -> None:
    """The cloud moves by height x tan(view zenith) along the view azimuth (east-south-east
    here) and a little differently per band; its shadow stays where the sun cast it."""
    on, off = twins(tmp_path, "parallax", cloud_cover=(0.3,), seed=5)
    t_on, t_off = read(on.truth_path)[0], read(off.truth_path)[0]

    def shift(a: NDArray[Any], b: NDArray[Any]) -> tuple[int, int]:
        """(rows, cols) by which ``a`` is displaced from ``b`` (peak of the cross-correlation)."""
        xc = np.fft.irfft2(np.fft.rfft2(a.astype(float)) * np.conj(np.fft.rfft2(b.astype(float))))
        r, c = np.unravel_index(int(np.argmax(xc)), xc.shape)
        h, w = xc.shape
        return (r - h if r > h // 2 else r), (c - w if c > w // 2 else c)

    dr, dc = shift(t_on == 1, t_off == 1)
    assert 3 <= dc <= 40 and abs(dr) < dc  # view azimuth ~104-108 deg: mostly east
    shadow_on = (t_on == 4) | ((t_on != 0) & (t_off == 4))
    assert shift(shadow_on, t_off == 4) == (0, 0)
    # band to band: blue and red see the same cloud at different places
    bright = 0.3
    assert shift(toa(on, "blue") > bright, toa(on, "red") > bright) != (0, 0)
    assert shift(toa(off, "blue") > bright, toa(off, "red") > bright) == (0, 0)


def test_detector_striping_is_a_per_band_gain_of_a_few_tenths_of_a_percent(tmp_path: Path) -> None:
    on, off = twins(tmp_path, "striping", cloud_cover=(0.0,))
    spreads, medians = [], []
    for key in sorted(L1C_KEYS - {"cirrus"}):  # clear-sky B10 is too dark for DN ratios
        ratio = toa(on, key) / toa(off, key)
        ok = toa(off, key) > 0.02  # relative DN rounding is small
        assert ok.sum() > 50
        r = ratio[ok]
        assert np.all(np.abs(r - 1.0) < 0.015), key
        spreads.append(np.percentile(r, 90) - np.percentile(r, 10))
        medians.append(np.median(r))
    assert sum(s > 0.001 for s in spreads) >= 6  # most bands have a visible detector step
    assert np.ptp(medians) > 0.002  # the gains differ between bands


def test_scl_is_not_the_cirrus_threshold_rule(mountain: Sample) -> None:
    """The SCL comes from the truth with Sen2Cor's kinds of error, not from the B10 threshold
    the cloud step tests: clear snow and rock above 0.012 are mostly not called cirrus, snow
    is class 11, thin cloud is partly missed and some clear bright ground is called cloud."""
    assert mountain.landcover_path is not None
    lc = read(mountain.landcover_path)[0][::2, ::2]
    for scene in mountain.scenes:
        scl = read(scene.l2a_item["assets"]["scl"]["href"])[0]
        truth = read(scene.truth_path)[0][::2, ::2]
        b10 = np.repeat(np.repeat(toa(scene, "cirrus"), 3, axis=0), 3, axis=1)[: scl.shape[0]]
        b10 = b10[:, : scl.shape[1]]
        high_clear = (b10 > 0.012) & (truth == 0)
        assert high_clear.sum() > 500
        assert (scl[high_clear] == 10).mean() < 0.1
        clear_snow = (lc == 16) & (truth == 0)
        assert (scl[clear_snow] == 11).mean() > 0.8
        bright = np.isin(lc, (12, 16, 17)) & (truth == 0)
        assert 0.0 < np.isin(scl[bright], (8, 9)).mean() < 0.2
    stats = mountain.scenes[1].scl_stats
    assert stats["thick_cloud_recall"] is not None and stats["thick_cloud_recall"] > 0.9
    assert stats["thin_cloud_recall"] is not None and stats["thin_cloud_recall"] < 0.8
