"""Learning-rate schedules over the training steps: constant, cosine, poly or step, after a linear warm-up."""

import math

import keras
from keras import ops

SCHEDULES = ("constant", "cosine", "poly", "step")  # the `lr_schedule.name`s of a config


@keras.saving.register_keras_serializable(package="imseg")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`peak_lr` reached linearly over `warmup_steps` (from `peak_lr / warmup_steps` at the first step), then:

    - `constant`: `peak_lr`;
    - `cosine`: `final + (peak - final) * (1 + cos(pi * t)) / 2`, t = progress after warm-up in [0, 1];
    - `poly`: `final + (peak - final) * (1 - t) ** power` (the DeepLab "poly" rule);
    - `step`: `peak * gamma ** k` where k counts the `milestones` (in steps) already passed;

    with `final = final_fraction * peak_lr` and `total_steps` the whole run. Optimizers call it with their
    iteration count, so a resumed run continues the schedule exactly where it stopped.
    """

    def __init__(
        self,
        peak_lr,
        total_steps,
        name="constant",
        warmup_steps=0,
        final_fraction=0.0,
        power=0.9,
        milestones=(),
        gamma=0.1,
    ):
        if name not in SCHEDULES:
            raise ValueError(f"name must be one of {', '.join(SCHEDULES)}, got {name!r}")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.name = name
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)
        self.power = float(power)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_lr
        warmup = ops.minimum((step + 1.0) / max(self.warmup_steps, 1), 1.0) if self.warmup_steps else 1.0
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        t = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        final = self.final_fraction * peak
        if self.name == "cosine":
            rate = final + (peak - final) * 0.5 * (1.0 + ops.cos(math.pi * t))
        elif self.name == "poly":
            rate = final + (peak - final) * ops.power(1.0 - t, self.power)
        elif self.name == "step":
            passed = sum(ops.cast(step >= m, "float32") for m in self.milestones) if self.milestones else 0.0
            rate = peak * ops.power(self.gamma, passed)
        else:
            rate = ops.convert_to_tensor(peak, "float32")
        return rate * warmup

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "name": self.name,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
            "power": self.power,
            "milestones": self.milestones,
            "gamma": self.gamma,
        }
