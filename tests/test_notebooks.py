"""Every notebook under examples/ runs top to bottom in a fresh kernel, and is committed clean.

The kernel is this interpreter's: a kernel spec named "python3" written into a temporary
JUPYTER_PATH (which comes before any user's own kernels) runs ``sys.executable -m
ipykernel_launcher``, so a fresh ``pip install -e ".[test]"`` venv runs the notebooks with itself.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


@pytest.fixture
def kernel(tmp_path_factory, monkeypatch):
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_path = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter_path / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # figures are drawn, never shown
    return "python3"


def execute(notebook, workdir: Path, kernel_name: str):
    """Run every cell in ``workdir``; a cell that raises raises ``CellExecutionError``."""
    client = nbclient.NotebookClient(notebook, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(workdir)}})
    return client.execute()


def test_examples_hold_a_notebook():
    assert NOTEBOOKS, f"no notebook under {EXAMPLES}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, kernel):
    notebook = nbformat.read(path, as_version=4)
    executed = execute(notebook, tmp_path, kernel)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)  # every cell ran
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]
    assert notebook.metadata.kernelspec.name == "python3"


def test_a_broken_notebook_fails(tmp_path, kernel):
    """The runner above reports a failing cell instead of carrying on."""
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell("import sys\nprint(sys.executable)"),
                                   new_code_cell("1 / 0"), new_code_cell("print('never')")])
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="ZeroDivisionError"):
        execute(notebook, tmp_path, kernel)
    import sys

    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable  # this venv's kernel
    assert not notebook.cells[2].outputs
