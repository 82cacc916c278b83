"""imseg-export: exported models take 0-255 images and return the same logits as the .keras model."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import litert_logits, run_module
from imseg.export import float32_copy

pytestmark = pytest.mark.slow  # real command lines, trainings and exports


@pytest.fixture(scope="module")
def model_and_images(trained):
    path = os.path.join(trained[2], "checkpoints", "best.keras")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    return path, images, keras.models.load_model(path)


def export(path, fmt, output):
    result = run_module("imseg.export", "--model", path, "--format", fmt, "--output", output)
    assert result.returncode == 0, result.stderr
    said = result.stderr.strip().splitlines()
    assert len(said) == 1, said  # no library warning around the one line (ONNX printed a NumPy FutureWarning)
    return said[-1].split("wrote ")[-1]


def test_saved_model_matches_the_keras_logits(model_and_images, tmp_path):
    path, images, model = model_and_images
    exported = tf.saved_model.load(export(path, "saved_model", str(tmp_path / "sm")))
    difference = np.abs(exported.serve(images).numpy() - model.predict(images, verbose=0)).max()
    assert difference < 1e-4


def test_onnx_matches_the_float32_logits(model_and_images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path, images, model = model_and_images
    session = ort.InferenceSession(export(path, "onnx", str(tmp_path / "onnx")))
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(logits - float32_copy(model).predict(images, verbose=0)).max() < 1e-4


def test_litert_matches_the_float32_logits(model_and_images, tmp_path):
    path, images, model = model_and_images
    logits = litert_logits(export(path, "litert", str(tmp_path / "lite")), images)
    assert np.abs(logits - float32_copy(model).predict(images, verbose=0)).max() < 1e-4


def test_missing_or_bad_model_file(tmp_path):
    result = run_module(
        "imseg.export", "--model", str(tmp_path / "x.keras"), "--format", "saved_model", "--output", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"imseg-export: error: {tmp_path / 'x.keras'}: model file not found (train first, or pass --model)"
    )
    assert not os.path.exists(tmp_path / "o")


def test_export_carries_the_model_record_and_replaces_only_with_overwrite(model_and_images, tmp_path):
    import json

    path = model_and_images[0]
    folder = tmp_path / "lite"
    export(path, "litert", str(folder))
    record = json.loads((folder / "imseg.json").read_text())
    assert record["classes"] == ["building:other", "highway:other"] and record["task"] == "multilabel"
    again = run_module("imseg.export", "--model", path, "--format", "litert", "--output", str(folder))
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    export_again = run_module(
        "imseg.export", "--model", path, "--format", "litert", "--output", str(folder), "--overwrite"
    )
    assert export_again.returncode == 0, export_again.stderr
    assert sorted(os.listdir(folder)) == ["best.tflite", "imseg.json"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging folder left
