"""Callbacks on their own: what makes a best checkpoint, early stopping, and validation on moving averages."""

import json
import math

import keras
import numpy as np
import pytest

from imseg.callbacks import BestIoUCheckpoint, EarlyStopping, EvaluateWithEMA
from imseg.checkpoints import read_metadata


def tiny():
    inputs = keras.Input((4, 4, 3))
    return keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs))


@pytest.mark.parametrize(
    "logs, saved",
    [
        ({"val_mean_iou": 0.5, "val_loss": 0.3}, True),
        ({"val_mean_iou": 0.5, "val_loss": math.nan}, False),  # NaN outputs somewhere: never the best
        ({"val_mean_iou": 0.5, "val_loss": math.inf}, False),
        ({"val_mean_iou": math.nan, "val_loss": 0.3}, False),
    ],
)
def test_only_a_finite_score_with_a_finite_loss_makes_a_checkpoint(tmp_path, logs, saved):
    checkpoint = BestIoUCheckpoint(
        str(tmp_path / "best.keras"), str(tmp_path / "best.json"), details={"classes": ["a:b"], "task": "multilabel"}
    )
    checkpoint.set_model(tiny())
    checkpoint.on_epoch_end(0, logs)
    assert (tmp_path / "best.keras").exists() == saved and (checkpoint.best_epoch == 1) == saved
    if saved:
        info = json.loads((tmp_path / "best.json").read_text())
        assert read_metadata(str(tmp_path / "best.keras")) == {k: v for k, v in info.items() if k != "sha256"}


def test_a_worse_or_equal_score_never_replaces_the_best(tmp_path):
    checkpoint = BestIoUCheckpoint(str(tmp_path / "best.keras"), str(tmp_path / "best.json"))
    checkpoint.set_model(tiny())
    for epoch, value in enumerate([0.4, 0.3, 0.4, 0.6]):
        checkpoint.on_epoch_end(epoch, {"val_mean_iou": value, "val_loss": 1.0})
    assert (checkpoint.best, checkpoint.best_epoch) == (0.6, 4)


def test_early_stopping_counts_epochs_without_a_large_enough_gain():
    model = tiny()
    model.stop_training = False  # as fit sets it
    stop = EarlyStopping("val_mean_iou", patience=2, min_delta=0.01)
    stop.set_model(model)
    for epoch, value in enumerate([0.5, 0.505, 0.52, 0.521, math.nan]):
        stop.on_epoch_end(epoch, {"val_mean_iou": value})
        if model.stop_training:
            break
    assert stop.stopped_epoch == 5 and stop.state() == {"best": 0.52, "wait": 2}
    resumed = EarlyStopping("val_mean_iou", patience=2, min_delta=0.01, **stop.state())
    assert (resumed.best, resumed.wait) == (0.52, 2)


@pytest.mark.slow
def test_validation_runs_on_the_moving_average_and_training_continues_on_the_weights():
    from imseg.build import build_model
    from imseg.config import config_from_dict

    config = config_from_dict(
        {
            "name": "t",
            "backbone": "MobileNetV2",
            "backbone_kwargs": {"alpha": 0.35},
            "refine_net_blocks": [["block_3_expand_relu"]],
            "input_shape": [32, 32, 3],
            "mixed_precision": "none",
            "ema": 0.5,
            "optimizer_kwargs": {"learning_rate": 0.01},
        }
    )
    model, _ = build_model(config, ["a:b"])
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    masks = (np.random.default_rng(1).random((4, 32, 32, 1)) < 0.5).astype("uint8")
    model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    head = model.get_layer("head").kernel
    weights = head.numpy()
    averages = {id(v): a for v, a in model._ema_pairs}
    average = averages[id(head)].numpy()
    assert not np.allclose(weights, average)  # two steps: the average lags the weights
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            seen.append(self.model.get_layer("head").kernel.numpy())

    model.evaluate(images, masks, batch_size=4, verbose=0, callbacks=[EvaluateWithEMA(), Spy()])
    np.testing.assert_array_equal(seen[0], average)
    np.testing.assert_array_equal(head.numpy(), weights)  # swapped back after validation


def test_hparams_flatten_the_config_and_name_null_none_so_runs_line_up():
    from imseg.callbacks import hparams_of

    flat = hparams_of({"ema": None, "epochs": 6, "optimizer_kwargs": {"learning_rate": 0.002}, "classes": ["a", "b"],
                       "backbone_kwargs": {}, "early_stopping": {"patience": None}})  # fmt: skip
    assert flat == {"ema": "none", "epochs": 6, "optimizer_kwargs.learning_rate": 0.002, "classes": '["a", "b"]',
                    "backbone_kwargs": "{}", "early_stopping.patience": "none"}  # fmt: skip
