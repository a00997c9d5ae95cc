"""The notebooks in notebooks/: committed with their outputs, and still executing.

Each notebook is committed executed, so that it reads well on a code host: every code cell run once,
top to bottom, in a fresh kernel (execution counts 1, 2, 3, ...), no error output, its pictures embedded
as PNG, the file under 1 MB.  Each is also executed again here, on an in-memory copy (the committed file
is never rewritten), on a kernel running this very interpreter and importing this checkout; its runtime
is printed and recorded as the report properties `notebook_runtime_s` (wall) and
`notebook_kernel_cpu_s` (the kernel's CPU time).  A notebook must leave matplotlib's
inline backend in place (calling a function that switches to Agg makes later inline plots vanish).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 120  # per cell; each notebook is meant to run in well under 30 s
MAX_BYTES = 1_000_000
PROBE = "import sys, synthalign\nprint(sys.prefix)\nprint(synthalign.__file__)"
LAST_PROBE = "import time, matplotlib\nprint(matplotlib.get_backend())\nprint(time.process_time())"


class _ThisInterpreter(KernelSpecManager):
    """Every kernel name resolves to ipykernel on sys.executable (not whatever `python` is on PATH)."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({sys.executable})",
            language="python",
        )


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _printed(cell) -> str:
    """What the cell printed to stdout (warnings on stderr left out)."""
    streams = [output for output in cell.outputs if output.get("output_type") == "stream"]
    return "".join(output.get("text", "") for output in streams if output.get("name") == "stdout")


def _has_png(notebook) -> bool:
    return any("image/png" in output.get("data", {}) for cell in _code_cells(notebook) for output in cell.outputs)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb file"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_with_its_outputs(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes (limit {MAX_BYTES})"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    cells = _code_cells(notebook)
    assert cells, f"{path.name} has no code cell"
    counts = [cell.execution_count for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts}; execute it top to bottom in a fresh kernel before committing"
    )
    for index, cell in enumerate(cells):
        errors = [output for output in cell.outputs if output.get("output_type") == "error"]
        assert not errors, f"{path.name}: code cell {index} has an error output ({errors[0].get('ename')})"
    assert _has_png(notebook), f"{path.name} has no PNG output (plots are drawn inline and committed)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, record_property):
    notebook = nbformat.read(path, as_version=4)  # in memory: the committed file is never rewritten
    for cell in _code_cells(notebook):
        cell.outputs, cell.execution_count = [], None
    # A first cell that proves which interpreter and which checkout the kernel runs, a last one that
    # reads the matplotlib backend the notebook leaves behind and the kernel's CPU time.
    notebook.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    notebook.cells.append(nbformat.v4.new_code_cell(LAST_PROBE))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter())
    client = nbclient.NotebookClient(
        notebook,
        km=manager,
        timeout=TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute(cleanup_kc=True, env=env)  # shut the kernel down even though the manager is ours
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    runtime = time.perf_counter() - start
    prefix, module = _printed(notebook.cells[0]).splitlines()
    backend, cpu = _printed(notebook.cells[-1]).splitlines()
    # Wall time depends on the machine's load; the kernel's CPU time (imports included) much less.
    record_property("notebook_runtime_s", round(runtime, 2))
    record_property("notebook_kernel_cpu_s", round(float(cpu), 2))
    print(f"{path.name}: executed in {runtime:.1f} s wall (kernel start included), {float(cpu):.1f} s kernel CPU")

    assert prefix == sys.prefix
    assert pathlib.Path(module).resolve().is_relative_to(ROOT), f"the kernel imported {module}, not this checkout"
    assert "inline" in backend, f"{path.name} leaves matplotlib's backend switched to {backend!r}"
    assert _has_png(notebook), f"{path.name} displayed no plot when executed"
