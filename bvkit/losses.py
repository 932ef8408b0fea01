"""Long-tail losses: CE, focal, class-balanced, LDAM, DRW, balanced softmax / logit adjustment,
RIDE, routing, distill, SADE's three expert losses.

Every loss is an ``nn.Module`` built from ``class_counts`` (per-class training counts; nothing
hard-codes a class number) whose per-class vectors are buffers, so ``.to(device)`` moves them.
``forward(output, target)`` takes logits (B, C), or for RIDE losses the ``forward_experts`` dict
of a RIDE model. ``set_epoch(epoch)`` is called before each epoch with a **0-based** epoch.

Conventions (where the sources differ):

* Weighted CE-type losses use PyTorch's weighted mean ``sum_i w_yi l_i / sum_i w_yi``, as the
  LDAM and RIDE reference code do; focal is the plain batch mean of ``w_y (1-p_y)^gamma (-log p_y)``.
* Class-balanced weights: ``w_c = (1-beta)/(1-beta**n_c)``, beta = 0.9999, scaled to sum to C.
* DRW: CB weights are on iff ``epoch >= drw_epoch``; the CIFAR default ``drw_epoch=160``
  (0-based) is epoch 161 of 200 counted from 1, the reference code's ``epoch > 160``.
* LDAM: margins ``m_c ∝ n_c**-1/4`` with ``max m = max_margin`` (0.5); the target logit is
  lowered by ``s * m_y`` (s = 30), then CE. The logits are taken as already scaled: our cosine
  classifiers return ``30 * cosine``, so this is exactly the LDAM reference's
  ``CE(s * (cosine - m_y))`` and the RIDE code's ``CE(logits - s * m_y)``.
* Logit adjustment (Menon et al. 2021): CE on ``logits + tau * log pi`` with ``pi_c = n_c / N``;
  balanced softmax is tau = 1.
* SADE (Zhang et al. 2022): expert 1 plain CE, expert 2 CE on ``z + log pi``, expert 3 CE on
  ``z + log pi - tau * log pi_inv`` (tau = 2), where ``pi_inv`` is the prior with its order
  reversed (``inverse_prior``); the three losses are summed.
* RIDE diversity temperatures: ``beta_c = gamma*C*pi_c + 1 - gamma``; "code" form
  ``T = alpha * beta / max(beta)`` (default), "paper" form ``T = alpha * (beta + 1 - max(beta))``.
  They switch on with the DRW weights (``epoch >= drw_epoch``); before, ``T = alpha``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.registry import Registry

# ---------------------------------------------------------------- per-class vectors (pure maths)


def as_counts(class_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``class_counts`` as a float64 array, checked: 1-D, at least 1 class, all counts > 0."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 1:
        raise BvkitError(f"class_counts must be a non-empty 1-D sequence, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts <= 0):
        raise BvkitError("class_counts must be finite and > 0 for every class")
    return counts


def class_balanced_weights(class_counts, beta: float = 0.9999) -> np.ndarray:
    """Effective-number weights ``(1-beta)/(1-beta**n_c)``, normalised to sum to C."""
    counts = as_counts(class_counts)
    if not 0.0 <= beta < 1.0:
        raise BvkitError(f"beta must be in [0, 1), got {beta}")
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * counts.size


def ldam_margins(class_counts, max_margin: float = 0.5) -> np.ndarray:
    """LDAM margins ``m_c = K / n_c**0.25`` with K such that ``max m = max_margin``."""
    margins = as_counts(class_counts) ** -0.25
    return margins * (max_margin / margins.max())


def log_prior(class_counts) -> np.ndarray:
    counts = as_counts(class_counts)
    return np.log(counts / counts.sum())


def inverse_prior(class_counts) -> np.ndarray:
    """SADE's "inverse" prior: the sorted prior values handed out in reverse order, so the
    class with the k-th smallest prior gets the k-th largest value (ties broken by class index,
    a stable sort)."""
    counts = as_counts(class_counts)
    prior = counts / counts.sum()
    order = np.argsort(prior, kind="stable")  # ascending
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return np.sort(prior)[order.size - 1 - rank]


def diversity_temperatures(
    class_counts, gamma: float = 0.05, alpha: float = 1.0, form: str = "code"
) -> np.ndarray:
    """RIDE's per-class temperatures from ``beta_c = gamma * C * pi_c + (1 - gamma)``."""
    counts = as_counts(class_counts)
    beta = gamma * counts.size * counts / counts.sum() + (1.0 - gamma)
    if form == "code":
        temperatures = alpha * beta / beta.max()
    elif form == "paper":
        temperatures = alpha * (beta + 1.0 - beta.max())
    else:
        raise BvkitError(f"unknown temperature form {form!r} (expected 'code' or 'paper')")
    if np.any(temperatures <= 0):
        raise BvkitError(f"gamma={gamma} makes some temperatures <= 0")
    return temperatures


