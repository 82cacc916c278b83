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
import io
import json
import os
import sys

import numpy as np

from imseg.cli import ArgumentParser
from imseg.config import BACKGROUND
from imseg.errors import ConfigError, DataError, UserError
from imseg.tfenv import import_tensorflow


SHEET_SIZE = 16  # images in a split's sheet.png
NOT_COUNTED = 255  # class-index images: a pixel that is ignored (splits) or nodata (images)


def parse_args(argv=None):
    p = ArgumentParser(prog="imseg-infer", description="Predict with a trained imseg model.")
    p.add_argument("--config", required=True, help="the run's config (its name locates the run)")
    p.add_argument("--data_path", help="dataset root D (split mode, and the default model location)")
    p.add_argument("--classes_path", help="classes.json (default: ./classes.json, else D/classes.json)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="split to predict (default val)")
    p.add_argument("--model", help="a .keras model (default: D/im_seg/out/<name>/checkpoints/best.keras)")
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files or folders to predict instead of a split")
    p.add_argument("--output", help="output folder for --images")
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap for large images, 0-0.5 (default 0.25)")
    p.add_argument("--batch-size", type=int, help="images or tiles per batch (default: the config's batch_size)")
    p.add_argument("--save-probs", action="store_true", help="also write float16 probabilities (.npy)")
    args = p.parse_args(argv)
    if args.images and not args.output:
        p.error("--images needs --output DIR")
    if not args.images and not args.data_path:
        p.error("give --data_path (to predict a split) or --images and --output")
    if not args.model and not args.data_path:
        p.error("give --model, or --data_path to use the run's best.keras")
    if not 0 <= args.overlap <= 0.5:
        p.error(f"--overlap must be between 0 and 0.5, got {args.overlap}")
    return args


def class_folder(name):
    return name.replace(":", "-")


def load_inputs(args):
    """Config, class names and model, all checked against each other."""
    from imseg.classes import load_class_names, select_classes
    from imseg.config import load_config
    from imseg.outputs import RunPaths
    from imseg.classes import default_classes_path

    from imseg.classes import output_names

    config = load_config(args.config)
    classes_path = args.classes_path or default_classes_path(args.data_path or ".")
    names, indices = select_classes(config, load_class_names(classes_path), args.config)
    names = output_names(config, names)
    model_path = args.model or RunPaths.for_run(args.data_path, config.name).best_model
    if not os.path.isfile(model_path):
        raise ConfigError(f"{model_path}: model file not found (train first, or pass --model)")
    info_path = os.path.join(os.path.dirname(model_path), "best.json")
    if os.path.exists(info_path):
        with open(info_path, encoding="utf-8") as f:
            trained = json.load(f).get("classes")
        if trained and trained != names:
            raise ConfigError(f"{model_path}: trained on classes {trained}, but {args.config} selects {names}")
    import_tensorflow()
    import keras

    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors... for a file that is no model
        raise DataError(f"{model_path}: not a Keras model file ({str(e).strip().splitlines()[0][:160]})") from None
    if model.output_shape[-1] != len(names):
        raise ConfigError(f"{model_path}: predicts {model.output_shape[-1]} classes, but {args.config} selects "
                          f"{len(names)}: {', '.join(names)}")
    return config, names, indices, model, model_path


def predict_split(args, config, names, indices, model, model_path, log):
    from imseg.dataset import load_split, make_dataset, split_check
    from imseg.layout import list_split
    from imseg.metrics import KINDS, counts_from_masks, scores_from_counts
    from imseg.predict import predict_masks
    from imseg.outputs import RunPaths, write_json, write_png, write_text
    from imseg.progress import progress
    from imseg.visualize import class_colours, contact_sheet, drawn_colours, legend, overlay

    entries = list_split(args.data_path, args.split)
    meta = load_split(args.data_path, args.split, _num_all_classes(args), log,
                      split_check(config.task, indices, names))
    out = os.path.join(RunPaths.for_run(args.data_path, config.name).root, "preds", args.split)
    batch = args.batch_size or config.batch_size
    ds = make_dataset(meta, indices, model.input_shape[1:], batch, training=False, task=config.task,
                      background=config.background)
    colours = class_colours(names)
    palette = drawn_colours(names)
    _make_dirs(out, names, args.save_probs, config.task)
    totals = np.zeros((3, len(names)), np.int64)
    confusion = np.zeros((len(names), len(names)), np.int64)
    rows, sheet = [], []
    shown = set(np.linspace(0, meta["count"] - 1, min(SHEET_SIZE, meta["count"])).round().astype(int).tolist())
    ids = iter(enumerate(entry[0] for entry in entries))
    for images, masks, valid in progress(ds, f"predicting {args.split}", unit="batches",
                                         total=int(ds.cardinality())):
        logits = np.asarray(model.predict_on_batch(images), np.float32)
        for image, truth, ok, logit in zip(images.numpy(), masks.numpy().astype(bool), valid.numpy().astype(bool),
                                           logits):
            index, stem = next(ids)
            predicted = predict_masks(logit, config.task, config.threshold)
            counts = np.stack(counts_from_masks(truth, predicted, ok)).astype(np.int64)
            totals += counts
            if config.task == "multiclass":
                np.add.at(confusion, (truth.argmax(-1)[ok], predicted.argmax(-1)[ok]), 1)
            scores = scores_from_counts(*counts, class_names=names)
            for k, name in enumerate(names):
                rows.append([stem, name] + [_number(scores[kind][k]) for kind in KINDS])
            drawn = _write_prediction(out, stem, image, predicted & ok[..., None], names, palette, args.save_probs,
                                      logit, truth=overlay(image, truth & ok[..., None], palette), task=config.task,
                                      valid=ok)
            if index in shown:
                sheet.append((f"{stem}: prediction | truth", drawn))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["image", "class", *KINDS], *rows])
    write_text(os.path.join(out, "metrics.csv"), buffer.getvalue())
    scores = scores_from_counts(*totals, class_names=names)
    summary = {
        "split": args.split, "images": meta["count"], "model": os.path.abspath(model_path), "task": config.task,
        "threshold": config.threshold, "classes": names,
        "colours": {n: "#%02X%02X%02X" % c for n, c in colours.items()},
        "mean_iou": _number(scores["mean_iou"]),
        **{kind: {n: _number(scores[kind][k]) for k, n in enumerate(names)} for kind in KINDS},
        "pixels": {n: {"tp": int(totals[0, k]), "fp": int(totals[1, k]), "fn": int(totals[2, k])}
                   for k, n in enumerate(names)},
    }
    if config.task == "multiclass":
        summary["pixel_accuracy"] = _number(np.trace(confusion) / max(confusion.sum(), 1))
        summary["confusion_matrix"] = {"rows": "truth", "columns": "prediction", "matrix": confusion.tolist()}
    write_png(os.path.join(out, "legend.png"), np.asarray(legend(colours)))
    title = f"{args.split}: mean IoU {summary['mean_iou'] or float('nan'):.3f}"
    write_png(os.path.join(out, "sheet.png"), np.asarray(contact_sheet(sheet, colours, columns=2, title=title)))
    write_json(os.path.join(out, "summary.json"), summary)
    log(f"imseg-infer: {meta['count']} images of '{args.split}': mean IoU {summary['mean_iou']:.4f}; "
        + ", ".join(f"{n} {summary['iou'][n]:.4f}" for n in names if summary["iou"][n] is not None))
    log(f"imseg-infer: wrote masks, overlays, metrics.csv and summary.json to {out}")


