"""Plugins: a module named by a spec (or ``bvkit train --plugin``) registers its own methods;
every worker imports it; its source is part of the run id; failures are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bvkit import cli
from bvkit.errors import BvkitError
from bvkit.methods import list_methods
from bvkit.plugins import load_plugin, plugin_digest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lab_method"

SPEC = """
name = "plugin-study"
plugins = ["{module}"]
[data]
dataset = "synthetic-lt"
imbalance = 10.0
n_max = 60
[subsets]
scheme = "redraw"
count = 2
[train]
epochs = 1
batch_size = 64
model_width = 4
options = {{ "model_kwargs.blocks" = 1, val_per_class = 2 }}
[[methods]]
name = "{method}"
method = "{method}"
"""

PLUGIN = """
from bvkit.methods import Recipe, register_method
register_method(Recipe("{method}", "a plugin's CE ({version})", loss="ce", weight_decay={wd}))
"""


def write_plugin(folder: Path, module: str, method: str, version: str = "v1", wd: float = 5e-4) -> Path:
    path = folder / f"{module}.py"
    path.write_text(PLUGIN.format(method=method, version=version, wd=wd))
    return path


def test_a_plugin_in_the_spec_folder_registers_its_method(tmp_path):
    write_plugin(tmp_path, "lab_alpha", "alpha-ce")
    assert "alpha-ce" not in list_methods()
    assert load_plugin("lab_alpha", [tmp_path]) == (tmp_path / "lab_alpha.py").resolve()
    assert "alpha-ce" in list_methods()
    assert load_plugin("lab_alpha", [tmp_path]) == (tmp_path / "lab_alpha.py").resolve()  # once per process


@pytest.mark.parametrize("body, message", [
    ("raise ValueError('boom')", "plugin 'lab_{0}' raised ValueError: boom"),
    ("import not_a_module_anywhere", "plugin 'lab_{0}' could not be imported: No module named 'not_a_module_anywhere'"),
    ("from bvkit.methods import Recipe, register_method\nregister_method(Recipe('ce', 'again'))",
     "plugin 'lab_{0}': method 'ce' is already registered"),
])
def test_plugin_failures_are_one_line_naming_the_module(tmp_path, body, message):
    tag = f"bad{abs(hash(body)) % 10_000}"
    (tmp_path / f"lab_{tag}.py").write_text(body + "\n")
    with pytest.raises(BvkitError) as err:
        load_plugin(f"lab_{tag}", [tmp_path])
    assert str(err.value).startswith(message.format(tag))
    assert "\n" not in str(err.value)


def test_a_missing_plugin_names_where_it_looked(tmp_path):
    with pytest.raises(BvkitError, match=r"plugin 'lab_nowhere': no such module \(looked in .*sys.path\)"):
        load_plugin("lab_nowhere", [tmp_path])


def test_bad_plugin_in_a_spec_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "lab_broken.py").write_text("raise RuntimeError('half-written plugin')\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(module="lab_broken", method="ce"))
    assert cli.main(["study", "run", str(spec), "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bvkit: error: {spec}: plugin 'lab_broken' raised RuntimeError: half-written plugin")


def test_plugins_key_must_list_module_names(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(module="not a module", method="ce"))
    assert cli.main(["study", "run", str(spec), "--out", str(tmp_path / "study")]) == 2
    assert "plugins must be a list of module names" in capsys.readouterr().err


def test_the_plugin_source_is_part_of_the_run_id(tmp_path):
    from bvkit.study.planning import plan_runs
    from bvkit.study.spec import load_spec

    path = write_plugin(tmp_path, "lab_beta", "beta-ce", version="v1")
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(SPEC.format(module="lab_beta", method="beta-ce"))
    spec = load_spec(spec_file)
    subsets = [list(range(10)), list(range(10, 20))]
    first = [t.run_id for t in plan_runs(spec, subsets)]
    assert first == [t.run_id for t in plan_runs(spec, subsets)]  # stable
    digest = plugin_digest(["lab_beta"], [tmp_path])
    path.write_text(path.read_text().replace("(v1)", "(v2)"))
    assert plugin_digest(["lab_beta"], [tmp_path]) != digest
    assert set(first).isdisjoint(t.run_id for t in plan_runs(spec, subsets))


@pytest.mark.slow
def test_a_plugin_method_runs_in_a_two_process_study(tmp_path):
    """The example plugin (examples/lab_method) trained by two loky worker processes, which
    never saw the registration of the parent process: each imports the plugin itself."""
    text = (EXAMPLE / "spec.toml").read_text()
    text = text.replace("epochs = 4", "epochs = 1").replace("count = 3", "count = 2").replace("n_max = 300", "n_max = 120")
    spec = tmp_path / "lab" / "spec.toml"
    spec.parent.mkdir()
    spec.write_text(text)
    (spec.parent / "lab_methods.py").write_text((EXAMPLE / "lab_methods.py").read_text())
    out = tmp_path / "study"
    run = subprocess.run([sys.executable, "-m", "bvkit", "study", "run", str(spec), "--out", str(out), "--jobs", "2"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics["method"]) == ["ce", "ce", "vs", "vs"]
    assert (metrics["status"] == "done").all()
    assert (out / "lab_methods.py").read_text() == (EXAMPLE / "lab_methods.py").read_text()
    assert (out / "predictions" / "vs.npz").is_file()


def test_the_example_loss_is_the_vs_loss():
    import torch

    sys.path.insert(0, str(EXAMPLE))
    try:
        load_plugin("lab_methods", [EXAMPLE])
    finally:
        sys.path.remove(str(EXAMPLE))
    from bvkit.losses import create_loss

    counts = [100, 10]
    loss = create_loss("vs", counts, gamma=0.5, tau=1.0)
    logits = torch.tensor([[1.0, 2.0]])
    delta = torch.tensor([1.0, 0.1 ** 0.5])
    iota = torch.log(torch.tensor([100 / 110, 10 / 110]))
    expected = torch.nn.functional.cross_entropy(logits * delta + iota, torch.tensor([1]))
    assert torch.allclose(loss(logits, torch.tensor([1])), expected)


def test_entry_point_plugins_load_on_start(monkeypatch, tmp_path):
    from importlib import metadata

    import bvkit.plugins as plugins

    write_plugin(tmp_path, "lab_gamma", "gamma-ce")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = metadata.EntryPoint(name="gamma", value="lab_gamma", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins.metadata, "entry_points",
                        lambda group: [entry] if group == plugins.ENTRY_POINT_GROUP else [])
    assert cli.main(["methods", "gamma*"]) == 0
    assert "gamma-ce" in list_methods()


def test_train_plugin_option_takes_the_current_directory(tmp_path, monkeypatch, capsys):
    write_plugin(tmp_path, "lab_delta", "delta-ce")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--plugin", "lab_delta", "--method", "delta-ce", "--dataset", "synthetic-lt",
                     "--out", str(tmp_path / "run"), "--set", "epochs=1", "--set", "model_kwargs.width=4",
                     "--set", "model_kwargs.blocks=1", "--n-max", "120", "--set", "val_per_class=2"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "predictions.npz").is_file()
