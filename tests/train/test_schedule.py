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
