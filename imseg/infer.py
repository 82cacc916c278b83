"""imseg-infer: predict a split of an AIR dataset (with scores) or any images (of any size) with a trained model.

Split mode writes to `D/im_seg/out/<name>/preds/<split>/`; `--images` mode writes to `--output`:
- `masks/<class>/<id>.png`: 0/255 mask per image and class (`<class>` is `super-sub`); GeoTIFF input
  gives GeoTIFF masks with the input's georeference when rasterio is installed;
- `classes/<id>.png` (multiclass): one class index per pixel, in the order of `summary.json`'s `classes`,
  255 where a pixel does not count (ignored in a split, nodata in an image);
- `overlays/<id>.png`: the image with each class in its colour (labelled splits: prediction | truth);
- `legend.png` and `summary.json` (classes and colours; for splits the scores over the whole split);
- `sheet.png` (splits): 16 images spread over the split, prediction next to truth, with the legend;
- `metrics.csv` (splits): per image and class IoU, precision and recall;
- `probs/<id>.npy` with `--save-probs`: float16 (h, w, classes) sigmoid probabilities.
"""

import csv
import dataclasses
import io
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from imseg.cli import ArgumentParser, integer, log, number, run
from imseg.errors import ConfigError, DataError
from imseg.tasks import BACKGROUND

SHEET_SIZE = 16  # images in a split's sheet.png
NOT_COUNTED = 255  # class-index images: a pixel that is ignored (splits) or nodata (images)


@dataclass(frozen=True)
class Predictor:
    """A trained model and what its outputs mean.

    Args:
        model: the Keras model (0-255 images in, logits out).
        path: its file.
        classes: the output channels' names, in order (`background` included for a multiclass task with one).
        task: `"multilabel"` or `"multiclass"`.
        threshold: the multilabel decision threshold on logits.
        name: the run's name (where split predictions go).
        batch_size: the default number of images or tiles per prediction call.
        config: the run's `Config`, when one was given (split prediction needs it).
        bands: the image bands the model reads, counted from 1 (None: all).
        gsd: the metres per pixel the model was trained at (None: unknown); scenes of another are resampled.
    """

    model: object
    path: str
    classes: tuple
    task: str = "multilabel"
    threshold: float = 0.0
    name: str = None
    batch_size: int = 8
    config: object = None
    bands: tuple = None
    gsd: float = None


def shard_spec(text):
    """ "K/N" -> (K, N), checked: 1 <= K <= N."""
    import argparse

    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 2/8, got {text!r}")
    return int(k), int(n)


