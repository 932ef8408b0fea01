"""The strong simple baselines since RIDE as registered methods: ``logit-adjust`` and
``logit-adjust-posthoc`` (Menon et al., ICLR 2021), ``weight-balancing`` (Alshammari et al.,
CVPR 2022) and ``sade`` (Zhang et al., NeurIPS 2022), each with its published CIFAR recipe,
and the declared constraints of the loss and stage settings they add (checked whenever a
recipe is made: a bad override is one line, exit code 2). ``docs/recipes.md`` traces each
recipe to its source and lists every departure.

Loaded with the method registry's first look-up (``bvkit.methods._METHODS``' built-ins).
"""

from __future__ import annotations

import math

from bvkit.errors import BvkitError
from bvkit.methods import _LDAM_BASE, RECIPE_CHECKS, Recipe, Stage, register_method

# ---------------------------------------------------------------- declared constraints
# By loss name / stage kind, each known key's rule (text, test); keys not declared here are
# left to the loss or stage that reads them.


def _number(test):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and test(v)


_NONNEGATIVE = ("a number >= 0", _number(lambda v: v >= 0))
_FRACTION = ("a number in [0, 1)", _number(lambda v: 0 <= v < 1))
_PROBABILITY = ("a number in [0, 1]", _number(lambda v: 0 <= v <= 1))
LOSS_RULES = {"logit-adjustment": {"tau": _NONNEGATIVE}, "sade": {"tau": _NONNEGATIVE}}
STAGE_OPTION_RULES = {
    "posthoc-adjust": {"tau_grid": ("a non-empty list of numbers >= 0", lambda v: isinstance(v, (list, tuple))
                                    and len(v) > 0 and all(_NONNEGATIVE[1](t) for t in v))},
    "maxnorm": {"thresh": _NONNEGATIVE, "max_norm": ("a number > 0 or none", lambda v: v is None or _number(lambda b: b > 0)(v)),
                "beta": _FRACTION},
    "sade-tta": {"min_weight": _FRACTION, "jitter": _NONNEGATIVE, "jitter_p": _PROBABILITY, "grayscale_p": _PROBABILITY},
}


def check_declared(recipe: Recipe) -> None:
    """The declared rules of ``recipe``'s loss and stage options, and SADE's three experts."""
    for key, (text, test) in LOSS_RULES.get(recipe.loss, {}).items():
        if key in recipe.loss_kwargs and not test(recipe.loss_kwargs[key]):
            raise BvkitError(f"loss_kwargs.{key} must be {text}, got {recipe.loss_kwargs[key]!r}")
    for stage in recipe.stages:
        rules = STAGE_OPTION_RULES.get(stage.kind)
        if rules is None:
            continue
        unknown = sorted(set(stage.options) - set(rules))
        if unknown:
            raise BvkitError(f"unknown setting {stage.kind}.options.{unknown[0]}; known: "
                             f"{', '.join(f'{stage.kind}.options.{k}' for k in rules)}")
        for key, (text, test) in rules.items():
            if key in stage.options and not test(stage.options[key]):
                raise BvkitError(f"{stage.kind}.options.{key} must be {text}, got {stage.options[key]!r}")
    experts = recipe.model_kwargs.get("num_experts")
    if recipe.loss == "sade" and experts is not None and experts != 3:
        raise BvkitError(f"SADE's loss trains exactly 3 experts (forward, uniform, backward), got num_experts={experts!r}")


RECIPE_CHECKS.append(check_declared)


# ---------------------------------------------------------------- the recipes
# (docs/recipes.md traces each to its source and lists every departure)

