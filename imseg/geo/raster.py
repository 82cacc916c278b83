"""GeoTIFF scenes of any size, predicted window by window and written strip by strip.

The scene is read in windows of one row of tiles (outside the scene: zeros) and columns in blocks, blended as
`imseg.predict.stream_logits` does, and the masks are written as tiled, compressed GeoTIFFs with the scene's CRS
and transform as each strip is final, then rewritten as Cloud Optimized GeoTIFFs (internal tiles, overviews);
pixels without data (nodata, internal mask, alpha) stay nodata in every output. Working memory depends on the
model, the tile size and the column block, neither on the scene's height nor its width.
"""

import math
import os

import numpy as np

from imseg.errors import DataError
from imseg.geo import require
from imseg.tasks import BACKGROUND
from imseg.writers import class_folder

BLOCK = 4096  # columns predicted at a time
PREVIEW = 2048  # the longest side of the overlay preview, in pixels


def predict_geotiff(
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
    gsd=None,
    output_grid="scene",
):
    """Predict the GeoTIFF `path` into `output` (masks/<class>/<stem>.tif, for multiclass classes/<stem>.tif,
    with `save_probs` probs/<stem>.tif as float32 bands) and return {"height", "width", "georeferenced",
    "nodata_pixels", "gsd", "resampled", "preview": an RGB overlay of the prediction at most PREVIEW pixels long}.

    With `gsd` (the metres per pixel the model was trained at) a scene of another ground sample distance in a
    metric CRS is resampled to it (bilinear) and predicted there; the outputs are then brought back to the scene's
    own grid (`output_grid="scene"`: masks by nearest neighbour, probabilities bilinear) or kept on the model's
    (`"model"`)."""
    rasterio, _ = require()
    from rasterio.enums import MaskFlags

    from imseg.images import pixel_size, resampled

    chosen = scene_bands(path, bands, model.input_shape[-1])
    with rasterio.open(path) as scene:
        own = pixel_size(scene)
        resample = gsd is not None and own is not None and abs(own / gsd - 1) > 0.01
        # A scene that can hold invalid pixels gets a mask band written in every window: once GDAL has a mask
        # band, a block never written to it reads as nodata.
        masked = any(flags != [MaskFlags.all_valid] for flags in scene.mask_flag_enums)
        with resampled(scene, path, gsd if resample else None) as src:
            targets = _targets(output, stem, classes, task, save_probs)
            staged = {k: _tmp(t, "model" if resample and output_grid == "scene" else "") for k, t in targets.items()}
            try:
                nodata, preview, found = _predict_grid(model, src, chosen, staged, classes, task, threshold,
                                                       overlap, batch_size, tta, progress, block, palette,
                                                       masked)  # fmt: skip
                if resample and output_grid == "scene":
                    for key, target in targets.items():
                        _to_grid(staged[key], _tmp(target), scene, "bilinear" if key == "probs" else "nearest",
                                 masked and key != "probs")  # fmt: skip
                        os.remove(staged[key])
                    nodata = int((scene.dataset_mask() == 0).sum()) if masked else 0
            except BaseException:
                for key, target in targets.items():
                    for leftover in (staged[key], _tmp(target)):
                        if os.path.exists(leftover):
                            os.remove(leftover)
                raise
            for key, target in targets.items():  # each file appears whole or not at all, as a COG
                _as_cog(_tmp(target), target, "average" if key == "probs" else "nearest")
            grid = src if output_grid == "model" else scene
            size = pixel_size(src)  # metres per pixel where the classes were counted
            return {"height": grid.height, "width": grid.width, "georeferenced": scene.crs is not None,
                    "nodata_pixels": nodata, "gsd": gsd if resample else own, "resampled": resample,
                    "output_grid": output_grid if resample else "scene",
                    "class_pixels": {classes[k]: int(found[k]) for k in range(len(classes))},
                    "area_m2": {classes[k]: round(float(found[k]) * size * size, 2) for k in range(len(classes))
                                if classes[k] != BACKGROUND} if size else None,
                    "preview": preview}  # fmt: skip


def _targets(output, stem, classes, task, save_probs):
    """{output key: file}: a mask per class (not background), the class map (multiclass), the probabilities."""
    targets = {k: os.path.join(output, "masks", class_folder(name), stem + ".tif")
               for k, name in enumerate(classes) if name != BACKGROUND}  # fmt: skip
    if task == "multiclass":
        targets["classes"] = os.path.join(output, "classes", stem + ".tif")
    if save_probs:
        targets["probs"] = os.path.join(output, "probs", stem + ".tif")
    for target in targets.values():
        os.makedirs(os.path.dirname(target), exist_ok=True)
    return targets


