"""RIDE's losses: stage one (each expert's base loss plus the distribution-aware diversity
term), its distillation from a teacher, and the routers' loss of stage two."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.losses.logits import LongTailLoss
from bvkit.losses.per_class import diversity_temperatures
from bvkit.losses.registry import TRAINING_LOSSES, create_loss


def routing_labels(expert_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, E-1) float: ``y_k = 1`` iff the ensemble of experts 1..k is wrong and some longer
    prefix ensemble 1..j (j > k) is right (columns k = 1..E-1)."""
    steps = torch.arange(1, expert_logits.shape[0] + 1, device=expert_logits.device)
    prefix_mean = expert_logits.cumsum(dim=0) / steps.view(-1, 1, 1).to(expert_logits.dtype)
    correct = prefix_mean.argmax(dim=-1) == target.unsqueeze(0)  # (E, B)
    right_from = correct.flip(0).cumsum(dim=0).flip(0) > 0  # [k] = any(correct[k:])
    return (~correct[:-1] & right_from[1:]).T.float()


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
        if base not in TRAINING_LOSSES or not _on_logits(TRAINING_LOSSES.get(base)):
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


def _on_logits(builder: Callable) -> bool:
    """Whether a registered loss reads logits (B, C), so it can be RIDE's per-expert base."""
    return issubclass(getattr(builder, "loss_class", LongTailLoss), LongTailLoss)
