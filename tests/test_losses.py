"""Every loss equals a NumPy reference, honours the valid mask, and stays finite where a naive formula is not."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_round_trip
from imseg.distribute import make_strategy
from imseg.losses import CrossEntropy, Dice, Focal, Jaccard, Lovasz, Tversky, WeightedSum

K = 3


def batch(task, seed=0, n=2, h=5, w=6):
    """(truth, logits, valid): multilabel truth overlaps freely; multiclass truth is one-hot; a third invalid."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, h, w, K)).astype("float32")
    if task == "multiclass":
        truth = np.eye(K, dtype="float32")[rng.integers(0, K, (n, h, w))]
    else:
        truth = (rng.random((n, h, w, K)) < 0.4).astype("float32")
    valid = (rng.random((n, h, w)) < 0.67).astype("float32")
    return truth, logits, valid


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def probs(task, z):
    return softmax(z) if task == "multiclass" else sigmoid(z)


def ref_cross_entropy(task, t, z, v, class_weights=None, pos_weight=None, label_smoothing=0.0):
    cw = np.ones(K) if class_weights is None else np.asarray(class_weights)
    if task == "multiclass":
        t = t * (1 - label_smoothing) + label_smoothing / K
        per_pixel = -(cw * t * np.log(softmax(z))).sum(-1)
    else:
        t = t * (1 - label_smoothing) + 0.5 * label_smoothing
        pw = 1.0 if pos_weight is None else np.asarray(pos_weight)
        p = sigmoid(z)
        per_pixel = (cw * -(pw * t * np.log(p) + (1 - t) * np.log(1 - p))).mean(-1)
    return (per_pixel * v).sum() / v.sum()


def ref_focal(task, t, z, v, alpha=None, gamma=2.0):
    p = probs(task, z)
    if task == "multiclass":
        per_pixel = -(t * (1 - p) ** gamma * np.log(p)).sum(-1) * (1.0 if alpha is None else alpha)
    else:
        p_t = np.where(t == 1, p, 1 - p)
        a_t = 1.0 if alpha is None else np.where(t == 1, alpha, 1 - alpha)
        per_pixel = (a_t * (1 - p_t) ** gamma * -np.log(p_t)).mean(-1)
    return (per_pixel * v).sum() / v.sum()


def soft_counts(task, t, z, v):
    p, w = probs(task, z), v[..., None]
    axes = (0, 1, 2)
    return (w * p * t).sum(axes), (w * p * (1 - t)).sum(axes), (w * (1 - p) * t).sum(axes)


def ref_tversky(task, t, z, v, alpha, beta, smooth=1.0):
    tp, fp, fn = soft_counts(task, t, z, v)
    return 1 - np.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))


def ref_dice(task, t, z, v, smooth=1.0):
    tp, fp, fn = soft_counts(task, t, z, v)
    return 1 - np.mean((2 * tp + smooth) / (2 * tp + fp + fn + smooth))


def ref_jaccard(task, t, z, v, smooth=1.0):
    tp, fp, fn = soft_counts(task, t, z, v)
    return 1 - np.mean((tp + smooth) / (tp + fp + fn + smooth))


def ref_lovasz_grad(gt):
    """Berman et al.'s reference implementation (lovasz_losses.py), in NumPy."""
    gts = gt.sum()
    intersection = gts - gt.cumsum()
    union = gts + (1 - gt).cumsum()
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def ref_lovasz(task, t, z, v):
    keep = v.reshape(-1) > 0
    t, z = t.reshape(-1, K)[keep], z.reshape(-1, K)[keep]
    losses, present = [], []
    for c in range(K):
        fg = t[:, c]
        errors = np.abs(fg - softmax(z)[:, c]) if task == "multiclass" else 1 - z[:, c] * (2 * fg - 1)
        order = np.argsort(-errors, kind="stable")
        losses.append(np.dot(np.maximum(errors[order], 0), ref_lovasz_grad(fg[order])))
        present.append(fg.sum() > 0)
    if task == "multiclass":
        return np.mean([x for x, p in zip(losses, present) if p]) if any(present) else 0.0
    return np.mean(losses)


