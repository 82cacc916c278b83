"""Training configs: JSON/YAML file -> one frozen, validated `Config` with every default filled in.

The file format is the AIR ImSeg one (see README, "Config reference"); every key is checked here, so
nothing later re-reads the file or meets an unchecked value. Errors name the file and the dotted key.
"""

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from imseg.errors import ConfigError, did_you_mean
from imseg.tasks import TASKS

MIXED_PRECISION = ("auto", "none", "mixed_bfloat16", "mixed_float16")
UPSAMPLING = ("bilinear", "transpose")
SCHEDULES = ("constant", "cosine", "poly", "step")


# --- value checkers: each returns the normalised value or raises ValueError with what was expected.


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _int(minimum=None):
    def check(v):
        if not _is_int(v) or (minimum is not None and v < minimum):
            raise ValueError(f"expected an integer >= {minimum}" if minimum is not None else "expected an integer")
        return v

    return check


def _number(minimum=None, maximum=None):
    def check(v):
        ok = (_is_int(v) or isinstance(v, float)) and math.isfinite(v)
        ok = ok and (minimum is None or v >= minimum) and (maximum is None or v <= maximum)
        if not ok:
            bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
            raise ValueError(" ".join(["expected a number", " and ".join(b for b in bounds if b)]).strip())
        return float(v)

    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _string(choices=None, case_insensitive=False):
    def check(v):
        if not isinstance(v, str) or not v:
            raise ValueError("expected a non-empty string")
        if choices is None:
            return v
        for choice in choices:
            if v == choice or (case_insensitive and v.lower() == choice.lower()):
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, choices))}{did_you_mean(v, choices)}")

    return check


def _optional_string(v):
    return None if v is None else _string()(v)


def _optional(check):
    def optional(v):
        return None if v is None else check(v)

    return optional


def _open_unit(v):
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
        raise ValueError("expected null or a number between 0 and 1 (exclusive)")
    return float(v)


def _loss(v):
    """A loss name, or a list of {name, weight, ...arguments} summed with their weights."""
    if isinstance(v, str) and v:
        return v
    if not (isinstance(v, list) and v and all(isinstance(item, dict) for item in v)):
        raise ValueError("expected a loss name or a list of {name: ..., weight: ...} mappings")
    items = []
    for item in v:
        if not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError("expected a 'name' in every item of the loss list")
        weight = item.get("weight", 1.0)
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0):
            raise ValueError(f"expected a number >= 0 as the 'weight' of loss {item['name']}")
        items.append(_frozen({**item, "weight": float(weight)}))
    return tuple(items)


def _positive_fraction(v):
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1):
        raise ValueError("expected a number in (0, 1] (0 would stop training at the first milestone)")
    return float(v)


def _epochs_list(v):
    if not (isinstance(v, list) and all(_is_int(e) and e >= 1 for e in v) and v == sorted(set(v))):
        raise ValueError("expected a rising list of epochs >= 1, e.g. [30, 60]")
    return tuple(v)


