"""The example notebooks run: every ``examples/*.ipynb`` is executed, offline, in a temporary
working directory, on a kernel that is this virtualenv's Python.

The kernel: a ``python3`` kernelspec whose ``argv`` is this interpreter (``sys.executable``) is
installed into a temporary prefix with ipykernel, and ``JUPYTER_PATH`` points at it, so it wins
over any other ``python3`` kernelspec of the machine or the user. A cell appended to each
notebook prints the kernel's ``sys.prefix``, which must be this virtualenv's.

Notebooks are stored without outputs; their figures are made here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
KERNEL = "python3"
PREFIX_MARK = "stac2cube-notebook-kernel-prefix:"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``python3`` kernelspec running this interpreter, first on the Jupyter path."""
    prefix = tmp_path_factory.mktemp("jupyter")
    install_kernelspec(prefix=str(prefix), kernel_name=KERNEL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        mp.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend makes the figures
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        assert spec.argv[0] == sys.executable, spec.argv
        yield KERNEL


def test_there_are_notebooks() -> None:
    names = [p.name for p in NOTEBOOKS]
    for expected in ("01-sample-to-cube", "02-cloud-masks", "05-incremental-update"):
        assert f"{expected}.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    counted = [i for i, c in enumerate(nb.cells) if c.get("execution_count") is not None]
    assert not dirty and not counted, (
        f"{path.name}: clear the outputs before committing (cells {dirty or counted}); "
        "the tests execute the notebooks"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, kernel: str, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(f"import sys\nprint({PREFIX_MARK!r}, sys.prefix)"))
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=600,  # per cell; a hang fails instead of blocking the suite
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    seconds = time.perf_counter() - t0

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    prefix_out = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()
    assert prefix_out[-1:] == [sys.prefix], f"the kernel ran {prefix_out}, not {sys.prefix}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} produced no figure (ran {seconds:.0f} s)"
    assert not [o for o in outputs if o.output_type == "error"]
