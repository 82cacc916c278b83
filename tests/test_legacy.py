"""Model files written by an earlier imseg (tests/data/legacy) load and predict what they predicted then."""

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO

LEGACY = os.path.join(REPO, "tests", "data", "legacy")
MODELS = ("multiclass_auto", "multilabel_mobilenetv3")


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(os.path.join(LEGACY, "expected.npz")))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_an_earlier_best_keras_predicts_what_it_predicted_then(name, expected):
    from imseg.checkpoints import load_trained_model, read_metadata
    from imseg.predict import masks_from_logits, predict_image

    path = os.path.join(LEGACY, f"{name}.keras")
    model = load_trained_model(path)
    np.testing.assert_allclose(model.predict(expected["images"], verbose=0), expected[f"{name}_logits"], atol=1e-5)
    logits = predict_image(model, expected["scene"], output="logits")
    np.testing.assert_allclose(logits, expected[f"{name}_scene"], atol=1e-5)
    task = read_metadata(path)["task"]
    np.testing.assert_array_equal(
        predict_image(model, expected["scene"], output="masks", task=task),
        masks_from_logits(expected[f"{name}_scene"], task),
    )


@pytest.mark.slow
def test_every_earlier_best_keras_loads_in_a_python_that_never_imports_imseg(tmp_path):
    code = (  # one Python for all of them: its start is most of the time
        "import os, sys, keras, numpy as np\n"
        f"x = np.load({os.path.join(LEGACY, 'expected.npz')!r})\n"
        f"for name in {MODELS!r}:\n"
        f"    m = keras.models.load_model(os.path.join({LEGACY!r}, name + '.keras'))\n"
        "    np.testing.assert_allclose(m.predict(x['images'], verbose=0), x[name + '_logits'], atol=1e-5)\n"
        "    print(name, 'same')\n"
        "assert not [n for n in sys.modules if n.startswith('imseg')]\n"
    )
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.endswith(" same")] == [f"{n} same" for n in MODELS]
