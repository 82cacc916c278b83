"""imseg-train: train a model from an AIR ImSeg config on an AIR `im_seg` dataset.

Everything the user passes is checked (config, classes, data layout, backbone layers) before anything
is written under the run folder. Bad input: one line on stderr and exit status 2. A run holds a lock on its
folder for its whole life, so a second process with the same run (a repeated start, a `--resume` while
the first still trains) is refused.
"""

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from imseg import __version__
from imseg.cli import ArgumentParser, log, run
from imseg.errors import ConfigError, DataError
from imseg.tfenv import import_tensorflow


@dataclass(frozen=True)
class TrainOptions:
    """What a training run is asked to do (the command line's options, as Python can pass them).

    Args:
        data_path: the dataset root `D` holding `D/im_seg/{train,val}`.
        config_path: the config file.
        classes_path: `classes.json` (default: `D/classes.json`, else ./classes.json; see `default_classes_path`).
        overrides: `key=value` strings, as `--set` takes them.
        resume: continue the run of the config's name from its last completed epoch.
        overwrite: replace an existing run of the same name.
        output_dir: where run folders go (default `D/im_seg/out`).
    """

    data_path: str
    config_path: str
    classes_path: str = None
    overrides: tuple = ()
    resume: bool = False
    overwrite: bool = False
    output_dir: str = None


@dataclass
class PreparedRun:
    """A run checked and ready to train: its config, classes, folder, compiled model and cached data.

    `lock` holds the run folder for this process (only the chief of several workers takes it).
    """

    config: object
    names: list
    outputs: list
    indices: list
    paths: object
    model: object
    details: dict
    train_meta: object  # imseg.dataset.SplitMeta
    val_meta: object
    resolved: dict
    lock: object = field(default=None, repr=False)


