"""Model quality on real aerial roads: the old ImSeg code's behaviour against imseg, printing JSON lines.

    python benchmarks/recipe_ab.py [--variants old seed recipe] [--seeds 0 1] [--epochs 5]

Builds a single-class road dataset from the Dubai aerial set beside the repository (224 px tiles cut by
`imseg-data convert`, split by source image; 320 training tiles drawn at random, 80 validation tiles, all
240 test tiles), then trains each variant with each seed and scores the best-on-validation checkpoint on
the test split (exact pixel counts over valid pixels):

- `old`: the old code's behaviour — its graph (MRF on the raw backbone features, see benchmarks/run.py),
  its backbone BatchNorm that never left inference mode, raw 0-255 inputs, float32, Adam 1e-4, BCE.
- `seed`: imseg-train with the seed's `configs/refine_net_224_pretrained.json` as a new user runs it from
  scratch (`pretrained: false`, batch 8, no augmentation), with imseg's defaults for everything else.
- `recipe`: imseg-train with `configs/aerial_scratch.yaml`, the recommended recipe from scratch.

`--set KEY=VALUE` adds overrides to the imseg variants (for ablations, e.g. `--set mixed_precision=none`).
Every run is a separate process. Results and their reading: docs/results.md.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
DUBAI = os.path.join(os.path.dirname(REPO), "shared", "data", "dubai-aerial")
SEED_CONFIG = os.path.join(REPO, "configs", "refine_net_224_pretrained.json")
RECIPE_CONFIG = os.path.join(REPO, "configs", "aerial_scratch.yaml")
ROAD_MAP = {
    "#6EC1E4": "road",
    "#3C1098": "background",
    "#8429F6": "background",
    "#FEDD3A": "background",
    "#E2A929": "background",
    "#9B9B9B": "ignore",
    "#000000": "ignore",
}
SIZES = {"train": 320, "val": 80, "test": None}  # None: every tile of the split
CLASS = "road:other"


def emit(metric, value, unit, **context):
    value = None if value is None else round(float(value), 4)
    print(json.dumps({"metric": metric, "value": value, "unit": unit, **context}), flush=True)


def build_dataset(work):
    """The road dataset under `work/road224` (reused when present)."""
    root = os.path.join(work, "road224")
    if os.path.exists(os.path.join(root, "classes.json")):
        return root
    full = os.path.join(work, "road224-all")
    shutil.rmtree(full, ignore_errors=True)
    class_map = os.path.join(work, "road_colors.json")
    with open(class_map, "w") as f:
        json.dump(ROAD_MAP, f)
    args = ["--mask-type", "color", "--class-map", class_map, "--tile-size", "224", "--format", "npz", "--output", full]
    for tile in sorted(os.listdir(DUBAI)):
        if os.path.isdir(os.path.join(DUBAI, tile, "images")):
            args += ["--images", os.path.join(DUBAI, tile, "images"), "--masks", os.path.join(DUBAI, tile, "masks")]
    subprocess.run([sys.executable, "-m", "imseg.data", "convert", *args], check=True, env=_env())
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = random.Random(0)
    for split, size in SIZES.items():
        src = os.path.join(full, "im_seg", split)
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(src, "images")))
        chosen = sorted(rng.sample(stems, size)) if size else stems
        for sub, ext in (("images", ".jpg"), ("annotations", ".npz")):
            os.makedirs(os.path.join(tmp, "im_seg", split, sub))
            for stem in chosen:
                shutil.copy(os.path.join(src, sub, stem + ext), os.path.join(tmp, "im_seg", split, sub))
    shutil.copy(os.path.join(full, "classes.json"), tmp)
    os.replace(tmp, root)
    shutil.rmtree(full)
    return root


def dataset_stats(root):

    from imseg.annotations import read_annotation

    for split in SIZES:
        folder = os.path.join(root, "im_seg", split, "annotations")
        positive = valid = 0
        for name in os.listdir(folder):
            ann, ignore = read_annotation(os.path.join(folder, name), with_ignore=True)
            positive += int(ann[0][ignore == 0].sum())
            valid += int((ignore == 0).sum())
        emit("data.road_fraction", positive / valid, "fraction", split=split, tiles=len(os.listdir(folder)))


def _env():
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_imseg(variant, data, seed, epochs, extra, work):
    """Train with imseg-train, score best.keras on the test split with imseg-infer."""
    config = SEED_CONFIG if variant == "seed" else RECIPE_CONFIG
    # The overrides are part of the name, so that one A/B does not replace another's run folders.
    tag = "".join(f"-{re.sub(r'[^A-Za-z0-9_=]+', '_', s)}" for s in extra)
    name = f"{variant}{tag}-s{seed}"
    sets = [f"name={name}", f"seed={seed}", f"epochs={epochs}", f"classes=[{CLASS}]", f"benchmark_class={CLASS}"]
    if variant == "seed":
        sets += ["pretrained=false", "batch_size=8"]
    sets += extra
    argv = ["--data_path", data, "--config", config, "--overwrite"] + [a for s in sets for a in ("--set", s)]
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "imseg.train", *argv], check=True, env=_env(), cwd=work, stdout=subprocess.DEVNULL
    )
    minutes = (time.monotonic() - start) / 60
    run = os.path.join(data, "im_seg", "out", name)
    with open(os.path.join(run, "metrics", "history.csv")) as f:
        header, *rows = [line.strip().split(",") for line in f]
    column = header.index(f"val_iou/{CLASS}")
    val = [float(r[column]) for r in rows]
    resolved = os.path.join(run, "config.json")
    subprocess.run(
        [sys.executable, "-m", "imseg.infer", "--data_path", data, "--config", resolved, "--split", "test"],
        check=True,
        env=_env(),
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(os.path.join(run, "preds", "test", "summary.json")) as f:
        summary = json.load(f)
    return {
        "test_iou": summary["iou"][CLASS],
        "test_precision": summary["precision"][CLASS],
        "test_recall": summary["recall"][CLASS],
        "val_iou_per_epoch": val,
        "train_minutes": minutes,
    }


def run_old(data, seed, epochs):
    """The old ImSeg behaviour, trained by Keras on imseg's data pipeline, in this process."""
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    import keras
    import numpy as np

    import imseg.blocks as blocks
    from imseg.classes import load_class_names
    from imseg.dataset import batches_per_epoch, load_splits, make_dataset
    from imseg.distribute import make_strategy
    from imseg.metrics import SegmentationMetrics

    class InferenceModeBackbone(keras.layers.Layer):
        """The backbone called with training=False: BatchNorm normalises with its initial statistics
        (mean 0, variance 1) forever, while its scale and offset still learn, as in the old code."""

        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def call(self, x):
            return self.inner(x, training=False)

    class UnweightedCrossentropy(keras.losses.BinaryCrossentropy):
        """The old code knew no ignored pixels: every pixel is trained, as labelled (ignored ones as negatives)."""

        def __call__(self, y_true, y_pred, sample_weight=None):
            return super().__call__(y_true, y_pred)

    def seed_block(inputs, name):
        """The old RefineNet block: MRF on the raw inputs (their RCUs were computed and thrown away)."""
        width = min(x.shape[-1] for x in inputs) // 4
        y = blocks.multi_resolution_fusion(inputs, width, name=f"{name}_mrf") if len(inputs) > 1 else inputs[0]
        y = blocks.chained_residual_pooling(y, width, name=f"{name}_crp")
        return blocks.residual_conv_unit(y, width, name=f"{name}_out")

    keras.utils.set_random_seed(seed)
    names = load_class_names(os.path.join(data, "classes.json"))
    train_meta, val_meta, test_meta = load_splits(data, ["train", "val", "test"], len(names), log=lambda m: None)
    with open(SEED_CONFIG) as f:
        feature_layers = json.load(f)["refine_net_blocks"]
    layer_names = [n for block in feature_layers for n in block]
    with make_strategy().scope():
        backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
        extractor = keras.Model(backbone.inputs, [backbone.get_layer(n).output for n in layer_names])
        image = keras.Input((224, 224, 3))
        features = dict(zip(layer_names, InferenceModeBackbone(extractor)(image)))  # raw 0-255 pixels in
        y = None
        for i, block in enumerate(feature_layers, start=1):
            y = seed_block(([y] if y is not None else []) + [features[n] for n in block], name=f"refine{i}")
        y = keras.layers.Conv2D(1, 1, name="head")(y)
        y = keras.layers.Resizing(224, 224, interpolation="bilinear")(y)
        model = keras.Model(image, keras.layers.Activation("linear", dtype="float32")(y))
        # The old decoder had Keras's default initialisation everywhere, not imseg's zero starts.
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D) and not np.any(layer.kernel.numpy()):
                layer.kernel.assign(keras.initializers.GlorotUniform(seed=seed)(layer.kernel.shape))
        model.compile(
            keras.optimizers.Adam(1e-4),
            UnweightedCrossentropy(from_logits=True),
            weighted_metrics=[SegmentationMetrics([CLASS])],
        )

    def stream(meta, training):
        return make_dataset(meta, [0], (224, 224, 3), 8, training=training, seed=seed)

    best = {"value": -1.0, "weights": None}
    val_ious = []

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = float(logs[f"val_iou/{CLASS}"])
            val_ious.append(value)
            if np.isfinite(value) and value > best["value"]:
                best.update(value=value, weights=model.get_weights())

    start = time.monotonic()
    model.fit(
        stream(train_meta, True),
        steps_per_epoch=batches_per_epoch(train_meta, 8),
        validation_data=stream(val_meta, False),
        epochs=epochs,
        verbose=0,
        callbacks=[KeepBest()],
        shuffle=False,
    )
    minutes = (time.monotonic() - start) / 60
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    scores = model.evaluate(stream(test_meta, False), return_dict=True, verbose=0)
    return {
        "test_iou": scores[f"iou/{CLASS}"],
        "test_precision": scores[f"precision/{CLASS}"],
        "test_recall": scores[f"recall/{CLASS}"],
        "val_iou_per_epoch": val_ious,
        "train_minutes": minutes,
    }


