"""imseg-train: train a model from an AIR ImSeg config on an AIR `im_seg` dataset.

Everything the user passes is checked (config, classes, data layout, backbone layers) before anything
is written under `D/im_seg/out/`. Bad input: one line on stderr and exit status 2.
"""

import argparse
import os
import shutil
import sys
import time

from imseg import __version__
from imseg.errors import ConfigError, UserError
from imseg.tfenv import import_tensorflow


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    p = _Parser(prog="imseg-train", description="Train a RefineNet on an AIR im_seg dataset.")
    p.add_argument("--data_path", help="dataset root D holding D/im_seg/{train,val,test}")
    p.add_argument("--classes_path", help="classes.json (default: ./classes.json, else D/classes.json)")
    p.add_argument("--config", help="model/training config (.json, .yaml or .yml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set epochs=1 --set augment.flip=false (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument("--demo", action="store_true",
                   help="write a synthetic dataset to ./demo_data (if absent) and train on it")
    p.add_argument("--version", action="version", version=f"imseg {__version__}")
    args = p.parse_args(argv)
    if args.demo:
        import_tensorflow()
        from imseg.demo import write_demo_data

        data_path, classes_path, config_path = write_demo_data(os.path.abspath("demo_data"))
        args.data_path = args.data_path or data_path
        args.classes_path = args.classes_path or classes_path
        args.config = args.config or config_path
    if not args.data_path or not args.config:
        p.error("--data_path and --config are required (or --demo)")
    args.classes_path = args.classes_path or default_classes_path(args.data_path)
    return args


def default_classes_path(data_path):
    """./classes.json as in AIR ImSeg; else the one `imseg-data convert` writes beside the dataset."""
    beside = os.path.join(data_path, "classes.json")
    return beside if not os.path.exists("classes.json") and os.path.exists(beside) else "classes.json"


def prepare(args, log):
    """Validate every input and build the model; writes nothing under out/. Returns a dict of parts."""
    from imseg.classes import load_class_names, select_classes
    from imseg.config import load_config
    from imseg.layout import list_split
    from imseg.outputs import RunPaths

    config = load_config(args.config, args.set)
    source = args.config
    all_names = load_class_names(args.classes_path)
    names, indices = select_classes(config, all_names, source)
    if not os.path.isdir(os.path.join(args.data_path, "im_seg")):
        raise ConfigError(f"{args.data_path}: no im_seg folder (expected {args.data_path}/im_seg/train, val, test)")
    for split in ("train", "val"):
        list_split(args.data_path, split)
    paths = RunPaths.for_run(args.data_path, config.name)
    if os.path.isdir(paths.root) and os.listdir(paths.root) and not args.overwrite:
        raise ConfigError(
            f"{paths.root}: a run named '{config.name}' already exists; pass --overwrite to replace it "
            "or set another 'name'"
        )
    _check_writable(os.path.dirname(paths.root))
    import_tensorflow()  # only now, after the cheap checks
    from imseg.build import build_model
    from imseg.dataset import load_split

    model, details = build_model(config, names, source=source)
    train_meta = load_split(args.data_path, "train", len(all_names), log)
    val_meta = load_split(args.data_path, "val", len(all_names), log)
    return dict(config=config, names=names, indices=indices, paths=paths, model=model, details=details,
                train_meta=train_meta, val_meta=val_meta)


def _check_writable(folder):
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{existing}: output folder is not writable")


def train(args, parts, log):
    import keras

    from imseg.callbacks import BestIoUCheckpoint, RunLogger
    from imseg.dataset import make_dataset
    from imseg.outputs import write_json

    config, paths, model = parts["config"], parts["paths"], parts["model"]
    if args.overwrite and os.path.isdir(paths.root):
        shutil.rmtree(paths.root)
    paths.make()
    resolved = config.to_dict()
    resolved["classes"] = parts["names"]
    write_json(paths.config, {**resolved, "resolved": parts["details"]})

    train_ds = make_dataset(parts["train_meta"], parts["indices"], config.input_shape, config.batch_size,
                            training=True, seed=config.seed)
    val_ds = make_dataset(parts["val_meta"], parts["indices"], config.input_shape, config.batch_size,
                          training=False)
    checkpoint = BestIoUCheckpoint(paths.best_model, paths.best_json, monitor=config.monitor,
                                   details={"classes": parts["names"], "threshold": config.threshold})
    logger = RunLogger(paths.log, paths.history, config.epochs)
    d = parts["details"]
    logger.write_line(
        f"imseg {__version__}: run '{config.name}' on {args.data_path}: {parts['train_meta']['count']} train / "
        f"{parts['val_meta']['count']} val images, classes {', '.join(parts['names'])}; "
        f"precision {d['precision']}, XLA {'on' if d['jit_compile'] else 'off'}, {d['replicas']} replica(s)"
    )
    log(f"imseg: training '{config.name}' for {config.epochs} epochs ({d['precision']}, "
        f"XLA {'on' if d['jit_compile'] else 'off'}, {d['replicas']} replica(s)); logs in {paths.metrics}")
    callbacks = [
        checkpoint,
        logger,
        keras.callbacks.TensorBoard(log_dir=paths.metrics, write_graph=False, profile_batch=0),
    ]
    start = time.monotonic()
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2, shuffle=False)
    minutes = (time.monotonic() - start) / 60
    if checkpoint.best_epoch is None:
        log(f"imseg: finished in {minutes:.1f} min; {config.monitor} never had a finite value, no checkpoint saved")
        return
    log(f"imseg: finished in {minutes:.1f} min; best {config.monitor} = {checkpoint.best:.4f} "
        f"(epoch {checkpoint.best_epoch})")
    log(f"imseg: best model: {paths.best_model}")
    log(f"imseg: TensorBoard: tensorboard --logdir {paths.metrics} --host 127.0.0.1")


def main(argv=None):
    args = parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    try:
        parts = prepare(args, log)
        train(args, parts, log)
    except UserError as e:
        print(f"imseg-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imseg-train: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
