"""imseg benchmarks: one JSON object per line, `{"metric", "value", "unit", ...context}`.

    python benchmarks/run.py [--quick] [--only data train precision infer memory profile tensorboard raster] > run.jsonl
    python benchmarks/run.py --table run.jsonl          # the figures beside their targets, as a Markdown table

Every group runs in its own Python process (fresh TensorFlow, its own peak memory). The old AIR ImSeg
loader is re-created here (per image `json.load` + PIL decode in a Python loop, then NumPy stacking) and
timed on the same files in the same run. Results and their reading: docs/performance.md.
"""

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SEED_CONFIG = {
    "name": "bench",
    "backbone": "ResNet50",
    "pretrained": False,
    "refine_net_blocks": [["conv5_block3_out", "conv4_block6_out"], ["conv3_block4_out", "conv2_block3_out"]],
    "input_shape": [224, 224, 3],
    "classes": ["building:other"],
    "batch_size": 8,
}  # the anchor's setting: no augmentation, random initialisation
AIR_CLASSES = {"building": ["hospital", "parking", "other"], "highway": ["roads", "other"]}  # the AIR project's 5


def emit(metric, value, unit, **context):
    value = None if value is None else round(float(value), 4)
    print(json.dumps({"metric": metric, "value": value, "unit": unit, **context}), flush=True)


def end_children_on_sigterm():
    """`kill` and `timeout` send SIGTERM to a benchmark driver only, not to the training it runs; as SystemExit
    the signal makes the running `subprocess.run` kill that child, which would otherwise go on alone for hours,
    holding the CPU and its run folder (Ctrl-C reaches the whole process group and needs nothing)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def spread(values):
    """min / median / max of repeated timings, and whether they agree within 10 % (else the figure is not to be
    trusted to better than that: the machine is shared)."""
    values = sorted(float(v) for v in values)
    middle = statistics.median(values)
    return {"min": round(values[0], 4), "median": round(middle, 4), "max": round(values[-1], 4),
            "repeats": len(values), "within_10pct": (values[-1] - values[0]) <= 0.1 * middle}  # fmt: skip


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_air(root, count, size=224, seed=0):
    """An AIR im_seg train/val dataset: JPEG images and C x h x w JSON annotations, 5 classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", count), ("val", max(8, count // 8))):
        os.makedirs(os.path.join(root, "im_seg", split, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, "im_seg", split, "annotations"), exist_ok=True)
        for i in range(n):
            ann = np.zeros((5, size, size), np.uint8)
            for k in range(5):
                y, x = rng.integers(0, size // 2, 2)
                ann[k, y : y + size // 3, x : x + size // 4] = 1
            image = (rng.integers(0, 60, (size, size, 3)) + 150 * ann.max(0)[..., None]).astype(np.uint8)
            Image.fromarray(image).save(os.path.join(root, "im_seg", split, "images", f"{i}.jpg"), quality=90)
            with open(os.path.join(root, "im_seg", split, "annotations", f"{i}.json"), "w") as f:
                json.dump({"annotation": ann.tolist(), "img": f"{i}.jpg"}, f)
    with open(os.path.join(root, "classes.json"), "w") as f:
        json.dump(AIR_CLASSES, f)


def seed_loader(root, class_index, batch_size, limit):
    """The old ImSeg approach: a Python loop of json.load + PIL decode, then NumPy stacking."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(root, "im_seg", "train")
    names = sorted(os.listdir(os.path.join(folder, "images")), key=lambda n: int(n.split(".")[0]))[:limit]
    images, masks, count = [], [], 0
    for name in names:
        stem = name.split(".")[0]
        images.append(np.asarray(Image.open(os.path.join(folder, "images", name)).convert("RGB")))
        with open(os.path.join(folder, "annotations", stem + ".json")) as f:
            masks.append(np.asarray(json.load(f)["annotation"], np.uint8)[class_index])
        if len(images) == batch_size:
            np.stack(images), np.stack(masks)
            count += len(images)
            images, masks = [], []
    return count


def bench_data(quick):
    from imseg.dataset import batches_per_epoch, load_split, make_dataset
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    count = 160 if quick else 800
    with tempfile.TemporaryDirectory() as root:
        write_air(root, count)
        start = time.perf_counter()
        n = seed_loader(root, [1], 8, count)
        seed_rate = n / (time.perf_counter() - start)
        emit("data.seed_loader_images_per_s", seed_rate, "images/s", images=n, classes=5, size=224)
        start = time.perf_counter()
        meta = load_split(root, "train", 5, log=lambda m: None)
        emit(
            "data.first_pass_images_per_s",
            count / (time.perf_counter() - start),
            "images/s",
            note="decode + parse + validate + write the cache, once per dataset",
        )
        # One iterator, as `fit` keeps over the endless training stream; its first epoch warms the OS page cache
        # and the tf.data threads.
        batches = iter(make_dataset(meta, [1], (224, 224, 3), 8, training=True))
        steps = max(batches_per_epoch(meta, 8), 200)  # at least 1600 images per repeat: a short one is noise
        rates = []
        for _ in range(4):
            start = time.perf_counter()
            for _ in range(steps):
                next(batches)
            rates.append(steps * 8 / (time.perf_counter() - start))
        rates = rates[1:]
        cached = statistics.median(rates)
        emit("data.cached_images_per_s", cached, "images/s", batch=8, shuffle=True, classes_selected=1,
             spread=spread(rates), target=2000)  # fmt: skip
        emit("data.speedup_vs_seed_loader", cached / seed_rate, "x", target=50)


def _seed_model(precision, jit=False):
    from imseg.build import build_model
    from imseg.config import config_from_dict

    config = config_from_dict({**SEED_CONFIG, "mixed_precision": precision, "jit_compile": jit})
    return build_model(config, ["building:other"])


def _time_fit(model, steps, batch=8, size=224, epochs=3):
    """Images/s of `model.fit`: the median of `epochs` epochs of `steps` steps (after a warm-up fit); the epochs'
    rates are kept in `_time_fit.rates`.

    Epochs, not one long fit: on this shared 2-core machine single steps sometimes stall for seconds.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    y = (rng.random((batch, size, size, 1)) < 0.3).astype(np.uint8)
    # An endless stream and `steps_per_epoch`, as imseg's training runs: `fit` keeps one iterator. A finite
    # dataset makes `fit` start a new one every epoch, and the first step after that stalled ~4 s here.
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, verbose=0)  # trace and warm up

    class Times(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.epoch_start)

        def on_train_batch_begin(self, batch, logs=None):
            self.step_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            step_times.append(time.perf_counter() - self.step_start)

    epoch_times, step_times = [], []
    model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[Times()])
    _time_fit.per_step = batch / float(np.median(step_times))  # steady state, without per-epoch set-up
    _time_fit.rates = [steps * batch / t for t in epoch_times]
    return steps * batch / float(np.median(epoch_times)), (x, y)


