"""What a decomposition returns: :class:`Decomposition`, its tidy frames (per sample, class,
split and model) with its settings, and the key columns of its per-class and per-split frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bvkit.errors import BvkitError

CLASS_KEY = ["method", "loss", "class", "class_name", "train_count", "split", "n_test"]
SPLIT_KEY = ["method", "loss", "split", "n_classes", "n_test"]


@dataclass
class Decomposition:
    """Tidy results of one or more methods' decompositions (``method`` column tells them apart).

    ``per_sample``: one row per (method, loss, test sample); ``per_class``: per (method, loss,
    class); ``per_split``: per (method, loss, split). ``settings``: method -> the arguments
    and sizes it was decomposed with. ``per_model``: per (method, model, split), each model's
    accuracy with the same classes and splits; their mean over models is ``per_split``'s.
    ``experts``: the bias-variance-diversity decomposition of the methods given expert logits
    (:func:`decompose_experts`), itself a Decomposition whose frames hold
    ``ensemble_loss, average_bias, average_variance, diversity``; None when none was.
    ``leave_one_out``: ``(method, loss) -> {column: (D, N)}``, for a method decomposed with the
    population estimator, each per-sample term computed without training set k (row k): the
    delete-one-subset jackknife that the intervals, :func:`~bvkit.decomposition.compare` and
    the claims pair across methods by subset.
    """

    per_sample: pd.DataFrame
    per_class: pd.DataFrame
    per_split: pd.DataFrame
    settings: dict = field(default_factory=dict)
    per_model: pd.DataFrame = field(default_factory=pd.DataFrame)
    experts: Decomposition | None = None
    leave_one_out: dict = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.per_split["method"]))

    @property
    def losses(self) -> list[str]:
        return list(dict.fromkeys(self.per_split["loss"]))

    @classmethod
    def concat(cls, parts) -> "Decomposition":
        """Stack decompositions of different methods (on the same or different test sets)."""
        parts = list(parts)
        if not parts:
            raise BvkitError("no decompositions to combine")
        names = [m for p in parts for m in p.methods]
        dupes = sorted({m for m in names if names.count(m) > 1})
        if dupes:
            raise BvkitError(f"method name used twice: {', '.join(dupes)} (use distinct names)")
        frames = {attr: pd.concat([getattr(p, attr) for p in parts], ignore_index=True)
                  for attr in ("per_sample", "per_class", "per_split", "per_model")}
        experts = [p.experts for p in parts if p.experts is not None]
        return cls(settings={m: s for p in parts for m, s in p.settings.items()},
                   experts=cls.concat(experts) if experts else None,
                   leave_one_out={k: v for p in parts for k, v in p.leave_one_out.items()},
                   **frames)

    def __repr__(self) -> str:
        return (f"Decomposition(methods={self.methods}, losses={self.losses}, "
                f"classes={self.per_class['class'].nunique()}, "
                f"samples={self.per_sample['sample'].nunique()})")
