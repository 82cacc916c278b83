"""Decoders x backbones on real aerial imagery: quality per minute, printing JSON lines.

    python benchmarks/decoders.py --data DUBAI128 [--config configs/dubai_aerial.yaml] \
        [--runs RefineNet:MobileNetV2 FPN:ResNet50 ...] [--epochs 6] [--seeds 0] [--set KEY=VALUE ...]
    python benchmarks/decoders.py --probe [--runs ...] [--set ...]  # training images/s on random tiles, no data

Each run is `imseg-train` with the config and `type`, `backbone` and their options from the tables below (and
`--set` overrides), then `imseg-infer --split test` on its best-on-validation checkpoint; it prints the test mean
IoU and per class, the best validation mean IoU, the minutes of `fit` (validation included), training images/s
over those minutes, parameters and forward GFLOPs per image (convolutions, as benchmarks/run.py counts them).
Every run is a separate process and writes under `--work` (default benchmarks/.work/decoders), in a folder of its own
(other `--epochs` or `--set` values: another folder); a run whose folder already holds it, trained with the same
config and scored, is read again instead of trained, so a table run again goes on where it stopped. The figures
and their reading: docs/results.md, "Decoders and backbones".
"""

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

# Backbone name -> config keys. MobileNetV2 is the width of configs/dubai_aerial.yaml.
BACKBONES = {
    "MobileNetV2": {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.5}},
    "MobileNetV2-1.0": {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 1.0}},
    "ResNet50": {"backbone": "ResNet50", "backbone_kwargs": {}},
    "EfficientNetV2B0": {"backbone": "EfficientNetV2B0", "backbone_kwargs": {}},
    "EfficientNetB0": {"backbone": "EfficientNetB0", "backbone_kwargs": {}},
    "ConvNeXtTiny": {"backbone": "ConvNeXtTiny", "backbone_kwargs": {}},
}
# Decoder name -> config keys, at widths a 2-core CPU trains in the budget (the papers' widths are the defaults).
DECODERS = {
    "RefineNet": {"type": "RefineNet", "refine_net_kwargs": {"reduce_channel_scale": 4}},
    "RefineNetCascade": {"type": "RefineNetCascade", "decoder_kwargs": {"filters": 64, "top_filters": 128}},
    "LightWeightRefineNet": {"type": "LightWeightRefineNet", "decoder_kwargs": {}},
    "FPN": {"type": "FPN", "decoder_kwargs": {}},
}
# configs/dubai_aerial.yaml's own blocks and width: its RefineNet on its MobileNetV2, as measured before.
AIR_DUBAI = {"refine_net_blocks": [["block_13_expand_relu", "block_6_expand_relu"],
                                   ["block_3_expand_relu", "block_1_expand_relu"]],
             "refine_net_kwargs": {"reduce_channel_scale": 2}}  # fmt: skip


def emit(metric, value, unit, **context):
    value = None if value is None else round(float(value), 4)
    print(json.dumps({"metric": metric, "value": value, "unit": unit, **context}), flush=True)


def overrides(run, seed, epochs, extra):
    """The --set values of a run "Decoder:Backbone" (":AIR" after the backbone: the Dubai config's own blocks)."""
    decoder, backbone, *flags = run.split(":")
    keys = {**BACKBONES[backbone], "refine_net_blocks": None, "refine_net_kwargs": {}, **DECODERS[decoder]}
    if "AIR" in flags:
        keys.update(AIR_DUBAI)
    name = run.replace(":", "-") + f"-s{seed}" + (f"-e{epochs}" if epochs != 6 else "")
    if extra:  # a run under other overrides is another run, in its own folder
        name += "-" + hashlib.sha1("\n".join(extra).encode()).hexdigest()[:6]
    keys.update(name=name, seed=seed, epochs=epochs)
    return [f"{k}={json.dumps(v)}" for k, v in keys.items()] + list(extra)


def finished(folder, config_path, sets):
    """Whether `folder` holds a run of exactly this config, trained and scored on the test split: a table run
    again goes on where it stopped instead of training its finished runs again (hours each on a CPU)."""
    from imseg.config import load_config

    try:
        with open(os.path.join(folder, "config.json")) as f:
            saved = json.load(f)
        with open(os.path.join(folder, "test", "summary.json")) as f:
            json.load(f)
        with open(os.path.join(folder, "metrics", "history.csv")) as f:
            if not list(csv.DictReader(f)):
                return False
    except (OSError, ValueError):
        return False
    wanted = json.loads(json.dumps(load_config(config_path, sets).to_dict()))
    ignored = ("classes", "resolved")  # what the training added: the data's class names and what it resolved
    return {k: v for k, v in saved.items() if k not in ignored} == {k: v for k, v in wanted.items() if k not in ignored}


def model_figures(config_path, sets):
    """(parameters, forward GFLOPs per image) of the configured model, built in this process."""
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    from run import model_flops

    from imseg.build import build_segmenter
    from imseg.config import load_config

    config = load_config(config_path, [*sets, "ema=null"])  # moving averages are copies of the weights, not parameters
    model = build_segmenter(config, [f"c{i}" for i in range(5)])
    return model.count_params(), model_flops(model) / 1e9