CASES = [
    (CrossEntropy, {}, ref_cross_entropy),
    (CrossEntropy, {"class_weights": [1.0, 2.0, 0.5]}, ref_cross_entropy),
    (CrossEntropy, {"label_smoothing": 0.1}, ref_cross_entropy),
    (Focal, {}, ref_focal),
    (Focal, {"alpha": 0.25, "gamma": 1.5}, ref_focal),
    (Dice, {}, ref_dice),
    (Dice, {"smooth": 0.0}, ref_dice),
    (Jaccard, {}, ref_jaccard),
    (Tversky, {"alpha": 0.3, "beta": 0.7}, lambda task, t, z, v, **kw: ref_tversky(task, t, z, v, **kw)),
    (Lovasz, {}, ref_lovasz),
]


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
@pytest.mark.parametrize("cls, kwargs, reference", CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_loss_equals_numpy_reference_over_valid_pixels(cls, kwargs, reference, task):
    t, z, v = batch(task)
    value = float(cls(task=task, **kwargs)(t, z, v))
    np.testing.assert_allclose(value, reference(task, t, z, v, **kwargs), rtol=2e-5, atol=1e-6)


def test_pos_weight_weights_the_positive_term():
    t, z, v = batch("multilabel")
    loss = CrossEntropy(pos_weight=[3.0, 1.0, 0.5])
    np.testing.assert_allclose(
        float(loss(t, z, v)), ref_cross_entropy("multilabel", t, z, v, pos_weight=[3, 1, 0.5]), rtol=2e-5
    )


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
@pytest.mark.parametrize("cls", [CrossEntropy, Focal, Dice, Jaccard, Tversky, Lovasz])
def test_ignored_pixels_change_nothing(cls, task):
    t, z, v = batch(task)
    rng = np.random.default_rng(1)
    t2, z2 = t.copy(), z.copy()
    off = v == 0
    z2[off] = rng.normal(0, 5, (off.sum(), K))
    t2[off] = 1 - t2[off] if task == "multilabel" else np.roll(t2[off], 1, axis=-1)
    np.testing.assert_allclose(float(cls(task=task)(t, z, v)), float(cls(task=task)(t2, z2, v)), rtol=1e-6)


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
@pytest.mark.parametrize("cls", [CrossEntropy, Focal, Dice, Jaccard, Tversky, Lovasz])
def test_an_all_ignored_batch_gives_zero_loss_and_zero_gradients(cls, task):
    t, z, _ = batch(task)
    logits = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = cls(task=task)(t, logits, np.zeros(z.shape[:-1], "float32"))
    grad = tape.gradient(loss, logits)
    assert float(loss) == 0.0
    assert grad is None or np.all(grad.numpy() == 0)


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
@pytest.mark.parametrize("cls", [CrossEntropy, Focal, Dice, Jaccard, Tversky, Lovasz])
def test_a_class_absent_from_the_batch_stays_finite(cls, task):
    t, z, v = batch(task)
    if task == "multiclass":
        t = np.eye(K, dtype="float32")[np.where(t.argmax(-1) == 2, 0, t.argmax(-1))]  # class 2 never true
    else:
        t[..., 2] = 0
    logits = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = cls(task=task, **({"smooth": 0.0} if cls in (Dice, Jaccard, Tversky) else {}))(t, logits, v)
    assert np.isfinite(float(loss)) and np.isfinite(tape.gradient(loss, logits).numpy()).all()


def test_binary_cross_entropy_without_valid_mask_equals_keras():
    t, z, _ = batch("multilabel")
    ours = CrossEntropy()(t, z)
    theirs = keras.losses.BinaryCrossentropy(from_logits=True)(t, z)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-6)
    t, z, _ = batch("multiclass")
    theirs = keras.losses.CategoricalCrossentropy(from_logits=True)(t, z)
    np.testing.assert_allclose(float(CrossEntropy(task="multiclass")(t, z)), float(theirs), rtol=1e-6)


@pytest.mark.parametrize("cls", [CrossEntropy, Dice, Lovasz])
def test_bfloat16_logits_are_computed_in_float32(cls):
    t, z, v = batch("multilabel")
    z16 = tf.cast(z, tf.bfloat16)
    value = cls()(t, z16, v)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), float(cls()(t, tf.cast(z16, tf.float32), v)), rtol=1e-6)


def test_weighted_sum_adds_its_parts():
    t, z, v = batch("multiclass")
    parts = [CrossEntropy(task="multiclass"), Dice(task="multiclass")]
    total = WeightedSum(parts, [1.0, 0.5])(t, z, v)
    np.testing.assert_allclose(float(total), float(parts[0](t, z, v)) + 0.5 * float(parts[1](t, z, v)), rtol=1e-6)


def test_weighted_sum_refuses_mixed_tasks():
    with pytest.raises(ValueError, match="same task"):
        WeightedSum([CrossEntropy(task="multilabel"), Dice(task="multiclass")])


@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropy(task="multiclass", class_weights=[1, 2, 3], label_smoothing=0.1),
        CrossEntropy(pos_weight=2.0),
        Focal(alpha=0.25, gamma=1.0),
        Dice(smooth=0.5),
        Jaccard(),
        Tversky(alpha=0.2, beta=0.8),
        Lovasz(task="multiclass"),
        WeightedSum([CrossEntropy(), Dice()], [1.0, 2.0]),
    ],
    ids=lambda x: type(x).__name__,
)
def test_round_trip(loss):
    clone = assert_round_trip(loss)
    t, z, v = batch(loss.task)
    assert float(clone(t, z, v)) == float(loss(t, z, v))


def test_from_logits_false_is_refused():
    with pytest.raises(ValueError, match="from_logits must be true"):
        CrossEntropy(from_logits=False)


def test_each_replica_returns_its_share_of_the_mean():
    t, z, v = batch("multilabel")
    strategy = make_strategy(["/cpu:0", "/cpu:1"])
    per_replica = strategy.run(lambda: CrossEntropy()(t, z, v))
    values = [float(x) for x in strategy.experimental_local_results(per_replica)]
    expected = ref_cross_entropy("multilabel", t, z, v) / 2  # summing replicas' gradients gives the mean's
    np.testing.assert_allclose(values, [expected, expected], rtol=2e-5)
