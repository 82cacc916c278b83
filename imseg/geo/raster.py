"""GeoTIFF scenes of any size, predicted window by window and written strip by strip.

The scene is read in windows of one row of tiles (rasterio, boundless reads pad the edges with zeros) and
columns in blocks, blended as `imseg.predict.stream_logits` does, and the masks are written as tiled,
compressed GeoTIFFs with the scene's CRS and transform as each strip is final; pixels without data (nodata,
internal mask, alpha) stay nodata in every output. Working memory depends on the model, the tile size and the
column block, neither on the scene's height nor its width.
"""

import math
import os

import numpy as np

from imseg.errors import DataError
from imseg.geo import require
from imseg.tasks import BACKGROUND

BLOCK = 4096  # columns predicted at a time
PREVIEW = 2048  # the longest side of the overlay preview, in pixels


def class_folder(name):
    return name.replace(":", "-")


def predict_raster(
    model,
    path,
    output,
    stem,
    classes,
    task="multilabel",
    threshold=0.0,
    bands=None,
    overlap=0.25,
    batch_size=8,
    tta="none",
    save_probs=False,
    progress=None,
    block=BLOCK,
    palette=None,
):
    """Predict the GeoTIFF `path` into `output` (masks/<class>/<stem>.tif, for multiclass classes/<stem>.tif,
    with `save_probs` probs/<stem>.tif as float32 bands) and return {"height", "width", "georeferenced",
    "nodata_pixels", "preview": an RGB overlay of the prediction at most PREVIEW pixels long}."""
    rasterio, _ = require()
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window

    from imseg.predict import predict_masks, probabilities, stream_logits
    from imseg.visualize import overlay

    th, tw = model.input_shape[1:3]
    chosen = scene_bands(path, bands, model.input_shape[-1])
    with rasterio.open(path) as src:
        height, width = src.height, src.width
        profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "deflate"}  # fmt: skip
        targets, profiles = {}, {}
        for k, name in enumerate(classes):
            if name != BACKGROUND:
                targets[k], profiles[k] = os.path.join(output, "masks", class_folder(name), stem + ".tif"), profile
        if task == "multiclass":
            targets["classes"] = os.path.join(output, "classes", stem + ".tif")
            profiles["classes"] = {**profile, "nodata": 255}
        if save_probs:
            targets["probs"] = os.path.join(output, "probs", stem + ".tif")
            profiles["probs"] = {**profile, "count": len(classes), "dtype": "float32"}
        factor = max(1, math.ceil(max(height, width) / PREVIEW))
        preview = np.zeros((math.ceil(height / factor), math.ceil(width / factor), 3), np.uint8)
        display = _display_scale(src, chosen[:3])
        # A scene that can hold invalid pixels gets a mask band written in every window: once GDAL has a mask
        # band, a block never written to it reads as nodata.
        masked = any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)
        nodata, outputs = 0, {}
        try:
            for key, target in targets.items():
                os.makedirs(os.path.dirname(target), exist_ok=True)
                outputs[key] = rasterio.open(_tmp(target), "w", **profiles[key])

            def read(y0, y1, x0, x1):
                window = Window(x0, y0, x1 - x0, y1 - y0)
                return np.moveaxis(src.read(chosen, window=window, boundless=True, fill_value=0), 0, -1)

            padded = (max(height, th), max(width, tw))  # a scene smaller than a tile is padded, never resized
            for y, x, logits in stream_logits(model, read, *padded, overlap, batch_size, tta, progress, block):
                rows, cols = min(len(logits), height - y), min(logits.shape[1], width - x)
                if rows <= 0 or cols <= 0:
                    continue
                logits = logits[:rows, :cols]
                window = Window(x, y, cols, rows)
                valid = src.dataset_mask(window=window) > 0
                nodata += int((~valid).sum())
                predicted = predict_masks(logits, task, threshold) & valid[..., None]
                for key, dst in outputs.items():
                    if key == "classes":
                        dst.write(np.where(valid, predicted.argmax(-1), 255).astype(np.uint8), 1, window=window)
                    elif key == "probs":
                        dst.write(np.moveaxis(probabilities(logits, task), -1, 0), window=window)
                    else:
                        dst.write(predicted[..., key].astype(np.uint8) * 255, 1, window=window)
                    if masked:
                        dst.write_mask(valid.astype(np.uint8) * 255, window=window)
                # The preview: every factor-th pixel of the scene's grid that falls in this window.
                ys = np.arange(-y % factor, rows, factor)
                xs = np.arange(-x % factor, cols, factor)
                if len(ys) and len(xs):
                    pixels = read(y, y + rows, x, x + cols)[np.ix_(ys, xs)][..., : len(display)]
                    shown = _to_rgb(pixels, display)
                    drawn = overlay(shown, predicted[np.ix_(ys, xs)], palette or [None] * len(classes))
                    preview[np.ix_((y + ys) // factor, (x + xs) // factor)] = drawn
        except BaseException:
            for dst in outputs.values():
                dst.close()
            for key in outputs:
                os.remove(_tmp(targets[key]))
            raise
        for dst in outputs.values():
            dst.close()
        for target in targets.values():  # each file appears whole or not at all
            os.replace(_tmp(target), target)
        return {"height": height, "width": width, "georeferenced": src.crs is not None, "nodata_pixels": nodata,
                "preview": preview}  # fmt: skip


def scene_bands(path, bands, channels, georeferenced=False):
    """The 1-based bands of the GeoTIFF `path` that a model of `channels` input bands reads (`bands`, or every
    band but alpha); a DataError names the file when they do not fit, or when `georeferenced` and it has no CRS."""
    rasterio, _ = require()
    try:
        with rasterio.open(path) as src:
            alpha = {i + 1 for i, c in enumerate(src.colorinterp) if c == rasterio.enums.ColorInterp.alpha}
            count, crs = src.count, src.crs
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"{path}: unreadable image: {e}") from None
    chosen = list(bands) if bands else [b for b in range(1, count + 1) if b not in alpha]
    if max(chosen) > count:
        raise DataError(f"{path}: band {max(chosen)} asked for (--bands), but the image has {count} band(s)")
    if len(chosen) != channels:
        raise DataError(f"{path}: {len(chosen)} band(s), but the model takes {channels}; choose them with --bands")
    if georeferenced and crs is None:
        raise DataError(f"{path}: not georeferenced (no CRS); --vectorize needs one to place the polygons")
    return chosen


def _tmp(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp.tif")


def _display_scale(src, bands):
    """(low, high) per band that map it to 0-255 for the preview: 0-255 for 8-bit, else the band's range."""
    if src.dtypes[0] == "uint8":
        return [(0.0, 255.0)] * len(bands)
    scales = []
    for stats in src.stats(indexes=list(bands), approx=True):
        scales.append((float(stats.min), float(stats.max if stats.max > stats.min else stats.min + 1)))
    return scales


def _to_rgb(pixels, scales):
    scaled = np.stack(
        [np.clip((pixels[..., i] - lo) / (hi - lo) * 255, 0, 255) for i, (lo, hi) in enumerate(scales)], axis=-1
    ).astype(np.uint8)
    return np.repeat(scaled[..., :1], 3, axis=-1) if scaled.shape[-1] < 3 else scaled[..., :3]