class FrozenDict(dict):
    """A dict that refuses changes: the config is frozen all the way down (change it with `Config.replace`)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("the config is frozen; use Config.replace(...) or --set")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse


def _frozen(value):
    """Mappings and lists of a config value as FrozenDict and tuples, all the way down."""
    if isinstance(value, dict):
        return FrozenDict((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _mapping(v):
    if v is None:
        return FrozenDict()
    if not isinstance(v, dict):
        raise ValueError("expected a mapping of keyword arguments")
    return _frozen(v)


def _string_list(v):
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise ValueError("expected a list of non-empty strings")
    return tuple(v)


def _input_shape(v):
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(d) and d > 0 for d in v)):
        raise ValueError("expected [height, width, bands], three positive integers")
    return tuple(v)


def _band_list(v):
    if v is None:
        return None
    if not (isinstance(v, list) and v and all(_is_int(b) and b >= 1 for b in v) and len(set(v)) == len(v)):
        raise ValueError("expected null or a list of distinct band numbers counted from 1, e.g. [4, 3, 2]")
    return tuple(v)


def _normalization(v):
    if v in ("imagenet", "auto"):
        return v
    if isinstance(v, dict) and set(v) == {"mean", "std"}:
        mean, std = v["mean"], v["std"]
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in [*mean, *std])
        if isinstance(mean, list) and isinstance(std, list) and numbers and len(mean) == len(std) and min(std) > 0:
            return _frozen({"mean": [float(x) for x in mean], "std": [float(x) for x in std]})
    raise ValueError('expected "imagenet", "auto" or {mean: [one per band], std: [one per band, > 0]}')


def _blocks(v):
    if not (isinstance(v, list) and v and all(isinstance(b, list) and b for b in v)):
        raise ValueError('expected a non-empty list of non-empty lists of layer names, e.g. [["conv5_block3_out"]]')
    if not all(isinstance(n, str) and n for b in v for n in b):
        raise ValueError("expected layer names (strings)")
    return tuple(tuple(b) for b in v)


def _decoder(v):
    from imseg.models.registry import canonical_name, decoder_names

    name = canonical_name(_string()(v))
    if name is None:
        names = decoder_names()
        raise ValueError(f"expected one of {', '.join(names)}{did_you_mean(v, names)}")
    return name


def _run_name(v):
    _string()(v)
    if v in (".", "..") or any(bad in v for bad in ("/", "\\", "..", "\0")):
        raise ValueError("expected a plain folder name without '/', '\\' or '..'")
    return v


def _momentum(v):
    if v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
        return v
    raise ValueError('expected "auto" or a number in [0, 1)')


def _auto_or_bool(v):
    if v == "auto" or isinstance(v, bool):
        return v
    raise ValueError('expected "auto", true or false')


def _field(default, check, doc):
    if isinstance(default, dict):
        return field(default_factory=lambda: _frozen(default), metadata={"check": check, "doc": doc})
    return field(default=default, metadata={"check": check, "doc": doc})


def _section(cls, doc):
    return field(default_factory=cls, metadata={"doc": doc, "section": cls})


def _section_type(f):
    """The dataclass of a config section field, or None for a plain key."""
    return f.metadata.get("section")


REQUIRED = object()


@dataclass(frozen=True)
class RCUConfig:
    num_convs: int = _field(2, _int(1), "ReLU -> conv stages in each residual conv unit")
    kernel_size: int = _field(3, _int(1), "kernel size of those convs")


@dataclass(frozen=True)
class MRFConfig:
    upsampling: str = _field("bilinear", _string(UPSAMPLING), "bilinear | transpose (learned Conv2DTranspose)")
    kernel_size: int = _field(3, _int(1), "kernel size of the conv on each input path")


@dataclass(frozen=True)
class CRPConfig:
    num_stages: int = _field(2, _int(1), "max-pool -> conv stages, each added to the running sum")
    pool_size: int = _field(5, _int(1), "max-pool window (stride 1)")
    kernel_size: int = _field(3, _int(1), "kernel size of the conv after each pool")


@dataclass(frozen=True)
class RefineNetConfig:
    reduce_channel_scale: int = _field(4, _int(1), "input path width = channels // scale")
    rcu_kwargs: RCUConfig = _section(RCUConfig, "residual conv unit")
    mrf_kwargs: MRFConfig = _section(MRFConfig, "multi-resolution fusion")
    crp_kwargs: CRPConfig = _section(CRPConfig, "chained residual pooling")


def _jitter(default_range, maximum, doc):
    """A photometric operation's section: how often (probability) and how strong (range)."""
    return dataclass(frozen=True)(
        type(
            "JitterConfig",
            (),
            {
                "__annotations__": {"probability": float, "range": float},
                "probability": _field(0.0, _number(0, 1), "the chance that an image gets it; 0: off"),
                "range": _field(default_range, _number(0, maximum), doc),
            },
        )
    )


def _layer_list(v):
    if v is None:
        return ()
    if not (isinstance(v, list) and all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in v)):
        raise ValueError("expected a list of {name: <layer class>, <argument>: <value>, ...} mappings")
    return _frozen(v)


