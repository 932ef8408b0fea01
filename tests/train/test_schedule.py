import math

import pytest

from bvkit.train.schedule import Schedule, ride_schedule, scale_epoch


def test_ride_schedule_full_length_matches_the_published_recipe():
    schedule = ride_schedule(200, steps_per_epoch=10)
    assert schedule.warmup_epochs == 5 and schedule.milestones == (160, 180)
    assert schedule.factor(0) == pytest.approx(1 / 50)  # linear warm-up over 5 epochs of steps
    assert schedule.factor(49) == pytest.approx(1.0)
    assert schedule.factor(50) == 1.0
    assert schedule.factor(160 * 10 - 1) == 1.0  # epoch 160 (1-based) still at the full lr
    assert schedule.factor(160 * 10) == 0.01  # epoch 161 (1-based)
    assert schedule.factor(180 * 10) == pytest.approx(1e-4)  # epoch 181
    assert schedule.factor(200 * 10 - 1) == pytest.approx(1e-4)


def test_short_schedule_scales_milestones_proportionally():
    schedule = ride_schedule(10, steps_per_epoch=4)
    assert schedule.milestones == (8, 9)
    assert schedule.warmup_epochs == 1  # 5 * 10/200 rounds to 0; warm-up keeps at least one epoch
    assert [schedule.factor(e * 4) for e in range(10)][-3:] == [1.0, 0.01, 0.0001]
    assert scale_epoch(160, 20) == 16 and scale_epoch(None, 20) is None
    # 5 epochs: both steps would round to epoch 4; the second moves past the end instead
    assert ride_schedule(5, steps_per_epoch=1).milestones == (4, 5)
    assert [ride_schedule(5, steps_per_epoch=1).factor(e) for e in range(5)] == [1.0] * 4 + [0.01]


def test_cosine_decays_from_one_to_zero_after_warmup():
    schedule = Schedule("cosine", epochs=5, steps_per_epoch=10)
    assert schedule.factor(0) == 1.0
    assert schedule.factor(25) == pytest.approx(0.5)
    assert schedule.factor(49) == pytest.approx(0.5 * (1 + math.cos(math.pi * 49 / 50)))
    values = [schedule.factor(s) for s in range(50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError):
        Schedule("linear", epochs=1, steps_per_epoch=1)


# ---------------------------------------------------------------- scaling rules for short runs

# (epochs, rule) -> (warm-up epochs, milestones, DRW epoch), 0-based epoch indices, worked out by hand
# from the reference (200 epochs, warm-up 5, drops at 160 and 180, DRW at 160):
SCALED = {
    (40, "proportional"): (1, (32, 36), 32),  # x 40/200
    (40, "keep-steps"): (1, (20, 30), 20),  # tail of 40 capped at 20 = half the run; 20 split 10 / 10
    (40, "min-share"): (1, (24, 32), 24),  # tail at least ceil(0.4 * 40) = 16; 16 split 8 / 8
    (100, "keep-steps"): (2, (60, 80), 60),  # tail of 40 kept whole (under 50); warm-up 5 * 60/160
    (100, "min-share"): (2, (60, 80), 60),  # 40 % of 100
    (8, "proportional"): (1, (6, 7), 6),
    (8, "keep-steps"): (1, (4, 6), 4),  # tail 4, split 2 / 2
    (8, "min-share"): (1, (4, 6), 4),  # tail ceil(3.2) = 4
    (2, "proportional"): (1, (2, 3), 2),  # both drops past the end: never fire
    (2, "keep-steps"): (1, (1, 2), 1),  # tail 1: the drop at the 2nd epoch, the second never
    (2, "min-share"): (1, (1, 2), 1),
    (1, "proportional"): (1, (1, 2), 1),
    (1, "keep-steps"): (1, (1, 2), 1),  # at least one epoch at the full lr: no drop in a 1-epoch run
    (1, "min-share"): (1, (1, 2), 1),
}


@pytest.mark.parametrize("epochs, rule", list(SCALED), ids=[f"{e}-{r}" for e, r in SCALED])
def test_each_scaling_rule_moves_warm_up_drops_and_drw_as_worked_out(epochs, rule):
    from bvkit.train.schedule import time_map

    warmup, milestones, drw = SCALED[epochs, rule]
    schedule = ride_schedule(epochs, steps_per_epoch=3, scaling=rule)
    assert (schedule.warmup_epochs, schedule.milestones) == (warmup, milestones)
    assert time_map(epochs, 200, 160, rule)(160) == drw  # the DRW switch moves with the first drop


@pytest.mark.parametrize("rule", ["proportional", "keep-steps", "min-share"])
def test_every_rule_leaves_the_full_recipe_and_cosine_as_they_are(rule):
    from bvkit.train.schedule import time_map

    full = ride_schedule(200, steps_per_epoch=10, scaling=rule)
    assert full.warmup_epochs == 5 and full.milestones == (160, 180)
    assert time_map(200, 200, 160, rule)(160) == 160
    cosine = ride_schedule(40, steps_per_epoch=10, kind="cosine", milestones=(), factors=(), scaling=rule)
    assert cosine.warmup_epochs == 1 and cosine.milestones == ()


def test_drw_before_or_after_the_first_drop_keeps_its_side():
    from bvkit.train.schedule import time_map

    move = time_map(40, 200, 160, "keep-steps")  # drop at 20; before it x 20/160, after it x 20/40
    assert move(80) == 10 and move(120) == 15  # DRW before the drop stays before it
    assert move(170) == 25 and move(190) == 35  # ... after it, after it
    assert move(0) == 0 and move(200) == 40


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="schedule scaling"):
        ride_schedule(40, steps_per_epoch=1, scaling="stretch")


