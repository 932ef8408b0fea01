"""RIDE and the methods it is compared with (the LDAM paper's baselines, balanced softmax, the
decoupled classifiers, and the RIDE paper's other baselines BBN, OLTR, LFME and M2m), each with
its published CIFAR recipe; registered when ``bvkit.methods`` is imported. ``docs/recipes.md``
traces each recipe to its authors' code and lists every departure."""

from __future__ import annotations

from bvkit.methods.recipe import Recipe, Stage
from bvkit.methods.registry import register_method

# The LDAM paper's baselines (kaidic/LDAM-DRW cifar_train.py): plain SGD momentum, weight decay 2e-4.
LDAM_BASE = dict(nesterov=False, weight_decay=2e-4)
# RIDE's CIFAR recipe (configs/config_imbalance_cifar100_ride.json).
RIDE_BASE = dict(
    model="ride-resnet32",
    model_kwargs={"num_experts": 3, "reduce_dimension": True},
    loss="ride",
    nesterov=True,
    weight_decay=5e-4,
    augment={"crop_padding": 4, "flip": True, "rotation": 15.0},
)

for _recipe in (
    Recipe("ce", "softmax cross-entropy", **LDAM_BASE),
    Recipe("focal", "focal loss (gamma 1)", loss="focal", loss_kwargs={"gamma": 1.0}, **LDAM_BASE),
    Recipe(
        "cb-focal",
        "class-balanced focal loss (beta 0.9999, gamma 1)",
        loss="cb-focal",
        loss_kwargs={"beta": 0.9999, "gamma": 1.0},
        **LDAM_BASE,
    ),
    Recipe("ldam", "LDAM margins (max 0.5, s 30) with a cosine classifier", model="resnet32-ldam", loss="ldam", drw_epoch=None, **LDAM_BASE),
    Recipe("ldam-drw", "LDAM + deferred re-weighting from epoch 161", model="resnet32-ldam", loss="ldam-drw", **LDAM_BASE),
    # jiawei-ren/BalancedMetaSoftmax builds on the decoupling code (plain SGD momentum, wd 5e-4)
    Recipe("balanced-softmax", "logits + log prior during training", loss="balanced-softmax", nesterov=False),
    Recipe("crt", "CE, then a fresh linear classifier re-trained 10 epochs, class-balanced", stages=(Stage("crt"),), **LDAM_BASE),
    Recipe(
        "tau-norm",
        "CE, then w_c / ||w_c||**tau with tau picked on the validation split",
        stages=(Stage("tau-norm", epochs=0, options={"tau_grid": [round(0.1 * i, 1) for i in range(11)]}),),
        **LDAM_BASE,
    ),
    Recipe("lws", "CE, then one learned scale per class, class-balanced", stages=(Stage("lws"),), **LDAM_BASE),
    Recipe("ride", "RIDE experts: individual base loss + distribution-aware diversity", **RIDE_BASE),
    Recipe(
        "ride-ea",
        "RIDE, then expert-assignment routers (5 epochs, batch 512, lr 0.01, cosine)",
        stages=(Stage("routing", epochs=5, batch_size=512, lr=0.01, nesterov=True, weight_decay=5e-4),),
        **RIDE_BASE,
    ),
    Recipe(
        "ride-distill",
        "RIDE distilled from a teacher checkpoint (e.g. 6 experts), T_d 1.5, 20 warm-up epochs",
        teacher="",
        **{**RIDE_BASE, "loss": "ride-distill", "warmup_epochs": 20},
    ),
):
    register_method(_recipe)

# The RIDE paper's other baselines, each trained by its own stage-one procedure
# (bvkit/train/procedures/<name>.py).
# BBN's configs/cifar10.yaml and cifar100.yaml: LR_STEP [120, 160], counted from 1.
register_method(Recipe(
    "bbn",
    "BBN: uniform + reversed samplers on two branches, cumulative learning (alpha 1 -> 0)",
    model="bbn-resnet32",
    nesterov=True,
    weight_decay=2e-4,
    lr_milestones=(119, 159),
    lr_factors=(0.01, 0.0001),
    drw_epoch=None,
    procedure="bbn",
))
# OLTR publishes no CIFAR recipe: stage one is bvkit's "ce", stage two the official ImageNet-LT
# stage_2_meta_embedding.py config at bvkit's CIFAR length.
register_method(Recipe(
    "oltr",
    "OLTR: ce, then modulated attention + meta-embedding memory + cosine-norm classifier fine-tuned "
    "100 epochs, class-balanced, CE + 0.01 centroid loss (lr 0.1 head, 0.01 backbone and centroids)",
    model="oltr-resnet32",
    nesterov=False,
    weight_decay=5e-4,
    warmup_epochs=0,
    lr_milestones=(33, 67),  # of a 100-epoch stage two (bvkit.train.procedures.oltr)
    lr_factors=(0.1, 0.01),
    drw_epoch=None,
    balanced=True,
    procedure="oltr",
    procedure_kwargs={"stage2_epochs": 100, "feature_lr_scale": 0.1, "centroids_lr_scale": 0.1,
                      "feature_loss_weight": 0.01},
))
# LFME: experts and student on the CE CIFAR recipe; distillation from the only released config
# (config/ImageNet_LT/LFME.py).
register_method(Recipe(
    "lfme",
    "LFME: CE experts on many/medium/few classes distilled into one student (self-paced experts, "
    "curriculum instances; T 2, threshold 0.3)",
    nesterov=False,
    weight_decay=2e-4,
    drw_epoch=None,
    procedure="lfme",
    procedure_kwargs={"temperature": 2.0, "distill_weight": 1.0, "self_paced_threshold": 0.3,
                      "curriculum_start": 0.5, "curriculum_epochs": 100},
))
# alinlab/M2m (README, run.sh, config.py, train.py).
register_method(Recipe(
    "m2m",
    "M2m: CE; from epoch 161 balanced batches with minority samples translated from major-class seeds "
    "by a CE-trained g (beta 0.999, lambda 0.5, gamma 0.9, 10 steps of 0.1)",
    weight_decay=2e-4,
    nesterov=False,
    drw_epoch=None,
    procedure="m2m",
    procedure_kwargs={"beta": 0.999, "lam": 0.5, "gamma": 0.9, "steps": 10, "step_size": 0.1,
                      "noise_norm": 0.5, "gen_start": 160},
))
