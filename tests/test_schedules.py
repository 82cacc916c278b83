"""Learning-rate schedules: the formula at every step, warm-up, the config's epochs turned into steps."""

import math

import numpy as np
import pytest

from helpers import assert_round_trip
from imseg.config import config_from_dict
from imseg.recipe import make_optimizer
from imseg.schedules import WarmupSchedule

PEAK, TOTAL, WARMUP = 0.01, 100, 10


def reference(name, step, final_fraction=0.0, power=0.9, milestones=(), gamma=0.1):
    warmup = min((step + 1) / WARMUP, 1.0)
    t = min(max((step - WARMUP) / (TOTAL - WARMUP), 0.0), 1.0)
    final = final_fraction * PEAK
    rate = {
        "constant": PEAK,
        "cosine": final + (PEAK - final) * 0.5 * (1 + math.cos(math.pi * t)),
        "poly": final + (PEAK - final) * (1 - t) ** power,
        "step": PEAK * gamma ** sum(step >= m for m in milestones),
    }[name]
    return rate * warmup


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("constant", {}),
        ("cosine", {}),
        ("cosine", {"final_fraction": 0.1}),
        ("poly", {"power": 2.0}),
        ("step", {"milestones": [40, 70], "gamma": 0.5}),
    ],
)
def test_every_step_follows_the_formula(name, kwargs):
    schedule = WarmupSchedule(PEAK, TOTAL, name, warmup_steps=WARMUP, **kwargs)
    steps = np.arange(TOTAL + 5)  # past the end the rate stays at its final value
    ours = [float(schedule(s)) for s in steps]
    np.testing.assert_allclose(ours, [reference(name, s, **kwargs) for s in steps], rtol=1e-5, atol=1e-9)
    assert ours[WARMUP - 1] == pytest.approx(PEAK) and ours[0] == pytest.approx(PEAK / WARMUP)


def test_round_trip():
    assert_round_trip(WarmupSchedule(PEAK, TOTAL, "step", warmup_steps=3, milestones=[5, 9], gamma=0.3))


BASE = {
    "name": "t",
    "backbone": "MobileNetV2",
    "refine_net_blocks": [["block_1_expand_relu"]],
    "epochs": 10,
    "optimizer": "AdamW",
    "optimizer_kwargs": {"learning_rate": 0.002},
}


def test_config_epochs_become_steps():
    config = config_from_dict({**BASE, "lr_schedule": {"name": "step", "warmup_epochs": 0.5, "milestones": [4]}})
    optimizer = make_optimizer(config, steps_per_epoch=20)
    schedule = optimizer._learning_rate  # the schedule object, not its current value
    assert (schedule.total_steps, schedule.warmup_steps, schedule.milestones, schedule.peak_lr) == (
        200,
        10,
        [80],
        0.002,
    )
    assert float(schedule(79)) == pytest.approx(0.002) and float(schedule(80)) == pytest.approx(0.0002)


def test_constant_rate_needs_no_schedule_and_clip_norm_reaches_the_optimizer():
    optimizer = make_optimizer(config_from_dict({**BASE, "gradient_clip_norm": 1.5}))
    assert float(optimizer.learning_rate) == pytest.approx(0.002) and optimizer.global_clipnorm == 1.5
