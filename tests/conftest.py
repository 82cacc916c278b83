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


GROUPS_LOST = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, pytestconfig):
    """The README example config on a narrow backbone, trained for one epoch on a tiny AIR dataset (40 px images,
    model 32 px).

    Returns (data_path, classes_path, run folder, the finished imseg-train process).
    """
    from helpers import LIGHT, RUN, SEED_CONFIG, SMALL, run_module, write_air_dataset

    if pytestconfig.stash.get(GROUPS_LOST, False):  # an error rather than a run trained on every worker
        pytest.fail(f"pytest-xdist ignores test groups with pytest {pytest.__version__}: pip install 'pytest<9.2'",
                    pytrace=False)  # fmt: skip

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


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`), the tests of the `trained` run share one worker, so that the run is
    trained once, not once per worker. Checked, because a pytest that pytest-xdist does not know drops the groups
    without a word (pytest 9.2 with pytest-xdist 3.8)."""
    for item in items:  # before pytest-xdist's own hook reads the groups
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained"))
    result = yield
    grouped = [item for item in items if item.get_closest_marker("xdist_group")]
    if os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup") and grouped:
        config.stash[GROUPS_LOST] = not grouped[0].nodeid.endswith("@trained")
    return result
