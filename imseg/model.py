"""The RefineNet model: backbone features -> RefineNet blocks -> per-class logits at input size."""

import contextlib
import json

import keras
import tensorflow as tf

from imseg.augment import SegmentationAugment
from imseg.backbones import preprocess_weights
from imseg.blocks import refinenet_graph


@keras.saving.register_keras_serializable(package="imseg")
class RefineNet(keras.Model):
    """RefineNet (Lin et al., CVPR 2017) on a `keras.applications` backbone.

    Takes 0-255 RGB images `(N, h, w, 3)` (any numeric dtype) and returns float32 logits
    `(N, h, w, num_classes)`: independent sigmoids per class for `task="multilabel"`, one softmax over
    the classes for `task="multiclass"`. The backbone's own input normalisation is part of the graph.
    `feature_layers` lists blocks of backbone layer names, low resolution first; every block after
    the first also gets the previous block's output. Training batches are `(images, masks)` or
    `(images, masks, valid)`, `valid` (N, h, w) being the per-pixel sample weight (0: ignored pixel).
    Training applies `augment` (a `SegmentationAugment` config) inside `train_step` only.
    With `ema_decay`, every training step also updates an exponential moving average of all weights
    (BatchNorm statistics included), which `swap_ema_weights()` exchanges with the weights.

    `backbone` is kept (and saved) only up to its deepest feature layer.
    `inference_model()` returns the same network as a plain functional model of built-in layers,
    which is what imseg saves as `best.keras`.

    Args:
        backbone: a `keras.applications` model without top.
        feature_layers: blocks of backbone layer names, e.g. `[["conv5_block3_out", "conv4_block6_out"], ...]`.
        num_classes: output channels.
        class_names: their names (kept in the config).
        preprocessing: the input normalisation: a keras.applications mode ("caffe", "tf", "torch", "none") or
            {"mean": [...], "std": [...]} per band.
        reduce_channel_scale, rcu_kwargs, mrf_kwargs, crp_kwargs: the RefineNet blocks' options
            (see `imseg.blocks`).
        augment: keyword arguments of `SegmentationAugment`, or None for no augmentation.
        threshold: the multilabel decision threshold (metrics, masks).
        task: "multilabel" or "multiclass".
        ema_decay: the decay of a moving average of all weights, or None.
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        backbone,
        feature_layers,
        num_classes,
        class_names=None,
        preprocessing="none",
        reduce_channel_scale=4,
        rcu_kwargs=None,
        mrf_kwargs=None,
        crp_kwargs=None,
        augment=None,
        threshold=0.0,
        task="multilabel",
        ema_decay=None,
        **kwargs,
    ):
        feature_layers = [list(block) for block in feature_layers]
        image, logits, extractor = refinenet_graph(
            backbone,
            feature_layers,
            num_classes,
            preprocessing,
            reduce_channel_scale,
            rcu_kwargs,
            mrf_kwargs,
            crp_kwargs,
        )
        super().__init__(inputs=image, outputs=logits, **kwargs)
        self.get_layer("preprocess").set_weights(preprocess_weights(preprocessing, self.input_shape[-1]))

        self.backbone = extractor
        self.feature_layers = feature_layers
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.preprocessing = preprocessing
        self.reduce_channel_scale = reduce_channel_scale
        self.rcu_kwargs = dict(rcu_kwargs or {})
        self.mrf_kwargs = dict(mrf_kwargs or {})
        self.crp_kwargs = dict(crp_kwargs or {})
        self.augment = dict(augment) if augment else None
        self.threshold = float(threshold)
        self.task = task
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.augmenter = SegmentationAugment(**self.augment, name="augment") if self.augment else None
        self._ema_pairs = []
        if self.ema_decay is not None:
            sources = list(self.weights)
            self._ema_pairs = [
                (
                    v,
                    self.add_weight(
                        shape=v.shape,
                        dtype=v.dtype,
                        trainable=False,
                        initializer="zeros",
                        aggregation="only_first_replica",
                        name=f"ema_{i}",
                    ),
                )
                for i, v in enumerate(sources)
            ]
            for v, average in self._ema_pairs:
                average.assign(v)

    def _batch(self, data):
        """(images, masks, valid) as float32; valid is all ones when the data has none."""
        images, masks, valid = keras.utils.unpack_x_y_sample_weight(data)
        images, masks = tf.cast(images, "float32"), tf.cast(masks, "float32")
        valid = tf.ones(tf.shape(masks)[:-1]) if valid is None else tf.cast(valid, "float32")
        return images, masks, valid

    def train_step(self, data):
        images, masks, valid = self._batch(data)
        if self.augmenter is not None:
            context = tf.distribute.get_replica_context()
            replicas = self.distribute_strategy.num_replicas_in_sync
            replica = context.replica_id_in_sync_group if context is not None else 0
            step = tf.cast(self.optimizer.iterations, tf.int64) * replicas + tf.cast(replica, tf.int64)
            images, masks, valid = self.augmenter(images, masks, valid, step)
        logs = super().train_step((images, masks, valid))
        if self._ema_pairs:
            # Warm-up as in TF Model Garden: early averages are not dominated by the initial weights.
            n = tf.cast(self.optimizer.iterations, "float32")
            decay = tf.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))
            for v, average in self._ema_pairs:
                average.assign(average * tf.cast(decay, average.dtype) + v * tf.cast(1 - decay, average.dtype))
        return _per_worker_logs(logs, self.distribute_strategy)

    def test_step(self, data):
        logs = super().test_step(self._batch(data))
        return _per_worker_logs(logs, self.distribute_strategy)

    def set_normalization(self, mean, std):
        """Normalise the input bands as (x - mean) / std (the `preprocess` layer), e.g. from the training split."""
        self.preprocessing = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
        self.get_layer("preprocess").set_weights(preprocess_weights(self.preprocessing, self.input_shape[-1]))

    def set_value_range(self, low, high):
        """The pixels' range, which augmentation works in (see SegmentationAugment's `value_range`)."""
        if self.augmenter is not None:
            self.augment = {**self.augment, "value_range": [float(low), float(high)]}
            self.augmenter.value_range = (float(low), float(high))

    def swap_ema_weights(self):
        """Exchange the weights and their moving averages (no-op without `ema_decay`)."""
        for v, average in self._ema_pairs:
            value = tf.identity(v.value)
            v.assign(average.value)
            average.assign(value)

    @contextlib.contextmanager
    def ema_weights(self):
        """Within the block the model holds its moving-average weights (its own without `ema_decay`)."""
        self.swap_ema_weights()
        try:
            yield self
        finally:
            self.swap_ema_weights()

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras all-reduces a first distributed batch just to learn its shapes, which fails under
        # MultiWorkerMirroredStrategy (keras-team/keras#20585); this worker's local values suffice.
        if iterator is None or self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda x: x.values[0] if isinstance(x, tf.distribute.DistributedValues) else x, next(it)
            )
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def inference_model(self):
        """This network as a plain `keras.Model` of built-in layers.

        It shares the weights, except after multi-device training: then it is a copy whose BatchNorm
        layers are no longer synchronized (an option only TensorFlow knows), so it loads on any backend.
        """
        model = keras.Model(self.inputs, self.outputs, name=self.name)
        if any(getattr(layer, "synchronized", False) for layer in all_layers(model)):
            model = rebuilt(model, lambda node: {**node, "synchronized": False} if "synchronized" in node else node)
        return model

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "feature_layers": self.feature_layers,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "preprocessing": self.preprocessing,
            "reduce_channel_scale": self.reduce_channel_scale,
            "rcu_kwargs": self.rcu_kwargs,
            "mrf_kwargs": self.mrf_kwargs,
            "crp_kwargs": self.crp_kwargs,
            "augment": self.augment,
            "threshold": self.threshold,
            "task": self.task,
            "ema_decay": self.ema_decay,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def all_layers(model):
    """Every layer of a model, nested models' layers included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def rebuilt(model, edit):
    """A copy of a functional model with `edit` applied to every dict of its serialized config."""

    def walk(node):
        if isinstance(node, dict):
            return edit({k: walk(v) for k, v in node.items()})
        return [walk(v) for v in node] if isinstance(node, list) else node

    config = walk(json.loads(json.dumps(keras.saving.serialize_keras_object(model))))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _per_worker_logs(logs, strategy):
    """Keras averages step logs over workers along axis 0, which scalars lack (keras-team/keras#20585)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return tf.nest.map_structure(lambda v: tf.expand_dims(v, 0), logs)
    return logs