def parse_args(argv=None):
    p = ArgumentParser(prog="imseg-infer", description="Predict with a trained imseg model.")
    p.add_argument("--config", help="the run's config (needed for --split; optional with --model and --images)")
    p.add_argument("--data-path", help="dataset root D (split mode, and the default model location)")
    p.add_argument("--classes-path", help="classes.json (default: D/classes.json, else ./classes.json)")
    p.add_argument("--split", choices=("train", "val", "test"), help="split to predict (default val)")
    p.add_argument("--model", help="a .keras model (default: the run's checkpoints/best.keras)")
    p.add_argument("--output-dir", metavar="DIR", help="where the run folder is: DIR/<name> (as imseg-train's)")
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files or folders to predict instead of a split")
    p.add_argument("--output", help="output folder for --images")
    p.add_argument(
        "--overlap", type=number(0, 0.5), default=0.25, help="tile overlap for large images, 0-0.5 (default 0.25)"
    )
    p.add_argument("--batch-size", type=integer(1), help="images or tiles per batch (default: the config's)")
    p.add_argument("--save-probs", action="store_true", help="also write float16 probabilities (.npy)")
    p.add_argument(
        "--bands", type=integer(1), nargs="+", help="image bands to read, counted from 1 (default: the model's)"
    )
    p.add_argument("--threshold", type=number(-1e9, 1e9), metavar="T",
                   help="multilabel: a class where its logit > T (default: the model's, usually 0)")  # fmt: skip
    p.add_argument("--shard", type=shard_spec, metavar="K/N",
                   help="take scenes K, K+N, K+2N, ... of --images (1-based): N processes share one job")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="clear an --output folder that holds other predictions before writing")  # fmt: skip
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: average each tile's logits over its four flips (4x the work)")  # fmt: skip
    p.add_argument("--vectorize", action="store_true", help="also write <stem>.geojson: the regions as polygons")
    p.add_argument("--simplify", type=number(0, 100), default=1.0, help="polygon tolerance in pixels (default 1)")
    p.add_argument("--min-area", type=number(0, 1e12), default=0.0, help="drop regions under this many m2 (default 0)")
    p.add_argument("--output-grid", choices=("scene", "model"), default="scene",
                   help="masks of a scene resampled to the model's ground sample distance: on the scene's own grid "
                        "(default) or the model's")  # fmt: skip
    p.add_argument("--vector-format", choices=("geojson", "gpkg", "fgb"), default="geojson",
                   help="polygons as GeoJSON (default), GeoPackage (a layer per class) or FlatGeobuf")  # fmt: skip
    p.add_argument("--vector-crs", choices=("wgs84", "image"), default="wgs84",
                   help="polygons in WGS84 (RFC 7946, default) or the image's CRS")  # fmt: skip
    args = p.parse_args(argv)
    if args.vectorize and not args.images:
        p.error("--vectorize turns predicted images into polygons; give --images (GeoTIFF scenes)")
    if args.shard and not args.images:
        p.error("--shard shares the scenes of --images among processes; give --images")
    if args.images and args.split:
        p.error("--split predicts a dataset split, --images predicts image files; give one of them")
    if args.images and not args.output:
        p.error("--images needs --output DIR")
    if not args.images and not args.data_path:
        p.error("give --data-path (to predict a split) or --images and --output")
    if not args.images and not args.config:
        p.error("predicting a split needs --config (the run's config, e.g. its out/<name>/config.json)")
    if not args.model and not (args.config and args.data_path):
        p.error("give --model, or --config and --data-path to use the run's best.keras")
    args.split = args.split or "val"
    return args


def class_folder(name):
    return name.replace(":", "-")


def load_predictor(model_path=None, config_path=None, data_path=None, classes_path=None, output_dir=None):
    """The trained model with its classes, task and threshold, all checked against each other.

    The model file's own record (`imseg.json`, see `imseg.checkpoints`) says what it predicts; a config,
    when given, must agree with it. Without a config the record alone is enough (image prediction).
    """
    from imseg.checkpoints import load_trained_model, read_metadata
    from imseg.classes import default_classes_path, load_class_names, output_names, select_classes
    from imseg.config import load_config
    from imseg.outputs import RunPaths

    config = load_config(config_path) if config_path else None
    if model_path is None:
        model_path = RunPaths.for_run(data_path, config.name, output_dir).best_model
    if not os.path.isfile(model_path):
        raise ConfigError(f"{model_path}: model file not found (train first, or pass --model)")
    record = read_metadata(model_path) or _best_json(model_path) or {}
    trained = record.get("classes")
    if config is not None:
        if config.classes and not classes_path:  # a run's config.json names its classes: no classes file needed
            selected = list(config.classes)
        else:
            classes_path = classes_path or default_classes_path(data_path or ".")
            selected = select_classes(config, load_class_names(classes_path), config_path, classes_path)[0]
        classes = output_names(config, selected)
        if trained and trained != classes:
            raise ConfigError(f"{model_path}: trained on classes {trained}, but {config_path} selects {classes}")
        settings = {
            "task": config.task,
            "threshold": config.threshold,
            "name": config.name,
            "batch_size": config.batch_size,
            "bands": config.bands or (tuple(record["bands"]) if record.get("bands") else None),
        }
    elif trained:
        classes = trained
        if classes_path:
            listed = load_class_names(classes_path)
            missing = [c for c in classes if c not in listed and c != BACKGROUND]
            if missing:
                raise ConfigError(
                    f"{model_path}: trained on classes {trained}, but {classes_path} lacks {', '.join(missing)}"
                )
        settings = {
            "task": record.get("task", "multilabel"),
            "threshold": record.get("threshold", 0.0),
            "name": record.get("name"),
            "bands": tuple(record["bands"]) if record.get("bands") else None,
        }
    else:
        raise ConfigError(
            f"{model_path}: the file does not say which classes it predicts (no imseg record); "
            "pass --config, the config it was trained with"
        )
    model = load_trained_model(model_path)
    if model.output_shape[-1] != len(classes):
        source = config_path or f"{model_path}'s record"
        raise ConfigError(
            f"{model_path}: predicts {model.output_shape[-1]} classes, but {source} selects "
            f"{len(classes)}: {', '.join(classes)}"
        )
    return Predictor(model=model, path=model_path, classes=tuple(classes), config=config, gsd=record.get("gsd"),
                     **settings)  # fmt: skip


