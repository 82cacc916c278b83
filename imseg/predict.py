"""Prediction on images of any size: a sliding window at the model's input size, blended without seams.

Tiles overlap by a fraction of their size; each tile's logits are weighted by a window that is 1 in
the middle and falls smoothly towards the tile's edges, and every pixel gets the weighted mean of the
tiles that cover it. Tiles are predicted row by row in batches, and only two rows of tiles are held
as running sums, so working memory grows with the image's width, never with its height.
"""

import math

import numpy as np


def tile_starts(length, tile, stride):
    """Starts of the tiles along one axis; the last tile ends exactly at the image's edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


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


def predict_masks(logits: np.ndarray, task: str = "multilabel", threshold: float = 0.0) -> np.ndarray:
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


def predict_image(
    model,
    image: np.ndarray,
    overlap: float = 0.25,
    batch_size: int = 8,
    output: str = "probabilities",
    threshold: float = 0.0,
    progress=None,
    task: str = "multilabel",
) -> np.ndarray:
    """Predict a (H, W, 3) 0-255 image of any size with a model of fixed input size.

    Args:
        model: a Keras model returning logits (N, h, w, K), such as imseg's `best.keras`.
        image: (H, W, 3) array of 0-255 values.
        overlap: the fraction of a tile shared with its neighbour (0 to 0.5).
        batch_size: tiles per prediction call.
        output: `"probabilities"` (float32: sigmoid per class, or softmax for `task="multiclass"`),
            `"logits"` (the blended logits) or `"masks"` (boolean, see `predict_masks`).
        threshold: the multilabel decision threshold on logits for `output="masks"`.
        progress: if given, called with the number of tiles done and the total.
        task: `"multilabel"` or `"multiclass"`, as the model was trained.

    Returns:
        (H, W, K). Images smaller than the model's input are zero-padded, never resized.
    """
    if output not in ("probabilities", "logits", "masks"):
        raise ValueError(f"output must be 'probabilities', 'logits' or 'masks', got {output!r}")
    if not 0 <= overlap <= 0.5:
        raise ValueError(f"overlap must be a fraction between 0 and 0.5, got {overlap}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    th, tw = model.input_shape[1:3]
    height, width = image.shape[:2]
    if height < th or width < tw:  # pad, never distort
        padded = np.zeros((max(height, th), max(width, tw), 3), image.dtype)
        padded[:height, :width] = image
        return predict_image(model, padded, overlap, batch_size, output, threshold, progress, task)[:height, :width]
    oy, ox = int(round(overlap * th)), int(round(overlap * tw))
    ys, xs = tile_starts(height, th, th - oy), tile_starts(width, tw, tw - ox)
    weight = np.outer(blend_window(th, oy), blend_window(tw, ox))[..., None]
    classes = model.output_shape[-1]
    result = np.zeros((height, width, classes), bool if output == "masks" else np.float32)

    # Running sums over the rows [top, top + th) that tiles still to come may touch.
    top = 0
    acc = np.zeros((th, width, classes), np.float32)
    norm = np.zeros((th, width, 1), np.float32)
    done, total = 0, len(ys) * len(xs)
    for y in ys:
        if y > top:  # rows above y are final: no later tile reaches them
            shift = y - top
            _finish(result, top, acc[:shift], norm[:shift], output, threshold, task)
            acc = np.concatenate([acc[shift:], np.zeros((shift, width, classes), np.float32)])
            norm = np.concatenate([norm[shift:], np.zeros((shift, width, 1), np.float32)])
            top = y
        for start in range(0, len(xs), batch_size):
            batch_xs = xs[start : start + batch_size]
            tiles = np.stack([image[y : y + th, x : x + tw] for x in batch_xs]).astype(np.float32)
            logits = np.asarray(model.predict_on_batch(tiles), np.float32)
            for x, tile_logits in zip(batch_xs, logits):
                acc[:, x : x + tw] += weight * tile_logits
                norm[:, x : x + tw] += weight
            done += len(batch_xs)
            if progress:
                progress(done, total)
    _finish(result, top, acc, norm, output, threshold, task)
    return result


def _finish(result, top, acc, norm, output, threshold, task):
    logits = acc / norm
    rows = slice(top, top + len(logits))
    if output == "logits":
        result[rows] = logits
    elif output == "masks":
        result[rows] = predict_masks(logits, task, threshold)
    else:
        result[rows] = probabilities(logits, task)
