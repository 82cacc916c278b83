"""Streaming multi-label segmentation metrics from exact pixel counts.

A pixel is predicted positive for class k when its logit exceeds the threshold; truth is the 0/1
mask. True positives, false positives and false negatives are summed over the whole epoch (and over
replicas), then turned into scores, so the epoch's IoU is not an average of batch IoUs.

Log names: `iou/<class>`, `precision/<class>`, `recall/<class>` and `mean_iou`, e.g.
`iou/building:other`; Keras prefixes validation values with `val_`. A score whose denominator is
zero (IoU of a class absent from truth and prediction; precision with no positive prediction;
recall with no positive pixel) is NaN, and `mean_iou` averages the IoUs that are defined.
"""

import keras
import numpy as np
from keras import ops

KINDS = ("iou", "precision", "recall")


def metric_key(kind, class_name):
    return f"{kind}/{class_name}"


def scores_from_counts(tp, fp, fn):
    """NumPy twin of `SegmentationMetrics.result()` for count arrays of shape (..., classes)."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))

    def ratio(num, den):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    iou = ratio(tp, tp + fp + fn)
    defined = ~np.isnan(iou)
    mean = ratio(np.where(defined, iou, 0).sum(-1), defined.sum(-1))
    return {"iou": iou, "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "mean_iou": mean}


def _ratio(num, den):
    return ops.where(den > 0, num / ops.maximum(den, 1.0), float("nan"))


@keras.saving.register_keras_serializable(package="imseg")
class SegmentationMetrics(keras.metrics.Metric):
    """Per-class IoU / precision / recall and mean IoU, as one Keras metric with a dict result."""

    def __init__(self, class_names, threshold=0.0, name="segmentation_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_names = list(class_names)
        self.threshold = float(threshold)
        n = len(self.class_names)
        # int64: a float32 count stops being exact past 2**24 pixels (about 330 tiles of 224x224).
        self.true_positives = self.add_variable((n,), "zeros", dtype="int64", name="true_positives")
        self.false_positives = self.add_variable((n,), "zeros", dtype="int64", name="false_positives")
        self.false_negatives = self.add_variable((n,), "zeros", dtype="int64", name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.reshape(ops.cast(y_true, "float32") > 0.5, (-1, len(self.class_names)))
        predicted = ops.reshape(ops.cast(y_pred, "float32") > self.threshold, (-1, len(self.class_names)))

        def count(a, b):
            return ops.cast(ops.sum(ops.cast(ops.logical_and(a, b), "int32"), axis=0), "int64")

        self.true_positives.assign_add(count(truth, predicted))
        self.false_positives.assign_add(count(ops.logical_not(truth), predicted))
        self.false_negatives.assign_add(count(truth, ops.logical_not(predicted)))

    def result(self):
        tp, fp, fn = (ops.cast(v, "float64") for v in (self.true_positives, self.false_positives, self.false_negatives))
        scores = {"iou": _ratio(tp, tp + fp + fn), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
        out = {}
        for kind in KINDS:
            for i, name in enumerate(self.class_names):
                out[metric_key(kind, name)] = ops.cast(scores[kind][i], "float32")
        iou = scores["iou"]
        defined = ops.logical_not(ops.isnan(iou))
        count = ops.sum(ops.cast(defined, "float64"))
        out["mean_iou"] = ops.cast(_ratio(ops.sum(ops.where(defined, iou, 0.0)), count), "float32")
        return out

    def reset_state(self):
        for v in self.variables:
            v.assign(ops.zeros(v.shape, v.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(class_names=self.class_names, threshold=self.threshold)
        return config
