"""A method's recipe: :class:`Recipe` (model, loss, optimiser, schedule, stages) and its second
:class:`Stage`; the kinds and precisions they may name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

STAGE_KINDS = ("crt", "tau-norm", "lws", "routing", "posthoc-adjust", "maxnorm", "sade-tta")
PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULE_SCALINGS = ("proportional", "keep-steps", "min-share")  # bvkit.train.schedule.time_map
DEVICE_DATA_STAGES = ("sade-tta",)  # second stages on device-held (CIFAR-style) data only


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
    schedule_scaling: str = "proportional"  # how a run of other epochs moves the milestones (SCHEDULE_SCALINGS)

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
