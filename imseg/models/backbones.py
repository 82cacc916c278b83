"""Backbones: `keras.applications` encoders (and keras-hub ones) with their feature pyramid and input normalisation.

A backbone here is a functional Keras model without top. `pyramid` finds its feature maps at strides 4, 8, 16 and
32 (keras-hub's `P2`-`P5`) by their spatial size, so any family works without a table of layer names;
`feature_extractor` cuts it into a model that returns chosen maps. The normalisation each family expects (its
`preprocess_input`) is rebuilt as the weights of a 1x1 conv, so that a saved model holds no imseg code and loads
anywhere Keras does. Nothing here knows a config: `imseg.build` translates.
"""

import inspect
import math
import re

import keras
import numpy as np

from imseg.blocks import ArgumentError

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
        if inspect.isfunction(fn) and family(fn) in PREPROCESS_MODES
    }


def family(constructor):
    """The keras.applications module of a constructor, e.g. "resnet_v2" for ResNet50V2."""
    return constructor.__module__.rsplit(".", 1)[-1]


def preprocess_mode(name):
    """The `preprocess_input` mode of the keras.applications constructor `name` (any case)."""
    return PREPROCESS_MODES[family(constructors()[name.lower()])]


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


STRIDES = {"P2": 4, "P3": 8, "P4": 16, "P5": 32}
# Families whose last map at a stride is a narrow layer inside a block: the map they hand on is named so.
TAPS = {"resnet_v2": r"_preact_relu$|^post_relu$", "densenet": r"^pool\d_relu$|^relu$"}


def feature_maps(backbone):
    """[(name, stride, (h, w, c))] of every operation of the backbone with a spatial output, in graph order.

    The stride is the input's height over the map's, rounded to a power of two; paddings are left out (the
    map they pad is the same)."""
    height = backbone.input_shape[1]
    maps = []
    for op in backbone.operations:
        if isinstance(op, (keras.layers.InputLayer, keras.layers.ZeroPadding2D)):
            continue
        try:
            shape = tuple(op.output.shape)
        except (AttributeError, ValueError):  # several outputs or several calls: not one map
            continue
        if len(shape) == 4 and shape[1]:
            maps.append((op.name, 2 ** round(math.log2(height / shape[1])), shape[1:]))
    return maps


def pyramid(backbone, kind=None):
    """{"P2": name, ..., "P5": name}: the map that ends each stride 4, 8, 16, 32 of the backbone (the last at
    that stride, or for the keras.applications families (`kind`) of `TAPS` the last one so named). An
    ArgumentError lists the maps found when a stride is missing."""
    maps = feature_maps(backbone)
    found = {}
    for level, stride in STRIDES.items():
        at = [name for name, s, _ in maps if s == stride]
        tapped = [name for name in at if kind in TAPS and re.search(TAPS[kind], name)]
        if not at:
            raise ArgumentError(
                "backbone",
                f"{backbone.name} has no feature map at stride {stride} ({level}) for a "
                f"{backbone.input_shape[1]}x{backbone.input_shape[2]} input; the maps that end each stride: "
                f"{describe_candidates(backbone)}",
            )
        found[level] = (tapped or at)[-1]
    return found


def feature_extractor(backbone, names):
    """The backbone cut into a model that returns the maps `names` (in that order), and no layer after the
    deepest of them (later layers would get no gradients). An ArgumentError lists the maps when a name is
    unknown."""
    ops = {op.name: op for op in backbone.operations}
    for name in names:
        if name not in ops:
            raise ArgumentError(
                "feature_layers",
                f"{backbone.name} has no layer '{name}'; layers that end each resolution: "
                f"{describe_candidates(backbone)}",
            )
    extractor = keras.Model(backbone.inputs, [ops[name].output for name in names], name=backbone.name)
    extractor.trainable = backbone.trainable
    return extractor


def feature_candidates(backbone):
    """Layer names that end each spatial resolution of the backbone, with their output shapes.

    These are the natural RefineNet inputs (for ResNets, the `convN_blockM_out` layers).
    """
    last = {}
    for name, _, shape in feature_maps(backbone):
        last[shape[:2]] = (name, shape)
    return sorted(last.values(), key=lambda item: -item[1][0])


def describe_candidates(backbone):
    return ", ".join(f"{name} ({h}x{w}x{c})" for name, (h, w, c) in feature_candidates(backbone))


KERAS_HUB = "keras_hub:"  # the prefix of a keras-hub backbone's preset in a config's `backbone`


def keras_hub_backbone(preset, load_weights, input_shape):
    """A keras-hub `Backbone` from a preset (a name, downloaded, or a local preset folder), its pyramid
    {"P2": name, ...} from `pyramid_outputs`, and the normalisation of the preset's image converter
    ({"mean", "std"} per band, or None when the preset has none). Raises ImportError without keras-hub."""
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights, image_shape=tuple(input_shape))
    outputs = getattr(backbone, "pyramid_outputs", None)
    if not outputs:
        raise ArgumentError("backbone", f"keras-hub backbone {type(backbone).__name__} has no pyramid_outputs")
    made_by = {id(op.output): op.name for op in backbone.operations if _single_output(op)}
    levels = {level: made_by[id(tensor)] for level, tensor in outputs.items() if level in STRIDES}
    missing = [level for level in STRIDES if level not in levels]
    if missing:
        raise ArgumentError(
            "backbone", f"keras-hub backbone {type(backbone).__name__} has no pyramid level {', '.join(missing)} "
            f"(it has {', '.join(sorted(outputs))})"
        )  # fmt: skip
    normalization = None
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except (ValueError, FileNotFoundError):
        converter = None
    if converter is not None and converter.scale is not None:
        bands = input_shape[-1]
        scale = np.broadcast_to(np.asarray(converter.scale, np.float64), (bands,))
        offset = np.broadcast_to(np.asarray(converter.offset if converter.offset is not None else 0.0), (bands,))
        normalization = {"mean": (-offset / scale).tolist(), "std": (1.0 / scale).tolist()}
    return backbone, levels, normalization


def _single_output(op):
    try:
        return op.output is not None
    except (AttributeError, ValueError):
        return False
