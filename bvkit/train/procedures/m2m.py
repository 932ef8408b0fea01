"""M2m (Kim, Jeong, Shin, CVPR 2020): imbalanced classification via major-to-minor translation.

A classifier ``g`` is first trained on the imbalanced set with plain cross-entropy (a nested
``ce`` run). The target classifier ``f`` is trained from scratch with cross-entropy; from epoch
``gen_start`` on (official CIFAR: 160 of 200, deferred like DRS) its batches are class-balanced
(each image drawn with probability proportional to ``1 / N_y``) and a class-``k`` sample is
replaced by a synthetic one with probability ``1 - N_k / N_max``, as in the official
``train_gen_epoch``:

* a seed ``x0`` of class ``k0`` is picked among the batch's images with probability
  proportional to ``P(accept | k0, k) = 1 - beta ** (N_k0 - N_k)`` (0 when ``N_k0 <= N_k``:
  only more frequent classes are sources);
* ``x* = x0 + delta``: random start (uniform noise, L2 norm ``noise_norm``), then ``steps``
  normalised-gradient steps of L2 length ``step_size`` in [0, 1] pixel space (clamped to
  [0, 1]) on ``CE(g(x), k) + lam * f(x)_k0``, both networks in eval mode (BN statistics
  untouched) and ``f``'s parameter gradients never formed;
* ``x*`` replaces the sample only if ``g`` gives ``k`` a probability ``>= gamma`` and a
  Bernoulli draw with ``P(accept | k0, k)`` succeeds; otherwise the real (over-sampled)
  class-``k`` image stays. The batch keeps its size and its class-balanced targets.

Every batch position runs the translation and the acceptance is a ``torch.where``, so a step
costs no host sync; the random draws come from a CPU generator seeded by ``(seed, epoch)``
and moved to the device, so a resumed run repeats the uninterrupted one. The generation
counters travel in the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.data import epoch_generator
from bvkit.errors import BvkitError
from bvkit.train import ddp
from bvkit.train.builders import build_loss, build_model, make_optimizer, recipe_schedule
from bvkit.train.data import make_loader
from bvkit.train.evaluation import evaluate_accuracy
from bvkit.train.loop import Phase, autocast, derive_seed, freeze
from bvkit.train.procedures import ProcedureEnv, register_procedure
from bvkit.train.schedule import scale_epoch

# alinlab/M2m run.sh (the M2m command) and config.py; gen_start is its --warm, for 200 epochs.
DEFAULTS = {"beta": 0.999, "lam": 0.5, "gamma": 0.9, "steps": 10, "step_size": 0.1, "noise_norm": 0.5,
            "gen_start": 160}
# g: the recipe's own CE run, trained like f (same size, schedule and validation split)
_SHARED_WITH_G = ("model", "model_kwargs", "epochs", "batch_size", "lr", "momentum", "nesterov",
                  "weight_decay", "schedule", "warmup_epochs", "lr_milestones", "lr_factors",
                  "reference_epochs", "augment", "val_per_class")


def acceptance_probabilities(counts: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor,
                             beta: float) -> torch.Tensor:
    """``P(accept | k0, k) = 1 - beta ** max(N_k0 - N_k, 0)``: row i for target ``targets[i]``,
    column j for source ``sources[j]``."""
    gap = (counts[sources][None, :] - counts[targets][:, None]).clamp_min(0)
    return 1.0 - torch.pow(torch.as_tensor(beta, dtype=counts.dtype, device=counts.device), gap)


def pick_seeds(weights: torch.Tensor, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, a column drawn with probability proportional to ``weights`` (inverse CDF of
    ``uniform`` draws, so no host sync) and whether the row had any weight at all."""
    cdf = weights.cumsum(1)
    total = cdf[:, -1]
    index = torch.searchsorted(cdf, (uniform * total).unsqueeze(1), right=True).squeeze(1)
    return index.clamp_max(weights.shape[1] - 1), total > 0


