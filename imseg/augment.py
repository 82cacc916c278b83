"""Training augmentation that moves image, mask and valid mask together, written with ops XLA compiles.

Geometry (flips, exact quarter turns, rotation and scale in one resampling) moves all three; photometric
changes (brightness, contrast, saturation, hue, gamma, noise, blur, and photometric Keras layers named in
the config) touch the image only. Keras's RandomRotation declares `supports_jit=False`, which silently turns
XLA off for a whole model; this layer samples on a computed grid with gathers instead. Randomness is
stateless: every draw derives from (seed, step), so a run is reproducible and a resumed run continues the
stream (Keras layers named in `layers` keep their own seeded generators).
"""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="imseg")
class SegmentationAugment(keras.layers.Layer):
    """Random geometry for images, masks and valid masks alike, and photometric changes for images.

    `call(images, masks, valid, step)` takes float 0-255 images `(B, H, W, C)`, 0/1 masks `(B, H, W, K)`,
    0/1 valid masks `(B, H, W)` and an integer step, and returns the three, each the originals followed by
    `multiplier` augmented copies (`(B * (1 + multiplier), ...)`), as the AIR ImSeg trainer built its
    batches, or with `multiplier=0` the batch itself augmented (`(B, ...)`, no extra compute). Images are
    sampled bilinearly, masks and valid masks by nearest neighbour, so they stay 0/1; the area a rotation
    or a zoom-out brings in from outside the tile is not valid.

    Args:
        rotate_range: degrees; each copy turns by U(-range, range) about its centre.
        flip: random horizontal and vertical flips.
        rotate90: a random number of exact quarter turns (square tiles only).
        scale_range: zoom by s, log s uniform in +-log(1 + range): s > 1 crops, s < 1 shows a margin.
        channel_shift_range: pixel units; one offset per image, added to every band.
        multiplier: augmented copies per image; 0 augments the batch in place.
        seed: the seed of every draw.
        photometric: {name: {"probability": p, "range": r}} for names of `PHOTOMETRIC` (the ranges are the
            config's, see README "Augmentation").
        layers: Keras layers (objects or serialized configs) applied to the images, in order.
        value_range: (low, high) of the pixels: photometric changes work on the 8-bit scale of this range
            ((x - low) / (high - low) x 255) and pixels are clipped to it; (0, 255) for 8-bit imagery.
    """

    def __init__(
        self,
        rotate_range=0.0,
        flip=False,
        channel_shift_range=0.0,
        multiplier=1,
        seed=0,
        rotate90=False,
        scale_range=0.0,
        photometric=None,
        layers=None,
        value_range=(0.0, 255.0),
        **kwargs,
    ):
        # Augment in float32 even under mixed precision: bf16 cannot hold 0-255 pixels exactly.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rotate_range = float(rotate_range)
        self.flip = bool(flip)
        self.channel_shift_range = float(channel_shift_range)
        self.multiplier = int(multiplier)
        self.seed = int(seed)
        self.rotate90 = bool(rotate90)
        self.scale_range = float(scale_range)
        self.photometric = {
            name: {"probability": float(op["probability"]), "range": float(op["range"])}
            for name, op in (photometric or {}).items()
            if op["probability"] > 0
        }
        unknown = sorted(set(self.photometric) - set(PHOTOMETRIC))
        if unknown:
            raise ValueError(f"unknown photometric operation {unknown[0]!r}; choose from {', '.join(PHOTOMETRIC)}")
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.extra_layers = [
            keras.saving.deserialize_keras_object(x) if isinstance(x, dict) else x for x in layers or ()
        ]

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
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6 + 2 * len(PHOTOMETRIC), alg="philox"))
        angle_seed, flip_seed, shift_seed, quarter_seed, scale_seed, _ = seeds[:6]
        batch = tf.shape(images)[0]

        def draw(shape, seed, low=0.0, high=1.0):
            return tf.random.stateless_uniform(shape, seed, low, high, alg="philox")

        # Photometric first, on real pixels; the zero fill of the geometry below stays zero (and ignored).
        low, high = self.value_range
        eight_bit = (low, high) != (0.0, 255.0)
        if eight_bit:  # the 8-bit scale of this imagery's range, where the ranges of the config are defined
            images = (images - low) * (255.0 / (high - low))
        if self.channel_shift_range > 0:
            r = self.channel_shift_range
            images = images + draw([batch, 1, 1, 1], shift_seed, -r, r)
        for i, name in enumerate(PHOTOMETRIC):
            if name in self.photometric:
                op = self.photometric[name]
                chosen = draw([batch, 1, 1, 1], seeds[6 + 2 * i]) < op["probability"]
                changed = _PHOTOMETRIC_OPS[name](images, op["range"], seeds[7 + 2 * i], draw)
                images = tf.where(chosen, changed, images)
        for layer in self.extra_layers:
            images = tf.cast(layer(images, training=True), "float32")
        images = tf.clip_by_value(images, 0.0, 255.0)
        if eight_bit:
            images = images * ((high - low) / 255.0) + low
        # The valid mask travels as one more mask channel, so it moves exactly as the masks do.
        masks = tf.concat([masks, valid[..., None]], axis=-1)
        if self.flip:
            horizontal, vertical = tf.unstack(draw([2, batch, 1, 1, 1], flip_seed) < 0.5)
            images, masks = (tf.where(horizontal, tf.reverse(t, [2]), t) for t in (images, masks))
            images, masks = (tf.where(vertical, tf.reverse(t, [1]), t) for t in (images, masks))
        if self.rotate90:
            if images.shape[1] != images.shape[2]:
                raise ValueError(f"rotate90 needs square tiles, got {images.shape[1]}x{images.shape[2]}")
            turns = tf.cast(tf.floor(draw([batch, 1, 1, 1], quarter_seed, 0.0, 4.0)), "int32")
            images, masks = (_quarter_turns(t, turns) for t in (images, masks))
        if self.rotate_range > 0 or self.scale_range > 0:
            r = self.rotate_range * math.pi / 180.0
            angles = draw([batch], angle_seed, -r, r)
            s = math.log1p(self.scale_range)
            scales = tf.exp(draw([batch], scale_seed, -s, s))
            images, masks = rotate(images, masks, angles, scales)
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
            rotate90=self.rotate90,
            scale_range=self.scale_range,
            photometric=self.photometric,
            layers=[keras.saving.serialize_keras_object(x) for x in self.extra_layers],
            value_range=list(self.value_range),
        )
        return config


