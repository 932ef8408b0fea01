"""The bias-variance-diversity decomposition of a multi-expert model: pure numpy.

Wood et al., "A Unified Theory of Diversity in Ensemble Learning" (JMLR 2023): for an ensemble
of M members (a multi-expert model's experts) trained on each of D training sets, the expected
loss of the ensemble splits exactly, per test sample, into

    ensemble_loss = average_bias + average_variance - diversity

- ``cross-entropy``, combiner: the normalised geometric mean of the experts' softmaxes, which
  is the softmax of the mean of their logits, i.e. RIDE's output exactly;
- ``squared`` (Brier), combiner: the arithmetic mean of the experts' softmaxes (not RIDE's).

Definitions and identities: ``docs/bias_variance.md`` (section "Experts"); the input array
``expert_logits (D, M, N, C)``: ``docs/formats.md``. :func:`expert_terms` gives the per-sample
terms (any M >= 1, D >= 1); :func:`check_expert_inputs` is what a decomposition of files
accepts (M >= 2, D >= 2, finite, the stored ``logits`` the experts' mean, or their weighted
sum given ``expert_weights``);
:func:`bvkit.decomposition.core.decompose_experts` groups the terms per class and per split.
Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np

from bvkit.errors import BvkitError

EXPERT_LOSSES = ("squared", "cross-entropy")
EXPERT_COLUMNS = ("ensemble_loss", "average_bias", "average_variance", "diversity")
#: The columns the population estimator's finite-D correction changes; ``ensemble_loss`` and
#: ``diversity`` are means over the D models of a per-model quantity, unbiased already.
EXPERT_CORRECTED = {loss: ("average_bias", "average_variance") for loss in EXPERT_LOSSES}
#: ``logits`` must equal the experts' mean within this much times (1 + the sample's largest
#: |logit|): bf16 inference rounds RIDE's mean of 30-scaled cosine logits by up to 0.3 % of
#: that, its router's running sum of 6 experts by up to 1.2 % (simulated); a file whose
#: experts belong to other samples or another model is off by tens of percent.
EXPERT_MEAN_TOLERANCE = 3e-2
#: Float64 bytes of expert logits a chunk of test samples aims at.
CHUNK_BYTES = 8 << 20
#: Floats of (replicates, experts, samples, classes) one block of model replicates may hold.
MAX_FLOATS = 1 << 23


def expert_terms(labels, expert_logits, losses=EXPERT_LOSSES, weights=None) -> dict:
    """Per-sample ``ensemble_loss, average_bias, average_variance, diversity`` of each loss.

    ``expert_logits (D, M, n, C)``: expert m of model d (trained on training set d);
    ``labels (n,)``. ``weights (B, D)``: model multiplicities of B bootstrap replicates (each
    row sums to D); every mean over the D models becomes the weighted mean. Returns
    ``loss -> {column -> (n,)}``, or ``(B, n)`` arrays with ``weights``.
    """
    z = np.asarray(expert_logits, dtype=np.float64)
    if z.ndim != 4:
        raise BvkitError(f"expert_logits must have shape (D, M, N, C), got {z.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    n_models = z.shape[0]
    rows = np.arange(z.shape[2])
    share = (np.ones((1, n_models)) if weights is None
             else np.asarray(weights, dtype=np.float64)) / n_models  # rows sum to 1
    log_q = z - _logsumexp(z)[..., None]  # the experts' log-softmax
    terms = {}
    if "cross-entropy" in losses:
        terms["cross-entropy"] = _cross_entropy(log_q, labels, rows, share)
    if "squared" in losses:
        terms["squared"] = _squared(np.exp(log_q), labels, rows, share)
    if weights is None:
        terms = {loss: {col: values[0] for col, values in cols.items()}
                 for loss, cols in terms.items()}
    return terms


def _cross_entropy(log_q, labels, rows, share):
    # per model d: the ensemble qbar_d, the normalised geometric mean of its experts
    log_geo = log_q.mean(axis=1)  # (D, n, C): log qbar_d + log Z_d
    log_z = _logsumexp(log_geo)  # (D, n), log Z_d <= 0
    ensemble_loss = log_z - log_geo[:, rows, labels]  # -log qbar_d[y]
    diversity = np.maximum(-log_z, 0.0)  # mean over experts of KL(qbar_d || q_dm)
    bias, variance = [], []
    for part in _blocks(share, log_q.shape[1:]):
        # per expert m: its centre q*_m, the normalised geometric mean over the models
        log_centre = np.einsum("bd,dmnc->bmnc", part, log_q)
        log_zc = _logsumexp(log_centre)  # (b, M, n)
        bias.append((log_zc - log_centre[:, :, rows, labels]).mean(axis=1))  # -log q*_m[y]
        variance.append(np.maximum(-log_zc, 0.0).mean(axis=1))  # E_d KL(q*_m || q_dm)
    return {"ensemble_loss": share @ ensemble_loss, "average_bias": np.concatenate(bias),
            "average_variance": np.concatenate(variance), "diversity": share @ diversity}


def _squared(q, labels, rows, share):
    # per model d: the ensemble qbar_d, the arithmetic mean of its experts
    mean = q.mean(axis=1)  # (D, n, C)
    ensemble_loss = _distance_to_label(mean, labels, rows)  # ||qbar_d - e_y||^2
    diversity = ((q - mean[:, None]) ** 2).sum(axis=-1).mean(axis=1)  # mean_m ||q_dm - qbar_d||^2
    sq_norm = (q * q).sum(axis=-1)  # (D, M, n)
    bias, variance = [], []
    for part in _blocks(share, q.shape[1:]):
        centre = np.einsum("bd,dmnc->bmnc", part, q)  # q*_m, the mean over the models
        bias.append(_distance_to_label(centre, labels, rows).mean(axis=1))
        # E_d ||q_dm - q*_m||^2 = E_d ||q_dm||^2 - ||q*_m||^2
        spread = np.einsum("bd,dmn->bmn", part, sq_norm) - (centre * centre).sum(axis=-1)
        variance.append(np.maximum(spread, 0.0).mean(axis=1))
    return {"ensemble_loss": share @ ensemble_loss, "average_bias": np.concatenate(bias),
            "average_variance": np.concatenate(variance), "diversity": share @ diversity}


def _distance_to_label(p, labels, rows):
    """``||p - e_y||^2`` over the last axis, for ``p (..., n, C)``."""
    return (p * p).sum(axis=-1) - 2 * p[..., rows, labels] + 1


def _blocks(share, shape):
    """Rows of ``share (B, D)`` a block at a time, ``MAX_FLOATS`` of ``(b, M, n, C)`` each."""
    step = max(1, MAX_FLOATS // int(np.prod(shape)))
    for b0 in range(0, share.shape[0], step):
        yield share[b0:b0 + step]


def _logsumexp(x):
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def default_chunk_size(shape) -> int:
    """Test samples per chunk of ``(D, M, N, C)`` expert logits."""
    n_models, n_experts, _, n_classes = shape
    return max(1, CHUNK_BYTES // (8 * n_models * n_experts * n_classes))


def chunks(n_samples: int, chunk_size: int):
    for start in range(0, n_samples, chunk_size):
        yield start, min(start + chunk_size, n_samples)


def equal_weights(expert_weights, tolerance: float = 1e-6) -> bool:
    """Whether ``expert_weights (D, M)`` are all 1/M within ``tolerance``: the plain mean the
    decomposition assumes (RIDE's), which a file without them means too."""
    weights = np.asarray(expert_weights, dtype=np.float64)
    return bool((np.abs(weights - 1.0 / weights.shape[-1]) <= tolerance).all())


def check_expert_inputs(expert_logits, labels, logits=None, routed=None,
                        chunk_size: int | None = None, weights=None) -> bool:
    """Refuse expert logits a decomposition cannot use; return whether a router shows.

    The experts must be ``(D, M, N, C)`` with M >= 2 and D >= 2, floating point and finite,
    with N the labels' length and, given the model's own ``logits (D, N, C)``, the same D, N,
    C; their mean must then be ``logits`` within :data:`EXPERT_MEAN_TOLERANCE`.
    ``routed=False``: the mean over all M experts, for every sample; ``routed=True`` or
    ``None`` (not known): for each sample the mean of its first k experts for some k in 1..M,
    as RIDE's router forms its output. ``weights (D, M)`` (checked, ``bvkit.predictions``):
    ``logits`` must instead be each model's weighted sum of all its experts, ``sum_m w_dm z_dm``
    (a learned combiner such as SADE's; ``routed`` then does not apply). Returns True when some
    sample's logits are the mean of fewer than M experts.
    """
    experts = expert_logits
    if experts.ndim != 4:
        raise BvkitError(f"expert_logits must have shape (D, M, N, C), got {tuple(experts.shape)}")
    if not np.issubdtype(experts.dtype, np.floating):
        raise BvkitError(f"expert_logits must be floating point, got dtype {experts.dtype}")
    n_models, n_experts, n_samples, n_classes = experts.shape
    if logits is not None and experts.shape != (logits.shape[0], n_experts, *logits.shape[1:]):
        raise BvkitError(f"expert_logits have shape {tuple(experts.shape)}, which is not "
                         f"(D, M, N, C) beside logits (D, N, C) = {tuple(logits.shape)}")
    if n_samples != len(labels):
        raise BvkitError(f"labels hold {len(labels)} samples but expert_logits hold {n_samples}")
    if n_experts < 2:
        raise BvkitError(f"expert_logits hold {n_experts} expert(s); an expert decomposition "
                         f"needs at least 2")
    if n_models < 2:
        raise BvkitError(f"expert_logits hold {n_models} model(s); a decomposition needs at "
                         f"least 2")
    chunk_size = chunk_size or default_chunk_size(experts.shape)
    routed_found = False
    for start, stop in chunks(n_samples, chunk_size):
        block = np.asarray(experts[:, :, start:stop], dtype=np.float64)
        if not np.isfinite(block).all():
            raise BvkitError("expert_logits contain NaN or inf")
        if logits is None:
            continue
        output = np.asarray(logits[:, start:stop], dtype=np.float64)
        combined = _combinations(block, weights)  # (D, K, n, C), the last: all M experts
        off = np.abs(combined - output[:, None]).max(axis=-1)  # (D, K, n)
        allowed = EXPERT_MEAN_TOLERANCE * (1 + np.abs(output).max(axis=-1))  # (D, n)
        match = off <= allowed[:, None]
        good = match[:, -1] if routed is False or weights is not None else match.any(axis=1)
        if not good.all():
            d, n = np.argwhere(~good)[0]
            worst = off[d, -1, n]
            shape, of_all = (("the weighted sum of its experts (expert_weights)", "their weighted sum")
                             if weights is not None else
                             ("the mean of all its experts" if routed is False else
                              "the mean of all its experts, nor of its first k as a router forms it",
                              f"the mean of all {n_experts}"))
            raise BvkitError(
                f"expert_logits do not match logits: model {d}, sample {start + n}'s logits are "
                f"not {shape} (off by {worst:.3g} from {of_all}; tolerance "
                f"{EXPERT_MEAN_TOLERANCE:g} x (1 + largest |logit|))")
        routed_found |= bool((~match[:, -1]).any())
    return routed_found


def _combinations(block, weights):
    """What a model's logits may be, from its experts' ``block (D, M, n, C)``: with ``weights
    (D, M)`` their weighted sum ``(D, 1, n, C)``; else the means of the first k experts, k =
    1..M, ``(D, M, n, C)`` (a router's outputs; the last is the mean of all M)."""
    if weights is not None:
        return np.einsum("dm,dmnc->dnc", np.asarray(weights, dtype=np.float64), block)[:, None]
    return np.cumsum(block, axis=1) / np.arange(1, block.shape[1] + 1)[None, :, None, None]


def replicate_class_sums(labels, expert_logits, losses, model_weights, sample_counts,
                         n_classes: int, chunk_size: int | None = None) -> dict:
    """Class sums of the per-sample terms for B bootstrap replicates over models and samples.

    ``model_weights (B, D)``: model multiplicities; ``sample_counts (B, N)``: test-sample
    multiplicities (:mod:`bvkit.decomposition.bootstrap`). Returns ``loss -> {column -> (B,
    C)}``; divide by the class sizes for the replicates' class means.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_boot = model_weights.shape[0]
    chunk_size = chunk_size or max(1, default_chunk_size(expert_logits.shape) // 4)
    sums = {loss: {col: np.zeros((n_boot, n_classes)) for col in EXPERT_COLUMNS}
            for loss in losses}
    for start, stop in chunks(labels.shape[0], chunk_size):
        y = labels[start:stop]
        chunk = expert_terms(y, expert_logits[:, :, start:stop], losses, model_weights)
        counts = sample_counts[:, start:stop]
        for loss, cols in chunk.items():
            for col, values in cols.items():
                np.add.at(sums[loss][col].T, y, (counts * values).T)
    return sums