@dataclass(frozen=True)
class AugmentConfig:
    rotate_range: float = _field(0.0, _number(0, 180), "degrees; rotation uniform in +-range, zero fill")
    flip: bool = _field(False, _bool, "random horizontal and vertical flips")
    rotate90: bool = _field(False, _bool, "random exact quarter turns (square tiles)")
    scale_range: float = _field(0.0, _number(0, 10), "zoom by s, log s uniform in +-log(1 + range)")
    channel_shift_range: float = _field(0.0, _number(0, 255), "pixel units; one shift per image, all channels")
    brightness: Any = _section(_jitter(0.2, 1, "add U(-range, range) x 255"), "random brightness")
    contrast: Any = _section(_jitter(0.2, 1, "scale about the mean by U(1 - range, 1 + range)"), "random contrast")
    saturation: Any = _section(_jitter(0.2, 1, "scale the colour by U(1 - range, 1 + range)"), "random saturation")
    hue: Any = _section(_jitter(0.05, 0.5, "turn the hue by U(-range, range) of a turn"), "random hue")
    gamma: Any = _section(_jitter(0.2, 10, "log gamma uniform in +-log(1 + range)"), "random gamma")
    noise: Any = _section(_jitter(5.0, 255, "noise standard deviation U(0, range), pixel units"), "Gaussian noise")
    blur: Any = _section(_jitter(1.0, 10, "blur sigma U(0, range) pixels"), "Gaussian blur")
    layers: tuple = _field((), _layer_list, "extra photometric Keras layers: [{name: RandomContrast, factor: 0.2}]")
    multiplier: int = _field(1, _int(0), "augmented copies added to each training batch; 0: augment it in place")
    seed: int = _field(0, _int(), "seed of the augmentation random stream")

    PHOTOMETRIC = ("brightness", "contrast", "saturation", "hue", "gamma", "noise", "blur")

    @property
    def enabled(self):
        return (
            self.rotate_range > 0
            or self.flip
            or self.rotate90
            or self.scale_range > 0
            or self.channel_shift_range > 0
            or any(getattr(self, name).probability > 0 for name in self.PHOTOMETRIC)
            or bool(self.layers)
        )


@dataclass(frozen=True)
class TensorBoardConfig:
    images_every: int = _field(1, _int(0), "write validation predictions as images every N epochs; 0: never")
    num_images: int = _field(8, _int(1), "validation tiles shown, spread over the split, the same every epoch")


@dataclass(frozen=True)
class LRScheduleConfig:
    name: str = _field("constant", _string(SCHEDULES), "constant | cosine | poly | step, over all training steps")
    warmup_epochs: float = _field(0.0, _number(0), "linear warm-up from 0 over this many epochs (fractions allowed)")
    warmup_steps: int = _field(0, _int(0), "or over this many steps (not both)")
    final_fraction: float = _field(0.0, _number(0, 1), "cosine/poly: the last step's rate as a fraction of the peak")
    power: float = _field(0.9, _number(0), "poly: exponent of (1 - progress)")
    milestones: tuple = _field((), _epochs_list, "step: epochs after which the rate is multiplied by gamma")
    gamma: float = _field(0.1, _positive_fraction, "step: the factor at each milestone, in (0, 1]")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: Any = _field(None, _optional(_int(1)), "stop after this many epochs without improvement; null: off")
    min_delta: float = _field(0.0, _number(0), "an improvement must exceed this")


