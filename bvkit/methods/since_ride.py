"""The strong simple baselines since RIDE as registered methods: ``logit-adjust`` and
``logit-adjust-posthoc`` (Menon et al., ICLR 2021), ``weight-balancing`` (Alshammari et al.,
CVPR 2022) and ``sade`` (Zhang et al., NeurIPS 2022), each with its published CIFAR recipe
(the declared constraints of the loss and stage settings they add: ``bvkit.methods.checks``).
``docs/recipes.md`` traces each recipe to its source and lists every departure.

Loaded with the method registry's first look-up (``bvkit.methods.registry._METHODS``' built-ins).
"""

from __future__ import annotations

from bvkit.methods.recipe import Recipe, Stage
from bvkit.methods.registry import register_method
from bvkit.methods.ride_paper import LDAM_BASE

# google-research/logit_adjustment's loss on bvkit's CE recipe (its schedule is not carried over)
register_method(Recipe(
    "logit-adjust",
    "logit-adjusted softmax CE: CE on logits + tau log prior during training (tau 1)",
    loss="logit-adjustment",
    loss_kwargs={"tau": 1.0},
    **LDAM_BASE,
))
# The same paper's post-hoc correction; stage one is exactly the "ce" recipe (nothing but the
# stage differs), so a study with ce shares its stage one.
register_method(Recipe(
    "logit-adjust-posthoc",
    "CE, then logits - tau log prior with tau picked on the validation split",
    stages=(Stage("posthoc-adjust", epochs=0, options={"tau_grid": [round(0.1 * i, 1) for i in range(21)]}),),
    **LDAM_BASE,
))
# ShadeAlsha/LTR-weight-balancing demo1 / demo2, on ResNet-32 for the common 200 epochs
# (--set model=resnet34-cifar epochs=320 is the published form)
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
# Vanint/SADE-AgnosticLT configs/config_cifar100_ir100_sade.json and test_time_cifar100_ir100_sade.json
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
