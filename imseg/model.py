"""The RefineNet model: backbone features -> RefineNet blocks -> per-class logits at input size."""

import json

import keras
import tensorflow as tf

from imseg.augment import SegmentationAugment
from imseg.backbones import preprocess_weights
from imseg.blocks import refinenet_graph


@keras.saving.register_keras_serializable(package="imseg")
class RefineNet(keras.Model):
    """RefineNet (Lin et al., CVPR 2017) on a `keras.applications` backbone, for multi-label masks.

    Takes 0-255 RGB images `(N, h, w, 3)` (any numeric dtype) and returns float32 logits
    `(N, h, w, num_classes)`. The backbone's own input normalisation is part of the graph.
    `feature_layers` lists blocks of backbone layer names, low resolution first; every block after
    the first also gets the previous block's output. Training applies `augment` (a
    `SegmentationAugment` config) inside `train_step` only.

    `backbone` is kept (and saved) only up to its deepest feature layer.
    `inference_model()` returns the same network as a plain functional model of built-in layers,
    which is what imseg saves as `best.keras`.
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
        **kwargs,
    ):
        feature_layers = [list(block) for block in feature_layers]
        image, logits, extractor = refinenet_graph(
            backbone, feature_layers, num_classes, preprocessing, reduce_channel_scale, rcu_kwargs, mrf_kwargs,
            crp_kwargs,
        )
        super().__init__(inputs=image, outputs=logits, **kwargs)
        self.get_layer("preprocess").set_weights(preprocess_weights(preprocessing))

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
        self.augmenter = SegmentationAugment(**self.augment, name="augment") if self.augment else None

    def _training_batch(self, data):
        images, masks = data
        images, masks = tf.cast(images, "float32"), tf.cast(masks, "float32")
        if self.augmenter is not None:
            context = tf.distribute.get_replica_context()
            replicas = self.distribute_strategy.num_replicas_in_sync
            replica = context.replica_id_in_sync_group if context is not None else 0
            step = tf.cast(self.optimizer.iterations, tf.int64) * replicas + tf.cast(replica, tf.int64)
            images, masks = self.augmenter(images, masks, step)
        return images, masks

    def train_step(self, data):
        return _per_worker_logs(super().train_step(self._training_batch(data)), self.distribute_strategy)

    def test_step(self, data):
        images, masks = data
        logs = super().test_step((tf.cast(images, "float32"), tf.cast(masks, "float32")))
        return _per_worker_logs(logs, self.distribute_strategy)

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
        if any(getattr(layer, "synchronized", False) for layer in model._flatten_layers()):
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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


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
