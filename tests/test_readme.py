"""The README's examples run as written."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import REPO

pytestmark = pytest.mark.slow  # real command lines, trainings and exports


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
    check = "\nassert probabilities.shape == (300, 170, 2) and masks.shape == (300, 170, 2) and masks.dtype == bool\n"
    result = subprocess.run(
        [sys.executable, "-c", code + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
