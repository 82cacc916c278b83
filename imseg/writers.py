"""What a prediction writes per image: a mask per class, the class-index image (multiclass), the overlay and the
probabilities, in the folders of an output (split predictions and mapping jobs alike)."""

import os

import numpy as np

from imseg.tasks import BACKGROUND

NOT_COUNTED = 255  # class-index images: a pixel that is ignored (splits) or nodata (images)


def class_folder(name):
    """The folder of a class's masks: `building:other` -> `building-other`."""
    return name.replace(":", "-")


def make_dirs(out, names, probs, task):
    """The output folders of a prediction: masks per class, overlays, class maps, probabilities."""
    for name in names:
        if name != BACKGROUND:
            os.makedirs(os.path.join(out, "masks", class_folder(name)), exist_ok=True)
    os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    if task == "multiclass":
        os.makedirs(os.path.join(out, "classes"), exist_ok=True)
    if probs:
        os.makedirs(os.path.join(out, "probs"), exist_ok=True)


def write_prediction(out, stem, image, predicted, names, palette, save_probs, logits, truth=None, task="multilabel",
                      valid=None):  # fmt: skip
    """Masks (and for multiclass the class-index image), overlay and probabilities of one image.

    `predicted` (h, w, K) is already off where `valid` (h, w) is false.
    """
    from imseg.outputs import atomic_path, write_png
    from imseg.predict import probabilities
    from imseg.visualize import displayable, overlay

    valid = np.ones(predicted.shape[:2], bool) if valid is None else valid
    for k, name in enumerate(names):
        if name == BACKGROUND:
            continue
        write_png(
            os.path.join(out, "masks", class_folder(name), stem + ".png"), predicted[..., k].astype(np.uint8) * 255
        )
    if task == "multiclass":
        index = np.where(valid, predicted.argmax(-1), NOT_COUNTED).astype(np.uint8)
        write_png(os.path.join(out, "classes", stem + ".png"), index)
    drawn = overlay(displayable(image), predicted, palette)
    if truth is not None:
        drawn = np.concatenate([drawn, np.full((drawn.shape[0], 4, 3), 255, np.uint8), truth], axis=1)
    write_png(os.path.join(out, "overlays", stem + ".png"), drawn)
    if save_probs:
        with atomic_path(os.path.join(out, "probs", stem + ".npy"), suffix=".npy") as tmp:
            np.save(tmp, probabilities(logits, task).astype(np.float16))
    return drawn
