"""The study runner packing runs (bvkit.train.packing): same run directories, same cache."""

import json

import numpy as np
import pytest

from bvkit.errors import BvkitError
from bvkit.study import load_study, run_study
from bvkit.study.spec import parse_spec

SPEC = """\
name = "packed-tiny"
[data]
dataset = "synthetic-lt"
imbalance = 10.0
n_max = 40
[subsets]
scheme = "redraw"
count = 3
[train]
epochs = 1
batch_size = 64
device = "cpu"
model_width = 4
pack = "always"
pack_size = 2
options = { "model_kwargs.blocks" = 1, val_per_class = 5 }
[[methods]]
name = "ce"
method = "ce"
[[methods]]
name = "crt"
method = "crt"
options = { "crt.epochs" = 1 }
"""


def test_spec_reads_pack_settings_and_rejects_bad_ones():
    spec = parse_spec(SPEC)
    assert spec.method("ce").pack == "always" and spec.method("ce").pack_size == 2
    from bvkit.study.planning import plan_runs

    subsets = [np.arange(20)] * spec.n_subsets
    never = parse_spec(SPEC.replace('pack = "always"', 'pack = "never"'))
    assert [t.run_id for t in plan_runs(spec, subsets)] == [t.run_id for t in plan_runs(never, subsets)]  # packing never changes a run's id
    with pytest.raises(BvkitError, match="pack"):
        parse_spec(SPEC.replace('pack = "always"', 'pack = "sometimes"'))


def test_group_packs_respects_mode_size_and_packability():
    from bvkit.study.packs import group_packs
    from bvkit.study.planning import plan_runs

    spec = parse_spec(SPEC)
    tasks = plan_runs(spec, [np.arange(10)] * 3)
    packs = group_packs(spec, tasks)
    ce = [p for p in packs if p[0].label == "ce"]
    assert [len(p) for p in ce] == [2, 1]  # 3 ce runs, packs of up to 2
    assert all(len(p) == 1 for p in packs if p[0].label == "crt")  # second stage: never packed
    assert all(len(p) == 1 for p in group_packs(spec, tasks, pack="never"))
    assert all(len(p) == 1 for p in group_packs(spec, tasks, pack="auto"))  # CPU: auto does not pack


@pytest.mark.slow
def test_packed_study_writes_single_run_outputs_and_caches(tmp_path, monkeypatch):
    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("count = 3", "count = 2").replace('[[methods]]\nname = "crt"\nmethod = "crt"\noptions = { "crt.epochs" = 1 }\n', ""))
    out = tmp_path / "study"
    messages = []
    assert run_study(spec, out, log=messages.append) == {"cached": 0, "ran": 2, "failed": 0}
    assert any("2 runs in 1 packs" in m for m in messages)
    study = load_study(out)
    assert set(study.metrics["status"]) == {"done"}
    assert study.predictions["ce"]["logits"].shape[0] == 2
    for run_id in study.metrics["run_id"]:
        assert json.loads((out / "runs" / run_id / "metrics.json").read_text())["pack_size"] == 2
    assert run_study(spec, out, log=None, pack="never") == {"cached": 2, "ran": 0, "failed": 0}
