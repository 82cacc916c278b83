"""imseg-train: train a model from an AIR ImSeg config on an AIR `im_seg` dataset.

Everything the user passes is checked (config, classes, data layout, backbone layers) before anything
is written under `D/im_seg/out/`. Bad input: one line on stderr and exit status 2.
"""

import math
import os
import shutil
import signal
import sys
import time

from imseg import __version__
from imseg.cli import ArgumentParser
from imseg.errors import ConfigError, TrainingStopped, UserError
from imseg.signals import Interrupted, StopSignals
from imseg.tfenv import import_tensorflow


def parse_args(argv=None):
    p = ArgumentParser(prog="imseg-train", description="Train a RefineNet on an AIR im_seg dataset.")
    p.add_argument("--data_path", help="dataset root D holding D/im_seg/{train,val,test}")
    p.add_argument("--classes_path", help="classes.json (default: ./classes.json, else D/classes.json)")
    p.add_argument("--config", help="model/training config (.json, .yaml or .yml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set epochs=1 --set augment.flip=false (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run of the config's name from its last completed epoch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument("--demo", action="store_true",
                   help="write a synthetic dataset to ./demo_data (if absent) and train on it")
    p.add_argument("--version", action="version", version=f"imseg {__version__}")
    args = p.parse_args(argv)
    if not args.demo and (not args.data_path or not args.config):
        p.error("--data_path and --config are required (or --demo)")
    return args


def use_demo(args):
    """Write the demo dataset (if absent) and point the arguments the user left out at it."""
    from imseg.demo import write_demo_data

    data_path, classes_path, config_path = write_demo_data(os.path.abspath("demo_data"))
    args.data_path = args.data_path or data_path
    args.classes_path = args.classes_path or classes_path
    args.config = args.config or config_path


def prepare(args, log, strategy=None):
    """Validate every input and build the model; writes nothing under out/. Returns a dict of parts."""
    from imseg.classes import load_class_names, select_classes
    from imseg.config import load_config
    from imseg.layout import list_split
    from imseg.outputs import RunPaths
    from imseg.resume import check_resumable

    from imseg.classes import default_classes_path

    args.classes_path = args.classes_path or default_classes_path(args.data_path)
    config = load_config(args.config, args.set)
    source = args.config
    all_names = load_class_names(args.classes_path)
    names, indices = select_classes(config, all_names, source)
    if not os.path.isdir(os.path.join(args.data_path, "im_seg")):
        raise ConfigError(f"{args.data_path}: no im_seg folder (expected {args.data_path}/im_seg/train, val, test)")
    train_entries = list_split(args.data_path, "train")
    list_split(args.data_path, "val")
    paths = RunPaths.for_run(args.data_path, config.name)
    resolved = {**config.to_dict(), "classes": names}
    if args.resume:
        check_resumable(paths, resolved)
    elif os.path.isdir(paths.root) and os.listdir(paths.root) and not args.overwrite:
        raise ConfigError(
            f"{paths.root}: a run named '{config.name}' already exists; pass --resume to continue it, "
            "--overwrite to replace it, or set another 'name'"
        )
    _check_writable(os.path.dirname(paths.root))
    import_tensorflow()  # only now, after the cheap checks
    from imseg.build import build_model, set_head_priors
    from imseg.distribute import is_chief, make_strategy
    from imseg.classes import output_names
    from imseg.dataset import class_frequencies, load_splits, split_check

    strategy = strategy or make_strategy()
    outputs = output_names(config, names)
    steps_per_epoch = math.ceil(len(train_entries) / config.batch_size)
    model, details = build_model(config, outputs, strategy=strategy, source=source, steps_per_epoch=steps_per_epoch)
    details["chief"] = is_chief(strategy)
    train_meta, val_meta = load_splits(args.data_path, ["train", "val"], len(all_names), log,
                                       split_check(config.task, indices, names))
    set_head_priors(model, class_frequencies(train_meta, indices, config.task, config.background), config.task)
    return dict(config=config, names=names, outputs=outputs, indices=indices, paths=paths, model=model,
                details=details, train_meta=train_meta, val_meta=val_meta, resolved=resolved)


def _check_writable(folder):
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing):
        raise ConfigError(f"{existing}: not a folder, so the run's output folder cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{existing}: output folder is not writable")


def _restore(model, paths, state, val_ds, parts, log):
    """Load the last completed epoch's weights and optimizer state; return (epoch, best, best_epoch)."""
    from imseg.resume import best_so_far

    epoch = 0
    if state:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(paths.resume, state["weights"]))
        epoch = state["epoch"]

    def score(path):
        log(f"imseg: {path} is newer than best.json (a stop while it was written); scoring it on val")
        return score_checkpoint(path, val_ds, parts["outputs"], parts["config"])

    best, best_epoch = best_so_far(paths, state, score)
    return epoch, best, best_epoch


