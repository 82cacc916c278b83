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
