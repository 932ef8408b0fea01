import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bvkit
from bvkit import cli
from bvkit.report import assembly, commands, tables
from bvkit.report.study import study_frames

from report_browser import CHROMIUM, dump_dom_with_probe, screenshot
from report_frames import make_study

BOOTSTRAP = ["--bootstrap", "100", "--seed", "3"]


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """bvkit.cli.main with only the report commands registered (other areas load separately)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bvkit.report.commands",))

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study"))


def test_figures_command_writes_every_figure(run_cli, study_dir):
    code, out, err = run_cli("figures", study_dir, "--format", "png,pdf", *BOOTSTRAP)
    assert code == 0, err
    names = ["accuracy_difference", "bias", "variance", "splits", "expert_usage", "experts",
             "training_curves"]
    for name in names:
        png = study_dir / "figures" / f"{name}.png"
        assert str(png) in out
        image = Image.open(png)
        assert image.format == "PNG" and image.size[0] >= 600
        assert (study_dir / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_study_figures_plot_the_decomposition(study_dir):
    study = study_frames(study_dir, bootstrap=50, seed=1)
    made, notes = assembly.make_figures(study, bootstrap=50, seed=1, window=1)
    assert [n.split(":")[0] for n in notes] == ["training"]  # its fake runs keep no test snapshots
    assert "along_training" not in made
    labels = np.load(study_dir / "predictions" / "ce.npz")["labels"]
    reference = bvkit.decompose(**_arrays(study_dir, "ce"), method="ce")
    ride = bvkit.decompose(**_arrays(study_dir, "ride-3"), method="ride-3")
    counts = reference.per_class.set_index("class")["train_count"]
    order = counts.sort_values(ascending=False, kind="stable").index.to_numpy()
    expected = (ride.per_class.set_index("class")["accuracy"]
                - reference.per_class.set_index("class")["accuracy"]).loc[order] * 100
    line = [a for a in made["accuracy_difference"].axes[0].get_lines() if a.get_gid() == "classes:ride-3"][0]
    np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    assert labels.size == len(study.per_sample[study.per_sample["method"] == "ce"])
    bars = {p.get_gid(): p.get_height() for ax in made["splits"].axes for p in ax.patches if p.get_gid()}
    ride_split = ride.per_split.set_index("split")
    for split in ("many", "medium", "few", "all"):
        assert bars[f"bar:bias:ride-3:{split}"] == pytest.approx(ride_split.loc[split, "bias"])
        assert bars[f"bar:accuracy:ride-3:{split}"] == pytest.approx(ride_split.loc[split, "accuracy"] * 100)


def test_training_curves_draw_each_run_and_continue_a_reused_stage_one(study_dir):
    study = study_frames(study_dir, bootstrap=20, seed=1)
    fig = assembly.make_figures(study, bootstrap=20, seed=1, window=1)[0]["training_curves"]
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    for method, steps in (("ce", [1, 2, 3, 4]), ("ldam", [5, 6])):  # ldam reuses ce's 4 epochs
        own = pd.concat(pd.read_csv(study_dir / "runs" / f"{method}-{d}" / "history.csv") for d in range(3))
        mean = own.groupby("epoch")["val_accuracy"].mean().to_numpy() * 100
        curve = lines[f"curve:val_accuracy:{method}"]
        np.testing.assert_array_equal(curve.get_xdata(), steps)
        np.testing.assert_allclose(curve.get_ydata(), mean)
        run = pd.read_csv(study_dir / "runs" / f"{method}-1" / "history.csv")
        np.testing.assert_allclose(lines[f"run:accuracy:{method}:1"].get_ydata(), run["accuracy"] * 100)
    reused = study.histories[study.histories["run_id"] == "ldam-2"]
    assert reused["reused"].tolist() == [True] * 4 + [False] * 2 and reused["step"].tolist() == [1, 2, 3, 4, 5, 6]


def _arrays(study_dir, method):
    with np.load(study_dir / "predictions" / f"{method}.npz") as data:
        return {k: data[k] for k in ("labels", "logits", "train_counts")}


def accuracy_by_hand(study_dir) -> pd.DataFrame:
    """The accuracy table recomputed in numpy from the prediction files: per run, each class's
    accuracy, a split's the mean over its classes (many > 100 training images, few < 20), in
    percent; mean and standard deviation (ddof 1) over the runs; MFLOPs from metrics.csv."""
    metrics = pd.read_csv(study_dir / "metrics.csv")
    rows = []
    for method in ("ce", "ldam", "ride-3"):
        arrays = _arrays(study_dir, method)
        labels, counts = arrays["labels"], arrays["train_counts"]
        hits = arrays["logits"].argmax(-1) == labels
        by_class = 100 * np.stack([hits[:, labels == c].mean(1) for c in range(len(counts))], 1)
        masks = {"all": counts >= 0, "many": counts > 100, "medium": (counts >= 20) & (counts <= 100),
                 "few": counts < 20}
        row = {"method": method, "n_runs": len(hits)}
        for split, mask in masks.items():
            assert mask.any()
            runs = by_class[:, mask].mean(1)
            row |= {f"{split}_mean": runs.mean(), f"{split}_std": runs.std(ddof=1)}
        row["mflops"] = metrics.loc[metrics["method"] == method, "mflops"].mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    table["all_delta"] = table["all_mean"] - table.loc[0, "all_mean"]
    table["mflops_factor"] = table["mflops"] / table.loc[0, "mflops"]
    return table


def test_table_command_round_trips_csv(run_cli, study_dir):
    code, out, err = run_cli("table", study_dir, "--format", "csv", *BOOTSTRAP)
    assert code == 0, err
    written = pd.read_csv(study_dir / "tables" / "accuracy.csv")
    expected = accuracy_by_hand(study_dir)
    assert sorted(written.columns) == sorted(expected.columns)
    pd.testing.assert_frame_equal(written, expected[written.columns], check_dtype=False, rtol=1e-9)
    assert list(written["mflops_factor"]) == pytest.approx([1.0, 1.0, 77.8 / 69.5])
    insights = pd.read_csv(study_dir / "tables" / "insights.csv")
    assert set(insights["verdict"]) <= {"Better", "Worse", "Comparable"}
    covers = (insights["diff_lo"] <= 0) & (insights["diff_hi"] >= 0)
    assert (insights.loc[covers, "verdict"] == "Comparable").all()
    assert (insights.loc[~covers, "verdict"] != "Comparable").all()
    assert "method,n_runs,all_mean" in out


def test_table_split_accuracy_follows_many_few_like_the_figures(run_cli, study_dir):
    code, _, err = run_cli("table", study_dir, "--format", "csv", "--many", "50", "--few", "10",
                           *BOOTSTRAP)
    assert code == 0, err
    written = pd.read_csv(study_dir / "tables" / "accuracy.csv").set_index("method")
    study = study_frames(study_dir, bootstrap=10, many=50, few=10)
    figure_values = study.per_split.set_index(["method", "split"])["accuracy"] * 100
    for (method, split), value in figure_values.items():
        assert written.loc[method, f"{split}_mean"] == pytest.approx(value)
    at_training_thresholds = tables.accuracy_table(pd.read_csv(study_dir / "metrics.csv"), "ce")
    assert not np.allclose(written["many_mean"], at_training_thresholds["many_mean"])
    np.testing.assert_allclose(written["mflops"], at_training_thresholds["mflops"])


def test_table_command_prints_parsable_markdown(run_cli, study_dir):
    code, out, err = run_cli("table", study_dir, *BOOTSTRAP)
    assert code == 0, err
    text = (study_dir / "tables" / "insights.md").read_text()
    assert text in out
    frame = tables.read_markdown(text)
    assert list(frame["Method"]) == ["ldam", "ride-3"]
    assert frame.shape == (2, 7)
    claims = tables.read_markdown((study_dir / "tables" / "claims.md").read_text())
    assert list(claims.columns) == ["Claim", "Verdict", "Evidence"] and len(claims) == 8
    assert set(claims["Verdict"]) <= {"HOLDS", "FAILS", "INCONCLUSIVE", "UNTESTABLE"}
    code, out, _ = run_cli("table", study_dir, "--format", "latex", *BOOTSTRAP)
    assert code == 0 and r"\begin{tabular}" in (study_dir / "tables" / "accuracy.tex").read_text()
    assert r"\toprule" in (study_dir / "tables" / "claims.tex").read_text()


@pytest.mark.slow
def test_report_command_embeds_everything(run_cli, study_dir, tmp_path):
    out_file = tmp_path / "page.html"
    code, out, err = run_cli("report", study_dir, "--out", out_file, *BOOTSTRAP)
    assert code == 0, err
    page = out_file.read_text()
    assert page.count("data:image/png;base64,") == 7
    assert "shot splits many &gt; 100, few &lt; 20 training images" in page
    assert page.count("<table") == 3  # accuracy, key insights, the slides' claims
    assert "RIDE improves accuracy on all three splits" in page
    assert any(f'class="{v}"' in page for v in ("HOLDS", "FAILS", "INCONCLUSIVE", "UNTESTABLE"))
    assert "src=\"http" not in page and "href=" not in page
    if CHROMIUM is None:
        pytest.skip("chromium not installed: page not rendered")
    dom = dump_dom_with_probe(out_file)
    widths = re.search(r'data-image-widths="([0-9,]*)"', dom).group(1).split(",")
    assert len(widths) == 7 and all(int(w) > 0 for w in widths)
    assert dom.count("<table") == 3 and "Tail Variance" in dom
    shot = np.asarray(Image.open(screenshot(out_file, tmp_path / "page.png")).convert("L"), float)
    assert shot.std() > 10 and (shot < 128).mean() > 0.002


def test_missing_expert_usage_and_metrics_are_notes(run_cli, tmp_path):
    study = make_study(tmp_path / "s", methods=("ce", "focal"), routed=(), experts=())
    (study / "metrics.csv").unlink()
    code, out, err = run_cli("figures", study, *BOOTSTRAP)
    assert code == 0
    assert "expert usage" in err and not (study / "figures" / "expert_usage.png").exists()
    assert "experts: no method has expert logits" in err and not (study / "figures" / "experts.png").exists()
    assert "training curves" in err and not (study / "figures" / "training_curves.png").exists()
    code, out, err = run_cli("table", study, *BOOTSTRAP)
    assert code == 0 and "no metrics.csv" in err and "Tail Acc" in out


def test_study_without_few_shot_classes(run_cli, tmp_path):
    study = make_study(tmp_path / "s", counts=[900, 500, 300, 150, 90, 60, 40, 30])
    code, out, err = run_cli("figures", study, *BOOTSTRAP)
    assert code == 0, err
    code, out, err = run_cli("table", study, "--format", "csv", *BOOTSTRAP)
    assert code == 0, err
    assert "few-shot split has no classes" in err
    insights = pd.read_csv(study / "tables" / "insights.csv")
    assert set(insights["split"]) == {"many"}


@pytest.mark.parametrize("command", ["figures", "table", "report"])
def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, study_dir, command):
    cases = [
        [tmp_path / "missing"],  # no such directory
        [tmp_path],  # a directory without predictions
        [study_dir, "--reference", "erm", *BOOTSTRAP],  # unknown reference
        [study_dir, "--bootstrap", "0"],
    ]
    if command == "figures":
        cases += [[study_dir, "--format", "png,gif"], [study_dir, "--window", "4", *BOOTSTRAP]]
    for case in cases:
        code, out, err = run_cli(command, *case)
        assert code == 2, case
        assert err.startswith("bvkit: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
