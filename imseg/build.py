"""Config + what the data says -> a compiled Segmenter under a distribution strategy.

The data is read first (`imseg.dataset.DataSummary`); the model is then built with everything it needs as
constructor arguments — normalisation, value range, head prior — and compiled with the recipe of
`imseg.recipe`. Nothing is set on the model afterwards. Errors name the config file and key.
"""

import contextlib
import inspect
import os
import warnings

import keras
import numpy as np

from imseg.blocks import ArgumentError
from imseg.config import RefineNetConfig
from imseg.distribute import has_gpu, make_strategy, resolve_jit, resolve_precision
from imseg.errors import ConfigError, did_you_mean
from imseg.metrics import SegmentationMetrics
from imseg.models.backbones import (
    KERAS_HUB,
    STRIDES,
    constructors,
    family,
    feature_extractor,
    keras_hub_backbone,
    preprocess_mode,
    pyramid,
    transfer_rgb_weights,
    zero_init_residual,
)
from imseg.models.decoders.refinenet import AIR_BLOCKS
from imseg.models.registry import canonical_name, decoder_names, get_decoder
from imseg.models.segmenter import Segmenter
from imseg.recipe import augment_kwargs, make_loss, make_optimizer

KERAS_HUB_INSTALL = "pip install 'imseg[keras-hub]' && pip install --no-deps keras-hub==0.32.0"


def get_constructor(name, source="config"):
    """The keras.applications constructor `name` (any case); a ConfigError lists the known ones."""
    table = constructors()
    fn = table.get(name.lower())
    if fn is None:
        names = sorted(f.__name__ for f in table.values())
        raise ConfigError(
            f"{source}: key 'backbone': unknown backbone '{name}'{did_you_mean(name, names)}; "
            f"choose one of: {', '.join(names)} (or keras_hub:<preset>)"
        )
    return fn


def make_backbone(config, source="config", synchronized=False):
    """The config's backbone (without top), with or without pretrained weights, ready to train: BatchNorm
    momentum and zero-initialised residual branches as the config says, BatchNorm synchronized across replicas
    when `synchronized`. Returns (backbone, its pyramid {"P2": name, ...}, the normalisation its weights expect)."""
    if config.backbone.startswith(KERAS_HUB):
        backbone, levels, normalization = _keras_hub(config, source)
    else:
        backbone = _keras_application(config, source)
        fn = get_constructor(config.backbone, source)
        try:
            levels = pyramid(backbone, family(fn))
        except ArgumentError as e:
            levels = e  # only an error if a decoder asks for the pyramid
        normalization = preprocess_mode(config.backbone)
    backbone.trainable = config.backbone_trainable
    momentum = config.bn_momentum
    if momentum == "auto":
        # keras.applications use 0.99-0.999, tuned for fine-tuning; from scratch, such slow running
        # statistics lag the weights for thousands of steps and make validation scores meaningless.
        momentum = None if config.pretrained else 0.9
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if momentum is not None:
                layer.momentum = float(momentum)
            # Batch statistics over the global batch: replicas keep identical moving averages, which Keras
            # would otherwise let drift apart, one copy per device.
            layer.synchronized = synchronized
    zero = config.zero_init_residual
    if zero is True or (zero == "auto" and not config.pretrained):
        zero_init_residual(backbone)
    return backbone, levels, normalization