def test_a_recipe_schedule_and_its_drw_switch_follow_its_scaling_rule():
    import numpy as np
    import torch

    from bvkit.errors import BvkitError
    from bvkit.methods import create_method
    from bvkit.train.builders import build_loss, recipe_schedule

    counts = np.array([50, 20, 5])
    for rule, drop in (("proportional", 32), ("keep-steps", 20), ("min-share", 24)):
        recipe = create_method("ldam-drw", epochs=40, schedule_scaling=rule)
        assert recipe_schedule(recipe, steps_per_epoch=7).milestones[0] == drop
        assert build_loss(recipe, counts, torch.device("cpu")).drw_epoch == drop
    with pytest.raises(BvkitError, match="schedule_scaling must be one of proportional, keep-steps, min-share"):
        create_method("ce", schedule_scaling="stretch")


def test_a_spec_takes_the_rule_into_the_recipe_and_the_run_id():
    import numpy as np

    from bvkit.errors import BvkitError
    from bvkit.study.planning import legacy_run_id, plan_runs
    from bvkit.study.spec import parse_spec

    base = '[data]\ndataset = "synthetic-lt"\n[subsets]\ncount = 2\n[train]\nepochs = 40\n'
    method = '[[methods]]\nname = "CE"\nmethod = "ce"\n'
    plain, kept = parse_spec(base + method), parse_spec(base + 'schedule_scaling = "keep-steps"\n' + method)
    assert plain.methods[0].recipe.schedule_scaling == "proportional"
    assert kept.methods[0].recipe.schedule_scaling == "keep-steps"
    subsets = [np.arange(30)] * 2
    ids = [t.run_id for t in plan_runs(plain, subsets)], [t.run_id for t in plan_runs(kept, subsets)]
    assert set(ids[0]).isdisjoint(ids[1])
    digest = "0" * 64  # a run of the old format (all proportional) is never taken for a keep-steps one
    assert legacy_run_id(plain, plain.methods[0], digest, 0) != legacy_run_id(kept, kept.methods[0], digest, 0)
    with pytest.raises(BvkitError, match=r"\[train\] schedule_scaling must be one of proportional, keep-steps"):
        parse_spec(base + 'schedule_scaling = "stretch"\n' + method)


def test_a_run_records_its_rule_and_drops_its_lr_where_the_rule_says(tmp_path, tiny_data):
    import json

    import pandas as pd
    from train_helpers import TINY

    from bvkit.train import train

    train("ldam-drw", tiny_data, epochs=4, schedule_scaling="keep-steps", device="cpu", out=tmp_path,
          progress=False, **TINY)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["schedule_scaling"] == "keep-steps"
    history = pd.read_csv(tmp_path / "history.csv")
    # keep-steps at 4 epochs: the tail is half the run, the first drop at 0-based epoch 2 (proportional: 3)
    assert history["lr"].round(6).tolist() == [0.1, 0.1, 0.001, 0.00001]
