"""``sample.json``: the manifest :func:`~stac2cube.sample.generate.generate_sample` writes and
:func:`load_sample` reads a sample back from."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from ..errors import CatalogError
from .clouds import TRUTH_CLASSES
from .landcover import LANDCOVER_CLASSES, SURFACE_TYPES
from .msi import BAND_NAMES
from .spec import Sample, SampleScene, SampleSpec
from .write import write_json

MANIFEST_NAME: Final = "sample.json"
MANIFEST_FORMAT: Final = "stac2cube-sample/1"


def write_manifest(sample: Sample, scene_records: list[dict[str, Any]]) -> None:
    """Write ``sample.json`` under ``sample.root``: what :func:`load_sample` reads back, plus the
    truth statistics per scene (``scene_records``) and the class tables."""
    root = sample.root
    write_json(
        root / MANIFEST_NAME,
        {
            "format": MANIFEST_FORMAT,
            "spec": asdict(sample.spec),
            "bbox": list(sample.bbox),
            "l2a_collection": sample.l2a_collection_path.relative_to(root).as_posix(),
            "l1c_collection": sample.l1c_collection_path.relative_to(root).as_posix(),
            "l2a_items": sample.l2a_items_path.name,
            "l1c_items": sample.l1c_items_path.name,
            "landcover": "landcover.tif",
            "landcover_classes": {str(k): v for k, v in LANDCOVER_CLASSES.items()},
            "surface_types": {k: list(v) for k, v in SURFACE_TYPES.items()},
            "dem": "dem.tif",
            "truth_classes": {str(k): v for k, v in TRUTH_CLASSES.items()},
            "bands": list(BAND_NAMES),
            "scenes": scene_records,
        },
    )


def load_sample(root: str | Path) -> Sample:
    """Re-open a sample written by :func:`generate_sample` from its ``sample.json``."""
    root = Path(root).resolve()
    manifest = root / MANIFEST_NAME
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(
            f"cannot read sample manifest {manifest}: {exc}; generate the sample first"
        ) from exc
    if doc.get("format") != MANIFEST_FORMAT:
        raise CatalogError(f"{manifest} is not a {MANIFEST_FORMAT} manifest; regenerate the sample")
    raw = dict(doc["spec"])
    raw["origin"] = tuple(raw["origin"])
    raw["cloud_cover"] = tuple(raw["cloud_cover"])
    spec = SampleSpec(**raw)
    scenes = []
    for rec in doc["scenes"]:
        try:
            l2a = json.loads((root / rec["l2a_item"]).read_text(encoding="utf-8"))
            l1c = json.loads((root / rec["l1c_item"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read sample item under {root}: {exc}") from exc
        scenes.append(
            SampleScene(
                l2a_item=l2a,
                l1c_item=l1c,
                truth_path=root / rec["truth"],
                surface_path=root / rec["surface"],
                cloud_fraction=float(rec["cloud_fraction"]),
                l2a_dn_offset=int(rec["l2a_dn_offset"]),
                l1c_dn_offset=int(rec["l1c_dn_offset"]),
                shadow_fraction=float(rec["shadow_fraction"]),
                nodata_fraction=float(rec["nodata_fraction"]),
                scl_stats=dict(rec["scl_stats"]),
            )
        )
    b = doc["bbox"]
    return Sample(
        root=root,
        spec=spec,
        scenes=tuple(scenes),
        l2a_collection_path=root / doc["l2a_collection"],
        l1c_collection_path=root / doc["l1c_collection"],
        l2a_items_path=root / doc["l2a_items"],
        l1c_items_path=root / doc["l1c_items"],
        bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        landcover_path=root / doc["landcover"],
        dem_path=root / doc["dem"] if "dem" in doc else None,
    )
