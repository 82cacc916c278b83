"""imseg-train end to end, as a user runs it: every output of a run, and one-line errors for bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest

from helpers import SEED_CONFIG, files_under, run_module, write_air_dataset

from helpers import RUN, SMALL

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
        "print(y.shape, y.dtype, float(y.min()) < 0 < float(y.max()))\n"
    )
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "(5, 32, 32, 2) float32 True"


def test_an_existing_run_is_not_overwritten_without_asking(trained):
    data_path, classes_path, out, _ = trained
    before = {p: os.path.getmtime(p) for p in files_under(out)}
    result = run_module("imseg.train", "--data_path", data_path, "--classes_path", classes_path,
                        "--config", SEED_CONFIG, *SMALL, "--set", "epochs=1")
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
    "change, message",
    [
        ({"batchsize": 8}, "config.json: unknown key 'batchsize' (did you mean 'batch_size'?)"),
        ({"classes": ["building:offer"]}, "config.json: key 'classes': unknown class 'building:offer' "
                                          "(did you mean 'building:other'?)"),
        ({"refine_net_blocks": [["conv5_block3_output"]]}, "config.json: key 'refine_net_blocks': resnet50 has no "
                                                           "layer 'conv5_block3_output'; layers that end each "
                                                           "resolution: conv1_relu (16x16x64), conv2_block3_out "
                                                           "(8x8x256), conv3_block4_out (4x4x512), conv4_block6_out "
                                                           "(2x2x1024), conv5_block3_out (1x1x2048)"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(fresh, tmp_path, change, message):
    data_path, classes_path = fresh
    result = run_module("imseg.train", "--data_path", data_path, "--classes_path", classes_path,
                        "--config", write_config(tmp_path, **change), *SMALL)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imseg-train: error: ") and message in lines[0], lines
    assert not os.path.exists(os.path.join(data_path, "im_seg", "out"))


def test_missing_data_folder_is_one_line_exit_2(tmp_path, fresh):
    _, classes_path = fresh
    result = run_module("imseg.train", "--data_path", str(tmp_path / "nope"), "--classes_path", classes_path,
                        "--config", SEED_CONFIG, *SMALL)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"imseg-train: error: {tmp_path / 'nope'}: no im_seg folder (expected {tmp_path / 'nope'}/im_seg/train, val, test)"
    ]
    assert not os.path.exists(tmp_path / "nope")


def test_demo_trains_in_a_fresh_folder(tmp_path):
    result = run_module("imseg.train", "--demo", "--set", "epochs=1", cwd=str(tmp_path))
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
