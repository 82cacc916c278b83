"""Reliability: resuming after SIGKILL or SIGTERM, kills during checkpoint writes, and a non-finite loss."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from helpers import LIGHT, REPO, RUN, SEED_CONFIG, SMALL, files_under, run_module, write_air_dataset

pytestmark = pytest.mark.slow  # real command lines, trainings and exports

CONFIG = {
    "name": "r",
    "backbone": "MobileNetV2",
    "backbone_kwargs": {"alpha": 0.35},
    "refine_net_blocks": [["block_3_expand_relu"], ["block_1_expand_relu"]],
    "input_shape": [32, 32, 3],
    "epochs": 4,
    "batch_size": 2,
    "optimizer_kwargs": {"learning_rate": 0.003},
    "mixed_precision": "none",
    "augment": {"flip": True},
}


@pytest.fixture
def run(tmp_path):
    data_path, classes_path = write_air_dataset(
        str(tmp_path / "d"), classes={"building": ["other"]}, counts=(48, 8, 2), size=(32, 32)
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    out = os.path.join(data_path, "im_seg", "out", "r")
    return ["--data_path", data_path, "--classes_path", classes_path, "--config", str(config)], out


def start(args, driver=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    command = [sys.executable, "-c", driver, *args] if driver else [sys.executable, "-m", "imseg.train", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def state_epoch(out):
    try:
        with open(os.path.join(out, "resume", "state.json")) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):
        return 0


def wait_until(predicate, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def history(out):
    with open(os.path.join(out, "metrics", "history.csv")) as f:
        return list(csv.DictReader(f))


def best(out):
    with open(os.path.join(out, "checkpoints", "best.json")) as f:
        return json.load(f)["value"]


# Once the file argv[1] exists, the next epoch starts from a NaN head kernel (its first batch's loss is NaN); the
# best.keras of that moment is copied to argv[2].
POISONED_ON_REQUEST = """
import os, shutil, sys
import numpy as np
import imseg.callbacks as c
def on_epoch_begin(self, epoch, logs=None):
    if os.path.exists(sys.argv[1]) and not os.path.exists(sys.argv[2]):
        shutil.copy(self.filepath, sys.argv[2])
        kernel = self.model.get_layer("head").kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))
c.BestIoUCheckpoint.on_epoch_begin = on_epoch_begin
from imseg.train import main
sys.exit(main(sys.argv[3:]))
"""


def test_a_running_run_refuses_a_second_process_stops_on_a_nan_loss_and_on_sigterm_and_resumes(run, tmp_path):
    """One run interrupted in every way but SIGKILL (the test below kills one and resumes it exactly), in two
    trainings: a second imseg-train on it is refused while it trains; a loss that turns NaN stops it naming epoch
    and batch, keeping the best checkpoint and the last completed epoch; --resume goes on from there and SIGTERM
    stops it keeping its last completed epoch; one more --resume says the run is finished."""
    args, out = run
    poison, best_then = tmp_path / "poison", tmp_path / "best-then.keras"
    process = start([str(poison), str(best_then), *args, "--set", "epochs=50"], POISONED_ON_REQUEST)
    wait_until(lambda: state_epoch(out) >= 1)
    for extra in ([], ["--overwrite"], ["--resume"]):  # none may touch a run that another process trains
        second = run_module("imseg.train", *args, "--set", "epochs=50", *extra)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]  # one line
        assert f"{out}: in use by imseg-train (PID {process.pid} on host " in second.stderr
    assert process.poll() is None  # the first run was not disturbed

    poison.touch()
    process.wait(timeout=300)
    failed = state_epoch(out) + 1
    assert process.returncode == 1 and failed >= 2
    assert process.stderr.read().strip().splitlines()[-1] == (
        f"imseg-train: error: the loss became nan in epoch {failed}, batch 1; training stopped (lower the learning "
        "rate, or check the data); the best checkpoint is unchanged"
    )
    assert open(os.path.join(out, "checkpoints", "best.keras"), "rb").read() == best_then.read_bytes()

    resumed = start([*args, "--resume", "--set", "epochs=50"])  # epochs may change
    wait_until(lambda: state_epoch(out) >= failed)
    time.sleep(0.4)  # inside the next epoch
    resumed.send_signal(signal.SIGTERM)
    resumed.wait(timeout=120)
    done = state_epoch(out)
    assert resumed.returncode == 143
    assert resumed.stderr.read().strip().splitlines()[-1] == "imseg-train: stopped by SIGTERM; continue with --resume"
    log = open(os.path.join(out, "metrics", "r.log")).read()
    assert f"resuming run 'r' after epoch {failed - 1}" in log
    assert "stopped: SIGTERM; the last completed epoch is kept" in log
    assert [row["epoch"] for row in history(out)] == [str(epoch) for epoch in range(1, done + 1)]
    finished = run_module("imseg.train", *args, "--resume", "--set", f"epochs={done}")
    assert finished.returncode == 0 and f"already finished {done} epochs" in finished.stderr


def test_resume_refuses_a_missing_run(run):
    args, out = run
    result = run_module("imseg.train", *args, "--resume")
    assert result.returncode == 2
    assert result.stderr.strip() == f"imseg-train: error: {out}: nothing to resume (no run named 'r' was started there)"


def test_resume_refuses_a_changed_config(trained):
    data_path, classes_path, out, _ = trained
    before = {p: os.path.getmtime(p) for p in files_under(out)}
    args = ["--data_path", data_path, "--classes_path", classes_path, "--config", SEED_CONFIG, *SMALL, *LIGHT]
    changed = run_module(
        "imseg.train", *args, "--resume", "--set", "batch_size=8", "--set", "augment.flip=false", "--set", "epochs=5"
    )
    assert changed.returncode == 2
    assert changed.stderr.strip() == (
        f"imseg-train: error: --resume: the config of run '{RUN}' changed in augment.flip, batch_size; only epochs "
        "may change (start a new run with another name, or --overwrite)"
    )
    assert {p: os.path.getmtime(p) for p in files_under(out)} == before


RECIPE = {
    **CONFIG,
    "name": "recipe",
    "epochs": 3,
    "lr_schedule": {"name": "cosine", "warmup_epochs": 1},
    "ema": 0.9,
    "early_stopping": {"patience": 3},
    "optimizer": "AdamW",
    "gradient_clip_norm": 1.0,
    "loss": [{"name": "CrossEntropy"}, {"name": "Dice", "weight": 0.5}],
}
# Epoch 3 runs to its end and writes down what it reached; then best.keras is forced to be saved, and the process
# is killed half-way through writing it.
KILLED_WHILE_SAVING = """
import json, os, signal, sys
import keras
import imseg.callbacks as c, imseg.outputs as o
real_end, real_early = c.BestIoUCheckpoint.on_epoch_end, c.EarlyStopping.on_epoch_end
early = []
def early_end(self, epoch, logs=None):
    early[:] = [self]
    return real_early(self, epoch, logs)
