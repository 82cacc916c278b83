"""Devices: the distribution strategy, the precision and XLA chosen for them, and which process writes.

The one place that probes the hardware (TF Model Garden keeps the same in `distribute_utils`).
"""

import json
import os

import tensorflow as tf


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
    if devices is None and not has_gpu():
        devices = ["/cpu:0"]  # not every logical CPU a process may have configured
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy):
    """Whether this process writes outputs: always with one worker; the chief (worker 0) with several."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def has_gpu():
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
        native = _gpu_has_bf16() if has_gpu() else _cpu_has_bf16()
        return "mixed_bfloat16" if native else "float32"
    return "float32" if setting == "none" else setting


def resolve_jit(setting, strategy):
    """`auto` -> XLA on a single GPU; off on CPU (slower there) and across replicas (fails there)."""
    if setting != "auto":
        return setting
    return strategy.num_replicas_in_sync == 1 and has_gpu()


# --- What a training step needs from tf.distribute (the Segmenter's only TensorFlow).


def replicas_in_sync():
    """How many replicas compute this step (1 outside a distribution strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def draw_index(step, strategy):
    """A number unique to this step and replica (`step * replicas + replica`): each replica draws its own
    augmentation, and a resumed run draws what the uninterrupted one would have."""
    context = tf.distribute.get_replica_context()
    replica = context.replica_id_in_sync_group if context is not None else 0
    return tf.cast(step, tf.int64) * strategy.num_replicas_in_sync + tf.cast(replica, tf.int64)


def local_batch(batch):
    """A distributed batch as this worker's first replica sees it (no values are exchanged between workers)."""
    return tf.nest.map_structure(lambda x: x.values[0] if isinstance(x, tf.distribute.DistributedValues) else x, batch)


def per_worker_logs(logs, strategy):
    """Keras averages step logs over workers along axis 0, which scalars lack (keras-team/keras#20585)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return tf.nest.map_structure(lambda v: tf.expand_dims(v, 0), logs)
    return logs
