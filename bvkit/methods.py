"""Method registry: a method name -> a :class:`Recipe` (model, loss, optimiser, schedule, stages).

Defaults are the published CIFAR recipes (200 epochs, batch 128, SGD lr 0.1, momentum 0.9,
warm-up 5 epochs, lr x0.01 at epoch 161 and x0.0001 at 181, DRW from epoch 161; weight decay
2e-4 for the LDAM paper's baselines, 5e-4 for RIDE; Nesterov momentum where the authors' code
uses it: RIDE and BBN, not the LDAM-DRW, decoupling, M2m, OLTR or LFME code). Milestones are
stated for the 200-epoch reference and scaled when ``epochs`` is shorter
(``bvkit.train.schedule``). ``precision`` (``PRECISIONS``) is how the run computes: ``auto``
takes bf16 autocast where the hardware has fast bf16 (``bvkit.train.devices.resolve_precision``).

On the ImageNet-size benchmarks (``imagenet-lt``, ``inat2018``) every method takes that
benchmark's published setting (``DATASET_SETTINGS``: ResNet-50 family, 100 epochs, RIDE's
ImageNet-LT / iNat hyper-parameters) before any override: ``create_method("ride",
dataset="imagenet-lt")`` is RIDE as published on ImageNet-LT; ``bvkit train --dataset
imagenet-lt --method ride`` does the same.

    >>> recipe = create_method("ride", epochs=10, **{"model_kwargs.num_experts": 2})
    >>> list_methods("ride*")
    ['ride', 'ride-distill', 'ride-ea']
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from bvkit.errors import BvkitError
from bvkit.registry import Registry

STAGE_KINDS = ("crt", "tau-norm", "lws", "routing", "posthoc-adjust", "maxnorm", "sade-tta")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICE_DATA_STAGES = ("sade-tta",)  # second stages on device-held (CIFAR-style) data only
RECIPE_CHECKS: list = []  # check(recipe) raising BvkitError, from the modules registering methods


@dataclass(frozen=True)
class Stage:
    """A second stage run on the frozen stage-one model (BN in eval mode)."""

    kind: str
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False  # the decoupling code's plain momentum; RIDE's routers set True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    balanced: bool = True
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """Everything a ``bvkit train`` run needs besides the data, seed and device."""

    name: str
    description: str = ""
    model: str = "resnet32"
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "ce"
    loss_kwargs: dict = field(default_factory=dict)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False  # plain momentum, as most authors' code; RIDE and BBN set True
    weight_decay: float = 5e-4
    schedule: str = "step"
    warmup_epochs: int = 5
    lr_milestones: tuple = (160, 180)
    lr_factors: tuple = (0.01, 0.0001)
    drw_epoch: int | None = 160
    reference_epochs: int = 200
    augment: dict = field(default_factory=lambda: {"crop_padding": 4, "flip": True, "rotation": 0.0})
    balanced: bool = False
    val_per_class: int = 50
    teacher: str | None = None
    stages: tuple = ()
    procedure: str | None = None  # a stage-one procedure of bvkit.train.procedures (BBN, OLTR, ...)
    procedure_kwargs: dict = field(default_factory=dict)
    precision: str = "auto"  # one of PRECISIONS; bvkit.train.devices.resolve_precision

    @property
    def is_ride(self) -> bool:  # multi-expert models trained on their experts' logits (RIDE's, SADE's)
        return self.model.startswith(("ride", "sade"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        data = dict(data)
        data["stages"] = tuple(Stage(**stage) for stage in data.get("stages", ()))
        for key in ("lr_milestones", "lr_factors"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


_METHODS: Registry[Recipe] = Registry("method", built_in=("bvkit.methods_since_ride",))  # loaded on first look-up


def register_method(recipe: Recipe, overwrite: bool = False) -> Recipe:
    """Add ``recipe`` under ``recipe.name`` (user methods included)."""
    return _METHODS.register(recipe.name, recipe, overwrite=overwrite)


def list_methods(pattern: str = "*") -> list[str]:
    return _METHODS.names(pattern)


def get_method(name: str) -> Recipe:
    return _METHODS.get(name)


def create_method(name: str, dataset: str | None = None, **overrides: Any) -> Recipe:
    """The recipe of ``name`` (adapted to ``dataset`` when it is an ImageNet-size benchmark,
    see ``for_dataset``) with ``overrides`` applied (``parse_overrides``' grammar)."""
    recipe = get_method(name)
    if dataset is not None:
        recipe = for_dataset(recipe, dataset)
    return apply_overrides(recipe, overrides)


# ---------------------------------------------------------------- overrides: one grammar

# The named settings of ``bvkit train`` flags and study specs, as recipe override keys.
NAMED_SETTINGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                  "model_width": "model_kwargs.width", "experts": "model_kwargs.num_experts",
                  "teacher": "teacher", "precision": "precision"}
