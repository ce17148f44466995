"""The CEOS-ARD Optical Surface Reflectance profile of an output item: the extension's fields,
its links, the view angles, the geometric accuracy from co-registration, STAC 1.1 ``bands`` on
every asset and the item's self-assessment (``stac2cube:ard``).

:func:`apply_profile` is the last thing :func:`~stac2cube.catalog.item.build_item` does; it
only adds to the item (our own provenance stays as it is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from ..angles import SceneAngles
from ..bands import S2_BANDS
from .requirements import SPECIFICATION, SPECIFICATION_URL, SPECIFICATION_VERSION, assess_item

CEOS_ARD_SCHEMA: Final = "https://stac-extensions.github.io/ceos-ard/v0.2.0/schema.json"
VIEW_SCHEMA: Final = "https://stac-extensions.github.io/view/v1.0.0/schema.json"
ACCURACY_SCHEMA: Final = "https://stac-extensions.github.io/accuracy/v1.0.0/schema.json"
"""Declared where the accuracy fields are written (the profile names v1.0.0-beta.1; v1.0.0 is
its release, with the same geometric fields)."""
ASSESSMENT_FILE: Final = "ceos-ard-assessment.json"
"""The collection's self-assessment document, beside ``collection.json``."""

SEN2COR_ATBD: Final = (
    "https://step.esa.int/thirdparties/sen2cor/2.10.0/docs/S2-PDGS-MPC-L2A-ATBD-V2.10.0.pdf"
)
L1C_ATBD: Final = "https://sentinel.esa.int/documents/247904/685211/Sentinel-2+MSI+L1C+ATBD"
STEP_REFERENCES: Final[Mapping[str, tuple[str, str]]] = {
    "cloudmask": (
        "https://github.com/sentinel-hub/sentinel2-cloud-detector",
        "s2cloudless (Sentinel Hub) and Sen2Cor SCL cloud classes",
    ),
    "coreg": (
        "https://doi.org/10.3390/rs9070676",
        "AROSICS: Scheffler et al. (2017), Remote Sensing 9(7), 676",
    ),
    "nbar": (
        "https://doi.org/10.1016/j.rse.2016.01.023",
        "c-factor NBAR: Roy et al. (2016), Remote Sensing of Environment 176",
    ),
    "superres": ("https://github.com/ESAOpenSR/sen2sr", "SEN2SR super-resolution"),
    "quality": (
        "https://github.com/stac2cube/stac2cube/blob/main/docs/ard.md",
        "stac2cube quality layers (docs/ard.md)",
    ),
}
"""A reference (href, title) for each step's algorithm: ``processing-description`` links."""

ACCURACY_KEYS: Final = (
    "accuracy:geometric_x_bias",
    "accuracy:geometric_y_bias",
    "accuracy:geometric_x_stddev",
    "accuracy:geometric_y_stddev",
    "accuracy:geometric_rmse",
)


def geometric_accuracy(coreg: Mapping[str, Any] | None, pixel: float) -> dict[str, float]:
    """The accuracy fields (metres) of a scene whose co-registration ended with ``coreg``
    (its record's ``results``), on pixels of ``pixel`` metres; empty when it failed or did
    not run.

    The bias is the shift left in the scene: the measured shift minus the one applied (zero
    when applied, the whole estimate when not significant). The standard deviation is the
    estimate's standard error (global shift) or the tie points' spread (local; an upper
    bound once the local field is applied)."""
    if not coreg or coreg.get("status") not in ("ok", "not_significant", "no_improvement"):
        return {}
    shift = coreg.get("shift_px")
    if not shift:
        return {}
    applied = coreg.get("applied_shift_px") or [0.0, 0.0]
    bx = (float(shift[0]) - float(applied[0])) * pixel
    by = (float(shift[1]) - float(applied[1])) * pixel
    if coreg.get("shift_std_px") is not None:
        sx, sy = (float(v) * pixel for v in coreg["shift_std_px"])
    elif coreg.get("shift_se_px") is not None:
        sx = sy = float(coreg["shift_se_px"]) * pixel
    else:
        return {}
    rmse = math.sqrt(bx * bx + by * by + sx * sx + sy * sy)
    values = (bx, by, sx, sy, rmse)
    return {k: round(v, 3) for k, v in zip(ACCURACY_KEYS, values, strict=True)}


