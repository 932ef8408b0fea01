"""Synthetic decomposition frames in the columns of docs/formats.md, built directly (no
decompose needed), and a small study folder."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("accuracy", "error", "bias", "variance")


def make_frames(n_classes=20, per_class_test=12, methods=("ce", "ldam", "ride"), seed=0,
                loss="squared"):
    """per_sample / per_class / per_split frames whose class and split values are the means of
    the per-sample values (as the decomposition defines them)."""
    rng = np.random.default_rng(seed)
    counts = np.round(500 * (0.01 ** (np.arange(n_classes) / (n_classes - 1)))).astype(int)
    counts = rng.permutation(counts)  # class index order != training-count order
    splits = np.where(counts > 100, "many", np.where(counts < 20, "few", "medium"))
    labels = np.repeat(np.arange(n_classes), per_class_test)
    samples = []
    for i, method in enumerate(methods):
        bias = np.clip(rng.normal(0.3 + 0.02 * i, 0.1, labels.size) + (counts[labels] < 50) * 0.2, 0, 1)
        variance = np.clip(rng.normal(0.2 - 0.01 * i, 0.05, labels.size), 0, 1)
        samples.append(pd.DataFrame({
            "method": method, "loss": loss, "sample": np.arange(labels.size), "class": labels,
            "accuracy": rng.binomial(5, np.clip(0.9 - 0.5 * (counts[labels] < 50) + 0.05 * i, 0, 1)) / 5,
            "bias": bias, "variance": variance, "error": bias + variance}))
    per_sample = pd.concat(samples, ignore_index=True)
    per_class = per_sample.groupby(["method", "loss", "class"], as_index=False)[list(METRICS)].mean()
    per_class["train_count"] = counts[per_class["class"]]
    per_class["split"] = splits[per_class["class"]]
    per_class["n_test"] = per_class_test
    split_rows = []
    for split in ("many", "medium", "few", "all"):
        part = per_class if split == "all" else per_class[per_class["split"] == split]
        agg = part.groupby(["method", "loss"], as_index=False)[list(METRICS)].mean()
        agg["split"] = split
        agg["n_classes"] = part.groupby(["method", "loss"]).size().to_numpy()
        split_rows.append(agg)
    per_split = pd.concat(split_rows, ignore_index=True)
    for metric in METRICS:
        per_split[f"{metric}_lo"] = per_split[metric] - 0.02
        per_split[f"{metric}_hi"] = per_split[metric] + 0.03
    return per_sample, per_class, per_split




HISTORY_EPOCHS = 4  # epochs of each run's history.csv; a reusing run adds 2 of its own


def make_study(directory, n_classes=12, per_class_test=10, n_models=3, seed=0,
               methods=("ce", "ldam", "ride-3"), routed=("ride-3",), counts=None, reusing=("ldam",),
               experts=("ride-3",)):
    """A small study directory: predictions/<method>.npz, metrics.csv, expert_usage.csv and
    runs/<run_id>/history.csv; a method in ``reusing`` reuses the first method's run of its
    subset as its stage one (as cRT reuses CE's) and trains 2 epochs of its own; a method in
    ``experts`` has 3 experts' logits (``expert_logits``) whose mean is its logits."""
    from pathlib import Path

    from bvkit.data.profiles import shot_splits, split_means
    from bvkit.decomposition import save_predictions

    directory = Path(directory)
    (directory / "predictions").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if counts is None:
        counts = np.round(300 * (0.02 ** (np.arange(n_classes) / (n_classes - 1)))).astype(int)
    counts = np.asarray(counts)
    n_classes = len(counts)
    labels = np.repeat(np.arange(n_classes), per_class_test)
    head = np.log(counts) / np.log(counts.max())
    rows, usage = [], []
    for i, method in enumerate(methods):
        strength = 1.0 + 2.5 * head + 0.6 * i
        logits = rng.normal(0, 1.0, (n_models, labels.size, n_classes))
        logits[:, np.arange(labels.size), labels] += strength[labels]
        expert_logits = None
        if method in experts:  # its own generator: the other methods' numbers stay as they were
            spread = np.random.default_rng([seed, i]).normal(0, 1.0, (n_models, 3, *logits.shape[1:]))
            expert_logits = (logits[:, None] + spread - spread.mean(axis=1, keepdims=True)).astype(np.float32)
        save_predictions(directory / "predictions" / f"{method}.npz", labels,
                         logits=logits.astype(np.float32), train_counts=counts,
                         class_names=[f"c{c}" for c in range(n_classes)], expert_logits=expert_logits)
        for d in range(n_models):
            # what training writes: split accuracy = mean of the classes' accuracies, at the
            # default thresholds (split_means over shot_splits(counts))
            hits = logits[d].argmax(1) == labels
            class_acc = np.bincount(labels, weights=hits, minlength=n_classes) / per_class_test
            accs = split_means(class_acc, shot_splits(counts))
            reuses = method in reusing
            stage_one = f"{methods[0]}-{d}" if reuses else None
            rows.append({"method": method, "subset": d, "seed": d, "run_id": f"{method}-{d}",
                         "status": "done", **accs,
                         "mflops": 69.5 + 8.3 * (method in routed), "seconds": 1.0,
                         "stage_one": stage_one})
            epochs = 2 if reuses else HISTORY_EPOCHS
            run = directory / "runs" / f"{method}-{d}"
            run.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"stage": "crt" if reuses else "stage1", "epoch": np.arange(1, epochs + 1),
                          "loss": rng.uniform(0.5, 2.0, epochs), "accuracy": rng.uniform(0.3, 0.9, epochs),
                          "val_accuracy": rng.uniform(0.2, 0.8, epochs)}).to_csv(run / "history.csv", index=False)
            if method in routed:
                for split, shares in {"many": (0.6, 0.3, 0.1), "medium": (0.4, 0.4, 0.2),
                                      "few": (0.2, 0.3, 0.5)}.items():
                    usage += [{"method": method, "subset": d, "split": split, "n_experts": k + 1,
                               "share": s} for k, s in enumerate(shares)]
    pd.DataFrame(rows).to_csv(directory / "metrics.csv", index=False)
    if usage:
        pd.DataFrame(usage).to_csv(directory / "expert_usage.csv", index=False)
    return directory
