"""Segmentation losses on logits: cross-entropy, Dice, Jaccard, Tversky, Focal, Lovász, and weighted sums.

Every loss takes `y_true` (N, h, w, K) 0/1 masks (one-hot for `task="multiclass"`), `y_pred` (N, h, w, K)
logits and an optional per-pixel `sample_weight` (N, h, w): imseg's valid mask, 0 where a pixel is
ignored. Probabilities are `sigmoid(logits)` per class for `task="multilabel"` and `softmax(logits)` over
the classes for `task="multiclass"`. Everything is computed in float32 whatever the model's precision.

- Pixel losses (cross-entropy, Focal) are weighted means over pixels: `sum(w * l) / sum(w)` (0 when every
  pixel is ignored); multilabel averages the K classes of each pixel first.
- Region losses (Dice, Jaccard, Tversky) sum over the whole batch per class, with every pixel weighted by
  `w`, then average `1 - score` over the classes; `smooth` keeps a class absent from the batch finite, and
  a class with nothing to compare (no truth, no prediction, no valid pixel) scores 1.
- Lovász (Berman et al., CVPR 2018) counts the pixels with a positive weight: the hinge form per class for
  multilabel, the softmax form averaged over the classes present in the batch for multiclass.

As Keras's own losses do under `tf.distribute`, each replica's value is divided by the number of replicas,
so the summed gradients are those of the mean. NumPy references of every formula: tests/test_losses.py.
"""

import keras
from keras import ops

from imseg.tasks import TASKS


def _scale_for_replicas(value):
    """Divide by the replicas in sync, as keras.losses.Loss does (its `scale_loss_for_distribution`)."""
    if keras.backend.backend() == "tensorflow":
        from imseg.distribute import replicas_in_sync

        replicas = replicas_in_sync()
        if replicas > 1:
            value = value / replicas
    return value


def _number(name, value, low=0.0, high=None, high_open=False, optional=False):
    """`value` as a float, or a ValueError naming the argument and what it must be."""
    if optional and value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = number and value >= low and (high is None or (value < high if high_open else value <= high))
    if not inside:
        span = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number {span}{' or null' if optional else ''}, got {value!r}")
    return float(value)


def _per_class(weights):
    """A list of K numbers (or None) as a float32 tensor."""
    return None if weights is None else ops.convert_to_tensor(weights, "float32")


class SegmentationLoss(keras.losses.Loss):
    """Base of imseg's losses: casts to float32, takes the valid mask as `sample_weight`, calls `compute`.

    Args:
        task: `"multilabel"` (sigmoid per class) or `"multiclass"` (softmax over the classes).
        name: the loss's name.
        from_logits: must be true (imseg models output logits); accepted for Keras-style configs.
    """

    def __init__(self, task="multilabel", name=None, from_logits=True, **kwargs):
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if from_logits is not True:
            raise ValueError("from_logits must be true: imseg models output logits")
        kwargs.pop("reduction", None)  # the reduction is each loss's own (see the module docstring)
        kwargs.pop("dtype", None)  # always float32
        super().__init__(name=name, dtype="float32", **kwargs)
        self.task = task

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            y_true = ops.cast(y_true, "float32")
            logits = ops.cast(y_pred, "float32")
            if sample_weight is None:
                weight = ops.ones_like(y_true[..., 0])
            else:
                weight = ops.cast(sample_weight, "float32")
                if len(weight.shape) == len(y_true.shape):
                    weight = weight[..., 0]
                weight = ops.broadcast_to(weight, ops.shape(y_true)[:-1])
            return _scale_for_replicas(self.compute(y_true, logits, weight))

    def compute(self, y_true, logits, weight):
        """The scalar loss of float32 truth and logits (N, h, w, K) and pixel weights (N, h, w)."""
        raise NotImplementedError

    def probabilities(self, logits):
        return ops.softmax(logits, axis=-1) if self.task == "multiclass" else ops.sigmoid(logits)

    def get_config(self):
        return {"name": self.name, "task": self.task}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _weighted_mean(pixel_loss, weight):
    return ops.divide_no_nan(ops.sum(pixel_loss * weight), ops.sum(weight))


