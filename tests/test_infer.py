"""imseg-infer: split predictions with the training's own scores, any-size images, GeoTIFF, and errors."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import SEED_CONFIG, files_under, run_main

pytestmark = pytest.mark.slow  # trainings, and the tool run on what they wrote


def infer(trained, *args, config=SEED_CONFIG):
    data_path, classes_path = trained[0], trained[1]
    return run_main("imseg.infer", "--data_path", data_path, "--classes_path", classes_path, "--config", config, *args)


@pytest.fixture(scope="module")
def config_32(trained, tmp_path_factory):
    """The seed config as it was trained (32 px, random init), written out for imseg-infer."""
    with open(os.path.join(trained[2], "config.json")) as f:
        resolved = json.load(f)
    resolved.pop("resolved")
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(resolved))
    return str(path)


@pytest.fixture(scope="module")
def val_predictions(trained, config_32):
    result = infer(trained, "--split", "val", "--save-probs", config=config_32)
    assert result.returncode == 0, result.stderr
    return os.path.join(trained[2], "preds", "val"), result


def test_split_summary_equals_the_best_epoch_of_training(trained, val_predictions):
    out, _ = val_predictions
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(trained[2], "metrics", "history.csv")) as f:
        best_epoch = list(csv.DictReader(f))[0]  # one epoch, so it is the best one
    assert summary["images"] == 4 and summary["classes"] == ["building:other", "highway:other"]
    for kind in ("iou", "precision", "recall"):
        for name in summary["classes"]:
            trained_value = float(best_epoch[f"val_{kind}/{name}"])
            if np.isnan(trained_value):  # undefined (0/0) scores are NaN in logs and null in JSON
                assert summary[kind][name] is None, (kind, name)
            else:
                assert summary[kind][name] == pytest.approx(trained_value, abs=1e-6), (kind, name)


def test_split_writes_masks_overlays_probabilities_and_per_image_metrics(val_predictions):
    out, _ = val_predictions
    for image_id in ("0", "1", "2", "3"):
        for folder in ("building-other", "highway-other"):
            mask = np.asarray(Image.open(os.path.join(out, "masks", folder, image_id + ".png")))
            assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        side_by_side = Image.open(os.path.join(out, "overlays", image_id + ".png"))
        assert side_by_side.size == (32 + 4 + 32, 32)  # prediction | truth
        probs = np.load(os.path.join(out, "probs", image_id + ".npy"))
        assert probs.dtype == np.float16 and probs.shape == (32, 32, 2) and 0 <= probs.min() <= probs.max() <= 1
        mask = np.asarray(Image.open(os.path.join(out, "masks", "building-other", image_id + ".png")))
        np.testing.assert_array_equal(mask > 0, probs[..., 0] > 0.5)
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and rows[0].keys() == {"image", "class", "iou", "precision", "recall"}
    assert os.path.isfile(os.path.join(out, "legend.png"))
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["colours"]["building:other"].startswith("#")


def test_summary_counts_match_per_image_rows(val_predictions):
    out, _ = val_predictions
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    for name, counts in summary["pixels"].items():
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        expected = tp / (tp + fp + fn) if tp + fp + fn else None
        assert summary["iou"][name] == pytest.approx(expected)


@pytest.fixture(scope="module")
def best_model(trained):
    return os.path.join(trained[2], "checkpoints", "best.keras")


def test_a_large_png_gives_masks_of_exactly_its_size(trained, config_32, best_model, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1000, 1000, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(rng.integers(0, 255, (20, 50, 3), dtype=np.uint8)).save(tmp_path / "small.jpg")
    result = run_main(
        "imseg.infer",
        "--config",
        config_32,
        "--classes_path",
        trained[1],
        "--model",
        best_model,
        "--images",
        str(tmp_path / "big.png"),
        str(tmp_path / "small.jpg"),
        "--output",
        str(tmp_path / "out"),
        "--batch-size",
        "64",
    )
    assert result.returncode == 0, result.stderr
    for name, size in (("big", (1000, 1000)), ("small", (50, 20))):
        for folder in ("building-other", "highway-other"):
            assert Image.open(tmp_path / "out" / "masks" / folder / f"{name}.png").size == size
        assert Image.open(tmp_path / "out" / "overlays" / f"{name}.png").size == size
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"]["big"]["width"] == 1000 and summary["classes"] == ["building:other", "highway:other"]
    assert "predicting big: 1764/1764 tiles" in result.stderr  # 42 x 42 tiles of 32 px, 8 px overlap


def test_geotiff_masks_keep_the_georeference(trained, config_32, best_model, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    transform = from_origin(55.27, 25.20, 0.0001, 0.0001)
    data = np.random.default_rng(1).integers(0, 255, (3, 70, 90), dtype=np.uint8)
    with rasterio.open(
        tmp_path / "scene.tif",
        "w",
        driver="GTiff",
        width=90,
        height=70,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
    ) as dst:
        dst.write(data)
    result = run_main(
        "imseg.infer",
        "--config",
        config_32,
        "--classes_path",
        trained[1],
        "--model",
        best_model,
        "--images",
        str(tmp_path / "scene.tif"),
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "out" / "masks" / "building-other" / "scene.tif") as mask:
        assert (mask.width, mask.height, mask.count) == (90, 70, 1)
        assert mask.crs.to_string() == "EPSG:4326" and mask.transform == transform
        assert set(np.unique(mask.read(1))) <= {0, 255}


def test_nodata_stays_nodata_in_the_masks(trained, config_32, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    import keras
    from rasterio.transform import from_origin

    inputs = keras.Input((32, 32, 3))  # a model that finds both classes everywhere
    keras.Model(inputs, keras.layers.Conv2D(2, 1, kernel_initializer="zeros", bias_initializer="ones")(inputs)).save(
        tmp_path / "everywhere.keras"
    )

    data = np.random.default_rng(2).integers(1, 255, (3, 40, 50), dtype=np.uint8)
    data[:, :, :10] = 0  # the scene's edge: nodata
    with rasterio.open(
        tmp_path / "scene.tif",
        "w",
        driver="GTiff",
        width=50,
        height=40,
        count=3,
        dtype="uint8",
        crs="EPSG:32640",
        transform=from_origin(300000, 2800000, 0.5, 0.5),
        nodata=0,
    ) as dst:
        dst.write(data)
    rgba = np.concatenate([data.transpose(1, 2, 0), np.full((40, 50, 1), 255, np.uint8)], axis=-1)
    rgba[30:, :, 3] = 0  # transparent rows of a PNG: no data either
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    result = run_main(
        "imseg.infer",
        "--config",
        config_32,
        "--classes_path",
        trained[1],
        "--model",
        tmp_path / "everywhere.keras",
        "--images",
        str(tmp_path / "scene.tif"),
        str(tmp_path / "cut.png"),
        "--output",
        str(tmp_path / "out"),
        "--overlap",
        "0",
    )
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "out" / "masks" / "building-other" / "scene.tif") as mask:
        valid = mask.dataset_mask() > 0
        assert not valid[:, :10].any() and valid[:, 10:].all()
        np.testing.assert_array_equal(mask.read(1) > 0, valid)
    png = np.asarray(Image.open(tmp_path / "out" / "masks" / "building-other" / "cut.png"))
    assert not png[30:].any() and png[:30].all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"]["scene"]["nodata_pixels"] == 400 and summary["images"]["cut"]["nodata_pixels"] == 500


def test_missing_model_and_class_mismatch_are_one_line_errors(trained, config_32, tmp_path):
    result = infer(trained, "--model", str(tmp_path / "none.keras"), config=config_32)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"imseg-infer: error: {tmp_path / 'none.keras'}: model file not found (train first, or pass --model)"
    ]
    wrong = json.loads(open(config_32).read())
    wrong["classes"] = ["building:other"]
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    result = infer(trained, config=str(tmp_path / "wrong.json"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "trained on classes ['building:other', 'highway:other']" in result.stderr


def test_a_file_that_is_not_a_model_and_an_unreadable_image(trained, config_32, tmp_path):
    (tmp_path / "fake.keras").write_text("not a zip")
    result = infer(trained, "--model", str(tmp_path / "fake.keras"), config=config_32)
    assert result.returncode == 2 and "fake.keras: not a Keras model file" in result.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    shutil.copy(os.path.join(trained[2], "checkpoints", "best.keras"), tmp_path / "m.keras")
    result = run_main(
        "imseg.infer",
        "--config",
        config_32,
        "--classes_path",
        trained[1],
        "--model",
        str(tmp_path / "m.keras"),
        "--images",
        str(tmp_path / "broken.png"),
        "--output",
        str(tmp_path / "o"),
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"imseg-infer: error: {tmp_path / 'broken.png'}: unreadable image")
    )
    assert not files_under(str(tmp_path / "o" / "masks"))


def test_multiclass_with_background_and_ignored_border_from_training_to_split_scores(multiclass, tmp_path):
    """task multiclass + background on exclusive labels with an ignored border: training reports what
    imseg-infer recomputes from the masks it writes (into a cleared --output), counting only valid pixels."""
    common, out = multiclass
    data_path = common[1]
    with open(os.path.join(out, "checkpoints", "best.json")) as f:
        best = json.load(f)
    assert best["classes"] == ["building:other", "road:other", "background"] and best["task"] == "multiclass"
    with open(os.path.join(out, "metrics", "history.csv")) as f:
        epoch = list(csv.DictReader(f))[best["epoch"] - 1]  # the epoch best.keras was saved in
    assert "val_pixel_accuracy" in epoch and "val_iou/background" in epoch
    preds = str(tmp_path / "preds")
    os.makedirs(preds)
    open(os.path.join(preds, "stale.png"), "w").close()  # an earlier prediction's, cleared by --overwrite
    result = run_main("imseg.infer", *common, "--split", "val", "--output", preds, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(os.path.join(out, "preds")) and not os.path.exists(os.path.join(preds, "stale.png"))
    with open(os.path.join(preds, "summary.json")) as f:
        summary = json.load(f)
    matrix = np.zeros((3, 3), np.int64)
    for i in range(4):
        with open(os.path.join(data_path, "im_seg", "val", "annotations", f"{i}.json")) as f:
            ann = json.load(f)
        labels = np.array(ann["annotation"])
        truth = np.where(labels.any(0), labels.argmax(0), 2)
        valid = np.array(ann["ignore"]) == 0
        index = np.asarray(Image.open(os.path.join(preds, "classes", f"{i}.png")))
        assert (index[~valid] == 255).all() and set(np.unique(index[valid])) <= {0, 1, 2}
        np.add.at(matrix, (truth[valid], index[valid]), 1)
        for k, folder in enumerate(("building-other", "road-other")):
            mask = np.asarray(Image.open(os.path.join(preds, "masks", folder, f"{i}.png")))
            np.testing.assert_array_equal(mask > 0, valid & (index == k))
    assert not os.path.exists(os.path.join(preds, "masks", "background"))
    assert summary["confusion_matrix"]["matrix"] == matrix.tolist()
    tp = np.diag(matrix)
    iou = tp / (matrix.sum(0) + matrix.sum(1) - tp)
    assert summary["pixel_accuracy"] == pytest.approx(tp.sum() / matrix.sum())
    assert summary["mean_iou"] == pytest.approx(np.nanmean(iou[:2]))
    assert summary["mean_iou"] == pytest.approx(float(epoch["val_mean_iou"]), abs=1e-6)
    assert float(epoch["val_pixel_accuracy"]) == pytest.approx(summary["pixel_accuracy"], abs=1e-6)


def test_a_model_file_says_what_it_predicts(trained, best_model, tmp_path):
    """best.keras carries its classes, task and threshold: moved away from its run it predicts images without
    a config, and a classes file that lacks its classes is refused."""
    from imseg.checkpoints import read_metadata

    record = read_metadata(best_model)
    assert record["classes"] == ["building:other", "highway:other"] and record["task"] == "multilabel"
    assert record["threshold"] == 0.0 and record["epoch"] == 1
    moved = tmp_path / "elsewhere.keras"
    shutil.copy(best_model, moved)
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    result = run_main("imseg.infer", "--model", moved, "--images", tmp_path / "a.png", "--output", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["classes"] == record["classes"] and summary["model"] == str(moved)
    (tmp_path / "other.json").write_text(json.dumps({"building": ["other"], "water": ["lake"]}))
    refused = run_main(
        "imseg.infer",
        "--model",
        moved,
        "--classes-path",
        tmp_path / "other.json",
        "--images",
        tmp_path / "a.png",
        "--output",
        tmp_path / "o2",
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"imseg-infer: error: {moved}: trained on classes ['building:other', 'highway:other'], but "
        f"{tmp_path / 'other.json'} lacks highway:other"
    ]
    assert not os.path.exists(tmp_path / "o2")
