"""Training callbacks: the best-model checkpoint and the per-epoch log file and history."""

import csv
import io
import math
import os
import time

import keras

from imseg.outputs import save_model, write_json, write_text


class BestIoUCheckpoint(keras.callbacks.Callback):
    """Save the model whenever the monitored validation score improves, and only then.

    Writes `filepath` (a `.keras` file) and `info_path` (`{"epoch", "monitor", "value"}` plus
    `details`, e.g. the class names), each atomically. A NaN or missing score never counts as an improvement, and `best` (e.g. from an
    earlier run) sets the bar, so a better checkpoint is never replaced by a worse one. Models with
    an `inference_model()` method (RefineNet) are saved as that plain functional model, which loads
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
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"BestIoUCheckpoint: '{self.monitor}' is not in the epoch logs: {sorted(logs or {})}")
        value = float(value)
        if not math.isfinite(value) or value <= self.best:
            return
        model = self.model.inference_model() if hasattr(self.model, "inference_model") else self.model
        save_model(model, self.filepath)
        write_json(self.info_path, {"epoch": epoch + 1, "monitor": self.monitor, "value": value, **self.details})
        self.best, self.best_epoch = value, epoch + 1


class RunLogger(keras.callbacks.Callback):
    """One readable line per epoch in a log file, and every epoch's logs in `history.csv`."""

    def __init__(self, log_path, history_path, epochs):
        super().__init__()
        self.log_path = log_path
        self.history_path = history_path
        self.epochs = epochs
        self.rows = []
        self._start = None

    def write_line(self, line):
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
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


def _ordered(logs):
    """loss first, then training metrics, then validation ones, each alphabetical."""
    keys = [k for k in logs if k not in ("epoch", "seconds")]
    return [(k, logs[k]) for k in sorted(keys, key=lambda k: (k.startswith("val_"), k != "loss" and k != "val_loss", k))]