def routing_labels(expert_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, E-1) float: ``y_k = 1`` iff the ensemble of experts 1..k is wrong and some longer
    prefix ensemble 1..j (j > k) is right (columns k = 1..E-1)."""
    steps = torch.arange(1, expert_logits.shape[0] + 1, device=expert_logits.device)
    prefix_mean = expert_logits.cumsum(dim=0) / steps.view(-1, 1, 1).to(expert_logits.dtype)
    correct = prefix_mean.argmax(dim=-1) == target.unsqueeze(0)  # (E, B)
    right_from = correct.flip(0).cumsum(dim=0).flip(0) > 0  # [k] = any(correct[k:])
    return (~correct[:-1] & right_from[1:]).T.float()


# ---------------------------------------------------------------- losses on logits


class LongTailLoss(nn.Module):
    """Base: stores ``class_counts``; optional class-balanced weights, always on ("cb") or from
    ``drw_epoch`` on ("drw")."""

    def __init__(self, class_counts, reweight: str | None = None, beta: float = 0.9999,
                 drw_epoch: int = 160):
        super().__init__()
        counts = as_counts(class_counts)
        if reweight not in (None, "cb", "drw"):
            raise BvkitError(f"unknown reweight {reweight!r} (expected None, 'cb' or 'drw')")
        self.num_classes, self.reweight, self.drw_epoch = counts.size, reweight, int(drw_epoch)
        self.register_buffer("class_counts", torch.as_tensor(counts, dtype=torch.float32))
        self.register_buffer(
            "cb_weights", torch.as_tensor(class_balanced_weights(counts, beta), dtype=torch.float32)
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def graph_key(self) -> bool:
        """What of the epoch changes the computation (a captured CUDA graph is redone on change)."""
        return self.reweighting

    @property
    def reweighting(self) -> bool:
        return self.reweight == "cb" or (self.reweight == "drw" and self.epoch >= self.drw_epoch)

    def weights_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        """The active class weights in the logits' dtype (None when off)."""
        return None if not self.reweighting else self.cb_weights.to(logits.dtype)

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise BvkitError(
                f"logits must be (B, {self.num_classes}), got {tuple(logits.shape)}"
            )

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        logits = output["logits"] if isinstance(output, dict) else output
        self._check(logits, target)
        return self.loss(logits, target)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reweight={self.reweight}, drw_epoch={self.drw_epoch}"


class CrossEntropyLoss(LongTailLoss):
    """Softmax cross-entropy (``reweight="cb"``: CB-CE; ``"drw"``: CE-DRW)."""

    def loss(self, logits, target):
        return F.cross_entropy(logits, target, weight=self.weights_for(logits))


