"""The AIR `im_seg` folder layout: `D/im_seg/<split>/images/<id>.jpg` paired by file stem with
`D/im_seg/<split>/annotations/<id>.json`. Listing and pairing only; no TensorFlow, so bad layouts are
reported at once.
"""

import os

from imseg.annotations import ANNOTATION_EXTENSIONS
from imseg.errors import DataError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def split_dir(data_path, split):
    return os.path.join(data_path, "im_seg", split)


def list_split(data_path, split):
    """Sorted [(id, image path, annotation path)] of a split; every image must have an annotation and back."""
    root = split_dir(data_path, split)
    image_dir, ann_dir = os.path.join(root, "images"), os.path.join(root, "annotations")
    for d in (image_dir, ann_dir):
        if not os.path.isdir(d):
            raise DataError(f"{d}: folder not found (expected the AIR layout D/im_seg/{split}/images and annotations)")
    images = _by_stem(image_dir, IMAGE_EXTENSIONS)
    annotations = _by_stem(ann_dir, ANNOTATION_EXTENSIONS)
    lonely = sorted(set(images) - set(annotations))
    if lonely:
        raise DataError(
            f"{ann_dir}: {len(lonely)} image(s) have no annotation: {_some(images[s] for s in lonely)}"
        )
    orphans = sorted(set(annotations) - set(images))
    if orphans:
        raise DataError(
            f"{image_dir}: {len(orphans)} annotation(s) have no image: {_some(annotations[s] for s in orphans)}"
        )
    if not images:
        raise DataError(f"{root}: split '{split}' is empty (no images)")
    return [(stem, images[stem], annotations[stem]) for stem in sorted(images, key=_natural)]


def _by_stem(folder, extensions):
    found = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions and not name.startswith("."):
            if stem in found:
                raise DataError(f"{folder}: two files share the id '{stem}': {os.path.basename(found[stem])}, {name}")
            found[stem] = os.path.join(folder, name)
    return found


def _natural(stem):
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _some(paths, n=5):
    paths = [os.path.basename(p) for p in paths]
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")
