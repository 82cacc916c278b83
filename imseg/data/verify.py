"""`imseg-data verify`: check every split of an AIR dataset and list every problem file."""

import numpy as np

from imseg.annotations import read_annotation
from imseg.errors import DataError
from imseg.images import read_image
from imseg.layout import SPLITS, scan_split
from imseg.progress import progress


def verify_split(data_path, split, num_classes):
    """(count of good pairs, per-class positive pixels, total pixels, problems) of one split."""
    pairs, problems = scan_split(data_path, split)
    positives, pixels, good = np.zeros(num_classes, np.int64), 0, 0
    for _, image_path, ann_path in progress(pairs, f"verifying {split}", unit="pairs") if pairs else ():
        try:
            image = read_image(image_path)
        except DataError as e:
            problems.append(str(e))
            continue
        try:
            ann = read_annotation(ann_path)
        except DataError as e:
            problems.append(str(e))
            continue
        if ann.shape[0] != num_classes:
            problems.append(f"{ann_path}: annotation has {ann.shape[0]} channels, classes.json defines {num_classes}")
        elif ann.shape[1:] != image.shape[:2]:
            problems.append(
                f"{ann_path}: annotation is {ann.shape[1]}x{ann.shape[2]} but its image is "
                f"{image.shape[0]}x{image.shape[1]}"
            )
        else:
            positives += ann.reshape(num_classes, -1).sum(axis=1, dtype=np.int64)
            pixels += ann.shape[1] * ann.shape[2]
            good += 1
    return good, positives, pixels, problems


NEEDED_BY_TRAINING = ("train", "val")


def verify(data_path, class_names, out):
    """Print a report to `out` (a callable taking a line); return the list of problems.

    An empty split is a problem only for the splits training needs (train, val); an empty test split is
    reported, not counted.
    """
    every = []
    for split in SPLITS:
        good, positives, pixels, problems = verify_split(data_path, split, len(class_names))
        if split not in NEEDED_BY_TRAINING and not good and all("is empty" in p for p in problems) and problems:
            out(f"{split}: empty (training does not need it; imseg-infer --split {split} does)")
            continue
        problems = [p + " (training needs it)" if "is empty" in p else p for p in problems]
        out(f"{split}: {good} good image/annotation pairs, {len(problems)} problem(s)")
        if pixels:
            for name, p in zip(class_names, positives):
                out(f"  {name:<24} {100 * p / pixels:6.2f} % of pixels")
        every += problems
    for problem in every:
        out(f"problem: {problem}")
    out("dataset is clean" if not every else f"{len(every)} problem(s) found")
    return every
