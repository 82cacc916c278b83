"""The seed RefineNet (ResNet50, 224 px) on a GPU with Keras's JAX backend, printing JSON lines.

The lent GPU machines have no TensorFlow (and its wheel is too large to carry there), so this measures
imseg's network -- the same `imseg.models.network.segmentation_graph` on the same backbone -- trained and run by
Keras on JAX (always XLA-compiled). It does not run imseg's TensorFlow `train_step` (augmentation,
metrics); see docs/performance.md.

    KERAS_BACKEND=jax python benchmarks/gpu_jax.py [--batches 8 64] [--steps 30] [--repeats 3]
    KERAS_BACKEND=jax python benchmarks/gpu_jax.py --size 64 --batches 2 --steps 2   # a CPU smoke test

Training is fed three ways, each timed after its compilation, `--repeats` times in one process:
`fit` (NumPy arrays through `model.fit`, as a Keras user would), `numpy` (a jitted step of Keras's stateless
API, each batch copied from host memory) and `device` (the same step on batches already resident on the
device): `numpy` against `device` is the host-to-device copy, `fit` against `numpy` Keras's loop.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from run import emit, model_flops, spread  # noqa: E402

from imseg.models.backbones import STRIDES, feature_extractor, pyramid  # noqa: E402
from imseg.models.network import segmentation_graph  # noqa: E402

BLOCKS = [["conv5_block3_out", "conv4_block6_out"], ["conv3_block4_out", "conv2_block3_out"]]
PEAK = {"float32": 495e12, "mixed_bfloat16": 989e12}  # H100 SXM dense tensor cores: TF32 (JAX default for f32) / BF16


def build(precision, size, decoder="RefineNet"):
    """The seed's RefineNet on ResNet50 (or `decoder` on ResNet50's pyramid), compiled for XLA."""
    keras.mixed_precision.set_global_policy(precision)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))
    if decoder == "RefineNet":
        names, options = [n for block in BLOCKS for n in block], {"blocks": BLOCKS}
        keys = names
    else:
        levels = pyramid(backbone, "resnet")
        keys, names, options = list(STRIDES), [levels[k] for k in STRIDES], {}
    image, logits = segmentation_graph(feature_extractor(backbone, names), keys, 1, decoder, options, "caffe")
    model = keras.Model(image, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=True
    )
    return model


def stateless_step(model):
    """A jitted training step on Keras's stateless API (the JAX custom-loop pattern of the Keras guides):
    (state, x, y) -> (loss, state), the state being the model's and the optimizer's variables."""
    model.optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return model.loss(y, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def step(state, x, y):
        trainable, non_trainable, optimizer_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_vars)

    return step


def timed(run, images, repeats):
    """Images/s of `run()` (which trains on `images` images and waits for the result), after one warm-up call."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates), spread(rates)


def bench(precision, batch, args, rng):
    model = build(precision, args.size, args.decoder)
    flops = model_flops(model)
    n = batch * args.steps
    x = rng.integers(0, 255, (n, args.size, args.size, 3)).astype("float32")
    y = (rng.random((n, args.size, args.size, 1)) < 0.3).astype("float32")
    step, state = stateless_step(model), None
    device = jax.devices()[0]
    on_device = [(jax.device_put(x[i : i + batch], device), jax.device_put(y[i : i + batch], device))
                 for i in range(0, n, batch)]  # fmt: skip

    def loop(batches):
        def run():
            nonlocal state
            if state is None:  # taken after `fit`, which donates (deletes) the arrays it was given
                state = tuple([v.value for v in variables] for variables in (
                    model.trainable_variables, model.non_trainable_variables, model.optimizer.variables))  # fmt: skip
            for xb, yb in batches():
                loss, state = step(state, xb, yb)
            loss.block_until_ready()

        return run

    feeds = {
        "fit": lambda: model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0),
        "numpy": loop(lambda: ((x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch))),
        "device": loop(lambda: on_device),
    }
    for feed, run in feeds.items():
        rate, spread_ = timed(run, n, args.repeats)
        train_flops = 3 * flops * rate  # forward + backward (about twice the forward)
        emit("gpu.train.images_per_s", rate, "images/s", precision=precision, batch=batch, size=args.size, feed=feed,
             decoder=args.decoder,
             gflops_per_image_forward=round(flops / 1e9, 2), achieved_tflops=round(train_flops / 1e12, 3),
             fraction_of_peak=round(train_flops / PEAK[precision], 3), spread=spread_)  # fmt: skip
    rate, spread_ = timed(lambda: model.predict(x, batch_size=batch, verbose=0), n, args.repeats)
    emit("gpu.infer.images_per_s", rate, "images/s", precision=precision, batch=batch, size=args.size,
         achieved_tflops=round(flops * rate / 1e12, 3), fraction_of_peak=round(flops * rate / PEAK[precision], 3),
         spread=spread_)  # fmt: skip


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=positive, nargs="+", default=[8, 64])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"], choices=list(PEAK))
    parser.add_argument("--steps", type=positive, default=30, help="training steps per timed repeat (default 30)")
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--size", type=positive, default=224)
    parser.add_argument(
        "--decoder", default="RefineNet", help="the decoder on ResNet50 (default: the seed's RefineNet)"
    )
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    emit("context", 0, "", device=str(device.device_kind), backend="jax", jax=jax.__version__, keras=keras.__version__)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for precision in args.precisions:
        for batch in args.batches:
            bench(precision, batch, args, rng)
    emit("benchmark.seconds", time.perf_counter() - start, "s")


if __name__ == "__main__":
    main()