def _time_bare_step(model, data, steps, rounds=3):
    """The same train_step, compiled the same way, on in-memory tensors: no fit loop, callbacks or tf.data."""
    import numpy as np
    import tensorflow as tf

    x, y = (tf.constant(v) for v in data)
    strategy = model.distribute_strategy
    step = tf.function(lambda batch: strategy.run(model.train_step, args=(batch,)), jit_compile=model.jit_compile)
    step((x, y))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            logs = step((x, y))
            float(tf.nest.flatten(logs)[0])  # fit also waits for each step's logs
        times.append(time.perf_counter() - start)
    return steps * x.shape[0] / float(np.median(times))


def model_flops(model):
    """Multiply-adds x 2 of the convolutions for one image (forward pass)."""
    import keras

    def all_layers(model):  # not imseg.model's: that imports TensorFlow, which gpu_jax.py's machine lacks
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from all_layers(layer)

    total = 0
    for layer in all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and hasattr(layer, "kernel"):
            out = layer.output.shape
            kernel = layer.kernel.shape
            per_output = (
                kernel[0] * kernel[1] * (kernel[2] if not isinstance(layer, keras.layers.DepthwiseConv2D) else 1)
            )
            channels = out[-1]
            total += 2 * out[1] * out[2] * channels * per_output
    return total