_DICT_FIELDS = tuple(f.name for f in fields(Recipe) if f.type == "dict")


def named_overrides(**settings: Any) -> dict[str, Any]:
    """The settings given (not None) as override keys: ``model_width=8`` -> ``model_kwargs.width``."""
    return {NAMED_SETTINGS[name]: value for name, value in settings.items() if value is not None}


def parse_overrides(settings: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """The one override grammar (study specs, ``bvkit train --set``, ``create_method``): flat
    dotted keys. Keys: a Recipe field (``epochs``); ``dict_field.key`` (``model_kwargs.width``);
    ``stage.field`` or ``stage.options.key`` for a second stage by kind (``crt.epochs``).

    ``settings``: a mapping (``__`` is a dot; a nested mapping under a dict field, a stage or its
    ``options`` becomes dotted keys) or ``KEY=VALUE`` strings (a Python/JSON literal, ``true``,
    ``false``, ``none``, else a string).
    """
    if settings is None:
        return {}
    if isinstance(settings, Mapping):
        return dict(_flatten(settings.items(), ""))
    items = []
    for item in settings:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise BvkitError(f"--set expects KEY=VALUE, got {item!r}")
        items.append((key.strip(), _literal(raw.strip())))
    return dict(_flatten(items, ""))


def _flatten(items, prefix: str):
    for key, value in items:
        name = prefix + str(key).replace("__", ".")
        if isinstance(value, Mapping) and value and _nests(name):
            yield from _flatten(value.items(), name + ".")
        else:
            yield name, value


def _nests(name: str) -> bool:
    """Whether a mapping under ``name`` is a table of further keys (not a value)."""
    parts = name.split(".")
    if parts[0] in STAGE_KINDS:
        return len(parts) == 1 or parts[1:] == ["options"]
    return parts[0] in _DICT_FIELDS and len(parts) == 1


def _literal(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(lowered)
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any] | Iterable[str] | None) -> Recipe:
    """``recipe`` with ``overrides`` (``parse_overrides``' grammar) applied, each value
    coerced to its field's type, and the result checked."""
    for key, value in parse_overrides(overrides).items():
        recipe = _apply_one(recipe, key, value)
    _check(recipe)
    return recipe


def _apply_one(recipe: Recipe, key: str, value: Any) -> Recipe:
    head, _, rest = key.partition(".")
    names = {f.name: f for f in fields(Recipe)}
    stage_kinds = {stage.kind: i for i, stage in enumerate(recipe.stages)}
    if head in stage_kinds and rest:
        stages = list(recipe.stages)
        stages[stage_kinds[head]] = _apply_stage(stages[stage_kinds[head]], rest, value)
        return replace(recipe, stages=tuple(stages))
    if head not in names or head in ("name", "stages"):
        known = sorted(set(names) - {"name", "stages"}) + [f"{kind}.<field>" for kind in stage_kinds]
        raise BvkitError(f"unknown setting {key!r} for method {recipe.name!r}; known: {', '.join(known)}")
    current = getattr(recipe, head)
    if isinstance(current, dict):
        merged = dict(current)
        if rest:
            merged[rest] = value
        elif isinstance(value, dict):
            merged.update(value)
        else:
            raise BvkitError(f"{key} takes key=value pairs, e.g. {key}.NAME=VALUE")
        return replace(recipe, **{head: merged})
    if rest:
        raise BvkitError(f"setting {head!r} has no sub-keys (got {key!r})")
    return replace(recipe, **{head: _coerce(head, current, value)})


