"""predict_image: sliding-window prediction of any size, seamless, with memory that does not grow with height."""

import tracemalloc

import keras
import numpy as np
import pytest

from imseg.predict import blend_window, predict_image
from imseg.tiles import tile_starts


def conv_model(size=32, kernel=None, bias=2.0, classes=1):
    """A 1x1 conv: constant logits (`bias`), or a copy of the red channel with kernel e_red."""
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(classes, 1)
    model = keras.Model(inputs, conv(inputs))
    k = np.zeros((1, 1, 3, classes), np.float32) if kernel is None else kernel
    conv.set_weights([k, np.full(classes, 0.0 if kernel is not None else bias, np.float32)])
    return model


def test_tiles_cover_the_image_and_end_at_its_edge():
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 24) == [0]
    assert tile_starts(20, 32, 24) == [0]


def test_window_is_smooth_positive_and_flat_in_the_middle():
    w = blend_window(32, 8)
    assert w.min() > 0 and (w[8:24] == 1).all() and (np.diff(w[:8]) > 0).all()


@pytest.mark.slow
def test_constant_logits_give_a_constant_result_of_exactly_the_image_size():
    image = np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    probs = predict_image(conv_model(), image, overlap=0.25)
    assert probs.shape == (1000, 1000, 1) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-2.0)), rtol=1e-6)  # no seams at tile borders
    assert predict_image(conv_model(), image, output="masks").all()


def test_tiles_are_placed_exactly():
    """A model that copies the red channel must return the image's red channel everywhere."""
    kernel = np.zeros((1, 1, 3, 1), np.float32)
    kernel[0, 0, 0, 0] = 1.0
    image = np.random.default_rng(1).integers(0, 255, (150, 97, 3), dtype=np.uint8)
    logits = predict_image(conv_model(kernel=kernel), image, overlap=0.3, batch_size=3, output="logits")
    np.testing.assert_allclose(logits[..., 0], image[..., 0], atol=1e-3)


def test_small_images_are_padded_not_resized():
    kernel = np.zeros((1, 1, 3, 1), np.float32)
    kernel[0, 0, 0, 0] = 1.0
    image = np.random.default_rng(2).integers(0, 255, (10, 40, 3), dtype=np.uint8)
    logits = predict_image(conv_model(kernel=kernel), image, output="logits")
    assert logits.shape == (10, 40, 1)
    np.testing.assert_allclose(logits[..., 0], image[..., 0], atol=1e-3)


def _extra_memory(model, height, width):
    image = np.zeros((height, width, 3), np.uint8)
    tracemalloc.start()
    result = predict_image(model, image, overlap=0.25, output="masks")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - result.nbytes


@pytest.mark.slow
def test_working_memory_does_not_grow_with_the_image_height():
    model = conv_model(classes=4)
    small, tall = _extra_memory(model, 400, 600), _extra_memory(model, 1600, 600)
    assert tall < 1.1 * small + 100_000
    # ... and is a few rows of tiles: running sums of 4 classes and their weights over the rows one batch of 8 spans
    # (two tile rows here: 32 + 24 pixels), with the copies made when they grow and when finished rows leave, and
    # two batches of tiles (one being predicted, the next read meanwhile).
    assert tall < 3 * (32 + 24) * 600 * (4 + 1) * 4 + 2 * 8 * 32 * 32 * 3 * 4 + 300_000


def test_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        predict_image(conv_model(), np.zeros((40, 40, 3)), overlap=0.8)
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) image"):
        predict_image(conv_model(), np.zeros((40, 40)))


class Skewed:
    """A 'model' that sees direction and position: a pixel minus the one above it, and a pixel times its row and
    column, so that every view of a tile predicts differently."""

    def predict_on_batch(self, tiles):
        rows, cols = np.arange(tiles.shape[1])[:, None], np.arange(tiles.shape[2])
        vertical = tiles[..., 0] - np.roll(tiles[..., 0], 1, axis=1)
        return np.stack([vertical, tiles[..., 1] * (1 + rows * cols)], axis=-1)


def test_test_time_views_are_the_symmetries_of_a_square_each_undone():
    from imseg.predict import tile_logits

    tiles = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)

    def mean_over(turns, mirrors):  # reference: quarter turns k (and a mirror first), each turned back
        views = []
        for k in turns:
            for mirror in mirrors:
                view = np.rot90(np.flip(tiles, 2) if mirror else tiles, k, axes=(1, 2))
                back = np.rot90(Skewed().predict_on_batch(view), -k, axes=(1, 2))
                views.append(np.flip(back, 2) if mirror else back)
        return np.mean(views, axis=0)

    np.testing.assert_allclose(tile_logits(Skewed(), tiles), mean_over([0], [False]), atol=1e-5)
    # the four flips are the half turns with and without a mirror; d4 all eight symmetries
    np.testing.assert_allclose(tile_logits(Skewed(), tiles, "flip"), mean_over([0, 2], [False, True]), atol=1e-5)
    d4 = tile_logits(Skewed(), tiles, "d4")
    np.testing.assert_allclose(d4, mean_over(range(4), [False, True]), atol=1e-5)
    assert np.abs(d4 - tile_logits(Skewed(), tiles, "flip")).max() > 0.1
    with pytest.raises(ValueError, match="square; got 5x4"):
        tile_logits(Skewed(), tiles[:, :, :4], "d4")


def test_column_blocks_and_flip_tta_give_the_same_blend():
    from imseg.predict import stream_logits

    rng = np.random.default_rng(5)
    model = conv_model(kernel=rng.normal(0, 0.01, (1, 1, 3, 2)).astype(np.float32), classes=2)
    image = rng.integers(0, 255, (70, 150, 3)).astype(np.float32)

    def assemble(block, tta="none"):
        out = np.zeros((70, 150, 2), np.float32)
        read = lambda y0, y1, x0, x1: image[y0:y1, x0:x1]  # noqa: E731
        for y, x, logits in stream_logits(model, read, 70, 150, overlap=0.25, batch_size=3, tta=tta, block=block):
            out[y : y + len(logits), x : x + logits.shape[1]] = logits
        return out

    whole = assemble(None)
    assert whole.std() > 0.1  # the logits follow the image, so blocks and blending matter
    np.testing.assert_allclose(assemble(40), whole, atol=1e-5)  # blocks narrower than two tiles
    np.testing.assert_allclose(whole, predict_image(model, image, output="logits", batch_size=3), atol=1e-6)
    # A 1x1 conv commutes with flips: test-time flips change nothing but the work done.
    np.testing.assert_allclose(assemble(None, "flip"), whole, atol=1e-4)
