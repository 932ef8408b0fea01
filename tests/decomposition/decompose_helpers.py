"""Test helpers: random prediction sets and a naive float64 oracle (docs/bias_variance.md)."""

from __future__ import annotations

import collections

import numpy as np


def random_set(seed=0, n_models=5, n_samples=200, n_classes=8, spread=2.0, dtype=np.float32):
    """Logits where models agree a bit (shared signal + per-model noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_samples)
    signal = rng.standard_normal((1, n_samples, n_classes)) * spread
    signal[0, np.arange(n_samples), labels] += 2.0
    logits = signal + rng.standard_normal((n_models, n_samples, n_classes))
    counts = rng.integers(1, 300, n_classes)
    return labels, logits.astype(dtype), counts


def oracle(labels, probs, argmax_of=None):
    """Per-sample terms straight from docs/bias_variance.md, one sample at a time, in float64.

    ``argmax_of``: the scores whose argmax are the hard predictions (default ``probs``).
    """
    argmax_of = probs if argmax_of is None else argmax_of
    with np.errstate(divide="ignore", invalid="ignore"):  # one-hot probs: CE is undefined
        return _oracle(labels, np.asarray(probs, dtype=np.float64), argmax_of)


def _oracle(labels, probs, argmax_of):
    n_models, n_samples, n_classes = probs.shape
    out = collections.defaultdict(lambda: collections.defaultdict(list))
    for n in range(n_samples):
        y, p = labels[n], probs[:, n]
        onehot = np.eye(n_classes)[y]
        pbar = p.mean(0)
        sq = out["squared"]
        sq["error"].append(np.mean([np.sum((p[d] - onehot) ** 2) for d in range(n_models)]))
        sq["bias"].append(np.sum((pbar - onehot) ** 2))
        sq["variance"].append(np.mean([np.sum((p[d] - pbar) ** 2) for d in range(n_models)]))
        logp = np.log(p)
        pibar = np.exp(logp.mean(0))
        pibar /= pibar.sum()
        ce = out["cross-entropy"]
        ce["error"].append(np.mean(-logp[:, y]))
        ce["bias"].append(-np.log(pibar[y]))
        ce["variance"].append(np.mean([np.sum(pibar * (np.log(pibar) - logp[d]))
                                       for d in range(n_models)]))
        yhat = np.asarray(argmax_of)[:, n].argmax(1)
        freq = collections.Counter(yhat.tolist())
        top = max(freq.values())
        main = min(c for c, k in freq.items() if k == top)
        zo = out["zero-one"]
        zo["error"].append(np.mean(yhat != y))
        zo["bias"].append(float(main != y))
        zo["variance"].append(np.mean(yhat != main))
        off = yhat != main
        c2 = 1.0 if main == y else (-np.mean(yhat[off] == y) if off.any() else 0.0)
        zo["c2"].append(c2)
        for loss in out:
            out[loss]["accuracy"].append(np.mean(yhat == y))
    return {loss: {k: np.array(v) for k, v in cols.items()} for loss, cols in out.items()}


def softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def lt_family(n_classes, per_class, seed=0):
    """A simulated population of models with a known truth, for the population estimator's
    tests: per-sample base logits (the label's margin falls from head to tail classes) and
    ``draw(n, rng)``, n models = base + a per-model class offset (the training set) + per-model,
    per-sample noise. Returns ``(labels, draw)``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    base = rng.standard_normal((labels.size, n_classes))
    base[np.arange(labels.size), labels] += np.linspace(3.0, 0.5, n_classes)[labels]

    def draw(n, rng):
        offset = rng.standard_normal((n, 1, n_classes)) * 0.6
        noise = rng.standard_normal((n, labels.size, n_classes)) * 0.7
        return base + offset + noise

    return labels, draw


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def population_truth(labels, draw, n_draws, seed=100, chunk=2000):
    """The population's mean per-sample squared and cross-entropy bias and variance of the
    family ``draw`` (:func:`lt_family`), from ``n_draws`` models: ``loss -> term -> float``
    (equal test samples per class: the mean over samples is the mean of the class means)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(labels.size)
    sum_p = sum_sq = sum_logp = 0.0
    for _ in range(n_draws // chunk):
        log_p = log_softmax(draw(chunk, rng))
        p = np.exp(log_p)
        sum_p = sum_p + p.sum(0)
        sum_sq = sum_sq + (p * p).sum(axis=(0, 2))
        sum_logp = sum_logp + log_p.sum(0)
    mean_p, mean_logp = sum_p / n_draws, sum_logp / n_draws
    off = mean_p.copy()
    off[rows, labels] -= 1
    top = mean_logp.max(axis=1, keepdims=True)
    ce_variance = -(top[:, 0] + np.log(np.exp(mean_logp - top).sum(axis=1)))
    per_sample = {
        "squared": {"bias": (off * off).sum(1),
                    "variance": sum_sq / n_draws - (mean_p * mean_p).sum(1)},
        "cross-entropy": {"bias": -mean_logp[rows, labels] - ce_variance,
                          "variance": ce_variance},
    }
    return {loss: {t: float(v.mean()) for t, v in terms.items()}
            for loss, terms in per_sample.items()}
