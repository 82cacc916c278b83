"""Annotation files -> 0/1 uint8 arrays of shape (classes, height, width).

Kept free of TensorFlow, so that the dataset tools start fast.
Formats, chosen by file extension:
- `.json`: the AIR ImSeg layout, `{"annotation": <C x h x w nested lists of 0/1>, "img": "<i>.jpg"}`, with an
  optional `"ignore": <h x w nested lists of 0/1>` (1: the pixel carries no label and never counts; absent:
  every pixel is labelled, as in every AIR dataset).
- `.npz`: imseg's compact format, `numpy.savez_compressed` with `packed` = the mask bit-packed along the
  class axis (`numpy.packbits(planes, axis=0)`, shape (ceil(P/8), h, w)), `num_classes` = C and
  `has_ignore` = 0 or 1: the planes are the C classes followed, when `has_ignore` is 1, by the ignore
  plane (P = C + 1). About 100 times smaller than the JSON and much faster to read.
"""

import json
import os
import zipfile

import numpy as np

from imseg.errors import DataError

ANNOTATION_EXTENSIONS = (".json", ".npz")


def read_annotation(path, with_ignore=False):
    """Read one annotation file: the (C, h, w) 0/1 uint8 annotation, or with `with_ignore` the pair
    (annotation, ignore) where `ignore` is the (h, w) 0/1 uint8 plane of pixels that never count (all
    zeros when the file has none). Raises DataError naming the file when it is unreadable or not 0/1.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        annotation, ignore = _read_npz(path)
    elif ext == ".json":
        annotation, ignore = _read_json(path)
    else:
        raise DataError(f"{path}: unknown annotation format (expected one of {', '.join(ANNOTATION_EXTENSIONS)})")
    if ignore is None:
        ignore = np.zeros(annotation.shape[1:], np.uint8)
    elif ignore.shape != annotation.shape[1:]:
        raise DataError(
            f"{path}: 'ignore' is {'x'.join(map(str, ignore.shape))} but 'annotation' is "
            f"{'x'.join(map(str, annotation.shape[1:]))} (height x width)"
        )
    return (annotation, ignore) if with_ignore else annotation


def _read_json(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: unreadable annotation JSON: {e}") from None
    annotation = _parse_binary_lists(raw, b'"annotation"', 3)
    ignore = _parse_binary_lists(raw, b'"ignore"', 2) if b'"ignore"' in raw else None
    if annotation is not None and (ignore is not None or b'"ignore"' not in raw):
        return annotation, ignore
    try:
        data = json.loads(raw)
        values = data["annotation"]
    except ValueError as e:
        raise DataError(f"{path}: unreadable annotation JSON: {e}") from None
    except (KeyError, TypeError):
        raise DataError(f'{path}: no \'annotation\' key (expected {{"annotation": [...], "img": ...}})') from None
    annotation = _check_binary(_regular(values, path, "annotation", "C x h x w"), path, "annotation", 3)
    if data.get("ignore") is None:
        return annotation, None
    return annotation, _check_binary(_regular(data["ignore"], path, "ignore", "h x w"), path, "ignore", 2)


def _regular(values, path, key, shape):
    try:
        return np.asarray(values)
    except ValueError:
        raise DataError(f"{path}: '{key}' is not a regular {shape} array (ragged lists)") from None


_ALLOWED = np.zeros(256, bool)
_ALLOWED[[ord(c) for c in "01[], \t\r\n"]] = True


def _parse_binary_lists(raw, name, ndim):
    """The array under key `name` of an AIR JSON file, read with NumPy instead of `json`: many times faster.

    Handles exactly the common case, a regular nest of `ndim` levels (3: C x h x w, 2: h x w) of single
    0/1 digits; returns None for anything else, which the `json` module then parses (and reports
    precisely when it is wrong).
    """
    key = raw.find(name)
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
    if not _ALLOWED[buf].all() or (digits[:-1] & digits[1:]).any() or not (depth[digits] == ndim).all():
        return None
    depth = depth + (3 - ndim)  # an h x w plane reads as one channel
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
    array = values.reshape(channels, height, width).astype(np.uint8)
    return array if ndim == 3 else array[0]


def _read_npz(path):
    try:
        with np.load(path) as data:
            packed, num_classes = data["packed"], int(data["num_classes"])
            has_ignore = int(data["has_ignore"]) if "has_ignore" in data else 0
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise DataError(
            f"{path}: not a compact annotation file (an .npz with 'packed' and 'num_classes', as "
            "imseg-data convert --format npz writes)"
        ) from None
    planes = num_classes + has_ignore
    if packed.dtype != np.uint8 or packed.ndim != 3 or packed.shape[0] * 8 < planes or has_ignore not in (0, 1):
        raise DataError(
            f"{path}: 'packed' must be uint8 (ceil(P/8), h, w) with P = C classes + has_ignore, "
            f"got {packed.dtype} {packed.shape} for C = {num_classes}, has_ignore = {has_ignore}"
        )
    planes = np.unpackbits(packed, axis=0, count=planes)
    return planes[:num_classes], planes[num_classes] if has_ignore else None


def write_annotation(path, annotation, image_name, ignore=None):
    """Write a (C, h, w) 0/1 annotation, with an optional (h, w) 0/1 ignore plane, in the format named by
    the extension of `path`. An ignore plane without ignored pixels is not written."""
    annotation = np.asarray(annotation, np.uint8)
    ignore = None if ignore is None or not np.any(ignore) else np.asarray(ignore, np.uint8)
    if path.endswith(".npz"):
        planes = annotation if ignore is None else np.concatenate([annotation, ignore[None]])
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                packed=np.packbits(planes, axis=0),
                num_classes=annotation.shape[0],
                has_ignore=int(ignore is not None),
            )
    else:
        data = {"annotation": annotation.tolist(), "img": image_name}
        if ignore is not None:
            data["ignore"] = ignore.tolist()
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))


def _check_binary(array, path, key, ndim):
    if array.ndim != ndim:
        expected = "(classes, height, width)" if ndim == 3 else "(height, width)"
        raise DataError(f"{path}: {key} has shape {array.shape}, expected {expected}")
    if array.size and not (array.dtype.kind in "biuf" and np.isin(array, (0, 1)).all()):
        bad = np.unique(array[~np.isin(array, (0, 1))])[:5] if array.dtype.kind in "biuf" else array.dtype
        raise DataError(f"{path}: {key} values must be 0 or 1, found {bad}")
    return array.astype(np.uint8)


def pack_mask(annotation, ignore):
    """(C, h, w) 0/1 and (h, w) 0/1 -> (h, w, ceil((C + 1)/8)) uint8: class k in bit 7 - k % 8 of byte
    k // 8, and the ignore plane as bit C."""
    return np.packbits(np.concatenate([np.moveaxis(annotation, 0, -1), ignore[..., None]], axis=-1), axis=-1)


def read_packed(path):
    """Worker entry point: (packed mask bytes, (C, h, w))."""
    annotation, ignore = read_annotation(path, with_ignore=True)
    return pack_mask(annotation, ignore).tobytes(), annotation.shape
