"""Annotation files -> 0/1 uint8 arrays of shape (classes, height, width).

Kept free of TensorFlow so that worker processes parsing thousands of AIR JSON files start fast.
Formats, chosen by file extension:
- `.json`: the AIR ImSeg layout, `{"annotation": <C x h x w nested lists of 0/1>, "img": "<i>.jpg"}`.
"""

import json
import os

import numpy as np

from imseg.errors import DataError

ANNOTATION_EXTENSIONS = (".json",)


def read_annotation(path):
    """Read one annotation file; raises DataError naming the file when it is unreadable or not 0/1."""
    ext = os.path.splitext(path)[1].lower()
    if ext != ".json":
        raise DataError(f"{path}: unknown annotation format (expected one of {', '.join(ANNOTATION_EXTENSIONS)})")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        values = data["annotation"]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable annotation JSON: {e}") from None
    except (KeyError, TypeError):
        raise DataError(f"{path}: no 'annotation' key (expected {{\"annotation\": [...], \"img\": ...}})") from None
    try:
        array = np.asarray(values)
    except ValueError:
        raise DataError(f"{path}: 'annotation' is not a regular C x h x w array (ragged lists)") from None
    return _check_binary(array, path)


def _check_binary(array, path):
    if array.ndim != 3:
        raise DataError(f"{path}: annotation has shape {array.shape}, expected (classes, height, width)")
    if array.size and not (array.dtype.kind in "biuf" and np.isin(array, (0, 1)).all()):
        bad = np.unique(array[~np.isin(array, (0, 1))])[:5] if array.dtype.kind in "biuf" else array.dtype
        raise DataError(f"{path}: annotation values must be 0 or 1, found {bad}")
    return array.astype(np.uint8)


def pack_mask(annotation):
    """(C, h, w) 0/1 -> (h, w, ceil(C/8)) uint8 with class k in bit 7 - k % 8 of byte k // 8."""
    return np.packbits(np.moveaxis(annotation, 0, -1), axis=-1)


def read_packed(path):
    """Worker entry point: (packed mask bytes, (C, h, w))."""
    annotation = read_annotation(path)
    return pack_mask(annotation).tobytes(), annotation.shape
