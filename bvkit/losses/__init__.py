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

Modules: ``per_class`` (the per-class vectors, pure numpy), ``logits`` (the losses on logits),
``ride`` (RIDE, its distillation and routing), ``sade``, ``registry`` (``TRAINING_LOSSES``,
``register_loss``, ``create_loss``); the built-in losses are registered here.
"""

from bvkit.losses.logits import CrossEntropyLoss, FocalLoss, LDAMLoss, LogitAdjustedLoss, LongTailLoss
from bvkit.losses.per_class import (
    as_counts,
    class_balanced_weights,
    diversity_temperatures,
    inverse_prior,
    ldam_margins,
    log_prior,
)
from bvkit.losses.registry import TRAINING_LOSSES, create_loss, list_losses, preset, register_loss
from bvkit.losses.ride import RIDEDistillLoss, RIDELoss, RoutingLoss, kl_batchmean, routing_labels
from bvkit.losses.sade import SADELoss

register_loss("ce", preset(CrossEntropyLoss))
register_loss("cb-ce", preset(CrossEntropyLoss, reweight="cb"))
register_loss("ce-drw", preset(CrossEntropyLoss, reweight="drw"))
register_loss("focal", preset(FocalLoss))
register_loss("cb-focal", preset(FocalLoss, reweight="cb"))
register_loss("ldam", preset(LDAMLoss))
register_loss("ldam-drw", preset(LDAMLoss, reweight="drw"))
# two published names of one loss: balanced softmax (Ren et al. 2020) is logit adjustment
# (Menon et al. 2021) at tau = 1
register_loss("balanced-softmax", preset(LogitAdjustedLoss, tau=1.0))
register_loss("logit-adjustment", preset(LogitAdjustedLoss))
register_loss("ride", preset(RIDELoss))
register_loss("ride-distill", preset(RIDEDistillLoss))
register_loss("routing", preset(RoutingLoss))
register_loss("sade", preset(SADELoss))

__all__ = [
    "TRAINING_LOSSES", "CrossEntropyLoss", "FocalLoss", "LDAMLoss", "LogitAdjustedLoss", "LongTailLoss",
    "RIDEDistillLoss", "RIDELoss", "RoutingLoss", "SADELoss", "as_counts", "class_balanced_weights",
    "create_loss", "diversity_temperatures", "inverse_prior", "kl_batchmean", "ldam_margins",
    "list_losses", "log_prior", "preset", "register_loss", "routing_labels",
]
