"""``bvkit decompose``: outputs, and one clear line + exit 2 for every bad input."""

import sys

import numpy as np
import pandas as pd
import pytest
from decompose_helpers import random_set, softmax

import bvkit.decomposition as bd

CLASS_COLUMNS = ["method", "loss", "class", "train_count", "split", "n_test", "accuracy",
                 "error", "bias", "variance"]
SPLIT_COLUMNS = ["method", "loss", "split", "n_classes", "accuracy", "error", "bias", "variance"]


@pytest.fixture
def study(tmp_path):
    labels, logits, counts = random_set(seed=0, n_samples=120, n_classes=6)
    _, other, _ = random_set(seed=1, n_samples=120, n_classes=6)
    root = tmp_path / "study"
    bd.save_predictions(root / "predictions" / "ce.npz", labels, logits=logits,
                        train_counts=counts)
    bd.save_predictions(root / "predictions" / "ride", labels, logits=other, train_counts=counts)
    return root


def test_cli_writes_long_form_csvs_and_prints_table(run_cli, study, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("decompose", study, "--loss", "all", "--out", out,
                                   "--bootstrap", "20", "--seed", "3")
    assert code == 0, stderr
    per_class = pd.read_csv(out / "per_class.csv")
    per_split = pd.read_csv(out / "per_split.csv")
    for col in CLASS_COLUMNS + ["variance_unbiased", "variance_biased", "net_variance",
                                "bias_lo", "bias_hi", "net_variance_lo"]:
        assert col in per_class.columns, col
    for col in SPLIT_COLUMNS + ["net_variance", "variance_hi"]:
        assert col in per_split.columns, col
    assert len(per_class) == 2 * 3 * 6 and len(per_split) == 2 * 3 * 4
    assert set(per_split["method"]) == {"ce", "ride"}
    assert set(per_split["split"]) == {"many", "medium", "few", "all"}
    assert "net_variance" in stdout and "ride" in stdout and "cross-entropy" in stdout
    direct = bd.decompose_file(study / "predictions" / "ce.npz", loss="all", bootstrap=20,
                               seed=3).per_split
    mine = per_split[per_split["method"] == "ce"].reset_index(drop=True)
    np.testing.assert_allclose(mine["bias_hi"], direct["bias_hi"], equal_nan=True)


def test_cli_reference_writes_comparison(run_cli, study, tmp_path):
    out = tmp_path / "cmp"
    code, stdout, stderr = run_cli("decompose", study, "--reference", "ce", "--out", out,
                                   "--bootstrap", "10")
    assert code == 0, stderr
    comparison = pd.read_csv(out / "comparison_per_split.csv")
    assert set(comparison["method"]) == {"ride"} and set(comparison["reference"]) == {"ce"}
    assert "error_lo" in comparison.columns
    assert (out / "comparison_per_class.csv").is_file()
    assert "difference to ce" in stdout


def test_cli_name_and_multiple_inputs(run_cli, study, tmp_path):
    out = tmp_path / "named"
    code, _, stderr = run_cli("decompose", study / "predictions" / "ce.npz", "--name", "baseline",
                              "--out", out, "--loss", "zero-one")
    assert code == 0, stderr
    assert set(pd.read_csv(out / "per_split.csv")["method"]) == {"baseline"}
    code, _, _ = run_cli("decompose", study / "predictions" / "ce.npz",
                         study / "predictions" / "ride", "--out", out)
    assert code == 0
    assert set(pd.read_csv(out / "per_split.csv")["method"]) == {"ce", "ride"}


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _bad_inputs(tmp):
    labels, logits, counts = random_set(n_samples=30, n_classes=5)
    probs = softmax(logits)
    preds = logits.argmax(-1)
    cases = {}

    def case(name, message, **arrays):
        cases[name] = (_write(tmp / f"{name}.npz", **arrays), message)

    cases["missing"] = (tmp / "nope.npz", "no such file")
    case("labels_vs_n", "labels hold 29 samples", labels=labels[:-1], logits=logits)
    case("counts_vs_c", "train_counts has 4 entries", labels=labels, logits=logits,
         train_counts=counts[:4])
    case("names_vs_c", "class_names has 6 entries", labels=labels, logits=logits,
         class_names=np.array(list("abcdef")))
    nan = logits.copy()
    nan[1, 2, 3] = np.nan
    case("nan", "NaN or inf", labels=labels, logits=nan)
    inf = logits.astype(np.float16)
    inf[0, 5, 1] = np.inf
    case("inf16", "NaN or inf", labels=labels, logits=inf)
    case("label_range", "labels out of range", labels=labels + 5, logits=logits)
    case("negative_label", "labels out of range", labels=labels - 1, logits=logits)
    case("probs_sum", "do not sum to 1", labels=labels, probs=probs * 1.1)
    neg = probs.copy()
    neg[0, 0, 0] = -0.1
    neg[0, 0, 1] += 0.1
    case("probs_negative", "negative", labels=labels, probs=neg)
    case("one_model", "at least 2", labels=labels, logits=logits[:1])
    case("float_preds", "preds must be integer", labels=labels, preds=preds.astype(float))
    case("pred_range", "preds out of range", labels=labels, preds=preds + 10,
         train_counts=counts)
    case("two_scores", "exactly one of logits, probs or preds", labels=labels, logits=logits,
         probs=probs)
    case("no_scores", "exactly one of logits, probs or preds", labels=labels)
    case("no_labels", "no 'labels'", logits=logits)
    case("float_labels", "labels must be a 1-D integer", labels=labels.astype(float),
         logits=logits)
    case("logits_2d", "logits must have shape", labels=labels, logits=logits[0])
    case("ce_on_preds", "cross-entropy needs scores", labels=labels, preds=preds)
    case("pickled", "pickled object array", labels=labels, logits=logits,
         class_names=np.array([{"a": 1}] * 5, dtype=object))
    text = tmp / "text.npz"
    text.write_text("labels,logits\n1,2\n")
    cases["not_npz"] = (text, "not a .npz file")
    broken = tmp / "broken.npz"
    broken.write_bytes(_write(tmp / "ok.npz", labels=labels, logits=logits).read_bytes()[:500])
    cases["truncated"] = (broken, "not a valid .npz")
    folder = tmp / "folder_without_labels"
    folder.mkdir()
    np.save(folder / "logits.npy", logits)
    cases["empty_dir"] = (folder, "no prediction sets")
    return cases


BAD = ["missing", "labels_vs_n", "counts_vs_c", "names_vs_c", "nan", "inf16", "label_range",
       "negative_label", "probs_sum", "probs_negative", "one_model", "float_preds",
       "pred_range", "two_scores", "no_scores", "no_labels", "float_labels", "logits_2d",
       "ce_on_preds", "pickled", "not_npz", "truncated", "empty_dir"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, name):
    path, message = _bad_inputs(tmp_path)[name]
    loss = "cross-entropy" if name == "ce_on_preds" else "all"
    if name in ("float_preds", "pred_range"):
        loss = "zero-one"
    code, stdout, stderr = run_cli("decompose", path, "--loss", loss, "--out", tmp_path / "o")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("bvkit: error:") and message in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout


@pytest.mark.parametrize("argv, message", [
    (["--reference", "ldam"], "reference method 'ldam'"),
    (["--name", "x"], "--name names one prediction set, but the inputs hold 2"),
    (["--bootstrap", "-3"], "bootstrap must be"),
    (["--many", "10", "--few", "50"], "need few <= many + 1, got many=10, few=50"),
    (["--chunk-size", "0"], "chunk_size"),
    (["--level", "2"], "level"),
])
def test_bad_options_are_one_line_and_exit_2(run_cli, study, tmp_path, argv, message):
    code, _, stderr = run_cli("decompose", study, "--out", tmp_path / "o", *argv)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], stderr