def _num_all_classes(args):
    from imseg.classes import load_class_names
    from imseg.classes import default_classes_path

    return len(load_class_names(args.classes_path or default_classes_path(args.data_path)))


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


def _write_prediction(out, stem, image, predicted, names, palette, save_probs, logits, truth=None, geo=None,
                      task="multilabel", valid=None):
    """Masks (and for multiclass the class-index image), overlay and probabilities of one image.

    `predicted` (h, w, K) is already off where `valid` (h, w) is false.
    """
    from imseg.outputs import atomic_path, write_png
    from imseg.predict import probabilities
    from imseg.visualize import overlay

    valid = np.ones(predicted.shape[:2], bool) if valid is None else valid
    for k, name in enumerate(names):
        if name == BACKGROUND:
            continue
        mask = predicted[..., k].astype(np.uint8) * 255
        folder = os.path.join(out, "masks", class_folder(name))
        if geo is not None:
            _write_geotiff(os.path.join(folder, stem + ".tif"), mask, geo, valid)
        else:
            write_png(os.path.join(folder, stem + ".png"), mask)
    if task == "multiclass":
        index = np.where(valid, predicted.argmax(-1), NOT_COUNTED).astype(np.uint8)
        if geo is not None:
            _write_geotiff(os.path.join(out, "classes", stem + ".tif"), index, geo, valid)
        else:
            write_png(os.path.join(out, "classes", stem + ".png"), index)
    drawn = overlay(image, predicted, palette)
    if truth is not None:
        drawn = np.concatenate([drawn, np.full((drawn.shape[0], 4, 3), 255, np.uint8), truth], axis=1)
    write_png(os.path.join(out, "overlays", stem + ".png"), drawn)
    if save_probs:
        with atomic_path(os.path.join(out, "probs", stem + ".npy"), suffix=".npy") as tmp:
            np.save(tmp, probabilities(logits, task).astype(np.float16))
    return drawn