def bench_train(quick):
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    steps = 5 if quick else 20
    model, details = _seed_model("auto")
    rate, data = _time_fit(model, steps)
    emit(
        "train.images_per_s",
        rate,
        "images/s",
        precision=details["precision"],
        model="seed ResNet50 RefineNet",
        size=224,
        batch=8,
        anchor_seed=4.3,
        target=1.7 * 4.3,
        spread=spread(_time_fit.rates),
    )
    bare = _time_bare_step(model, data, steps)
    emit(
        "train.fit_over_bare_step",
        _time_fit.per_step / bare,
        "ratio",
        fit_step_images_per_s=_time_fit.per_step,
        bare_images_per_s=bare,
        fit_epoch_images_per_s=rate,
        target=0.95,
        note="median step inside fit vs the bare step; fit_epoch_images_per_s includes per-epoch set-up",
    )
    emit("model.gflops_per_image", model_flops(model) / 1e9, "GFLOP", note="forward pass, convolutions")


def bench_precision(quick):
    """One precision / XLA setting per process: `--only precision` runs all four."""
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    from imseg.errors import ConfigError

    precision, jit = os.environ["IMSEG_BENCH_SETTING"].split(":")
    steps = 3 if quick else 12
    try:
        model, details = _seed_model(precision, jit == "xla")
    except ConfigError as e:  # XLA cannot compile bfloat16 training on the CPU; imseg refuses it up front
        emit("train.images_per_s_setting", None, "images/s", precision=precision, xla=jit == "xla", refused=str(e))
        return
    rate, _ = _time_fit(model, steps)
    name = "train.images_per_s_f32" if (precision, jit) == ("none", "plain") else "train.images_per_s_setting"
    emit(
        name,
        rate,
        "images/s",
        precision=details["precision"],
        xla=jit == "xla",
        spread=spread(_time_fit.rates),
        peak_rss_mb=round(peak_rss_mb()),
        anchor_seed_f32=4.3,
    )


def bench_infer(quick):
    import numpy as np

    from imseg.predict import predict_image
    from imseg.tfenv import import_tensorflow
    from imseg.tiles import tile_starts

    import_tensorflow()
    model, details = _seed_model("auto")
    plain = model.inference_model()
    x = np.random.default_rng(0).integers(0, 255, (8, 224, 224, 3), dtype=np.uint8)
    plain.predict(x, batch_size=8, verbose=0)
    repeats = 3 if quick else 10
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            plain.predict(x, batch_size=8, verbose=0)
        rates.append(repeats * 8 / (time.perf_counter() - start))
    emit(
        "infer.images_per_s",
        statistics.median(rates),
        "images/s",
        size=224,
        batch=8,
        precision=details["precision"],
        anchor_seed=7.4,
        target=14.8,
        spread=spread(rates),
    )
    side = 896 if quick else 2048
    image = np.random.default_rng(1).integers(0, 255, (side, side, 3), dtype=np.uint8)
    tiles = len(tile_starts(side, 224, 168)) ** 2
    predict_image(plain, image, overlap=0.25, batch_size=8, output="masks")  # warm-up: the partial last batch
    tiled, plain_rates = [], []
    for _ in range(3):  # alternate, so that both see the same machine
        start = time.perf_counter()
        predict_image(plain, image, overlap=0.25, batch_size=8, output="masks")
        tiled.append(side * side / 1e6 / (time.perf_counter() - start))
        start = time.perf_counter()
        for first in range(0, tiles, 8):
            plain.predict_on_batch(np.repeat(x[:1], min(8, tiles - first), axis=0))
        plain_rates.append(side * side / 1e6 / (time.perf_counter() - start))
    emit("infer.tiled_megapixels_per_s", statistics.median(tiled), "MP/s", image=f"{side}x{side}", tile=224,
         overlap=0.25, spread=spread(tiled))  # fmt: skip
    emit("infer.tiled_over_plain", statistics.median(tiled) / statistics.median(plain_rates), "ratio", target=0.8,
         plain_megapixels_per_s=round(statistics.median(plain_rates), 4), tiles=tiles,
         note="the same tiles predicted in plain batches of 8, without reading, blending or masks")  # fmt: skip