def _quarter_turns(values, turns):
    """Each sample turned by its number of quarter turns (B, 1, 1, 1), counter-clockwise; exact."""
    out = values
    for k in (1, 2, 3):
        out = tf.where(tf.equal(turns, k), tf.image.rot90(values, k), out)
    return out


def _brightness(images, r, seed, draw):
    return images + 255.0 * draw([tf.shape(images)[0], 1, 1, 1], seed, -r, r)


def _contrast(images, r, seed, draw):
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * draw([tf.shape(images)[0], 1, 1, 1], seed, 1 - r, 1 + r) + mean


def _grey(images):
    return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _saturation(images, r, seed, draw):
    if images.shape[-1] != 3:
        return images
    grey = _grey(images)
    return grey + (images - grey) * draw([tf.shape(images)[0], 1, 1, 1], seed, 1 - r, 1 + r)


def _hue(images, r, seed, draw):
    if images.shape[-1] != 3:
        return images
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 255.0) / 255.0)
    turn = draw([tf.shape(images)[0], 1, 1], seed, -r, r)
    hue = tf.math.floormod(hsv[..., 0] + turn, 1.0)
    return 255.0 * tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))


def _gamma(images, r, seed, draw):
    g = tf.exp(draw([tf.shape(images)[0], 1, 1, 1], seed, -math.log1p(r), math.log1p(r)))
    return 255.0 * tf.pow(tf.clip_by_value(images, 0.0, 255.0) / 255.0, g)


def _noise(images, r, seed, draw):
    std_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2, alg="philox"))
    std = draw([tf.shape(images)[0], 1, 1, 1], std_seed, 0.0, r)
    return images + std * tf.random.stateless_normal(tf.shape(images), noise_seed, alg="philox")


def _blur(images, r, seed, draw):
    """A Gaussian blur of its own sigma per image: one depthwise convolution over all images' bands."""
    radius = max(1, math.ceil(2 * r))
    batch, channels = tf.shape(images)[0], images.shape[-1]
    sigma = tf.maximum(draw([batch, 1], seed, 0.0, r), 1e-3)
    offsets = tf.range(-radius, radius + 1, dtype="float32")[None, :]
    weights = tf.exp(-0.5 * tf.square(offsets / sigma))
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)  # (B, 2 radius + 1)
    per_band = tf.repeat(weights, channels, axis=0)  # (B * C, taps): image b's bands use its sigma
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    x = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, -1])  # bands of all images side by side
    rows = tf.transpose(per_band)[:, None, :, None]  # (taps, 1, B * C, 1)
    x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "SAME")
    x = tf.nn.depthwise_conv2d(x, tf.transpose(rows, [1, 0, 2, 3]), [1, 1, 1, 1], "SAME")
    return tf.transpose(tf.reshape(x, [height, width, batch, channels]), [2, 0, 1, 3])


_PHOTOMETRIC_OPS = {
    "brightness": _brightness,
    "contrast": _contrast,
    "saturation": _saturation,
    "hue": _hue,
    "gamma": _gamma,
    "noise": _noise,
    "blur": _blur,
}
PHOTOMETRIC = tuple(_PHOTOMETRIC_OPS)  # the operations of `photometric`, in the order they apply


def rotate(images, masks, angles, scales=None):
    """Rotate each image (bilinear) and mask (nearest) by its angle (radians) about the centre, and zoom it by
    its scale (> 1: in); zero fill."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    h, w = tf.cast(height, "float32"), tf.cast(width, "float32")
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    shrink = 1.0 if scales is None else 1.0 / scales[:, None, None]
    cos = tf.cos(angles)[:, None, None] * shrink
    sin = tf.sin(angles)[:, None, None] * shrink
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