def _keras_application(config, source):
    fn = get_constructor(config.backbone, source)
    kwargs = dict(config.backbone_kwargs)
    if kwargs.pop("include_top", False):
        raise ConfigError(f"{source}: key 'backbone_kwargs.include_top': must be false (segmentation needs no top)")
    for key in ("input_shape", "input_tensor"):
        if key in kwargs:
            raise ConfigError(f"{source}: key 'backbone_kwargs.{key}': not allowed; set the top-level 'input_shape'")
    weights = kwargs.pop("weights", "imagenet") if config.pretrained else None
    kwargs.pop("weights", None)
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise ConfigError(
            f"{source}: key 'backbone_kwargs.weights': file not found: {weights} "
            '(give "imagenet" or the path of a local .h5/.weights.h5 file)'
        )
    if weights not in (None, "imagenet") and not _is_hdf5(weights):
        raise ConfigError(
            f"{source}: key 'backbone_kwargs.weights': {weights} is not an HDF5 weights file "
            "(.h5 / .weights.h5, as keras.applications download them)"
        )
    accepted = set(inspect.signature(fn).parameters)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{source}: key 'backbone_kwargs.{key}': {fn.__name__} has no such argument"
                f"{did_you_mean(key, accepted)}; it accepts: {', '.join(sorted(accepted))}"
            )
    shape = tuple(config.input_shape)
    bands = shape[2]
    try:
        with warnings.catch_warnings(record=True) as said:  # Keras warns per layer before a failed load fails
            warnings.simplefilter("always")
            if weights is not None and bands != 3:  # RGB weights, adapted to the bands (see transfer_rgb_weights)
                rgb = fn(include_top=False, weights=weights, input_shape=(*shape[:2], 3), **kwargs)
                backbone = fn(include_top=False, weights=None, input_shape=shape, **kwargs)
                transfer_rgb_weights(rgb, backbone, config.rgb_bands)
            else:
                backbone = fn(include_top=False, weights=weights, input_shape=shape, **kwargs)
    except ValueError as e:
        if weights not in (None, "imagenet"):
            raise ConfigError(
                f"{source}: key 'backbone_kwargs.weights': {weights} does not fit {fn.__name__} with "
                f"this config: {_one_line(e, 200)}"
            ) from None
        raise ConfigError(f"{source}: {fn.__name__} cannot be built with this config: {_one_line(e)}") from None
    except Exception as e:  # keras.utils.get_file raises a bare Exception when it cannot download
        if weights != "imagenet":
            raise
        raise ConfigError(
            f"{source}: cannot download ImageNet weights for {fn.__name__} (no network?): {_one_line(e, 200)}. "
            "Download them on a connected machine (keras caches them in ~/.keras/models/) and set "
            "backbone_kwargs.weights to the local .h5 file, or set pretrained: false"
        ) from None
    for warning in said:  # a backbone that was built: its warnings as Keras gave them
        if bands != 3 and "input channels" in str(warning.message):
            continue  # "usually expects 1 or 3 input channels": multispectral input is meant
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return backbone


def _keras_hub(config, source):
    preset = config.backbone[len(KERAS_HUB) :]
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{source}: key 'backbone': {config.backbone} needs keras-hub, which is not installed: "
            f"{KERAS_HUB_INSTALL} (README, 'keras-hub backbones')"
        ) from None
    if config.backbone_kwargs:
        key = next(iter(config.backbone_kwargs))
        raise ConfigError(f"{source}: key 'backbone_kwargs.{key}': keras-hub backbones take their options from the "
                          "preset; leave backbone_kwargs empty")  # fmt: skip
    try:
        return keras_hub_backbone(preset, config.pretrained, config.input_shape)
    except ArgumentError as e:
        raise ConfigError(f"{source}: key 'backbone': {e.message}") from None
    except Exception as e:  # keras-hub raises many kinds for a preset it cannot find, download or read
        raise ConfigError(
            f"{source}: key 'backbone': cannot load the keras-hub preset '{preset}' ({_one_line(e, 200)}); give a "
            "preset name (needs a network) or a local preset folder (saved with backbone.save_to_preset)"
        ) from None


