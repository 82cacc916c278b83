"""Shared test helpers: tiny AIR datasets, the CLI in a subprocess, Keras round trips, NumPy references."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_CONFIG = os.path.join(REPO, "configs", "refine_net_224_pretrained_augment.json")
RUN = "refine_net_224_pretrained_augment"  # the name in SEED_CONFIG
SMALL = ["--set", "pretrained=false", "--set", "input_shape=[32, 32, 3]", "--set", "batch_size=4"]
AIR_CLASSES = {"building": ["hospital", "parking", "other"], "highway": ["roads", "other"]}


def write_air_dataset(root, classes=None, counts=(8, 4, 4), size=(40, 40), seed=0, exclusive=False, ignore=0):
    """Write an AIR im_seg dataset of random rectangles (one set per class, overlaps allowed unless `exclusive`:
    then a later class takes the pixel). `ignore` > 0 marks a border that many pixels wide as ignored in
    every annotation (the "ignore" key).

    Returns (data_path, classes_path). Images are brighter where any class is present, so a model
    can learn something in a few steps.
    """
    classes = classes or AIR_CLASSES
    names = sorted(f"{s}:{c}" for s, subs in classes.items() for c in subs)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in zip(("train", "val", "test"), counts):
        os.makedirs(os.path.join(root, "im_seg", split, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, "im_seg", split, "annotations"), exist_ok=True)
        for i in range(count):
            ann = np.zeros((len(names), h, w), np.uint8)
            for k in range(len(names)):
                y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
                ann[k, y : y + rng.integers(4, h // 2), x : x + rng.integers(4, w // 2)] = 1
                if exclusive:
                    ann[:k, ann[k] == 1] = 0
            image = rng.integers(0, 90, (h, w, 3)) + 120 * ann.max(axis=0)[..., None]
            encoded = tf.io.encode_jpeg(image.astype(np.uint8), quality=95)
            tf.io.write_file(os.path.join(root, "im_seg", split, "images", f"{i}.jpg"), encoded)
            data = {"annotation": ann.tolist(), "img": f"{i}.jpg"}
            if ignore:
                border = np.ones((h, w), np.uint8)
                border[ignore:-ignore, ignore:-ignore] = 0
                data["ignore"] = border.tolist()
            with open(os.path.join(root, "im_seg", split, "annotations", f"{i}.json"), "w") as f:
                json.dump(data, f)
    classes_path = os.path.join(root, "classes.json")
    with open(classes_path, "w") as f:
        json.dump(classes, f)
    return root, classes_path


def run_module(module, *args, cwd=None, env=None, timeout=600):
    """Run `python -m module args` as a user would; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def files_under(folder):
    """Every file below `folder` (empty list when it does not exist)."""
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]


def assert_round_trip(obj, tmp_path=None, example=None):
    """`obj` survives get_config -> JSON -> from_config, and (models) a `.keras` file with equal outputs."""
    serialized = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(clone) is type(obj)
    assert _plain(clone.get_config()) == _plain(obj.get_config())
    if isinstance(obj, keras.Model):
        path = os.path.join(tmp_path, "round_trip.keras")
        obj.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(obj)
        assert _plain(loaded.get_config()) == _plain(obj.get_config())
        if example is not None:
            np.testing.assert_allclose(loaded.predict(example, verbose=0), obj.predict(example, verbose=0), atol=1e-5)
        return loaded
    return clone


def _plain(config):
    """Configs compared as JSON data (tuples and lists are the same there)."""
    return json.loads(json.dumps(config))


def reference_scores(truth, logits, threshold=0.0):
    """NumPy reference of imseg's metrics: exact counts over all pixels, NaN for 0/0."""
    c = truth.shape[-1]
    t = truth.reshape(-1, c) > 0.5
    p = logits.reshape(-1, c) > threshold
    tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    mean = np.nanmean(iou) if np.isfinite(iou).any() else np.nan
    return {"iou": iou, "precision": precision, "recall": recall, "mean_iou": mean}