def _best_json(model_path):
    """The best.json beside a model saved by an imseg run of before the record inside the model file."""
    path = os.path.join(os.path.dirname(model_path), "best.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def predict_split(
    predictor,
    data_path,
    split="val",
    classes_path=None,
    output_dir=None,
    batch_size=None,
    save_probs=False,
    tta="none",
    log=log,
):
    """Predict a split of an AIR dataset and score it; writes `<run>/preds/<split>/` (see the module docstring).

    Args:
        predictor: from `load_predictor` with a config (it selects the classes of the dataset).
        data_path: the dataset root `D`.
        split: "train", "val" or "test".
        classes_path: the dataset's `classes.json` (default: `D/classes.json`, else ./classes.json).
        output_dir: where the run folder is (default `D/im_seg/out`).
        batch_size: images per prediction call (default: the config's).
        save_probs: also write float16 probabilities.
        tta: "flip" averages each image's logits over its four flips.
        log: called with each line to report.

    Returns:
        The summary (also written as `summary.json`).
    """
    from imseg.classes import default_classes_path, load_class_names, select_classes
    from imseg.dataset import chosen_bands, load_split, make_dataset, split_check
    from imseg.layout import list_split
    from imseg.outputs import RunPaths, output_folder

    config, names, model = predictor.config, list(predictor.classes), predictor.model
    classes_path = classes_path or default_classes_path(data_path)
    all_names = load_class_names(classes_path)
    indices = select_classes(config, all_names, "config", classes_path)[1]
    log(f"imseg: classes from {classes_path}: {', '.join(all_names)}")
    entries = list_split(data_path, split)
    out = os.path.join(RunPaths.for_run(data_path, config.name, output_dir).root, "preds", split)
    with output_folder(out, "imseg-infer"):
        bands = [b - 1 for b in config.bands] if config.bands else None
        check = split_check(config.task, indices, names, config.input_shape[2], bands, config.pretrained, data_path)
        meta = load_split(data_path, split, len(all_names), log, check)
        bands = chosen_bands(config, meta.bands)
        ds = make_dataset(
            meta,
            indices,
            model.input_shape[1:],
            batch_size or predictor.batch_size,
            training=False,
            task=config.task,
            background=config.background,
            bands=bands,
        )
        summary = _predict_split_into(out, predictor, ds, meta, bands, entries, split, save_probs, tta, log)
    log(
        f"imseg-infer: {meta.count} images of '{split}': mean IoU {summary['mean_iou']:.4f}; "
        + ", ".join(f"{n} {summary['iou'][n]:.4f}" for n in names if summary["iou"][n] is not None)
    )
    log(f"imseg-infer: wrote masks, overlays, metrics.csv and summary.json to {out}")
    return summary


