
import pytest

from bvkit.cli import main
from bvkit.errors import BvkitError
from bvkit.pipeline import demo_spec_path
from bvkit.study.spec import load_spec, parse_spec

from study_helpers import REPO, SPEC

BASE = """
[data]
dataset = "synthetic-lt"
[subsets]
count = 3
[[methods]]
name = "CE"
method = "ce"
"""


def test_spec_defaults_and_merging(spec_file):
    spec = load_spec(spec_file)
    assert spec.name == "tiny" and spec.data.dataset == "synthetic-lt" and spec.data.imbalance == 10.0
    assert spec.subsets.scheme == "redraw" and spec.subsets.count == 3
    ce, ride = spec.methods
    assert (ce.name, ce.method, ce.epochs, ce.device) == ("CE", "ce", 2, "cpu")
    assert ce.seeds == (0, 1, 2)  # model seed varies with the subset
    assert ride.options == {"model_kwargs.num_experts": 2}  # nested TOML tables become dotted keys
    assert spec.text == SPEC


def test_method_settings_override_train_defaults():
    spec = parse_spec(BASE.replace("[[methods]]", """[train]
epochs = 5
lr = 0.2
options = { val_per_class = 10, "model_kwargs.width" = 8 }
[[methods]]
name = "short"
method = "ce"
epochs = 1
options = { "model_kwargs.width" = 4 }
[[methods]]"""))
    short, ce = spec.methods
    assert (short.epochs, short.lr, short.options) == (1, 0.2, {"model_kwargs.width": 4, "val_per_class": 10})
    assert (ce.epochs, ce.lr, ce.options) == (5, 0.2, {"model_kwargs.width": 8, "val_per_class": 10})


def test_compile_reaches_the_run_function_and_leaves_the_run_ids_alone():
    import numpy as np

    from bvkit.study.planning import plan_runs

    subsets = [np.arange(10), np.arange(5, 20), np.arange(3, 12)]
    plain = plan_runs(parse_spec(BASE), subsets)
    compiled = plan_runs(parse_spec(BASE.replace('method = "ce"', 'method = "ce"\ncompile = "on"')), subsets)
    assert [t.run_id for t in compiled] == [t.run_id for t in plain]  # an engine setting, not what a run is
    assert all(t.kwargs["compile"] == "on" for t in compiled) and all("compile" not in t.kwargs for t in plain)


def test_seeds_per_scheme():
    pinned = parse_spec(BASE.replace("[[methods]]", "[train]\nseed = 7\npin_seed = true\n[[methods]]"))
    assert pinned.methods[0].seeds == (7, 7, 7)
    shifted = parse_spec(BASE.replace("[[methods]]", "[train]\nseed = 7\n[[methods]]"))
    assert shifted.methods[0].seeds == (7, 8, 9)
    explicit = parse_spec(BASE + "seeds = [4, 2, 9]\n")
    assert explicit.methods[0].seeds == (4, 2, 9)
    table = parse_spec('seeds = [0, 1, 2]\n[data]\ndataset = "synthetic-lt"\n[subsets]\nscheme = "none"\n'
                       '[[methods]]\nname = "CE"\nmethod = "ce"\n'
                       '[[methods]]\nname = "LDAM"\nmethod = "ldam"\nseeds = [5, 6]\n')
    assert table.subsets.scheme == "seeds"
    assert [m.seeds for m in table.methods] == [(0, 1, 2), (5, 6)]
    assert table.n_subsets == 3