def test_unknown_loss_is_refused_by_argparse(run_cli, study):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("decompose", study, "--loss", "hinge")
    assert exit_info.value.code == 2


def test_cli_writes_parquet_beside_the_csvs_when_pyarrow_is_there(run_cli, study, tmp_path):
    out = tmp_path / "pq"
    code, stdout, stderr = run_cli("decompose", study, "--loss", "all", "--reference", "ce",
                                   "--bootstrap", "10", "--out", out)
    assert code == 0, stderr
    names = ["per_class", "per_split", "comparison_per_class", "comparison_per_split"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{suffix}" for n in names for suffix in (".csv", ".parquet"))
    assert str(out / "per_split.parquet") in stdout
    direct = bd.decompose_file(study / "predictions" / "ce.npz", loss="all").per_class
    per_class = pd.read_parquet(out / "per_class.parquet")
    mine = per_class[per_class["method"] == "ce"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine[direct.columns], direct, check_dtype=True,
                                  check_categorical=False)
    assert per_class["class_name"].map(type).eq(str).all()  # a CSV reads "0" back as 0
    for name in names:  # the same table in both files
        parquet, csv = pd.read_parquet(out / f"{name}.parquet"), pd.read_csv(out / f"{name}.csv")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
        numbers = parquet.select_dtypes("number").columns
        pd.testing.assert_frame_equal(parquet[numbers], csv[numbers], check_dtype=False)


def test_cli_without_pyarrow_writes_the_csvs_alone(run_cli, study, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    out = tmp_path / "csv"
    code, stdout, stderr = run_cli("decompose", study, "--out", out)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["per_class.csv", "per_split.csv"]
    assert "parquet" not in stdout
