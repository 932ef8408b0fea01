"""Per-sample bias-variance terms: pure numpy over one block of predictions.

Definitions are those of ``docs/bias_variance.md``: for each test sample, ``squared`` (Brier),
``zero-one`` (Domingos 2000) and ``cross-entropy`` (Yang et al. 2020) error, bias and variance
over the D models, plus ``accuracy`` (mean over models). Every function takes arrays shaped
``(D, n, C)`` (scores) or ``(D, n)`` (hard predictions) and ``labels`` ``(n,)``, and returns a
dict ``loss -> {column -> (n,) float64}``.

The fused kernel (:func:`block_terms`) reads a block once, works in float32 in place, computes
log-sum-exp once and derives all requested losses from it; reductions over the D models are
finished in float64 on the small ``(D, n)`` / ``(n,)`` arrays.
"""

from __future__ import annotations

import numpy as np

from bvkit.errors import BvkitError

LOSSES = ("squared", "zero-one", "cross-entropy")
VALUE_COLUMNS = ("accuracy", "error", "bias", "variance")
ZERO_ONE_COLUMNS = ("variance_unbiased", "variance_biased", "net_variance")
SCORE_KINDS = ("logits", "probs")

#: Probabilities are clipped below at this value before their log is taken (cross-entropy from
#: ``probs``); the clipped vector is renormalised in log space, so all losses see one distribution.
PROBS_EPSILON = 1e-12
#: Largest ``|sum_c p - 1|`` accepted for ``probs`` (float16 storage of 8k classes stays within it).
PROBS_TOLERANCE = 1e-3

_HALF_SCALE = np.float32(2.0**112)  # 2**(127 - 15): moves a float16 exponent to float32's bias
_HALF_KEEP = np.int32(-0x70000001)  # 0x8FFFFFFF: sign bit + 15 shifted half bits


def columns_of(loss: str) -> tuple[str, ...]:
    """Value columns a loss reports, in frame order."""
    return VALUE_COLUMNS + ZERO_ONE_COLUMNS if loss == "zero-one" else VALUE_COLUMNS


def to_float32(src: np.ndarray, out: np.ndarray) -> None:
    """Copy ``src`` into the float32 array ``out``; float16 through integer bit moves.

    numpy's own float16 cast runs at about 2-3 ns per element here, ten times the rest of the
    kernel; sign-extending the half bits to int32, shifting them into place and rescaling by
    2**112 is exact for every finite half (subnormals included). Half inf/NaN land at
    magnitudes >= 65536, which :func:`block_terms` rejects.
    """
    if src.dtype == np.float16 and src.dtype.isnative:
        bits = out.view(np.int32)
        np.copyto(bits, src.view(np.int16), casting="unsafe")
        np.left_shift(bits, 13, out=bits)
        np.bitwise_and(bits, _HALF_KEEP, out=bits)
        np.multiply(out, _HALF_SCALE, out=out)
    else:
        np.copyto(out, src, casting="unsafe")


def finite_limit(dtype: np.dtype) -> float:
    """Magnitude from which a value converted by :func:`to_float32` was inf or NaN."""
    return 65536.0 if np.dtype(dtype) == np.float16 else np.inf


