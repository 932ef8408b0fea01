"""Every study directory committed under experiments/results/ is consistent: the accuracies in
its metrics.csv are those recomputed from its committed test logits (each finished run's own, and
each complete method's gathered file), every run's validation set behaves like the unused pool it
was drawn from (|z| of metrics.json's val_check under 3.5, where recorded), and it decomposes as it
is (the CIFAR-10-LT studies' proof). A study still running is checked on the runs it has. The
same check runs on a study trained here."""

import json
import re
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bvkit.data.profiles import ALL, SPLITS, shot_splits, split_means
from bvkit.study import load_study, run_study
from bvkit.study.planning import planned_runs
from bvkit.train.metrics import per_class_accuracy

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
COMMITTED = sorted(path.parent for path in RESULTS.glob("*/metrics.csv"))
# Studies that have finished, every planned run done, and the write-up that reports each: its
# files are checked in full and the write-up's tables against what `bvkit decompose` gives on them.
# (cifar10_lt_study_200 is still running: the first test checks it on the runs it has.)
FINISHED = {"cifar10_lt_study": "cifar10_lt_study.md"}


def recomputed_accuracy(study_dir: Path) -> dict[str, np.ndarray]:
    """method -> (D, 4) all / many / medium / few accuracy of each run, from predictions/."""
    out = {}
    for method, arrays in load_study(study_dir).predictions.items():
        splits = shot_splits(arrays["train_counts"])
        n_classes = arrays["logits"].shape[-1]
        rows = []
        for logits in arrays["logits"]:
            means = split_means(per_class_accuracy(np.asarray(logits).argmax(1), arrays["labels"], n_classes), splits)
            rows.append([np.nan if means[k] is None else means[k] for k in (ALL, *SPLITS)])
        out[method] = np.array(rows)
    return out


def run_accuracy(run_dir: Path) -> list[float]:
    """all / many / medium / few accuracy of one run, from its own predictions.npz."""
    with np.load(run_dir / "predictions.npz") as arrays:
        logits, labels, counts = arrays["logits"][0], arrays["labels"], arrays["train_counts"]
    means = split_means(per_class_accuracy(logits.argmax(1), labels, logits.shape[-1]), shot_splits(counts))
    return [np.nan if means[k] is None else means[k] for k in (ALL, *SPLITS)]


def assert_metrics_match_predictions(study_dir: Path) -> None:
    study = load_study(study_dir)
    metrics = study.metrics
    done = metrics[metrics["status"] == "done"]
    assert len(done), f"{study_dir}: no finished run"
    for row in done.itertuples():
        np.testing.assert_allclose([getattr(row, k) for k in (ALL, *SPLITS)],
                                   run_accuracy(study_dir / "runs" / row.run_id), atol=1e-9, err_msg=row.run_id)
    recomputed = recomputed_accuracy(study_dir)
    for method, accuracy in recomputed.items():
        rows = metrics[(metrics["method"] == method) & (metrics["status"] == "done")].sort_values("subset")
        table = rows[[ALL, *SPLITS]].to_numpy(dtype=float)
        np.testing.assert_allclose(table, accuracy, atol=1e-9, equal_nan=True, err_msg=method)


def assert_validation_like_its_pool(study_dir: Path, bound: float = 3.5) -> None:
    """Every finished run's validation set against its check draw (``docs/formats.md``,
    val_check): |z| < ``bound`` (one honest run in about 2,000 exceeds 3.5)."""
    metrics = load_study(study_dir).metrics
    if "val_check_z" not in metrics:
        return  # a study from before the check
    done = metrics[(metrics["status"] == "done") & metrics["val_check_z"].notna()]
    flagged = done[done["val_check_z"].abs() >= bound]
    assert flagged.empty, f"validation unlike its pool: {flagged[['method', 'subset', 'val_check_z']].to_dict('records')}"