def on_epoch_end(self, epoch, logs=None):
    if epoch == 2:
        figures = {k: float(v) for k, v in logs.items()}
        figures["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        with open(sys.argv[1], "w") as f:
            json.dump({"figures": figures, "early_stopping": early[0].state()}, f)
        self.best = float("-inf")
        c.save_model = save
    return real_end(self, epoch, logs)
def save(model, path, metadata=None):
    with o.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        os.truncate(tmp, os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
c.BestIoUCheckpoint.on_epoch_end, c.EarlyStopping.on_epoch_end = on_epoch_end, early_end
from imseg.train import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_run_killed_while_writing_its_checkpoint_resumes_its_schedule_ema_and_early_stopping_exactly(tmp_path):
    """SIGKILL half-way through writing best.keras at the end of epoch 3: the previous best.keras is kept intact,
    and --resume takes the run over (the kernel released its lock), removes the half-written file and redoes
    epoch 3 from the state after epoch 2, reaching exactly what the killed process had reached in it: loss,
    learning rate (warm-up, then cosine), validation on the moving average, early-stopping state."""
    data_path, classes_path = write_air_dataset(
        str(tmp_path / "d"), classes={"building": ["other"]}, counts=(12, 4, 1), size=(32, 32)
    )
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(RECIPE))
    args = ["--data_path", data_path, "--classes_path", classes_path, "--config", str(config)]
    out = os.path.join(data_path, "im_seg", "out", "recipe")
    reached = tmp_path / "reached.json"
    process = start([str(reached), *args], KILLED_WHILE_SAVING)
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL and state_epoch(out) == 2
    with open(os.path.join(out, "checkpoints", "best.json")) as f:
        assert json.load(f)["epoch"] <= 2
    best_before = best(out)
    model = keras.models.load_model(os.path.join(out, "checkpoints", "best.keras"))
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 32, 32, 1)
    assert any(".best.keras." in p for p in files_under(out))  # the half-written temporary file

    result = run_module("imseg.train", *args, "--resume")
    assert result.returncode == 0, result.stderr
    killed = json.loads(reached.read_text())
    rows = history(out)
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    for key in ("loss", "learning_rate", "val_loss", "val_mean_iou"):
        np.testing.assert_allclose(float(rows[2][key]), killed["figures"][key], rtol=1e-4, err_msg=key)
    with open(os.path.join(out, "resume", "state.json")) as f:
        assert json.load(f)["early_stopping"] == killed["early_stopping"]
    rates = [float(row["learning_rate"]) for row in rows]  # the rate after each epoch's last step:
    assert rates[0] == pytest.approx(0.003) and rates[1] > rates[2]  # warm-up done, then cosine
    assert best(out) >= best_before
    assert keras.models.load_model(os.path.join(out, "checkpoints", "best.keras")).output_shape == (None, 32, 32, 1)
    log = open(os.path.join(out, "metrics", "recipe.log")).read()
    assert "resuming run 'recipe' after epoch 2" in log
    assert [line.split()[1] for line in log.splitlines() if line.startswith("epoch ")] == ["1/3", "2/3", "3/3"]
    assert sorted(os.listdir(os.path.join(out, "resume"))) == ["epoch-0003.weights.h5", "state.json"]
    assert not any(".tmp" in p for p in files_under(out))
