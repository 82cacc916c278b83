"""The network as Keras layers alone: normalisation -> backbone feature maps -> decoder -> head at input size.

No TensorFlow here (and none in the backbones, decoders and blocks it uses), so the same network can be built
and measured on any Keras backend (benchmarks/gpu_jax.py runs it on JAX); `imseg.models.segmenter` wraps it
with training.
"""

import keras
from keras import layers

from imseg.models.backbones import preprocess_weights
from imseg.models.registry import get_decoder


def segmentation_graph(backbone, feature_keys, num_classes, decoder="RefineNet", decoder_kwargs=None,
                       normalization="none", head_bias=None):  # fmt: skip
    """(image input, float32 logits) of the network; see `imseg.models.segmenter.Segmenter` for the arguments.

    The input normalisation is a frozen 1x1 conv (`preprocess`, float32); the head a 1x1 conv whose kernel starts
    at zero, so that the first logits are its bias (`head_bias`, the class prior, or zeros), upsampled bilinearly
    to the input size.
    """
    bands = backbone.input_shape[-1]
    kernel, bias = preprocess_weights(normalization, bands)
    image = keras.Input(shape=tuple(backbone.input_shape[1:]), name="image")
    x = layers.Conv2D(bands, 1, trainable=False, dtype="float32", name="preprocess",
                      kernel_initializer=keras.initializers.Constant(kernel),
                      bias_initializer=keras.initializers.Constant(bias))(image)  # fmt: skip
    maps = backbone(x)
    features = dict(zip(feature_keys, maps if isinstance(maps, (list, tuple)) else [maps]))
    y = get_decoder(decoder)(features, **(decoder_kwargs or {}))
    prior = keras.initializers.Constant(head_bias) if head_bias else "zeros"
    y = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", bias_initializer=prior, name="head")(y)
    y = layers.Resizing(*image.shape[1:3], interpolation="bilinear", name="head_upsample")(y)
    return image, layers.Activation("linear", dtype="float32", name="logits")(y)