@dataclass(frozen=True)
class Config:
    name: str = _field(REQUIRED, _run_name, "run name: the folder out/<name>/")
    backbone: str = _field(
        REQUIRED, _string(), "keras.applications constructor (case-insensitive), or keras_hub:<preset or folder>"
    )
    type: str = _field("RefineNet", _decoder, "the decoder: RefineNet | RefineNetCascade | LightWeightRefineNet | FPN")
    refine_net_blocks: Any = _field(
        None,
        _optional(_blocks),
        "RefineNet: blocks of backbone layer names (or pyramid levels P2-P5), low resolution first; "
        "null: [[P5, P4], [P3, P2]]",
    )
    decoder_kwargs: dict = _field({}, _mapping, "options of a decoder other than RefineNet (README, 'Decoders')")
    backbone_kwargs: dict = _field({}, _mapping, "passed to the backbone constructor")
    pretrained: bool = _field(False, _bool, "true: backbone weights from backbone_kwargs.weights (imagenet)")
    backbone_trainable: bool = _field(True, _bool, "false freezes the backbone")
    bn_momentum: Any = _field(
        "auto", _momentum, 'backbone BatchNorm momentum; "auto": 0.9 when not pretrained, else the backbone\'s own'
    )
    zero_init_residual: Any = _field(
        "auto",
        _auto_or_bool,
        'start each backbone residual block as the identity (last BatchNorm scale 0); "auto": when not pretrained',
    )
    input_shape: tuple = _field((224, 224, 3), _input_shape, "[height, width, bands]; other sizes are resized")
    bands: Any = _field(None, _band_list, "image bands to use, counted from 1, in order; null: all of the tiles'")
    normalization: Any = _field(
        "imagenet",
        _normalization,
        "imagenet: the backbone's own (3-band 8-bit RGB) | auto: per-band mean and std of the training split | "
        "{mean: [...], std: [...]}",
    )
    rgb_bands: tuple = _field(
        (1, 2, 3), _band_list, "pretrained with other than 3 bands: the bands the RGB weights go to"
    )
    classes: tuple = _field((), _string_list, "classes to train on; empty: all of classes.json")
    task: str = _field(
        "multilabel",
        _string(TASKS),
        "multilabel: a sigmoid per class (classes may overlap) | multiclass: one softmax (classes exclude each other)",
    )
    background: bool = _field(False, _bool, "multiclass: add a class 'background' for valid pixels with no label")
    refine_net_kwargs: RefineNetConfig = _section(RefineNetConfig, "RefineNet (type RefineNet only) block options")
    augment: AugmentConfig = _section(AugmentConfig, "training augmentation; {} for none")
    epochs: int = _field(100, _int(1), "training epochs")
    batch_size: int = _field(16, _int(1), "global batch size (split across GPUs)")
    loss: Any = _field("BinaryCrossentropy", _loss, "loss name, or a list of {name, weight, arguments} summed")
    loss_kwargs: dict = _field({"from_logits": True}, _mapping, "arguments of a loss given by name")
    optimizer: str = _field("Adam", _string(), "Keras optimizer name")
    optimizer_kwargs: dict = _field({"learning_rate": 1e-4}, _mapping, "optimizer arguments; learning_rate is the peak")
    lr_schedule: LRScheduleConfig = _section(LRScheduleConfig, "learning-rate schedule")
    gradient_clip_norm: Any = _field(None, _optional(_number(1e-12)), "clip the global gradient norm; null: off")
    ema: Any = _field(
        None,
        _optional(_open_unit),
        "decay of a moving average of the weights used for validation and best.keras; null: off",
    )
    early_stopping: EarlyStoppingConfig = _section(EarlyStoppingConfig, "stop when the monitored score stalls")
    tensorboard: TensorBoardConfig = _section(TensorBoardConfig, "what TensorBoard shows beyond the scalars")
    benchmark_class: Any = _field(None, _optional_string, "class whose val IoU picks the best model; null: mean")
    threshold: float = _field(0.0, _number(), "a pixel is positive for a class when its logit > threshold")
    mixed_precision: str = _field("auto", _string(MIXED_PRECISION), "auto | none | mixed_bfloat16 | mixed_float16")
    jit_compile: Any = _field("auto", _auto_or_bool, 'XLA: "auto" (on for one GPU, off otherwise) | true | false')
    seed: int = _field(0, _int(), "seed for weight init and shuffling")

    @property
    def monitor(self):
        """Name of the validation log entry that picks the best checkpoint."""
        from imseg.metrics import metric_key

        return "val_" + (metric_key("iou", self.benchmark_class) if self.benchmark_class else "mean_iou")

    def to_dict(self):
        """The config as plain JSON data (dicts and lists), every key present."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes):
        """A new config with top-level keys changed, validated like a file (a ConfigError names the key)."""
        data = self.to_dict()
        for key, value in changes.items():
            data[key] = _plain(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
        return config_from_dict(data, "Config.replace")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls, data, prefix, source, overridden=frozenset()):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = f"key '{prefix.rstrip('.')}'" if prefix else "top level"
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = "--set" if _from_set(prefix + key, overridden) else source
            raise ConfigError(
                f"{where}: unknown key '{prefix}{key}'{did_you_mean(key, fields)}; allowed: {', '.join(sorted(fields))}"
            )
    values = {}
    for name, f in fields.items():
        key = prefix + name
        if _section_type(f):
            values[name] = _build(_section_type(f), data.get(name), key + ".", source, overridden)
        elif name in data:
            try:
                values[name] = f.metadata["check"](data[name])
            except ConfigError:
                raise
            except ValueError as e:
                where = f"--set {key}" if _from_set(key, overridden) else f"{source}: key '{key}'"
                raise ConfigError(f"{where}: {e}, got {json.dumps(data[name])}") from None
        elif f.default is REQUIRED:
            raise ConfigError(f"{source}: missing required key '{key}' ({f.metadata['doc']})")
    return cls(**values)


def _from_set(key, overridden):
    """Whether the dotted `key` came from a --set (itself, or inside a value a --set gave)."""
    return any(key == o or key.startswith(o + ".") for o in overridden)


def parse_file(path):
    """Read a JSON or YAML file into Python data; syntax errors name line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    if str(path).lower().endswith((".yaml", ".yml")):
        try:
            return _load_yaml(text, path)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(f"{path}: invalid YAML: {where}{getattr(e, 'problem', None) or e}") from None
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _unique(pairs, path))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None


