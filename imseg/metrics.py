"""Streaming segmentation metrics from exact pixel counts over the pixels that count.

`task="multilabel"`: a pixel is predicted positive for class k when its logit exceeds the threshold.
`task="multiclass"`: each pixel is predicted as the class of its largest logit. Truth is the 0/1 (one-hot)
mask. A pixel counts when its sample weight (imseg's valid mask) is positive; ignored pixels never do.
True positives, false positives and false negatives are summed over the whole epoch (and over
replicas), then turned into scores, so the epoch's IoU is not an average of batch IoUs.

Log names: `iou/<class>`, `precision/<class>`, `recall/<class>` and `mean_iou`, e.g.
`iou/building:other`, plus `pixel_accuracy` for multiclass; Keras prefixes validation values with `val_`.
A score whose denominator is zero (IoU of a class absent from truth and prediction; precision with no
positive prediction; recall with no positive pixel) is NaN, and `mean_iou` averages the IoUs that are
defined, leaving out the implicit `background` class of a multiclass task (its IoU is still logged).
Multiclass metrics also keep the confusion matrix (`confusion_matrix()`, rows: truth, columns: prediction).
"""

import keras
import numpy as np
from keras import ops

from imseg.tasks import BACKGROUND, TASKS

KINDS = ("iou", "precision", "recall")


def metric_key(kind, class_name):
    return f"{kind}/{class_name}"


def _counted(class_names, n):
    """Which classes the mean IoU averages: all but the implicit background."""
    return np.array([name != BACKGROUND for name in class_names] if class_names else [True] * n)


def _ratio(num, den):
    return ops.where(den > 0, num / ops.maximum(den, 1.0), float("nan"))


@keras.saving.register_keras_serializable(package="imseg")
class SegmentationMetrics(keras.metrics.Metric):
    """Per-class IoU / precision / recall and mean IoU (and multiclass pixel accuracy), as one Keras metric
    with a dict result.

    Args:
        class_names: the output channels' names, in order.
        threshold: multilabel decision threshold on the logits.
        task: `"multilabel"` (independent sigmoids) or `"multiclass"` (one softmax, argmax).
    """

    def __init__(self, class_names, threshold=0.0, task="multilabel", name="segmentation_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        self.class_names = list(class_names)
        self.threshold = float(threshold)
        self.task = task
        n = len(self.class_names)
        # int64: a float32 count stops being exact past 2**24 pixels (about 330 tiles of 224x224).
        if task == "multiclass":
            self.confusion = self.add_variable((n, n), "zeros", dtype="int64", name="confusion")
        else:
            self.true_positives = self.add_variable((n,), "zeros", dtype="int64", name="true_positives")
            self.false_positives = self.add_variable((n,), "zeros", dtype="int64", name="false_positives")
            self.false_negatives = self.add_variable((n,), "zeros", dtype="int64", name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """`sample_weight` (N, h, w): a pixel counts when its weight is positive (imseg's valid mask)."""
        n = len(self.class_names)
        truth = ops.reshape(ops.cast(y_true, "float32") > 0.5, (-1, n))
        logits = ops.reshape(ops.cast(y_pred, "float32"), (-1, n))
        valid = None
        if sample_weight is not None:
            valid = ops.reshape(ops.cast(sample_weight, "float32") > 0, (-1, 1))
        if self.task == "multiclass":
            rows = ops.argmax(ops.cast(truth, "int32"), axis=-1)
            columns = ops.argmax(logits, axis=-1)
            labelled = ops.any(truth, axis=-1)
            keep = labelled if valid is None else ops.logical_and(labelled, valid[:, 0])
            # One bin per (truth, prediction) pair; pixels that do not count go to an extra bin.
            index = ops.where(keep, rows * n + columns, n * n)
            counts = ops.bincount(ops.cast(index, "int32"), minlength=n * n + 1)[: n * n]
            self.confusion.assign_add(ops.reshape(ops.cast(counts, "int64"), (n, n)))
            return
        predicted = logits > self.threshold
        if valid is not None:
            truth, predicted = ops.logical_and(truth, valid), ops.logical_and(predicted, valid)

        def count(a, b):
            return ops.cast(ops.sum(ops.cast(ops.logical_and(a, b), "int32"), axis=0), "int64")

        self.true_positives.assign_add(count(truth, predicted))
        self.false_positives.assign_add(count(ops.logical_not(truth), predicted))
        self.false_negatives.assign_add(count(truth, ops.logical_not(predicted)))

    def counts(self):
        """(tp, fp, fn) per class as float64 tensors."""
        if self.task == "multiclass":
            confusion = ops.cast(self.confusion, "float64")
            tp = ops.diagonal(confusion)
            return tp, ops.sum(confusion, axis=0) - tp, ops.sum(confusion, axis=1) - tp
        return tuple(ops.cast(v, "float64") for v in (self.true_positives, self.false_positives, self.false_negatives))

    def confusion_matrix(self):
        """Multiclass: the (K, K) int64 confusion matrix of the counted pixels, rows truth, columns prediction."""
        return ops.convert_to_tensor(self.confusion)

    def result(self):
        tp, fp, fn = self.counts()
        scores = {"iou": _ratio(tp, tp + fp + fn), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
        out = {}
        for kind in KINDS:
            for i, name in enumerate(self.class_names):
                out[metric_key(kind, name)] = ops.cast(scores[kind][i], "float32")
        iou = scores["iou"]
        defined = ops.logical_and(ops.logical_not(ops.isnan(iou)), _counted(self.class_names, len(self.class_names)))
        count = ops.sum(ops.cast(defined, "float64"))
        out["mean_iou"] = ops.cast(_ratio(ops.sum(ops.where(defined, iou, 0.0)), count), "float32")
        if self.task == "multiclass":
            out["pixel_accuracy"] = ops.cast(
                _ratio(ops.sum(tp), ops.sum(ops.cast(self.confusion, "float64"))), "float32"
            )
        return out

    def reset_state(self):
        for v in self.variables:
            v.assign(ops.zeros(v.shape, v.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(class_names=self.class_names, threshold=self.threshold, task=self.task)
        return config