def _predict_split_into(out, predictor, ds, meta, bands, entries, split, save_probs, tta, log):
    from imseg.metrics import KINDS, counts_from_masks, scores_from_counts
    from imseg.outputs import write_json, write_png, write_text
    from imseg.predict import predict_masks, predict_tiles
    from imseg.progress import progress
    from imseg.visualize import class_colours, contact_sheet, displayable, drawn_colours, hex_colour, legend, overlay

    names, model, task, threshold = list(predictor.classes), predictor.model, predictor.task, predictor.threshold
    value_range = meta.value_range(bands)  # one for all images, so that their overlays compare
    colours = class_colours(names)
    palette = drawn_colours(names)
    _make_dirs(out, names, save_probs, task)
    totals = np.zeros((3, len(names)), np.int64)
    confusion = np.zeros((len(names), len(names)), np.int64)
    rows, sheet = [], []
    shown = set(np.linspace(0, meta.count - 1, min(SHEET_SIZE, meta.count)).round().astype(int).tolist())
    ids = iter(enumerate(entry[0] for entry in entries))
    for images, masks, valid in progress(ds, f"predicting {split}", unit="batches", total=int(ds.cardinality())):
        logits = predict_tiles(model, images.numpy(), tta)
        for pixels, truth, ok, logit in zip(
            images.numpy(), masks.numpy().astype(bool), valid.numpy().astype(bool), logits
        ):
            index, stem = next(ids)
            image = displayable(pixels, value_range)
            predicted = predict_masks(logit, task, threshold)
            counts = np.stack(counts_from_masks(truth, predicted, ok)).astype(np.int64)
            totals += counts
            if task == "multiclass":
                np.add.at(confusion, (truth.argmax(-1)[ok], predicted.argmax(-1)[ok]), 1)
            scores = scores_from_counts(*counts, class_names=names)
            for k, name in enumerate(names):
                rows.append([stem, name] + [_number(scores[kind][k]) for kind in KINDS])
            drawn = _write_prediction(
                out,
                stem,
                image,
                predicted & ok[..., None],
                names,
                palette,
                save_probs,
                logit,
                truth=overlay(image, truth & ok[..., None], palette),
                task=task,
                valid=ok,
            )
            if index in shown:
                sheet.append((f"{stem}: prediction | truth", drawn))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["image", "class", *KINDS], *rows])
    write_text(os.path.join(out, "metrics.csv"), buffer.getvalue())
    scores = scores_from_counts(*totals, class_names=names)
    summary = {
        "split": split,
        "images": meta.count,
        "model": os.path.abspath(predictor.path),
        "task": task,
        "threshold": threshold,
        "tta": tta,
        "classes": names,
        "colours": {n: hex_colour(c) for n, c in colours.items()},
        "mean_iou": _number(scores["mean_iou"]),
        **{kind: {n: _number(scores[kind][k]) for k, n in enumerate(names)} for kind in KINDS},
        "pixels": {
            n: {"tp": int(totals[0, k]), "fp": int(totals[1, k]), "fn": int(totals[2, k])} for k, n in enumerate(names)
        },
    }
    if task == "multiclass":
        summary["pixel_accuracy"] = _number(np.trace(confusion) / max(confusion.sum(), 1))
        summary["confusion_matrix"] = {"rows": "truth", "columns": "prediction", "matrix": confusion.tolist()}
    write_png(os.path.join(out, "legend.png"), np.asarray(legend(colours)))
    title = f"{split}: mean IoU {summary['mean_iou'] or float('nan'):.3f}"
    write_png(os.path.join(out, "sheet.png"), np.asarray(contact_sheet(sheet, colours, columns=2, title=title)))
    write_json(os.path.join(out, "summary.json"), summary)
    return summary


def _number(value):
    value = float(value)
    return None if np.isnan(value) else value


def _make_dirs(out, names, probs, task):
    for name in names:
        if name != BACKGROUND:
            os.makedirs(os.path.join(out, "masks", class_folder(name)), exist_ok=True)
    os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    if task == "multiclass":
        os.makedirs(os.path.join(out, "classes"), exist_ok=True)
    if probs:
        os.makedirs(os.path.join(out, "probs"), exist_ok=True)


