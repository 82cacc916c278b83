"""Mapping: image files of any size predicted into one output folder, as a resumable job that several processes may
share (a manifest of finished scenes, a lock per scene, shards), with masks, overlays, polygons and a mosaic."""

import json
import os
import re

import numpy as np

from imseg.errors import ConfigError, DataError
from imseg.progress import say
from imseg.tasks import BACKGROUND
from imseg.writers import class_folder, make_dirs, write_prediction


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
               "mosaic.vrt", "merged.gpkg"}  # fmt: skip
_TEMPORARY = re.compile(r"\.(.+)\.[^.]+\.tmp(\.[^.]+)?")  # outputs.atomic_path: .NAME.RANDOM.tmp[.EXT]


def map_images(
    predictor,
    paths,
    output,
    overlap=0.25,
    batch_size=None,
    save_probs=False,
    log=say,
    tta="none",
    vectorize=False,
    simplify=1.0,
    min_area=0.0,
    vector_crs="wgs84",
    overwrite=False,
    vector_format="geojson",
    output_grid="scene",
    shard=None,
    truth=None,
    merge=False,
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
        tta: "flip" averages each tile's logits over its four flips, "d4" over its eight quarter turns and mirrors.
        vectorize: also write `<stem>.geojson`, the predicted regions as polygons (georeferenced GeoTIFFs).
        simplify, min_area, vector_crs, vector_format: see `imseg.geo.polygons.vectorize`.
        overwrite: clear `output` first.
        output_grid: for a model that records the ground sample distance it was trained at, GeoTIFF scenes of
            another are predicted resampled to it, and written on their own grid ("scene") or the model's ("model").
        shard: (K, N): this process takes the scenes K, K + N, K + 2N, ... (1-based) of the stable list.
        truth: [(class, vector file)] of ground truth (any CRS): each georeferenced scene is scored against it
            (`imseg.geo.truth`: pixel IoU, precision, recall, and object F1 for polygon classes), in the manifest and
            the summary.
        merge: at the end, `output/merged.gpkg` from every scene done so far (`imseg.geo.merge`; with `min_area`,
            `simplify`).

    Returns:
        The summary of every scene done in `output` so far (also written as `summary.json`).
    """
    import time

    from imseg.images import GEOTIFF
    from imseg.outputs import clear_folder, output_folder, sha256, try_lock, write_json, write_png
    from imseg.visualize import class_colours, hex_colour, legend

    predictor.check_tta(tta)
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
    truth_layers = _truth_layers(truth, names, files) if truth else None
    colours = class_colours(names)
    batch_size = batch_size or predictor.batch_size
    settings = {"classes": names, "task": predictor.task, "threshold": predictor.threshold, "overlap": overlap,
                "tta": tta, "model": os.path.abspath(predictor.path), "model_sha256": sha256(predictor.path),
                "save_probs": save_probs, "vectorize": vectorize, "output_grid": output_grid,
                "truth": [[c, os.path.abspath(p)] for c, p in truth or []]}  # fmt: skip
    if not overwrite:
        _done_scenes(output, settings)  # refuse a folder of other predictions before anything is written
    finished = os.path.join(output, MANIFEST)
    with output_folder(output, "imseg-infer", shared=not overwrite, keep=lambda: os.path.exists(finished)):
        if overwrite:
            clear_folder(output)
        make_dirs(output, names, save_probs, predictor.task)
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
                _remove_partial_files(output, stem)  # of a process killed while it wrote this scene
                began = time.monotonic()
                predict = _predict_scene if path.lower().endswith(GEOTIFF) else _predict_whole
                result = predict(predictor, path, output, stem, overlap, batch_size, save_probs, tta, output_grid)
                if vectorize:
                    result["polygons"] = _vectorize(output, stem, names, simplify, min_area, vector_crs,
                                                    vector_format)  # fmt: skip
                if truth_layers:
                    result["truth_counts"] = _score(output, stem, truth_layers)
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
        if truth_layers:
            from imseg.geo.truth import combine, scores_of

            for stem, record in done.items():
                images[stem]["truth"] = {n: scores_of(c) for n, c in record["truth_counts"].items()}
            total = combine([r["truth_counts"] for r in done.values()])
            summary["truth"] = {n: scores_of(c) for n, c in total.items()}
        write_json(os.path.join(output, "summary.json"), summary)
        georeferenced = [stem for stem, r in done.items() if r.get("georeferenced")]
        if georeferenced:
            from imseg.geo.mosaic import write_mosaic

            write_mosaic(output, [class_folder(n) for n in names if n != BACKGROUND], georeferenced)
            if merge:
                from imseg.geo.merge import merge as merge_scenes

                merge_scenes([output], os.path.join(output, "merged.gpkg"), min_area, simplify, log=log)
    log(f"imseg-infer: {len(done)} scene(s) predicted in {output}" + (f" (shard {k}/{n})" if shard else ""))
    if any(area.values()):
        log("imseg-infer: area in m2: " + ", ".join(f"{name} {value:,.0f}" for name, value in area.items()))
    return summary


def _truth_layers(truth, names, files):
    """{class: [(geometries, crs)]} of the ground truth files, checked before anything is written."""
    from imseg.geo.vectors import read_vectors
    from imseg.images import GEOTIFF, georeference

    layers = {}
    for name, path in truth:
        if name not in names:
            raise ConfigError(f"--truth {name}={path}: no such class; the model predicts {', '.join(names)}")
        layers.setdefault(name, []).append(read_vectors(path))
    plain = [f for f in files if not f.lower().endswith(GEOTIFF) or georeference(f) is None]
    if plain:
        raise ConfigError(f"{plain[0]}: --truth scores georeferenced GeoTIFF scenes (the truth is placed by its CRS)")
    return layers


def _score(output, stem, layers):
    """The counts of one scene's masks against the truth (see `imseg.geo.truth.score_scene`)."""
    from imseg.geo.truth import score_scene

    masks = {n: os.path.join(output, "masks", class_folder(n), stem + ".tif") for n in layers}
    return score_scene(masks, layers)


def _remove_partial_files(output, stem):
    """The temporary files (outputs.atomic_path: `.NAME.RANDOM.tmpEXT`) of scene `stem`'s outputs in the job folder;
    only the holder of the scene's lock calls this, so no other process is writing them."""
    for folder, _, files in os.walk(output):
        for name in files:
            writing = _TEMPORARY.fullmatch(name)
            if writing and os.path.splitext(writing.group(1))[0] == stem:
                os.remove(os.path.join(folder, name))


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

    def own(entry):  # an entry of a job, or the temporary file of one being written (outputs.atomic_path)
        writing = _TEMPORARY.fullmatch(entry)
        entry = writing.group(1) if writing else entry
        return entry in OWN_ENTRIES or entry in polygons or entry.startswith("mosaic-")

    # another shard may be writing the legend or the summary right now, or was killed while it did
    strangers = sorted(e for e in os.listdir(output) if not own(e))
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
    from imseg.predict import masks_from_logits, predict_image
    from imseg.progress import Progress
    from imseg.visualize import drawn_colours

    image, valid = read_image(path, with_valid=True, bands=predictor.bands)
    if image.shape[-1] != predictor.model.input_shape[-1]:
        raise DataError(f"{path}: {image.shape[-1]} band(s), but the model takes "
                        f"{predictor.model.input_shape[-1]}; choose them with --bands")  # fmt: skip
    logits = predict_image(predictor.model, image, overlap=overlap, batch_size=batch_size, output="logits",
                           progress=Progress(f"predicting {stem}", unit="tiles"), tta=tta)  # fmt: skip
    names = list(predictor.classes)
    predicted = masks_from_logits(logits, predictor.task, predictor.threshold) & valid[..., None]
    write_prediction(output, stem, image, predicted, names, drawn_colours(names), save_probs, logits,
                      task=predictor.task, valid=valid)  # fmt: skip
    found = predicted.reshape(-1, len(names)).sum(0)
    return {"source": os.path.abspath(path), "height": image.shape[0], "width": image.shape[1],
            "georeferenced": False, "nodata_pixels": int((~valid).sum()),
            "class_pixels": {n: int(found[k]) for k, n in enumerate(names)}, "area_m2": None}  # fmt: skip


def _predict_scene(predictor, path, output, stem, overlap, batch_size, save_probs, tta, output_grid="scene"):
    """A GeoTIFF, window by window: masks as tiled GeoTIFFs, an overlay preview."""
    from imseg.geo.raster import predict_geotiff
    from imseg.outputs import write_png
    from imseg.progress import Progress
    from imseg.visualize import drawn_colours

    names = list(predictor.classes)
    result = predict_geotiff(predictor.model, path, output, stem, names, predictor.task, predictor.threshold,
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
