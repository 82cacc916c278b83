"""Annotation files -> 0/1 uint8 arrays of shape (classes, height, width).

Kept free of TensorFlow, so that the dataset tools start fast.
Formats, chosen by file extension:
- `.json`: the AIR ImSeg layout, `{"annotation": <C x h x w nested lists of 0/1>, "img": "<i>.jpg"}`.
- `.npz`: imseg's compact format, `numpy.savez_compressed` with `packed` = the mask bit-packed along the
  class axis (`numpy.packbits(annotation, axis=0)`, shape (ceil(C/8), h, w)) and `num_classes` = C.
  About 100 times smaller than the JSON and much faster to read.
"""

import json
import os

import numpy as np

from imseg.errors import DataError

ANNOTATION_EXTENSIONS = (".json", ".npz")


def read_annotation(path):
    """Read one annotation file; raises DataError naming the file when it is unreadable or not 0/1."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return _read_npz(path)
    if ext != ".json":
        raise DataError(f"{path}: unknown annotation format (expected one of {', '.join(ANNOTATION_EXTENSIONS)})")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: unreadable annotation JSON: {e}") from None
    fast = _parse_binary_lists(raw)
    if fast is not None:
        return fast
    try:
        data = json.loads(raw)
        values = data["annotation"]
    except ValueError as e:
        raise DataError(f"{path}: unreadable annotation JSON: {e}") from None
    except (KeyError, TypeError):
        raise DataError(f"{path}: no 'annotation' key (expected {{\"annotation\": [...], \"img\": ...}})") from None
    try:
        array = np.asarray(values)
    except ValueError:
        raise DataError(f"{path}: 'annotation' is not a regular C x h x w array (ragged lists)") from None
    return _check_binary(array, path)


_ALLOWED = np.zeros(256, bool)
_ALLOWED[[ord(c) for c in "01[], \t\r\n"]] = True


def _parse_binary_lists(raw):
    """The `annotation` array of an AIR JSON file, read with NumPy instead of `json`: many times faster.

    Handles exactly the common case, a regular C x h x w nest of single 0/1 digits; returns None for
    anything else, which the `json` module then parses (and reports precisely when it is wrong).
    """
    key = raw.find(b'"annotation"')
    start = raw.find(b"[", key)
    if key < 0 or start < 0:
        return None
    buf = np.frombuffer(raw, np.uint8)[start:]
    opens, closes = buf == ord("["), buf == ord("]")
    depth = np.cumsum(opens.astype(np.int32) - closes)
    ends = np.flatnonzero(depth == 0)
    if not ends.size:
        return None
    buf, opens, depth = buf[: ends[0] + 1], opens[: ends[0] + 1], depth[: ends[0] + 1]
    digits = (buf == ord("0")) | (buf == ord("1"))
    if not _ALLOWED[buf].all() or (digits[:-1] & digits[1:]).any() or not (depth[digits] == 3).all():
        return None
    channel_starts, row_starts = opens & (depth == 2), opens & (depth == 3)
    channels, rows = int(channel_starts.sum()), int(row_starts.sum())
    values = buf[digits] - ord("0")
    if not channels or rows % channels or values.size % max(rows, 1):
        return None
    height, width = rows // channels, values.size // rows
    per_row = np.bincount(np.cumsum(row_starts)[digits], minlength=rows + 1)[1:]
    per_channel = np.bincount(np.cumsum(channel_starts)[row_starts], minlength=channels + 1)[1:]
    if (per_row != width).any() or (per_channel != height).any():
        return None
    return values.reshape(channels, height, width).astype(np.uint8)


def _read_npz(path):
    try:
        with np.load(path) as data:
            packed, num_classes = data["packed"], int(data["num_classes"])
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path}: unreadable compact annotation (.npz with 'packed' and 'num_classes'): {e}") from None
    if packed.dtype != np.uint8 or packed.ndim != 3 or packed.shape[0] * 8 < num_classes:
        raise DataError(f"{path}: 'packed' must be uint8 (ceil(C/8), h, w), got {packed.dtype} {packed.shape}")
    return np.unpackbits(packed, axis=0, count=num_classes)


def write_annotation(path, annotation, image_name):
    """Write a (C, h, w) 0/1 annotation in the format named by the extension of `path`."""
    annotation = np.asarray(annotation, np.uint8)
    if path.endswith(".npz"):
        with open(path, "wb") as f:
            np.savez_compressed(f, packed=np.packbits(annotation, axis=0), num_classes=annotation.shape[0])
    else:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"annotation": annotation.tolist(), "img": image_name}, f, separators=(",", ":"))


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