@pytest.mark.parametrize("study_dir", COMMITTED, ids=lambda path: path.name)
def test_committed_study_metrics_equal_its_predictions_and_it_decomposes(study_dir):
    metrics = load_study(study_dir).metrics
    if not (metrics["status"] == "done").any():
        pytest.skip(f"{study_dir.name}: gathered before its first run finished")
    assert_metrics_match_predictions(study_dir)
    assert_validation_like_its_pool(study_dir)
    if not load_study(study_dir).prediction_sets:
        return  # still running: no method has all its runs yet
    per_split = decomposition(study_dir, 1000, 200).per_split
    assert set(per_split["split"]) >= {ALL, *SPLITS} and len(per_split["loss"].unique()) == 3
    assert np.isfinite(per_split["bias"]).all() and (per_split["variance"] >= -1e-9).all()


@pytest.mark.slow
def test_a_trained_study_passes_the_same_check_and_a_tampered_one_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    from test_real_training import SPEC

    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.split('[[methods]]\nname = "ride-2"')[0])
    out = tmp_path / "study"
    run_study(spec, out, log=None)
    assert_metrics_match_predictions(out)
    text = (out / "metrics.csv").read_text().splitlines()
    header, first = text[0].split(","), text[1].split(",")
    first[header.index(ALL)] = "0.999"
    (out / "metrics.csv").write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    with pytest.raises(AssertionError):
        assert_metrics_match_predictions(out)
    assert_validation_like_its_pool(out)  # an honest tiny study
    metrics = pd.read_csv(out / "metrics.csv")
    metrics.loc[0, "val_check_z"] = 4.2  # a validation set far easier than its pool
    metrics.to_csv(out / "metrics.csv", index=False)
    with pytest.raises(AssertionError, match="validation unlike its pool"):
        assert_validation_like_its_pool(out)


# ---------------------------------------------------------------- finished studies, in full


@lru_cache(maxsize=4)
def decomposition(study_dir: Path, many: int, few: int):
    """``bvkit decompose STUDY --loss all --many MANY --few FEW``, as the write-up ran it."""
    return load_study(study_dir).decompose(loss="all", many=many, few=few)


def read_history(path: Path) -> pd.DataFrame:
    """A run's history.csv; a run that trains no epoch (tau-norm, post-hoc) writes it empty."""
    return pd.read_csv(path) if path.read_text().strip() else pd.DataFrame(columns=["stage", "accuracy", "val_accuracy"])


def assert_complete_on_disk(study_dir: Path) -> None:
    """Every planned run done, with its own files under runs/, and every method's gathered
    predictions under predictions/."""
    assert (study_dir / "runs").is_dir(), f"{study_dir}: no runs/"  # first: without it the plan has no old ids to keep
    spec, tasks = planned_runs(study_dir)
    metrics = pd.read_csv(study_dir / "metrics.csv")
    assert sorted(metrics["run_id"]) == sorted(t.run_id for t in tasks), "metrics.csv is not the planned runs"
    assert (metrics["status"] == "done").all()
    for task in tasks:
        for name in ("predictions.npz", "metrics.json", "history.csv", "run.json"):
            assert (study_dir / "runs" / task.run_id / name).is_file(), f"{task.run_id}: no {name}"
    for method in spec.methods:
        assert (study_dir / "predictions" / f"{method.name}.npz").is_file(), f"{method.name}: no predictions"
    assert sorted(load_study(study_dir).prediction_sets) == sorted(m.name for m in spec.methods)


def assert_training_records_match(study_dir: Path) -> None:
    """metrics.csv's epochs, train_accuracy and val_accuracy are the run's: the epochs its task
    planned (and its stage one trained, when it trained one), the last epoch's training and
    validation accuracy in its history.csv, and its metrics.json's."""
    _, tasks = planned_runs(study_dir)
    metrics = pd.read_csv(study_dir / "metrics.csv").set_index("run_id")
    for task in tasks:
        row, run = metrics.loc[task.run_id], study_dir / "runs" / task.run_id
        recorded = json.loads((run / "metrics.json").read_text())
        history = read_history(run / "history.csv")
        assert row["epochs"] == task.overrides["epochs"] == recorded["epochs"], task.run_id
        stage_one = history[history["stage"] == "stage1"]
        if len(stage_one):
            assert len(stage_one) == row["epochs"], task.run_id
        if len(history):
            last = history.iloc[-1]
            np.testing.assert_equal(row["train_accuracy"], float(last["accuracy"]), err_msg=task.run_id)
            assert row["val_accuracy"] == pytest.approx(last["val_accuracy"], abs=1e-12), task.run_id
        else:
            assert np.isnan(row["train_accuracy"]), task.run_id  # no epoch trained
        np.testing.assert_equal(row["train_accuracy"], np.nan if recorded["train_accuracy"] is None
                                else recorded["train_accuracy"], err_msg=task.run_id)
        assert row["val_accuracy"] == pytest.approx(recorded["val_accuracy"], abs=1e-12), task.run_id


