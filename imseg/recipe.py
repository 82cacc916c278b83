"""The training recipe of a config: its loss, optimizer (with learning-rate schedule) and augmentation layers.

Everything here turns config keys into Keras objects, and every value that cannot work into a ConfigError naming
the file and the key.
"""

import inspect
import json
import math
import re

import keras

from imseg.errors import ConfigError, did_you_mean
from imseg.losses import LOSSES, WeightedSum
from imseg.schedules import WarmupSchedule


def accepted_arguments(cls):
    """(every keyword argument `cls(...)` accepts, those it requires): its own `__init__`'s and, where that passes
    `**kwargs` on, its base classes' (as Keras layers, losses and optimizers do)."""
    names, required = [], []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
                if klass is cls and p.default is p.empty:
                    required.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names, required


def check_arguments(cls, kwargs, key, source, also=(), given=()):
    """A ConfigError naming `key.<argument>` for an argument `cls` does not take (with a suggestion among its
    arguments and `also`, the other keys allowed where they are written), or `key` for one it needs; `given` are
    arguments imseg passes itself."""
    accepted, required = accepted_arguments(cls)
    accepted = [name for name in accepted if name not in given]
    for name in kwargs:
        if name not in accepted:
            raise ConfigError(
                f"{source}: key '{key}.{name}': {cls.__name__} has no such argument"
                f"{did_you_mean(name, [*accepted, *also])}; it takes: {', '.join(accepted)}"
            )
    missing = [name for name in required if name not in kwargs and name not in given]
    if missing:
        raise ConfigError(f"{source}: key '{key}': {cls.__name__} needs the argument '{missing[0]}'")


def _resolve_optimizer(name, kwargs, source):
    """A Keras optimizer from its name (class or alias, any case) and keyword arguments."""
    try:
        obj = keras.optimizers.get(name)
    except (ValueError, TypeError):
        obj = None
    if obj is None:
        known = sorted(
            n
            for n, v in vars(keras.optimizers).items()
            if inspect.isclass(v) and issubclass(v, keras.optimizers.Optimizer)
        )
        raise ConfigError(f"{source}: key 'optimizer': unknown optimizer '{name}'{did_you_mean(name, known)}")
    factory = obj if inspect.isclass(obj) else type(obj)
    check_arguments(factory, kwargs, "optimizer_kwargs", source)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: key 'optimizer_kwargs': {factory.__name__}: {e}") from None


# Optimizer arguments whose values cannot be right outside these ranges: (low, high, low open, high open).
_OPTIMIZER_RANGES = {
    "learning_rate": (0, math.inf, True, True),
    "epsilon": (0, math.inf, True, True),
    "clipnorm": (0, math.inf, True, True),
    "global_clipnorm": (0, math.inf, True, True),
    "clipvalue": (0, math.inf, True, True),
    "weight_decay": (0, math.inf, False, True),
    "momentum": (0, 1, False, False),
    "beta_1": (0, 1, False, True),
    "beta_2": (0, 1, False, True),
    "rho": (0, 1, False, True),
    "ema_momentum": (0, 1, False, False),
}


def _check_optimizer_values(kwargs, source):
    for key, (low, high, low_open, high_open) in _OPTIMIZER_RANGES.items():
        if key not in kwargs or kwargs[key] is None:
            continue
        v = kwargs[key]
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        inside = number and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not inside:
            span = f"{'(' if low_open else '['}{low}, {'inf' if high == math.inf else high}{')' if high_open else ']'}"
            raise ConfigError(
                f"{source}: key 'optimizer_kwargs.{key}': expected a number in {span}, got {json.dumps(v)}"
            )


def _loss_items(config):
    """[(config key, {name, weight, arguments})] of the configured loss or sum of losses."""
    if isinstance(config.loss, str):
        return [("loss", {"name": config.loss, "weight": 1.0, **config.loss_kwargs})]
    return [(f"loss[{i}]", dict(item)) for i, item in enumerate(config.loss)]


# Keras's function spellings of the same losses, e.g. binary_crossentropy.
_LOSS_ALIASES = {re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): name for name in LOSSES}


def make_loss(config, class_names, source="config"):
    """The configured loss for `class_names` (the model's output channels), as an imseg loss object."""
    made, weights = [], []
    for key, item in _loss_items(config):
        name = item.pop("name")
        weights.append(item.pop("weight"))
        name = _LOSS_ALIASES.get(name, name)
        if name not in LOSSES:
            known = sorted(LOSSES)
            raise ConfigError(
                f"{source}: key '{key}': unknown loss '{name}'{did_you_mean(name, known)}; "
                f"choose one of: {', '.join(known)}"
            )
        cls, implied = LOSSES[name]
        if implied is not None and implied != config.task:
            raise ConfigError(
                f"{source}: key '{key}': {name} is for task {implied}, but task is {config.task}; "
                f"use {cls.__name__}, which follows the task"
            )
        args_key = "loss_kwargs" if key == "loss" else key
        if "task" in item:
            raise ConfigError(f"{source}: key '{args_key}.task': not allowed; the loss follows the top-level 'task'")
        check_arguments(cls, item, args_key, source, also=("name", "weight") if key != "loss" else (), given=("task",))
        for per_class in ("class_weights", "pos_weight"):
            if per_class in item:
                item[per_class] = _per_class_values(item[per_class], class_names, source, f"{args_key}.{per_class}")
        try:
            made.append(cls(task=config.task, **item))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: key '{args_key}': {name}: {e}") from None
    if len(made) == 1 and weights[0] == 1.0:
        return made[0]
    return WeightedSum(made, weights)


