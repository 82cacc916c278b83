"""Backbones: any `keras.applications` constructor by name, with its own input normalisation.

The normalisation each family expects (its `preprocess_input`) is rebuilt from built-in Keras layers so
that a saved model holds no imseg code and loads anywhere Keras does.
"""

import inspect
import os
import warnings

import keras
import numpy as np

from imseg.errors import ConfigError, did_you_mean

# keras.applications module -> preprocess_input mode. "none": the model normalises inside itself.
PREPROCESS_MODES = {
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "xception": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "convnext": "none",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "mobilenet_v3": "none",
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def constructors():
    """{lower-case name: constructor} of every keras.applications model."""
    return {
        name.lower(): fn
        for name, fn in vars(keras.applications).items()
        if inspect.isfunction(fn) and fn.__module__.rsplit(".", 1)[-1] in PREPROCESS_MODES
    }


def get_constructor(name, source="config"):
    table = constructors()
    fn = table.get(name.lower())
    if fn is None:
        names = sorted(f.__name__ for f in table.values())
        raise ConfigError(
            f"{source}: key 'backbone': unknown backbone '{name}'{did_you_mean(name, names)}; "
            f"choose one of: {', '.join(names)}"
        )
    return fn


def preprocess_mode(name):
    return PREPROCESS_MODES[get_constructor(name).__module__.rsplit(".", 1)[-1]]


def preprocess_weights(mode, channels=3):
    """Kernel (1, 1, C, C) and bias (C,) of the 1x1 conv that normalises the input bands.

    `mode` is a `preprocess_input` mode of keras.applications on 0-255 RGB ("caffe", "tf", "torch", "none"),
    or {"mean": [...], "std": [...]} per band: (x - mean) / std.
    """
    if isinstance(mode, dict):
        mean, std = np.asarray(mode["mean"], np.float64), np.asarray(mode["std"], np.float64)
        kernel, bias = np.diag(1.0 / std), -mean / std
        return kernel.T.reshape(1, 1, channels, channels).astype("float32"), bias.astype("float32")
    if mode == "none":
        return np.eye(channels).reshape(1, 1, channels, channels).astype("float32"), np.zeros(channels, "float32")
    if channels != 3:
        raise ValueError(f"preprocessing {mode!r} is for 3-band RGB input, got {channels} bands")
    if mode == "caffe":  # RGB -> BGR, then subtract the ImageNet mean
        kernel, bias = np.eye(3)[::-1], -np.array(_CAFFE_MEAN_BGR)
    elif mode == "tf":  # [-1, 1]
        kernel, bias = np.eye(3) / 127.5, -np.ones(3)
    elif mode == "torch":  # [0, 1], then standardise per channel
        std = np.array(_TORCH_STD)
        kernel, bias = np.diag(1.0 / (255.0 * std)), -np.array(_TORCH_MEAN) / std
    else:
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    # Conv kernels map input channel i (rows) to output channel o (columns).
    return kernel.T.reshape(1, 1, 3, 3).astype("float32"), bias.astype("float32")


def make_backbone(config, source="config"):
    """Build the backbone named by the config (without top), with or without pretrained weights."""
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
    backbone.trainable = config.backbone_trainable
    momentum = config.bn_momentum
    if momentum == "auto":
        # keras.applications use 0.99-0.999, tuned for fine-tuning; from scratch, such slow running
        # statistics lag the weights for thousands of steps and make validation scores meaningless.
        momentum = None if config.pretrained else 0.9
    if momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(momentum)
    zero = config.zero_init_residual
    if zero is True or (zero == "auto" and not config.pretrained):
        zero_init_residual(backbone)
    return backbone


def transfer_rgb_weights(rgb, target, rgb_bands=(1, 2, 3)):
    """Copy a pretrained RGB backbone's weights into the same architecture built for C bands.

    Every layer is copied as it is, except the first convolution, whose kernel is adapted as
    segmentation_models.pytorch does: the red, green and blue filters go to the bands `rgb_bands` (counted
    from 1), every other band gets the mean of the three, and the whole kernel is scaled by 3 / C so that its
    response keeps its size. Layers whose weights depend on the band count otherwise (a normalisation of the
    input) keep their fresh values. Returns the name of the adapted layer.
    """
    bands = target.input_shape[-1]
    adapted = None
    for source, layer in zip(rgb.layers, target.layers):
        weights, fresh = source.get_weights(), layer.get_weights()
        if [w.shape for w in weights] == [w.shape for w in fresh]:
            layer.set_weights(weights)
        elif adapted is None and fresh and fresh[0].ndim == 4 and weights[0].shape[2] == 3:
            kernel = weights[0]  # (height, width, 3, filters)
            new = np.repeat(kernel.mean(axis=2, keepdims=True), bands, axis=2)
            for colour, band in enumerate(rgb_bands):
                new[:, :, band - 1] = kernel[:, :, colour]
            layer.set_weights([new * (3.0 / bands), *weights[1:]])
            adapted = layer.name
    return adapted


def zero_init_residual(backbone):
    """Start every residual branch of the backbone at zero: the scale (gamma) of the BatchNorm that ends
    the branch, just before its Add, is set to 0 (Goyal et al. 2017), so each block starts as the identity
    and a deep network from scratch trains like a shallow one at first. The branch is the Add input made
    last (keras.applications build the shortcut first). Returns the names of the layers changed.
    """
    made_by = {id(layer.output): (i, layer) for i, layer in enumerate(backbone.layers)}
    changed = []
    for layer in backbone.layers:
        if not isinstance(layer, keras.layers.Add):
            continue
        producers = [made_by.get(id(t)) for t in layer.input]
        if None in producers:
            continue
        _, branch = max(producers, key=lambda p: p[0])
        if isinstance(branch, keras.layers.BatchNormalization) and branch.scale:
            branch.gamma.assign(np.zeros(branch.gamma.shape, branch.gamma.dtype))
            changed.append(branch.name)
    return changed


def _is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _one_line(error, limit=400):
    """A library's (often multi-line) message as one line, cut at `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def feature_candidates(backbone):
    """Layer names that end each spatial resolution of the backbone, with their output shapes.

    These are the natural RefineNet inputs (for ResNets, the `convN_blockM_out` layers).
    """
    last = {}
    for layer in backbone.layers:
        shape = getattr(layer, "output", None) is not None and tuple(layer.output.shape)
        if not shape or len(shape) != 4 or isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.InputLayer)):
            continue
        last[shape[1:3]] = (layer.name, shape[1:])
    return sorted(last.values(), key=lambda item: -item[1][0])


def describe_candidates(backbone):
    return ", ".join(f"{name} ({h}x{w}x{c})" for name, (h, w, c) in feature_candidates(backbone))