def _is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _one_line(error, limit=400):
    """A library's (often multi-line) message as one line, cut at `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def head_prior(frequencies, task):
    """The head's initial bias from the class frequencies: `log(p / (1 - p))` per class (multilabel), `log(p)`
    (multiclass), so that the first predictions are the class frequencies and the first loss is their entropy."""
    p = np.clip(np.asarray(frequencies, np.float64), 1e-4, 1 - 1e-4)
    return (np.log(p) if task == "multiclass" else np.log(p / (1 - p))).tolist()


def decoder_options(config, source="config"):
    """(decoder name, its keyword arguments) of the config; refine_net_* keys belong to RefineNet only."""
    name = canonical_name(config.type)
    if name is None:
        names = decoder_names()
        raise ConfigError(
            f"{source}: key 'type': unknown decoder '{config.type}'{did_you_mean(config.type, names)}; "
            f"choose one of: {', '.join(names)}"
        )
    if name == "RefineNet":
        if config.decoder_kwargs:
            raise ConfigError(f"{source}: key 'decoder_kwargs': type RefineNet takes its options from "
                              "refine_net_kwargs; move them there")  # fmt: skip
        rn = config.refine_net_kwargs
        return name, {
            "blocks": [list(block) for block in config.refine_net_blocks or AIR_BLOCKS],
            "reduce_channel_scale": rn.reduce_channel_scale,
            "rcu_kwargs": vars(rn.rcu_kwargs),
            "mrf_kwargs": vars(rn.mrf_kwargs),
            "crp_kwargs": vars(rn.crp_kwargs),
        }
    if config.refine_net_blocks:
        raise ConfigError(
            f"{source}: key 'refine_net_blocks': only type RefineNet takes backbone layer names; {name} reads "
            "the backbone's feature pyramid (strides 4 to 32) by itself: remove the key"
        )
    if config.refine_net_kwargs != RefineNetConfig():
        raise ConfigError(f"{source}: key 'refine_net_kwargs': only for type RefineNet; {name} takes its options "
                          "from decoder_kwargs")  # fmt: skip
    decoder = get_decoder(name)
    accepted = [p for p in inspect.signature(decoder).parameters if p != "features"]
    for key in config.decoder_kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{source}: key 'decoder_kwargs.{key}': {name} has no such option{did_you_mean(key, accepted)}; "
                f"it takes: {', '.join(accepted)}"
            )
    return name, dict(config.decoder_kwargs)


# Decoder arguments -> the config keys they come from, for error messages.
_REFINENET_KEYS = {
    "blocks": "refine_net_blocks",
    "feature_layers": "refine_net_blocks",
    "reduce_channel_scale": "refine_net_kwargs.reduce_channel_scale",
    "upsampling": "refine_net_kwargs.mrf_kwargs.upsampling",
}


def build_segmenter(config, class_names: list, data=None, source: str = "config", synchronized: bool = False):
    """The configured Segmenter (not compiled) for `class_names`, built with what `data` (an
    `imseg.dataset.DataSummary` of the training split, or None before any data is read) says: the normalisation
    of `normalization: auto`, the pixels' value range, the class prior of the head."""
    decoder, options = decoder_options(config, source)
    backbone, levels, expected = make_backbone(config, source, synchronized)
    known = {op.name for op in backbone.operations}

    def layer(name, key):
        """A layer of the backbone, or the layer that ends pyramid level `name` (P2-P5)."""
        if name in known or name not in STRIDES:
            return name  # an unknown name: feature_extractor lists the candidates
        if isinstance(levels, ArgumentError):
            raise ConfigError(f"{source}: key '{key}': {levels.message}")
        return levels[name]

    if decoder == "RefineNet":  # AIR blocks of layer names or pyramid levels; the decoder knows them by layer name
        options["blocks"] = [[layer(n, "refine_net_blocks") for n in block] for block in options["blocks"]]
        keys = layer_names = list(dict.fromkeys(n for block in options["blocks"] for n in block))
    else:
        keys, layer_names = list(STRIDES), [layer(level, "backbone") for level in STRIDES]
    normalization = config.normalization
    if normalization == "auto":  # the training split's own statistics (identity until they are known)
        normalization = {"mean": list(data.band_mean), "std": list(data.band_std)} if data else "none"
    elif normalization == "imagenet":
        normalization = expected
        if normalization is None:
            raise ConfigError(f"{source}: key 'normalization': the keras-hub preset of {config.backbone} has no image "
                              "converter to take imagenet normalisation from; use auto or {mean, std}")  # fmt: skip
    try:
        extractor = feature_extractor(backbone, layer_names)
        return Segmenter(
            backbone=extractor,
            feature_keys=keys,
            num_classes=len(class_names),
            decoder=decoder,
            decoder_kwargs=options,
            class_names=class_names,
            task=config.task,
            threshold=config.threshold,
            normalization=normalization,
            value_range=data.value_range if data else (0.0, 255.0),
            head_bias=head_prior(data.class_frequencies, config.task) if data else None,
            augment=augment_kwargs(config, source),
            ema_decay=config.ema,
            name=f"{decoder.lower()}_{backbone.name}",
        )
    except ArgumentError as e:
        key = _REFINENET_KEYS.get(e.argument) if decoder == "RefineNet" else f"decoder_kwargs.{e.argument}"
        raise ConfigError(f"{source}: key '{key or e.argument}': {e.message}") from None