def bench_memory_child(quick):
    """Train one epoch of a small model on IMSEG_BENCH_TILES tiles; report peak RSS."""
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    import imseg.demo
    from imseg.build import build_model
    from imseg.config import config_from_dict
    from imseg.dataset import batches_per_epoch, load_split, make_dataset

    tiles = int(os.environ["IMSEG_BENCH_TILES"])
    root = os.environ["IMSEG_BENCH_DATA"]
    imseg.demo.write_demo_data(root, counts=(tiles, 16, 1))
    meta = load_split(root, "train", 2, log=lambda m: None)
    config = config_from_dict({**imseg.demo.DEMO_CONFIG, "epochs": 1})
    model, _ = build_model(config, ["building:other", "highway:other"])
    model.fit(
        make_dataset(meta, [0, 1], (64, 64, 3), 16, training=True),
        steps_per_epoch=batches_per_epoch(meta, 16),
        verbose=0,
    )
    emit("memory.peak_rss_mb", peak_rss_mb(), "MB", tiles=tiles)


def bench_memory(quick):
    base = 128 if quick else 256
    peaks = {}
    with tempfile.TemporaryDirectory() as root:
        for tiles in (base, 10 * base):
            env = {**os.environ, "IMSEG_BENCH_TILES": str(tiles), "IMSEG_BENCH_DATA": os.path.join(root, str(tiles))}
            line = _child("memory_child", quick, env)[-1]
            peaks[tiles] = json.loads(line)["value"]
            print(line, flush=True)
    emit(
        "memory.rss_ratio_10x_tiles",
        peaks[10 * base] / peaks[base],
        "ratio",
        tiles=[base, 10 * base],
        peak_rss_mb=[peaks[base], peaks[10 * base]],
        note="one epoch; memory must not grow with the dataset",
    )