def markdown_table(text: str, header: str) -> list[list[str]]:
    """The body rows (cells stripped of ``**``) of the table whose header line starts with
    ``header``; the separator and ``*split*`` rows left out."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"no table {header!r} in the write-up"
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]
        if set(cells[0]) <= {"-", " "} or cells[0] == "*split*":
            continue
        rows.append(cells)
    assert rows, header
    return rows


def numbers(cell: str) -> list[float]:
    """The numbers written in a cell ("60.3 ± 1.1" -> [60.3, 1.1]; "-" -> [nan])."""
    found = [float(v) for v in re.findall(r"-?\d+\.\d+", cell)]
    return found or [np.nan]


def assert_shown(shown: float, value: float, decimals: int, what: str) -> None:
    """``shown`` is ``value`` written to ``decimals`` places; the write-up rounded some from the
    tables' one more place, so one more half-unit there (0.13846 -> 0.1385 -> 0.139)."""
    if np.isnan(value):
        assert np.isnan(shown), f"{what}: written {shown}, none computed"
        return
    tolerance = 0.5 * 10.0 ** -decimals + 0.5 * 10.0 ** -(decimals + 1) + 1e-9
    assert abs(shown - value) <= tolerance, f"{what}: written {shown}, computed {value:.6f}"


def accuracy_percent(study_dir: Path, many: int, few: int) -> pd.DataFrame:
    """(method, split) -> mean and std over the runs of the split's accuracy, in percent."""
    per_model = decomposition(study_dir, many, few).per_model
    per_model = per_model.assign(accuracy=per_model["accuracy"] * 100)
    return per_model.groupby(["method", "split"])["accuracy"].agg(["mean", lambda v: v.std(ddof=1)]).set_axis(
        ["mean", "std"], axis=1)


def assert_write_up_matches(study_dir: Path, write_up: Path) -> None:
    """The write-up's tables are what the committed files give: accuracy (percent, mean ± std
    over the runs) at both splits; the plug-in bias and variance of every method and loss at
    --many 1000 --few 200; the population terms of the since-RIDE table; training and validation
    accuracy from metrics.csv."""
    text = write_up.read_text()
    default, head_tail = accuracy_percent(study_dir, 100, 20), accuracy_percent(study_dir, 1000, 200)
    metrics = pd.read_csv(study_dir / "metrics.csv")
    mflops = metrics.groupby("method")["mflops"].mean()
    table = markdown_table(text, "| Method | MFLOPs | All | Many | Med | Few | Many | Med | Few |")
    assert sorted(row[0] for row in table) == sorted(set(metrics["method"]) - {"logit-adjust-posthoc"})
    for method, flops, *cells in table:
        assert_shown(numbers(flops)[0], mflops[method], 1, f"{method} MFLOPs")
        assert_shown(numbers(flops)[1], mflops[method] / mflops["ce"], 1, f"{method} MFLOPs factor")
        columns = [(default, ALL), *((default, s) for s in SPLITS), *((head_tail, s) for s in SPLITS)]
        for cell, (frame, split) in zip(cells, columns, strict=True):
            written = numbers(cell)
            for k, stat in enumerate(("mean", "std")[:len(written)]):
                value = frame.loc[(method, split), stat] if (method, split) in frame.index else np.nan
                assert_shown(written[k], value, 1, f"{method} {split} accuracy {stat}")

    per_split = decomposition(study_dir, 1000, 200).per_split.set_index(["method", "loss", "split"])
    table = markdown_table(text, "| method | loss | bias many | bias med | bias few | var many |")
    assert len(table) == 6 * 3
    for method, loss, *cells in table:  # the plug-in terms (the write-up's re-read section says so)
        columns = [("bias", s) for s in SPLITS] + [("variance", s) for s in SPLITS] + [("bias", ALL), ("variance", ALL)]
        for cell, (term, split) in zip(cells, columns, strict=True):
            assert_shown(numbers(cell)[0], per_split.loc[(method, loss, split), f"{term}_plugin"], 3,
                         f"{method} {loss} {term} {split}")

    table = markdown_table(text, "| method | test % (mean ± std, 5 subsets) | many | med | few |")
    assert {row[0] for row in table} >= {"ce", "ldam-drw", "logit-adjust-posthoc", "ride-3"}
    for method, test, many, medium, few, bias, variance in table:  # the population terms
        for value, stat in zip(numbers(test), ("mean", "std"), strict=True):
            assert_shown(value, head_tail.loc[(method, ALL), stat], 1, f"{method} test {stat}")
        for cell, split in zip((many, medium, few), SPLITS):
            assert_shown(numbers(cell)[0], head_tail.loc[(method, split), "mean"], 1, f"{method} {split}")
        for cell, term in ((bias, "bias"), (variance, "variance")):
            for value, split in zip(numbers(cell), SPLITS, strict=True):
                assert_shown(value, per_split.loc[(method, "squared", split), term], 3, f"{method} {term} {split}")

    runs = metrics.groupby("method")[["train_accuracy", "val_accuracy", ALL]].mean() * 100
    table = markdown_table(text, "| method | final training accuracy (%) | validation (%) | test (%) |")
    for method, train, val, test, gap in table:
        assert_shown(numbers(train)[0], runs.loc[method, "train_accuracy"], 1, f"{method} training accuracy")
        assert_shown(numbers(val)[0], runs.loc[method, "val_accuracy"], 1, f"{method} validation accuracy")
        assert_shown(numbers(test)[0], runs.loc[method, ALL], 1, f"{method} test accuracy")