def check_model(config, class_names: list, source: str = "config", steps_per_epoch: "int | None" = None):
    """Raise the ConfigError that building and compiling the model would raise, without data: a run calls this
    before it caches its data, so that a mistake in the model's or the recipe's keys writes nothing."""
    make_loss(config, class_names, source)
    make_optimizer(config, steps_per_epoch, source)
    with _dtype_policy("float32"):
        build_segmenter(config, class_names, source=source)


@contextlib.contextmanager
def _dtype_policy(name):
    """Layers made within take the policy `name` (keras.applications read only the global one); it is then
    restored, so building a model changes nothing for the caller."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(
    config,
    class_names: list,
    strategy=None,
    source: str = "config",
    steps_per_epoch: "int | None" = None,
    data=None,
) -> tuple:
    """Build and compile the configured model under `strategy`.

    Args:
        config: a validated `imseg.Config`.
        class_names: the model's output channels (see `imseg.classes.output_names`).
        strategy: a `tf.distribute` strategy (default: `imseg.distribute.make_strategy()`).
        source: how errors name the config (its file).
        steps_per_epoch: optimizer steps per epoch, needed by a learning-rate schedule.
        data: an `imseg.dataset.DataSummary` of the training split (normalisation, value range, class prior);
            None builds with neutral values (identity normalisation for `auto`, 0-255, a zero head bias).

    Returns:
        (model, details): the compiled `Segmenter`, and {"precision", "jit_compile", "replicas"} chosen for the
        devices. The layers take `config.mixed_precision`; the global Keras dtype policy is left as it was.
    """
    strategy = strategy or make_strategy()
    precision = resolve_precision(config.mixed_precision)
    if config.jit_compile is True and precision == "mixed_bfloat16" and not has_gpu():
        raise ConfigError(
            f"{source}: key 'jit_compile': XLA on the CPU cannot compile mixed_bfloat16 training (it rejects the "
            "mixed-precision gradients); set jit_compile: auto or false, or mixed_precision: none"
        )
    keras.utils.set_random_seed(config.seed)
    with strategy.scope(), _dtype_policy(precision):
        model = build_segmenter(config, class_names, data, source, synchronized=strategy.num_replicas_in_sync > 1)
        loss = make_loss(config, class_names, source)
        optimizer = make_optimizer(config, steps_per_epoch, source)
        jit = resolve_jit(config.jit_compile, strategy)
        blockers = [layer.name for layer in getattr(model.augmenter, "extra_layers", []) if not layer.supports_jit]
        if jit and blockers:  # as Keras does for such layers: the run goes on without XLA, and says so
            jit = False
        model.compile(
            optimizer=optimizer,
            loss=loss,
            # weighted: Keras passes the sample weight (the valid mask) only to weighted metrics
            weighted_metrics=[SegmentationMetrics(class_names, threshold=config.threshold, task=config.task)],
            jit_compile=jit,
        )
    details = {"precision": precision, "jit_compile": jit, "replicas": strategy.num_replicas_in_sync}
    if blockers and config.jit_compile is not False and resolve_jit(config.jit_compile, strategy):
        details["xla_off_because"] = f"augment.layers {', '.join(blockers)} cannot be compiled by XLA"
    return model, details