def _seed_graph_model(precision):
    """The graph the old ImSeg code ran: its MRF took the raw backbone features and its RCU outputs were
    computed but never used (so TensorFlow pruned them); otherwise the same blocks, widths and head. Built as a
    decoder of its own, through imseg's one extension point."""
    import keras

    import imseg.blocks as blocks
    from imseg.distribute import make_strategy
    from imseg.models import register_decoder
    from imseg.models.backbones import feature_extractor
    from imseg.models.network import segmentation_graph

    @register_decoder("AIRImSegGraph")
    def old_graph(features, blocks_of_names):
        y = None
        for i, block in enumerate(blocks_of_names, start=1):
            inputs = ([y] if y is not None else []) + [features[n] for n in block]
            width = min(x.shape[-1] for x in inputs) // 4
            y = blocks.multi_resolution_fusion(inputs, width, name=f"refine{i}_mrf") if len(inputs) > 1 else inputs[0]
            y = blocks.chained_residual_pooling(y, width, name=f"refine{i}_crp")
            y = blocks.residual_conv_unit(y, width, name=f"refine{i}_out")
        return y

    keras.mixed_precision.set_global_policy("float32" if precision == "none" else "mixed_bfloat16")
    layers = SEED_CONFIG["refine_net_blocks"]
    names = [n for block in layers for n in block]
    with make_strategy().scope():
        backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
        image, logits = segmentation_graph(feature_extractor(backbone, names), names, 1, "AIRImSegGraph",
                                           {"blocks_of_names": layers}, "caffe")  # fmt: skip
        model = keras.Model(image, logits)
        model.compile(keras.optimizers.Adam(1e-4), keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def bench_profile(quick):
    """Where the time goes: imseg's RefineNet against the old code's graph, and their convolution FLOPs."""
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    steps = 3 if quick else 15
    precision = os.environ.get("IMSEG_BENCH_PRECISION", "none")
    seed = _seed_graph_model(precision)
    seed_rate, _ = _time_fit(seed, steps)
    ours, _ = _seed_model(precision)
    our_rate, _ = _time_fit(ours, steps)
    emit(
        "profile.seed_graph_images_per_s",
        seed_rate,
        "images/s",
        precision=precision,
        gflops_per_image=round(model_flops(seed) / 1e9, 2),
    )
    emit(
        "profile.imseg_images_per_s",
        our_rate,
        "images/s",
        precision=precision,
        gflops_per_image=round(model_flops(ours) / 1e9, 2),
    )
    emit(
        "profile.imseg_over_seed_graph",
        our_rate / seed_rate,
        "ratio",
        precision=precision,
        flops_ratio=round(model_flops(ours) / model_flops(seed), 3),
    )


def bench_tensorboard_child(quick):
    """Train the demo for a few epochs with validation images written every epoch, or never; epoch times."""
    import csv

    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    import imseg.demo
    from imseg.signals import StopSignals
    from imseg.train import TrainOptions, prepare, train

    every = int(os.environ["IMSEG_BENCH_IMAGES_EVERY"])
    epochs = 3 if quick else 6
    with tempfile.TemporaryDirectory() as root:
        data, classes, config = imseg.demo.write_demo_data(os.path.join(root, "demo"), counts=(256, 64, 1))
        options = TrainOptions(data_path=data, config_path=config, classes_path=classes,
                               overrides=(f"epochs={epochs}", f"tensorboard.images_every={every}"))  # fmt: skip
        prepared = prepare(options)
        train(options, prepared, StopSignals())
        with open(prepared.paths.history) as f:
            seconds = sorted(float(row["seconds"]) for row in csv.DictReader(f))[:-1]  # the first (tracing) is slowest
    emit("tensorboard.epoch_seconds", statistics.median(seconds), "s", images_every=every, epochs=epochs,
         tiles=256, images=8)  # fmt: skip


def bench_tensorboard(quick):
    seconds = {}
    for every in (0, 1):
        line = _child("tensorboard_child", quick, {**os.environ, "IMSEG_BENCH_IMAGES_EVERY": str(every)})[-1]
        print(line, flush=True)
        seconds[every] = json.loads(line)["value"]
    emit(
        "tensorboard.images_overhead",
        seconds[1] / seconds[0] - 1,
        "fraction",
        target="a few percent",
        note="median epoch with 8 validation images written every epoch, against none; demo, 256 tiles of 64 px",
    )


def synthetic_scene(path, side):
    """A side x side 3-band uint8 tiled GeoTIFF in UTM (0.5 m), written strip by strip: rows of one random colour."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "height": side, "width": side, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "crs": "EPSG:32640",
               "transform": from_origin(500_000, 2_800_000, 0.5, 0.5)}  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, side, 512):
            rows = min(512, side - y)
            strip = rng.integers(0, 256, (3, rows, 1), dtype=np.uint8) + np.zeros((3, rows, side), np.uint8)
            dst.write(strip, window=rasterio.windows.Window(0, y, side, rows))


def bench_raster_child(quick):
    """Predict the scene IMSEG_BENCH_SCENE with IMSEG_BENCH_MODEL one way (IMSEG_BENCH_PATH): `windowed`
    (imseg.geo.raster, as imseg-infer does now) or `whole` (the image read whole, then predict_image and the masks
    written whole, as before); megapixels per second and this process's peak RSS."""
    import keras
    import numpy as np
    import rasterio

    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    scene, way = os.environ["IMSEG_BENCH_SCENE"], os.environ["IMSEG_BENCH_PATH"]
    model = keras.models.load_model(os.environ["IMSEG_BENCH_MODEL"])
    output = tempfile.mkdtemp(dir=os.path.dirname(scene))
    start = time.perf_counter()
    if way == "windowed":
        from imseg.geo.raster import predict_geotiff

        result = predict_geotiff(model, scene, output, "scene", ["a:x", "b:y"], batch_size=16)
        height, width = result["height"], result["width"]
    else:
        from imseg.images import read_image
        from imseg.predict import predict_image

        image = read_image(scene)
        height, width = image.shape[:2]
        masks = predict_image(model, image, overlap=0.25, batch_size=16, output="masks")
        with rasterio.open(scene) as src:
            profile = {**src.profile, "count": 1, "dtype": "uint8"}
        for k in range(masks.shape[-1]):
            with rasterio.open(os.path.join(output, f"{k}.tif"), "w", **profile) as dst:
                dst.write(masks[..., k].astype(np.uint8)[None] * 255)
    seconds = time.perf_counter() - start
    emit("raster.megapixels_per_s", height * width / 1e6 / seconds, "MP/s", path=way, scene=f"{width}x{height}",
         tile=256, overlap=0.25, seconds=round(seconds, 1))  # fmt: skip
    emit("raster.peak_rss_mb", peak_rss_mb(), "MB", path=way, scene=f"{width}x{height}")


def bench_raster(quick):
    """A synthetic 3-band uint8 GeoTIFF (20,000 x 20,000 px; 4,000 with --quick) through a small model, window by
    window and whole; the scene is written strip by strip here and deleted afterwards."""
    import keras

    side = 4000 if quick else 20000
    with tempfile.TemporaryDirectory(dir=os.environ.get("IMSEG_BENCH_TMP")) as root:
        scene = os.path.join(root, "scene.tif")
        synthetic_scene(scene, side)
        inputs = keras.Input((256, 256, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        keras.Model(inputs, keras.layers.Conv2D(2, 1)(x)).save(os.path.join(root, "small.keras"))
        found = {}
        for way in ("windowed", "whole"):
            env = {**os.environ, "IMSEG_BENCH_SCENE": scene, "IMSEG_BENCH_PATH": way,
                   "IMSEG_BENCH_MODEL": os.path.join(root, "small.keras")}  # fmt: skip
            for line in _child("raster_child", quick, env):
                print(line, flush=True)
                record = json.loads(line)
                found[(record["metric"], way)] = record["value"]
    emit("raster.windowed_over_whole_rss", found[("raster.peak_rss_mb", "windowed")] /
         found[("raster.peak_rss_mb", "whole")], "ratio", scene=f"{side}x{side}")  # fmt: skip


def bench_convert_child(quick):
    """Convert the scene IMSEG_BENCH_SCENE with the vector labels beside it (tiles of 256 px); megapixels per second
    and this process's peak RSS."""
    from imseg.data.convert import convert

    scene = os.environ["IMSEG_BENCH_SCENE"]
    folder = os.path.dirname(scene)
    start = time.perf_counter()
    convert(
        [scene],
        output=os.path.join(folder, "D"),
        tile_size=256,
        split=(1.0, 0.0, 0.0),
        vectors=[("building:other", os.path.join(folder, "b.geojson"))],
        log=lambda line: None,
    )
    seconds = time.perf_counter() - start
    side = int(os.environ["IMSEG_BENCH_SIDE"])
    emit("convert.megapixels_per_s", side * side / 1e6 / seconds, "MP/s", scene=f"{side}x{side}", tile=256,
         seconds=round(seconds, 1))  # fmt: skip
    emit("convert.peak_rss_mb", peak_rss_mb(), "MB", scene=f"{side}x{side}", scene_mb=round(side * side * 3 / 2**20))


def bench_convert(quick):
    """imseg-data convert of a synthetic 3-band uint8 GeoTIFF with vector labels (a grid of 400 buildings): 4,000 and
    20,000 px square (4,000 only with --quick), each in its own process, for its peak memory."""

    for side in (4000,) if quick else (4000, 20000):
        with tempfile.TemporaryDirectory(dir=os.environ.get("IMSEG_BENCH_TMP")) as root:
            scene = os.path.join(root, "scene.tif")
            synthetic_scene(scene, side)
            step = side * 0.5 / 20  # 20 x 20 buildings of 20 m, spread over the scene
            features = [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
                [500_000 + i * step, 2_800_000 - j * step], [500_020 + i * step, 2_800_000 - j * step],
                [500_020 + i * step, 2_799_980 - j * step], [500_000 + i * step, 2_799_980 - j * step],
                [500_000 + i * step, 2_800_000 - j * step]]]}} for i in range(20) for j in range(20)]  # fmt: skip
            with open(os.path.join(root, "b.geojson"), "w") as f:
                json.dump({"type": "FeatureCollection", "features": features,
                           "crs": {"type": "name", "properties": {"name": "EPSG:32640"}}}, f)  # fmt: skip
            env = {**os.environ, "IMSEG_BENCH_SCENE": scene, "IMSEG_BENCH_SIDE": str(side)}
            for line in _child("convert_child", quick, env):
                print(line, flush=True)