def train_and_score(data, config, run, sets, work):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = ["--data-path", data, "--config", config, "--output-dir", work, "--overwrite"]
    argv += [a for s in sets for a in ("--set", s)]
    name = next(s.split("=", 1)[1] for s in sets if s.startswith("name="))
    folder = os.path.join(work, json.loads(name))
    if finished(folder, config, sets):
        print(f"decoders.py: {run}: {folder} holds this run, trained and scored; its figures are read again",
              file=sys.stderr)  # fmt: skip
        return figures(data, folder)
    subprocess.run([sys.executable, "-m", "imseg.train", *argv], check=True, env=env, stdout=subprocess.DEVNULL)
    model = os.path.join(folder, "checkpoints", "best.keras")
    subprocess.run(
        [sys.executable, "-m", "imseg.infer", "--data-path", data, "--model", model, "--split", "test",
         "--config", os.path.join(folder, "config.json"), "--output", os.path.join(folder, "test")],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return figures(data, folder)


def figures(data, folder):
    """A trained and scored run's figures, from its history and its test summary."""
    with open(os.path.join(folder, "metrics", "history.csv")) as f:
        rows = list(csv.DictReader(f))
    seconds = sum(float(r["seconds"]) for r in rows)
    with open(os.path.join(folder, "test", "summary.json")) as f:
        summary = json.load(f)
    tiles = len(os.listdir(os.path.join(data, "im_seg", "train", "images")))
    return {
        "test_mean_iou": summary["mean_iou"],
        "test_per_class": summary["iou"],
        "val_mean_iou_per_epoch": [round(float(r["val_mean_iou"]), 4) for r in rows],
        "minutes": round(seconds / 60, 2),
        "train_images_per_s": round(tiles * len(rows) / seconds, 2),
    }


def probe(runs, config_path, extra, steps=12, batch=16, size=128):
    """Training images/s of each run's model (the config with the run's and `extra` overrides, no augmentation) on
    random tiles (after a warm-up), in this process."""
    import numpy as np

    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    from imseg.build import build_model
    from imseg.config import load_config

    for run in runs:
        config = load_config(config_path, [*overrides(run, 0, 1, extra), "augment={}"])
        model, _ = build_model(config, [f"c{i}" for i in range(5)], steps_per_epoch=steps)
        x = np.random.default_rng(0).integers(0, 256, (batch * steps, size, size, 3)).astype("uint8")
        y = np.eye(5, dtype="float32")[np.random.default_rng(1).integers(0, 5, (batch * steps, size, size))]
        model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # trace
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        rate = batch * steps / (time.perf_counter() - start)
        params, gflops = model_figures(config_path, overrides(run, 0, 1, extra))
        emit("decoders.probe_images_per_s", rate, "images/s", run=run, params=params, gflops_per_image=round(gflops, 3))


def main():
    from run import end_children_on_sigterm

    end_children_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the Dubai set converted to 128 px tiles (docs/results.md, 'Reproduce')")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "dubai_aerial.yaml"))
    table = [f"{d}:{b}" for b in ("MobileNetV2", "ResNet50", "EfficientNetV2B0") for d in DECODERS]
    parser.add_argument("--runs", nargs="+", default=table, help="DECODER:BACKBONE[:AIR] (default: the table)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override, repeatable")
    parser.add_argument("--work", default=os.path.join(REPO, "benchmarks", ".work", "decoders"))
    parser.add_argument("--probe", action="store_true", help="only training images/s on random tiles")
    args = parser.parse_args()
    for run in args.runs:
        decoder, backbone, *_ = run.split(":")
        if decoder not in DECODERS or backbone not in BACKBONES:
            parser.error(f"--runs {run}: expected DECODER:BACKBONE[:AIR] of {', '.join(DECODERS)} and "
                         f"{', '.join(BACKBONES)}")  # fmt: skip
    if args.probe:
        probe(args.runs, args.config, args.set)
        return
    if not args.data or not os.path.isdir(os.path.join(args.data, "im_seg")):
        parser.error("--data: give the converted Dubai dataset (a folder with im_seg/)")
    os.makedirs(args.work, exist_ok=True)
    failed = []
    for run in args.runs:
        for seed in args.seeds:
            sets = overrides(run, seed, args.epochs, args.set)
            try:
                result = train_and_score(args.data, args.config, run, sets, args.work)
            except subprocess.CalledProcessError as e:  # hours of other runs still to come: go on with them
                failed.append(f"{run} seed {seed}")
                print(f"decoders.py: {run} seed {seed}: {e.cmd[2]} exited with status {e.returncode} (its messages "
                      "are above); going on with the other runs", file=sys.stderr)  # fmt: skip
                continue
            params, gflops = model_figures(args.config, sets)
            emit("decoders.test_mean_iou", result.pop("test_mean_iou"), "IoU", run=run, seed=seed, epochs=args.epochs,
                 overrides=args.set, params=params, gflops_per_image=round(gflops, 3), **result)  # fmt: skip
    if failed:
        sys.exit(f"decoders.py: {len(failed)} run(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
