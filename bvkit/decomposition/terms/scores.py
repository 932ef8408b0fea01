"""The fused kernel: per-sample terms of every loss from one float32 ``(D, n, C)`` block of
logits or probabilities (:func:`block_terms`), read once, worked on in place, log-sum-exp taken
once; reductions over the D models are finished in float64 on the small ``(D, n)`` / ``(n,)``
arrays. Also the checks and conversions of score blocks, and the one-loss entry points."""

from __future__ import annotations

import numpy as np

from bvkit.decomposition.terms.predictions import accuracy, pred_terms, zero_one_from_preds
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


def scores_argmax(block, kind, limit, eps):
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
    yhat, top = scores_argmax(block, kind, limit, eps)
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
        stats["sq_norm"] = row_dot(block, block) * (inv * inv)
        stats["p_label"] = block[:, rows, labels] * inv
        # mean over models of e / norm, as n small (1, D) @ (D, C) products
        weights = (inv / np.float32(n_models)).T[:, None, :]
        stats["p_mean"] = np.matmul(weights, block.transpose(1, 0, 2))[:, 0, :]
    if cross_entropy:
        shifted_sum /= np.float32(n_models)
        shifted_sum -= log_norm.mean(axis=0, dtype=np.float32)[:, None]
        stats["log_mean"] = shifted_sum
    return yhat, stats


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
    bias = row_dot(p_mean, p_mean).astype(np.float64)
    # mean_d ||p_d||^2 - ||pbar||^2 with ||pbar||^2 = bias + 2 pbar_y - 1: the identity then holds
    # in float64 and the float32 cancellation stays at ~1e-7; clip its sign noise.
    variance = np.maximum(error - bias, 0.0)
    return {"accuracy": accuracy(yhat, labels), "error": error, "bias": bias, "variance": variance}


def _cross_entropy_from_stats(stats, yhat, labels):
    rows = np.arange(labels.shape[0])
    log_mean = stats["log_mean"]
    log_mean_label = log_mean[rows, labels].astype(np.float64)
    log_partition = logsumexp_rows(log_mean)  # log of the normaliser of pibar, <= 0
    return {
        "accuracy": accuracy(yhat, labels),
        "error": -log_mean_label,
        "bias": log_partition - log_mean_label,
        "variance": np.maximum(-log_partition, 0.0),
    }


def logsumexp_rows(x: np.ndarray) -> np.ndarray:
    # not scipy.special.logsumexp: 7-14x slower on these float32 (n, C) blocks in a quick timeit
    top = x.max(axis=-1, keepdims=True)
    shifted = x - top
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=-1)  # terms in [0, 1], one of them 1: float32 is plenty
    return top[..., 0].astype(np.float64) + np.log(total.astype(np.float64))


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