class Translator:
    """M2m's batch re-balancing by translation (see the module docstring).

    ``__call__(inputs, targets, generator)`` takes a class-balanced, normalised batch and
    returns it with its accepted translations swapped in; ``rebalance`` also returns the masks
    of the positions that were translated towards their class and of those accepted.
    ``stats`` counts over the run: ``translated`` (batch positions run through the steps),
    ``generated`` (positions that asked for a synthetic sample and had a seed), ``accepted``.
    """

    def __init__(self, g: nn.Module, f: nn.Module, counts, mean, std, *, beta: float, lam: float,
                 gamma: float, steps: int, step_size: float, noise_norm: float, precision: str = "fp32"):
        device = next(f.parameters()).device
        self.g, self.f, self.precision = g, f, precision
        self.counts = torch.as_tensor(counts, dtype=torch.float32, device=device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.beta, self.lam, self.gamma = beta, lam, gamma
        self.steps, self.step_size, self.noise_norm = steps, step_size, noise_norm
        self.stats = {key: torch.zeros((), dtype=torch.long, device=device)
                      for key in ("translated", "generated", "accepted")}

    def __call__(self, inputs, targets, generator=None):
        inputs, _, _ = self.rebalance(inputs, targets, generator)
        return inputs, targets

    def rebalance(self, inputs: torch.Tensor, targets: torch.Tensor, generator=None):
        """(batch with accepted translations swapped in, mask of the positions that asked for a
        synthetic sample and had a seed, mask of those accepted)."""
        b = len(targets)
        device = inputs.device
        draws = torch.rand(3, b, generator=generator).to(device)
        noise = torch.rand(inputs.shape, generator=generator).to(device) - 0.5
        n_target = self.counts[targets]
        wants = draws[0] < 1.0 - n_target / self.counts.max()
        p_accept = acceptance_probabilities(self.counts, targets, targets, self.beta)
        seed, has_seed = pick_seeds(p_accept, draws[1])
        generated = wants & has_seed
        pixels = inputs * self.std + self.mean
        translated, confidence = self.translate(pixels[seed], targets[seed], targets,
                                                noise.renorm(2, 0, self.noise_norm))
        p_seed = p_accept.gather(1, seed.unsqueeze(1)).squeeze(1)
        accepted = generated & (confidence >= self.gamma) & (draws[2] < p_seed)
        out = torch.where(accepted.view(-1, 1, 1, 1), self.normalize(translated), inputs)
        self.stats["translated"] += b
        self.stats["generated"] += generated.sum()
        self.stats["accepted"] += accepted.sum()
        return out, generated, accepted

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def translate(self, seeds: torch.Tensor, seed_targets: torch.Tensor, targets: torch.Tensor,
                  noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x*`` from [0, 1] ``seeds`` (official ``generation``) and ``g``'s probability of the
        target class at ``x*``. Both networks run in eval mode; their modes are restored."""
        modes = (self.g.training, self.f.training)
        self.g.eval()
        self.f.eval()
        x = (seeds + noise).clamp(0, 1)
        with torch.enable_grad():
            for _ in range(self.steps):
                x = x.detach().requires_grad_(True)
                with autocast(x.device, self.precision):
                    logits_g = _logits(self.g(self.normalize(x))).float()
                    logits_f = _logits(self.f(self.normalize(x))).float()
                # sums: each image's gradient is its own (eval mode), the step normalises it
                loss = (F.cross_entropy(logits_g, targets, reduction="sum")
                        + self.lam * logits_f.gather(1, seed_targets.unsqueeze(1)).sum())
                grad, = torch.autograd.grad(loss, [x])
                norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x = (x - self.step_size * grad / (norm + 1e-10)).clamp(0, 1)
        x = x.detach()
        with torch.no_grad(), autocast(x.device, self.precision):
            probs = torch.softmax(_logits(self.g(self.normalize(x))).float(), dim=1)
        self.g.train(modes[0])
        self.f.train(modes[1])
        return x, probs.gather(1, targets.unsqueeze(1)).squeeze(1)


def _logits(output):
    return output if torch.is_tensor(output) else output["logits"]


class M2mLoader:
    """f's batches: the usual imbalanced loader before ``gen_start``, then class-balanced
    batches re-balanced by ``translator``. Both samplers draw ``len(y)`` images per epoch, so
    the length (and the lr schedule) stays the same."""

    def __init__(self, plain, balanced, translator: Translator, gen_start: int, seed: int):
        self.plain, self.balanced, self.translator = plain, balanced, translator
        self.gen_start, self.seed, self.epoch = gen_start, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.plain)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        if epoch < self.gen_start:
            self.plain.set_epoch(epoch)
            yield from self.plain
            return
        self.balanced.set_epoch(epoch)
        generator = epoch_generator(self.seed, epoch)
        for inputs, targets in self.balanced:
            yield self.translator(inputs, targets, generator)


def m2m_options(env: ProcedureEnv) -> dict:
    """The recipe's ``procedure_kwargs`` over the official defaults, checked."""
    options = {**DEFAULTS, **env.options()}
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise BvkitError(f"unknown m2m option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    if not (0 < options["beta"] < 1 and 0 <= options["gamma"] <= 1 and options["steps"] >= 0
            and options["step_size"] >= 0 and options["noise_norm"] >= 0):
        raise BvkitError("m2m needs 0 < beta < 1, 0 <= gamma <= 1 and steps, step_size, noise_norm >= 0")
    return options


@register_procedure("m2m")
def m2m(env: ProcedureEnv) -> nn.Module:
    """Pre-train g (CE), then train f with M2m's generation from ``gen_start``; returns f."""
    recipe = env.recipe
    options = m2m_options(env)
    shared = {name: getattr(recipe, name) for name in _SHARED_WITH_G}
    g = env.subrun("pretrained", "ce", **shared).model
    g.eval()
    freeze(g)

    # f: its own initialisation and data order (the official f is a separate run from g)
    model = build_model(recipe, env.n_classes, env.in_channels, derive_seed(env.seed, 1), env.device)
    translator = Translator(g, model, env.train_counts, env.augment.mean, env.augment.std, precision=env.precision,
                            **{k: options[k] for k in ("beta", "lam", "gamma", "steps", "step_size", "noise_norm")})
    gen_start = scale_epoch(options["gen_start"], recipe.epochs, recipe.reference_epochs)
    loader = M2mLoader(make_loader(env.train_set, recipe.batch_size, False, env.augment, derive_seed(env.seed, 2)),
                       make_loader(env.train_set, recipe.batch_size, True, env.augment, derive_seed(env.seed, 3)),
                       translator, gen_start, derive_seed(env.seed, 4))
    loss = build_loss(recipe, env.train_counts, env.device)
    optimizer = make_optimizer(model.parameters(), recipe.lr, recipe.momentum, recipe.nesterov, recipe.weight_decay)
    phase = Phase("m2m", 0, model, ddp.wrap(model), loss, optimizer, loader, recipe_schedule(recipe, len(loader)),
                  recipe.lr, set_modes=model.train, checkpoint_extra={"m2m_stats": translator.stats},
                  validate=lambda: evaluate_accuracy(model, env.val_set, env.normalizer, env.device, env.n_classes,
                                                     precision=env.precision),
                  precision=env.precision)

    payload = env.payload
    if payload is not None and payload.get("stage") == 0 and "m2m_stats" in payload:
        for key, value in payload["m2m_stats"].items():
            translator.stats[key].copy_(value)
    env.run(phase, recipe.epochs)
    env.metrics.update(generation_metrics(translator, g, model, env.train_set.x.shape[-1], gen_start))
    if env.ctx.log is not None:
        env.ctx.log(f"m2m: {env.metrics['generated']} generated, accepted rate {env.metrics['accepted_rate']:.3f}")
    return model


def generation_metrics(translator: Translator, g: nn.Module, f: nn.Module, image_size: int, gen_start: int) -> dict:
    """The run's generation counts and the translation's training cost: per translated image,
    ``steps`` forward + backward passes of g and f (about 3x a forward each) and g's final
    forward for the acceptance test. Every batch position from ``gen_start`` on is translated."""
    from bvkit.models import count_flops

    stats = {key: int(value.item()) for key, value in translator.stats.items()}
    g_mflops = count_flops(g, input_size=image_size)["mflops"]
    f_mflops = count_flops(f, input_size=image_size)["mflops"]
    per_image = translator.steps * 3 * (g_mflops + f_mflops) + g_mflops
    return {
        "generated": stats["generated"],
        "accepted": stats["accepted"],
        "accepted_rate": stats["accepted"] / stats["generated"] if stats["generated"] else 0.0,
        "training_overhead": {
            "mflops_per_generated_sample": round(per_image, 2),
            "g_mflops": round(g_mflops, 4),
            "f_mflops": round(f_mflops, 4),
            "steps": translator.steps,
            "gen_start_epoch": gen_start,
            "translated_images": stats["translated"],
            "extra_tflops": round(per_image * stats["translated"] / 1e6, 4),
        },
    }
