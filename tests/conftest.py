"""Test set-up: two logical CPU devices (for MirroredStrategy tests) before TensorFlow starts."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Each test starts from the default dtype policy (some tests set the global one themselves)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The README example config on a narrow backbone, trained for one epoch on a tiny AIR dataset (40 px images,
    model 32 px).

    Returns (data_path, classes_path, run folder, the finished imseg-train process).
    """
    from helpers import LIGHT, RUN, SEED_CONFIG, SMALL, run_module, write_air_dataset

    data_path, classes_path = write_air_dataset(str(tmp_path_factory.mktemp("air") / "d"), counts=(8, 4, 3))
    result = run_module(
        "imseg.train",
        "--data_path",
        data_path,
        "--classes_path",
        classes_path,
        "--config",
        SEED_CONFIG,
        *SMALL,
        *LIGHT,
        "--set",
        "epochs=1",
    )
    assert result.returncode == 0, result.stderr
    return data_path, classes_path, os.path.join(data_path, "im_seg", "out", RUN), result


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`--dist loadgroup`), the tests of the `trained` run share one worker, so that the run is
    trained once, not once per worker."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained"))