def _band_object(key: str, asset: Mapping[str, Any]) -> dict[str, Any]:
    """The STAC 1.1 ``bands`` entry of an asset."""
    raster = (asset.get("raster:bands") or [{}])[0]
    out: dict[str, Any] = {}
    eo = (asset.get("eo:bands") or [{}])[0]
    name = eo.get("name") or key
    out["name"] = name
    info = S2_BANDS.get(name)
    if info is not None and info.kind != "classification" and info.center_wavelength:
        if info.common_name:
            out["eo:common_name"] = eo.get("common_name") or info.common_name
        out["eo:center_wavelength"] = info.center_wavelength
        out["eo:full_width_half_max"] = info.fwhm
    for field in ("nodata", "data_type", "unit"):
        if field in raster:
            out[field] = raster[field]
    return out


def _link(rel: str, href: str, media: str, title: str) -> dict[str, Any]:
    return {"rel": rel, "href": href, "type": media, "title": title}


def apply_profile(doc: dict[str, Any], *, angles: SceneAngles | None) -> dict[str, Any]:
    """``doc`` (an output item) made a CEOS-ARD Optical SR item, in place; returns it."""
    props = doc["properties"]
    props["ceosard:type"] = "optical"
    props["ceosard:specification"] = SPECIFICATION
    props["ceosard:specification_version"] = SPECIFICATION_VERSION
    extensions = [CEOS_ARD_SCHEMA]
    if angles is not None:
        props.update(angles.view_properties())
    if any(k.startswith("view:") for k in props):
        extensions.append(VIEW_SCHEMA)
    steps = {s["name"]: s for s in props.get("stac2cube:steps", ())}
    coreg = steps.get("coreg", {}).get("results")
    pixel = abs(float((props.get("proj:transform") or [1.0])[0]))
    accuracy = geometric_accuracy(coreg, pixel)
    if accuracy:
        props.update(accuracy)
        props["stac2cube:geometric_reference"] = str(coreg.get("reference") if coreg else "")
        extensions.append(ACCURACY_SCHEMA)
    quality = steps.get("quality", {}).get("results", {})
    snow = quality.get("fractions", {}).get("snow_ice")
    if snow is not None and "SNOW_ICE" in quality.get("layers", ()):
        props["eo:snow_cover"] = round(100.0 * float(snow), 4)
    for key, asset in doc.get("assets", {}).items():
        if str(asset.get("type", "")).startswith("image/tiff"):
            asset["bands"] = [_band_object(key, asset)]
    links = list(doc.get("links", ()))
    links.append(
        _link(
            "ceos-ard-specification",
            SPECIFICATION_URL,
            "application/pdf",
            f"CEOS-ARD Product Family Specification: Surface Reflectance {SPECIFICATION_VERSION}",
        )
    )
    links.append(
        _link(
            "ceos-ard-assessment",
            f"../{ASSESSMENT_FILE}",
            "application/json",
            "stac2cube's CEOS-ARD self-assessment of this collection (this item in short: "
            "stac2cube:ard)",
        )
    )
    source = str(props.get("stac2cube:source", {}).get("href") or "")
    if "://" in source and not source.startswith("file:"):  # a local path would not travel
        links.append(_link("derived_from", source, "application/geo+json", "the source item"))
    links.append(
        _link(
            "describedby",
            SEN2COR_ATBD,
            "application/pdf",
            "Sen2Cor L2A ATBD: atmospheric "
            "correction (aerosol scattering, water vapour, ozone), SCL",
        )
    )
    links.append(
        _link(
            "describedby",
            L1C_ATBD,
            "text/html",
            "Sentinel-2 L1C ATBD: radiometric "
            "calibration, orthorectification and geometric correction",
        )
    )
    for name in steps:
        if name in STEP_REFERENCES:
            href, title = STEP_REFERENCES[name]
            links.append(_link("processing-description", href, "text/html", f"{name}: {title}"))
    doc["links"] = links
    for uri in extensions:
        if uri not in doc["stac_extensions"]:
            doc["stac_extensions"].append(uri)
    props["stac2cube:ard"] = assess_item(doc).summary()
    return doc