def _write_prediction(out, stem, image, predicted, names, palette, save_probs, logits, truth=None, task="multilabel",
                      valid=None):  # fmt: skip
    """Masks (and for multiclass the class-index image), overlay and probabilities of one image.

    `predicted` (h, w, K) is already off where `valid` (h, w) is false.
    """
    from imseg.outputs import atomic_path, write_png
    from imseg.predict import probabilities
    from imseg.visualize import displayable, overlay

    valid = np.ones(predicted.shape[:2], bool) if valid is None else valid
    for k, name in enumerate(names):
        if name == BACKGROUND:
            continue
        write_png(
            os.path.join(out, "masks", class_folder(name), stem + ".png"), predicted[..., k].astype(np.uint8) * 255
        )
    if task == "multiclass":
        index = np.where(valid, predicted.argmax(-1), NOT_COUNTED).astype(np.uint8)
        write_png(os.path.join(out, "classes", stem + ".png"), index)
    drawn = overlay(displayable(image), predicted, palette)
    if truth is not None:
        drawn = np.concatenate([drawn, np.full((drawn.shape[0], 4, 3), 255, np.uint8), truth], axis=1)
    write_png(os.path.join(out, "overlays", stem + ".png"), drawn)
    if save_probs:
        with atomic_path(os.path.join(out, "probs", stem + ".npy"), suffix=".npy") as tmp:
            np.save(tmp, probabilities(logits, task).astype(np.float16))
    return drawn


def image_files(paths):
    """The image files that `--images` names, in a stable order: files, folders of images (by name), glob
    patterns (`scenes/*.tif`, quoted against the shell; sorted), and text files that list paths one per line
    (`.txt`, `.lst`; relative to the list, `#` comments). Every missing file is named before anything starts."""
    import glob

    from imseg.layout import IMAGE_EXTENSIONS

    found, missing = [], []

    def add(path, origin=None):
        if os.path.isdir(path):
            found.extend(sorted(
                os.path.join(path, n) for n in os.listdir(path) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
            ))  # fmt: skip
        elif os.path.isfile(path) and path.lower().endswith((".txt", ".lst")) and origin is None:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.split("#", 1)[0].strip()
                    if line:
                        add(os.path.join(os.path.dirname(path), line), origin=path)
        elif os.path.isfile(path):
            found.append(path)
        elif any(c in path for c in "*?[") and origin is None:
            matches = sorted(glob.glob(path))
            if not matches:
                missing.append(f"{path} (no file matches)")
            for match in matches:
                add(match, origin=path)
        else:
            missing.append(f"{path} (listed in {origin})" if origin else path)

    for path in paths:
        add(path)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConfigError(f"{len(missing)} image(s) not found: {', '.join(missing[:5])}{more}; nothing was predicted")
    if not found:
        raise ConfigError(f"no images in {', '.join(paths)}")
    return list(dict.fromkeys(found))  # a scene named twice is predicted once


MANIFEST = "manifest.jsonl"  # one record per finished scene; a scene without one is (re)done
OWN_ENTRIES = {".lock", ".locks", MANIFEST, "summary.json", "legend.png", "masks", "classes", "overlays", "probs",
               "mosaic.vrt"}  # fmt: skip


