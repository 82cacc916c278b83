"""Augmentation: the same geometry on image, mask and valid mask, seeded, XLA-compilable, and training-only."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_round_trip
from imseg.augment import SegmentationAugment, rotate
from imseg.build import build_model
from imseg.config import config_from_dict
from imseg.distribute import make_strategy


def batch(n=4, size=24, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size, 2), np.float32)
    for i in range(n):
        y, x = rng.integers(0, size // 2, 2)
        masks[i, y : y + size // 2, x : x + size // 3, 0] = 1
        masks[i, :, rng.integers(0, size), 1] = 1
    return masks


def test_rotation_by_a_quarter_turn_is_exact():
    image = np.arange(5 * 5 * 1, dtype=np.float32).reshape(1, 5, 5, 1)
    out_image, out_mask = rotate(image, image, tf.constant([math.pi / 2]))
    np.testing.assert_allclose(out_image[0, ..., 0], np.rot90(image[0, ..., 0], k=-1), atol=1e-3)
    np.testing.assert_array_equal(out_mask[0, ..., 0], np.rot90(image[0, ..., 0], k=-1))


def ones(masks):
    return np.ones(masks.shape[:-1], np.float32)


def test_flips_move_image_mask_and_valid_mask_identically():
    masks = batch()
    images = masks[..., :1].repeat(3, -1) * 200 + 20
    valid = masks[..., 1]  # any pattern: it must move as the masks do
    layer = SegmentationAugment(flip=True, multiplier=3)
    out_images, out_masks, out_valid = layer(images, masks, valid, tf.constant(7))
    assert out_images.shape == (16, 24, 24, 3) and out_valid.shape == (16, 24, 24)
    np.testing.assert_array_equal(out_images[:4], images)  # originals first
    np.testing.assert_array_equal(out_masks[..., 0], out_images[..., 0] > 100)
    np.testing.assert_array_equal(out_valid, out_masks[..., 1])
    assert not np.array_equal(out_masks[4:], np.tile(masks, (3, 1, 1, 1)))  # some copies were flipped


def test_rotation_fill_is_not_valid():
    masks = np.zeros((1, 9, 9, 1), np.float32)
    images = np.full((1, 9, 9, 3), 100.0, np.float32)
    layer = SegmentationAugment(rotate_range=45)

    def angle_of(step):  # the draw augment() makes for this step
        seeds = tf.random.experimental.stateless_split(tf.constant([0, step], tf.int64), 3, alg="philox")
        return float(tf.random.stateless_uniform([1], seeds[0], -math.pi / 4, math.pi / 4, alg="philox")[0])

    step = next(s for s in range(100) if abs(angle_of(s)) > 0.5)
    angle = angle_of(step)
    _, out_masks, out_valid = layer.augment(
        tf.constant(images), tf.constant(masks), tf.ones((1, 9, 9)), tf.constant(step)
    )
    # NumPy reference: a pixel is valid when its nearest source pixel lies inside the tile.
    ys, xs = np.mgrid[0:9, 0:9].astype(np.float32)
    src_y = 4 + np.cos(angle) * (ys - 4) - np.sin(angle) * (xs - 4)
    src_x = 4 + np.sin(angle) * (ys - 4) + np.cos(angle) * (xs - 4)
    inside = (
        (np.floor(src_y + 0.5) >= 0)
        & (np.floor(src_y + 0.5) < 9)
        & (np.floor(src_x + 0.5) >= 0)
        & (np.floor(src_x + 0.5) < 9)
    )
    assert not inside.all()
    np.testing.assert_array_equal(out_valid.numpy()[0], inside.astype(np.float32))


def test_rotation_keeps_masks_binary_and_aligned_with_the_image():
    masks = batch(8)
    images = masks[..., :1].repeat(3, -1) * 255
    layer = SegmentationAugment(rotate_range=40)
    out_images, out_masks, _ = layer.augment(
        tf.constant(images), tf.constant(masks), tf.constant(ones(masks)), tf.constant(3)
    )
    out_images, out_masks = out_images.numpy(), out_masks.numpy()
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    # Where bilinear sampling saw only class pixels (255) or only background (0), nearest must agree.
    full, empty = out_images[..., 0] > 254.99, out_images[..., 0] < 0.01
    assert full.any() and empty.any()
    assert (out_masks[..., 0][full] == 1).all() and (out_masks[..., 0][empty] == 0).all()
    assert not np.array_equal(out_masks, masks)


def test_channel_shift_is_one_offset_per_image_clipped_to_0_255():
    images = np.full((6, 8, 8, 3), 100.0, np.float32)
    images[:, 0, 0] = [0, 250, 100]
    layer = SegmentationAugment(channel_shift_range=50)
    out, _, _ = layer.augment(tf.constant(images), tf.zeros((6, 8, 8, 1)), tf.ones((6, 8, 8)), tf.constant(0))
    shift = out.numpy()[:, 4, 4, 0] - 100
    assert np.all(np.abs(shift) <= 50) and len(np.unique(np.round(shift, 3))) == 6
    np.testing.assert_allclose(out.numpy()[:, 1:, 1:], 100 + shift[:, None, None, None] + 0 * images[:, 1:, 1:])
    np.testing.assert_allclose(out.numpy()[:, 0, 0, 1], np.clip(250 + shift, 0, 255))


@pytest.mark.slow
def test_draws_depend_only_on_seed_and_step():
    masks = batch()
    images = masks[..., :1].repeat(3, -1) * 255
    layer = SegmentationAugment(rotate_range=30, flip=True, channel_shift_range=20, seed=5)

    def run(layer, step):
        return layer.augment(tf.constant(images), tf.constant(masks), tf.constant(ones(masks)), tf.constant(step))[
            0
        ].numpy()

    np.testing.assert_array_equal(run(layer, 11), run(SegmentationAugment.from_config(layer.get_config()), 11))
    assert not np.array_equal(run(layer, 11), run(layer, 12))
    assert not np.array_equal(
        run(layer, 11), run(SegmentationAugment(rotate_range=30, flip=True, channel_shift_range=20, seed=6), 11)
    )


@pytest.mark.slow
def test_augmentation_compiles_under_xla_and_stays_seeded_and_aligned():
    masks = batch()
    images = masks[..., :1].repeat(3, -1) * 200 + 20
    valid = ones(masks)
    layer = SegmentationAugment(rotate_range=30, flip=True, channel_shift_range=20, multiplier=2)
    jitted = tf.function(lambda x, y, v, s: layer(x, y, v, s), jit_compile=True)
    assert "gather" in jitted.experimental_get_compiler_ir(images, masks, valid, tf.constant(4))(stage="hlo")
    first, again = jitted(images, masks, valid, tf.constant(4)), jitted(images, masks, valid, tf.constant(4))
    np.testing.assert_array_equal(first[0], again[0])
    assert first[0].shape == (12, 24, 24, 3) and set(np.unique(first[1])) <= {0.0, 1.0}
    assert set(np.unique(first[2])) <= {0.0, 1.0}
    flips = tf.function(lambda x, y, v, s: SegmentationAugment(flip=True)(x, y, v, s), jit_compile=True)
    out_images, out_masks, _ = flips(images, masks, valid, tf.constant(1))
    np.testing.assert_array_equal(out_masks[..., 0], out_images[..., 0] > 100)
    # The sampling itself is the same computation with and without XLA.
    angles = tf.constant([0.3, -0.5, 1.0, 0.0])
    jitted_rotate = tf.function(rotate, jit_compile=True)
    for a, b in zip(jitted_rotate(images, masks, angles), rotate(images, masks, angles)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3)


def test_augment_layer_round_trips():
    assert_round_trip(SegmentationAugment(rotate_range=15, flip=True, channel_shift_range=5, multiplier=2, seed=3))


def _flip_only_model(strategy=None, threshold=-1e9):
    config = config_from_dict(
        {
            "name": "t",
            "backbone": "MobileNetV2",
            "backbone_kwargs": {"alpha": 0.35},
            "refine_net_blocks": [["block_3_expand_relu"]],
            "input_shape": [32, 32, 3],
            "mixed_precision": "none",
            "augment": {"flip": True, "multiplier": 2},
            "threshold": threshold,
            "batch_size": 4,
        }
    )
    return build_model(config, ["a:b"], strategy=strategy)[0]


@pytest.mark.slow
@pytest.mark.parametrize("devices", [["/cpu:0"], ["/cpu:0", "/cpu:1"]])
def test_training_sees_originals_plus_copies_but_evaluation_and_prediction_do_not(devices):
    # threshold -1e9: every pixel is predicted positive, so the true positives count the pixels seen
    model = _flip_only_model(make_strategy(devices))
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    masks = np.ones((4, 32, 32, 1), "uint8")
    model.fit(images, masks, batch_size=4, epochs=1, verbose=0)
    metric = model.metrics[-1].metrics[0]  # the SegmentationMetrics inside Keras's compiled metrics
    assert int(metric.true_positives.numpy()[0]) == 3 * 4 * 32 * 32
    model.evaluate(images, masks, batch_size=4, verbose=0)
    assert int(metric.true_positives.numpy()[0]) == 4 * 32 * 32
    np.testing.assert_allclose(model.predict(images, verbose=0), model(images, training=False), atol=1e-5)
    for layer in model.backbone.layers:  # every replica keeps the same BatchNorm statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            copies = getattr(layer.moving_mean.value, "values", [layer.moving_mean.value])
            assert all(np.array_equal(copies[0], c) for c in copies)


def test_quarter_turns_are_exact_and_move_masks_with_images():
    images = np.arange(2 * 6 * 6 * 3, dtype=np.float32).reshape(2, 6, 6, 3)
    masks = (images[..., :1] % 7 == 0).astype(np.float32)
    layer = SegmentationAugment(rotate90=True, multiplier=0)
    for step in range(6):
        outputs = layer(images, masks, np.ones((2, 6, 6)), tf.constant(step))
        out_images, out_masks, out_valid = (t.numpy() for t in outputs)
        for i in range(2):
            k = next(k for k in range(4) if np.array_equal(np.rot90(images[i], k), out_images[i]))  # exact
            np.testing.assert_array_equal(out_masks[i], np.rot90(masks[i], k))
        assert out_valid.all()


def test_zoom_out_leaves_an_ignored_margin_and_zoom_in_none():
    images = np.full((1, 20, 20, 3), 100.0, np.float32)
    masks = np.ones((1, 20, 20, 1), np.float32)
    _, out_masks = rotate(images, masks, tf.constant([0.0]), tf.constant([0.5]))  # the valid mask moves so
    margin = out_masks.numpy()[0, ..., 0]
    assert margin[10, 10] == 1 and margin[0, 0] == 0 and margin[:4].sum() == 0  # half the size: a 5 px margin
    assert margin[6:14, 6:14].all()
    _, zoomed_in = rotate(images, masks, tf.constant([0.0]), tf.constant([2.0]))
    assert zoomed_in.numpy().all()


PHOTOMETRIC_CASES = {
    "brightness": lambda x, v: x + 255 * v,
    "contrast": lambda x, v: (x - x.mean()) * v + x.mean(),
    "gamma": lambda x, v: 255 * (x / 255) ** v,
}


def _draw(layer, name, step, batch):
    """The value the layer draws for operation `name` (the second seed of its pair), as augment() does."""
    from imseg.augment import PHOTOMETRIC

    i = list(PHOTOMETRIC).index(name)
    seed = tf.stack([tf.constant(layer.seed, tf.int64), tf.constant(step, tf.int64)])
    seeds = tf.random.experimental.stateless_split(seed, 6 + 2 * len(PHOTOMETRIC), alg="philox")
    r = layer.photometric[name]["range"]
    low, high = {"brightness": (-r, r), "contrast": (1 - r, 1 + r),
                 "gamma": (-np.log1p(r), np.log1p(r))}[name]  # fmt: skip
    value = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[7 + 2 * i], low, high, alg="philox").numpy()
    return np.exp(value) if name == "gamma" else value


@pytest.mark.parametrize("name", sorted(PHOTOMETRIC_CASES))
def test_photometric_changes_follow_their_formula_and_leave_masks_alone(name):
    rng = np.random.default_rng(0)
    images = rng.uniform(40, 200, (3, 8, 8, 3)).astype(np.float32)
    masks = (rng.random((3, 8, 8, 2)) < 0.5).astype(np.float32)
    layer = SegmentationAugment(photometric={name: {"probability": 1.0, "range": 0.3}}, multiplier=0)
    out_images, out_masks, _ = layer(images, masks, np.ones((3, 8, 8)), tf.constant(5))
    np.testing.assert_array_equal(out_masks, masks)
    values = _draw(layer, name, 5, 3)
    expected = np.stack([np.clip(PHOTOMETRIC_CASES[name](images[i], values[i]), 0, 255) for i in range(3)])
    np.testing.assert_allclose(out_images, expected, rtol=1e-4, atol=1e-2)


def test_a_probability_decides_per_image_and_zero_switches_an_operation_off():
    images = np.full((64, 4, 4, 3), 100.0, np.float32)
    layer = SegmentationAugment(photometric={"brightness": {"probability": 0.5, "range": 0.2}}, multiplier=0)
    out = layer(images, np.zeros((64, 4, 4, 1)), np.ones((64, 4, 4)), tf.constant(0))[0].numpy()
    changed = (np.abs(out - images) > 1e-3).any(axis=(1, 2, 3))
    assert 16 < changed.sum() < 48
    off = SegmentationAugment(photometric={"brightness": {"probability": 0.0, "range": 0.2}}, flip=True)
    assert off.photometric == {}


@pytest.mark.parametrize("name", ["saturation", "hue", "noise", "blur"])
def test_other_photometric_changes_keep_grey_grey_or_the_mean(name):
    rng = np.random.default_rng(1)
    grey = np.repeat(rng.uniform(50, 200, (4, 12, 12, 1)), 3, axis=-1).astype(np.float32)
    layer = SegmentationAugment(photometric={name: {"probability": 1.0, "range": 0.4 if name != "noise" else 8}},
                                multiplier=0)  # fmt: skip
    out = layer(grey, np.zeros((4, 12, 12, 1)), np.ones((4, 12, 12)), tf.constant(3))[0].numpy()
    if name in ("saturation", "hue"):  # no colour to scale or turn
        np.testing.assert_allclose(out, grey, atol=0.05)
    elif name == "noise":
        assert 0 < np.abs(out - grey).mean() < 8
    else:  # a blur keeps the mean (away from the zero-padded border) and lowers the spread
        inner = (slice(None), slice(3, -3), slice(3, -3))
        assert abs(out[inner].mean() - grey[inner].mean()) < 5 and out[inner].std() < grey[inner].std()


@pytest.mark.slow
def test_every_operation_compiles_under_xla():
    images = np.random.default_rng(2).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    masks = np.zeros((4, 16, 16, 2), np.float32)
    ops = {name: {"probability": 0.7, "range": 0.5} for name in PHOTOMETRIC_CASES}
    ops.update(saturation={"probability": 1, "range": 0.3}, hue={"probability": 1, "range": 0.1},
               noise={"probability": 1, "range": 4.0}, blur={"probability": 1, "range": 1.5})  # fmt: skip
    layer = SegmentationAugment(rotate_range=20, flip=True, rotate90=True, scale_range=0.3, photometric=ops)
    jitted = tf.function(lambda x, y, v, s: layer(x, y, v, s), jit_compile=True)
    valid = np.ones((4, 16, 16), np.float32)
    first, again = jitted(images, masks, valid, tf.constant(3)), jitted(images, masks, valid, tf.constant(3))
    for x, y in zip(first, again):  # the same draws for the same step (XLA draws differ from eager ones)
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    out_images, out_masks, out_valid = (t.numpy() for t in first)
    assert out_images.shape == (8, 16, 16, 3) and 0 <= out_images.min() and out_images.max() <= 255
    assert set(np.unique(out_masks)) <= {0.0, 1.0} and set(np.unique(out_valid)) <= {0.0, 1.0}
    assert_round_trip(layer)


def test_keras_layers_from_the_config_photometric_only():
    from imseg.errors import ConfigError
    from imseg.recipe import augment_layers

    made = augment_layers([{"name": "RandomContrast", "factor": 0.2}, {"name": "keras.layers.RandomGrayscale"}])
    assert [type(x).__name__ for x in made] == ["RandomContrast", "RandomGrayscale"]
    with pytest.raises(ConfigError, match=r"augment.layers\[0\]': RandomZoom moves or mixes pixels"):
        augment_layers([{"name": "RandomZoom", "height_factor": 0.2}])
    with pytest.raises(ConfigError, match=r"unknown layer 'RandomContrats' \(did you mean 'RandomContrast'\?\)"):
        augment_layers([{"name": "RandomContrats"}])
    layer = SegmentationAugment(layers=[keras.layers.RandomContrast(0.5, seed=1)], multiplier=0)
    images = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    masks = np.ones((2, 8, 8, 1), np.float32)
    out_images, out_masks, _ = layer(images, masks, np.ones((2, 8, 8)), tf.constant(0))
    assert not np.allclose(out_images, images) and np.array_equal(out_masks, masks)
    assert_round_trip(layer)


def test_keras_cv_layers_need_the_extra_or_work_with_it():
    from imseg.errors import ConfigError
    from imseg.recipe import augment_layers

    try:
        import keras_cv  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"needs keras-cv: pip install 'imseg\[keras-cv\]'"):
            augment_layers([{"name": "keras_cv.layers.RandomSharpness", "factor": 0.3, "value_range": [0, 255]}])
        return
    made = augment_layers([{"name": "keras_cv.layers.RandomSharpness", "factor": 0.3, "value_range": [0, 255]}])
    assert type(made[0]).__name__ == "RandomSharpness"
