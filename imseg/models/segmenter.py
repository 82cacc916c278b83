"""The Segmenter: backbone + decoder + head, and how such a network trains.

The network knows nothing of training and the training knows no one network: any backbone cut into feature
maps, any registered decoder (`imseg.models.registry`), and on top a 1x1 head and a bilinear upsampling to the
input, as keras-hub's image segmenters are built. The Segmenter owns what training adds: augmentation inside the
training step, an exponential moving average of the weights, the valid mask as Keras `sample_weight`, and the
work-arounds distribution needs. Everything it is made of comes in as constructor arguments — the
normalisation, the pixels' value range and the head's prior included — so `get_config()` never changes.
"""

import contextlib
import json

import keras
from keras import ops

from imseg.augment import SegmentationAugment
from imseg.distribute import draw_index, local_batch, per_worker_logs
from imseg.models.network import segmentation_graph


@keras.saving.register_keras_serializable(package="imseg")
class Segmenter(keras.Model):
    """A segmentation network from a backbone's feature maps, a decoder and a per-class head.

    Takes images `(N, h, w, C)` of raw pixel values (any numeric dtype) and returns float32 logits
    `(N, h, w, num_classes)`: independent sigmoids per class for `task="multilabel"`, one softmax over the
    classes for `task="multiclass"`. The input normalisation is the graph's first layer (`preprocess`, a frozen
    1x1 conv). Training batches are `(images, masks)` or `(images, masks, valid)`, `valid` (N, h, w) being the
    per-pixel sample weight (0: ignored pixel); `augment` applies inside `train_step` only. With `ema_decay`,
    every training step also updates a moving average of all weights (BatchNorm statistics included), which
    `swap_ema_weights()` exchanges with the weights. `inference_model()` is the same network as a plain
    functional model of built-in layers: what imseg saves as `best.keras`.

    Args:
        backbone: a functional model whose outputs are the feature maps (see
            `imseg.models.backbones.feature_extractor`).
        feature_keys: the names the decoder knows those outputs by, in order (e.g. `["P2", "P3", "P4", "P5"]`).
        num_classes: output channels.
        decoder: the registered name of the decoder (`imseg.models.registry`).
        decoder_kwargs: its options.
        class_names: the classes' names (kept in the config).
        task: "multilabel" or "multiclass".
        threshold: the multilabel decision threshold (metrics, masks).
        normalization: the input normalisation: a keras.applications mode ("caffe", "tf", "torch", "none") or
            {"mean": [...], "std": [...]} per band.
        value_range: (low, high) of the pixel values, which photometric augmentation works in.
        head_bias: the head's initial bias per class (the class prior, see `imseg.build.head_prior`), or None
            for zeros.
        augment: keyword arguments of `SegmentationAugment`, or None for no augmentation.
        ema_decay: the decay of a moving average of all weights, or None.
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        backbone,
        feature_keys,
        num_classes,
        decoder="RefineNet",
        decoder_kwargs=None,
        class_names=None,
        task="multilabel",
        threshold=0.0,
        normalization="none",
        value_range=(0.0, 255.0),
        head_bias=None,
        augment=None,
        ema_decay=None,
        **kwargs,
    ):
        feature_keys = [str(key) for key in feature_keys]
        decoder_kwargs = dict(decoder_kwargs or {})
        image, logits = segmentation_graph(backbone, feature_keys, num_classes, decoder, decoder_kwargs,
                                           normalization, head_bias)  # fmt: skip
        super().__init__(inputs=image, outputs=logits, **kwargs)

        self.backbone = backbone
        self.feature_keys = feature_keys
        self.num_classes = int(num_classes)
        self.decoder = decoder
        self.decoder_kwargs = decoder_kwargs
        self.class_names = list(class_names) if class_names else None
        self.task = task
        self.threshold = float(threshold)
        self.normalization = normalization
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.head_bias = [float(b) for b in head_bias] if head_bias else None
        self.augment = dict(augment) if augment else None
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.augmenter = (
            SegmentationAugment(**self.augment, value_range=self.value_range, name="augment") if self.augment else None
        )
        self._ema_pairs = []
        if self.ema_decay is not None:
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
                )  # fmt: skip
                for i, v in enumerate(list(self.weights))
            ]
            for v, average in self._ema_pairs:
                average.assign(v)

    def _batch(self, data):
        """(images, masks, valid) as float32; valid is all ones when the data has none."""
        images, masks, valid = keras.utils.unpack_x_y_sample_weight(data)
        images, masks = ops.cast(images, "float32"), ops.cast(masks, "float32")
        valid = ops.ones(ops.shape(masks)[:-1]) if valid is None else ops.cast(valid, "float32")
        return images, masks, valid

    def train_step(self, data):
        images, masks, valid = self._batch(data)
        if self.augmenter is not None:
            step = draw_index(self.optimizer.iterations, self.distribute_strategy)
            images, masks, valid = self.augmenter(images, masks, valid, step)
        logs = super().train_step((images, masks, valid))
        if self._ema_pairs:
            # Warm-up as in TF Model Garden: early averages are not dominated by the initial weights.
            n = ops.cast(self.optimizer.iterations, "float32")
            decay = ops.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))
            for v, average in self._ema_pairs:
                average.assign(average * ops.cast(decay, average.dtype) + v * ops.cast(1 - decay, average.dtype))
        return per_worker_logs(logs, self.distribute_strategy)

    def test_step(self, data):
        return per_worker_logs(super().test_step(self._batch(data)), self.distribute_strategy)

    def swap_ema_weights(self):
        """Exchange the weights and their moving averages (no-op without `ema_decay`)."""
        for v, average in self._ema_pairs:
            value = ops.copy(v.value)
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
        # Keras averages a first distributed batch over all replicas (a collective across workers) only to learn
        # its shapes, which fails under MultiWorkerMirroredStrategy (keras-team/keras#20585); this worker's own
        # first replica's values give the same shapes. No public hook replaces this step of `fit`.
        if iterator is None or self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        for _, _, it in iterator:
            data_batch = local_batch(next(it))
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
            "feature_keys": self.feature_keys,
            "num_classes": self.num_classes,
            "decoder": self.decoder,
            "decoder_kwargs": self.decoder_kwargs,
            "class_names": self.class_names,
            "task": self.task,
            "threshold": self.threshold,
            "normalization": self.normalization,
            "value_range": list(self.value_range),
            "head_bias": self.head_bias,
            "augment": self.augment,
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
