"""RefineNet building blocks (Lin et al., CVPR 2017), as functional sub-graphs of built-in Keras layers, shared by
the decoders of `imseg.models.decoders`.

Each function takes symbolic tensors and returns the block's output, in the style of
`keras.applications`. Built-in layers only: a saved model needs no imseg code to load.
Layer names are derived from `name`, so weights line up between builds.

Initialisation: the last conv of every residual branch (each RCU's last conv, each CRP stage's conv)
and the classification head start at zero, so that a new decoder passes its inputs through unchanged
and the first logits are the head's bias alone (Goyal et al. 2017, "zero-init residual"; Fixup). The
decoder has no normalisation, and with default initialisation its activations grew about twentyfold
from the backbone features to the head, so that a from-scratch model started with logits around -50
and spent its first epoch unlearning them (docs/results.md, the roads A/B).
"""

from keras import layers


class ArgumentError(ValueError):
    """A block argument that cannot work; `argument` names it (callers may translate it to their own terms)."""

    def __init__(self, argument, message):
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


def residual_conv_unit(x, filters, num_convs=2, kernel_size=3, name="rcu"):
    """RCU: `num_convs` x (ReLU -> conv) plus the input (through a 1x1 conv when the width changes)."""
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, name=f"{name}_shortcut")(x)
    y = x
    for i in range(1, num_convs + 1):
        y = layers.ReLU(name=f"{name}_relu{i}")(y)
        init = "zeros" if i == num_convs else "glorot_uniform"  # the branch starts at zero: the unit is the identity
        y = layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer=init, name=f"{name}_conv{i}")(y)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def multi_resolution_fusion(inputs, filters, upsampling="bilinear", kernel_size=3, name="mrf"):
    """MRF: a conv of each input to `filters`, upsampled to the largest input, summed.

    A single input passes through unchanged, as in the paper.
    """
    if len(inputs) == 1:
        return inputs[0]
    height, width = max((tuple(x.shape[1:3]) for x in inputs), key=lambda hw: hw[0] * hw[1])
    paths = []
    for i, x in enumerate(inputs, start=1):
        y = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv{i}")(x)
        if tuple(y.shape[1:3]) != (height, width):
            y = _upsample(y, height, width, upsampling, f"{name}_up{i}")
        paths.append(y)
    return layers.Add(name=f"{name}_sum")(paths)


def resize_like(x, reference, interpolation="bilinear", name="resize"):
    """`x` resized to the height and width of `reference` (unchanged when they agree already)."""
    height, width = reference.shape[1:3]
    if tuple(x.shape[1:3]) == (height, width):
        return x
    return layers.Resizing(height, width, interpolation=interpolation, name=name)(x)


def _upsample(x, height, width, mode, name):
    if mode == "bilinear":
        return layers.Resizing(height, width, interpolation="bilinear", name=name)(x)
    h, w = x.shape[1:3]
    if height % h or width % w or height // h != width // w:
        raise ArgumentError(
            "upsampling",
            f"transpose needs an integer scale between fused inputs, but {h}x{w} -> {height}x{width} "
            'is not; use "bilinear" or another input size',
        )
    factor = height // h
    return layers.Conv2DTranspose(x.shape[-1], 2 * factor, strides=factor, padding="same", name=name)(x)


def chained_residual_pooling(x, filters, num_stages=2, pool_size=5, kernel_size=3, name="crp"):
    """CRP: ReLU, then a chain of (max-pool, stride 1 -> conv) stages, each added to the running sum."""
    x = layers.ReLU(name=f"{name}_relu")(x)
    total = path = x
    for i in range(1, num_stages + 1):
        path = layers.MaxPooling2D(pool_size, strides=1, padding="same", name=f"{name}_pool{i}")(path)
        path = layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer="zeros", name=f"{name}_conv{i}")(
            path
        )
        total = layers.Add(name=f"{name}_add{i}")([total, path])
    return total


def refine_block(inputs, reduce_channel_scale=4, rcu_kwargs=None, mrf_kwargs=None, crp_kwargs=None, name="refine"):
    """One RefineNet block: RCU per input -> MRF -> CRP -> output RCU.

    Input path i is `channels_i // reduce_channel_scale` wide; the block output is
    `min(channels) // reduce_channel_scale` wide (the AIR ImSeg rule).
    """
    rcu_kwargs, mrf_kwargs, crp_kwargs = rcu_kwargs or {}, mrf_kwargs or {}, crp_kwargs or {}
    channels = [x.shape[-1] for x in inputs]
    width = min(channels) // reduce_channel_scale
    if width < 1:
        raise ArgumentError(
            "reduce_channel_scale",
            f"{reduce_channel_scale} leaves block '{name}' with no channels (its narrowest input has {min(channels)})",
        )
    paths = [
        residual_conv_unit(x, c // reduce_channel_scale, name=f"{name}_rcu{i}", **rcu_kwargs)
        for i, (x, c) in enumerate(zip(inputs, channels), start=1)
    ]
    y = multi_resolution_fusion(paths, width, name=f"{name}_mrf", **mrf_kwargs)
    y = chained_residual_pooling(y, width, name=f"{name}_crp", **crp_kwargs)
    return residual_conv_unit(y, width, name=f"{name}_out", **rcu_kwargs)
