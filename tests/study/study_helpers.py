"""What the study tests share: the repository's root and a tiny two-method study spec."""

from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent

SPEC = """\
name = "tiny"

[data]
dataset = "synthetic-lt"
imbalance = 10.0

[subsets]
scheme = "redraw"
count = 3
seed = 0

[train]
epochs = 2
device = "cpu"

[[methods]]
name = "CE"
method = "ce"

[[methods]]
name = "RIDE-2"
method = "ride"
options = { model_kwargs = { num_experts = 2 } }
"""
