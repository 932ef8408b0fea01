"""Per-sample terms of other sets of the D models from one block: B bootstrap replicates
(model multiplicities, :func:`weighted_block_terms`) and the subsets the jackknife leaves
(:func:`subset_terms`)."""

from __future__ import annotations

import numpy as np

from bvkit.decomposition.terms.predictions import accuracy, pred_terms, zero_one_from_preds
from bvkit.decomposition.terms.scores import (
    LOSSES,
    PROBS_EPSILON,
    logsumexp_rows,
    row_dot,
    scores_argmax,
)


def weighted_block_terms(block, labels, weights, losses=LOSSES, kind="logits",
                         limit=np.inf, eps=PROBS_EPSILON, max_floats=1 << 23):
    """Per-sample terms for B replicates of the models, ``weights (B, D)`` model multiplicities.

    The main prediction and the means over models change with the weights, so every term is
    recomputed from per-model statistics: squared from the Gram matrix of the probability
    vectors, cross-entropy from the weighted mean of log-probabilities (processed ``max_floats``
    at a time). Returns ``loss -> {column -> (B, n)}``; ``block`` is overwritten.
    """
    weights = np.asarray(weights, dtype=np.float64)
    n_models, n, n_classes = block.shape
    rows = np.arange(n)
    yhat, top = scores_argmax(block, kind, limit, eps)
    block -= top
    log_norm = np.log(np.exp(block).sum(axis=2))
    block -= log_norm[:, :, None]  # log-probabilities
    terms = {}
    if "zero-one" in losses:
        terms["zero-one"] = zero_one_from_preds(yhat, labels, weights)
    acc = terms["zero-one"]["accuracy"] if terms else weights @ (yhat == labels) / n_models
    if "cross-entropy" in losses:
        log_label = block[:, rows, labels].astype(np.float64)
        log_mean_label = weights @ log_label / n_models
        log_partition = np.empty_like(log_mean_label)
        step = max(1, max_floats // (n * n_classes))
        flat = block.reshape(n_models, -1)
        for b0 in range(0, len(weights), step):
            w = (weights[b0:b0 + step] / n_models).astype(np.float32)
            log_mean = (w @ flat).reshape(-1, n, n_classes)
            log_partition[b0:b0 + step] = logsumexp_rows(log_mean)
        terms["cross-entropy"] = {
            "accuracy": acc, "error": -log_mean_label,
            "bias": log_partition - log_mean_label,
            "variance": np.maximum(-log_partition, 0.0)}
    if "squared" in losses:
        np.exp(block, out=block)  # probabilities
        per_sample = block.transpose(1, 0, 2)
        gram = np.matmul(per_sample, per_sample.transpose(0, 2, 1)).astype(np.float64)
        sq_norm = np.einsum("ndd->dn", gram)
        p_label = block[:, rows, labels].astype(np.float64)
        error = weights @ (sq_norm - 2 * p_label + 1) / n_models
        mean_sq = np.einsum("bd,nde,be->bn", weights, gram, weights, optimize=True) / n_models**2
        bias = np.maximum(mean_sq - 2 * (weights @ p_label) / n_models + 1, 0.0)
        terms["squared"] = {"accuracy": acc, "error": error, "bias": bias,
                            "variance": np.maximum(error - bias, 0.0)}
    return terms


def subset_terms(block: np.ndarray, labels: np.ndarray, losses=LOSSES, kind: str = "logits",
                 limit: float = np.inf, eps: float = PROBS_EPSILON, correct=None):
    """``keep -> {loss: {column: (n,)}}``: the plug-in terms of the models ``keep`` (all D, or
    all but one or two: what the jackknife of ``population.py`` asks for) of one float32
    ``(D, n, C)`` block, which is overwritten.

    The block is read once: each model's probabilities and log-probabilities give per-model
    sums, and a subset's terms come from the totals less the one or two models it leaves out
    (squared: norms, label probabilities and the dot products of the models' probability
    vectors; cross-entropy: the sum of log-probabilities, in float64; zero-one: the argmax
    predictions of the subset). The terms are those of :func:`block_terms`, whatever subset.
    Hard predictions (``kind="preds"``, an int block) use :func:`pred_terms` on the subset.
    ``correct``: a ``(D, n)`` bool array to receive whether each model predicts the label.
    """
    if kind == "preds":
        if correct is not None:
            np.equal(block, labels, out=correct)
        return lambda keep: pred_terms(block[keep], labels, losses)
    n_models, n, _ = block.shape
    rows = np.arange(n)
    yhat, top = scores_argmax(block, kind, limit, eps)
    if correct is not None:
        np.equal(yhat, labels, out=correct)
    block -= top
    shifted = block.copy() if "cross-entropy" in losses else None
    np.exp(block, out=block)
    norm = np.einsum("dnc->dn", block)
    stats = {}
    if "squared" in losses:
        block /= norm[:, :, None]  # probabilities
        total = block.sum(axis=0)  # (n, C)
        stats["sq_norm"] = row_dot(block, block).astype(np.float64)
        stats["p_label"] = block[:, rows, labels].astype(np.float64)
        stats["dot_total"] = row_dot(total[None], block).astype(np.float64)  # (D, n)
        stats["total_sq"] = row_dot(total, total).astype(np.float64)
        stats["pair_dot"] = {}
    if shifted is not None:
        shifted -= np.log(norm)[:, :, None]  # log-probabilities
        stats["log_total"] = shifted.sum(axis=0, dtype=np.float64)  # (n, C)

    def terms(keep):
        keep = np.asarray(keep)
        kept = set(keep.tolist())
        out_ = [d for d in range(n_models) if d not in kept]
        m = keep.size
        found = {}
        acc = accuracy(yhat[keep], labels)
        if "zero-one" in losses:
            found["zero-one"] = zero_one_from_preds(yhat[keep], labels)
        if "squared" in losses:
            sq = stats["sq_norm"]
            sum_sq = stats["total_sq"] - 2 * stats["dot_total"][out_].sum(axis=0)
            for e in out_:
                for f in out_:
                    sum_sq = sum_sq + (sq[e] if e == f else _pair_dot(stats, block, e, f))
            label_sum = stats["p_label"][keep].sum(axis=0)
            error = (sq[keep] - 2 * stats["p_label"][keep] + 1).mean(axis=0)
            bias = np.maximum(sum_sq / m**2 - 2 * label_sum / m + 1, 0.0)
            found["squared"] = {"accuracy": acc, "error": error, "bias": bias,
                                "variance": np.maximum(error - bias, 0.0)}
        if shifted is not None:  # the sum in float64, its log-sum-exp in float32 as the kernel's
            log_sum = stats["log_total"] - shifted[out_].sum(axis=0) if out_ else stats["log_total"]
            log_mean = (log_sum / m).astype(np.float32)
            label = (log_sum[rows, labels] / m)
            log_partition = logsumexp_rows(log_mean)
            found["cross-entropy"] = {"accuracy": acc, "error": -label,
                                      "bias": log_partition - label,
                                      "variance": np.maximum(-log_partition, 0.0)}
        return found

    return terms


def _pair_dot(stats, probs, e, f):
    """``<p_e, p_f>`` per sample (float64), computed once per pair."""
    key = (min(e, f), max(e, f))
    if key not in stats["pair_dot"]:
        stats["pair_dot"][key] = row_dot(probs[key[0]], probs[key[1]]).astype(np.float64)
    return stats["pair_dot"][key]