class FocalLoss(LongTailLoss):
    """Focal loss ``w_y (1 - p_y)**gamma * (-log p_y)``, batch mean."""

    def __init__(self, class_counts, gamma: float = 1.0, **kw):
        super().__init__(class_counts, **kw)
        if gamma < 0:
            raise BvkitError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def loss(self, logits, target):
        log_p = F.log_softmax(logits, dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
        per_sample = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.reweighting:
            per_sample = per_sample * self.weights_for(logits)[target]
        return per_sample.mean()


class LDAMLoss(LongTailLoss):
    """Label-distribution-aware margin loss: CE after lowering the target logit by ``s * m_y``."""

    def __init__(self, class_counts, max_margin: float = 0.5, s: float = 30.0, **kw):
        super().__init__(class_counts, **kw)
        if s <= 0 or max_margin < 0:
            raise BvkitError(f"LDAM needs s > 0 and max_margin >= 0, got s={s}, max_margin={max_margin}")
        self.s = float(s)
        margins = ldam_margins(self.class_counts.numpy(), max_margin)
        self.register_buffer("margins", torch.as_tensor(margins, dtype=torch.float32))

    def margin_logits(self, logits, target):
        """The logits with ``s * m_y`` taken off each sample's target logit."""
        target_margin = (self.s * self.margins[target]).to(logits.dtype).unsqueeze(1)
        return logits.scatter_add(1, target.unsqueeze(1), -target_margin)

    def loss(self, logits, target):
        return F.cross_entropy(self.margin_logits(logits, target), target, weight=self.weights_for(logits))


class LogitAdjustedLoss(LongTailLoss):
    """Balanced softmax / logit adjustment: CE on ``logits + tau * log prior`` (training only)."""

    def __init__(self, class_counts, tau: float = 1.0, **kw):
        super().__init__(class_counts, **kw)
        if not tau >= 0:
            raise BvkitError(f"logit adjustment needs tau >= 0, got {tau}")
        self.tau = float(tau)
        self.register_buffer("log_prior", torch.as_tensor(log_prior(self.class_counts.numpy()), dtype=torch.float32))

    def loss(self, logits, target):
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        return F.cross_entropy(adjusted, target, weight=self.weights_for(logits))


# ---------------------------------------------------------------- SADE


class SADELoss(nn.Module):
    """SADE's diverse-expert loss (Zhang et al., NeurIPS 2022; ``DiverseExpertLoss``): on the
    three experts' logits ``output["expert_logits"]`` (3, B, C), the sum of CE (forward expert),
    CE on ``z + log pi`` (uniform expert, balanced softmax) and CE on
    ``z + log pi - tau * log pi_inv`` (backward expert, ``inverse_prior``), tau = 2."""

    def __init__(self, class_counts, tau: float = 2.0):
        super().__init__()
        if not tau >= 0:
            raise BvkitError(f"SADE's backward expert needs tau >= 0, got {tau}")
        counts = as_counts(class_counts)
        self.num_classes, self.tau = counts.size, float(tau)
        self.register_buffer("log_prior", torch.as_tensor(log_prior(counts), dtype=torch.float32))
        self.register_buffer("log_inverse_prior", torch.as_tensor(np.log(inverse_prior(counts)), dtype=torch.float32))

    def set_epoch(self, epoch: int) -> None:
        """No epoch dependence."""

    def graph_key(self) -> None:
        return None

    def expert_targets(self) -> torch.Tensor:
        """(3, C) what each expert's logits are shifted by before its CE."""
        zero = torch.zeros_like(self.log_prior)
        return torch.stack([zero, self.log_prior, self.log_prior - self.tau * self.log_inverse_prior])

    def forward(self, output: dict, target: torch.Tensor) -> torch.Tensor:
        expert_logits = output["expert_logits"]
        if expert_logits.dim() != 3 or expert_logits.shape[0] != 3 or expert_logits.shape[2] != self.num_classes:
            raise BvkitError(f"SADE's loss needs the logits of 3 experts (3, B, {self.num_classes}), "
                             f"got {tuple(expert_logits.shape)}")
        shifted = expert_logits + self.expert_targets().to(expert_logits.dtype).unsqueeze(1)
        # each expert's CE is a mean over the batch: the sum of the three is 3 x the mean over the stacked rows
        return 3 * F.cross_entropy(shifted.reshape(-1, self.num_classes), target.repeat(3))


# ---------------------------------------------------------------- RIDE


def kl_batchmean(target_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || model) summed over classes, mean over the leading batch dimension."""
    return F.kl_div(log_probs, target_log_probs, reduction="batchmean", log_target=True)


class RIDELoss(nn.Module):
    """RIDE stage one: each expert's own base loss on its own logits plus the
    distribution-aware diversity term ``lambda * mean(T)**2 * KL(...)``, summed over experts.

    ``diversity="mean"`` (reference code, default): expert i vs the detached mean of the experts;
    ``"pairwise"`` (paper): ``1/(n-1) * sum_{j != i} KL(phi_i || phi_j)``.
    ``diversity_weight`` is lambda (-0.45 CIFAR, -0.2 ImageNet-LT/iNat; negative = maximise
    the divergence); 0 means no diversity term. ``collaborative=True`` (ablation) applies the
    base loss to the mean logits instead, once per expert (the reference code's lambda=0 path).
    ``drw_epoch=None``: no DRW weights and T = alpha throughout.
    """

    def __init__(
        self,
        class_counts,
        base: str = "ldam",
        diversity_weight: float = -0.45,
        gamma: float = 0.05,
        alpha: float = 1.0,
        temperature_form: str = "code",
        diversity: str = "mean",
        drw_epoch: int | None = 160,
        collaborative: bool = False,
        **base_kw,
    ):
        super().__init__()
        if diversity not in ("mean", "pairwise"):
            raise BvkitError(f"unknown diversity form {diversity!r} (expected 'mean' or 'pairwise')")
        if base not in LOSSES or not _on_logits(LOSSES.get(base)):
            raise BvkitError(f"unknown RIDE base loss {base!r}")
        reweight = base_kw.pop("reweight", "drw" if drw_epoch is not None else None)
        self.base = create_loss(base, class_counts, reweight=reweight,
                                drw_epoch=160 if drw_epoch is None else drw_epoch, **base_kw)
        self.diversity_weight, self.alpha = float(diversity_weight), float(alpha)
        self.diversity, self.collaborative = diversity, bool(collaborative)
        self.drw_epoch = drw_epoch
        temperatures = diversity_temperatures(class_counts, gamma, alpha, temperature_form)
        self.register_buffer("class_temperatures", torch.as_tensor(temperatures, dtype=torch.float32))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def graph_key(self) -> tuple:
        return (torch.is_tensor(self.temperature), self.base.graph_key())

    @property
    def temperature(self) -> torch.Tensor | float:
        """Per-class temperature vector once distribution-aware, else the scalar alpha."""
        if self.drw_epoch is not None and self.epoch >= self.drw_epoch:
            return self.class_temperatures
        return self.alpha

    def diversity_term(self, expert_logits: torch.Tensor, mean_logits: torch.Tensor) -> torch.Tensor:
        """The diversity term summed over experts: ``lambda * mean(T)**2 * KL`` each."""
        temperature = self.temperature
        if torch.is_tensor(temperature):
            temperature = temperature.to(expert_logits.dtype)
        t_mean = temperature.mean() if torch.is_tensor(temperature) else temperature
        log_probs = F.log_softmax(expert_logits / temperature, dim=-1)  # (E, B, C)
        n_experts, batch = expert_logits.shape[:2]
        if self.diversity == "mean":
            with torch.no_grad():
                target = F.log_softmax(mean_logits / temperature, dim=-1)
            kl = kl_batchmean(target.expand_as(log_probs).reshape(-1, log_probs.shape[-1]),
                              log_probs.reshape(-1, log_probs.shape[-1])) * n_experts
        else:
            if n_experts < 2:
                return expert_logits.new_zeros(())
            probs = log_probs.exp()
            # sum_{i != j} KL(phi_i || phi_j) = sum_i sum_j p_i (log p_i - log p_j)
            cross = torch.einsum("ibc,jbc->ij", probs, log_probs)
            self_terms = torch.diagonal(cross)
            kl = (self_terms.sum() * n_experts - cross.sum()) / (n_experts - 1) / batch
        return self.diversity_weight * t_mean**2 * kl

    def forward(self, output: dict, target: torch.Tensor) -> torch.Tensor:
        expert_logits = output["expert_logits"]
        mean_logits = output.get("logits")
        if mean_logits is None:
            mean_logits = expert_logits.mean(dim=0)
        n_experts, batch, n_classes = expert_logits.shape
        if self.collaborative:
            loss = n_experts * self.base(mean_logits, target)
        else:
            # every base loss is a (weighted) mean over samples and all experts share the
            # targets, so the sum of the per-expert losses is E x the loss over the stacked rows
            stacked = expert_logits.reshape(n_experts * batch, n_classes)
            loss = n_experts * self.base(stacked, target.repeat(n_experts))
        if self.diversity_weight != 0.0:
            loss = loss + self.diversity_term(expert_logits, mean_logits)
        return loss


class RIDEDistillLoss(RIDELoss):
    """RIDE loss plus ``weight * T_d**2 * KL(softmax(teacher/T_d) || softmax(student_mean/T_d))``;
    the teacher's logits come in ``output["teacher_logits"]`` (teacher in eval mode)."""

    def __init__(self, class_counts, distill_temperature: float = 1.5, distill_weight: float = 1.0,
                 **ride_kw):
        super().__init__(class_counts, **ride_kw)
        self.distill_temperature, self.distill_weight = float(distill_temperature), float(distill_weight)

    def forward(self, output: dict, target: torch.Tensor) -> torch.Tensor:
        if "teacher_logits" not in output:
            raise BvkitError("the distillation loss needs output['teacher_logits']")
        loss = super().forward(output, target)
        student = output.get("logits")
        if student is None:
            student = output["expert_logits"].mean(dim=0)
        t = self.distill_temperature
        teacher = F.log_softmax(output["teacher_logits"].detach() / t, dim=-1)
        distill = t * t * kl_batchmean(teacher, F.log_softmax(student / t, dim=-1))
        return loss + self.distill_weight * distill


class RoutingLoss(nn.Module):
    """RIDE stage two: ``-w_p y log s(eta) - w_n (1-y) log(1 - s(eta))``, batch mean, averaged
    over the routers; labels from ``routing_labels``. Needs ``output["routing_logits"]`` (B, E-1)
    and ``output["expert_logits"]`` (E, B, C)."""

    def __init__(self, class_counts=None, pos_weight: float = 100.0, neg_weight: float = 1.0):
        super().__init__()
        if pos_weight <= 0 or neg_weight <= 0:
            raise BvkitError("routing loss weights must be > 0")
        self.pos_weight, self.neg_weight = float(pos_weight), float(neg_weight)

    def set_epoch(self, epoch: int) -> None:
        """No epoch dependence."""

    def graph_key(self) -> None:
        return None

    def forward(self, output: dict, target: torch.Tensor) -> torch.Tensor:
        eta = output["routing_logits"]
        labels = routing_labels(output["expert_logits"].detach(), target).to(eta.dtype)
        per_entry = F.binary_cross_entropy_with_logits(
            eta, labels, pos_weight=eta.new_full((), self.pos_weight / self.neg_weight), reduction="none"
        )
        return self.neg_weight * per_entry.mean()


# ---------------------------------------------------------------- registry

LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")


def register_loss(name: str, builder: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Make ``builder(class_counts, **kw) -> nn.Module`` the loss ``name``."""
    LOSSES.register(name, builder, overwrite=overwrite)


def list_losses(pattern: str = "*") -> list[str]:
    return LOSSES.names(pattern)


def create_loss(name: str, class_counts, **kw) -> nn.Module:
    """Build the loss registered as ``name`` for these ``class_counts``."""
    builder = LOSSES.get(name)
    try:
        return builder(class_counts, **kw)
    except TypeError as err:
        raise BvkitError(f"bad arguments for loss {name!r}: {err}") from None


def _preset(cls, **defaults):
    def build(class_counts, **kw):
        return cls(class_counts, **{**defaults, **kw})

    build.loss_class = cls
    return build


def _on_logits(builder: Callable) -> bool:
    """Whether a registered loss reads logits (B, C), so it can be RIDE's per-expert base."""
    return issubclass(getattr(builder, "loss_class", LongTailLoss), LongTailLoss)


register_loss("ce", _preset(CrossEntropyLoss))
register_loss("cb-ce", _preset(CrossEntropyLoss, reweight="cb"))
register_loss("ce-drw", _preset(CrossEntropyLoss, reweight="drw"))
register_loss("focal", _preset(FocalLoss))
register_loss("cb-focal", _preset(FocalLoss, reweight="cb"))
register_loss("ldam", _preset(LDAMLoss))
register_loss("ldam-drw", _preset(LDAMLoss, reweight="drw"))
# two published names of one loss: balanced softmax (Ren et al. 2020) is logit adjustment
# (Menon et al. 2021) at tau = 1
register_loss("balanced-softmax", _preset(LogitAdjustedLoss, tau=1.0))
register_loss("logit-adjustment", _preset(LogitAdjustedLoss))
register_loss("ride", _preset(RIDELoss))
register_loss("ride-distill", _preset(RIDEDistillLoss))
register_loss("routing", _preset(RoutingLoss))
register_loss("sade", _preset(SADELoss))
