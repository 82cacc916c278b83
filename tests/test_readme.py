"""The README's examples run as written."""

import contextlib
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import REPO

pytestmark = pytest.mark.slow  # on a trained model


def example(marker):
    text = open(os.path.join(REPO, "README.md")).read()
    match = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match, marker
    return match.group(1)


def test_predict_image_example(trained, tmp_path):
    code = example("predict_image")
    assert any(line.startswith("model = keras.models.load_model(") for line in code.splitlines())
    target = tmp_path / "demo_data" / "im_seg" / "out" / "demo" / "checkpoints"
    target.mkdir(parents=True)
    shutil.copy(os.path.join(trained[2], "checkpoints", "best.keras"), target / "best.keras")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 170, 3), dtype=np.uint8)).save(
        tmp_path / "scene.png"
    )
    found = {}
    with contextlib.chdir(tmp_path):  # in this process: a new one would first spend seconds importing TensorFlow
        exec(code, found)
    assert found["probabilities"].shape == (300, 170, 2) and found["masks"].shape == (300, 170, 2)
    assert found["masks"].dtype == bool
