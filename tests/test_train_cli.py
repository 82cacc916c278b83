"""imseg-train end to end, as a user runs it: every output of a run, and one-line errors for bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest

from helpers import LIGHT, RUN, SEED_CONFIG, SMALL, files_under, run_main, run_module, write_air_dataset

pytestmark = pytest.mark.slow  # real command lines, trainings and exports

CLASSES = ["building:other", "highway:other"]


def test_run_writes_config_checkpoint_and_logs(trained):
    _, _, out, result = trained
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["epochs"] == 1 and config["pretrained"] is False and config["input_shape"] == [32, 32, 3]
    assert config["classes"] == CLASSES and config["refine_net_kwargs"]["crp_kwargs"]["pool_size"] == 5
    with open(os.path.join(out, "checkpoints", "best.json")) as f:
        best = json.load(f)
    assert best["epoch"] == 1 and best["monitor"] == "val_iou/building:other"
    with open(os.path.join(out, "metrics", "history.csv")) as f:
        history = list(csv.DictReader(f))
    assert [row["epoch"] for row in history] == ["1"]
    assert float(history[0]["val_iou/building:other"]) == pytest.approx(best["value"], rel=1e-6)
    for kind in ("iou", "precision", "recall"):
        for name in CLASSES:
            assert f"{kind}/{name}" in history[0] and f"val_{kind}/{name}" in history[0]
    log = open(os.path.join(out, "metrics", f"{RUN}.log")).read().splitlines()
    assert log[0].startswith(f"imseg 0.1.0: run '{RUN}'") and "8 train / 4 val images" in log[0]
    assert log[1].startswith("epoch 1/1 loss=") and "val_iou/building:other=" in log[1]
    assert f"best val_iou/building:other = {best['value']:.4f} (epoch 1)" in result.stderr
    assert os.path.isfile(os.path.join(out, "checkpoints", "best.keras"))


def test_tensorboard_has_every_per_class_metric_for_train_and_validation(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = trained[2]
    for phase in ("train", "validation"):
        events = EventAccumulator(os.path.join(out, "metrics", phase))
        events.Reload()
        tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
        expected = {f"epoch_{k}/{c}" for k in ("iou", "precision", "recall") for c in CLASSES}
        assert expected | {"epoch_loss", "epoch_mean_iou"} <= tags, phase


def test_best_model_loads_without_imseg_and_predicts_logits(trained):
    out = trained[2]
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({os.path.join(out, 'checkpoints', 'best.keras')!r})\n"
        "y = m.predict(np.random.randint(0, 255, (5, 32, 32, 3)).astype('uint8'), verbose=0)\n"
        "assert not [n for n in sys.modules if n.startswith('imseg')]\n"
        "print(y.shape, y.dtype, bool((y < 0).any() or (y > 1).any()))\n"  # logits, not probabilities
    )
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "(5, 32, 32, 2) float32 True"


def test_an_existing_run_is_not_overwritten_without_asking(trained):
    data_path, classes_path, out, _ = trained
    before = {p: os.path.getmtime(p) for p in files_under(out)}
    result = run_module(
        "imseg.train",
        "--data_path",
        data_path,
        "--classes_path",
        classes_path,
        "--config",
        SEED_CONFIG,
        *SMALL,
        "--set",
        "epochs=1",
    )
    assert result.returncode == 2
    assert f"a run named '{RUN}' already exists; pass --resume to continue it, --overwrite" in result.stderr
    assert {p: os.path.getmtime(p) for p in files_under(out)} == before


@pytest.fixture
def fresh(tmp_path):
    data_path, classes_path = write_air_dataset(str(tmp_path / "d"), counts=(2, 2, 1))
    return data_path, classes_path


def write_config(tmp_path, **changes):
    with open(SEED_CONFIG) as f:
        config = json.load(f)
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize(
    "change, message, run",
    [
        ({"batchsize": 8}, "config.json: unknown key 'batchsize' (did you mean 'batch_size'?)", run_module),
        (
            {"classes": ["building:offer"]},
            "config.json: key 'classes': unknown class 'building:offer' (did you mean 'building:other'?)",
            run_module,
        ),
        (  # found by building ResNet50: in this process (the rows above check the process's stderr)
            {"refine_net_blocks": [["conv5_block3_output"]]},
            "config.json: key 'refine_net_blocks': resnet50 has no "
            "layer 'conv5_block3_output'; layers that end each "
            "resolution: conv1_relu (16x16x64), conv2_block3_out "
            "(8x8x256), conv3_block4_out (4x4x512), conv4_block6_out "
            "(2x2x1024), conv5_block3_out (1x1x2048)",
            run_main,
        ),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(fresh, tmp_path, change, message, run):
    data_path, classes_path = fresh
    result = run(
        "imseg.train",
        "--data_path",
        data_path,
        "--classes_path",
        classes_path,
        "--config",
        write_config(tmp_path, **change),
        *SMALL,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imseg-train: error: ") and message in lines[0], lines
    assert not os.path.exists(os.path.join(data_path, "im_seg", "out"))


def test_missing_data_folder_is_one_line_exit_2(tmp_path, fresh):
    _, classes_path = fresh
    result = run_module(
        "imseg.train",
        "--data_path",
        str(tmp_path / "nope"),
        "--classes_path",
        classes_path,
        "--config",
        SEED_CONFIG,
        *SMALL,
    )
    assert result.returncode == 2
    nope = tmp_path / "nope"
    assert result.stderr.strip().splitlines() == [
        f"imseg-train: error: {nope}: no im_seg folder (expected {nope}/im_seg/train, val, test)"
    ]
    assert not os.path.exists(tmp_path / "nope")


def test_a_truncated_jpeg_is_our_one_line_and_not_libjpegs_too(fresh):
    data_path, classes_path = fresh
    image = os.path.join(data_path, "im_seg", "train", "images", "1.jpg")
    data = open(image, "rb").read()
    open(image, "wb").write(data[: len(data) * 6 // 10])  # a real JPEG, cut as a broken download is
    quiet = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # imseg's own level: TensorFlow's errors show
    result = run_module("imseg.train", "--data_path", data_path, "--classes_path", classes_path, "--config",
                        SEED_CONFIG, *SMALL, env=quiet)  # fmt: skip
    assert result.returncode == 2
    said = [line for line in result.stderr.strip().splitlines() if not line.startswith("imseg: c")]  # progress
    assert said == [f"imseg-train: error: {image}: unreadable image: not a complete JPEG, PNG, BMP or GIF file"]


def test_demo_trains_in_a_fresh_folder(tmp_path):
    """On a shallower cut of its backbone (LIGHT): the demo's own network is built in tests/test_segmenter.py, and
    trains as any other; the whole demo takes minutes."""
    result = run_module("imseg.train", "--demo", "--set", "epochs=1", *LIGHT[4:], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "best val_mean_iou = " in result.stderr
    assert os.path.isfile(tmp_path / "demo_data" / "im_seg" / "out" / "demo" / "checkpoints" / "best.keras")
    assert len(os.listdir(tmp_path / "demo_data" / "im_seg" / "train" / "images")) == 256


def test_outputs_are_readable_by_others_like_any_new_file(trained):
    out = trained[2]
    for name in ("config.json", "checkpoints/best.keras", "checkpoints/best.json", "metrics/history.csv"):
        assert os.stat(os.path.join(out, name)).st_mode & 0o044 == 0o044 & ~current_umask(), name


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_read_only_dataset_trains_and_predicts_with_output_dir(tmp_path):
    """The dataset is on a read-only share: the run goes to --output-dir and the cache to IMSEG_CACHE_DIR,
    checked with real permissions (as root, the commands run without the capabilities that bypass them)."""
    import shutil

    data_path, classes_path = write_air_dataset(str(tmp_path / "d"), counts=(4, 2, 1), size=(32, 32))
    for folder, _, files in os.walk(data_path):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)
    writable = tmp_path / "w"
    writable.mkdir()
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.path.dirname(os.path.dirname(__file__)),
        "IMSEG_CACHE_DIR": str(writable / "cache"),
    }
    common = ["--data_path", data_path, "--classes_path", classes_path, "--config", SEED_CONFIG, *SMALL[:4], *LIGHT]

    def imseg(module, *args, environment=env):
        return subprocess.run(
            [*prefix, sys.executable, "-m", module, *args],
            env=environment,
            capture_output=True,
            text=True,
            cwd=str(writable),
            timeout=600,
        )

    try:
        refused = imseg("imseg.train", *common, environment={**env, "IMSEG_CACHE_DIR": ""})
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines()[-1] == (
            f"imseg-train: error: {data_path}/im_seg: output folder is not writable; pass --output-dir DIR to write "
            "the run elsewhere (DIR/<name>)"
        )
        train = imseg("imseg.train", *common, "--set", "epochs=1", "--output-dir", str(writable / "runs"))
        assert train.returncode == 0, train.stderr
        assert os.path.isfile(writable / "runs" / RUN / "checkpoints" / "best.keras")
        config = str(writable / "runs" / RUN / "config.json")
        infer = imseg(
            "imseg.infer",
            "--data-path",
            data_path,
            "--classes-path",
            classes_path,
            "--config",
            config,
            "--output-dir",
            str(writable / "runs"),
        )
        assert infer.returncode == 0, infer.stderr
        assert os.path.isfile(writable / "runs" / RUN / "preds" / "val" / "summary.json")
        refused = imseg(
            "imseg.infer",
            "--data-path",
            data_path,
            "--classes-path",
            classes_path,
            "--config",
            config,
            "--model",
            str(writable / "runs" / RUN / "checkpoints" / "best.keras"),
        )
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines()[-1] == (
            f"imseg-infer: error: {data_path}/im_seg: output folder is not writable; pass --output DIR (or "
            "--output-dir DIR, where the run folder is) to write elsewhere"
        )
        assert not os.path.exists(os.path.join(data_path, "im_seg", "out"))
    finally:
        for folder, _, _ in os.walk(data_path):
            os.chmod(folder, 0o755)


def test_tensorboard_shows_the_same_validation_tiles_each_epoch_the_confusion_matrix_and_hparams(multiclass):
    import numpy as np
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = os.path.join(multiclass[1], "metrics")
    validation = EventAccumulator(os.path.join(metrics, "validation"), size_guidance={"tensors": 0})
    validation.Reload()
    assert {"predictions", "legend", "confusion_matrix", "epoch_mean_iou"} <= set(validation.Tags()["tensors"])
    assert set(validation.PluginTagToContent("images")) == {"predictions", "legend", "confusion_matrix"}
    events = validation.Tensors("predictions")
    assert [e.step for e in events] == [0, 1]  # on the epoch axis of the scalars
    epochs = [[np.asarray(png_image(png)) for png in tf.make_ndarray(e.tensor_proto)[2:]] for e in events]
    assert [len(tiles) for tiles in epochs] == [3, 3]  # num_images: 3
    for first, second in zip(*epochs):
        assert first.shape == (32, 32 + 4 + 32, 3) == second.shape  # prediction | truth
        np.testing.assert_array_equal(first[:, 36:], second[:, 36:])  # the same tile's truth both epochs
    assert [e.step for e in validation.Tensors("confusion_matrix")] == [0, 1]
    train = EventAccumulator(os.path.join(metrics, "train"), size_guidance={"tensors": 0})
    train.Reload()
    assert "epoch_learning_rate" in train.Tags()["tensors"]
    root = EventAccumulator(metrics, size_guidance={"tensors": 0})
    root.Reload()
    assert root.PluginTagToContent("hparams")  # the run's settings for the HParams dashboard
    assert {"hparams/final_mean_iou", "hparams/best_mean_iou"} <= set(root.Tags()["tensors"])


def png_image(data):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data))
