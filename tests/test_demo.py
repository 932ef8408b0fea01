"""The demo's preset: a miniature of the paper's study (the issue's minimum), shipped twice."""

from pathlib import Path

from bvkit.pipeline import demo_spec_path
from bvkit.study.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_the_packaged_preset_and_experiments_demo_toml_are_the_same_file():
    assert demo_spec_path().read_bytes() == (ROOT / "experiments" / "demo.toml").read_bytes()


def test_the_demo_trains_the_papers_methods_on_mini_lt_with_five_subsets_or_more():
    spec = load_spec(demo_spec_path())
    assert spec.data.dataset == "mini-lt" and spec.data.imbalance == 100
    assert spec.subsets.scheme == "redraw" and spec.subsets.count >= 5
    recipes = {m.method: m for m in spec.methods}
    assert {"ce", "ldam-drw", "ride-ea"} <= set(recipes) and {"crt", "tau-norm"} & set(recipes)
    assert recipes["ride-ea"].options["model_kwargs.num_experts"] == 3


def test_the_demo_says_how_far_its_models_trained(tmp_path):
    from bvkit.pipeline_commands import _training_line

    (tmp_path / "metrics.csv").write_text(
        "method,subset,epochs,train_accuracy\nce,0,30,0.70\nce,1,30,0.80\nride-ea-3,0,30,\n")
    line = _training_line(tmp_path)
    assert line.startswith("Trained 30 epochs each") and "ce 0.75" in line and "ride-ea-3" not in line
    assert "short of convergence" in line
