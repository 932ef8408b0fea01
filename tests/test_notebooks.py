"""Every notebook under examples/ runs top to bottom in a fresh kernel, and is committed clean.

The kernel is this interpreter's: a kernel spec named "python3" written into a temporary
JUPYTER_PATH (which comes before any user's own kernels) runs ``sys.executable -m
ipykernel_launcher``, so a fresh ``pip install -e ".[test]"`` venv runs the notebooks with itself.
"""

from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pandas as pd
import pytest


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
    if path.name == "bias_variance_study.ipynb":
        check_study_notebook_values(code, tmp_path)


# ------------------------------------------- what bias_variance_study.ipynb shows, recomputed
# Independently of bvkit, in numpy, from the files the notebook wrote: the shot splits at the
# documented defaults (many: > 100 training images, few: < 20), a split's value the mean of its
# classes', the squared loss the Brier score ||p - e_y||^2 and, under the population estimator,
# variance = D / (D - 1) x the plug-in variance and bias = error - variance.


def shot_masks(counts):
    counts = np.asarray(counts)
    return {"many": counts > 100, "medium": (counts >= 20) & (counts <= 100), "few": counts < 20,
            "all": np.ones(len(counts), bool)}


def split_means(by_class, counts):
    """{split: mean over its classes} of a (..., C) array of class values."""
    return {split: by_class[..., mask].mean(-1) for split, mask in shot_masks(counts).items()}


def class_means(values, labels, n_classes):
    """(..., N) -> (..., C): each class's mean over its test samples."""
    return np.stack([values[..., labels == c].mean(-1) for c in range(n_classes)], -1)


def shown_rows(output) -> dict[str, list[float]]:
    """A displayed DataFrame's rows: the row's text labels joined by a space -> its numbers."""
    rows = {}
    for line in output.data["text/plain"].splitlines():
        words = line.split()
        numbers = [w for w in words if w.replace(".", "", 1).lstrip("-").isdigit()]
        labels = [w for w in words if w not in numbers and not w.isdigit()]
        if numbers and labels:
            rows[" ".join(labels)] = [float(w) for w in numbers if "." in w]
    return rows


def assert_shown(shown: float, value: float):
    assert abs(shown - value) <= 0.0005 + 1e-9, (shown, value)  # shown rounded to 3 decimals


def check_study_notebook_values(code, workdir: Path):
    def output_of(text):
        cell = next(c for c in code if text in c.source)
        return next(o for o in cell.outputs if o.output_type == "execute_result")

    # the study's runs: mean and standard deviation over the D = 3 runs of each split's accuracy,
    # from each run's logits in the gathered prediction files
    shown = shown_rows(output_of("study.accuracy().round(3)"))
    assert set(shown) == {"ce", "ldam-drw"}, shown
    for method, numbers in shown.items():
        with np.load(workdir / "notebook-study" / "predictions" / f"{method}.npz") as pred:
            labels, counts = pred["labels"], pred["train_counts"]
            hits = (pred["logits"].argmax(-1) == labels).astype(float)  # (D, N)
        assert hits.shape[0] == 3
        runs = split_means(class_means(hits, labels, len(counts)), counts)
        for k, split in enumerate(("all", "many", "medium", "few")):
            assert_shown(numbers[2 * k], runs[split].mean())
            assert_shown(numbers[2 * k + 1], runs[split].std(ddof=1))

    # the own method (nearest class means): its squared-loss terms, shown and in the CLI's CSV
    with np.load(workdir / "my-predictions" / "ncm.npz") as pred:
        labels, counts, logits = pred["labels"], pred["train_counts"], pred["logits"].astype(float)
    d, _, n_classes = logits.shape
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    onehot = np.eye(n_classes)[labels]
    accuracy = split_means(class_means((logits.argmax(-1) == labels).mean(0), labels, n_classes), counts)
    error = split_means(class_means(((probs - onehot) ** 2).sum(-1).mean(0), labels, n_classes), counts)
    plugin = ((probs - probs.mean(0)) ** 2).sum(-1).mean(0)
    variance = split_means(class_means(plugin * d / (d - 1), labels, n_classes), counts)
    expected = {split: {"accuracy": accuracy[split], "error": error[split], "variance": variance[split],
                        "bias": error[split] - variance[split]} for split in accuracy}
    assert 0.3 < expected["all"]["accuracy"] < 0.6  # nearest class means: well above chance (0.1)
    shown = shown_rows(output_of("mine = bvkit.decompose("))
    assert sorted(shown) == sorted(f"ncm {split}" for split in expected), shown
    for split, terms in expected.items():
        accuracy_, error_, bias, bias_lo, bias_hi, variance_ = shown[f"ncm {split}"]
        for value, name in ((accuracy_, "accuracy"), (error_, "error"), (bias, "bias"), (variance_, "variance")):
            assert_shown(value, terms[name])
        assert bias_lo <= bias <= bias_hi
    cli = pd.read_csv(workdir / "my-decomposition" / "per_split.csv").query("method == 'ncm' and loss == 'squared'")
    for row in cli.itertuples():
        for name, value in expected[row.split].items():
            assert getattr(row, name) == pytest.approx(value, abs=1e-6), (row.split, name)  # float32 logits

    figure = workdir / "per_class_bias_variance.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


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