def _per_class_values(value, class_names, source, key):
    """One number, K numbers in class order, or {class: number} (others 1) -> a number or a list of K."""

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    if number(value):
        return float(value)
    if isinstance(value, dict):
        unknown = [c for c in value if c not in class_names]
        if unknown:
            raise ConfigError(
                f"{source}: key '{key}': unknown class '{unknown[0]}'"
                f"{did_you_mean(unknown[0], class_names)}; classes: {', '.join(class_names)}"
            )
        value = [value.get(c, 1.0) for c in class_names]
    # A list in the file is a tuple in the frozen config.
    if not (isinstance(value, (list, tuple)) and len(value) == len(class_names) and all(number(v) for v in value)):
        raise ConfigError(
            f"{source}: key '{key}': expected a number >= 0, a list of {len(class_names)} "
            f"(one per class: {', '.join(class_names)}) or a mapping of class to number"
        )
    if not any(value):
        raise ConfigError(f"{source}: key '{key}': every class weighs 0, so the loss trains nothing; give at least one "
                          "class a weight > 0")  # fmt: skip
    return [float(v) for v in value]


def make_optimizer(config, steps_per_epoch=None, source="config"):
    """The configured optimizer, its learning rate following `lr_schedule` over `epochs * steps_per_epoch` steps."""
    kwargs = dict(config.optimizer_kwargs)
    _check_optimizer_values(kwargs, source)
    # 1 and 1.0 alike: Keras refuses an integer learning rate (its variable would be an integer).
    kwargs = {k: float(v) if k in _OPTIMIZER_RANGES and isinstance(v, int) and not isinstance(v, bool) else v
              for k, v in kwargs.items()}  # fmt: skip
    schedule = config.lr_schedule
    if config.gradient_clip_norm is not None:
        kwargs["global_clipnorm"] = config.gradient_clip_norm
    if schedule.name != "constant" or schedule.warmup_epochs or schedule.warmup_steps:
        if steps_per_epoch is None:
            raise ValueError("a learning-rate schedule needs steps_per_epoch")
        peak = kwargs.get("learning_rate")
        if peak is None:  # the optimizer's own default
            peak = float(keras.ops.convert_to_numpy(_resolve_optimizer(config.optimizer, kwargs, source).learning_rate))
        kwargs["learning_rate"] = WarmupSchedule(
            peak,
            config.epochs * steps_per_epoch,
            schedule.name,
            warmup_steps=schedule.warmup_steps or int(round(schedule.warmup_epochs * steps_per_epoch)),
            final_fraction=schedule.final_fraction,
            power=schedule.power,
            milestones=[m * steps_per_epoch for m in schedule.milestones],
            gamma=schedule.gamma,
        )
    return _resolve_optimizer(config.optimizer, kwargs, source)


# Keras preprocessing layers that change pixel values only, so the mask stays right (keras.layers and
# keras_cv.layers names). Geometric ones (flips, crops, zooms, rotations, shears) and label-mixing ones are refused.
PHOTOMETRIC_LAYERS = {
    "AutoContrast", "ChannelShuffle", "Equalization", "Grayscale", "Posterization", "RandomBrightness",
    "RandomChannelShift", "RandomColorDegeneration", "RandomColorJitter", "RandomContrast", "RandomErasing",
    "RandomGaussianBlur", "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPosterization", "RandomSaturation",
    "RandomSharpness", "Solarization",
}  # fmt: skip


def augment_layers(specs, source="config"):
    """The Keras layers of `augment.layers` ([{name, arguments}]), made; `keras_cv.` names need keras-cv."""
    made = []
    for i, spec in enumerate(specs):
        key = f"augment.layers[{i}]"
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        module_name, _, name = spec["name"].rpartition(".")
        if module_name in ("keras_cv", "keras_cv.layers"):
            try:
                import keras_cv
            except ImportError:
                raise ConfigError(
                    f"{source}: key '{key}': {spec['name']} needs keras-cv: pip install 'imseg[keras-cv]'"
                ) from None
            module = keras_cv.layers
        elif module_name in ("", "keras", "keras.layers"):
            module = keras.layers
        else:
            raise ConfigError(f"{source}: key '{key}': '{spec['name']}': give a keras.layers or keras_cv.layers name")
        cls = getattr(module, name, None)
        if not inspect.isclass(cls) or not issubclass(cls, keras.layers.Layer):
            known = sorted(n for n in PHOTOMETRIC_LAYERS if hasattr(module, n))
            raise ConfigError(f"{source}: key '{key}': unknown layer '{spec['name']}'{did_you_mean(name, known)}")
        if name not in PHOTOMETRIC_LAYERS:
            raise ConfigError(
                f"{source}: key '{key}': {spec['name']} moves or mixes pixels, and the masks cannot "
                "follow it; use imseg's flip, rotate90, rotate_range and scale_range for geometry, and "
                "keras layers that only change pixel values here"
            )
        check_arguments(cls, kwargs, key, source, also=("name",))
        try:
            made.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: key '{key}': {cls.__name__}: {e}") from None
    return made


def augment_kwargs(config, source="config"):
    """The SegmentationAugment arguments of a config (None when augmentation is off)."""
    a = config.augment
    if not a.enabled:
        return None
    return {
        "rotate_range": a.rotate_range, "flip": a.flip, "rotate90": a.rotate90, "scale_range": a.scale_range,
        "channel_shift_range": a.channel_shift_range, "multiplier": a.multiplier, "seed": a.seed,
        "photometric": {n: vars(getattr(a, n)) for n in a.PHOTOMETRIC if getattr(a, n).probability > 0},
        "layers": [keras.saving.serialize_keras_object(x) for x in augment_layers(a.layers, source)],
    }  # fmt: skip