# Logit adjustment (Menon et al., ICLR 2021; google-research/logit_adjustment): the loss form is
# CE on z + tau * log pi, tau = 1, on bvkit's CE recipe (the authors' code trains ResNet-32 for
# 1241 epochs with Nesterov and an L2 term of 1e-4 (weight decay 2e-4 in SGD's convention), a
# schedule bvkit does not carry over; docs/recipes.md). Published CIFAR-100-LT (IF 100): 43.89.
register_method(Recipe(
    "logit-adjust",
    "logit-adjusted softmax CE: CE on logits + tau log prior during training (tau 1)",
    loss="logit-adjustment",
    loss_kwargs={"tau": 1.0},
    **_LDAM_BASE,
))
# The same paper's post-hoc correction: a CE model's logits minus tau * log pi at prediction,
# tau chosen on the validation split (the paper tunes it on a holdout). Stage one is exactly
# the "ce" recipe (nothing but the stage differs), so a study with ce shares its stage one.
register_method(Recipe(
    "logit-adjust-posthoc",
    "CE, then logits - tau log prior with tau picked on the validation split",
    stages=(Stage("posthoc-adjust", epochs=0, options={"tau_grid": [round(0.1 * i, 1) for i in range(21)]}),),
    **_LDAM_BASE,
))
# Weight balancing (Alshammari et al., CVPR 2022; ShadeAlsha/LTR-weight-balancing demo1 / demo2):
# stage one CE with weight decay 5e-3 (their grid-searched value), SGD lr 0.01, momentum 0.9
# without Nesterov, batch 64, cosine annealing to 0 without warm-up; stage two fine-tunes the
# stage-one classifier (weight and bias) on frozen features with the class-balanced loss
# (beta 0.9999), weight decay 0.1, SGD lr 0.01 momentum 0.9, batch 64, cosine, 10 epochs, and
# MaxNorm: after each step every class weight row is projected onto the ball of radius
# min + 0.1 (max - min) of the stage-one rows' norms (their thresh 0.1; bias unconstrained).
# Published on ResNet-34 for 320 epochs; here ResNet-32 for the common 200 (docs/recipes.md:
# --set model=resnet34-cifar epochs=320 is the published form). Published CIFAR-100-LT: 53.35.
register_method(Recipe(
    "weight-balancing",
    "CE with weight decay 5e-3 (lr 0.01, batch 64, cosine), then the classifier fine-tuned 10 epochs "
    "with the class-balanced loss, weight decay 0.1 and a per-class MaxNorm bound",
    batch_size=64,
    lr=0.01,
    nesterov=False,
    weight_decay=5e-3,
    schedule="cosine",
    warmup_epochs=0,
    lr_milestones=(),
    lr_factors=(),
    drw_epoch=None,
    stages=(Stage("maxnorm", epochs=10, batch_size=64, lr=0.01, weight_decay=0.1, schedule="cosine", balanced=False,
                  options={"thresh": 0.1, "beta": 0.9999}),),
))
# SADE (Zhang et al., NeurIPS 2022; Vanint/SADE-AgnosticLT configs/config_cifar100_ir100_sade.json
# and test_time_cifar100_ir100_sade.json): RIDE's ResNet-32 with 3 reduced experts and cosine
# classifiers, DiverseExpertLoss (forward CE, balanced softmax, inverse prior with tau 2), 200
# epochs, batch 128, SGD lr 0.1 momentum 0.9 Nesterov, weight decay 5e-4, warm-up 5 epochs, x0.1
# from epoch 161 and x0.01 from 181 (CustomLR gamma 0.1), crop + flip + rotation 15; then the
# test-time stage: the experts' aggregation weights (softmax of 3 logits, from uniform) learned
# on the UNLABELED test images by maximising the cosine similarity of the aggregated predictions
# of two augmented views, SGD lr 0.1 (the same optimizer config), batch 128, up to 5 epochs,
# stopping once a weight falls under 0.05. Published CIFAR-100-LT (IF 100): 49.8.
register_method(Recipe(
    "sade",
    "SADE: 3 experts on RIDE's backbone with forward / balanced / inverse-prior CE, then the experts' "
    "weights learned self-supervised on the unlabeled test images",
    model="sade-resnet32",
    model_kwargs={"num_experts": 3, "reduce_dimension": True},
    loss="sade",
    loss_kwargs={"tau": 2.0},
    nesterov=True,
    weight_decay=5e-4,
    lr_factors=(0.1, 0.01),
    drw_epoch=None,
    augment={"crop_padding": 4, "flip": True, "rotation": 15.0},
    stages=(Stage("sade-tta", epochs=5, batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4, schedule="constant",
                  balanced=False, options={"min_weight": 0.05, "jitter": 0.4, "jitter_p": 0.8, "grayscale_p": 0.2}),),
))
