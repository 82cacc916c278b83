"""Which default starts make a from-scratch RefineNet learn: the first 80 steps of the seed config on real roads.

    python benchmarks/init_ablation.py [--steps 80] [--variants glorot head0 head0+bb0 ...]

Each variant is imseg's seed config (ResNet50 RefineNet, 224 px, batch 8, Adam 1e-4, binary cross-entropy, the
head's bias at the class prior) with some of imseg's zero starts undone (Keras's Glorot initialisation instead):

- `head0`: the classification head's kernel starts at zero;
- `dec0`: the last conv of every decoder residual branch (RCU, CRP) starts at zero;
- `bb0`: the backbone's residual branches start at zero (`zero_init_residual`);
- `glorot`: none of them (the head and decoder as Keras initialises them); `+lr3`: learning rate 1e-3.

It prints the mean loss of the first 10 and the last 20 steps, the training IoU, and the validation loss and IoU
after the steps, as JSON lines. The data is recipe_ab.py's road dataset. Reading: docs/results.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ["glorot", "head0", "head0+bb0", "head0+dec0", "head0+bb0+dec0", "head0+lr3"]


def run_variant(variant, steps, data):
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    import keras
    import numpy as np

    from imseg.build import build_model
    from imseg.callbacks import find_segmentation_metrics
    from imseg.config import load_config
    from imseg.dataset import load_split, make_dataset, summarize

    flags = set(variant.split("+"))
    sets = ["pretrained=false", "batch_size=8", "classes=[road:other]", "benchmark_class=road:other",
            f"zero_init_residual={'bb0' in flags}"]  # fmt: skip
    if "lr3" in flags:
        sets.append("optimizer_kwargs.learning_rate=0.001")
    config = load_config(os.path.join(REPO, "configs", "refine_net_224_pretrained.json"), sets)
    train = load_split(data, "train", 1, log=lambda m: None)
    model, _ = build_model(config, ["road:other"], data=summarize(train, [0]))
    glorot = keras.initializers.GlorotUniform(seed=0)
    for layer in model.layers:  # undo the zero starts this variant does not keep
        if not isinstance(layer, keras.layers.Conv2D) or np.any(layer.kernel.numpy()):
            continue
        if (layer.name == "head" and "head0" not in flags) or (layer.name != "head" and "dec0" not in flags):
            layer.kernel.assign(glorot(layer.kernel.shape))
    losses = []

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))  # Keras logs the running mean of the epoch

    start = time.monotonic()
    model.fit(make_dataset(train, [0], (224, 224, 3), 8, True), steps_per_epoch=steps, epochs=1, verbose=0,
              callbacks=[Losses()])  # fmt: skip
    n = np.arange(1, len(losses) + 1)
    per_step = np.asarray(losses) * n - np.concatenate([[0.0], np.asarray(losses)[:-1] * n[:-1]])
    trained = {k: float(v) for k, v in find_segmentation_metrics(model).result().items()}
    val = load_split(data, "val", 1, log=lambda m: None)
    scores = model.evaluate(make_dataset(val, [0], (224, 224, 3), 8, False), return_dict=True, verbose=0)
    return {"first10_loss": float(per_step[:10].mean()), "last20_loss": float(per_step[-20:].mean()),
            "train_iou": trained.get("iou/road:other"), "val_loss": float(scores["loss"]),
            "val_iou": float(scores["iou/road:other"]), "seconds": time.monotonic() - start}  # fmt: skip


def main():
    from run import end_children_on_sigterm

    end_children_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--work", default=os.path.join(REPO, "benchmarks", ".work"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from recipe_ab import build_dataset, emit

    data = build_dataset(args.work)
    if args.child:
        print(json.dumps(run_variant(args.child, args.steps, data)), flush=True)
        return
    for variant in args.variants:  # one process each: a fresh TensorFlow and seed
        command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--steps", str(args.steps),
                   "--work", args.work]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        result = json.loads(out.strip().splitlines()[-1])
        emit("init.last20_loss", result.pop("last20_loss"), "loss", variant=variant, steps=args.steps, **result)


if __name__ == "__main__":
    main()
