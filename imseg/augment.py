"""Training augmentation that moves image and mask together, written with ops XLA compiles.

Keras's RandomRotation declares `supports_jit=False`, which silently turns XLA off for a whole model;
this layer samples rotated images on a computed grid with gathers instead. Randomness is stateless:
every draw derives from (seed, step), so a run is reproducible and a resumed run continues the stream.
"""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="imseg")
class SegmentationAugment(keras.layers.Layer):
    """Random rotation (zero fill), flips and channel shift, applied identically to images, masks and valid masks.

    `call(images, masks, valid, step)` takes float 0-255 images `(B, H, W, 3)`, 0/1 masks `(B, H, W, K)`,
    0/1 valid masks `(B, H, W)` and an integer step, and returns the three, each the originals followed by
    `multiplier` augmented copies (`(B * (1 + multiplier), ...)`), as the AIR ImSeg trainer built its
    batches, or with `multiplier=0` the batch itself augmented (`(B, ...)`, no extra compute). Images are
    sampled bilinearly, masks and valid masks by nearest neighbour, so they stay 0/1; the area a rotation
    brings in from outside the tile is not valid.
    """

    def __init__(self, rotate_range=0.0, flip=False, channel_shift_range=0.0, multiplier=1, seed=0, **kwargs):
        # Augment in float32 even under mixed precision: bf16 cannot hold 0-255 pixels exactly.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rotate_range = float(rotate_range)
        self.flip = bool(flip)
        self.channel_shift_range = float(channel_shift_range)
        self.multiplier = int(multiplier)
        self.seed = int(seed)

    def call(self, images, masks, valid, step):
        images = tf.cast(images, "float32")
        masks = tf.cast(masks, "float32")
        valid = tf.cast(valid, "float32")
        if self.multiplier == 0:
            return self.augment(images, masks, valid, step)
        copies = [tf.tile(t, [self.multiplier] + [1] * (len(t.shape) - 1)) for t in (images, masks, valid)]
        augmented = self.augment(*copies, step)
        return tuple(tf.concat([t, a], 0) for t, a in zip((images, masks, valid), augmented))

    def augment(self, images, masks, valid, step):
        """Augment every sample of the batch once, with draws from (seed, step)."""
        # The valid mask travels as one more mask channel, so it moves exactly as the masks do.
        masks = tf.concat([masks, valid[..., None]], axis=-1)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        angle_seed, flip_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3, alg="philox"))
        batch = tf.shape(images)[0]
        if self.channel_shift_range > 0:
            r = self.channel_shift_range
            shift = tf.random.stateless_uniform([batch, 1, 1, 1], shift_seed, -r, r, alg="philox")
            images = tf.clip_by_value(images + shift, 0.0, 255.0)
        if self.flip:
            horizontal, vertical = tf.unstack(
                tf.random.stateless_uniform([2, batch, 1, 1, 1], flip_seed, alg="philox") < 0.5
            )
            images, masks = (tf.where(horizontal, tf.reverse(t, [2]), t) for t in (images, masks))
            images, masks = (tf.where(vertical, tf.reverse(t, [1]), t) for t in (images, masks))
        if self.rotate_range > 0:
            r = self.rotate_range * math.pi / 180.0
            angles = tf.random.stateless_uniform([batch], angle_seed, -r, r, alg="philox")
            images, masks = rotate(images, masks, angles)
        return images, masks[..., :-1], masks[..., -1]

    def compute_output_shape(self, images_shape, masks_shape, valid_shape, step_shape=None):
        n = None if images_shape[0] is None else images_shape[0] * (1 + self.multiplier)
        return (n, *images_shape[1:]), (n, *masks_shape[1:]), (n, *valid_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            rotate_range=self.rotate_range,
            flip=self.flip,
            channel_shift_range=self.channel_shift_range,
            multiplier=self.multiplier,
            seed=self.seed,
        )
        return config


def rotate(images, masks, angles):
    """Rotate each image (bilinear) and mask (nearest) by its angle (radians) about the centre; zero fill."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    h, w = tf.cast(height, "float32"), tf.cast(width, "float32")
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    cos = tf.cos(angles)[:, None, None]
    sin = tf.sin(angles)[:, None, None]
    # Inverse mapping: where in the source does each output pixel come from.
    src_y = cy + cos * (ys - cy) - sin * (xs - cx)
    src_x = cx + sin * (ys - cy) + cos * (xs - cx)
    return _bilinear(images, src_y, src_x, height, width), _nearest(masks, src_y, src_x, height, width)


def _gather(values, y, x, height, width):
    """values[b, y, x, :] for integer grids y, x of shape (B, H, W); zero where outside the image."""
    batch, channels = tf.shape(values)[0], tf.shape(values)[3]
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    index = tf.clip_by_value(y, 0, height - 1) * width + tf.clip_by_value(x, 0, width - 1)
    flat = tf.reshape(values, [batch, -1, channels])
    picked = tf.gather(flat, tf.reshape(index, [batch, -1]), batch_dims=1)
    picked = tf.reshape(picked, [batch, tf.shape(y)[1], tf.shape(y)[2], channels])
    return picked * tf.cast(inside, values.dtype)[..., None]


def _bilinear(values, src_y, src_x, height, width):
    y0, x0 = tf.floor(src_y), tf.floor(src_x)
    wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
    y0, x0 = tf.cast(y0, "int32"), tf.cast(x0, "int32")
    top = _gather(values, y0, x0, height, width) * (1 - wx) + _gather(values, y0, x0 + 1, height, width) * wx
    bottom = _gather(values, y0 + 1, x0, height, width) * (1 - wx) + _gather(values, y0 + 1, x0 + 1, height, width) * wx
    return top * (1 - wy) + bottom * wy


def _nearest(values, src_y, src_x, height, width):
    y = tf.cast(tf.floor(src_y + 0.5), "int32")
    x = tf.cast(tf.floor(src_x + 0.5), "int32")
    return _gather(values, y, x, height, width)
