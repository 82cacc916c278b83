"""The AIR `im_seg` folder layout: `D/im_seg/<split>/images/<id>.jpg` paired by file stem with
`D/im_seg/<split>/annotations/<id>.json`. Listing and pairing only; no TensorFlow, so bad layouts are
reported at once.
"""

import os

from imseg.annotations import ANNOTATION_EXTENSIONS
from imseg.errors import DataError

SPLITS = ("train", "val", "test")
# Every reader (training's cache, imseg-data, imseg-infer) takes these; GeoTIFF needs the `geo` extra.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff")


def split_dir(data_path, split):
    return os.path.join(data_path, "im_seg", split)


def scan_split(data_path, split):
    """(pairs, problems) of a split: pairs [(id, image, annotation)] in natural order, and one message
    per unpaired or missing file. Raises nothing, so `imseg-data verify` can list every problem."""
    root = split_dir(data_path, split)
    image_dir, ann_dir = os.path.join(root, "images"), os.path.join(root, "annotations")
    problems = [
        f"{d}: folder not found (expected the AIR layout D/im_seg/{split}/images and annotations)"
        for d in (image_dir, ann_dir)
        if not os.path.isdir(d)
    ]
    if problems:
        return [], problems
    images, dup_images = _by_stem(image_dir, IMAGE_EXTENSIONS)
    annotations, dup_annotations = _by_stem(ann_dir, ANNOTATION_EXTENSIONS)
    problems = dup_images + dup_annotations
    problems += [
        f"{images[s]}: no annotation ({s}.json or {s}.npz expected in {ann_dir})"
        for s in sorted(set(images) - set(annotations), key=_natural)
    ]
    problems += [
        f"{annotations[s]}: no image with this id in {image_dir}"
        for s in sorted(set(annotations) - set(images), key=_natural)
    ]
    if not images and not annotations:
        problems.append(f"{root}: split '{split}' is empty (no images)")
    pairs = [(s, images[s], annotations[s]) for s in sorted(set(images) & set(annotations), key=_natural)]
    return pairs, problems


def list_split(data_path, split):
    """Sorted [(id, image path, annotation path)] of a split; every image must have an annotation and back."""
    pairs, problems = scan_split(data_path, split)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s); run imseg-data verify)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    return pairs


def _by_stem(folder, extensions):
    found, duplicates = {}, []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions and not name.startswith("."):
            if stem in found:
                duplicates.append(f"{folder}: two files share the id '{stem}': {os.path.basename(found[stem])}, {name}")
            found[stem] = os.path.join(folder, name)
    return found, duplicates


def _natural(stem):
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def ground_sample_distance(data_path):
    """The metres per pixel of a dataset's tiles, from `D/im_seg/path_map.json` (what `--resolution` made, or the
    tiles' own transforms in a metric CRS), when every tile has the same (within 1 %); else None."""
    import json

    path = os.path.join(data_path, "im_seg", "path_map.json")
    try:
        with open(path, encoding="utf-8") as f:
            entries = list(json.load(f).values())
    except (OSError, ValueError, AttributeError):
        return None
    sizes, metres = set(), {}
    for entry in entries:
        if "resolution" in entry:
            sizes.add(float(entry["resolution"]))
        elif "transform" in entry and "crs" in entry:
            if entry["crs"] not in metres:  # metres per unit of the CRS, None when it is not projected
                from rasterio.crs import CRS

                crs = CRS.from_user_input(entry["crs"])
                metres[entry["crs"]] = crs.linear_units_factor[1] if crs.is_projected else None
            if metres[entry["crs"]] is None:
                return None
            sizes.add(abs(float(entry["transform"][0])) * metres[entry["crs"]])
        else:
            return None
    if not sizes or max(sizes) > 1.01 * min(sizes):
        return None
    return round(min(sizes), 6)