@pytest.mark.parametrize("text, message", [
    (BASE.replace("count = 3", "count = 1"), "spec.toml: [subsets] count must be an integer >= 2, got 1"),
    (BASE.replace("count = 3", "count = 2.5"), "[subsets] count must be an integer >= 2, got 2.5"),
    (BASE.replace("count = 3", ""), "[subsets] needs 'count'"),
    (BASE.replace("count = 3", "count = 3\ncolor = 1"), "[subsets] has unknown key 'color'"),
    (BASE.replace("[data]", "[data]\nimbalanse = 10"), "[data] has unknown key 'imbalanse'"),
    (BASE + "colour = 2\n", "[[methods]] #1 ('CE') has unknown key 'colour'"),
    ("colour = 1\n" + BASE, "top level has unknown key 'colour'"),
    (BASE.replace('method = "ce"', 'method = "see"'), "method 'see' is not registered"),
    (BASE.replace('method = "ce"', ""), "[[methods]] #1 ('CE') needs 'method'"),
    (BASE.replace('name = "CE"', 'name = "C E/x"'), "name must use letters"),
    (BASE + '[[methods]]\nname = "CE"\nmethod = "ldam"\n', "name 'CE' is used twice"),
    (BASE.replace('dataset = "synthetic-lt"', 'dataset = "synthetic-lt"\nprofile = "linear"'),
     "[data] profile must be one of exp, step, got 'linear'"),
    (BASE.replace('dataset = "synthetic-lt"', 'dataset = "synthetic-lt"\nimbalance = 0.5'),
     "[data] imbalance must be a number >= 1, got 0.5"),
    (BASE.replace("count = 3", "count = 3\nfraction = 0.5"), "fraction applies to scheme 'subsample' only"),
    (BASE.replace("count = 3", 'count = 3\nscheme = "subsample"'), "scheme 'subsample' needs fraction"),
    (BASE.replace("count = 3", 'count = 3\nscheme = "jackknife"'), "[subsets] scheme must be one of"),
    (BASE + "seeds = [1, 2]\n", "seeds has 2 entries; [subsets] count is 3"),
    (BASE + "seeds = [1, 1, 2]\n", "seeds must be a list of at least 2 distinct integers"),
    (BASE + 'device = "gpu"\n', "device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"),
    (BASE + "epochs = 0\n", "epochs must be an integer >= 1, got 0"),
    (BASE + 'tensorboard = "yes"\n', "tensorboard must be"),
    (BASE + 'compile = "sometimes"\n', "compile must be one of auto, on, off, got 'sometimes'"),
    (BASE + "options = 3\n", "options must be a table"),
    (BASE.split("[[methods]]")[0], "[[methods]] must list at least one method"),
    (BASE.replace("[data]\ndataset", "[dat]\ndataset"), "top level has unknown key 'dat'"),
    ("[data\n", "not valid TOML"),
])
def test_bad_specs_name_the_key_and_the_problem(text, message):
    with pytest.raises(BvkitError) as err:
        parse_spec(text, source="spec.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("spec.toml: ") and "\n" not in str(err.value)


def test_unknown_dataset_is_an_error():
    with pytest.raises(BvkitError, match=r"\[data\] dataset 'cifar1000-lt' is unknown"):
        parse_spec(BASE.replace("synthetic-lt", "cifar1000-lt"))


def test_missing_spec_file(tmp_path):
    with pytest.raises(BvkitError, match="no such study spec file"):
        load_spec(tmp_path / "nope.toml")


def test_spec_file_not_in_utf8_is_a_one_line_error(tmp_path, capsys):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes(("# Café au lait\n" + BASE).encode("latin-1"))
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "study")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"bvkit: error: {spec}: not UTF-8 text") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and not (tmp_path / "study").exists()


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_presets_are_valid(path):
    spec = load_spec(path)
    assert all(len(m.seeds) >= 2 for m in spec.methods)


def test_presets_cover_what_they_promise():
    from bvkit.methods import list_methods

    assert demo_spec_path().read_text() == (REPO / "experiments" / "demo.toml").read_text()
    demo = load_spec(demo_spec_path())
    assert demo.data.dataset == "mini-lt" and demo.subsets.count == 5
    assert {m.method for m in demo.methods} == {"ce", "crt", "ldam-drw", "ride-ea"}
    assert [m.options.get("model_kwargs.num_experts") for m in demo.methods if m.method == "ride-ea"] == [3]
    analysis = load_spec(REPO / "experiments" / "cifar100_lt_bias_variance.toml")
    assert [m.method for m in analysis.methods] == ["ce", "crt", "tau-norm", "ldam-drw", "ride"]
    assert analysis.subsets.scheme == "redraw" and analysis.subsets.count == 10
    table = load_spec(REPO / "experiments" / "cifar100_lt_table.toml")
    assert table.subsets.scheme == "seeds" and all(m.seeds == (0, 1, 2) for m in table.methods)
    # every registered method but the one that needs a teacher checkpoint
    assert {m.method for m in table.methods} == set(list_methods()) - {"ride-distill"}
    experts = {(m.method, m.options.get("model_kwargs.num_experts"))
               for m in table.methods if m.method.startswith("ride")}
    assert experts == {(r, e) for r in ("ride", "ride-ea") for e in (2, 3, 4)}
