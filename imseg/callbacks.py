"""Training callbacks: best-model checkpoint, log file and history, resume state, and clean stops."""

import contextlib
import csv
import io
import json
import math
import os
import time

import keras
import numpy as np

from imseg.checkpoints import save_model
from imseg.errors import TrainingStopped
from imseg.outputs import atomic_path, write_json, write_text
from imseg.signals import Interrupted


class BestIoUCheckpoint(keras.callbacks.Callback):
    """Save the model whenever the monitored validation score improves, and only then.

    Writes `filepath` (a `.keras` file) and `info_path` (`{"epoch", "monitor", "value"}` plus
    `details`, e.g. the class names, and the model file's SHA-256), each atomically; the `.keras` file
    carries the same record inside (`imseg.checkpoints`). A NaN or missing score never counts as an
    improvement, nor does an epoch whose validation loss is not finite, and `best` (e.g. from an earlier
    run) sets the bar, so a better checkpoint is never replaced by a worse one. Models with
    an `inference_model()` method (the Segmenter) are saved as that plain functional model, which loads
    with `keras.models.load_model` without imseg.
    """

    def __init__(self, filepath, info_path, monitor="val_mean_iou", best=-math.inf, details=None):
        super().__init__()
        self.filepath = filepath
        self.details = dict(details or {})
        self.info_path = info_path
        self.monitor = monitor
        self.best = best
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"BestIoUCheckpoint: '{self.monitor}' is not in the epoch logs: {sorted(logs)}")
        value = float(value)
        # A model whose validation loss is not finite predicts NaN somewhere: never the best.
        if not math.isfinite(value) or value <= self.best or not math.isfinite(float(logs.get("val_loss", 0.0))):
            return
        info = {"epoch": epoch + 1, "monitor": self.monitor, "value": value, **self.details}
        with _ema_weights(self.model):
            model = self.model.inference_model() if hasattr(self.model, "inference_model") else self.model
            digest = save_model(model, self.filepath, info)
        self.best, self.best_epoch = value, epoch + 1
        write_json(self.info_path, {**info, "sha256": digest})


def _ema_weights(model):
    """The model's moving-average weights for the duration (a Segmenter with `ema_decay`), else a no-op."""
    return model.ema_weights() if hasattr(model, "ema_weights") else contextlib.nullcontext()


class EvaluateWithEMA(keras.callbacks.Callback):
    """Validation runs on the moving-average weights of a Segmenter trained with `ema_decay`."""

    def on_test_begin(self, logs=None):
        self.model.swap_ema_weights()

    def on_test_end(self, logs=None):
        self.model.swap_ema_weights()


class EarlyStopping(keras.callbacks.Callback):
    """Stop when the monitored validation score has not risen by more than `min_delta` for `patience` epochs.

    `best` and `wait` carry the state across a resumed run (see `ResumeState`).
    """

    def __init__(self, monitor, patience, min_delta=0.0, best=-math.inf, wait=0, log=None):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.best = best
        self.wait = wait
        self.log = log or (lambda message: None)
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get(self.monitor, math.nan))
        if math.isfinite(value) and value > self.best + self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            self.log(
                f"imseg: early stopping after epoch {epoch + 1}: {self.monitor} has not improved by more than "
                f"{self.min_delta} for {self.wait} epoch(s) (best {self.best:.4f})"
            )

    def state(self):
        return {"best": _finite_or_none(self.best), "wait": self.wait}