def block_terms(
    block: np.ndarray,
    labels: np.ndarray,
    losses=LOSSES,
    kind: str = "logits",
    limit: float = np.inf,
    eps: float = PROBS_EPSILON,
    correct: np.ndarray | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-sample terms of every loss in ``losses`` from one float32 ``(D, n, C)`` block.

    ``block`` holds logits or probabilities and is overwritten. ``limit``: values whose
    magnitude reaches it are non-finite in the source (see :func:`finite_limit`).
    ``correct``: a ``(D, n)`` bool array to receive whether each model predicts the label.
    """
    yhat, stats = softmax_stats(block, labels, kind, limit, eps, "squared" in losses,
                                "cross-entropy" in losses)
    if correct is not None:
        np.equal(yhat, labels, out=correct)
    terms = {}
    if "zero-one" in losses:
        terms["zero-one"] = zero_one_from_preds(yhat, labels)
    if "squared" in losses:
        terms["squared"] = _squared_from_stats(stats, yhat, labels)
    if "cross-entropy" in losses:
        terms["cross-entropy"] = _cross_entropy_from_stats(stats, yhat, labels)
    return terms


def _scores_argmax(block, kind, limit, eps):
    """Turn a probs block into clipped log-probabilities in place (logits stay as they are),
    check it is finite, and return the argmax ``yhat (D, n)`` with its top score ``(D, n, 1)``."""
    if kind == "probs":
        _check_probs(block)
        np.maximum(block, np.float32(eps), out=block)
        np.log(block, out=block)
    yhat = block.argmax(axis=2)
    top = np.take_along_axis(block, yhat[:, :, None], axis=2)
    if not (np.all(top < limit) and block.min() > -limit):
        raise BvkitError(f"{kind} contain NaN or inf")
    return yhat, top


def softmax_stats(block, labels, kind, limit=np.inf, eps=PROBS_EPSILON, squared=True,
                  cross_entropy=True):
    """Argmax predictions and the per-model sufficient statistics of a float32 block.

    Returns ``yhat (D, n)`` and a dict with, where asked, ``sq_norm``/``p_label (D, n)`` +
    ``p_mean (n, C)`` (squared) and ``log_mean (n, C)`` = mean over models of log p
    (cross-entropy).
    """
    n_models, n, _ = block.shape
    rows = np.arange(n)
    yhat, top = _scores_argmax(block, kind, limit, eps)
    stats = {}
    if not (squared or cross_entropy):
        return yhat, stats
    block -= top
    if cross_entropy:
        shifted_sum = np.add.reduce(block, axis=0)
    np.exp(block, out=block)
    norm = np.einsum("dnc->dn", block)  # twice as fast as block.sum(axis=2) here
    log_norm = np.log(norm)
    if squared:
        inv = np.float32(1.0) / norm
        stats["sq_norm"] = _row_dot(block, block) * (inv * inv)
        stats["p_label"] = block[:, rows, labels] * inv
        # mean over models of e / norm, as n small (1, D) @ (D, C) products
        weights = (inv / np.float32(n_models)).T[:, None, :]
        stats["p_mean"] = np.matmul(weights, block.transpose(1, 0, 2))[:, 0, :]
    if cross_entropy:
        shifted_sum /= np.float32(n_models)
        shifted_sum -= log_norm.mean(axis=0, dtype=np.float32)[:, None]
        stats["log_mean"] = shifted_sum
    return yhat, stats


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products along the last axis (np.vecdot is 3x faster than einsum where it exists)."""
    vecdot = getattr(np, "vecdot", None)
    return vecdot(a, b) if vecdot is not None else np.einsum("...c,...c->...", a, b)


def _check_probs(block: np.ndarray) -> None:
    if not block.min() >= 0:  # also false for NaN
        raise BvkitError("probs contain negative values, NaN or -inf")
    sums = block.sum(axis=2)
    worst = np.abs(sums - 1).max()
    if not worst <= PROBS_TOLERANCE:
        raise BvkitError(
            f"probs do not sum to 1 over classes (off by up to {worst:.3g}; "
            f"tolerance {PROBS_TOLERANCE:g}); unnormalised scores belong in logits"
        )


def _squared_from_stats(stats, yhat, labels):
    rows = np.arange(labels.shape[0])
    sq_norm = stats["sq_norm"].astype(np.float64)
    p_label = stats["p_label"].astype(np.float64)
    error = (sq_norm - 2 * p_label + 1).mean(axis=0)
    p_mean = stats["p_mean"]
    p_mean[rows, labels] -= 1
    bias = _row_dot(p_mean, p_mean).astype(np.float64)
    # mean_d ||p_d||^2 - ||pbar||^2 with ||pbar||^2 = bias + 2 pbar_y - 1: the identity then holds
    # in float64 and the float32 cancellation stays at ~1e-7; clip its sign noise.
    variance = np.maximum(error - bias, 0.0)
    return {"accuracy": accuracy(yhat, labels), "error": error, "bias": bias, "variance": variance}


def _cross_entropy_from_stats(stats, yhat, labels):
    rows = np.arange(labels.shape[0])
    log_mean = stats["log_mean"]
    log_mean_label = log_mean[rows, labels].astype(np.float64)
    log_partition = _logsumexp_rows(log_mean)  # log of the normaliser of pibar, <= 0
    return {
        "accuracy": accuracy(yhat, labels),
        "error": -log_mean_label,
        "bias": log_partition - log_mean_label,
        "variance": np.maximum(-log_partition, 0.0),
    }


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    # not scipy.special.logsumexp: 7-14x slower on these float32 (n, C) blocks in a quick timeit
    top = x.max(axis=-1, keepdims=True)
    shifted = x - top
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=-1)  # terms in [0, 1], one of them 1: float32 is plenty
    return top[..., 0].astype(np.float64) + np.log(total.astype(np.float64))