def _unique(pairs, path):
    """A JSON object's pairs as a dict; a key given twice is an error (json would keep the last silently)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"{path}: key '{key}' is given twice (the last would silently win); keep one")
        seen[key] = value
    return seen


class _YamlLoader(yaml.SafeLoader):
    """YAML as people write it: `1e-4` is a number (PyYAML's YAML 1.1 rules read it as a string), and a key
    given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"{self.name}: key '{key}' is given twice, on lines {lines[key]} and {line} "
                                  "(the last would silently win); keep one")  # fmt: skip
            lines[key] = line
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|"
        r"^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$|"
        r"^[-+]?[0-9][0-9_]*\.[0-9_]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _load_yaml(text, name):
    loader = _YamlLoader(text)
    loader.name = os.fspath(name)  # what a duplicate key's message names
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_value(text):
    """One value in YAML syntax, as `--set` and config files read it."""
    return _load_yaml(text, "--set")


def apply_overrides(data, overrides):
    """Apply `key.sub=value` strings (values in YAML syntax) to raw config data."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set epochs=1")
        try:
            value = yaml_value(raw)
        except yaml.YAMLError:
            value = raw
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: "str | os.PathLike", overrides: "Sequence[str]" = ()) -> Config:
    """Load, override and validate a config file.

    A run's own `config.json` is a config too: its `resolved` record (what imseg chose for the
    machine) is left out.

    Args:
        path: a `.json`, `.yaml` or `.yml` file.
        overrides: `key.sub=value` strings (values in YAML syntax), applied in order, as `--set` takes them.

    Returns:
        The frozen, validated `Config` with every default filled in.

    Raises:
        ConfigError: naming the file (or the `--set`) and the dotted key, with the allowed values.
    """
    data = parse_file(path)
    source = os.fspath(path)
    if isinstance(data, dict) and isinstance(data.get("resolved"), dict):
        data = {k: v for k, v in data.items() if k != "resolved"}
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: top level: expected a mapping")
        data = apply_overrides(data, overrides)
    return config_from_dict(data, source, {item.partition("=")[0] for item in overrides})


def config_from_dict(data, source="config", overridden=frozenset()):
    config = _build(Config, data, "", source, frozenset(overridden))
    _check_combinations(config, source, frozenset(overridden))
    return config


def _check_combinations(config, source, overridden):
    """Keys that are valid alone but not together."""

    def where(key):
        return f"--set {key}" if key in overridden else f"{source}: key '{key}'"

    if config.background and config.task != "multiclass":
        raise ConfigError(
            f"{where('background')}: true needs task: multiclass (multilabel learns the absence of every class already)"
        )
    bands = config.input_shape[2]
    if config.bands is not None and len(config.bands) != bands:
        raise ConfigError(f"{where('bands')}: {len(config.bands)} bands listed, but input_shape has {bands}")
    if config.normalization == "imagenet" and bands != 3:
        raise ConfigError(
            f"{where('normalization')}: imagenet is the backbone's normalisation of 3-band RGB, but "
            f"input_shape has {bands} bands; use auto (from the training split) or {{mean, std}}"
        )
    if isinstance(config.normalization, dict) and len(config.normalization["mean"]) != bands:
        raise ConfigError(f"{where('normalization')}: {len(config.normalization['mean'])} means and stds, but "
                          f"input_shape has {bands} bands")  # fmt: skip
    if len(config.rgb_bands) != 3 or (config.pretrained and bands != 3 and max(config.rgb_bands) > bands):
        raise ConfigError(
            f"{where('rgb_bands')}: expected the 3 input bands (of {bands}) that are red, green and "
            "blue, counted from 1"
        )
    if config.augment.rotate90 and config.input_shape[0] != config.input_shape[1]:
        raise ConfigError(f"{where('augment.rotate90')}: quarter turns need square tiles, but input_shape is "
                          f"{config.input_shape[0]}x{config.input_shape[1]}")  # fmt: skip
    if config.lr_schedule.warmup_epochs and config.lr_schedule.warmup_steps:
        raise ConfigError(f"{where('lr_schedule.warmup_steps')}: give warmup_epochs or warmup_steps, not both")
    if not isinstance(config.loss, str) and config.loss_kwargs != {"from_logits": True} and config.loss_kwargs:
        raise ConfigError(
            f"{where('loss_kwargs')}: only for a loss given by name; with a list of losses, give "
            "each one's arguments in its item"
        )


def describe(cls=Config, prefix=""):
    """(key, default, doc) rows of every config key, for the README and `--help`."""
    rows = []
    for f in dataclasses.fields(cls):
        if _section_type(f):
            rows.extend(describe(_section_type(f), prefix + f.name + "."))
        else:
            default = (
                "required"
                if f.default is REQUIRED
                else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            )
            rows.append((prefix + f.name, default, f.metadata["doc"]))
    return rows