class RunLogger(keras.callbacks.Callback):
    """One readable line per epoch in a log file, and every epoch's logs in `history.csv`.

    `rows` are the history of earlier epochs when a run is resumed.
    """

    def __init__(self, log_path, history_path, epochs, rows=()):
        super().__init__()
        self.log_path = log_path
        self.history_path = history_path
        self.epochs = epochs
        self.rows = list(rows)
        self._start = None

    def write_line(self, line):
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] <= epoch]  # never a repeated epoch
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        seconds = time.monotonic() - self._start
        items = " ".join(f"{k}={v:.4f}" for k, v in _ordered(logs))
        self.write_line(f"epoch {epoch + 1}/{self.epochs} {items} time={seconds:.1f}s")
        self.rows.append({"epoch": epoch + 1, **logs, "seconds": round(seconds, 3)})
        self._write_history()

    def _write_history(self):
        columns = ["epoch"] + [k for k, _ in _ordered(self.rows[-1])] + ["seconds"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        os.makedirs(os.path.dirname(self.history_path) or ".", exist_ok=True)
        write_text(self.history_path, buffer.getvalue())


def read_history(path, last_epoch):
    """The rows of `history.csv` for epochs 1..last_epoch (later ones belong to an unfinished epoch)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return [row for row in rows if row["epoch"] <= last_epoch]


class ResumeState(keras.callbacks.Callback):
    """After every epoch, the weights and optimizer state, the epoch and the best score so far.

    Written as `resume/epoch-NNNN.weights.h5`, then `resume/state.json` pointing at it (the commit
    point), then older weight files are removed: a kill at any instant leaves a consistent state.
    """

    def __init__(self, folder, checkpoint, early_stopping=None):
        super().__init__()
        self.folder = folder
        self.checkpoint = checkpoint
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        path = os.path.join(self.folder, name)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        write_json(
            os.path.join(self.folder, "state.json"),
            {
                "epoch": epoch + 1,
                "weights": name,
                "best": _finite_or_none(self.checkpoint.best),
                "best_epoch": self.checkpoint.best_epoch,
                **({"early_stopping": self.early_stopping.state()} if self.early_stopping else {}),
            },
        )
        for old in os.listdir(self.folder):
            if old.startswith("epoch-") and old != name:
                os.remove(os.path.join(self.folder, old))


def _finite_or_none(value):
    return value if math.isfinite(value) else None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite, before anything is saved from it."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise TrainingStopped(
                f"the loss became {float(loss)} in epoch {self.epoch + 1}, batch {batch + 1}; training stopped "
                "(lower the learning rate, or check the data); the best checkpoint is unchanged"
            )


class StopOnSignal(keras.callbacks.Callback):
    """Raise `Interrupted` at the end of the step during which a stop signal arrived."""

    def __init__(self, signals):
        super().__init__()
        self.signals = signals

    def on_train_begin(self, logs=None):
        self.signals.active = True

    def on_train_end(self, logs=None):
        self.signals.active = False

    def _check(self, *args, **kwargs):
        if self.signals.received is not None:
            raise Interrupted(self.signals.received)

    on_train_batch_end = on_test_batch_end = _check


def _ordered(logs):
    """loss first, then training metrics, then validation ones, each alphabetical."""
    keys = [k for k in logs if k not in ("epoch", "seconds")]
    return [
        (k, logs[k]) for k in sorted(keys, key=lambda k: (k.startswith("val_"), k != "loss" and k != "val_loss", k))
    ]


def find_segmentation_metrics(model):
    """The model's SegmentationMetrics object (inside Keras's compiled metrics), or None."""
    from imseg.metrics import SegmentationMetrics

    stack = list(model.metrics)
    while stack:
        metric = stack.pop()
        if isinstance(metric, SegmentationMetrics):
            return metric
        stack.extend(getattr(metric, "metrics", []))
    return None


class ValidationImages(keras.callbacks.Callback):
    """What the model sees, in TensorBoard: every `every` epochs, the same validation tiles with the prediction
    overlaid beside the truth (`validation/predictions`), and for a multiclass task the validation confusion
    matrix (`validation/confusion_matrix`), on the epoch axis of Keras's scalars.

    Args:
        log_dir: the run's TensorBoard folder (the images go to its `validation/`).
        tiles: (images, masks, valid) arrays of the tiles to show.
        class_names: the output channels; `task`, `threshold`: how logits become masks.
        every: epochs between two writes.
        value_range: (low, high) of the pixels, drawn as 0-255 (16-bit and multispectral imagery).
    """

    def __init__(self, log_dir, tiles, class_names, task="multilabel", threshold=0.0, every=1, value_range=(0, 255)):
        super().__init__()
        self.log_dir = log_dir
        self.tiles = tiles
        self.class_names = list(class_names)
        self.task, self.threshold, self.every = task, threshold, every
        self.value_range = tuple(value_range)
        self._writer = None
        self._forward = None

    def _write(self, fn):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "validation"))
        with self._writer.as_default():
            fn(tf)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        from imseg.visualize import class_colours, legend

        key = np.asarray(legend(class_colours(self.class_names)))[None]
        self._write(lambda tf: tf.summary.image("legend", key, step=0))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        from imseg.predict import masks_from_logits
        from imseg.visualize import displayable, drawn_colours, overlay, side_by_side

        images, masks, valid = self.tiles
        if self._forward is None:
            import tensorflow as tf

            # A direct call, not predict_on_batch: with several workers only the chief runs this callback, and
            # a distributed predict would wait forever for the others. Traced once: an eager call of the whole
            # network took 7 x longer (0.13 of the 0.18 s this callback added to a demo epoch).
            model = self.model
            self._forward = tf.function(lambda x: model(x, training=False))
        with _ema_weights(self.model):
            logits = np.asarray(keras.ops.convert_to_numpy(self._forward(images.astype("float32"))), np.float32)
        palette = drawn_colours(self.class_names)
        pictures = []
        for image, truth, ok, logit in zip(images, masks.astype(bool), valid.astype(bool), logits):
            predicted = masks_from_logits(logit, self.task, self.threshold) & ok[..., None]
            image = displayable(image, self.value_range)
            pictures.append(
                side_by_side(overlay(image, predicted, palette), overlay(image, truth & ok[..., None], palette))
            )
        batch = np.stack(pictures)
        self._write(lambda tf: tf.summary.image("predictions", batch, step=epoch, max_outputs=len(batch),
                                                description="prediction | truth"))  # fmt: skip
        metric = find_segmentation_metrics(self.model)
        if self.task == "multiclass" and metric is not None:  # after fit's validation it holds the val counts
            from imseg.visualize import confusion_picture

            picture = np.asarray(confusion_picture(keras.ops.convert_to_numpy(metric.confusion), self.class_names))
            self._write(lambda tf: tf.summary.image("confusion_matrix", picture[None], step=epoch))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def hparams_of(config_dict):
    """The config's scalar settings, flattened (`optimizer_kwargs.learning_rate`), for the HParams dashboard;
    lists and mappings become their JSON text, and null is "none", so that runs with and without a setting
    (`ema`, `gradient_clip_norm`, ...) line up in one column."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix[:-1]] = value
        else:
            flat[prefix[:-1]] = "none" if value is None else json.dumps(value)

    walk("", config_dict)
    return flat


