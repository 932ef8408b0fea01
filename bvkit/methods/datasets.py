"""Every method on an ImageNet-size benchmark (``imagenet-lt``, ``inat2018``): that benchmark's
published setting (``DATASET_SETTINGS``: ResNet-50 family, 100 epochs, RIDE's ImageNet-LT /
iNat hyper-parameters) taken before any override; ``docs/recipes.md`` (ImageNet-size settings)
traces each value to its source."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bvkit.methods.recipe import DEVICE_DATA_STAGES, Recipe


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


# RIDE's ImageNet-LT and iNaturalist configs; ResNeXt-50 (32x4d): --set model=resnext50-32x4d /
# ride-resnext50
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
# the decoupling paper's ImageNet-LT cRT / LWS configs; RIDE's ImageNet-size router configs
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