def bench_merge_child(quick):
    """imseg-data merge of the job IMSEG_BENCH_JOB; seconds and this process's peak RSS."""
    from imseg.geo.merge import merge

    folder = os.environ["IMSEG_BENCH_JOB"]
    start = time.perf_counter()
    counts = merge([folder], os.path.join(folder, "merged.gpkg"), simplify=0)
    seconds = time.perf_counter() - start
    polygons = sum(counts.values())
    emit("merge.polygons_per_s", polygons / seconds, "polygons/s", polygons=polygons, seconds=round(seconds, 1))
    emit("merge.peak_rss_mb", peak_rss_mb(), "MB", polygons=polygons)


def bench_merge(quick):
    """imseg-data merge of a mapping job of 4 scenes whose masks hold a grid of 4 x 4 m buildings 10 m apart: a
    million polygons (40,000 with --quick), in their own process for its peak memory."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    side = 1000 if quick else 5000  # each of the 2 x 2 scenes, at 1 m per pixel
    with tempfile.TemporaryDirectory(dir=os.environ.get("IMSEG_BENCH_TMP")) as root:
        folder = os.path.join(root, "job")
        os.makedirs(os.path.join(folder, "masks", "building-other"))
        row = np.zeros((10, side), np.uint8)
        for x in range(2, side, 10):
            row[2:6, x : x + 4] = 255
        with open(os.path.join(folder, "manifest.jsonl"), "w") as manifest:
            for i in range(4):
                origin = (500_000 + side * (i % 2), 2_800_000 - side * (i // 2))
                profile = {"driver": "GTiff", "height": side, "width": side, "count": 1, "dtype": "uint8",
                           "crs": "EPSG:32640", "transform": from_origin(*origin, 1.0, 1.0), "tiled": True,
                           "compress": "deflate"}  # fmt: skip
                with rasterio.open(os.path.join(folder, "masks", "building-other", f"s{i}.tif"), "w", **profile) as d:
                    for y in range(0, side, 1000):
                        d.write(np.tile(row, (100, 1))[None], window=rasterio.windows.Window(0, y, side, 1000))
                manifest.write(json.dumps({"stem": f"s{i}", "status": "done", "classes": ["building:other"],
                                           "task": "multilabel", "model_sha256": "0"}) + "\n")  # fmt: skip
        for line in _child("merge_child", quick, {**os.environ, "IMSEG_BENCH_JOB": folder}):
            print(line, flush=True)


def bench_mapping(quick):
    """imseg-infer --images as a mapping job of 1, 10 and 100 GeoTIFF scenes (512 px; 1 and 10 with --quick) in one
    process, so the set-up (model load, tracing) is paid once: scenes per hour and megapixels per second; and the
    same tiles through TensorFlow and through ONNX Runtime (the exported model), to see whether --runtime onnx
    would pay."""
    import keras
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from imseg.checkpoints import save_model
    from imseg.mapping import map_images
    from imseg.predictor import load_predictor
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    with tempfile.TemporaryDirectory(dir=os.environ.get("IMSEG_BENCH_TMP")) as root:
        inputs = keras.Input((256, 256, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
        save_model(keras.Model(inputs, keras.layers.Conv2D(2, 1)(x)), os.path.join(root, "m.keras"),
                   {"classes": ["building:other", "highway:other"], "task": "multilabel"})  # fmt: skip
        predictor = load_predictor(os.path.join(root, "m.keras"))
        rng = np.random.default_rng(0)
        for count in (1, 10) if quick else (1, 10, 100):
            folder = os.path.join(root, f"scenes{count}")
            os.makedirs(folder)
            for i in range(count):
                with rasterio.open(os.path.join(folder, f"s{i}.tif"), "w", driver="GTiff", height=512, width=512,
                                   count=3, dtype="uint8", crs="EPSG:32640",
                                   transform=from_origin(500_000 + 256 * i, 2_800_000, 0.5, 0.5)) as dst:  # fmt: skip
                    dst.write(rng.integers(0, 256, (3, 512, 512), dtype=np.uint8))
            start = time.perf_counter()
            map_images(predictor, [folder], os.path.join(root, f"out{count}"), batch_size=16, log=lambda line: None)
            seconds = time.perf_counter() - start
            emit("mapping.scenes_per_hour", count * 3600 / seconds, "scenes/h", scenes=count, scene="512x512",
                 megapixels_per_s=round(count * 512 * 512 / 1e6 / seconds, 3), seconds=round(seconds, 1))  # fmt: skip
        tiles = rng.integers(0, 256, (16, 256, 256, 3)).astype("float32")
        rates = {}
        model = predictor.model
        model.predict_on_batch(tiles)
        start = time.perf_counter()
        for _ in range(10):
            model.predict_on_batch(tiles)
        rates["tensorflow"] = 160 / (time.perf_counter() - start)
        try:
            import onnxruntime

            from imseg.export import export

            session = onnxruntime.InferenceSession(
                export(os.path.join(root, "m.keras"), "onnx", os.path.join(root, "o"))
            )
            name = session.get_inputs()[0].name
            session.run(None, {name: tiles})
            start = time.perf_counter()
            for _ in range(10):
                session.run(None, {name: tiles})
            rates["onnxruntime"] = 160 / (time.perf_counter() - start)
        except ImportError:
            pass
        for runtime, rate in rates.items():
            emit("mapping.tiles_per_s", rate, "tiles/s", runtime=runtime, tile=256, batch=16)


GROUPS = {
    "data": bench_data,
    "train": bench_train,
    "precision": bench_precision,
    "infer": bench_infer,
    "memory": bench_memory,
    "memory_child": bench_memory_child,
    "profile": bench_profile,
    "tensorboard": bench_tensorboard,
    "tensorboard_child": bench_tensorboard_child,
    "raster": bench_raster,
    "raster_child": bench_raster_child,
    "convert": bench_convert,
    "convert_child": bench_convert_child,
    "merge": bench_merge,
    "merge_child": bench_merge_child,
    "mapping": bench_mapping,
}

PRECISION_SETTINGS = ["none:plain", "auto:plain", "none:xla", "auto:xla"]


def _child(group, quick, env=None):
    command = [sys.executable, os.path.abspath(__file__), "--child", group] + (["--quick"] if quick else [])
    result = subprocess.run(command, capture_output=True, text=True, env=env or os.environ)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-3000:])
        raise SystemExit(f"benchmark group {group} failed")
    return [line for line in result.stdout.splitlines() if line.startswith("{")]


def table(path):
    """The figures of a saved run (`run.py > run.jsonl`, peers' lines appended) as a Markdown table beside their
    targets and anchors."""
    rows = ["| metric | value | unit | min / median / max (repeats) | target or anchor | context |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    with open(path) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            metric, value, unit = record.pop("metric"), record.pop("value"), record.pop("unit")
            if metric == "context":
                rows.insert(0, "run: " + ", ".join(f"{k} {v}" for k, v in record.items()) + "\n")
                continue
            s = record.pop("spread", None)
            spread_text = f"{s['min']} / {s['median']} / {s['max']} ({s['repeats']})" if s else ""
            if s and not s["within_10pct"]:
                spread_text += " **> 10 %**"
            goals = ", ".join(f"{k} {record.pop(k)}" for k in list(record) if k.startswith(("target", "anchor")))
            context = ", ".join(f"{k} {v}" for k, v in record.items() if k != "note")
            rows.append(f"| `{metric}` | {value} | {unit} | {spread_text} | {goals} | {context} |")
    print("\n".join(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller inputs: runs in a few minutes on 2 cores")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[g for g in GROUPS if not g.endswith("_child")],
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--table", metavar="FILE", help="print a saved run's JSON lines as a Markdown table")
    args = parser.parse_args()
    if args.table:
        try:
            table(args.table)
        except (OSError, ValueError, KeyError) as e:  # a missing file, a line that is not one of our records
            parser.error(f"--table {args.table}: {e}")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.child:
        GROUPS[args.child](args.quick)
        return
    import keras
    import tensorflow as tf

    emit(
        "context",
        0,
        "",
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        tensorflow=tf.__version__,
        keras=keras.__version__,
        quick=args.quick,
    )
    start = time.perf_counter()
    for group in args.only or ["data", "train", "precision", "infer", "memory", "profile", "tensorboard", "raster"]:
        if group == "precision":
            rates = {}
            for setting in PRECISION_SETTINGS:
                for line in _child("precision", args.quick, {**os.environ, "IMSEG_BENCH_SETTING": setting}):
                    print(line, flush=True)
                    rates[setting] = json.loads(line)["value"] or 0
            emit(
                "train.bf16_over_f32",
                rates["auto:plain"] / rates["none:plain"],
                "x",
                note="default precision (auto) over float32, XLA off",
                anchor_probe=1.7,
            )
        elif group == "memory":
            bench_memory(args.quick)
        elif group == "tensorboard":
            bench_tensorboard(args.quick)
        elif group == "raster":
            bench_raster(args.quick)
        else:
            for line in _child(group, args.quick):
                print(line, flush=True)
    emit("benchmark.seconds", time.perf_counter() - start, "s")


if __name__ == "__main__":
    main()
