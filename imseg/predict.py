"""Prediction on images of any size: a sliding window at the model's input size, blended without seams.

Tiles overlap by a fraction of their size; each tile's logits are weighted by a window that is 1 in
the middle and falls smoothly towards the tile's edges, and every pixel gets the weighted mean of the
tiles that cover it. `stream_logits` does the work for any source of pixels: tiles are predicted row by
row in batches, and only two rows of tiles are held as running sums, for a block of columns at a time, so
working memory grows with neither the image's height nor (beyond the block) its width. `predict_image` runs
it over an array in memory; `imseg.geo.raster` over a GeoTIFF window by window.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imseg.tiles import tile_starts

# Test-time augmentation: each view of a tile, as (transpose, flipped axes), is predicted, transformed back and
# averaged. "d4" adds the transposed tile's four flips: the eight symmetries of a square (every quarter turn, with
# and without a mirror), for imagery seen from above, where no direction is up.
_FLIPS = ((), (2,), (1,), (1, 2))
VIEWS = {
    "none": ((False, ()),),
    "flip": tuple((False, axes) for axes in _FLIPS),
    "d4": tuple((transpose, axes) for transpose in (False, True) for axes in _FLIPS),
}
TTA = tuple(VIEWS)


def blend_window(size, overlap):
    """1-D weights: a raised-cosine ramp over the `overlap` pixels at each end, 1 in between.

    Never zero, so the image's own edges, covered by one tile only, stay defined.
    """
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(math.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = np.minimum(w[:overlap], ramp)
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return np.maximum(w, 1e-3)


def masks_from_logits(logits: np.ndarray, task: str = "multilabel", threshold: float = 0.0) -> np.ndarray:
    """Boolean (..., K) masks from logits: logit > `threshold` per class (multilabel), or the class of the
    largest logit (multiclass), the rule imseg's metrics use."""
    logits = np.asarray(logits)
    if task == "multiclass":
        return np.eye(logits.shape[-1], dtype=bool)[logits.argmax(-1)]
    return logits > threshold


def probabilities(logits: np.ndarray, task: str = "multilabel") -> np.ndarray:
    """Sigmoid per class (multilabel) or softmax over the classes (multiclass) of (..., K) logits."""
    logits = np.asarray(logits, np.float32)
    if task == "multiclass":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def tile_logits(model, tiles, tta="none"):
    """Logits of a batch of (N, H, W, C) tiles; with `tta="flip"` the mean of the logits of the tiles as they are
    and flipped horizontally, vertically and both, with `"d4"` also of those four transposed (square tiles only),
    each transformed back."""
    tiles = np.asarray(tiles)
    if tta == "d4" and tiles.shape[1] != tiles.shape[2]:
        raise ValueError(f"tta='d4' transposes tiles, so they must be square; got {tiles.shape[1]}x{tiles.shape[2]}")
    total = 0.0
    for transpose, axes in VIEWS[tta]:
        view = np.flip(np.swapaxes(tiles, 1, 2) if transpose else tiles, axes)
        logits = np.flip(np.asarray(model.predict_on_batch(view), np.float32), axes)
        total = total + (np.swapaxes(logits, 1, 2) if transpose else logits)
    return total / len(VIEWS[tta])


def stream_logits(model, read, height, width, overlap=0.25, batch_size=8, tta="none", progress=None, block=None):
    """Blended logits of an (height, width) image, in pieces: yields (y, x, logits (rows, cols, K)).

    `read(y0, y1, x0, x1)` returns the pixels of that window as (y1 - y0, x1 - x0, C), zeros outside the image.
    Columns are done in blocks of about `block` pixels (default: all at once); each block takes every tile that
    touches it, so the result is the same as in one piece. The image must be at least one tile large.

    Batches are always full (they run on across tile rows), and the model predicts the next batch in a
    second thread while this one reads the pixels and blends the last: prediction, reading and blending overlap.
    """
    th, tw = model.input_shape[1:3]
    oy, ox = int(round(overlap * th)), int(round(overlap * tw))
    ys, xs = tile_starts(height, th, th - oy), tile_starts(width, tw, tw - ox)
    weight = np.outer(blend_window(th, oy), blend_window(tw, ox))[..., None]
    block = max(block or width, tw)
    blocks = []
    for bx0 in range(0, width, block):
        bx1 = min(bx0 + block, width)
        blocks.append((bx0, bx1, [x for x in xs if x < bx1 and x + tw > bx0]))  # every tile reaching the block
    counter = _Progress(progress, len(ys) * sum(len(tiles_x) for _, _, tiles_x in blocks))
    with ThreadPoolExecutor(max_workers=1) as pool:
        for bx0, bx1, tiles_x in blocks:
            tiles = [(y, x) for y in ys for x in tiles_x]
            for y, logits in _blend_block(model, read, tiles, height, weight, batch_size, tta, pool, counter):
                yield y, bx0, logits[:, bx0 - tiles_x[0] : bx1 - tiles_x[0]]


class _Progress:
    def __init__(self, report, total):
        self.report, self.total, self.done = report, total, 0

    def add(self, count):
        self.done += count
        if self.report:
            self.report(self.done, self.total)