def predict_images(
    predictor,
    paths,
    output,
    overlap=0.25,
    batch_size=None,
    save_probs=False,
    log=log,
    tta="none",
    vectorize=False,
    simplify=1.0,
    min_area=0.0,
    vector_crs="wgs84",
    overwrite=False,
    vector_format="geojson",
    output_grid="scene",
    shard=None,
):
    """Predict image files of any size with a sliding window; writes masks, overlays, a manifest and a summary to
    `output`: a job of many scenes, resumable, and shared by several processes if need be.

    GeoTIFF scenes are read window by window and written strip by strip as tiled GeoTIFFs with their CRS and
    transform (`imseg.geo.raster`), so their size is not bounded by memory; other images are read whole. Each
    scene's files are written whole (temporary name, then renamed), and only then its record is appended to
    `output/manifest.jsonl`: running the same job again skips the scenes with a record and redoes the others (one
    cut short included). Several processes (`shard`, or simply started together) may write into one `output`:
    each scene is taken by one process at a time, and the manifest takes their records in turn.

    Args:
        predictor: from `load_predictor`.
        paths: image files, folders, glob patterns or lists of paths (see `image_files`).
        output: the output folder (created). One that holds predictions of the same model with the same settings
            is added to; any other non-empty folder is refused, unless `overwrite` clears it first.
        overlap: the fraction of a tile shared with its neighbour, 0 to 0.5.
        batch_size: tiles per prediction call (default: the predictor's).
        save_probs: also write probabilities.
        log: called with each line to report.
        tta: "flip" averages each tile's logits over its four flips.
        vectorize: also write `<stem>.geojson`, the predicted regions as polygons (georeferenced GeoTIFFs).
        simplify, min_area, vector_crs, vector_format: see `imseg.geo.polygons.vectorize`.
        overwrite: clear `output` first.
        output_grid: for a model that records the ground sample distance it was trained at, GeoTIFF scenes of
            another are predicted resampled to it, and written on their own grid ("scene") or the model's ("model").
        shard: (K, N): this process takes the scenes K, K + N, K + 2N, ... (1-based) of the stable list.

    Returns:
        The summary of every scene done in `output` so far (also written as `summary.json`).
    """
    import time

    from imseg.images import GEOTIFF
    from imseg.outputs import clear_folder, output_folder, sha256, try_lock, write_json, write_png
    from imseg.visualize import class_colours, hex_colour, legend

    files = image_files(paths)
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise ConfigError(f"two input images share the name '{twice[0]}'; predict them into separate --output folders")
    if vectorize:
        plain = [f for f in files if not f.lower().endswith(GEOTIFF)]
        if plain:
            raise ConfigError(f"{plain[0]}: --vectorize needs georeferenced GeoTIFF input (polygons need a CRS)")
    if shard:
        k, n = shard
        if not 1 <= k <= n:
            raise ConfigError(f"--shard {k}/{n}: expected K/N with 1 <= K <= N (this process takes scenes K, K+N, …)")
        files, stems = files[k - 1 :: n], stems[k - 1 :: n]
    scenes = [f for f in files if f.lower().endswith(GEOTIFF)]
    if scenes:  # before anything is written: every scene's bands fit the model (and have a CRS for polygons)
        from imseg.geo.raster import scene_bands

        for path in scenes:
            scene_bands(path, predictor.bands, predictor.model.input_shape[-1], georeferenced=vectorize)
    names = list(predictor.classes)
    colours = class_colours(names)
    batch_size = batch_size or predictor.batch_size
    settings = {"classes": names, "task": predictor.task, "threshold": predictor.threshold, "overlap": overlap,
                "tta": tta, "model": os.path.abspath(predictor.path), "model_sha256": sha256(predictor.path),
                "save_probs": save_probs, "vectorize": vectorize, "output_grid": output_grid}  # fmt: skip
    if not overwrite:
        _done_scenes(output, settings)  # refuse a folder of other predictions before anything is written
    finished = os.path.join(output, MANIFEST)
    with output_folder(output, "imseg-infer", shared=not overwrite, keep=lambda: os.path.exists(finished)):
        if overwrite:
            clear_folder(output)
        _make_dirs(output, names, save_probs, predictor.task)
        os.makedirs(os.path.join(output, ".locks"), exist_ok=True)
        write_png(os.path.join(output, "legend.png"), np.asarray(legend(colours)))
        todo = [(f, s) for f, s in zip(files, stems) if s not in _done_scenes(output, settings)]
        if len(todo) < len(files):
            log(f"imseg-infer: {len(files) - len(todo)} of {len(files)} scene(s) already done in {output}; going on")
        start, pixels = time.monotonic(), 0
        for number, (path, stem) in enumerate(todo, start=1):
            held = try_lock(os.path.join(output, ".locks"), stem + ".lock")
            if held is None or stem in _done_scenes(output, settings):  # another process has it, or had it
                if held:
                    held.release()
                continue
            try:
                began = time.monotonic()
                predict = _predict_scene if path.lower().endswith(GEOTIFF) else _predict_whole
                result = predict(predictor, path, output, stem, overlap, batch_size, save_probs, tta, output_grid)
                if vectorize:
                    result["polygons"] = _vectorize(output, stem, names, simplify, min_area, vector_crs,
                                                    vector_format)  # fmt: skip
                record = {"scene": os.path.abspath(path), "stem": stem, "status": "done",
                          "seconds": round(time.monotonic() - began, 2), **result, **settings}  # fmt: skip
                _append(os.path.join(output, MANIFEST), record)
            finally:
                held.release()
            pixels += result["height"] * result["width"]
            elapsed = max(time.monotonic() - start, 1e-6)
            left = (len(todo) - number) * elapsed / number
            log(f"imseg-infer: scene {number}/{len(todo)} {stem} done: {pixels / 1e6 / elapsed:.2f} MP/s, about "
                f"{left / 60:.0f} min left")  # fmt: skip
        done = _done_scenes(output, settings)
        images = {stem: {k: v for k, v in r.items() if k not in settings and k != "stem"} for stem, r in done.items()}
        area = {n: round(sum((r.get("area_m2") or {}).get(n, 0.0) for r in done.values()), 2)
                for n in names if n != BACKGROUND}  # fmt: skip
        summary = {**settings, "colours": {n: hex_colour(c) for n, c in colours.items()}, "images": images,
                   "area_m2": area}  # fmt: skip
        write_json(os.path.join(output, "summary.json"), summary)
        georeferenced = [stem for stem, r in done.items() if r.get("georeferenced")]
        if georeferenced:
            from imseg.geo.mosaic import write_mosaic

            write_mosaic(output, [class_folder(n) for n in names if n != BACKGROUND], georeferenced)
    log(f"imseg-infer: {len(done)} scene(s) predicted in {output}" + (f" (shard {k}/{n})" if shard else ""))
    return summary


