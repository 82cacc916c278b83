"""`imseg-data show`: a contact sheet of tiles with their masks drawn in per-class colours, and optionally what a
config's augmentation makes of them."""

import os
import random

import numpy as np

from imseg.annotations import read_annotation
from imseg.images import read_image
from imseg.layout import list_split
from imseg.outputs import atomic_path, check_writable
from imseg.visualize import class_colours, contact_sheet, displayable, overlay, side_by_side

IGNORED = np.array([128, 128, 128], np.uint8)  # how ignored pixels are drawn
SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # the sheet's file type, by its extension


def show(data_path, split, class_names, count, output, seed=0, columns=4, augment=None):
    """Draw `count` tiles of a split (picked with `seed`) into `output` (a .png or .jpg file, its folder created if
    needed); returns how many.

    With `augment` (SegmentationAugment arguments, e.g. `imseg.recipe.augment_kwargs(config)`), each cell shows
    the tile beside one augmented version of it, as training would see it (draw `seed`); ignored pixels grey.
    """
    folder = os.path.dirname(os.path.abspath(output))
    check_writable(folder, "the --output file's folder", "choose another --output")
    pairs = list_split(data_path, split)
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), min(count, len(pairs))))
    colours = class_colours(class_names)
    palette = list(colours.values())
    tiles = []
    for i in chosen:
        stem, image_path, ann_path = pairs[i]
        masks, ignore = read_annotation(ann_path, with_ignore=True)
        tiles.append((stem, read_image(image_path), masks.transpose(1, 2, 0), ignore == 0))
    # One range for all tiles, so that they compare: 0-255 for 8-bit imagery, else the drawn tiles' own.
    eight_bit = all(t[1].dtype == np.uint8 for t in tiles)
    value_range = (0.0, 255.0) if eight_bit else (min(float(t[1].min()) for t in tiles),
                                                  max(float(t[1].max()) for t in tiles))  # fmt: skip
    if augment:
        augmented = _augmented(tiles, {**augment, "value_range": value_range}, seed)
        cells = [(f"{stem}: tile | augmented", side_by_side(_draw(image, masks, valid, palette, value_range),
                                                            _draw(*aug, palette, value_range)))
                 for (stem, image, masks, valid), aug in zip(tiles, augmented)]  # fmt: skip
        columns = max(1, columns // 2)
    else:
        cells = [(stem, _draw(image, masks, valid, palette, value_range)) for stem, image, masks, valid in tiles]
    title = f"{data_path} - {split}: {len(cells)} of {len(pairs)}" + (" (augmented)" if augment else "")
    sheet = contact_sheet(cells, colours, columns=columns, title=title)
    extension = os.path.splitext(output)[1].lower()
    os.makedirs(folder, exist_ok=True)
    with atomic_path(output, suffix=extension) as tmp:
        sheet.convert("RGB").save(tmp, format=SHEET_FORMATS[extension])
    return len(cells)


def _draw(image, masks, valid, palette, value_range):
    drawn = overlay(displayable(image, value_range), masks > 0.5, palette)
    drawn[~np.asarray(valid, bool)] = IGNORED
    return drawn


def _augmented(tiles, augment, seed):
    """Each tile once through SegmentationAugment, in place, with the draws of step `seed`."""
    from imseg.augment import SegmentationAugment

    layer = SegmentationAugment(**{**augment, "multiplier": 0})
    shapes = {t[1].shape for t in tiles}
    if len(shapes) > 1:  # tiles of several sizes: one by one
        return [_augmented([t], augment, seed + i)[0] for i, t in enumerate(tiles)]
    images, masks, valid = (np.stack([t[k] for t in tiles]).astype("float32") for k in (1, 2, 3))
    out = layer(images, masks, valid, np.int64(seed))
    return list(zip(*(t.numpy() for t in out)))