def _blend_block(model, read, tiles, height, weight, batch_size, tta, pool, counter):
    """(y, logits of the rows from y on that are final) for the tiles [(y, x)] of one block of columns, in row
    order. Running sums are kept over the rows [top, top + len(acc)) that tiles still to come may touch."""
    th, tw, classes = weight.shape[0], weight.shape[1], model.output_shape[-1]
    cx0, cx1 = tiles[0][1], max(x for _, x in tiles) + tw
    top = 0
    acc = np.zeros((0, cx1 - cx0, classes), np.float32)
    norm = np.zeros((0, cx1 - cx0, 1), np.float32)
    strips = {}  # the pixels of the tile rows the current and the next batch take

    def pixels(batch):
        for y in sorted({y for y, _ in batch} - set(strips)):
            strips[y] = read(y, y + th, cx0, cx1)
        return np.stack([strips[y][:, x - cx0 : x - cx0 + tw] for y, x in batch]).astype(np.float32)

    batches = _batches(tiles, batch_size)
    batch = next(batches)
    pending = pool.submit(tile_logits, model, pixels(batch), tta)
    while batch:
        following = next(batches, None)
        if following:  # read while the model works on this batch
            for y in [y for y in strips if y < following[0][0]]:
                del strips[y]
            ahead = pixels(following)
        logits = pending.result()
        pending = pool.submit(tile_logits, model, ahead, tta) if following else None
        bottom = max(y for y, _ in batch) + th
        if top + len(acc) < bottom:
            grow = bottom - top - len(acc)
            acc = np.concatenate([acc, np.zeros((grow, cx1 - cx0, classes), np.float32)])
            norm = np.concatenate([norm, np.zeros((grow, cx1 - cx0, 1), np.float32)])
        for (y, x), one in zip(batch, logits):
            acc[y - top : y - top + th, x - cx0 : x - cx0 + tw] += weight * one
            norm[y - top : y - top + th, x - cx0 : x - cx0 + tw] += weight
        counter.add(len(batch))
        final = following[0][0] if following else top + len(acc)  # rows above it: no later tile reaches them
        if final > top:
            shift = final - top
            yield top, (acc[:shift] / norm[:shift])[: height - top]
            acc, norm, top = acc[shift:], norm[shift:], final
        batch = following


def _batches(tiles, size):
    for start in range(0, len(tiles), size):
        yield tiles[start : start + size]


def predict_image(
    model,
    image: np.ndarray,
    overlap: float = 0.25,
    batch_size: int = 8,
    output: str = "probabilities",
    threshold: float = 0.0,
    progress=None,
    task: str = "multilabel",
    tta: str = "none",
) -> np.ndarray:
    """Predict an (H, W, C) image of any size with a model of fixed input size (C: the bands it takes).

    Args:
        model: a Keras model returning logits (N, h, w, K), such as imseg's `best.keras`.
        image: (H, W, C) array of pixel values (0-255 for 8-bit RGB).
        overlap: the fraction of a tile shared with its neighbour (0 to 0.5).
        batch_size: tiles per prediction call.
        output: `"probabilities"` (float32: sigmoid per class, or softmax for `task="multiclass"`),
            `"logits"` (the blended logits) or `"masks"` (boolean, see `masks_from_logits`).
        threshold: the multilabel decision threshold on logits for `output="masks"`.
        progress: if given, called with the number of tiles done and the total.
        task: `"multilabel"` or `"multiclass"`, as the model was trained.
        tta: `"flip"` averages the logits over the four flips of each tile (4 times the work), `"d4"` over its
            eight quarter turns and mirrors (8 times; square tiles only).

    Returns:
        (H, W, K). Images smaller than the model's input are zero-padded, never resized.
    """
    if output not in ("probabilities", "logits", "masks"):
        raise ValueError(f"output must be 'probabilities', 'logits' or 'masks', got {output!r}")
    if not 0 <= overlap <= 0.5:
        raise ValueError(f"overlap must be a fraction between 0 and 0.5, got {overlap}")
    if tta not in TTA:
        raise ValueError(f"tta must be one of {', '.join(TTA)}, got {tta!r}")
    image = np.asarray(image)
    bands = model.input_shape[-1]
    if image.ndim != 3 or image.shape[-1] != bands:
        raise ValueError(f"expected an (H, W, {bands}) image, as the model takes, got shape {image.shape}")
    th, tw = model.input_shape[1:3]
    height, width = image.shape[:2]
    if height < th or width < tw:  # pad, never distort
        padded = np.zeros((max(height, th), max(width, tw), bands), image.dtype)
        padded[:height, :width] = image
        return predict_image(model, padded, overlap, batch_size, output, threshold, progress, task, tta)[
            :height, :width
        ]
    result = np.zeros((height, width, model.output_shape[-1]), bool if output == "masks" else np.float32)

    def read(y0, y1, x0, x1):
        return image[y0:y1, x0:x1]

    for y, x, logits in stream_logits(model, read, height, width, overlap, batch_size, tta, progress):
        result[y : y + len(logits), x : x + logits.shape[1]] = finish(logits, output, threshold, task)
    return result


def finish(logits, output="probabilities", threshold=0.0, task="multilabel"):
    """Blended logits as the `output` asks: themselves, masks or probabilities."""
    if output == "logits":
        return logits
    if output == "masks":
        return masks_from_logits(logits, task, threshold)
    return probabilities(logits, task)