class HParams(keras.callbacks.Callback):
    """The run's settings in TensorBoard's HParams dashboard, with its final and best validation scores, so
    several runs under one `--logdir` compare side by side.

    Args:
        log_dir: the run's TensorBoard folder.
        hparams: {name: value} (see `hparams_of`); `run_name`: the trial's name.
        monitor: the validation score (`val_…`); `checkpoint`: the BestIoUCheckpoint that knows the best.
    """

    def __init__(self, log_dir, hparams, run_name, monitor, checkpoint):
        super().__init__()
        self.log_dir, self.hparams, self.run_name = log_dir, hparams, run_name
        self.monitor, self.checkpoint = monitor, checkpoint
        self._writer = None

    def _tags(self):
        name = self.monitor[len("val_") :]
        return f"hparams/final_{name}", f"hparams/best_{name}"

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        final, best = self._tags()
        self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            hp.hparams_config(
                hparams=[hp.HParam(k) for k in self.hparams],
                metrics=[hp.Metric(final, display_name=f"final {self.monitor}"),
                         hp.Metric(best, display_name=f"best {self.monitor}")],
            )  # fmt: skip
            hp.hparams(self.hparams, trial_id=self.run_name)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        value = float((logs or {}).get(self.monitor, math.nan))
        final, best = self._tags()
        with self._writer.as_default():
            tf.summary.scalar(final, value, step=epoch)
            if math.isfinite(self.checkpoint.best):
                tf.summary.scalar(best, self.checkpoint.best, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        self._writer.close()
