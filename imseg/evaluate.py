"""A dataset split predicted through training's own cached pipeline and scored with training's own metric
(`SegmentationMetrics`): masks, overlays, per-image and whole-split scores, a contact sheet."""

import csv
import io
import os

import numpy as np

from imseg.errors import ConfigError
from imseg.progress import say
from imseg.writers import make_dirs, write_prediction

SHEET_SIZE = 16  # images in a split's sheet.png


def evaluate_split(
    predictor,
    data_path,
    split="val",
    classes_path=None,
    output_dir=None,
    batch_size=None,
    save_probs=False,
    tta="none",
    output=None,
    overwrite=False,
    log=say,
):
    """Predict a split of an AIR dataset and score it; writes `<run>/preds/<split>/` or `output` (see the module
    docstring).

    Args:
        predictor: from `load_predictor` with a config (it selects the classes of the dataset).
        data_path: the dataset root `D`.
        split: "train", "val" or "test".
        classes_path: the dataset's `classes.json` (default: `D/classes.json`, else ./classes.json).
        output_dir: where the run folder is (default `D/im_seg/out`).
        batch_size: images per prediction call (default: the config's).
        save_probs: also write float16 probabilities.
        tta: "flip" averages each image's logits over its four flips, "d4" over its eight quarter turns and
            mirrors.
        output: the folder to write (default `<run>/preds/<split>`); one that is not empty is refused, unless
            `overwrite` clears it first, so that the predictions of two models or splits never mix.
        log: called with each line to report.

    Returns:
        The summary (also written as `summary.json`).
    """
    from imseg.classes import default_classes_path, load_class_names, select_classes
    from imseg.dataset import chosen_bands, load_split, make_dataset, split_check
    from imseg.layout import list_split
    from imseg.outputs import LOCK_NAME, RunPaths, clear_folder, output_folder

    config, names, model = predictor.config, list(predictor.classes), predictor.model
    predictor.check_tta(tta)
    classes_path = classes_path or default_classes_path(data_path)
    all_names = load_class_names(classes_path)
    indices = select_classes(config, all_names, "config", classes_path)[1]
    log(f"imseg: classes from {classes_path}: {', '.join(all_names)}")
    entries = list_split(data_path, split)
    out = output or RunPaths.for_run(data_path, config.name, output_dir).predictions(split)
    if output and os.path.isdir(output) and set(os.listdir(output)) - {LOCK_NAME} and not overwrite:
        raise ConfigError(f"{output}: folder is not empty; a split's predictions get a folder of their own: choose "
                          "another --output or pass --overwrite to clear it")  # fmt: skip
    with output_folder(out, "imseg-infer"):
        if output and overwrite:
            clear_folder(out)
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
        summary = _evaluate_into(out, predictor, ds, meta, bands, entries, split, save_probs, tta, log)
    log(
        f"imseg-infer: {meta.count} images of '{split}': mean IoU {summary['mean_iou']:.4f}; "
        + ", ".join(f"{n} {summary['iou'][n]:.4f}" for n in names if summary["iou"][n] is not None)
    )
    log(f"imseg-infer: wrote masks, overlays, metrics.csv and summary.json to {out}")
    return summary


def _evaluate_into(out, predictor, ds, meta, bands, entries, split, save_probs, tta, log):
    from keras import ops

    from imseg.metrics import KINDS, SegmentationMetrics, metric_key
    from imseg.outputs import write_json, write_png, write_text
    from imseg.predict import masks_from_logits, tile_logits
    from imseg.progress import progress
    from imseg.visualize import class_colours, contact_sheet, displayable, drawn_colours, hex_colour, legend, overlay

    names, model, task, threshold = list(predictor.classes), predictor.model, predictor.task, predictor.threshold
    value_range = meta.value_range(bands)  # one for all images, so that their overlays compare
    colours = class_colours(names)
    palette = drawn_colours(names)
    make_dirs(out, names, save_probs, task)
    # Training's own metric scores the split (and, reset for each, every image): one definition of every score.
    whole, single = (SegmentationMetrics(names, threshold=threshold, task=task) for _ in range(2))
    rows, sheet = [], []
    shown = set(np.linspace(0, meta.count - 1, min(SHEET_SIZE, meta.count)).round().astype(int).tolist())
    ids = iter(enumerate(entry[0] for entry in entries))
    for images, masks, valid in progress(ds, f"predicting {split}", unit="batches", total=int(ds.cardinality())):
        logits = tile_logits(model, images.numpy(), tta)
        whole.update_state(masks, logits, valid)
        for pixels, truth, ok, logit in zip(
            images.numpy(), masks.numpy().astype(bool), valid.numpy().astype(bool), logits
        ):
            index, stem = next(ids)
            image = displayable(pixels, value_range)
            predicted = masks_from_logits(logit, task, threshold)
            single.reset_state()
            single.update_state(truth[None], logit[None], ok[None])
            scores = single.result()
            for name in names:
                rows.append([stem, name] + [_number(scores[metric_key(kind, name)]) for kind in KINDS])
            drawn = write_prediction(
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
    scores = whole.result()
    tp, fp, fn = (ops.convert_to_numpy(c) for c in whole.counts())
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
        **{kind: {n: _number(scores[metric_key(kind, n)]) for n in names} for kind in KINDS},
        "pixels": {n: {"tp": int(tp[k]), "fp": int(fp[k]), "fn": int(fn[k])} for k, n in enumerate(names)},
    }
    if task == "multiclass":
        summary["pixel_accuracy"] = _number(scores["pixel_accuracy"])
        confusion = ops.convert_to_numpy(whole.confusion_matrix())
        summary["confusion_matrix"] = {"rows": "truth", "columns": "prediction", "matrix": confusion.tolist()}
    write_png(os.path.join(out, "legend.png"), np.asarray(legend(colours)))
    title = f"{split}: mean IoU {summary['mean_iou'] or float('nan'):.3f}"
    write_png(os.path.join(out, "sheet.png"), np.asarray(contact_sheet(sheet, colours, columns=2, title=title)))
    write_json(os.path.join(out, "summary.json"), summary)
    return summary


def _number(value):
    """A score as JSON data: NaN (0/0) is null."""
    value = float(value)
    return None if np.isnan(value) else value
