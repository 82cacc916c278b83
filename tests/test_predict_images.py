"""imseg-infer --images into an output folder: what it adds to, what it refuses, and --threshold."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from imseg.checkpoints import save_model
from imseg.errors import ConfigError
from imseg.infer import main
from imseg.mapping import map_images
from imseg.predictor import load_predictor


@pytest.fixture
def setup(tmp_path):
    """A model that predicts class a:x where red > 128 (logit = red - 128) and never b:y; two images."""
    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([[[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]]), np.array([-128.0, -1.0])])
    path = str(tmp_path / "m.keras")
    save_model(model, path, {"classes": ["a:x", "b:y"], "task": "multilabel", "threshold": 0.0})
    red = np.zeros((40, 40, 3), np.uint8)
    red[:, :20, 0] = 200  # logit 72 on the left half, -128 on the right
    red[:, 20:, 0] = 100  # -28
    for name in ("one", "two"):
        Image.fromarray(red).save(tmp_path / f"{name}.png")
    return tmp_path, load_predictor(path)


def masks_of(folder, stem):
    return np.asarray(Image.open(folder / "masks" / "a-x" / f"{stem}.png")) > 0


def test_the_same_model_and_settings_add_to_a_folder_and_its_summary(setup):
    tmp, predictor = setup
    map_images(predictor, [str(tmp / "one.png")], str(tmp / "out"), log=lambda line: None)
    summary = map_images(predictor, [str(tmp / "two.png")], str(tmp / "out"), log=lambda line: None)
    assert sorted(summary["images"]) == ["one", "two"]
    assert sorted(json.load(open(tmp / "out" / "summary.json"))["images"]) == ["one", "two"]
    assert masks_of(tmp / "out", "two")[:, :20].all() and not masks_of(tmp / "out", "two")[:, 20:].any()


def test_a_folder_of_other_predictions_or_other_files_is_refused_and_overwrite_clears_it(setup):
    import dataclasses

    tmp, predictor = setup
    map_images(predictor, [str(tmp / "one.png")], str(tmp / "out"), log=lambda line: None)
    before = sorted(os.listdir(tmp / "out"))
    other = dataclasses.replace(predictor, threshold=-50.0)
    with pytest.raises(ConfigError, match="holds predictions made otherwise \\(threshold differ\\), which would mix"):
        map_images(other, [str(tmp / "two.png")], str(tmp / "out"), log=lambda line: None)
    assert sorted(os.listdir(tmp / "out")) == before
    summary = map_images(other, [str(tmp / "two.png")], str(tmp / "out"), log=lambda line: None, overwrite=True)
    assert list(summary["images"]) == ["two"] and not os.path.exists(tmp / "out" / "masks" / "a-x" / "one.png")
    assert masks_of(tmp / "out", "two").all()  # -28 > -50: the right half too
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="mine: folder holds other files \\(notes.txt\\) and is no imseg prediction"):
        map_images(predictor, [str(tmp / "one.png")], str(tmp / "mine"), log=lambda line: None)
    assert os.listdir(tmp / "mine") == ["notes.txt"]


def test_test_time_views_the_tiles_cannot_take_are_refused_before_anything_is_written(setup):
    import dataclasses

    tmp, predictor = setup
    inputs = keras.Input((32, 48, 3))
    oblong = dataclasses.replace(predictor, model=keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)))
    with pytest.raises(ConfigError, match="needs square tiles; this model takes 32x48 tiles: use --tta flip"):
        map_images(oblong, [str(tmp / "one.png")], str(tmp / "out"), log=lambda line: None, tta="d4")
    with pytest.raises(ConfigError, match="tta 'D4': expected one of none, flip, d4"):
        map_images(predictor, [str(tmp / "one.png")], str(tmp / "out"), log=lambda line: None, tta="D4")
    assert not os.path.exists(tmp / "out")
    summary = map_images(oblong, [str(tmp / "one.png")], str(tmp / "out"), log=lambda line: None, tta="flip")
    assert list(summary["images"]) == ["one"]


def test_threshold_on_the_command_line_is_used_and_recorded(setup, capsys):
    tmp, _ = setup
    status = main(["--model", str(tmp / "m.keras"), "--images", str(tmp / "one.png"), "--output", str(tmp / "out"),
                   "--threshold", "-50"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert json.load(open(tmp / "out" / "summary.json"))["threshold"] == -50.0
    assert masks_of(tmp / "out", "one").all()


def test_a_runs_config_predicts_without_a_classes_file_and_a_disagreeing_one_is_named(setup, monkeypatch):
    tmp, _ = setup
    monkeypatch.chdir(tmp)  # no classes.json here
    config = {"name": "r", "backbone": "MobileNetV2", "input_shape": [32, 32, 3], "classes": ["a:x", "b:y"]}
    (tmp / "config.json").write_text(json.dumps(config))
    assert load_predictor(str(tmp / "m.keras"), str(tmp / "config.json")).classes == ("a:x", "b:y")
    (tmp / "other.json").write_text(json.dumps({**config, "classes": ["b:y", "a:x"]}))
    with pytest.raises(ConfigError, match="trained on classes \\['a:x', 'b:y'\\], but .*other.json selects"):
        load_predictor(str(tmp / "m.keras"), str(tmp / "other.json"))


def test_images_come_from_files_folders_globs_and_lists_in_a_stable_order(tmp_path):
    from imseg.mapping import image_files

    (tmp_path / "a").mkdir()
    for name in ("b.tif", "a.tif", "c.png", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"")
    (tmp_path / "scenes.txt").write_text("# tonight's scenes\na/c.png\n\na/a.tif  # the first\n")
    assert image_files([str(tmp_path / "a")]) == [str(tmp_path / "a" / n) for n in ("a.tif", "b.tif", "c.png")]
    assert image_files([str(tmp_path / "a" / "*.tif")]) == [str(tmp_path / "a" / n) for n in ("a.tif", "b.tif")]
    assert image_files([str(tmp_path / "scenes.txt")]) == [str(tmp_path / "a" / "c.png"), str(tmp_path / "a" / "a.tif")]
    (tmp_path / "more.txt").write_text("a/gone.tif\nnowhere.tif\n")
    with pytest.raises(ConfigError) as e:
        image_files([str(tmp_path / "more.txt"), str(tmp_path / "x*.tif")])
    assert str(e.value) == (
        f"3 image(s) not found: {tmp_path}/a/gone.tif (listed in {tmp_path}/more.txt), {tmp_path}/nowhere.tif "
        f"(listed in {tmp_path}/more.txt), {tmp_path}/x*.tif (no file matches); nothing was predicted"
    )


def test_a_full_disk_mid_job_keeps_finished_scenes_and_the_same_command_redoes_the_rest(setup, monkeypatch):
    import imseg.outputs

    tmp, predictor = setup
    write = imseg.outputs.write_png

    def full(path, *args):
        if "two" in os.path.basename(path):
            raise OSError(28, "No space left on device", path)
        return write(path, *args)

    monkeypatch.setattr(imseg.outputs, "write_png", full)
    with pytest.raises(OSError):
        map_images(predictor, [str(tmp / "one.png"), str(tmp / "two.png")], str(tmp / "out"), log=print)
    assert [json.loads(x)["stem"] for x in open(tmp / "out" / "manifest.jsonl")] == ["one"]
    assert not [f for d, _, fs in os.walk(tmp / "out") for f in fs if f.startswith(".") and "tmp" in f]
    monkeypatch.setattr(imseg.outputs, "write_png", write)
    said = []
    summary = map_images(predictor, [str(tmp / "one.png"), str(tmp / "two.png")], str(tmp / "out"),
                             log=said.append)  # fmt: skip
    assert "imseg-infer: 1 of 2 scene(s) already done in " + str(tmp / "out") + "; going on" in said
    assert sorted(summary["images"]) == ["one", "two"] and masks_of(tmp / "out", "two")[:, :20].all()
