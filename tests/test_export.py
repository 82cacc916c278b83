"""imseg-export: exported models take 0-255 images and return the same logits as the .keras model."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_main, run_module, toy_segmenter
from imseg.export import float32_copy
from imseg.models.segmenter import all_layers

pytestmark = pytest.mark.slow  # real command lines, trainings and exports


@pytest.fixture(scope="module")
def model_and_images(trained):
    path = os.path.join(trained[2], "checkpoints", "best.keras")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    return path, images, keras.models.load_model(path)


def test_the_float32_copy_of_a_bfloat16_network_computes_in_float32_and_a_float32_network_is_kept():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = toy_segmenter().inference_model()
    keras.mixed_precision.set_global_policy("float32")
    copy = float32_copy(mixed)
    assert "bfloat16" in {layer.compute_dtype for layer in all_layers(mixed)}
    assert {layer.compute_dtype for layer in all_layers(copy)} == {"float32"}
    for a, b in zip(copy.weights, mixed.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    plain = toy_segmenter().inference_model()
    assert float32_copy(plain) is plain  # nothing to convert: no copy


def export(path, fmt, output):
    result = run_module("imseg.export", "--model", path, "--format", fmt, "--output", output)
    assert result.returncode == 0, result.stderr
    said = result.stderr.strip().splitlines()
    assert len(said) == 1, said  # no library warning around the one line (ONNX printed a NumPy FutureWarning)
    return said[-1].split("wrote ")[-1]


def test_missing_or_bad_model_file(tmp_path):
    result = run_module(
        "imseg.export", "--model", str(tmp_path / "x.keras"), "--format", "saved_model", "--output", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"imseg-export: error: {tmp_path / 'x.keras'}: model file not found (train first, or pass --model)"
    )
    assert not os.path.exists(tmp_path / "o")


def test_export_matches_the_keras_logits_carries_the_model_record_and_replaces_only_with_overwrite(
    model_and_images, tmp_path
):
    """The command line on a trained best.keras: ONNX, then a SavedModel in its place (ONNX and LiteRT of every
    decoder: tests/test_decoders.py)."""
    import json

    import onnxruntime

    path, images, model = model_and_images
    expected = float32_copy(model).predict(images, verbose=0)
    folder = tmp_path / "onnx"
    session = onnxruntime.InferenceSession(export(path, "onnx", str(folder)))
    assert np.abs(session.run(None, {session.get_inputs()[0].name: images})[0] - expected).max() < 1e-4
    record = json.loads((folder / "imseg.json").read_text())
    assert record["classes"] == ["building:other", "highway:other"] and record["task"] == "multilabel"
    again = run_main("imseg.export", "--model", path, "--format", "saved_model", "--output", str(folder))
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    assert sorted(os.listdir(folder)) == ["best.onnx", "imseg.json"]
    replaced = run_main(
        "imseg.export", "--model", path, "--format", "saved_model", "--output", str(folder), "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "best.onnx" not in os.listdir(folder) and "saved_model.pb" in os.listdir(folder)
    served = tf.saved_model.load(str(folder))
    assert np.abs(served.serve(images).numpy() - model.predict(images, verbose=0)).max() < 1e-4
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging folder left