def main():
    from run import end_children_on_sigterm

    end_children_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["old", "seed", "recipe"], choices=["old", "seed", "recipe"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the imseg variants (repeatable)",
    )
    parser.add_argument(
        "--work",
        default=os.path.join(REPO, "benchmarks", ".work"),
        help="where the dataset and the runs go (default benchmarks/.work, git-ignored)",
    )
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not os.path.isdir(DUBAI):
        raise SystemExit(f"recipe_ab: the Dubai aerial set is not at {DUBAI}")
    os.makedirs(args.work, exist_ok=True)
    data = build_dataset(args.work)
    if args.child:
        variant, seed = args.child[0], int(args.child[1])
        result = (
            run_old(data, seed, args.epochs)
            if variant == "old"
            else run_imseg(variant, data, seed, args.epochs, args.set, args.work)
        )
        print(json.dumps(result), flush=True)
        return
    dataset_stats(data)
    import statistics

    for variant in args.variants:
        tests = []
        for seed in args.seeds:
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                variant,
                str(seed),
                "--epochs",
                str(args.epochs),
                "--work",
                args.work,
            ] + [a for s in args.set for a in ("--set", s)]
            out = subprocess.run(command, check=True, env=_env(), capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            tests.append(result["test_iou"])
            emit(
                "roads.test_iou",
                result["test_iou"],
                "IoU",
                variant=variant,
                seed=seed,
                epochs=args.epochs,
                overrides=args.set if variant != "old" else [],
                **{k: v for k, v in result.items() if k != "test_iou"},
            )
        emit(
            "roads.test_iou_mean",
            statistics.mean(tests),
            "IoU",
            variant=variant,
            seeds=args.seeds,
            min=min(tests),
            max=max(tests),
            overrides=args.set if variant != "old" else [],
        )


if __name__ == "__main__":
    main()
