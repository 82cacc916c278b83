"""The seed RefineNet (ResNet50, 224 px) on a GPU with Keras's JAX backend, printing JSON lines.

The lent GPU machines have no TensorFlow (and its wheel is too large to carry there), so this measures
imseg's network -- the same `imseg.blocks.refinenet_graph` on the same backbone -- trained and run by
Keras on JAX (always XLA-compiled). It does not run imseg's TensorFlow `train_step` (augmentation,
metrics); see docs/performance.md. Run: KERAS_BACKEND=jax python benchmarks/gpu_jax.py
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from run import emit, model_flops  # noqa: E402

from imseg.backbones import preprocess_weights  # noqa: E402
from imseg.blocks import refinenet_graph  # noqa: E402

BLOCKS = [["conv5_block3_out", "conv4_block6_out"], ["conv3_block4_out", "conv2_block3_out"]]
PEAK = {"float32": 495e12, "mixed_bfloat16": 989e12}  # H100 SXM dense tensor cores: TF32 (JAX default for f32) / BF16


def build(precision):
    keras.mixed_precision.set_global_policy(precision)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
    image, logits, _ = refinenet_graph(backbone, BLOCKS, 1, "caffe")
    model = keras.Model(image, logits)
    model.get_layer("preprocess").set_weights(preprocess_weights("caffe"))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=True
    )
    return model


def main():
    device = jax.devices()[0]
    emit("context", 0, "", device=str(device.device_kind), backend="jax", jax=jax.__version__, keras=keras.__version__)
    rng = np.random.default_rng(0)
    for precision in ("float32", "mixed_bfloat16"):
        model = build(precision)
        flops = model_flops(model)
        for batch in (8, 64):
            x = rng.integers(0, 255, (batch * 8, 224, 224, 3)).astype("float32")
            y = (rng.random((batch * 8, 224, 224, 1)) < 0.3).astype("float32")
            model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)  # compile
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
            rate = 2 * len(x) / (time.perf_counter() - start)
            train_flops = 3 * flops * rate  # forward + backward (about twice the forward)
            emit(
                "gpu.train.images_per_s",
                rate,
                "images/s",
                precision=precision,
                batch=batch,
                size=224,
                gflops_per_image_forward=round(flops / 1e9, 2),
                achieved_tflops=round(train_flops / 1e12, 1),
                fraction_of_peak=round(train_flops / PEAK[precision], 3),
            )
            model.predict(x[:batch], batch_size=batch, verbose=0)
            start = time.perf_counter()
            model.predict(x, batch_size=batch, verbose=0)
            rate = len(x) / (time.perf_counter() - start)
            emit(
                "gpu.infer.images_per_s",
                rate,
                "images/s",
                precision=precision,
                batch=batch,
                achieved_tflops=round(flops * rate / 1e12, 1),
                fraction_of_peak=round(flops * rate / PEAK[precision], 3),
            )


if __name__ == "__main__":
    main()
