"""BBN (Zhou et al., CVPR 2020): a bilateral-branch network trained with cumulative learning.

Every step takes two batches of the same size: one from the usual uniform sampler (each
image once per epoch) for the conventional branch, one from the reversed sampler (class c
with probability proportional to ``N_max / N_c``, then an image of it uniformly) for the
re-balancing branch, both augmented alike. The adaptor ``alpha = 1 - (T / T_max)^2`` (T the
0-based epoch, T_max the number of epochs) shifts the model from the first branch to the
second: logits ``W 2 [alpha f_c ; (1 - alpha) f_r]`` (``bvkit.models.bbn``) and loss
``alpha CE(logits, y_c) + (1 - alpha) CE(logits, y_r)``, as in the official ``bbn_mix``.

The loader hands the two batches over as one tensor (uniform ; reversed) along dim 0, with
targets (y_c ; y_r). The epoch's training accuracy counts the mixed prediction against both
halves' labels, so it is the mean of its accuracy on y_c and on y_r.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.data import DeviceLoader
from bvkit.errors import BvkitError
from bvkit.train.builders import build_model, make_optimizer, recipe_schedule
from bvkit.train.evaluation import evaluate_accuracy
from bvkit.train.loop import Phase, derive_seed
from bvkit.train.procedures import ProcedureEnv, register_procedure


def cumulative_alpha(epoch: int, epochs: int) -> float:
    """BBN's adaptor at 0-based ``epoch`` of ``epochs``: 1 at the start, towards 0 at the end
    (the official ``1 - ((epoch - 1) / div_epoch) ** 2`` with 1-based epochs)."""
    return 1.0 - (epoch / epochs) ** 2


def reversed_indices(labels: torch.Tensor, n: int, generator=None) -> torch.Tensor:
    """``n`` indices from BBN's reversed sampler: a class with probability proportional to
    ``N_max / N_c`` among those present, then an image of it uniformly (with replacement)."""
    labels = labels.cpu()
    order = torch.argsort(labels, stable=True)
    counts = torch.unique(labels, return_counts=True)[1]
    starts = torch.cumsum(counts, 0) - counts
    pick = torch.multinomial(counts.max() / counts.double(), n, replacement=True, generator=generator)
    offset = (torch.rand(n, generator=generator, dtype=torch.float64) * counts[pick]).long()
    return order[starts[pick] + offset.clamp_max_(counts[pick] - 1)]


class ReversedLoader(DeviceLoader):
    """A DeviceLoader drawing ``len(y)`` samples per epoch from the reversed sampler."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, **kwargs):
        super().__init__(x, y, batch_size, **kwargs)
        self.cpu_labels = y.cpu()  # the sampler draws on the CPU: read the labels back once

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        return reversed_indices(self.cpu_labels, len(self.cpu_labels), generator)


class BilateralLoader:
    """(uniform batch ; reversed batch) along dim 0 and their targets, batches of equal size.

    The two samplers draw the same number of samples per epoch and cut them at the same
    places, so even the last, partial batch has two halves of one size. Each sampler's order
    and augmentation depend only on ``(seed, epoch)``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, augment, seed: int):
        drop_last = len(y) % batch_size == 1  # a last batch of one image breaks train-mode BN
        self.uniform = DeviceLoader(x, y, batch_size, shuffle=True, drop_last=drop_last, augment=augment,
                                    seed=derive_seed(seed, 0))
        self.reversed = ReversedLoader(x, y, batch_size, drop_last=drop_last, augment=augment,
                                       seed=derive_seed(seed, 0, 1))

    def set_epoch(self, epoch: int) -> None:
        self.uniform.set_epoch(epoch)
        self.reversed.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.uniform)

    def __iter__(self):
        for (x_c, y_c), (x_r, y_r) in zip(self.uniform, self.reversed):
            yield torch.cat((x_c, x_r)), torch.cat((y_c, y_r))


class CumulativeLoss(nn.Module):
    """``alpha CE(logits, y_c) + (1 - alpha) CE(logits, y_r)``; ``set_epoch`` sets alpha."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        # a 0-d tensor set in place: a captured CUDA graph of the step reads each epoch's value
        self.register_buffer("alpha", torch.ones(()), persistent=False)

    def set_epoch(self, epoch: int) -> None:
        self.alpha.fill_(cumulative_alpha(epoch, self.epochs))

    def graph_key(self) -> None:
        """Nothing to recapture between epochs (see ``alpha``)."""

    def forward(self, output: dict, targets: torch.Tensor) -> torch.Tensor:
        logits = output["logits"]
        y_c, y_r = targets.chunk(2)
        return self.alpha * F.cross_entropy(logits, y_c) + (1 - self.alpha) * F.cross_entropy(logits, y_r)


@register_procedure("bbn")
def bbn(env: ProcedureEnv) -> nn.Module:
    """Train the recipe's bilateral-branch model; its eval forward is BBN's inference (alpha 0.5)."""
    recipe = env.recipe
    model = build_model(recipe, env.n_classes, env.in_channels, env.seed, env.device)
    if not hasattr(model, "forward_bilateral"):
        raise BvkitError(f"method {recipe.name} needs a bilateral-branch model such as bbn-resnet32, "
                         f"got {recipe.model}")
    loss = CumulativeLoss(recipe.epochs).to(env.device)
    optimizer = make_optimizer(model.parameters(), recipe.lr, recipe.momentum, recipe.nesterov,
                               recipe.weight_decay)
    loader = BilateralLoader(env.train_set.x, env.train_set.y, recipe.batch_size, env.augment, env.seed)
    phase = Phase(
        "bbn", 0, model,
        forward=lambda x: {"logits": model.forward_bilateral(x, loss.alpha)},
        loss=loss, optimizer=optimizer, loader=loader,
        schedule=recipe_schedule(recipe, len(loader)), base_lr=recipe.lr, set_modes=model.train,
        logits_of=lambda output: output["logits"].repeat(2, 1),  # one prediction per (y_c, y_r) pair
        shard=False,  # a contiguous DDP shard would split the uniform half from the reversed one
        validate=lambda: evaluate_accuracy(model, env.val_set, env.normalizer, env.device, env.n_classes,
                                           precision=env.precision),
        precision=env.precision,
    )
    env.run(phase, recipe.epochs)
    return model