def accuracy(yhat: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample share of models predicting the label: ``(D, n) -> (n,)``."""
    return (yhat == labels).mean(axis=0)


def _votes(preds: np.ndarray, weights=None) -> np.ndarray:
    """``votes[..., d, n]``: (weighted) number of models predicting what model d predicts."""
    same = preds[:, None, :] == preds[None, :, :]
    if weights is None:
        return same.sum(axis=1)
    return np.einsum("be,den->bdn", weights, same.astype(weights.dtype))


def main_prediction(preds: np.ndarray, votes: np.ndarray | None = None) -> np.ndarray:
    """Most frequent prediction over models, ties to the smallest class: ``(D, n) -> (n,)``."""
    votes = _votes(preds) if votes is None else votes
    top = votes.max(axis=-2, keepdims=True)
    return np.where(votes == top, preds, np.iinfo(np.int64).max).min(axis=-2)


def zero_one_from_preds(preds: np.ndarray, labels: np.ndarray, weights=None) -> dict:
    """Domingos' zero-one terms from hard predictions ``(D, n)``.

    Per sample: ``error = bias + c2 * variance``; ``net_variance = c2 * variance`` so that its
    group mean is Domingos' net variance (``variance_unbiased - varc``). ``weights (B, D)``
    (model multiplicities of B bootstrap replicates) gives ``(B, n)`` terms.
    """
    preds = np.asarray(preds, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_models = preds.shape[0]
    votes = _votes(preds, weights)
    main = main_prediction(preds, votes)
    right = preds == labels
    n_right = right.sum(axis=0) if weights is None else weights @ right.astype(weights.dtype)
    n_off_main = n_models - votes.max(axis=-2)
    bias = (main != labels).astype(np.float64)
    variance = n_off_main / n_models
    # c2 = 1 if unbiased, else -P(yhat = y | yhat != m), 0 when no model leaves m
    c2 = np.ones_like(variance)
    biased = bias == 1
    c2[biased] = -np.divide(n_right[biased], n_off_main[biased],
                            out=np.zeros(int(biased.sum())), where=n_off_main[biased] > 0)
    return {
        "accuracy": n_right / n_models,
        "error": 1 - n_right / n_models,
        "bias": bias,
        "variance": variance,
        "c2": c2,
        "variance_unbiased": (1 - bias) * variance,
        "variance_biased": bias * variance,
        "net_variance": c2 * variance,
    }


def squared_terms_from_preds(preds: np.ndarray, labels: np.ndarray, weights=None):
    """Squared (Brier) terms of one-hot predictions ``(D, n)``; exact in float64."""
    preds = np.asarray(preds, dtype=np.int64)
    n_models = preds.shape[0]
    votes = _votes(preds, weights)
    right = preds == labels
    if weights is None:
        weights_ = np.ones((1, n_models))
        n_right = right.sum(axis=0)
        votes_sq = votes.sum(axis=0)
    else:
        weights_ = weights
        n_right = weights @ right.astype(weights.dtype)
        votes_sq = np.einsum("bd,bdn->bn", weights_, votes)
    mean_sq = votes_sq / n_models**2  # ||pbar||^2
    p_label = n_right / n_models
    bias = mean_sq - 2 * p_label + 1
    return {"accuracy": p_label, "error": 2 * (1 - p_label), "bias": bias,
            "variance": 1 - mean_sq}


def pred_terms(preds: np.ndarray, labels: np.ndarray, losses=("squared", "zero-one")):
    """Per-sample terms from hard predictions ``(D, n)`` (squared on one-hot vectors)."""
    if "cross-entropy" in losses:
        raise BvkitError("cross-entropy needs scores (logits or probs), not hard preds")
    terms = {}
    if "zero-one" in losses:
        terms["zero-one"] = zero_one_from_preds(preds, labels)
    if "squared" in losses:
        terms["squared"] = squared_terms_from_preds(preds, labels)
    return terms


def score_terms(scores: np.ndarray, labels: np.ndarray, kind: str = "logits", losses=LOSSES):
    """:func:`block_terms` on any in-memory ``(D, n, C)`` array (copied to float32 first)."""
    scores = np.asarray(scores)
    block = np.empty(scores.shape, np.float32)
    to_float32(scores, block)
    return block_terms(block, np.asarray(labels), losses, kind, finite_limit(scores.dtype))


def squared_terms(labels, *, probs=None, logits=None, preds=None) -> dict[str, np.ndarray]:
    """Squared (Brier) per-sample terms from one of ``probs``, ``logits`` or hard ``preds``."""
    return _one_loss("squared", labels, probs, logits, preds)


def cross_entropy_terms(labels, *, logits=None, probs=None) -> dict[str, np.ndarray]:
    """Cross-entropy per-sample terms (Yang et al. 2020) from ``logits`` or ``probs``."""
    return _one_loss("cross-entropy", labels, probs, logits, None)


def zero_one_terms(labels, *, logits=None, probs=None, preds=None):
    """Zero-one per-sample terms from scores (via argmax) or hard ``preds``."""
    return _one_loss("zero-one", labels, probs, logits, preds)


def _one_loss(loss, labels, probs, logits, preds):
    given = {k: v for k, v in (("probs", probs), ("logits", logits), ("preds", preds))
             if v is not None}
    if len(given) != 1:
        raise BvkitError(f"pass exactly one of logits, probs or preds (got {sorted(given)})")
    (kind, values), = given.items()
    if kind == "preds":
        return pred_terms(values, labels, (loss,))[loss]
    return score_terms(values, labels, kind, (loss,))[loss]


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
    yhat, top = _scores_argmax(block, kind, limit, eps)
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
            log_partition[b0:b0 + step] = _logsumexp_rows(log_mean)
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


def weighted_pred_terms(preds, labels, weights, losses=("squared", "zero-one")):
    """:func:`pred_terms` for B replicates of the models (``weights (B, D)``)."""
    if "cross-entropy" in losses:
        raise BvkitError("cross-entropy needs scores (logits or probs), not hard preds")
    weights = np.asarray(weights, dtype=np.float64)
    terms = {}
    if "zero-one" in losses:
        terms["zero-one"] = zero_one_from_preds(preds, labels, weights)
    if "squared" in losses:
        terms["squared"] = squared_terms_from_preds(preds, labels, weights)
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
    yhat, top = _scores_argmax(block, kind, limit, eps)
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
        stats["sq_norm"] = _row_dot(block, block).astype(np.float64)
        stats["p_label"] = block[:, rows, labels].astype(np.float64)
        stats["dot_total"] = _row_dot(total[None], block).astype(np.float64)  # (D, n)
        stats["total_sq"] = _row_dot(total, total).astype(np.float64)
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
            log_partition = _logsumexp_rows(log_mean)
            found["cross-entropy"] = {"accuracy": acc, "error": -label,
                                      "bias": log_partition - label,
                                      "variance": np.maximum(-log_partition, 0.0)}
        return found

    return terms


def _pair_dot(stats, probs, e, f):
    """``<p_e, p_f>`` per sample (float64), computed once per pair."""
    key = (min(e, f), max(e, f))
    if key not in stats["pair_dot"]:
        stats["pair_dot"][key] = _row_dot(probs[key[0]], probs[key[1]]).astype(np.float64)
    return stats["pair_dot"][key]