def _done_scenes(output, settings):
    """{stem: record} of the scenes of `output/manifest.jsonl` (the last record of each); a ConfigError for a folder
    that holds anything else, or predictions made otherwise (nothing is written before)."""
    if not os.path.isdir(output):
        return {}
    records = []
    manifest = os.path.join(output, MANIFEST)
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:  # a line cut short by a crash: its scene is redone
                    continue
    polygons = {r["stem"] + ext for r in records for ext in (".geojson", ".gpkg", ".fgb")}
    strangers = sorted(e for e in set(os.listdir(output)) - OWN_ENTRIES - polygons if not e.startswith("mosaic-"))
    if strangers:
        raise ConfigError(
            f"{output}: folder holds other files ({', '.join(strangers[:3])}) and is no imseg prediction; choose "
            "another --output or pass --overwrite to clear it"
        )
    differ = sorted({k for r in records for k, v in settings.items() if r.get(k) != v})
    if differ:
        raise ConfigError(
            f"{output}: holds predictions made otherwise ({', '.join(differ)} differ), which would mix with these; "
            "choose another --output or pass --overwrite to clear it"
        )
    return {r["stem"]: r for r in records if r.get("status") == "done"}


def _append(path, record):
    """Append one JSON line to the manifest, under an exclusive lock: processes of one job take turns."""
    import fcntl

    line = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _predict_whole(predictor, path, output, stem, overlap, batch_size, save_probs, tta, output_grid="scene"):
    """An image read whole (JPEG, PNG): masks as PNG, an overlay, probabilities as .npy."""
    from imseg.images import read_image
    from imseg.predict import predict_image, predict_masks
    from imseg.progress import Progress
    from imseg.visualize import drawn_colours

    image, valid = read_image(path, with_valid=True, bands=predictor.bands)
    if image.shape[-1] != predictor.model.input_shape[-1]:
        raise DataError(f"{path}: {image.shape[-1]} band(s), but the model takes "
                        f"{predictor.model.input_shape[-1]}; choose them with --bands")  # fmt: skip
    logits = predict_image(predictor.model, image, overlap=overlap, batch_size=batch_size, output="logits",
                           progress=Progress(f"predicting {stem}", unit="tiles"), tta=tta)  # fmt: skip
    names = list(predictor.classes)
    predicted = predict_masks(logits, predictor.task, predictor.threshold) & valid[..., None]
    _write_prediction(output, stem, image, predicted, names, drawn_colours(names), save_probs, logits,
                      task=predictor.task, valid=valid)  # fmt: skip
    found = predicted.reshape(-1, len(names)).sum(0)
    return {"source": os.path.abspath(path), "height": image.shape[0], "width": image.shape[1],
            "georeferenced": False, "nodata_pixels": int((~valid).sum()),
            "class_pixels": {n: int(found[k]) for k, n in enumerate(names)}, "area_m2": None}  # fmt: skip