def _apply_stage(stage: Stage, key: str, value: Any) -> Stage:
    head, _, rest = key.partition(".")
    names = {f.name for f in fields(Stage)} - {"kind"}
    if head == "options" and rest:
        return replace(stage, options={**stage.options, rest: value})
    if head not in names or rest:
        raise BvkitError(f"unknown setting {stage.kind}.{key}; known: {', '.join(sorted(names))}")
    return replace(stage, **{head: _coerce(f"{stage.kind}.{head}", getattr(stage, head), value)})


_OPTIONAL = {"drw_epoch": 0, "teacher": ""}  # None means "off"; otherwise typed like the value


def _coerce(name: str, current: Any, value: Any) -> Any:
    if name in _OPTIONAL:
        if value is None:
            return None
        current = _OPTIONAL[name]
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise BvkitError(f"{name} must be true or false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if current is not None:
            raise BvkitError(f"{name} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise BvkitError(f"{name} must be a number, got {value!r}")
    if isinstance(current, tuple):
        if isinstance(value, (list, tuple, int, float)):
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
        raise BvkitError(f"{name} must be a list, got {value!r}")
    return value


def _check(recipe: Recipe) -> None:
    positive = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "val_per_class": recipe.val_per_class}
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise BvkitError(f"{name} must be a positive integer, got {value!r}")
    if not recipe.lr > 0:
        raise BvkitError(f"lr must be positive, got {recipe.lr!r}")
    if recipe.precision not in PRECISIONS:
        raise BvkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {recipe.precision!r}")
    if recipe.schedule not in ("step", "cosine", "constant"):
        raise BvkitError(f"schedule must be step, cosine or constant, got {recipe.schedule!r}")
    if len(recipe.lr_milestones) != len(recipe.lr_factors):
        raise BvkitError("lr_milestones and lr_factors must have the same length")
    for stage in recipe.stages:
        if stage.kind not in STAGE_KINDS:
            raise BvkitError(f"unknown stage {stage.kind!r} (known: {', '.join(STAGE_KINDS)})")
        if stage.epochs < 0 or stage.batch_size < 1 or not stage.lr > 0:
            raise BvkitError(f"stage {stage.kind}: epochs >= 0, batch_size >= 1 and lr > 0 needed")
    if recipe.procedure is not None and (recipe.stages or recipe.teacher is not None):
        raise BvkitError(f"method {recipe.name!r}: a procedure recipe takes no second stage or teacher")
    experts = recipe.model_kwargs.get("num_experts")
    if experts is not None:
        if not recipe.is_ride:
            raise BvkitError(f"method {recipe.name!r} has no experts (model {recipe.model}); --experts is for ride*")
        minimum = 2 if any(stage.kind == "routing" for stage in recipe.stages) else 1
        if not isinstance(experts, int) or experts < minimum:
            raise BvkitError(f"num_experts must be an integer >= {minimum} for {recipe.name}, got {experts!r}")
    _METHODS.names()  # loads the built-in method modules: their RECIPE_CHECKS too
    for check in RECIPE_CHECKS:
        check(recipe)


# The LDAM paper's baselines (kaidic/LDAM-DRW cifar_train.py, which trains CE, focal, LDAM and
# the re-weighted variants alike): SGD momentum 0.9 without Nesterov, weight decay 2e-4, crop + flip.
_LDAM_BASE = dict(nesterov=False, weight_decay=2e-4)
# RIDE's CIFAR recipe (configs/config_imbalance_cifar100_ride.json): SGD momentum 0.9 with
# Nesterov, weight decay 5e-4, crop + flip + rotation 15 degrees.
_RIDE_BASE = dict(
    model="ride-resnet32",
    model_kwargs={"num_experts": 3, "reduce_dimension": True},
    loss="ride",
    nesterov=True,
    weight_decay=5e-4,
    augment={"crop_padding": 4, "flip": True, "rotation": 15.0},
)

for _recipe in (
    Recipe("ce", "softmax cross-entropy", **_LDAM_BASE),
    Recipe("focal", "focal loss (gamma 1)", loss="focal", loss_kwargs={"gamma": 1.0}, **_LDAM_BASE),
    Recipe(
        "cb-focal",
        "class-balanced focal loss (beta 0.9999, gamma 1)",
        loss="cb-focal",
        loss_kwargs={"beta": 0.9999, "gamma": 1.0},
        **_LDAM_BASE,
    ),
    Recipe("ldam", "LDAM margins (max 0.5, s 30) with a cosine classifier", model="resnet32-ldam", loss="ldam", drw_epoch=None, **_LDAM_BASE),
    Recipe("ldam-drw", "LDAM + deferred re-weighting from epoch 161", model="resnet32-ldam", loss="ldam-drw", **_LDAM_BASE),
    # jiawei-ren/BalancedMetaSoftmax builds on the decoupling code (plain SGD momentum, wd 5e-4)
    Recipe("balanced-softmax", "logits + log prior during training", loss="balanced-softmax", nesterov=False),
    Recipe("crt", "CE, then a fresh linear classifier re-trained 10 epochs, class-balanced", stages=(Stage("crt"),), **_LDAM_BASE),
    Recipe(
        "tau-norm",
        "CE, then w_c / ||w_c||**tau with tau picked on the validation split",
        stages=(Stage("tau-norm", epochs=0, options={"tau_grid": [round(0.1 * i, 1) for i in range(11)]}),),
        **_LDAM_BASE,
    ),
    Recipe("lws", "CE, then one learned scale per class, class-balanced", stages=(Stage("lws"),), **_LDAM_BASE),
    Recipe("ride", "RIDE experts: individual base loss + distribution-aware diversity", **_RIDE_BASE),
    Recipe(
        "ride-ea",
        "RIDE, then expert-assignment routers (5 epochs, batch 512, lr 0.01, cosine)",
        stages=(Stage("routing", epochs=5, batch_size=512, lr=0.01, nesterov=True, weight_decay=5e-4),),
        **_RIDE_BASE,
    ),
    Recipe(
        "ride-distill",
        "RIDE distilled from a teacher checkpoint (e.g. 6 experts), T_d 1.5, 20 warm-up epochs",
        teacher="",
        **{**_RIDE_BASE, "loss": "ride-distill", "warmup_epochs": 20},
    ),
):
    register_method(_recipe)

# The RIDE paper's other baselines, each trained by its own stage-one procedure
# (bvkit/train/procedures/<name>.py).
# BBN's configs/cifar10.yaml and cifar100.yaml (with its get_optimizer, which hard-codes
# Nesterov): 200 epochs, batch 128, SGD lr 0.1, momentum 0.9, weight decay 2e-4, crop + flip,
# warm-up 5 epochs, LR_STEP [120, 160] with LR_FACTOR 0.01, i.e. x0.01 from epoch 120 and
# x0.0001 from epoch 160 counted from 1 (the scheduler steps at each epoch's start: 0-based 119
# and 159). Published: CIFAR-10-LT 79.82, CIFAR-100-LT 42.56 (IF 100).
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
# OLTR (Liu et al., CVPR 2019; official code zhmiao/OpenLongTailRecognition-OLTR) publishes no
# CIFAR recipe. Stage one here is bvkit's "ce" recipe (a nested run). Stage two follows the
# official config/ImageNet_LT/stage_2_meta_embedding.py: whole network fine-tuned with a
# class-aware sampler, SGD momentum 0.9 without Nesterov, weight decay 5e-4, lr 0.1 for the
# meta-embedding classifier, 0.01 for the feature model (attention included) and for the
# centroids, no warm-up, StepLR x0.1 every third of stage two (20 of 60 epochs), loss CE + 0.01
# DiscCentroidsLoss, reachability scale 10, cosine-norm scale 16. Chosen for CIFAR: stage two
# of 100 epochs (ImageNet-LT's stage two is twice its 30-epoch stage one; 400 here would be out
# of proportion), batch 128. Published (RIDE's table, CIFAR-100-LT IF 100): 41.2 all / 61.8 many
# / 41.4 medium / 17.6 few.
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
# LFME (Xiang, Ding & Han, ECCV 2020; official code github.com/xiangly55/LFME): one CE expert
# per cardinality-adjacent class group (the many / medium / few shot splits of the training
# counts; when one is empty, the classes sorted by count cut into three runs of near-equal class
# count), then one student of the same architecture trained with CE + distillation from its
# samples' group experts; only the student is kept (a plain ResNet-32 at inference). Experts and
# student use the CE CIFAR recipe (200 epochs, batch 128, lr 0.1, wd 2e-4, warm-up 5, x0.01 /
# x0.0001 at 160 / 180), SGD without Nesterov as the official code (built on OLTR's). Distillation
# from the only released config (config/ImageNet_LT/LFME.py): T 2, weight 1, self-paced threshold
# 0.3 (decay_thresh: expert weight 1 while the student's group validation accuracy is <= 0.3 x
# the expert's, then linear to 0 at the expert's). Curriculum: the official instance weights
# reach 1 at half the epochs (curriculum_epochs 100 of 200); the start fraction 0.5 of each
# group's easiest images is this port's choice. Published (RIDE's table): CIFAR-100-LT IF 100: 43.8.
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
# alinlab/M2m (README, run.sh, config.py, train.py): g = ERM (CE) ResNet-32; f from scratch,
# 200 epochs, batch 128, SGD lr 0.1, momentum 0.9 without Nesterov, weight decay 2e-4, crop +
# flip, lr linear warm-up 5 epochs, x0.01 from epoch 160 and x0.0001 from 180 (0-based), plain
# CE (no re-weighting); generation from --warm 160 with --beta 0.999 --lam 0.5 --gamma 0.9
# --step_size 0.1 --attack_iter 10 and the random start's L2 norm 0.5 (train.py generation).
# Published (RIDE's table, CIFAR-100-LT IF 100): 43.5.
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


# ---------------------------------------------------------------- ImageNet-size benchmarks


@dataclass(frozen=True)
class DatasetSetting:
    """How every registered method runs on an ImageNet-size benchmark unless overridden:
    ``recipe`` fields replaced outright, CIFAR models swapped for ImageNet-size ones
    (``models``: CIFAR model -> (model, model_kwargs added)), RIDE's loss settings
    (``ride_loss``) and second-stage settings by kind (``stages``)."""

    label: str
    recipe: dict
    models: dict
    ride_loss: dict
    stages: dict


# RIDE's configs (frank-xwang/RIDE-LongTailRecognition, configs/config_imagenet_lt_resnet50_ride.json
# and config_iNaturalist_resnet50_ride.json; ``docs/recipes.md``): ResNet-50, 100 epochs, SGD
# momentum 0.9 Nesterov, weight decay 2e-4, CustomLR warm-up 5 epochs then x0.1 from epoch 60 and
# x0.01 from epoch 80 (0-based, i.e. from epochs 61 / 81), DRW and the class-wise diversity
# temperature from epoch 80 (reweight_epoch, "from 81"); ImageNet-LT batch 256, lr 0.1, gamma
# (reweight_factor) 0.02; iNat batch 512, lr 0.2, gamma 0.015; diversity lambda -0.2 on both
# (RIDELoss's default additional_diversity_factor; CIFAR sets -0.45). The same schedule is used
# for the baselines' stage one so that every method is trained alike (the decoupling paper's own
# ImageNet-LT stage one is 90 epochs with a cosine schedule). ResNeXt-50 (32x4d):
# --set model=resnext50-32x4d / ride-resnext50. RandomResizedCrop 224, test Resize 256 + CenterCrop
# 224 (RIDE's ImageNetLTDataLoader), set by augment.size / augment.resize.
_IMAGENET_MODELS = {
    "resnet32": ("resnet50", {}),
    "resnet32-ldam": ("resnet50", {"classifier": "cosine"}),  # LDAM's cosine classifier, s 30
    "ride-resnet32": ("ride-resnet50", {}),
}
_IMAGENET_RECIPE = {
    "epochs": 100, "batch_size": 256, "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 2e-4,
    "schedule": "step", "warmup_epochs": 5, "lr_milestones": (60, 80), "lr_factors": (0.1, 0.01),
    "drw_epoch": 80, "reference_epochs": 100, "augment": {"size": 224, "resize": 256},
}
# Second stages: cRT and LWS as the decoupling paper's ImageNet-LT configs
# (facebookresearch/classifier-balancing config/ImageNet_LT/cls_crt.yaml: 10 epochs, batch 512,
# lr 0.2, wd 5e-4, cosine, class-aware sampling; cls_lws.yaml: the same for 5 epochs); RIDE's
# routers as config_imagenet_lt_resnet50_ride_ea.json / config_iNaturalist_resnet50_ride_ea.json
# (5 epochs, batch 512, lr 0.01, wd 5e-4, cosine, balanced, top_choices_num 50, pos_weight 100).
_IMAGENET_STAGES = {
    "crt": {"epochs": 10, "batch_size": 512, "lr": 0.2, "weight_decay": 5e-4, "schedule": "cosine"},
    "lws": {"epochs": 5, "batch_size": 512, "lr": 0.2, "weight_decay": 5e-4, "schedule": "cosine"},
    "routing": {"epochs": 5, "batch_size": 512, "lr": 0.01, "weight_decay": 5e-4, "schedule": "cosine",
                "options": {"top_k": 50, "pos_weight": 100.0}},
}

DATASET_SETTINGS = {
    "imagenet-lt": DatasetSetting(
        "ImageNet-LT", _IMAGENET_RECIPE, _IMAGENET_MODELS,
        {"diversity_weight": -0.2, "gamma": 0.02}, _IMAGENET_STAGES),
    # iNat 2018 ships no validation list: bvkit holds out up to 3 training images per class (at
    # most a fifth of a class; classes under 5 images give none), see bvkit.train.run
    "inat2018": DatasetSetting(
        "iNaturalist 2018", {**_IMAGENET_RECIPE, "batch_size": 512, "lr": 0.2, "val_per_class": 3},
        _IMAGENET_MODELS, {"diversity_weight": -0.2, "gamma": 0.015}, _IMAGENET_STAGES),
}


def for_dataset(recipe: Recipe, dataset: str) -> Recipe:
    """``recipe`` in ``dataset``'s published setting (``DATASET_SETTINGS``); unchanged for
    other datasets (the CIFAR recipes are the registry's own), for procedure recipes (BBN,
    OLTR, LFME, M2m) and SADE's (``DEVICE_DATA_STAGES``): CIFAR only."""
    setting = DATASET_SETTINGS.get(dataset) if isinstance(dataset, str) else None
    if setting is None or recipe.procedure is not None or any(stage.kind in DEVICE_DATA_STAGES for stage in recipe.stages):
        return recipe
    fields_ = dict(setting.recipe)
    if recipe.drw_epoch is None:  # a method without DRW keeps none
        fields_["drw_epoch"] = None
    model, extra = setting.models.get(recipe.model, (recipe.model, {}))
    loss_kwargs = {**recipe.loss_kwargs, **setting.ride_loss} if recipe.loss.startswith("ride") else recipe.loss_kwargs
    stages = tuple(
        replace(stage, **{**setting.stages.get(stage.kind, {}),
                          "options": {**stage.options, **setting.stages.get(stage.kind, {}).get("options", {})}})
        for stage in recipe.stages
    )
    summary = (f"{setting.label}: {model}, {fields_['epochs']} epochs, batch {fields_['batch_size']}, "
               f"lr {fields_['lr']:g}, warm-up {fields_['warmup_epochs']}")
    if fields_["drw_epoch"] is not None:
        summary += f", DRW from epoch {fields_['drw_epoch'] + 1}"
    return replace(recipe, description=f"{recipe.description} [{summary}]", model=model,
                   model_kwargs={**recipe.model_kwargs, **extra}, loss_kwargs=loss_kwargs, stages=stages, **fields_)
