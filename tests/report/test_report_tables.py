import numpy as np
import pandas as pd
import pytest

from bvkit.errors import BvkitError
from bvkit.report import tables
from bvkit.report.differences import split_differences_from_samples


def metrics_frame():
    rows = []
    for method, accs, mflops in (("ce", (0.38, 0.40), 69.5), ("ride", (0.47, 0.49), 77.8)):
        for subset, acc in enumerate(accs):
            rows.append({"method": method, "subset": subset, "seed": subset, "run_id": f"{method}{subset}",
                         "status": "done", "all": acc, "many": acc + 0.2, "medium": acc,
                         "few": acc - 0.2, "mflops": mflops, "seconds": 1.0})
    rows.append({**rows[0], "status": "failed", "all": 0.0, "run_id": "bad"})
    return pd.DataFrame(rows)


def test_accuracy_table_means_stds_and_flops_factor():
    table = tables.accuracy_table(metrics_frame(), reference="ce")
    assert list(table["method"]) == ["ce", "ride"]
    ce, ride = table.iloc[0], table.iloc[1]
    assert ce["n_runs"] == 2  # the failed run is left out
    assert ce["all_mean"] == pytest.approx(39.0)
    assert ce["all_std"] == pytest.approx(np.std([38.0, 40.0], ddof=1))
    assert ride["few_mean"] == pytest.approx(28.0)
    assert ride["mflops_factor"] == pytest.approx(77.8 / 69.5)
    shown = tables.format_accuracy_table(table)
    assert ride["all_delta"] == pytest.approx(48.0 - 39.0)
    assert list(shown.columns) == ["Method", "MFLOPs", "All", "Many", "Med", "Few", "Δ All", "Runs"]
    assert shown["Δ All"].tolist() == ["-", "+9.0"]
    assert shown.loc[1, "MFLOPs"] == "77.8 (1.1x)"
    assert shown.loc[0, "All"] == "39.0 ± 1.4"


def test_accuracy_table_keeps_percent_and_single_runs():
    metrics = metrics_frame()
    metrics[["all", "many", "medium", "few"]] *= 100
    table = tables.accuracy_table(metrics.iloc[[0, 2]], reference="ce")
    assert table["all_mean"].tolist() == pytest.approx([38.0, 47.0])
    assert tables.format_accuracy_table(table).loc[0, "All"] == "38.0"
    with pytest.raises(BvkitError, match="no finished run"):
        tables.accuracy_table(metrics.assign(status="failed"))


@pytest.mark.parametrize("metric,diff,lo,hi,expected", [
    ("accuracy", 2.0, 1.0, 3.0, "Better"),
    ("accuracy", -2.0, -3.0, -1.0, "Worse"),
    ("accuracy", 0.5, -1.0, 2.0, "Comparable"),
    ("bias", -0.1, -0.2, -0.05, "Better"),
    ("bias", 0.1, 0.05, 0.2, "Worse"),
    ("bias", 0.0, 0.0, 0.1, "Comparable"),
    ("variance", -0.1, -0.2, -0.05, "Better"),
    ("variance", 0.1, 0.05, 0.2, "Worse"),
    ("variance", -0.01, -0.03, 0.01, "Comparable"),
])
def test_key_insight_verdicts_follow_intervals(metric, diff, lo, hi, expected):
    diffs = pd.DataFrame([{"method": "m", "split": "few", "metric": metric, "diff": diff,
                           "diff_lo": lo, "diff_hi": hi}])
    insights = tables.key_insights(diffs, "ce")
    assert insights["verdict"].tolist() == [expected]


def test_key_insights_from_bootstrapped_samples(frames):
    per_sample, per_class, _ = frames
    ce = per_sample[per_sample["method"] == "ce"]
    better = ce.assign(method="better", accuracy=ce["accuracy"] + 0.1, bias=ce["bias"] - 0.1,
                       variance=ce["variance"] + 0.05)
    same = ce.assign(method="same")
    samples = pd.concat([ce, better, same], ignore_index=True)
    metrics = ["accuracy", "bias", "variance"]
    classes = samples.groupby(["method", "class"], as_index=False)[metrics].mean().merge(
        per_class.drop_duplicates("class")[["class", "train_count", "split"]], on="class")
    diffs = split_differences_from_samples(samples, classes, metrics, "ce", bootstrap=200, seed=0)
    insights = tables.key_insights(diffs, "ce")
    verdicts = insights.set_index(["method", "split", "metric"])["verdict"]
    for split in ("many", "few"):
        assert verdicts[("better", split, "accuracy")] == "Better"
        assert verdicts[("better", split, "bias")] == "Better"
        assert verdicts[("better", split, "variance")] == "Worse"
        for metric in metrics:
            assert verdicts[("same", split, metric)] == "Comparable"
    wide = tables.format_key_insights(insights)
    assert list(wide.columns) == ["Method", "Head Acc", "Head Bias", "Head Variance",
                                  "Tail Acc", "Tail Bias", "Tail Variance"]
    assert wide.set_index("Method").loc["better"].tolist() == ["Better", "Better", "Worse"] * 2


def test_key_insights_need_intervals():
    diffs = pd.DataFrame([{"method": "m", "split": "few", "metric": "bias", "diff": 0.1,
                           "diff_lo": np.nan, "diff_hi": np.nan}])
    with pytest.raises(BvkitError, match="interval"):
        tables.key_insights(diffs)


def test_tables_round_trip(tmp_path):
    table = tables.accuracy_table(metrics_frame())
    path = tables.write_table(table, tmp_path / "accuracy", "csv")
    pd.testing.assert_frame_equal(pd.read_csv(path), table, check_dtype=False)
    shown = tables.format_accuracy_table(table)
    shown.loc[0, "Method"] = "ce | base"  # a pipe inside a cell survives
    md = tables.write_table(shown, tmp_path / "accuracy", "markdown")
    assert md.suffix == ".md"
    pd.testing.assert_frame_equal(tables.read_markdown(md.read_text()), shown)
    tex = tables.write_table(shown.assign(Method="ldam_drw & 50%"), tmp_path / "accuracy", "latex").read_text()
    assert r"ldam\_drw \& 50\%" in tex and r"$\pm$" in tex
    assert tex.count(r"\\") == len(shown) + 1
    with pytest.raises(BvkitError, match="unknown table format"):
        tables.render_table(shown, "xlsx")
