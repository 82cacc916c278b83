"""Metrics equal a NumPy reference over whole epochs, on one device and across two replicas."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_round_trip, reference_scores
from imseg.distribute import make_strategy
from imseg.metrics import SegmentationMetrics

CLASSES = ["building:other", "highway:other", "water:lake"]


def data(n=13, size=8, seed=0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, size, size, 3)) < [0.3, 0.1, 0.0]).astype("uint8")  # water never present
    logits = rng.normal(0, 1, (n, size, size, 3)).astype("float32") + 1.5 * truth
    logits[..., 2] = -5  # ... and never predicted: its IoU is undefined
    return truth, logits


def check(result, truth, logits, threshold=0.0):
    ref = reference_scores(truth, logits, threshold)
    for kind in ("iou", "precision", "recall"):
        for i, name in enumerate(CLASSES):
            np.testing.assert_allclose(float(result[f"{kind}/{name}"]), ref[kind][i], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(float(result["mean_iou"]), ref["mean_iou"], rtol=1e-6)


def test_streaming_counts_over_batches_equal_the_whole_epoch_reference():
    truth, logits = data()
    metric = SegmentationMetrics(CLASSES)
    for start in range(0, len(truth), 4):  # 4 + 4 + 4 + 1: the batch IoUs would average differently
        metric.update_state(truth[start : start + 4], logits[start : start + 4])
    result = metric.result()
    check(result, truth, logits)
    assert math.isnan(float(result["iou/water:lake"])) and math.isnan(float(result["precision/water:lake"]))
    assert not math.isnan(float(result["mean_iou"]))  # the absent class is left out of the mean


def test_threshold_moves_the_decision():
    truth, logits = data()
    metric = SegmentationMetrics(CLASSES, threshold=1.0)
    metric.update_state(truth, logits)
    check(metric.result(), truth, logits, threshold=1.0)


def test_hand_computed_example():
    truth = np.array([[1, 1, 0, 0]], "uint8").reshape(1, 1, 4, 1)
    logits = np.array([[3.0, -1.0, 2.0, -2.0]], "float32").reshape(1, 1, 4, 1)
    metric = SegmentationMetrics(["a:b"])
    metric.update_state(truth, logits)
    result = {k: float(v) for k, v in metric.result().items()}
    assert result == {
        "iou/a:b": pytest.approx(1 / 3),
        "precision/a:b": 0.5,
        "recall/a:b": 0.5,
        "mean_iou": pytest.approx(1 / 3),
    }


def test_reset_and_round_trip():
    metric = SegmentationMetrics(CLASSES, threshold=0.5)
    metric.update_state(*data())
    metric.reset_state()
    assert int(tf.reduce_sum(metric.true_positives)) == 0
    assert_round_trip(metric)


@pytest.mark.slow
def test_counts_stay_exact_beyond_float32_range():
    metric = SegmentationMetrics(["a:b"])
    ones = tf.ones((1, 4096, 4096, 1))
    for _ in range(2):  # 2 * 2**24 pixels: a float32 counter would stop at 2**24
        metric.update_state(ones, ones)
    assert int(metric.true_positives[0]) == 2 * 4096 * 4096


@pytest.mark.slow
@pytest.mark.parametrize("devices", [["/cpu:0"], ["/cpu:0", "/cpu:1"]])
def test_evaluate_under_mirrored_strategy_equals_reference(devices):
    truth, logits = data(n=13)
    strategy = make_strategy(devices)
    assert strategy.num_replicas_in_sync == len(devices)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Identity()])
        model.compile(loss="binary_crossentropy", metrics=[SegmentationMetrics(CLASSES)])
    # Batches of 4 over 13 samples: the last partial batch is split unevenly across replicas.
    result = model.evaluate(logits, truth.astype("float32"), batch_size=4, return_dict=True, verbose=0)
    check(result, truth, logits)


def test_ignored_pixels_never_count():
    truth, logits = data()
    valid = (np.random.default_rng(3).random(truth.shape[:-1]) < 0.6).astype("float32")
    valid[0] = 0  # a fully ignored tile
    metric = SegmentationMetrics(CLASSES)
    metric.update_state(truth, logits, valid)
    keep = valid.astype(bool)
    check(metric.result(), truth[keep][:, None, None], logits[keep][:, None, None])
    tp = ((truth > 0.5) & (logits > 0) & keep[..., None]).sum((0, 1, 2))
    np.testing.assert_array_equal(metric.true_positives.numpy(), tp)
    empty = SegmentationMetrics(CLASSES)
    empty.update_state(truth[:1], logits[:1], valid[:1])
    assert all(int(v.numpy().sum()) == 0 for v in empty.variables)


MULTI = ["building:other", "road:other", "background"]


def test_multiclass_confusion_matrix_accuracy_and_mean_without_background():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, (5, 6, 7))
    truth = np.eye(3, dtype="float32")[labels]
    logits = rng.normal(0, 1, (5, 6, 7, 3)).astype("float32") + 1.2 * truth
    valid = (rng.random((5, 6, 7)) < 0.8).astype("float32")
    metric = SegmentationMetrics(MULTI, task="multiclass")
    metric.update_state(truth[:3], logits[:3], valid[:3])
    metric.update_state(truth[3:], logits[3:], valid[3:])
    keep = valid.astype(bool)
    expected = np.zeros((3, 3), np.int64)
    np.add.at(expected, (labels[keep], logits.argmax(-1)[keep]), 1)
    np.testing.assert_array_equal(metric.confusion_matrix().numpy(), expected)
    result = metric.result()
    tp = np.diag(expected)
    iou = tp / (expected.sum(0) + expected.sum(1) - tp)
    np.testing.assert_allclose([float(result[f"iou/{n}"]) for n in MULTI], iou, rtol=1e-6)
    np.testing.assert_allclose(float(result["mean_iou"]), iou[:2].mean(), rtol=1e-6)  # background left out
    np.testing.assert_allclose(float(result["pixel_accuracy"]), tp.sum() / expected.sum(), rtol=1e-6)
    np.testing.assert_allclose(float(result["recall/road:other"]), tp[1] / expected[1].sum(), rtol=1e-6)
    assert_round_trip(metric)