def score_checkpoint(path, val_ds, names, config):
    """The monitored validation score of a saved model."""
    import keras

    from imseg.metrics import SegmentationMetrics

    model = keras.models.load_model(path, compile=False)
    metric = SegmentationMetrics(names, threshold=config.threshold, task=config.task)
    for images, masks, valid in val_ds:
        metric.update_state(masks, model.predict_on_batch(images), valid)
    return float(metric.result()[config.monitor[len("val_"):]])


def train(args, parts, log, signals):
    import keras

    from imseg.callbacks import (BestIoUCheckpoint, EarlyStopping, EvaluateWithEMA, ResumeState, RunLogger,
                                 StopOnNonFiniteLoss, StopOnSignal, read_history)
    from imseg.dataset import batches_per_epoch, make_dataset
    from imseg.outputs import write_json
    from imseg.resume import load_state

    config, paths, model = parts["config"], parts["paths"], parts["model"]
    chief = parts["details"]["chief"]  # with several workers, only the chief writes
    if chief:
        if args.overwrite and not args.resume and os.path.isdir(paths.root):
            shutil.rmtree(paths.root)
        paths.make()
        paths.remove_stale_temporaries()
        write_json(paths.config, {**parts["resolved"], "resolved": parts["details"]})

    target = {"task": config.task, "background": config.background}
    val_ds = make_dataset(parts["val_meta"], parts["indices"], config.input_shape, config.batch_size,
                          training=False, **target)
    state = load_state(paths) if args.resume else None
    initial_epoch, best, best_epoch = _restore(model, paths, state, val_ds, parts, log) if args.resume \
        else (0, -math.inf, None)
    train_ds = make_dataset(parts["train_meta"], parts["indices"], config.input_shape, config.batch_size,
                            training=True, seed=config.seed, first_epoch=initial_epoch, **target)
    checkpoint = BestIoUCheckpoint(paths.best_model, paths.best_json, monitor=config.monitor, best=best,
                                   details={"classes": parts["outputs"], "task": config.task,
                                            "threshold": config.threshold})
    checkpoint.best_epoch = best_epoch
    logger = RunLogger(paths.log, paths.history, config.epochs, rows=read_history(paths.history, initial_epoch))
    d = parts["details"]
    if not chief:
        logger.write_line = lambda line: None
    elif args.resume:
        logger.write_line(f"imseg {__version__}: resuming run '{config.name}' after epoch {initial_epoch} "
                          f"(best {config.monitor} so far: {best:.4f})")
    else:
        logger.write_line(
            f"imseg {__version__}: run '{config.name}' on {args.data_path}: {parts['train_meta']['count']} train / "
            f"{parts['val_meta']['count']} val images, classes {', '.join(parts['names'])}; "
            f"precision {d['precision']}, XLA {'on' if d['jit_compile'] else 'off'}, {d['replicas']} replica(s)"
        )
    if initial_epoch >= config.epochs:
        log(f"imseg: run '{config.name}' already finished {initial_epoch} epochs; to continue, raise them, "
            f"e.g. --resume --set epochs={initial_epoch + 10}")
        return
    log(f"imseg: training '{config.name}' for epochs {initial_epoch + 1}-{config.epochs} ({d['precision']}, "
        f"XLA {'on' if d['jit_compile'] else 'off'}, {d['replicas']} replica(s)); logs in {paths.metrics}")
    tensorboard = keras.callbacks.TensorBoard(log_dir=paths.metrics, write_graph=False, profile_batch=0)
    callbacks = [StopOnSignal(signals), StopOnNonFiniteLoss()]
    if config.ema is not None:
        callbacks.append(EvaluateWithEMA())
    early = None
    if config.early_stopping.patience:
        saved = (state or {}).get("early_stopping") or {}
        early = EarlyStopping(config.monitor, config.early_stopping.patience, config.early_stopping.min_delta,
                              best=saved.get("best") if saved.get("best") is not None else -math.inf,
                              wait=saved.get("wait", 0), log=log)
        callbacks.append(early)
    if chief:
        callbacks += [checkpoint, logger, tensorboard, ResumeState(paths.resume, checkpoint, early)]
    start = time.monotonic()
    try:
        model.fit(train_ds, steps_per_epoch=batches_per_epoch(parts["train_meta"], config.batch_size),
                  validation_data=val_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2, shuffle=False)
    except BaseException as stop:
        if chief:
            tensorboard.on_train_end()  # flush the event files of the finished epochs
            logger.write_line(f"stopped: {stop}; the last completed epoch is kept, continue with --resume")
        raise
    minutes = (time.monotonic() - start) / 60
    if not chief:
        log(f"imseg: worker finished in {minutes:.1f} min (the chief writes the outputs)")
        return
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

    signals = StopSignals()
    signals.install()
    try:
        strategy = None
        if args.demo:
            import_tensorflow()
            from imseg.distribute import make_strategy

            strategy = make_strategy()  # before the demo data is written: a multi-worker strategy must be first
            use_demo(args)
        parts = prepare(args, log, strategy)
        train(args, parts, log, signals)
    except UserError as e:
        print(f"imseg-train: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"imseg-train: error: {e}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"imseg-train: stopped by {signal.Signals(signum).name}; continue with --resume", file=sys.stderr)
        return 128 + signum
    finally:
        signals.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
