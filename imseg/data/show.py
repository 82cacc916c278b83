"""`imseg-data show`: a contact sheet of tiles with their masks drawn in per-class colours."""

import random

from imseg.annotations import read_annotation
from imseg.data.images import read_image
from imseg.layout import list_split
from imseg.outputs import atomic_path
from imseg.visualize import class_colours, contact_sheet, overlay


def show(data_path, split, class_names, count, output, seed=0, columns=4):
    pairs = list_split(data_path, split)
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), min(count, len(pairs))))
    colours = class_colours(class_names)
    cells = []
    for i in chosen:
        stem, image_path, ann_path = pairs[i]
        masks = read_annotation(ann_path).transpose(1, 2, 0)
        cells.append((stem, overlay(read_image(image_path), masks, list(colours.values()))))
    sheet = contact_sheet(cells, colours, columns=columns, title=f"{data_path} - {split}: {len(cells)} of {len(pairs)}")
    with atomic_path(output, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return len(cells)
