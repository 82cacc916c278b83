"""Test set-up: two logical CPU devices (for MirroredStrategy tests) before TensorFlow starts."""

import os

import pytest

from imseg.tfenv import import_tensorflow

tf = import_tensorflow()  # as the command-line tools import it: quiet, oneDNN kernels on

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
SHARED_RUNS = ("trained", "multiclass")  # session fixtures below, each trained once


@pytest.fixture(scope="session")
def trained(tmp_path_factory, pytestconfig):
    """The README example config on a narrow backbone, trained for one epoch on a tiny AIR dataset (40 px images,
    model 32 px).

    Returns (data_path, classes_path, run folder, the finished imseg-train process).
    """
    from helpers import LIGHT, RUN, SEED_CONFIG, SMALL, run_module, write_air_dataset

    _check_groups(pytestconfig)

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


@pytest.fixture(scope="session")
def multiclass(tmp_path_factory, pytestconfig):
    """A two-epoch multiclass run (background, a 3-pixel ignored border, exclusive building and road labels) with
    three validation tiles in TensorBoard.

    Returns (the imseg-train arguments, run folder).
    """
    import json

    from helpers import run_module, write_air_dataset

    _check_groups(pytestconfig)
    root = tmp_path_factory.mktemp("multiclass")
    data_path, classes_path = write_air_dataset(str(root / "d"), classes={"building": ["other"], "road": ["other"]},
                                                counts=(8, 4, 1), size=(32, 32), exclusive=True, ignore=3)  # fmt: skip
    config = root / "multi.json"
    config.write_text(json.dumps({
        "name": "multi", "backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35},
        "refine_net_blocks": [["block_3_expand_relu"], ["block_1_expand_relu"]], "input_shape": [32, 32, 3],
        "task": "multiclass", "background": True, "loss": [{"name": "CrossEntropy"}, {"name": "Dice"}], "epochs": 2,
        "batch_size": 4, "mixed_precision": "none", "augment": {"rotate_range": 20, "multiplier": 0},
        "tensorboard": {"num_images": 3},
    }))  # fmt: skip
    args = ["--data_path", data_path, "--classes_path", classes_path, "--config", str(config)]
    result = run_module("imseg.train", *args)
    assert result.returncode == 0, result.stderr
    return args, os.path.join(data_path, "im_seg", "out", "multi")


def _check_groups(config):
    if config.stash.get(GROUPS_LOST, False):  # an error rather than a shared run trained on every worker
        pytest.fail(f"pytest-xdist ignores test groups with pytest {pytest.__version__}: pip install 'pytest<9.2'",
                    pytrace=False)  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`), the tests of one shared run share one worker, so that the run is
    trained once, not once per worker. Checked, because a pytest that pytest-xdist does not know drops the groups
    without a word (pytest 9.2 with pytest-xdist 3.8)."""
    # Slow tests first, so that the quick ones fill the workers' last minutes instead of one slow test alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:  # before pytest-xdist's own hook reads the groups
        for run in SHARED_RUNS:
            if run in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(run))
    result = yield
    grouped = [item for item in items if item.get_closest_marker("xdist_group")]
    if os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup") and grouped:
        config.stash[GROUPS_LOST] = "@" not in grouped[0].nodeid
    return result
