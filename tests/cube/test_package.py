"""``stac2cube.cube``: the views are imported on first use, and reachable as before."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import stac2cube
before = "xarray" in sys.modules
from stac2cube import open_cube
from stac2cube.cube import catalog_items, open_kerchunk_cube, open_virtual_cube
assert stac2cube.cube.odc.catalog_items is catalog_items
assert stac2cube.reflectance is stac2cube.cube.odc.reflectance
assert stac2cube.open_virtual_cube is open_virtual_cube is stac2cube.cube.virtual.open_virtual_cube
assert stac2cube.open_kerchunk_cube is open_kerchunk_cube
assert open_kerchunk_cube is stac2cube.cube.kerchunk.open_kerchunk_cube
try:
    stac2cube.cube.no_such_view
except AttributeError as exc:
    missing = str(exc)
print(before, "xarray" in sys.modules, missing)
"""


def test_the_views_load_on_first_use() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    before, after, *missing = proc.stdout.split()
    assert (before, after) == ("False", "True")
    assert "no_such_view" in " ".join(missing)
