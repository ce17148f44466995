"""The requirements of the CEOS-ARD Surface Reflectance specification, how stac2cube meets each,
and the check of one item against them.

One table (:data:`REQUIREMENTS`) drives the item's ``stac2cube:ard`` summary, the collection's
self-assessment document, ``stac2cube status`` and docs/ard.md, so they cannot disagree. The
requirement texts are short paraphrases of the PFS (CEOS-ARD Optical Surface Reflectance v5.0.1,
numbers as there); the PFS itself is linked from every item (``ceos-ard-specification``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

SPECIFICATION: Final = "SR"
SPECIFICATION_VERSION: Final = "5.0.1"
SPECIFICATION_URL: Final = (
    "https://ceos.org/ard/files/PFS/SR/v5.0.1/"
    "CEOS-ARD_Product_Family_Specification_Surface_Reflectance-v5.0.1.pdf"
)
_NOT_ADDRESSED: Final = frozenset({"Not provided.", "Not claimed."})
SUB_PIXEL: Final = 0.5
"""4.1 Threshold: geolocation rRMSE at most half a pixel relative to a defined reference."""

Item = Mapping[str, Any]


@dataclass(frozen=True)
class Verdict:
    """How one item fares against one requirement."""

    threshold: bool
    """Met at Threshold (True too where the PFS does not require it at Threshold)."""
    goal: bool
    why: str
    static: bool = False
    """The same for every item stac2cube writes (a requirement it does not address): the
    reason is the requirement's ``how``, not repeated in each item's summary."""


Check = Callable[[Item], Verdict]


@dataclass(frozen=True)
class Requirement:
    """One requirement of the PFS, and how stac2cube answers it."""

    id: str
    name: str
    threshold: str | None
    """What Threshold asks; None: not required at Threshold."""
    goal: str
    how: str
    """How stac2cube meets it, in words."""
    evidence: str
    """The item fields, links or asset roles that show it."""
    check: Check

    @property
    def addressed(self) -> bool:
        """Whether stac2cube does something for it (else its Goal is never met, for a reason
        that is the same for every item: :attr:`how`)."""
        return self.how not in _NOT_ADDRESSED


# --- helpers on an item dict --------------------------------------------------------------


def _props(item: Item) -> Mapping[str, Any]:
    props: Mapping[str, Any] = item.get("properties", {})
    return props


def _roles(item: Item) -> set[str]:
    roles: set[str] = set()
    for asset in item.get("assets", {}).values():
        roles.update(asset.get("roles", ()))
    return roles


def _rels(item: Item) -> set[str]:
    return {str(link.get("rel")) for link in item.get("links", ())}


def _steps(item: Item) -> dict[str, Mapping[str, Any]]:
    return {s["name"]: s for s in _props(item).get("stac2cube:steps", ())}


def _has(props: Mapping[str, Any], *keys: str) -> bool:
    return all(props.get(k) is not None for k in keys)


def _yes(why: str, goal: bool = True, goal_why: str = "") -> Verdict:
    return Verdict(True, goal, why if goal or not goal_why else f"{why}; Goal: {goal_why}")


def _no(why: str) -> Verdict:
    return Verdict(False, False, why)


def _role_check(role: str, missing: str, *, threshold: bool) -> Check:
    """Met where an asset has ``role``; ``threshold``: the PFS asks for it at Threshold."""

    def check(item: Item) -> Verdict:
        if role in _roles(item):
            return Verdict(True, True, f"asset with role {role}")
        return Verdict(not threshold, False, missing)

    return check


# --- the checks ---------------------------------------------------------------------------


def _time(item: Item) -> Verdict:
    if _props(item).get("datetime") is None:
        return _no("no datetime")
    return _yes("datetime in UTC", False, "no per-pixel acquisition time")


def _area(item: Item) -> Verdict:
    if item.get("geometry") and item.get("bbox"):
        return _yes("geometry and bbox in WGS84")
    return _no("no geometry or bbox")


def _crs(item: Item) -> Verdict:
    props = _props(item)
    if props.get("proj:code") or props.get("proj:wkt2"):
        return _yes("proj:code / proj:wkt2")
    return _no("no proj:code or proj:wkt2")


def _projection(item: Item) -> Verdict:
    props = _props(item)
    if (props.get("proj:code") or props.get("proj:wkt2")) and props.get("proj:transform"):
        return _yes("proj:code and proj:transform")
    return _no("no projection or transform")


def _geometric_methods(item: Item) -> Verdict:
    coreg = _steps(item).get("coreg")
    if coreg is None:
        return _yes(
            "ESA orthorectification of the source (linked)", False, "no co-registration step"
        )
    return _yes("ESA orthorectification and AROSICS co-registration, both linked")


def _geometric_accuracy(item: Item) -> Verdict:
    props = _props(item)
    if props.get("accuracy:geometric_rmse") is None:
        return _no("no per-scene accuracy estimate: co-registration did not run or failed")
    return _yes(
        "accuracy:geometric_* from the co-registration step",
        False,
        "no per-pixel accuracy estimate",
    )


def _instrument(item: Item) -> Verdict:
    if _has(_props(item), "instruments", "platform", "constellation"):
        return _yes("instruments, platform, constellation", False, "no CEOS database links")
    return _no("instrument or platform missing")


def _bands(item: Item) -> Verdict:
    data = [a for a in item.get("assets", {}).values() if "reflectance" in a.get("roles", ())]
    if not data:
        return _no("no reflectance asset")
    for asset in data:
        for band in asset.get("bands", ()):
            if "eo:center_wavelength" not in band or "eo:full_width_half_max" not in band:
                return _no(f"band {band.get('name')} without centre wavelength or bandwidth")
        if not asset.get("bands"):
            return _no("a reflectance asset without bands")
    return _yes(
        "bands with eo:center_wavelength and eo:full_width_half_max",
        False,
        "no spectral response functions",
    )


def _algorithms(item: Item) -> Verdict:
    props = _props(item)
    if not (props.get("processing:lineage") and props.get("stac2cube:steps")):
        return _no("no processing:lineage or step records")
    described = {
        str(link.get("title", "")).partition(":")[0]
        for link in item.get("links", ())
        if link.get("rel") == "processing-description"
    }
    names = [s for s in _steps(item) if s != "harmonise"]
    missing = [s for s in names if s not in described]
    if missing:
        return _yes(
            "processing:lineage and stac2cube:steps in order", False, f"no reference for {missing}"
        )
    return _yes("processing:lineage and stac2cube:steps in order, each algorithm referenced")


def _auxiliary(item: Item) -> Verdict:
    if _props(item).get("stac2cube:inputs") is None:
        return _no("no list of inputs")
    return _yes("stac2cube:inputs lists every input read, with its href")


def _provenance(item: Item) -> Verdict:
    if _has(_props(item), "processing:software", "stac2cube:steps", "stac2cube:config_hash"):
        return _yes("processing:software, stac2cube:steps, stac2cube:config_hash")
    return Verdict(True, False, "provenance incomplete")


def _access(item: Item) -> Verdict:
    if not item.get("assets"):
        return _no("no assets")
    if "derived_from" in _rels(item):
        return _yes("asset hrefs in a static catalog; derived_from the source item")
    return _yes("asset hrefs in a static catalog (a local source is not linked)")


def _quality_summary(item: Item) -> Verdict:
    if _props(item).get("eo:cloud_cover") is not None:
        return Verdict(True, True, "eo:cloud_cover (and eo:snow_cover with the quality step)")
    return Verdict(True, False, "no eo:cloud_cover: no cloud step")


def _per_pixel_readable(item: Item) -> Verdict:
    meta = [a for a in item.get("assets", {}).values() if "metadata" in a.get("roles", ())]
    tif = [a for a in meta if str(a.get("type", "")).startswith("image/tiff")]
    if tif and all(
        "classification:classes" in a
        or "classification:bitfields" in a
        or a.get("raster:bands", [{}])[0].get("unit")
        for a in tif
    ):
        return _yes("COGs with classification:classes / bitfields")
    return _no("no per-pixel metadata asset (quality step not run)")


def _nodata(item: Item) -> Verdict:
    for key, asset in item.get("assets", {}).items():
        if not str(asset.get("type", "")).startswith("image/tiff"):
            continue
        bands = asset.get("raster:bands") or [{}]
        if "nodata" not in bands[0] and key != "SATURATION":
            return _no(f"asset {key} has no nodata value")
    return _yes("every COG declares its nodata value")


def _geometry(item: Item) -> Verdict:
    props = _props(item)
    keys = ("view:sun_azimuth", "view:sun_elevation", "view:incidence_angle", "view:azimuth")
    if not _has(props, *keys):
        missing = [k for k in keys if props.get(k) is None]
        return _no(f"missing {missing}: the source gives no granule metadata")
    roles = _roles(item)
    per_pixel = {"sun-azimuth", "sun-elevation", "incidence-angle", "azimuth"} <= roles
    return _yes("mean sun and view angles (view:*)", per_pixel, "no per-pixel angles")


def _measurement(item: Item) -> Verdict:
    collection = str(_props(item).get("stac2cube:source", {}).get("collection") or "")
    if "l1c" in collection.lower():
        return _no(f"the source collection {collection} is top-of-atmosphere")
    return _yes(
        "surface reflectance of Sen2Cor L2A, harmonised per item", False, "no traceability to SI"
    )


def _normalisation(item: Item) -> Verdict:
    nbar = _steps(item).get("nbar")
    if nbar is not None and nbar.get("results", {}).get("applied"):
        return Verdict(True, True, "NBAR (c-factor) applied")
    return Verdict(True, False, "no BRDF normalisation (steps.nbar off or not applied)")


def _sen2cor(what: str, *, threshold: bool = True) -> Check:
    def check(item: Item) -> Verdict:
        v = _measurement(item)
        if not v.threshold:
            return Verdict(not threshold, False, v.why)
        if "describedby" not in _rels(item):
            return Verdict(not threshold, False, "no link to the Sen2Cor documentation")
        return Verdict(True, True, f"{what} by Sen2Cor (documentation linked)")

    return check


def _geometric_correction(item: Item) -> Verdict:
    props = _props(item)
    rmse = props.get("accuracy:geometric_rmse")
    transform = props.get("proj:transform") or [0.0]
    pixel = abs(float(transform[0])) or 1.0
    if rmse is None:
        return _no("no per-scene geolocation accuracy (co-registration not run or failed)")
    ref = props.get("stac2cube:geometric_reference")
    px = float(rmse) / pixel
    if px <= SUB_PIXEL and ref:
        return _yes(
            f"rRMSE {px:.2f} px relative to {ref}",
            False,
            "the reference is a Sentinel-2 image, not an absolute terrestrial reference",
        )
    return _no(f"rRMSE {px:.2f} px exceeds {SUB_PIXEL} px" if ref else "no reference named")


def _not_provided(what: str) -> Check:
    def check(item: Item) -> Verdict:
        return Verdict(True, False, f"{what} not provided", static=True)

    return check


def _cloud(item: Item) -> Verdict:
    roles = _roles(item)
    if "cloud" not in roles:
        return _no("no cloud asset (no cloud step or steps.quality off)")
    prob = "CLOUD_PROB" in item.get("assets", {})
    return Verdict(
        True,
        prob,
        "asset with role cloud"
        + ("" if prob else "; Goal: no cloud probability (s2cloudless did not run)"),
    )


REQUIREMENTS: Final[tuple[Requirement, ...]] = (
    Requirement(
        "1.1",
        "Traceability",
        None,
        "Data traceable to an SI reference standard.",
        "Not claimed.",
        "-",
        _not_provided("SI traceability"),
    ),
    Requirement(
        "1.2",
        "Metadata machine readability",
        "Metadata in a structure a program can parse.",
        "Metadata in a community-endorsed standard.",
        "Every item is STAC JSON with the CEOS-ARD extension.",
        "the item",
        lambda item: _yes("STAC item with the CEOS-ARD extension"),
    ),
    Requirement(
        "1.3",
        "Data collection time",
        "Acquisition time to the second, in UTC.",
        "Per-pixel acquisition time.",
        "The source's sensing time.",
        "`datetime`",
        _time,
    ),
    Requirement(
        "1.4",
        "Geographical area",
        "The area the data cover.",
        "The area as a geometry.",
        "Footprint within the AOI, WGS84.",
        "`geometry`, `bbox`",
        _area,
    ),
    Requirement(
        "1.5",
        "Coordinate reference system",
        "The CRS is named.",
        "-",
        "The target grid's CRS.",
        "`proj:code` / `proj:wkt2`",
        _crs,
    ),
    Requirement(
        "1.6",
        "Map projection",
        "The projection and its parameters.",
        "-",
        "The target grid.",
        "`proj:code`, `proj:transform`, `proj:shape`",
        _projection,
    ),
    Requirement(
        "1.7",
        "Geometric correction methods",
        "Information on the geometric correction methods.",
        "A citation or link to the algorithm.",
        "ESA's L1C orthorectification (linked); with `steps.coreg`, AROSICS (cited).",
        "`describedby`, `processing-description` links",
        _geometric_methods,
    ),
    Requirement(
        "1.8",
        "Geometric accuracy",
        "Geolocation accuracy estimate (bias, stddev, rRMSE).",
        "Per-pixel accuracy.",
        "From the co-registration step: residual shift and its standard error "
        "(global) or the tie points' spread (local).",
        "`accuracy:geometric_*`, `stac2cube:geometric_reference`",
        _geometric_accuracy,
    ),
    Requirement(
        "1.9",
        "Instrument",
        "The instrument is identified.",
        "A link to the CEOS missions and instruments database.",
        "From the source item.",
        "`instruments`, `platform`, `constellation`",
        _instrument,
    ),
    Requirement(
        "1.10",
        "Spectral bands",
        "Centre wavelength and bandwidth of each band.",
        "Spectral response functions.",
        "From the band table (`bands.py`).",
        "asset `bands` (`eo:center_wavelength`, `eo:full_width_half_max`)",
        _bands,
    ),
    Requirement(
        "1.11",
        "Sensor calibration",
        None,
        "Calibration parameters.",
        "Not provided.",
        "-",
        _not_provided("calibration parameters"),
    ),
    Requirement(
        "1.12",
        "Radiometric accuracy",
        None,
        "Radiometric uncertainty.",
        "Not provided.",
        "-",
        _not_provided("radiometric uncertainty"),
    ),
    Requirement(
        "1.13",
        "Algorithms",
        "All algorithms and the order they ran in.",
        "Peer-reviewed references of the algorithms.",
        "Step records in run order, lineage text, a reference per algorithm.",
        "`processing:lineage`, `stac2cube:steps`, `processing-description` links",
        _algorithms,
    ),
    Requirement(
        "1.14",
        "Auxiliary data",
        "The sources of auxiliary data.",
        "The auxiliary data themselves, linked.",
        "Every input read (L1C twin, references, granule metadata) with its href.",
        "`stac2cube:inputs`",
        _auxiliary,
    ),
    Requirement(
        "1.15",
        "Processing chain provenance",
        None,
        "Processing steps with software versions.",
        "Step records, software versions and the configuration hash.",
        "`processing:software`, `stac2cube:steps`, `stac2cube:config_hash`",
        _provenance,
    ),
    Requirement(
        "1.16",
        "Data access",
        "Where the data can be obtained.",
        "-",
        "Assets in a static STAC catalog; the source linked.",
        "asset hrefs, `derived_from`",
        _access,
    ),
    Requirement(
        "1.17",
        "Overall data quality",
        None,
        "Scene-level quality statistics.",
        "Cloud (and snow) cover over the AOI.",
        "`eo:cloud_cover`, `eo:snow_cover`",
        _quality_summary,
    ),
    Requirement(
        "2.1",
        "Per-pixel metadata machine readability",
        "Per-pixel metadata a program can read.",
        "-",
        "COGs described by the classification extension.",
        "`classification:classes`, `classification:bitfields`",
        _per_pixel_readable,
    ),
    Requirement(
        "2.2",
        "No data",
        "Pixels without an observation are flagged.",
        "-",
        "Every COG's nodata value; bit 0 of `QA`.",
        "`raster:bands[].nodata`",
        _nodata,
    ),
    Requirement(
        "2.3",
        "Incomplete testing",
        "Pixels where a per-pixel test could not be completed are flagged.",
        "-",
        "`steps.quality`: no L1C, no clear-sky reference, nodata in an input, no cloud step.",
        "role `incomplete-testing` (`INCOMPLETE_TESTING`, `QA` bit 6)",
        _role_check(
            "incomplete-testing", "no incomplete-testing asset (steps.quality off)", threshold=True
        ),
    ),
    Requirement(
        "2.4",
        "Saturation",
        "Saturated pixels are flagged.",
        "Saturation flagged per band.",
        "`steps.quality`: DN at the saturation value or SCL 1, per band.",
        "role `saturation` (`SATURATION`, `QA` bit 5)",
        _role_check("saturation", "no saturation asset (steps.quality off)", threshold=True),
    ),
    Requirement(
        "2.5",
        "Cloud",
        "Cloud pixels are flagged.",
        "Cloud probability as well.",
        "`steps.cloudmask` + `steps.quality`.",
        "role `cloud` (`CLOUD`, `QA` bit 1)",
        _cloud,
    ),
    Requirement(
        "2.6",
        "Cloud shadow",
        "Cloud shadow pixels are flagged.",
        "-",
        "`steps.cloudmask` + `steps.quality`.",
        "role `cloud-shadow` (`CLOUD_SHADOW`, `QA` bit 2)",
        _role_check(
            "cloud-shadow",
            "no cloud-shadow asset (no cloud step or steps.quality off)",
            threshold=True,
        ),
    ),
    Requirement(
        "2.7",
        "Land/water mask",
        None,
        "Land and water pixels are flagged.",
        "`steps.quality` from SCL class 6.",
        "role `land-water` (`LAND_WATER`)",
        _role_check(
            "land-water", "no land-water asset (SCL or steps.quality off)", threshold=False
        ),
    ),
    Requirement(
        "2.8",
        "Snow/ice mask",
        None,
        "Snow and ice pixels are flagged.",
        "`steps.quality` from SCL class 11.",
        "role `snow-ice` (`SNOW_ICE`)",
        _role_check("snow-ice", "no snow-ice asset (SCL or steps.quality off)", threshold=False),
    ),
    Requirement(
        "2.9",
        "Terrain shadow mask",
        None,
        "Terrain shadow flagged.",
        "Not provided.",
        "-",
        _not_provided("terrain shadow"),
    ),
    Requirement(
        "2.10",
        "Terrain occlusion",
        None,
        "Terrain occlusion flagged.",
        "Not provided.",
        "-",
        _not_provided("terrain occlusion"),
    ),
    Requirement(
        "2.11",
        "Solar and viewing geometry",
        "Mean sun and view angles.",
        "Per-pixel angles.",
        "From the source item, else its granule metadata (MTD_TL.xml); per pixel "
        "with `steps.quality.angles`.",
        "`view:*`; roles `sun-azimuth`, `sun-elevation`, `incidence-angle`, `azimuth`",
        _geometry,
    ),
    Requirement(
        "2.12",
        "Terrain illumination correction",
        None,
        "Coefficients per pixel.",
        "Not provided.",
        "-",
        _not_provided("terrain illumination coefficients"),
    ),
    Requirement(
        "3.1",
        "Measurement",
        "Surface reflectance.",
        "Traceable to SI.",
        "Sen2Cor L2A reflectance, harmonised per item.",
        "asset role `reflectance`",
        _measurement,
    ),
    Requirement(
        "3.2",
        "Measurement uncertainty",
        None,
        "Per-pixel uncertainty.",
        "Not provided.",
        "-",
        _not_provided("measurement uncertainty"),
    ),
    Requirement(
        "3.3",
        "Measurement normalisation",
        None,
        "BRDF normalisation.",
        "`steps.nbar` (c-factor NBAR).",
        "`stac2cube:steps` nbar record",
        _normalisation,
    ),
    Requirement(
        "3.4",
        "Directional atmospheric scattering",
        "Corrected, documented.",
        "-",
        "Sen2Cor (documentation linked).",
        "`describedby` link",
        _sen2cor("aerosol scattering corrected"),
    ),
    Requirement(
        "3.5",
        "Water vapour",
        "Corrected, documented.",
        "-",
        "Sen2Cor (documentation linked).",
        "`describedby` link",
        _sen2cor("water vapour corrected"),
    ),
    Requirement(
        "3.6",
        "Ozone",
        None,
        "Corrected, documented.",
        "Sen2Cor (documentation linked).",
        "`describedby` link",
        _sen2cor("ozone corrected", threshold=False),
    ),
    Requirement(
        "3.7",
        "Terrain illumination correction",
        None,
        "Corrected.",
        "Not claimed.",
        "-",
        _not_provided("terrain illumination correction"),
    ),
    Requirement(
        "4.1",
        "Geometric correction",
        f"Sub-pixel (rRMSE <= {SUB_PIXEL} px) relative to a defined reference image.",
        "Sub-pixel relative to an absolute terrestrial reference.",
        "`steps.coreg` (AROSICS) to the catalog's reference image; its residual "
        "error must be sub-pixel.",
        "`accuracy:geometric_rmse`, `stac2cube:geometric_reference`",
        _geometric_correction,
    ),
)
"""Every requirement of the SR PFS, in its order."""


@dataclass(frozen=True)
class ItemAssessment:
    """One item against every requirement."""

    verdicts: Mapping[str, Verdict]

    def summary(self) -> dict[str, Any]:
        """The item's ``stac2cube:ard`` property."""
        return {
            "specification": f"{SPECIFICATION} {SPECIFICATION_VERSION}",
            "threshold": [r for r, v in self.verdicts.items() if v.threshold],
            "goal": [r for r, v in self.verdicts.items() if v.goal],
            "not_met": [r for r, v in self.verdicts.items() if not v.threshold],
            "why": {r: v.why for r, v in self.verdicts.items() if not v.goal and not v.static},
        }


def assess_item(item: Item) -> ItemAssessment:
    """``item`` (a STAC item dict) against every requirement."""
    return ItemAssessment({r.id: r.check(item) for r in REQUIREMENTS})


def by_id(ids: Iterable[str]) -> list[Requirement]:
    """The requirements of ``ids``, in the PFS's order."""
    wanted = set(ids)
    return [r for r in REQUIREMENTS if r.id in wanted]


def requirement_ids() -> Sequence[str]:
    return tuple(r.id for r in REQUIREMENTS)