@keras.saving.register_keras_serializable(package="imseg")
class CrossEntropy(SegmentationLoss):
    """Binary (multilabel) or categorical (multiclass) cross-entropy on logits.

    Args:
        class_weights: K per-class factors (default all 1).
        pos_weight: multilabel only: a factor on the positive term, one number or K numbers, as
            `torch.nn.BCEWithLogitsLoss(pos_weight=...)`.
        label_smoothing: targets move towards 0.5 (multilabel) or 1/K (multiclass) by this fraction.
    """

    def __init__(
        self,
        task="multilabel",
        class_weights=None,
        pos_weight=None,
        label_smoothing=0.0,
        name="cross_entropy",
        **kwargs,
    ):
        super().__init__(task=task, name=name, **kwargs)
        if pos_weight is not None and task != "multilabel":
            raise ValueError("pos_weight is for task multilabel; use class_weights with multiclass")
        _number("label_smoothing", label_smoothing, 0, 1, high_open=True)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.pos_weight = (
            pos_weight if pos_weight is None or isinstance(pos_weight, (int, float)) else [float(w) for w in pos_weight]
        )
        self.label_smoothing = float(label_smoothing)

    def compute(self, y_true, logits, weight):
        k = y_true.shape[-1]
        class_weights = _per_class(self.class_weights)
        if self.task == "multiclass":
            t = y_true * (1 - self.label_smoothing) + self.label_smoothing / k
            per_class = -t * ops.log_softmax(logits, axis=-1)
            if class_weights is not None:
                per_class = per_class * class_weights
            return _weighted_mean(ops.sum(per_class, axis=-1), weight)
        t = y_true * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        positive = 1.0 if self.pos_weight is None else ops.convert_to_tensor(self.pos_weight, "float32")
        per_class = positive * t * ops.softplus(-logits) + (1 - t) * ops.softplus(logits)
        if class_weights is not None:
            per_class = per_class * class_weights
        return _weighted_mean(ops.mean(per_class, axis=-1), weight)

    def get_config(self):
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "pos_weight": self.pos_weight,
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="imseg")
class Focal(SegmentationLoss):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by `(1 - p_t) ** gamma`.

    Args:
        alpha: multilabel: weight of positives (negatives get `1 - alpha`); multiclass: a factor on
            every class. None: no weighting.
        gamma: focusing exponent (0: cross-entropy).
    """

    def __init__(self, task="multilabel", alpha=None, gamma=2.0, name="focal", **kwargs):
        super().__init__(task=task, name=name, **kwargs)
        self.alpha = _number("alpha", alpha, 0, 1, optional=True)
        self.gamma = _number("gamma", gamma)

    def compute(self, y_true, logits, weight):
        if self.task == "multiclass":
            log_p = ops.log_softmax(logits, axis=-1)
            per_class = -y_true * ops.power(1 - ops.exp(log_p), self.gamma) * log_p
            if self.alpha is not None:
                per_class = per_class * self.alpha
            return _weighted_mean(ops.sum(per_class, axis=-1), weight)
        p = ops.sigmoid(logits)
        p_t = p * y_true + (1 - p) * (1 - y_true)
        ce = y_true * ops.softplus(-logits) + (1 - y_true) * ops.softplus(logits)
        per_class = ops.power(1 - p_t, self.gamma) * ce
        if self.alpha is not None:
            per_class = per_class * (self.alpha * y_true + (1 - self.alpha) * (1 - y_true))
        return _weighted_mean(ops.mean(per_class, axis=-1), weight)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


class _RegionLoss(SegmentationLoss):
    """1 - mean over classes of a score made of batch sums of weighted probabilities and truth."""

    def __init__(self, task="multilabel", smooth=1.0, name=None, **kwargs):
        super().__init__(task=task, name=name, **kwargs)
        self.smooth = _number("smooth", smooth)

    def compute(self, y_true, logits, weight):
        p = self.probabilities(logits)
        w = weight[..., None]
        axes = tuple(range(len(p.shape) - 1))
        tp = ops.sum(w * p * y_true, axis=axes)
        fp = ops.sum(w * p * (1 - y_true), axis=axes)
        fn = ops.sum(w * (1 - p) * y_true, axis=axes)
        numerator, denominator = self.score(tp, fp, fn)
        numerator, denominator = numerator + self.smooth, denominator + self.smooth
        score = ops.where(denominator > 0, numerator / ops.maximum(denominator, 1e-12), 1.0)
        return 1 - ops.mean(score)

    def score(self, tp, fp, fn):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="imseg")
class Dice(_RegionLoss):
    """Soft Dice: per class `(2 TP + smooth) / (2 TP + FP + FN + smooth)` with soft counts."""

    def __init__(self, task="multilabel", smooth=1.0, name="dice", **kwargs):
        super().__init__(task=task, smooth=smooth, name=name, **kwargs)

    def score(self, tp, fp, fn):
        return 2 * tp, 2 * tp + fp + fn


@keras.saving.register_keras_serializable(package="imseg")
class Jaccard(_RegionLoss):
    """Soft Jaccard (IoU): per class `(TP + smooth) / (TP + FP + FN + smooth)` with soft counts."""

    def __init__(self, task="multilabel", smooth=1.0, name="jaccard", **kwargs):
        super().__init__(task=task, smooth=smooth, name=name, **kwargs)

    def score(self, tp, fp, fn):
        return tp, tp + fp + fn


@keras.saving.register_keras_serializable(package="imseg")
class Tversky(_RegionLoss):
    """Tversky (Salehi et al., 2017): `(TP + smooth) / (TP + alpha FP + beta FN + smooth)`; alpha = beta = 0.5
    is Dice, larger beta favours recall."""

    def __init__(self, task="multilabel", alpha=0.5, beta=0.5, smooth=1.0, name="tversky", **kwargs):
        super().__init__(task=task, smooth=smooth, name=name, **kwargs)
        self.alpha, self.beta = _number("alpha", alpha), _number("beta", beta)
        if self.alpha + self.beta == 0:
            raise ValueError("alpha and beta are both 0: the score is TP / TP, 1 whatever the prediction (the loss "
                             "trains nothing); give beta > 0 (recall) or alpha > 0 (precision)")  # fmt: skip

    def score(self, tp, fp, fn):
        return tp, tp + self.alpha * fp + self.beta * fn

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


def lovasz_grad(truth_sorted):
    """Gradient of the Lovász extension of the Jaccard loss for (K, M) 0/1 truth sorted by falling error."""
    positives = ops.sum(truth_sorted, axis=-1, keepdims=True)
    intersection = positives - ops.cumsum(truth_sorted, axis=-1)
    union = positives + ops.cumsum(1 - truth_sorted, axis=-1)
    jaccard = 1 - intersection / union  # union >= 1 everywhere
    return ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)


@keras.saving.register_keras_serializable(package="imseg")
class Lovasz(SegmentationLoss):
    """Lovász hinge (multilabel, per class) or Lovász-softmax (multiclass, classes present in the batch)."""

    def __init__(self, task="multilabel", name="lovasz", **kwargs):
        super().__init__(task=task, name=name, **kwargs)

    def compute(self, y_true, logits, weight):
        k = y_true.shape[-1]
        truth = ops.transpose(ops.reshape(y_true, (-1, k)))  # (K, M)
        valid = ops.reshape(weight, (1, -1)) > 0
        truth = ops.where(valid, truth, 0.0)
        if self.task == "multiclass":
            errors = ops.abs(truth - ops.transpose(ops.reshape(ops.softmax(logits, axis=-1), (-1, k))))
        else:
            errors = 1 - ops.transpose(ops.reshape(logits, (-1, k))) * (2 * truth - 1)
        errors = ops.where(valid, errors, -1.0)  # ignored pixels sort last and add nothing
        order = ops.argsort(-errors, axis=-1)
        errors_sorted = ops.take_along_axis(errors, order, axis=-1)
        truth_sorted = ops.take_along_axis(truth, order, axis=-1)
        per_class = ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(lovasz_grad(truth_sorted)), axis=-1)
        if self.task == "multilabel":
            return ops.mean(per_class)
        present = ops.cast(ops.sum(truth, axis=-1) > 0, "float32")
        return ops.divide_no_nan(ops.sum(per_class * present), ops.sum(present))


@keras.saving.register_keras_serializable(package="imseg")
class WeightedSum(SegmentationLoss):
    """`sum(weight_i * loss_i)`, e.g. cross-entropy + Dice.

    Args:
        losses: imseg losses (objects or their serialized configs), all of the same task.
        weights: one factor per loss (default all 1).
    """

    def __init__(self, losses, weights=None, task=None, name="weighted_sum", **kwargs):
        losses = [keras.saving.deserialize_keras_object(x) if isinstance(x, dict) else x for x in losses]
        if not losses or not all(isinstance(x, SegmentationLoss) for x in losses):
            raise ValueError("losses must be a non-empty list of imseg losses")
        tasks = sorted({x.task for x in losses} | ({task} if task else set()))
        if len(tasks) != 1:
            raise ValueError(f"every loss of a sum must have the same task, got {', '.join(tasks)}")
        super().__init__(task=tasks[0], name=name, **kwargs)
        self.losses = losses
        self.weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(losses):
            raise ValueError(f"{len(losses)} losses but {len(self.weights)} weights")

    def compute(self, y_true, logits, weight):
        return sum(w * loss.compute(y_true, logits, weight) for w, loss in zip(self.weights, self.losses))

    def get_config(self):
        return {
            **super().get_config(),
            "losses": [keras.saving.serialize_keras_object(x) for x in self.losses],
            "weights": self.weights,
        }


# Config names -> (loss class, the task it implies or None when it follows the config's task).
LOSSES = {
    "CrossEntropy": (CrossEntropy, None),
    "BinaryCrossentropy": (CrossEntropy, "multilabel"),
    "CategoricalCrossentropy": (CrossEntropy, "multiclass"),
    "Dice": (Dice, None),
    "Jaccard": (Jaccard, None),
    "Tversky": (Tversky, None),
    "Focal": (Focal, None),
    "BinaryFocalCrossentropy": (Focal, "multilabel"),
    "CategoricalFocalCrossentropy": (Focal, "multiclass"),
    "Lovasz": (Lovasz, None),
}
