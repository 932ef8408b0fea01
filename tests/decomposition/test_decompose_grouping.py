"""Grouping: class means over test samples, split means over classes, columns of docs/formats.md."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from decompose_helpers import random_set, softmax

import bvkit.decomposition as bd
from bvkit.data.profiles import shot_splits, split_means
from bvkit.errors import BvkitError

CLASS_COLUMNS = ["method", "loss", "class", "train_count", "split", "n_test", "accuracy",
                 "error", "bias", "variance"]
SPLIT_COLUMNS = ["method", "loss", "split", "n_classes", "accuracy", "error", "bias", "variance"]
ZERO_ONE_EXTRA = ["variance_unbiased", "variance_biased", "net_variance"]


def test_shot_splits_thresholds():
    counts = np.array([101, 100, 20, 19, 0, 500])
    assert list(shot_splits(counts)) == ["many", "medium", "medium", "few", "few", "many"]
    assert list(shot_splits(counts, many=10, few=5)) == ["many"] * 3 + ["many", "few", "many"]


def test_class_and_split_means_by_hand():
    # 3 classes, 2 models; hard predictions make every per-sample zero-one term a fraction
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([[0, 1, 1, 2, 0, 2],
                      [0, 0, 0, 2, 1, 2]])
    result = bd.decompose(labels, preds=preds, loss="zero-one", train_counts=[150, 50, 5])
    cls = result.per_class.set_index("class")
    # class 0: accuracies 1, .5 -> .75; class 1: 1/2 -> .5; class 2: 1, 0, 1 -> 2/3
    np.testing.assert_allclose(cls["accuracy"], [0.75, 0.5, 2 / 3])
    assert list(cls["split"]) == ["many", "medium", "few"]
    assert list(cls["n_test"]) == [2, 1, 3]
    split = result.per_split.set_index("split")
    assert list(split.index) == ["many", "medium", "few", "all"]
    np.testing.assert_allclose(split["accuracy"], [0.75, 0.5, 2 / 3, (0.75 + 0.5 + 2 / 3) / 3])
    assert list(split["n_classes"]) == [1, 1, 1, 3]


def test_frames_have_design_columns():
    labels, logits, counts = random_set(n_samples=120)
    result = bd.decompose(labels, logits=logits, train_counts=counts, loss="all",
                          class_names=[f"c{i}" for i in range(8)], method="ce")
    for col in CLASS_COLUMNS + ZERO_ONE_EXTRA + ["class_name"]:
        assert col in result.per_class.columns
    for col in SPLIT_COLUMNS + ZERO_ONE_EXTRA:
        assert col in result.per_split.columns
    assert set(result.per_split["loss"]) == {"squared", "zero-one", "cross-entropy"}
    assert len(result.per_class) == 3 * 8 and len(result.per_split) == 3 * 4
    assert len(result.per_sample) == 3 * 120
    assert (result.per_class["method"] == "ce").all()
    assert result.per_class["class_name"].iloc[3] == "c3"
    # accuracy is the same under every loss
    acc = result.per_class.pivot(index="class", columns="loss", values="accuracy")
    assert np.allclose(acc.std(axis=1), 0)
    for loss in ("squared", "cross-entropy"):
        frame = result.per_split[result.per_split["loss"] == loss]
        np.testing.assert_allclose(frame["error"], frame["bias"] + frame["variance"], rtol=1e-6)
        assert frame[ZERO_ONE_EXTRA].isna().all().all()


@pytest.mark.parametrize("kind", ["logits", "probs", "preds"])
def test_per_model_accuracy_is_each_models_split_mean_and_averages_to_per_split(kind):
    labels, logits, counts = random_set(n_samples=150, n_models=4)
    scores = {"logits": logits, "probs": softmax(logits), "preds": logits.argmax(-1)}[kind]
    result = bd.decompose(labels, **{kind: scores}, train_counts=counts, loss="squared",
                          method="m")
    per_model = result.per_model
    assert list(per_model.columns) == ["method", "model", "split", "n_classes", "n_test",
                                       "accuracy"]
    assert len(per_model) == 4 * 4 and (per_model["method"] == "m").all()
    hits = logits.argmax(-1) == labels
    for d in range(4):
        class_acc = [hits[d][labels == c].mean() if (labels == c).any() else np.nan
                     for c in range(8)]
        expected = split_means(class_acc, shot_splits(counts))
        got = per_model[per_model["model"] == d].set_index("split")["accuracy"]
        for split, value in expected.items():
            assert got[split] == pytest.approx(np.nan if value is None else value, nan_ok=True)
    mean = per_model.groupby("split", sort=False)["accuracy"].mean()
    split = result.per_split.set_index("split")
    np.testing.assert_allclose(mean.loc[split.index], split["accuracy"], rtol=1e-12)
    np.testing.assert_array_equal(per_model.groupby("split", sort=False)["n_test"].first()
                                  .loc[split.index], split["n_test"])


def test_without_train_counts_only_all():
    labels, logits, _ = random_set(n_samples=60)
    result = bd.decompose(labels, logits=logits)
    assert list(result.per_split["split"]) == ["all"]
    assert result.per_class["train_count"].isna().all()
    assert (result.per_class["split"] == "all").all()


def test_empty_split_and_class_without_test_samples_are_nan_without_warnings():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = bd.decompose(labels, preds=preds, loss="zero-one", train_counts=[500, 300, 30],
                              estimator="plugin")
        with_intervals = bd.decompose(labels, preds=preds, loss="all", bootstrap=20,
                                      train_counts=[500, 300, 30], estimator="plugin")
        population = bd.decompose(labels, preds=np.vstack([preds, preds[:1]]), loss="all",
                                  bootstrap=20, train_counts=[500, 300, 30])
    assert population.settings["model"]["estimator"] == "population"
    assert population.per_split.query("split == 'few'")[["bias", "bias_lo"]].isna().all().all()
    few = with_intervals.per_split.query("split == 'few'")
    assert few[["bias", "bias_lo", "bias_hi"]].isna().all().all()
    split = result.per_split.set_index("split")
    assert split.loc["few", "n_classes"] == 0 and np.isnan(split.loc["few", "error"])
    cls = result.per_class.set_index("class")
    assert cls.loc[2, "n_test"] == 0 and np.isnan(cls.loc[2, "error"])
    # "medium" holds class 2 only, which has no test samples
    assert split.loc["medium", "n_classes"] == 0 and np.isnan(split.loc["medium", "bias"])
    assert split.loc["all", "n_classes"] == 2


def test_split_is_mean_over_classes_not_samples():
    labels = np.array([0, 1, 1, 1])
    preds = np.array([[0, 0, 0, 0], [0, 0, 0, 0]])
    result = bd.decompose(labels, preds=preds, loss="zero-one")
    assert result.per_split["accuracy"].iloc[0] == pytest.approx(0.5)  # (1 + 0) / 2, not 1/4


def test_bvkit_decompose_is_the_function_and_the_package_exposes_functions():
    import bvkit

    labels, logits, _ = random_set(n_samples=30)
    direct = bd.decompose(labels, logits=logits)
    called = bvkit.decompose(labels=labels, logits=logits)
    pd.testing.assert_frame_equal(direct.per_class, called.per_class)
    assert bvkit.decompose is bd.decompose
    assert callable(bd.squared_terms)


def test_import_bvkit_then_call_and_no_torch():
    code = (
        "import sys, numpy as np\n"
        "import bvkit\n"
        "r = bvkit.decompose(labels=np.array([0, 1]), "
        "logits=np.zeros((2, 2, 3), np.float32))\n"
        "assert list(r.per_split['split']) == ['all']\n"
        "import bvkit.decomposition\n"
        "assert callable(bvkit.decomposition.squared_terms)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_import_decompose_does_not_import_torch():
    code = ("import sys, bvkit.decomposition, bvkit.decomposition.commands\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="hinge"), "unknown loss"),
    (dict(few=300), "few"),
    (dict(bootstrap=-1), "bootstrap"),
    (dict(bootstrap=10, level=1.5), "level"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_arguments_raise_bvkit_error(kwargs, message):
    labels, logits, _ = random_set(n_samples=20)
    with pytest.raises(BvkitError, match=message):
        bd.decompose(labels, logits=logits, **kwargs)


def test_all_losses_on_hard_predictions_skip_cross_entropy():
    labels, logits, _ = random_set(n_samples=40)
    result = bd.decompose(labels, preds=logits.argmax(-1), loss="all")
    assert result.losses == ["squared", "zero-one"]
    with pytest.raises(BvkitError, match="cross-entropy needs scores"):
        bd.decompose(labels, preds=logits.argmax(-1), loss="cross-entropy")
