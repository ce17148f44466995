"""Writing the sample's files: COGs (with the products' DN encoding) and JSON documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray

from .arrays import F32, U16, BoolA
from .geometry import grid_transform
from .spec import SampleSpec


def write_cog(
    path: Path,
    data: NDArray[Any],
    spec: SampleSpec,
    res: int,
    *,
    nodata: float | None,
    resampling: str = "average",
    descriptions: tuple[str, ...] | None = None,
) -> None:
    arr = data if data.ndim == 3 else data[None]
    predictor = "FLOATING_POINT" if arr.dtype.kind == "f" else "STANDARD"
    if arr.dtype == np.uint8:
        predictor = "NO"
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "COG",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": f"EPSG:{spec.epsg}",
        "transform": grid_transform(spec, res),
        "compress": "deflate",
        "predictor": predictor,
        "blocksize": 256,
        "overview_resampling": resampling,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)


def encode_dn(refl: F32, dn_offset: int, nodata: BoolA) -> U16:
    dn: U16 = np.clip(np.rint(refl * 10000.0) + dn_offset, 1, 32767).astype(np.uint16)
    dn[nodata] = 0
    return dn


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