def _profile(src, key, classes):
    profile = {"driver": "GTiff", "height": src.height, "width": src.width, "count": 1, "dtype": "uint8",
               "crs": src.crs, "transform": src.transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate"}  # fmt: skip
    if key == "classes":
        profile["nodata"] = 255
    if key == "probs":
        profile.update(count=len(classes), dtype="float32")
    return profile


def _predict_grid(model, src, chosen, files, classes, task, threshold, overlap, batch_size, tta, progress, block,
                  palette, masked):  # fmt: skip
    """Predict the dataset `src` (a scene, or a resampled view of one) into `files` ({output key: path}) on its
    grid; returns (nodata pixels, the preview, pixels predicted per class)."""
    rasterio, _ = require()
    from rasterio.windows import Window

    from imseg.predict import masks_from_logits, probabilities, stream_logits
    from imseg.visualize import overlay

    th, tw = model.input_shape[1:3]
    height, width = src.height, src.width
    factor = max(1, math.ceil(max(height, width) / PREVIEW))
    preview = np.zeros((math.ceil(height / factor), math.ceil(width / factor), 3), np.uint8)
    display = _display_scale(src, chosen[:3])
    nodata, outputs, found = 0, {}, np.zeros(len(classes), np.int64)
    try:
        for key, target in files.items():
            outputs[key] = rasterio.open(target, "w", **_profile(src, key, classes))

        def read(y0, y1, x0, x1):  # zeros outside the scene (a resampled view allows no boundless reads)
            pixels = np.zeros((len(chosen), y1 - y0, x1 - x0), src.dtypes[chosen[0] - 1])
            top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
            if bottom > top and right > left:
                inside = Window(left, top, right - left, bottom - top)
                pixels[:, top - y0 : bottom - y0, left - x0 : right - x0] = src.read(chosen, window=inside)
            return np.moveaxis(pixels, 0, -1)

        padded = (max(height, th), max(width, tw))  # a scene smaller than a tile is padded, never resized
        for y, x, logits in stream_logits(model, read, *padded, overlap, batch_size, tta, progress, block):
            rows, cols = min(len(logits), height - y), min(logits.shape[1], width - x)
            if rows <= 0 or cols <= 0:
                continue
            logits = logits[:rows, :cols]
            window = Window(x, y, cols, rows)
            valid = src.dataset_mask(window=window) > 0
            nodata += int((~valid).sum())
            predicted = masks_from_logits(logits, task, threshold) & valid[..., None]
            found += predicted.reshape(-1, len(classes)).sum(0)
            for key, dst in outputs.items():
                if key == "classes":
                    dst.write(np.where(valid, predicted.argmax(-1), 255).astype(np.uint8), 1, window=window)
                elif key == "probs":
                    dst.write(np.moveaxis(probabilities(logits, task), -1, 0), window=window)
                else:
                    dst.write(predicted[..., key].astype(np.uint8) * 255, 1, window=window)
                if masked:
                    dst.write_mask(valid.astype(np.uint8) * 255, window=window)
            # The preview: every factor-th pixel of the grid that falls in this window.
            ys = np.arange(-y % factor, rows, factor)
            xs = np.arange(-x % factor, cols, factor)
            if len(ys) and len(xs):
                pixels = read(y, y + rows, x, x + cols)[np.ix_(ys, xs)][..., : len(display)]
                shown = _to_rgb(pixels, display)
                drawn = overlay(shown, predicted[np.ix_(ys, xs)], palette or [None] * len(classes))
                preview[np.ix_((y + ys) // factor, (x + xs) // factor)] = drawn
    finally:
        for dst in outputs.values():
            dst.close()
    return nodata, preview, found


def _as_cog(source, target, resampling):
    """The GeoTIFF `source` rewritten as a Cloud Optimized GeoTIFF at `target` (GDAL's COG driver: internal tiles
    and overviews, so that QGIS or a tile server streams it at any scale), atomically; `source` is removed."""
    require()
    import rasterio.shutil

    staged = _tmp(target, "cog")
    try:
        rasterio.shutil.copy(source, staged, driver="COG", compress="deflate", overview_resampling=resampling)
        os.replace(staged, target)
    finally:
        for leftover in (source, staged):
            if os.path.exists(leftover):
                os.remove(leftover)


def _to_grid(source, target, scene, resampling, masked, rows=1024):
    """The GeoTIFF `source` warped onto the grid of `scene`, written to `target` strip by strip; with `masked` the
    scene's own mask band is written too."""
    rasterio, _ = require()
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        profile = {**src.profile, "height": scene.height, "width": scene.width, "transform": scene.transform}
        with WarpedVRT(src, crs=scene.crs, transform=scene.transform, width=scene.width, height=scene.height,
                       resampling=getattr(rasterio.enums.Resampling, resampling)) as view:  # fmt: skip
            with rasterio.open(target, "w", **profile) as dst:
                for y in range(0, scene.height, rows):
                    window = Window(0, y, scene.width, min(rows, scene.height - y))
                    values = view.read(window=window)
                    if masked:
                        valid = scene.dataset_mask(window=window) > 0
                        values = np.where(valid, values, src.nodata if src.nodata is not None else 0)
                        dst.write_mask(valid.astype(np.uint8) * 255, window=window)
                    dst.write(values, window=window)


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


def _tmp(path, stage=""):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{stage + '.' if stage else ''}tmp.tif")


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