def parse_args(argv=None):
    p = ArgumentParser(
        prog="imseg-train", description="Train a segmentation model (a decoder on a backbone) on an AIR im_seg dataset."
    )
    p.add_argument("--data-path", help="dataset root D holding D/im_seg/{train,val,test}")
    p.add_argument("--classes-path", help="classes.json (default: D/classes.json, else ./classes.json)")
    p.add_argument("--config", help="model/training config (.json, .yaml or .yml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set epochs=1 --set augment.flip=false (repeatable)",
    )
    p.add_argument("--output-dir", metavar="DIR", help="write the run to DIR/<name> (default: D/im_seg/out/<name>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run of the config's name from its last completed epoch"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument(
        "--demo", action="store_true", help="write a synthetic dataset to ./demo_data (if absent) and train on it"
    )
    p.add_argument("--version", action="version", version=f"imseg {__version__}")
    args = p.parse_args(argv)
    if not args.demo and (not args.data_path or not args.config):
        p.error("--data-path and --config are required (or --demo)")
    return args


def options_from(args):
    """TrainOptions from parsed arguments, with the demo dataset written and filled in for `--demo`."""
    data_path, classes_path, config_path = args.data_path, args.classes_path, args.config
    if args.demo:
        from imseg.demo import write_demo_data

        demo = write_demo_data(os.path.abspath("demo_data"))
        data_path, classes_path, config_path = data_path or demo[0], classes_path or demo[1], config_path or demo[2]
    return TrainOptions(
        data_path=data_path,
        config_path=config_path,
        classes_path=classes_path,
        overrides=tuple(args.set),
        resume=args.resume,
        overwrite=args.overwrite,
        output_dir=args.output_dir,
    )


def prepare(options, strategy=None):
    """Validate every input, lock the run folder (created if needed), build the model and cache the data.
    On any error nothing is left behind. Returns a PreparedRun, or None when `--resume` finds the run finished."""
    from imseg.classes import default_classes_path, load_class_names, select_classes
    from imseg.config import load_config
    from imseg.layout import ground_sample_distance, list_split
    from imseg.outputs import FolderLock, RunPaths, check_writable
    from imseg.resume import check_resumable, load_state

    data_path = options.data_path
    config = load_config(options.config_path, options.overrides)
    source = options.config_path
    classes_path = options.classes_path or default_classes_path(data_path)
    all_names = load_class_names(classes_path)
    names, indices = select_classes(config, all_names, source, classes_path)
    if os.path.isfile(data_path):
        raise ConfigError(f"{data_path}: --data-path names a file; give the dataset's root folder (it holds im_seg/)")
    if not os.path.isdir(os.path.join(data_path, "im_seg")):
        raise ConfigError(f"{data_path}: no im_seg folder (expected {data_path}/im_seg/train, val, test)")
    train_entries = list_split(data_path, "train")
    list_split(data_path, "val")
    paths = RunPaths.for_run(data_path, config.name, options.output_dir)
    resolved = {**config.to_dict(), "classes": names}
    if not os.environ.get("TF_CONFIG"):  # a multi-worker run's other workers share the chief's folder, unlocked
        FolderLock(paths.root, "imseg-train").check_free()
    if options.resume:
        check_resumable(paths, resolved)
        finished = (load_state(paths) or {}).get("epoch", 0)
        if finished >= config.epochs:  # said before anything is built, and nothing written
            log(f"imseg: run '{config.name}' already finished {finished} epochs; to continue, raise them, "
                f"e.g. --resume --set epochs={finished + 10}")  # fmt: skip
            return None
    elif os.path.isdir(paths.root) and set(os.listdir(paths.root)) - {".lock"} and not options.overwrite:
        raise ConfigError(
            f"{paths.root}: a run named '{config.name}' already exists; pass --resume to continue it, "
            "--overwrite to replace it, or set another 'name'"
        )
    check_writable(os.path.dirname(paths.root), "the run's output folder",
                   "pass --output-dir DIR to write the run elsewhere (DIR/<name>)")  # fmt: skip
    import_tensorflow()  # only now, after the cheap checks
    from imseg.build import build_model, check_model
    from imseg.classes import output_names
    from imseg.dataset import chosen_bands, load_splits, split_check, summarize
    from imseg.distribute import is_chief, make_strategy

    # A multi-worker strategy must exist before TensorFlow's runtime starts, and building the model starts it.
    strategy = strategy or make_strategy()
    steps_per_epoch = math.ceil(len(train_entries) / config.batch_size)
    check_model(config, output_names(config, names), source, steps_per_epoch)  # before the data is cached
    schedule = config.lr_schedule
    warmup = schedule.warmup_steps or round(schedule.warmup_epochs * steps_per_epoch)
    if warmup >= config.epochs * steps_per_epoch:
        log(f"imseg: warning: the learning-rate warm-up ({warmup} steps) is not shorter than the run "
            f"({config.epochs * steps_per_epoch} steps): the rate never reaches its peak; shorten "
            "lr_schedule.warmup_epochs (or warmup_steps) or train for more epochs")  # fmt: skip
    chief = is_chief(strategy)
    created = paths.root
    while not os.path.exists(os.path.dirname(created)):  # the highest folder the lock will create
        created = os.path.dirname(created)
    created = None if os.path.exists(created) else created
    lock = FolderLock(paths.root, "imseg-train").acquire() if chief else None
    try:
        log(f"imseg: classes from {classes_path}: {', '.join(all_names)}")  # once every cheap check has passed
        outputs = output_names(config, names)
        bands = [b - 1 for b in config.bands] if config.bands else None
        check = split_check(config.task, indices, names, config.input_shape[2], bands, config.pretrained, data_path)
        train_meta, val_meta = load_splits(data_path, ["train", "val"], len(all_names), log, check)
        bands = chosen_bands(config, train_meta.bands)
        if bands is not None and not config.bands:
            log(f"imseg: the tiles have {train_meta.bands} bands; the pretrained RGB backbone reads bands 1-3 "
                "(choose others with bands)")  # fmt: skip
        if (train_meta.bands, train_meta.dtype) != (val_meta.bands, val_meta.dtype):
            raise DataError(f"{data_path}: train images have {train_meta.bands} band(s) of {train_meta.dtype}, val "
                            f"images {val_meta.bands} of {val_meta.dtype}")  # fmt: skip
        data = summarize(train_meta, indices, bands, config.task, config.background)
        model, details = build_model(config, outputs, strategy=strategy, source=source,
                                     steps_per_epoch=steps_per_epoch, data=data)  # fmt: skip
        details.update(
            chief=chief,
            pixels=train_meta.dtype,
            normalization=model.normalization,
            bands=[b + 1 for b in bands] if bands is not None else None,
            gsd=ground_sample_distance(data_path),  # metres per pixel the model learns at (None: unknown or mixed)
        )
    except BaseException:
        if lock:  # nothing written: not even the run folder the lock needed
            lock.release()
            if created:
                shutil.rmtree(created, ignore_errors=True)
        raise
    return PreparedRun(
        config=config,
        names=names,
        outputs=outputs,
        indices=indices,
        paths=paths,
        model=model,
        details=details,
        train_meta=train_meta,
        val_meta=val_meta,
        resolved=resolved,
        lock=lock,
    )


def _restore(model, paths, state, val_ds, prepared):
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
        return score_checkpoint(path, val_ds, prepared.outputs, prepared.config)

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
    return float(metric.result()[config.monitor[len("val_") :]])


def train(options, prepared, signals):
    """Train a prepared run to the end (or its early stop), writing the run folder; `signals` (StopSignals)
    stops it cleanly at the end of a step. The run folder's lock is released when this returns or raises."""
    try:
        _train(options, prepared, signals)
    finally:
        if prepared.lock:
            prepared.lock.release()


def _train(options, prepared, signals):
    import keras

    from imseg.callbacks import (
        BestIoUCheckpoint,
        EarlyStopping,
        EvaluateWithEMA,
        HParams,
        ResumeState,
        RunLogger,
        StopOnNonFiniteLoss,
        StopOnSignal,
        ValidationImages,
        hparams_of,
        read_history,
    )
    from imseg.dataset import batches_per_epoch, make_dataset, spread_tiles
    from imseg.outputs import write_json
    from imseg.resume import load_state

    config, paths, model = prepared.config, prepared.paths, prepared.model
    details = prepared.details
    chief = details["chief"]  # with several workers, only the chief writes
    if chief:
        if options.overwrite and not options.resume:
            paths.clear()
        paths.make()
        paths.remove_stale_temporaries()
        write_json(paths.config, {**prepared.resolved, "resolved": details})

    bands = [b - 1 for b in details["bands"]] if details["bands"] else None
    target = {"task": config.task, "background": config.background, "bands": bands}
    val_ds = make_dataset(
        prepared.val_meta, prepared.indices, config.input_shape, config.batch_size, training=False, **target
    )
    state = load_state(paths) if options.resume else None
    initial_epoch, best, best_epoch = (
        _restore(model, paths, state, val_ds, prepared) if options.resume else (0, -math.inf, None)
    )
    train_ds = make_dataset(
        prepared.train_meta,
        prepared.indices,
        config.input_shape,
        config.batch_size,
        training=True,
        seed=config.seed,
        first_epoch=initial_epoch,
        **target,
    )
    checkpoint = BestIoUCheckpoint(
        paths.best_model,
        paths.best_json,
        monitor=config.monitor,
        best=best,
        details={
            "classes": prepared.outputs,
            "task": config.task,
            "threshold": config.threshold,
            "name": config.name,
            "input_shape": list(config.input_shape),
            "bands": details["bands"],
            "gsd": details.get("gsd"),
            "imseg": __version__,
        },
    )
    checkpoint.best_epoch = best_epoch
    logger = RunLogger(paths.log, paths.history, config.epochs, rows=read_history(paths.history, initial_epoch))
    xla = "on" if details["jit_compile"] else "off"
    if not chief:
        logger.write_line = lambda line: None
    elif options.resume:
        logger.write_line(
            f"imseg {__version__}: resuming run '{config.name}' after epoch {initial_epoch} "
            f"(best {config.monitor} so far: {best:.4f})"
        )
    else:
        logger.write_line(
            f"imseg {__version__}: run '{config.name}' on {options.data_path}: {prepared.train_meta.count} "
            f"train / {prepared.val_meta.count} val images, classes {', '.join(prepared.names)}; "
            f"precision {details['precision']}, XLA {xla}, {details['replicas']} replica(s)"
        )
    if "xla_off_because" in details:
        log(f"imseg: note: XLA is off for this run: {details['xla_off_because']}")
    log(
        f"imseg: training '{config.name}' for epochs {initial_epoch + 1}-{config.epochs} ({details['precision']}, "
        f"XLA {xla}, {details['replicas']} replica(s)); logs in {paths.metrics}"
    )
    tensorboard = keras.callbacks.TensorBoard(log_dir=paths.metrics, write_graph=False, profile_batch=0)
    callbacks = [StopOnSignal(signals), StopOnNonFiniteLoss()]
    if config.ema is not None:
        callbacks.append(EvaluateWithEMA())
    early = None
    if config.early_stopping.patience:
        saved = (state or {}).get("early_stopping") or {}
        early = EarlyStopping(
            config.monitor,
            config.early_stopping.patience,
            config.early_stopping.min_delta,
            best=saved.get("best") if saved.get("best") is not None else -math.inf,
            wait=saved.get("wait", 0),
            log=log,
        )
        callbacks.append(early)
    if chief:
        hparams = HParams(paths.metrics, hparams_of(prepared.resolved), config.name, config.monitor, checkpoint)
        callbacks += [checkpoint, hparams, logger, tensorboard, ResumeState(paths.resume, checkpoint, early)]
        if config.tensorboard.images_every:
            tiles = spread_tiles(val_ds, prepared.val_meta.count, config.tensorboard.num_images)
            every, value_range = config.tensorboard.images_every, prepared.train_meta.value_range(bands)
            callbacks.append(ValidationImages(paths.metrics, tiles, prepared.outputs, config.task, config.threshold,
                                              every, value_range))  # fmt: skip
    start = time.monotonic()
    try:
        model.fit(
            train_ds,
            steps_per_epoch=batches_per_epoch(prepared.train_meta, config.batch_size),
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
            shuffle=False,
        )
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
    log(
        f"imseg: finished in {minutes:.1f} min; best {config.monitor} = {checkpoint.best:.4f} "
        f"(epoch {checkpoint.best_epoch})"
    )
    log(f"imseg: best model: {paths.best_model}")
    log(f"imseg: TensorBoard: tensorboard --logdir {paths.metrics} --host 127.0.0.1")


def main(argv=None):
    args = parse_args(argv)

    def work(signals):
        strategy = None
        if args.demo:
            import_tensorflow()
            from imseg.distribute import make_strategy

            strategy = make_strategy()  # before the demo data is written: a multi-worker strategy must be first
        options = options_from(args)
        prepared = prepare(options, strategy)
        if prepared:  # None: a finished run resumed, nothing to do
            train(options, prepared, signals)

    return run("imseg-train", work, stop_signals=True, stopped_hint="; continue with --resume")


if __name__ == "__main__":
    sys.exit(main())