def _predict_scene(predictor, path, output, stem, overlap, batch_size, save_probs, tta, output_grid="scene"):
    """A GeoTIFF, window by window: masks as tiled GeoTIFFs, an overlay preview."""
    from imseg.geo.raster import predict_raster
    from imseg.outputs import write_png
    from imseg.progress import Progress
    from imseg.visualize import drawn_colours

    names = list(predictor.classes)
    result = predict_raster(predictor.model, path, output, stem, names, predictor.task, predictor.threshold,
                            predictor.bands, overlap, batch_size, tta, save_probs,
                            Progress(f"predicting {stem}", unit="tiles"), palette=drawn_colours(names),
                            gsd=predictor.gsd, output_grid=output_grid)  # fmt: skip
    write_png(os.path.join(output, "overlays", stem + ".png"), result.pop("preview"))
    return {"source": os.path.abspath(path), **result}


def _vectorize(output, stem, names, simplify, min_area, vector_crs, vector_format="geojson"):
    from imseg.geo.polygons import vectorize

    masks = {n: os.path.join(output, "masks", class_folder(n), stem + ".tif") for n in names if n != BACKGROUND}
    from imseg.geo.polygons import VECTOR_FORMATS

    target = os.path.join(output, stem + VECTOR_FORMATS[vector_format])
    return vectorize(masks, target, simplify, min_area, vector_crs, vector_format)


def main(argv=None):
    args = parse_args(argv)

    def work():
        if args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
            raise ConfigError(f"{args.output}: --output names a file; give a folder (it is created if needed)")
        predictor = load_predictor(args.model, args.config, args.data_path, args.classes_path, args.output_dir)
        if args.bands:
            predictor = dataclasses.replace(predictor, bands=tuple(args.bands))
        if args.threshold is not None:
            if predictor.task != "multilabel":
                raise ConfigError("--threshold is for multilabel models; a multiclass model predicts the class of the "
                                  "largest logit")  # fmt: skip
            predictor = dataclasses.replace(predictor, threshold=args.threshold)
        if args.images:
            predict_images(
                predictor,
                args.images,
                args.output,
                overlap=args.overlap,
                batch_size=args.batch_size,
                save_probs=args.save_probs,
                tta=args.tta,
                vectorize=args.vectorize,
                simplify=args.simplify,
                min_area=args.min_area,
                vector_crs=args.vector_crs,
                vector_format=args.vector_format,
                overwrite=args.overwrite,
                output_grid=args.output_grid,
                shard=args.shard,
            )
        else:
            predict_split(
                predictor,
                args.data_path,
                args.split,
                classes_path=args.classes_path,
                output_dir=args.output_dir,
                batch_size=args.batch_size,
                save_probs=args.save_probs,
                tta=args.tta,
            )

    return run("imseg-infer", work)


if __name__ == "__main__":
    sys.exit(main())
