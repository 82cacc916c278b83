"""Config -> compiled model under a distribution strategy, with precision and XLA chosen for the device."""

import inspect
import json
import os

import keras
import tensorflow as tf

from imseg.backbones import make_backbone, preprocess_mode
from imseg.config import _did_you_mean
from imseg.errors import ConfigError
from imseg.metrics import SegmentationMetrics
from imseg.model import RefineNet


def is_multi_worker():
    """True when TF_CONFIG describes a cluster of several workers (one process per machine)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        return False
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")) > 1


def make_strategy(devices=None):
    """The distribution strategy for this process.

    With a multi-worker TF_CONFIG: MultiWorkerMirroredStrategy over every worker's GPUs (or CPU). Otherwise
    MirroredStrategy over `devices` (default: every visible GPU, else the first CPU). A multi-worker
    strategy must be made before TensorFlow runs anything, so call this early.
    """
    if devices is None and is_multi_worker():
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None and not _has_gpu():
        devices = ["/cpu:0"]  # not every logical CPU a process may have configured
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy):
    """Whether this process writes outputs: always with one worker; the chief (worker 0) with several."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def _has_gpu():
    return bool(tf.config.list_logical_devices("GPU"))


def _cpu_has_bf16():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _gpu_has_bf16():
    details = [tf.config.experimental.get_device_details(d) for d in tf.config.list_physical_devices("GPU")]
    return bool(details) and all(d.get("compute_capability", (0, 0)) >= (8, 0) for d in details)


def resolve_precision(setting):
    """`auto` -> mixed_bfloat16 where the hardware computes bf16 natively (AVX512-BF16/AMX CPUs,
    Ampere+ GPUs), else float32; `none` -> float32."""
    if setting == "auto":
        native = _gpu_has_bf16() if _has_gpu() else _cpu_has_bf16()
        return "mixed_bfloat16" if native else "float32"
    return "float32" if setting == "none" else setting


def resolve_jit(setting, strategy):
    """`auto` -> XLA on a single GPU; off on CPU (slower there) and across replicas (fails there)."""
    if setting != "auto":
        return setting
    return strategy.num_replicas_in_sync == 1 and _has_gpu()


def _resolve(kind, module, name, kwargs, source):
    """A Keras loss or optimizer from its name (class or function, any case) and keyword arguments."""
    try:
        obj = module.get(name)
    except (ValueError, TypeError):
        obj = None
    if obj is None:
        known = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v) and n != "get")
        raise ConfigError(f"{source}: key '{kind}': unknown {kind} '{name}'{_did_you_mean(name, known)}")
    if inspect.isclass(obj):
        factory = obj
    elif isinstance(obj, (keras.optimizers.Optimizer, keras.losses.Loss)):
        factory = type(obj)
    else:  # a loss function such as binary_crossentropy: use its class, which takes arguments and saves
        factory = _loss_class_of(obj)
        if factory is None:
            if kwargs:
                raise ConfigError(f"{source}: key '{kind}_kwargs': loss function '{name}' takes no arguments")
            return obj
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: key '{kind}_kwargs': {factory.__name__}: {e}") from None


def _loss_class_of(function):
    for cls in vars(keras.losses).values():
        if inspect.isclass(cls) and issubclass(cls, keras.losses.Loss):
            default_name = inspect.signature(cls).parameters.get("name")
            if default_name is not None and default_name.default == function.__name__:
                return cls
    return None


def make_loss(config, source="config"):
    return _resolve("loss", keras.losses, config.loss, config.loss_kwargs, source)


def make_optimizer(config, source="config"):
    return _resolve("optimizer", keras.optimizers, config.optimizer, config.optimizer_kwargs, source)


def build_refinenet(config, class_names, source="config"):
    backbone = make_backbone(config, source)
    rn = config.refine_net_kwargs
    try:
        return RefineNet(
            backbone=backbone,
            feature_layers=config.refine_net_blocks,
            num_classes=len(class_names),
            class_names=class_names,
            preprocessing=preprocess_mode(config.backbone),
            reduce_channel_scale=rn.reduce_channel_scale,
            rcu_kwargs=vars(rn.rcu_kwargs),
            mrf_kwargs=vars(rn.mrf_kwargs),
            crp_kwargs=vars(rn.crp_kwargs),
            augment=vars(config.augment) if config.augment.enabled else None,
            threshold=config.threshold,
            name=f"refinenet_{backbone.name}",
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


MODEL_BUILDERS = {"RefineNet": build_refinenet}


def build_model(config, class_names, strategy=None, source="config"):
    """Build and compile the configured model under `strategy`.

    Sets the global Keras dtype policy from `config.mixed_precision` (it must be set before layers
    are made). Returns (model, details) where details records the precision and XLA choice.
    """
    strategy = strategy or make_strategy()
    precision = resolve_precision(config.mixed_precision)
    if config.jit_compile is True and precision == "mixed_bfloat16" and not _has_gpu():
        raise ConfigError(
            f"{source}: key 'jit_compile': XLA on the CPU cannot compile mixed_bfloat16 training (it rejects the "
            "mixed-precision gradients); set jit_compile: auto or false, or mixed_precision: none"
        )
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = MODEL_BUILDERS[config.type](config, class_names, source)
        if strategy.num_replicas_in_sync > 1:
            # Batch statistics over the global batch (SyncBatchNorm): replicas keep identical moving
            # averages, which Keras would otherwise let drift apart, one copy per device.
            for layer in model._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        loss = make_loss(config, source)
        optimizer = make_optimizer(config, source)
        jit = resolve_jit(config.jit_compile, strategy)
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=[SegmentationMetrics(class_names, threshold=config.threshold)],
            jit_compile=jit,
        )
    details = {"precision": precision, "jit_compile": jit, "replicas": strategy.num_replicas_in_sync}
    return model, details
