"""The benchmark harness's own arithmetic (spreads over repeats, the Markdown table of a saved run) and how its
drivers run and stop their trainings."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_run", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "run.py")
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
_spec = importlib.util.spec_from_file_location(
    "bench_decoders", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "decoders.py")
)
decoders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decoders)
DUBAI_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "dubai_aerial.yaml")


@pytest.mark.parametrize(
    "values, expected",
    [
        ([10.0, 9.5, 10.4], {"min": 9.5, "median": 10.0, "max": 10.4, "repeats": 3, "within_10pct": True}),
        ([10.0, 8.9, 10.2], {"min": 8.9, "median": 10.0, "max": 10.2, "repeats": 3, "within_10pct": False}),
    ],
)
def test_spread_is_min_median_max_and_flags_repeats_more_than_10_percent_apart(values, expected):
    assert bench.spread(values) == expected


def test_table_puts_spread_targets_and_context_in_columns(tmp_path, capsys):
    lines = [
        {"metric": "context", "value": 0.0, "unit": "", "machine": "x86_64", "cpus": 2},
        {"metric": "data.cached_images_per_s", "value": 2801.9, "unit": "images/s", "batch": 8, "target": 2000,
         "spread": bench.spread([2790.0, 2801.9, 3090.0])},
        {"metric": "train.bf16_over_f32", "value": 1.41, "unit": "x", "anchor_probe": 1.7, "note": "not shown"},
    ]  # fmt: skip
    path = tmp_path / "run.jsonl"
    path.write_text("warning: a stray line\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    bench.table(str(path))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run: machine x86_64, cpus 2"
    assert out[-2] == "| `data.cached_images_per_s` | 2801.9 | images/s | 2790.0 / 2801.9 / 3090.0 (3) **> 10 %** " \
                      "| target 2000 | batch 8 |"  # fmt: skip
    assert out[-1] == "| `train.bf16_over_f32` | 1.41 | x |  | anchor_probe 1.7 |  |"


@pytest.mark.parametrize("content", [None, '{"metric": "x", "value": 1\n'])
def test_table_of_a_missing_or_broken_file_is_one_line_and_status_2(tmp_path, content):
    path = tmp_path / "run.jsonl"
    if content is not None:
        path.write_text(content)
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "run.py")
    done = subprocess.run([sys.executable, script, "--table", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith(f"run.py: error: --table {path}: ")


def test_the_decoder_table_counts_a_networks_parameters_not_its_moving_averages():
    # configs/dubai_aerial.yaml's network: 1.15 M parameters, 0.738 GFLOPs per 128-px image (docs/results.md)
    sets = decoders.overrides("RefineNet:MobileNetV2:AIR", 0, 9, [])
    expected = decoders.model_figures(DUBAI_CONFIG, sets)
    assert expected[0] == 1151841 and round(expected[1], 3) == 0.738
    assert decoders.model_figures(DUBAI_CONFIG, [*sets, "ema=0.999"]) == expected


def test_the_decoder_table_reads_a_finished_run_again_and_trains_a_changed_one(tmp_path, monkeypatch):
    """benchmarks/decoders.py run again goes on where it stopped: a run folder of exactly the asked config, trained
    and scored, is read, not trained again; any other config is trained (hours each on a CPU)."""
    from imseg.config import load_config

    config = DUBAI_CONFIG
    sets = decoders.overrides("FPN:MobileNetV2", 0, 6, [])
    assert 'name="FPN-MobileNetV2-s0"' in sets
    other = decoders.overrides("FPN:MobileNetV2", 0, 8, ["batch_size=8"])  # another run: its own folder
    assert any(s.startswith('name="FPN-MobileNetV2-s0-e8-') for s in other) and other[-1] == "batch_size=8"

    folder = tmp_path / "FPN-MobileNetV2-s0"
    (folder / "metrics").mkdir(parents=True)
    (folder / "test").mkdir()
    saved = {**load_config(config, sets).to_dict(), "classes": ["a:b"], "resolved": {"replicas": 1}}
    (folder / "config.json").write_text(json.dumps(saved))
    (folder / "metrics" / "history.csv").write_text("epoch,val_mean_iou,seconds\n1,0.5,50\n2,0.6,70\n")
    (folder / "test" / "summary.json").write_text(json.dumps({"mean_iou": 0.7, "iou": {"a:b": 0.7}}))
    images = tmp_path / "data" / "im_seg" / "train" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"t{i}.jpg").touch()
    calls = []
    monkeypatch.setattr(decoders.subprocess, "run", lambda command, **_: calls.append(command[2]))
    expected = {"test_mean_iou": 0.7, "test_per_class": {"a:b": 0.7}, "val_mean_iou_per_epoch": [0.5, 0.6],
                "minutes": 2.0, "train_images_per_s": 0.05}  # fmt: skip
    data = str(tmp_path / "data")
    assert decoders.train_and_score(data, config, "FPN:MobileNetV2", sets, str(tmp_path)) == expected
    assert calls == []
    assert decoders.finished(str(folder), config, sets)
    history = (folder / "metrics" / "history.csv").read_text()
    (folder / "metrics" / "history.csv").write_text("epoch,val_mean_iou,seconds\n")  # no epoch recorded
    assert not decoders.finished(str(folder), config, sets)
    (folder / "metrics" / "history.csv").write_text(history)
    changed = [*sets, "batch_size=8"]  # the same folder, another config: trained and scored again
    assert decoders.train_and_score(data, config, "FPN:MobileNetV2", changed, str(tmp_path)) == expected
    assert calls == ["imseg.train", "imseg.infer"]


def test_a_driver_stopped_by_sigterm_stops_the_training_it_runs(tmp_path):
    """`timeout` or `kill` on a benchmark driver (benchmarks/decoders.py) must not leave its training running alone
    (seen: a timed-out table run's training went on, holding the CPU and its run folder)."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    driver = tmp_path / "driver.py"
    driver.write_text(
        f"import subprocess, sys\nsys.path.insert(0, {os.path.dirname(_spec.origin)!r})\n"
        "from run import end_children_on_sigterm\nend_children_on_sigterm()\n"
        f"subprocess.run([sys.executable, '-c', {child!r}])\n"
    )

    def started():
        return pid_file.exists() and pid_file.read_text()

    parent = subprocess.Popen([sys.executable, str(driver)])
    try:
        deadline = time.monotonic() + 60
        while parent.poll() is None and not started() and time.monotonic() < deadline:
            time.sleep(0.1)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
    finally:
        parent.kill()
        if started():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_peer_reads_a_split_as_images_0_255_channels_first_its_annotations_and_the_unignored_pixels(tmp_path):
    """benchmarks/peer_smp.py trains PyTorch's channels-first layout from imseg's own files (needs no PyTorch)."""
    import numpy as np
    from PIL import Image

    from imseg.annotations import write_annotation

    spec = importlib.util.spec_from_file_location(
        "bench_peer", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "peer_smp.py")
    )
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    split = tmp_path / "im_seg" / "val"
    (split / "images").mkdir(parents=True)
    (split / "annotations").mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    annotation = np.zeros((2, 3, 4, 5), np.uint8)
    annotation[0, 1], annotation[1, 2, :2] = 1, 1
    ignore = np.zeros((2, 4, 5), np.uint8)
    ignore[1, 3] = 1
    for i in range(2):
        Image.fromarray(pixels[i]).save(split / "images" / f"{i}.png")
        write_annotation(str(split / "annotations" / f"{i}.npz"), annotation[i], f"{i}.png", ignore[i])
    images, annotations, valid = peer.load(str(tmp_path), "val")
    np.testing.assert_array_equal(images, pixels.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(annotations, annotation)
    np.testing.assert_array_equal(valid, (ignore == 0)[:, None])
