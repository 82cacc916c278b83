"""The public API named in the README exists, and `import imseg` stays light."""

import os
import subprocess
import sys

import imseg


def test_public_names_resolve():
    for name in imseg.__all__:
        assert getattr(imseg, name).__name__ == name


def test_import_imseg_does_not_load_tensorflow():
    code = "import sys, imseg, imseg.config; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_readme_documents_every_public_name():
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    for name in imseg.__all__:
        assert f"`{name}" in readme or f"imseg.{name}" in readme, name


def test_the_environment_holds_one_tensorflow():
    """keras-hub's tensorflow-text requires the full `tensorflow`; installed as the README says (keras-hub without
    dependencies), the environment keeps the one TensorFlow build imseg was installed with."""
    from importlib import metadata

    builds = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tf-nightly"}
    installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    assert len(builds & installed) == 1, builds & installed


def test_tensorflow_runs_onednn_kernels_unless_the_user_turned_them_off(monkeypatch):
    """TensorFlow enables oneDNN only on AVX-512 VNNI/BF16 and AMX CPUs; imseg enables it everywhere (2-3 x faster
    training on an AVX2 CPU) and keeps a user's `TF_ENABLE_ONEDNN_OPTS=0`. This process imported TensorFlow through
    `import_tensorflow` (conftest), as the command-line tools do."""
    from tensorflow.python.util import _pywrap_util_port

    from imseg.tfenv import import_tensorflow

    assert _pywrap_util_port.IsMklEnabled() == (os.environ["TF_ENABLE_ONEDNN_OPTS"] != "0")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    import_tensorflow()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