def _write_geotiff(path, mask, profile, valid):
    """A one-band uint8 GeoTIFF with the input's georeference; pixels outside `valid` are masked (nodata)."""
    import rasterio

    from imseg.outputs import atomic_path

    with atomic_path(path, suffix=".tif") as tmp:
        meta = {**profile, "count": 1, "dtype": "uint8", "driver": "GTiff", "compress": "deflate"}
        with rasterio.open(tmp, "w", **meta) as dst:
            dst.write(mask, 1)
            if not valid.all():
                dst.write_mask(valid.astype(np.uint8) * 255)


def image_files(paths):
    from imseg.layout import IMAGE_EXTENSIONS

    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    if not found:
        raise ConfigError(f"no images in {', '.join(paths)}")
    return found


def predict_images(args, config, names, model, log):
    from imseg.data.images import GEOTIFF, read_image
    from imseg.outputs import write_json, write_png
    from imseg.predict import predict_image, predict_masks
    from imseg.progress import Progress
    from imseg.visualize import class_colours, drawn_colours, legend

    files = image_files(args.images)
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(set(stems)) != len(stems):
        raise ConfigError("two input images share a file name; predict them into separate --output folders")
    colours = class_colours(names)
    _make_dirs(args.output, names, args.save_probs, config.task)
    written = {}
    for path, stem in zip(files, stems):
        image, valid = read_image(path, with_valid=True)
        geo = _georeference(path) if path.lower().endswith(GEOTIFF) else None

        logits = predict_image(model, image, overlap=args.overlap, batch_size=args.batch_size or config.batch_size,
                               output="logits", progress=Progress(f"predicting {stem}", unit="tiles"))
        predicted = predict_masks(logits, config.task, config.threshold) & valid[..., None]
        _write_prediction(args.output, stem, image, predicted, names, drawn_colours(names), args.save_probs, logits,
                          geo=geo, task=config.task, valid=valid)
        written[stem] = {"source": os.path.abspath(path), "height": image.shape[0], "width": image.shape[1],
                         "georeferenced": geo is not None, "nodata_pixels": int((~valid).sum())}
    write_png(os.path.join(args.output, "legend.png"), np.asarray(legend(colours)))
    write_json(os.path.join(args.output, "summary.json"), {
        "classes": names, "task": config.task, "threshold": config.threshold, "overlap": args.overlap,
        "colours": {n: "#%02X%02X%02X" % c for n, c in colours.items()}, "images": written,
    })
    log(f"imseg-infer: predicted {len(files)} image(s) into {args.output}")


def _georeference(path):
    try:
        import rasterio
    except ImportError:
        return None  # read_image has already asked for rasterio if it was needed
    with rasterio.open(path) as src:
        return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}


def main(argv=None):
    args = parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    try:
        config, names, indices, model, model_path = load_inputs(args)
        if args.images:
            predict_images(args, config, names, model, log)
        else:
            predict_split(args, config, names, indices, model, model_path, log)
    except UserError as e:
        print(f"imseg-infer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imseg-infer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
