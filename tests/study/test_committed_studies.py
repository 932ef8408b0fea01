"""Every study directory committed under experiments/results/ is consistent: the accuracies in
its metrics.csv are those recomputed from its committed test logits (each finished run's own, and
each complete method's gathered file), every run's validation set behaves like the unused pool it
was drawn from (|z| of metrics.json's val_check under 3.5, where recorded), and it decomposes as it
is (the CIFAR-10-LT studies' proof). A study still running is checked on the runs it has. The
same check runs on a study trained here."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bvkit.data.profiles import ALL, SPLITS, shot_splits, split_means
from bvkit.study import load_study, run_study
from bvkit.train.metrics import per_class_accuracy

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(path.parent for path in (ROOT / "experiments" / "results").glob("*/metrics.csv"))


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
    per_split = load_study(study_dir).decompose(loss="all", many=1000, few=200).per_split
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
