"""Mapping a region: many scenes, resumable after kill -9, shared by processes, the same outputs as one process."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, run_main

pytestmark = pytest.mark.slow  # processes of imseg-infer, killed and resumed

rasterio = pytest.importorskip("rasterio")


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """Six 3-band GeoTIFF scenes side by side and a small model that finds bright pixels (with its record)."""
    import keras
    from rasterio.transform import from_origin

    from imseg.checkpoints import save_model

    root = tmp_path_factory.mktemp("region")
    (root / "scenes").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 256, (3, 400, 400)).astype(np.uint8)
        with rasterio.open(root / "scenes" / f"s{i}.tif", "w", driver="GTiff", height=400, width=400, count=3,
                           dtype="uint8", crs="EPSG:32640",
                           transform=from_origin(500_000 + 200 * i, 2_780_000, 0.5, 0.5)) as dst:  # fmt: skip
            dst.write(pixels)
    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([rng.normal(0, 0.05, (3, 3, 3, 2)).astype("float32"), np.array([-5.0, 0.0], "float32")])
    save_model(model, str(root / "m.keras"), {"classes": ["building:other", "highway:other"], "task": "multilabel"})
    return root


def arguments(region, output, *extra):
    return ["--model", region / "m.keras", "--images", region / "scenes", "--output", output, "--batch-size", "32",
            *extra]  # fmt: skip


def infer(region, output, *extra):
    """imseg-infer as a process of its own (the tests below start several at once, and kill some)."""
    return subprocess.Popen(
        [sys.executable, "-m", "imseg.infer", *map(str, arguments(region, output, *extra))],
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def outputs(folder):
    """{relative path: pixels} of every mask and overlay, and the stems of the manifest and summary."""
    found = {}
    for d, _, files in os.walk(folder):
        for f in (f for f in files if not f.startswith(".")):  # not files being written
            path = os.path.join(d, f)
            if f.endswith(".tif"):
                with rasterio.open(path) as src:
                    found[os.path.relpath(path, folder)] = (src.read(), src.read_masks(1), src.transform)
            elif f.endswith(".png"):
                found[os.path.relpath(path, folder)] = open(path, "rb").read()
    stems = sorted(json.loads(line)["stem"] for line in open(os.path.join(folder, "manifest.jsonl")))
    summary = json.load(open(os.path.join(folder, "summary.json")))
    return found, stems, sorted(summary["images"]), summary["area_m2"]


def test_two_shards_at_once_and_a_rerun_after_kill_9_give_the_outputs_of_one_process(region, tmp_path):
    one = run_main("imseg.infer", *arguments(region, tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    job = tmp_path / "job"
    first, second = infer(region, job, "--shard", "1/2"), infer(region, job, "--shard", "2/2")
    manifest = job / "manifest.jsonl"
    for _ in range(6000):  # kill the second shard as soon as the job has a finished scene
        if manifest.exists() and manifest.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert first.wait(timeout=600) == 0, first.stderr.read()
    done_before = manifest.read_text().count("\n")
    assert done_before < 6  # the killed shard left scenes undone
    undone = sorted({f"s{i}" for i in range(6)} - {json.loads(x)["stem"] for x in open(manifest)})[0]
    (job / "overlays" / f".{undone}.png.k9x2ab_q.tmp.png").write_bytes(b"half")  # as a kill mid-write leaves it
    # the job's own files as another shard writes them (the first wave refused the folder on seeing one)
    (job / ".legend.png.w7y3cd_e.tmp.png").write_bytes(b"half")
    (job / ".summary.json.p2q8rs_t.tmp").write_bytes(b"{")
    again = run_main("imseg.infer", *arguments(region, job))  # the same job again, no shard: finishes what is left
    assert again.returncode == 0, again.stderr
    assert f"{done_before} of 6 scene(s) already done" in again.stderr
    mine, theirs = outputs(tmp_path / "one"), outputs(job)
    assert mine[1] == theirs[1] == mine[2] == theirs[2] == [f"s{i}" for i in range(6)]
    assert mine[3] == theirs[3]
    assert sorted(mine[0]) == sorted(theirs[0])
    for name, value in mine[0].items():
        if name.endswith(".tif"):
            for a, b in zip(value, theirs[0][name]):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    leftovers = [f for d, _, fs in os.walk(job) for f in fs if ".tmp" in f and d != str(job)]
    assert not leftovers  # nothing half-written of a scene remains (files of the job: another shard may write them)
    with rasterio.open(job / "mosaic.vrt") as mosaic:  # the six scenes side by side, a band per class
        assert (mosaic.count, mosaic.width, mosaic.height) == (2, 6 * 400, 400)
        assert mosaic.descriptions == ("building-other", "highway-other")
        whole = mosaic.read()
    for i in range(6):
        for band, folder in enumerate(("building-other", "highway-other")):
            with rasterio.open(job / "masks" / folder / f"s{i}.tif") as scene:
                np.testing.assert_array_equal(whole[band, :, 400 * i : 400 * (i + 1)], scene.read(1))


def test_shards_take_every_nth_scene_a_changed_setting_is_refused_and_the_spec_is_checked(region, tmp_path):
    job = tmp_path / "job"
    done = run_main("imseg.infer", *arguments(region, job, "--shard", "2/3"))
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(x)["stem"] for x in open(job / "manifest.jsonl")) == ["s1", "s4"]  # scenes 2 and 5
    changed = run_main("imseg.infer", *arguments(region, job, "--threshold", "0.5"))
    assert changed.returncode == 2
    assert "holds predictions made otherwise (threshold differ)" in changed.stderr
    refused = run_main("imseg.infer", *arguments(region, job, "--shard", "4/3"))
    assert refused.returncode == 2 and "--shard" in refused.stderr