@pytest.mark.parametrize("name", sorted(FINISHED))
def test_a_finished_study_has_all_its_files_its_training_records_and_its_write_up(name):
    study_dir = RESULTS / name
    assert_complete_on_disk(study_dir)
    assert_training_records_match(study_dir)
    assert_write_up_matches(study_dir, RESULTS / FINISHED[name])


def test_the_finished_study_check_catches_tampering(tmp_path):
    """A copy of the finished study with one thing changed fails the check above."""
    name = "cifar10_lt_study"
    source = RESULTS / name

    def copy(tag):
        target = tmp_path / tag / name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint.pt", "*.lock"))
        return target

    gone = copy("no-prediction")
    (gone / "predictions" / "crt.npz").unlink()
    with pytest.raises(AssertionError, match="crt: no predictions"):
        assert_complete_on_disk(gone)
    no_runs = copy("no-runs")
    shutil.rmtree(no_runs / "runs")
    with pytest.raises(AssertionError, match="no runs/"):
        assert_complete_on_disk(no_runs)
    for column, value in (("epochs", 39), ("train_accuracy", 0.5), ("val_accuracy", 0.5)):
        changed = copy(column)
        metrics = pd.read_csv(changed / "metrics.csv")
        metrics.loc[metrics["method"] == "ldam-drw", column] = value
        metrics.to_csv(changed / "metrics.csv", index=False)
        with pytest.raises(AssertionError):
            assert_training_records_match(changed)
    moved = copy("moved")  # one run's test logits shifted: every table that reads them moves
    with np.load(moved / "predictions" / "ldam-drw.npz") as arrays:
        arrays = dict(arrays)
    arrays["logits"][0, :, 0] += 1.0
    np.savez(moved / "predictions" / "ldam-drw.npz", **arrays)
    with pytest.raises(AssertionError, match="ldam-drw"):
        assert_write_up_matches(moved, RESULTS / FINISHED[name])
    edited = (RESULTS / FINISHED[name]).read_text().replace("| ldam-drw | squared | 0.326 |", "| ldam-drw | squared | 0.316 |")
    assert edited != (RESULTS / FINISHED[name]).read_text()
    (tmp_path / "edited.md").write_text(edited)
    with pytest.raises(AssertionError, match="ldam-drw squared bias many"):
        assert_write_up_matches(source, tmp_path / "edited.md")
