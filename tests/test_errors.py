"""Every row of docs/errors.md: the exact message, the exit status, and that nothing was written."""

import json
import os

import keras
import numpy as np
import pytest

from helpers import REPO, write_air_dataset, write_features

BASE = {
    "name": "e",
    "backbone": "MobileNetV2",
    "backbone_kwargs": {"alpha": 0.35},
    "refine_net_blocks": [["block_6_expand_relu"], ["block_3_expand_relu"]],
    "input_shape": [32, 32, 3],
    "epochs": 1,
    "batch_size": 2,
    "mixed_precision": "none",
}
RESNET = {
    "backbone": "ResNet50",
    "backbone_kwargs": {},
    "refine_net_blocks": [["conv5_block3_out", "conv4_block6_out"], ["conv3_block4_out"]],
}


def rows():
    text = open(os.path.join(REPO, "docs", "errors.md")).read()
    table = text.split("| id | bad input | message | exit |")[1].split("\n\n")[0]
    found = []
    for line in table.strip().splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        found.append((cells[0], cells[2].strip("`"), int(cells[3])))
    return found


class Case:
    """A small valid dataset, classes file and config that each scenario breaks in one way."""

    def __init__(self, root):
        self.D, self.C = write_air_dataset(
            os.path.join(root, "d"),
            classes={"building": ["other"], "highway": ["other"]},
            counts=(4, 2, 2),
            size=(32, 32),
        )
        self.F = os.path.join(root, "config.json")
        self.T = os.path.join(root, "other")
        self.config = dict(BASE)
        self.extra = []
        self.program = "train"
        self.command = None  # the whole argument list, for imseg-export and imseg-data

    def write_config(self, text=None):
        with open(self.F, "w") as f:
            f.write(text if text is not None else json.dumps(self.config))

    def argv(self):
        if self.command is not None:
            return self.command
        if self.program == "infer":
            return ["--config", self.F, "--classes_path", self.C, "--data_path", self.D, *self.extra]
        return ["--data_path", self.D, "--classes_path", self.C, "--config", self.F, *self.extra]

    def annotation(self, split, i, array, ignore=None):
        data = {"annotation": np.asarray(array).astype(int).tolist(), "img": f"{i}.jpg"}
        if ignore is not None:
            data["ignore"] = np.asarray(ignore).astype(int).tolist()
        with open(os.path.join(self.D, "im_seg", split, "annotations", f"{i}.json"), "w") as f:
            json.dump(data, f)

    def existing_run(self):
        from imseg.config import config_from_dict

        os.makedirs(os.path.join(self.D, "im_seg", "out", "e"))
        resolved = {**config_from_dict(self.config).to_dict(), "classes": ["building:other", "highway:other"]}
        with open(os.path.join(self.D, "im_seg", "out", "e", "config.json"), "w") as f:
            json.dump(resolved, f)


def hold_lock(folder, program="imseg-train"):
    """Another process's lock on `folder`, as FolderLock takes it (a second open file description conflicts
    with it even within this process)."""
    from imseg.outputs import FolderLock

    HELD.append(FolderLock(folder, program).acquire())


HELD = []


def disk_full_for(part, write):
    """`write`, except that writing a path containing `part` fails as on a full disk."""

    def full(path, *args, **kwargs):
        if part in path:
            raise OSError(28, "No space left on device", path)
        return write(path, *args, **kwargs)

    return full


def other_prediction(c):
    """A manifest record of a scene predicted by another model, with the settings infer_with_model's run has."""
    return {"stem": "0", "status": "done", "classes": ["building:other", "highway:other"], "task": "multilabel",
            "threshold": 0.0, "overlap": 0.25, "tta": "none", "model": "/elsewhere/best.keras",
            "model_sha256": "0" * 64, "save_probs": False, "vectorize": False, "output_grid": "scene",
            "truth": []}  # fmt: skip


def infer_with_model(c, *extra, shape=(32, 32, 3)):
    c.program = "infer"
    c.T = c.T + ".keras"
    tiny_model(c.T, 2, shape)
    c.extra.extend(["--model", c.T, *extra])


def images_folder(c, sizes, names=None, mode="RGB"):
    """Source images and colour masks for imseg-data convert under {T}; returns the argument list."""
    from PIL import Image

    os.makedirs(os.path.join(c.T, "images"))
    os.makedirs(os.path.join(c.T, "masks"))
    for i, (h, w) in enumerate(sizes):
        name = (names or [f"s{i}.png" for _ in sizes])[i]
        stem = os.path.splitext(name)[0]
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(os.path.join(c.T, "images", name))
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(os.path.join(c.T, "masks", stem + ".png"))
    with open(os.path.join(c.T, "map.json"), "w") as f:
        json.dump({"#000000": "building"}, f)
    c.program = "data"
    c.command = [
        "convert",
        "--images",
        os.path.join(c.T, "images"),
        "--masks",
        os.path.join(c.T, "masks"),
        "--mask-type",
        "color",
        "--class-map",
        os.path.join(c.T, "map.json"),
        "--tile-size",
        "16",
        "--output",
        os.path.join(c.T, "out"),
    ]
    return c.command


def geo_convert(c, *vectors, crs="EPSG:32640", far=False):
    """A 4-band GeoTIFF scene under {T}/scenes with building/road GeoJSON beside it (or far away); the
    convert command with `vectors` (default: both files) as --vectors arguments."""
    from rasterio.transform import from_origin

    from helpers import PIXEL, write_scene, write_vectors

    os.makedirs(os.path.join(c.T, "scenes"))
    transform = write_scene(os.path.join(c.T, "scenes", "s0.tif"), crs=crs)
    origin = (200_000.0, 1_000_000.0) if far else (500_000.0, 2_780_000.0)
    write_vectors(c.T, from_origin(*origin, PIXEL, PIXEL) if far else transform)
    given = vectors or (f"building={c.T}/building.geojson", f"road={c.T}/road.geojson")
    c.program = "data"
    c.command = ["convert", "--images", os.path.join(c.T, "scenes"), "--tile-size", "64", "--split", "1", "0", "0",
                 "--output", os.path.join(c.T, "out")] + [a for v in given for a in ("--vectors", v)]  # fmt: skip
    return c.command


def osm_convert(c, osm_name="map.osm", classes=None, *extra):
    """geo_convert's scene with OSM data (osm_name under {T}, written as OSM XML unless the test replaces it) and
    a classes.json of tag filters; the convert command with --osm."""
    import test_osm

    from helpers import write_scene

    os.makedirs(os.path.join(c.T, "scenes"))
    transform = write_scene(os.path.join(c.T, "scenes", "s0.tif"))
    if osm_name.endswith((".osm", ".pbf")):
        test_osm.write_osm(os.path.join(c.T, osm_name), transform)
    with open(os.path.join(c.T, "classes.json"), "w") as f:
        json.dump(classes or {"building": ["other"], "highway": ["other"]}, f)
    c.program = "data"
    c.command = ["convert", "--images", os.path.join(c.T, "scenes"), "--tile-size", "64", "--split", "1", "0", "0",
                 "--output", os.path.join(c.T, "out"), "--osm", os.path.join(c.T, osm_name), "--classes-path",
                 os.path.join(c.T, "classes.json"), *extra]  # fmt: skip
    return c.command


def merge_jobs(c, second_sha, *extra, classes=("highway:other",)):
    """Two mapping jobs under {T} (the second by another model when `second_sha`); the merge command over both."""
    import test_merge

    mask = np.ones((8, 8), np.uint8)
    test_merge.job(os.path.join(c.T, "a"), {"s": ((500_000.0, 2_780_000.0), mask)}, classes=classes)
    test_merge.job(os.path.join(c.T, "b"), {"t": ((500_000.0, 2_780_000.0), mask)}, classes=classes,
                   sha=second_sha or "a" * 64)  # fmt: skip
    c.program = "data"
    c.command = ["merge", os.path.join(c.T, "a"), os.path.join(c.T, "b"), "--output", c.T + ".gpkg", *extra]
    return c.command


def road_elsewhere(c):
    """Replace geo_convert's road.geojson with roads 300 km away (the buildings still overlap the scene)."""
    from rasterio.transform import from_origin

    from helpers import PIXEL, write_vectors

    os.makedirs(os.path.join(c.T, "far"))
    far = write_vectors(os.path.join(c.T, "far"), from_origin(200_000.0, 1_000_000.0, PIXEL, PIXEL))
    os.replace(far["road"], os.path.join(c.T, "road.geojson"))


def geo_infer(c, *extra, crs="EPSG:32640"):
    """imseg-infer --images on a 4-band scene with a 4-band model."""
    from helpers import write_scene

    os.makedirs(c.T)
    write_scene(os.path.join(c.T, "s0.tif"), crs=crs)
    inputs = keras.Input((32, 32, 4))
    keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)).save(os.path.join(c.T, "m.keras"))
    c.program = "infer"
    c.command = ["--model", os.path.join(c.T, "m.keras"), "--config", c.F, "--classes-path", c.C, "--images",
                 os.path.join(c.T, "s0.tif"), "--output", os.path.join(c.T, "out"), *extra]  # fmt: skip
    c.config.update(input_shape=[32, 32, 4], normalization="auto")


def png16(path, shape=(32, 32)):
    from PIL import Image

    Image.fromarray(np.full(shape, 1000, np.uint16)).save(path)


def offline(monkeypatch):
    from keras.src.utils import file_utils

    def fail(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(file_utils, "get_file", fail)


def pyramid_decoder(c, decoder, **changes):
    """A decoder that reads the backbone's pyramid (refine_net_blocks are RefineNet's)."""
    c.config.pop("refine_net_blocks")
    c.config.update(type=decoder, **changes)


def tiny_model(path, classes, shape=(32, 32, 3)):
    inputs = keras.Input(shape)
    keras.Model(inputs, keras.layers.Conv2D(classes, 1)(inputs)).save(path)


SCENARIOS = {
    "json-syntax": lambda c, m: c.write_config('{"name": "x",\n "epochs": ,}'),
    "yaml-syntax": lambda c, m: (
        setattr(c, "F", c.F.replace(".json", ".yaml")),
        c.write_config("name: [x\nepochs: 3\n"),
    ),
    "config-missing": lambda c, m: setattr(c, "F", c.T + ".json"),
    "type": lambda c, m: c.config.update(batch_size="16"),
    "range": lambda c, m: c.config.update(epochs=0),
    "shape": lambda c, m: c.config.update(input_shape=[224, 224]),
    "negative": lambda c, m: c.config.update(augment={"rotate_range": -5}),
    "unknown-key": lambda c, m: c.config.update(batchsize=8),
    "unknown-nested-key": lambda c, m: c.config.update(augment={"flips": True}),
    "set-syntax": lambda c, m: c.extra.extend(["--set", "nothing"]),
    "set-value": lambda c, m: c.extra.extend(["--set", "epochs=0"]),
    "loss": lambda c, m: c.config.update(loss="BinaryCrossEntropy"),
    "optimizer": lambda c, m: c.config.update(optimizer="Adamm"),
    "backbone": lambda c, m: c.config.update(backbone="ResNet51"),
    "backbone-kwargs": lambda c, m: c.config.update(backbone_kwargs={"alfa": 0.35}),
    "weights-file": lambda c, m: c.config.update(pretrained=True, backbone_kwargs={"weights": c.T}),
    "offline-weights": lambda c, m: (c.config.update(pretrained=True), offline(m)),
    "classes-missing": lambda c, m: setattr(c, "C", c.T + ".json"),
    "classes-format": lambda c, m: open(c.C, "w").write('["building"]'),
    "class": lambda c, m: c.config.update(classes=["building:offer"]),
    "benchmark-class": lambda c, m: c.config.update(classes=["building:other"], benchmark_class="highway:other"),
    "layer": lambda c, m: c.config.update(RESNET, refine_net_blocks=[["conv5_block3_output"]]),
    "layer-order": lambda c, m: c.config.update(RESNET, refine_net_blocks=[["conv4_block6_out"], ["conv5_block3_out"]]),
    "input-too-small": lambda c, m: c.config.update(RESNET, input_shape=[16, 16, 3]),
    "decoder-unknown": lambda c, m: c.config.update(type="RefineNetCascad"),
    "decoder-option": lambda c, m: pyramid_decoder(c, "FPN", decoder_kwargs={"channels": 64}),
    "decoder-value": lambda c, m: pyramid_decoder(c, "FPN", decoder_kwargs={"groups": 5}),
    "blocks-for-decoder": lambda c, m: c.config.update(type="FPN"),
    "refine-net-kwargs-for-decoder": lambda c, m: pyramid_decoder(
        c, "LightWeightRefineNet", refine_net_kwargs={"reduce_channel_scale": 2}
    ),
    "decoder-kwargs-for-refinenet": lambda c, m: c.config.update(decoder_kwargs={"filters": 8}),
    "pyramid-missing": lambda c, m: pyramid_decoder(
        c, "FPN", backbone="InceptionV3", backbone_kwargs={}, input_shape=[96, 96, 3]
    ),  # fmt: skip
    "keras-hub-missing": lambda c, m: (
        m.setitem(__import__("sys").modules, "keras_hub", None),
        pyramid_decoder(c, "FPN", backbone="keras_hub:resnet_50_imagenet", backbone_kwargs={}),
    ),
    "keras-hub-preset": lambda c, m: (
        pytest.importorskip("keras_hub"),
        pyramid_decoder(c, "FPN", backbone=f"keras_hub:{c.T}", backbone_kwargs={}),
    ),
    "plugin-missing": lambda c, m: m.setenv("IMSEG_PLUGINS", "no_such_module"),
    "name-path": lambda c, m: c.config.update(name="../x"),
    "name-empty": lambda c, m: c.config.update(name=""),
    "data-missing": lambda c, m: setattr(c, "D", c.T),
    "split-empty": lambda c, m: [
        os.remove(os.path.join(c.D, "im_seg", "val", sub, f))
        for sub in ("images", "annotations")
        for f in os.listdir(os.path.join(c.D, "im_seg", "val", sub))
    ],
    "no-annotation": lambda c, m: os.remove(os.path.join(c.D, "im_seg/train/annotations/3.json")),
    "no-image": lambda c, m: os.remove(os.path.join(c.D, "im_seg/train/images/3.jpg")),
    "channels": lambda c, m: c.annotation("val", 1, np.zeros((4, 32, 32), int)),
    "size": lambda c, m: c.annotation("train", 1, np.zeros((2, 32, 31), int)),
    "values": lambda c, m: c.annotation("train", 1, np.full((2, 32, 32), 2)),
    "bad-json": lambda c, m: open(os.path.join(c.D, "im_seg/train/annotations/1.json"), "w").write(
        '{"annotation": [[['
    ),
    "bad-image": lambda c, m: open(os.path.join(c.D, "im_seg/train/images/1.jpg"), "wb").write(
        b"\xff\xd8\xff\xe0trunc"
    ),
    "unwritable": lambda c, m: open(os.path.join(c.D, "im_seg", "out"), "w").close(),
    "infer-unwritable": lambda c, m: (  # a valid model: refused before it is loaded
        setattr(c, "program", "infer"),
        open(os.path.join(c.D, "im_seg", "out"), "w").close(),
        setattr(c, "T", c.T + ".keras"),
        tiny_model(c.T, 2),
        c.extra.extend(["--model", c.T]),
    ),
    "run-exists": lambda c, m: c.existing_run(),
    "resume-nothing": lambda c, m: c.extra.append("--resume"),
    "resume-changed": lambda c, m: (c.existing_run(), c.extra.extend(["--resume", "--set", "batch_size=4"])),
    "model-missing": lambda c, m: (setattr(c, "program", "infer"), c.extra.extend(["--model", c.T])),
    "model-invalid": lambda c, m: (
        setattr(c, "program", "infer"),
        open(c.T, "w").write("no model"),
        c.extra.extend(["--model", c.T]),
    ),
    "model-classes": lambda c, m: (
        setattr(c, "program", "infer"),
        c.config.update(classes=["building:other"]),
        setattr(c, "T", c.T + ".keras"),
        tiny_model(c.T, 2),
        c.extra.extend(["--model", c.T]),
    ),
    "task": lambda c, m: c.config.update(task="multi"),
    "background-multilabel": lambda c, m: c.config.update(background=True),
    "loss-task": lambda c, m: c.config.update(task="multiclass", loss="BinaryCrossentropy"),
    "loss-list": lambda c, m: c.config.update(loss=[{"name": "CrossEntropy"}, {"weight": 1.0}]),
    "loss-list-kwargs": lambda c, m: c.config.update(loss=[{"name": "Dice"}], loss_kwargs={"smooth": 2}),
    "loss-argument": lambda c, m: c.config.update(loss="Dice", loss_kwargs={"smooth": -1}),
    "from-logits": lambda c, m: c.config.update(loss_kwargs={"from_logits": False}),
    "class-weights": lambda c, m: c.config.update(loss_kwargs={"class_weights": [1, 2, 3]}),
    "schedule": lambda c, m: c.config.update(lr_schedule={"name": "cosin"}),
    "warmup-both": lambda c, m: c.config.update(lr_schedule={"warmup_epochs": 1, "warmup_steps": 10}),
    "learning-rate": lambda c, m: c.config.update(optimizer_kwargs={"learning_rate": -0.001}),
    "class-weights-zero": lambda c, m: c.config.update(loss="CrossEntropy", loss_kwargs={"class_weights": [0, 0]}),
    "tversky-zero": lambda c, m: c.config.update(loss=[{"name": "Tversky", "alpha": 0, "beta": 0, "smooth": 0}]),
    "loss-argument-name": lambda c, m: c.config.update(loss=[{"name": "CrossEntropy"}, {"name": "Dice", "wieght": 1}]),
    "loss-argument-type": lambda c, m: c.config.update(loss="Dice", loss_kwargs={"smooth": "abc"}),
    "optimizer-argument": lambda c, m: c.config.update(optimizer_kwargs={"learning_rte": 0.001}),
    "step-gamma-zero": lambda c, m: c.config.update(lr_schedule={"name": "step", "milestones": [1], "gamma": 0}),
    "augment-layer-argument": lambda c, m: c.config.update(
        augment={"layers": [{"name": "RandomContrast", "factr": 0.2}]}
    ),
    "augment-layer-missing": lambda c, m: c.config.update(augment={"layers": [{"name": "RandomContrast"}]}),
    "yaml-duplicate": lambda c, m: (
        setattr(c, "F", c.F.replace(".json", ".yaml")),
        c.write_config(
            "name: e\nepochs: 1\nepochs: 3\n"
            + __import__("yaml").safe_dump({k: v for k, v in c.config.items() if k not in ("name", "epochs")})
        ),
    ),
    "json-duplicate": lambda c, m: c.write_config(json.dumps(c.config)[:-1] + ', "epochs": 3}'),
    "set-nested": lambda c, m: c.extra.extend(["--set", "augment={flips: true}"]),
    "classes-conflict": lambda c, m: (
        os.makedirs(c.T),
        m.chdir(c.T),
        open(os.path.join(c.T, "classes.json"), "w").write('{"road": ["other"]}'),
        setattr(c, "command", ["--data_path", c.D, "--config", c.F]),
    ),
    "ema": lambda c, m: c.config.update(ema=1.5),
    "multiclass-overlap": lambda c, m: (
        c.config.update(task="multiclass", loss="CrossEntropy"),
        c.annotation("train", 2, np.ones((2, 32, 32))),
    ),
    "ignore-values": lambda c, m: c.annotation("train", 1, np.zeros((2, 32, 32)), ignore=np.full((32, 32), 3)),
    "ignore-size": lambda c, m: c.annotation("val", 1, np.zeros((2, 32, 32)), ignore=np.zeros((32, 30))),
    "run-in-use": lambda c, m: hold_lock(os.path.join(c.D, "im_seg", "out", "e")),
    "resume-in-use": lambda c, m: (
        c.existing_run(),
        hold_lock(os.path.join(c.D, "im_seg", "out", "e")),
        c.extra.append("--resume"),
    ),
    "preds-in-use": lambda c, m: (
        infer_with_model(c),
        hold_lock(os.path.join(c.D, "im_seg", "out", "e", "preds", "val"), "imseg-infer"),
    ),
    "data-path-file": lambda c, m: (setattr(c, "D", c.T), open(c.T, "w").close()),
    "cache-dir-file": lambda c, m: (open(c.T, "w").close(), m.setenv("IMSEG_CACHE_DIR", c.T)),
    "weights-not-hdf5": lambda c, m: (
        open(c.T, "w").write("not weights"),
        c.config.update(pretrained=True, backbone_kwargs={"weights": c.T, "alpha": 0.35}),
    ),
    "weights-other-model": lambda c, m: (
        setattr(c, "T", c.T + ".weights.h5"),
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save_weights(c.T),
        c.config.update(pretrained=True, backbone_kwargs={"weights": c.T, "alpha": 0.35}),
    ),
    "duplicate-class": lambda c, m: open(c.C, "w").write('{"building": ["other", "other"]}'),
    "garbage-npz": lambda c, m: (
        os.remove(os.path.join(c.D, "im_seg/train/annotations/1.json")),
        open(os.path.join(c.D, "im_seg/train/annotations/1.npz"), "wb").write(b"PK\x03\x04junk"),
    ),
    "png-16bit": lambda c, m: (
        os.remove(os.path.join(c.D, "im_seg/train/images/1.jpg")),
        png16(os.path.join(c.D, "im_seg/train/images/1.png")),
    ),
    "infer-batch-size": lambda c, m: infer_with_model(c, "--batch-size", "-3"),
    "infer-overlap": lambda c, m: infer_with_model(c, "--overlap", "0.7"),
    "infer-split-and-images": lambda c, m: infer_with_model(
        c, "--split", "val", "--images", c.D, "--output", os.path.join(c.D, "x")
    ),
    "infer-output-not-empty": lambda c, m: (
        infer_with_model(c, "--images", os.path.join(c.D, "im_seg/val/images"), "--output", c.D + "/elsewhere"),
        os.makedirs(c.D + "/elsewhere"),
        open(c.D + "/elsewhere/notes.txt", "w").write("mine"),
    ),
    "infer-split-output-not-empty": lambda c, m: (
        infer_with_model(c, "--split", "val", "--output", c.D + "/elsewhere"),
        os.makedirs(c.D + "/elsewhere"),
        open(c.D + "/elsewhere/notes.txt", "w").write("mine"),
    ),
    "infer-overwrite-input": lambda c, m: infer_with_model(
        c, "--images", os.path.join(c.D, "im_seg/val/images"), "--output", c.D, "--overwrite"
    ),
    "infer-output-other-model": lambda c, m: (
        infer_with_model(c, "--images", os.path.join(c.D, "im_seg/val/images"), "--output", c.D + "/elsewhere"),
        os.makedirs(c.D + "/elsewhere"),
        open(c.D + "/elsewhere/manifest.jsonl", "w").write(json.dumps(other_prediction(c)) + "\n"),
    ),
    "infer-images-missing": lambda c, m: (
        infer_with_model(c, "--images", c.D + "/scenes.txt", "--output", c.D + "/elsewhere"),
        open(c.D + "/scenes.txt", "w").write("im_seg/val/images/0.jpg\nim_seg/val/images/9.jpg\n"),
    ),
    "infer-shard": lambda c, m: infer_with_model(
        c, "--images", c.D + "/im_seg/val/images", "--output", c.D + "/elsewhere", "--shard", "4/3"
    ),
    "infer-disk-full": lambda c, m: (
        infer_with_model(c, "--images", c.D + "/im_seg/val/images", "--output", c.D + "/elsewhere"),
        m.setattr("imseg.outputs.write_png", disk_full_for("/masks/", __import__("imseg.outputs").outputs.write_png)),
    ),
    "infer-truth-class": lambda c, m: (geo_infer(c, "--truth", f"river={c.T}/s0.tif"),),
    "infer-threshold-multiclass": lambda c, m: (
        c.config.update(task="multiclass", loss="CrossEntropy"),
        infer_with_model(
            c, "--images", os.path.join(c.D, "im_seg/val/images"), "--output", c.T + "-out", "--threshold", "1"
        ),
    ),
    "infer-tta-d4-not-square": lambda c, m: (
        c.config.update(input_shape=[32, 48, 3]),
        infer_with_model(c, "--split", "val", "--tta", "d4", shape=(32, 48, 3)),  # --images: test_predict_images.py
    ),
    "infer-output-file": lambda c, m: infer_with_model(
        c, "--images", os.path.join(c.D, "im_seg/val/images"), "--output", c.C
    ),
    "infer-no-record": lambda c, m: (
        infer_with_model(c),
        setattr(
            c,
            "command",
            ["--model", c.T, "--images", os.path.join(c.D, "im_seg/val/images"), "--output", os.path.join(c.D, "p")],
        ),
    ),
    "export-output-file": lambda c, m: (
        setattr(c, "program", "export"),
        setattr(c, "T", c.T + ".keras"),
        tiny_model(c.T, 2),
        setattr(c, "command", ["--model", c.T, "--format", "saved_model", "--output", c.C]),
    ),
    "export-output-not-empty": lambda c, m: (
        setattr(c, "program", "export"),
        setattr(c, "T", c.T + ".keras"),
        tiny_model(c.T, 2),
        setattr(c, "command", ["--model", c.T, "--format", "litert", "--output", c.D]),
    ),
    "export-overwrite-model": lambda c, m: (
        setattr(c, "program", "export"),
        tiny_model(c.D + "/m.keras", 2),
        setattr(c, "command", ["--model", c.D + "/m.keras", "--format", "saved_model", "--output", c.D, "--overwrite"]),
    ),
    "export-unwritable": lambda c, m: (
        setattr(c, "program", "export"),
        setattr(c, "T", c.T + ".keras"),
        tiny_model(c.T, 2),
        setattr(c, "command", ["--model", c.T, "--format", "saved_model", "--output", os.path.join(c.C, "x", "y")]),
    ),
    "export-onnx-missing": lambda c, m: (
        setattr(c, "program", "export"),
        setattr(c, "T", c.T + ".keras"),
        tiny_model(c.T, 2),
        m.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tf2onnx" else object()),
        setattr(c, "command", ["--model", c.T, "--format", "onnx", "--output", os.path.join(c.D, "onnx")]),
    ),
    "export-not-a-model": lambda c, m: (
        setattr(c, "program", "export"),
        open(c.T, "w").write("text"),
        setattr(c, "command", ["--model", c.T, "--format", "onnx", "--output", os.path.join(c.D, "onnx")]),
    ),
    "show-n": lambda c, m: (
        setattr(c, "program", "data"),
        setattr(
            c,
            "command",
            ["show", "--data_path", c.D, "--classes_path", c.C, "-n", "0", "--output", os.path.join(c.D, "s.png")],
        ),
    ),
    "show-output-folder": lambda c, m: (
        setattr(c, "program", "data"),
        setattr(c, "command", ["show", "--data_path", c.D, "--classes_path", c.C, "--output", c.D]),
    ),
    "tile-size": lambda c, m: images_folder(c, [(20, 20)]).extend(["--tile-size", "0"]),
    "same-stem": lambda c, m: images_folder(c, [(20, 20), (20, 20)], names=["s0.jpg", "s0.png"]),
    "empty-splits": lambda c, m: images_folder(c, [(20, 20), (20, 20)]),
    "empty-splits-one": lambda c, m: images_folder(c, [(20, 20)]).extend(["--split", "0.8", "0.2", "0"]),
    "images-file": lambda c, m: images_folder(c, [(20, 20)] * 3).__setitem__(2, os.path.join(c.T, "images", "s0.png")),
    "show-unwritable": lambda c, m: (
        setattr(c, "program", "data"),
        setattr(c, "command", ["show", "--data_path", c.D, "--classes_path", c.C, "--output", c.C + "/sheet.png"]),
    ),
    "show-output-type": lambda c, m: (
        setattr(c, "program", "data"),
        setattr(c, "command", ["show", "--data_path", c.D, "--classes_path", c.C, "--output", c.T + ".gif"]),
    ),
    "show-set-alone": lambda c, m: (
        setattr(c, "program", "data"),
        setattr(
            c,
            "command",
            ["show", "--data_path", c.D, "--classes_path", c.C, "--output", c.T + ".png", "--set", "epochs=2"],
        ),
    ),
    "mask-size": lambda c, m: (
        images_folder(c, [(20, 20)] * 3),
        __import__("PIL.Image")
        .Image.fromarray(np.zeros((20, 24, 3), np.uint8))
        .save(os.path.join(c.T, "masks", "s1.png")),
    ),
    "convert-unwritable": lambda c, m: images_folder(c, [(20, 20)] * 3).__setitem__(-1, os.path.join(c.C, "out")),
    "convert-16bit": lambda c, m: (
        images_folder(c, [(20, 20)] * 3),
        png16(os.path.join(c.T, "images", "s2.png"), (20, 20)),
    ),
    "augment-geometric-layer": lambda c, m: c.config.update(
        augment={"layers": [{"name": "RandomZoom", "height_factor": 0.2}]}
    ),
    "augment-unknown-layer": lambda c, m: c.config.update(
        augment={"layers": [{"name": "RandomContrats", "factor": 0.2}]}
    ),
    "augment-keras-cv-missing": lambda c, m: (
        m.setitem(__import__("sys").modules, "keras_cv", None),
        c.config.update(augment={"layers": [{"name": "keras_cv.layers.RandomSharpness", "factor": 0.3}]}),
    ),
    "augment-rotate90-not-square": lambda c, m: c.config.update(input_shape=[32, 48, 3], augment={"rotate90": True}),
    "augment-probability": lambda c, m: c.config.update(augment={"hue": {"probability": 1.5}}),
    "bands-count": lambda c, m: c.config.update(input_shape=[32, 32, 4], bands=[1, 2], normalization="auto"),
    "normalization-imagenet-bands": lambda c, m: c.config.update(input_shape=[32, 32, 4]),
    "bands-input-shape": lambda c, m: c.config.update(input_shape=[32, 32, 4], normalization="auto"),
    "bands-unknown": lambda c, m: c.config.update(input_shape=[32, 32, 1], bands=[5], normalization="auto"),
    "convert-bands-unknown": lambda c, m: geo_convert(c).extend(["--bands", "5"]),
    "vectors-syntax": lambda c, m: geo_convert(c, "building.geojson"),
    "vectors-and-masks": lambda c, m: geo_convert(c).extend(["--masks", c.T]),
    "vectors-not-georeferenced": lambda c, m: geo_convert(c, crs=None),
    "vectors-no-overlap": lambda c, m: geo_convert(c, far=True),
    "vectors-one-elsewhere": lambda c, m: (geo_convert(c), road_elsewhere(c)),
    "vectors-missing": lambda c, m: geo_convert(c, f"building={c.T}/buildings.geojson"),
    "vectors-unreadable": lambda c, m: (
        geo_convert(c),
        open(os.path.join(c.T, "building.geojson"), "w").write('{"type": "FeatureCollection", "features": ['),
    ),
    "vectors-format": lambda c, m: geo_convert(c, f"building={c.T}/scenes/s0.tif"),
    "vectors-crs-missing": lambda c, m: (
        geo_convert(c, f"building={c.T}/b.gpkg"),
        write_features(os.path.join(c.T, "b.gpkg"), [__import__("shapely").Point(0, 0)], None),
    ),
    "line-width-class": lambda c, m: geo_convert(c).extend(["--line-width", "river=10"]),
    "line-width-infinite": lambda c, m: geo_convert(c).extend(["--line-width", "road=inf"]),
    "resolution-unprojected": lambda c, m: (
        geo_convert(c).extend(["--resolution", "0.5"]),
        __import__("helpers").write_scene(os.path.join(c.T, "scenes", "s0.tif"), (55.0, 25.0), crs="EPSG:4326"),
    ),
    "split-blocks-size": lambda c, m: geo_convert(c).extend(["--split-by", "blocks"]),
    "split-areas-syntax": lambda c, m: geo_convert(c).extend(["--split-areas", f"train={c.T}/building.geojson"]),
    "merge-other-model": lambda c, m: merge_jobs(c, "b" * 64),
    "merge-regularize": lambda c, m: merge_jobs(c, None, "--regularize"),
    "merge-unwritable": lambda c, m: merge_jobs(c, None).__setitem__(-1, os.path.join(c.C, "m.gpkg")),
    "merge-not-a-job": lambda c, m: (
        os.makedirs(c.T),
        setattr(c, "program", "data"),
        setattr(c, "command", ["merge", c.T]),
    ),
    "osm-tag-syntax": lambda c, m: osm_convert(c, "map.osm", {"building": ["yes;no"]}),
    "osm-no-extra": lambda c, m: (m.setitem(__import__("sys").modules, "osmium", None), osm_convert(c, "map.osm.pbf")),
    "osm-corrupt": lambda c, m: (
        osm_convert(c, "map.osm.pbf"),
        open(os.path.join(c.T, "map.osm.pbf"), "r+b").truncate(40),
    ),
    "shapefile-corrupt": lambda c, m: (
        osm_convert(c, "map.shp"),
        open(os.path.join(c.T, "map.shp"), "wb").write(b"\x00\x00\x27\x0a" + b"\x00" * 20),
    ),
    "osm-and-vectors": lambda c, m: osm_convert(c).extend(["--vectors", f"building:other={c.T}/b.geojson"]),
    "osm-no-classes": lambda c, m: (osm_convert(c), os.remove(os.path.join(c.T, "classes.json"))),
    "burn-order-class": lambda c, m: osm_convert(c, "map.osm", None, "--burn-order", "highway:other", "building"),
    "infer-bands-unknown": lambda c, m: geo_infer(c, "--bands", "1", "2", "3", "9"),
    "infer-bands-count": lambda c, m: geo_infer(c, "--bands", "1", "2", "3"),
    "vectorize-not-georeferenced": lambda c, m: geo_infer(c, "--vectorize", crs=None),
}


def test_every_documented_row_has_a_scenario():
    assert [r[0] for r in rows()] == list(SCENARIOS)


def snapshot(folder):
    """Every file (with its modification time) and every folder: nothing may appear, change or vanish."""
    found = {}
    for d, folders, files in os.walk(folder):
        found.update({os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for f in files})
        found.update({os.path.join(d, f) + "/": None for f in folders})
    return found


# Rows that cache a dataset or build a real backbone (a second or more each); the others check a config, a file or
# an option in milliseconds and stay in the fast tier.
SLOW_ROWS = {
    "pyramid-missing", "garbage-npz", "multiclass-overlap", "layer", "channels", "layer-order", "bad-image",
    "bands-input-shape", "run-in-use", "size", "bad-json", "cache-dir-file", "augment-keras-cv-missing",
    "ignore-values", "ignore-size", "bands-unknown", "png-16bit", "weights-other-model", "augment-geometric-layer",
    "values", "offline-weights", "augment-layer-argument", "resume-in-use", "augment-unknown-layer", "decoder-value",
    "augment-layer-missing", "input-too-small", "weights-not-hdf5", "keras-hub-preset", "decoder-option",
}  # fmt: skip


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r[0], marks=[pytest.mark.slow] if r[0] in SLOW_ROWS else []) for r in rows()]
)
def test_error(row, tmp_path, monkeypatch, capsys):
    from imseg.data.__main__ import main as data_main
    from imseg.export import main as export_main
    from imseg.infer import main as infer_main
    from imseg.train import main as train_main

    name, message, code = row
    case = Case(str(tmp_path))
    if not os.path.exists(case.F):
        case.write_config()
    try:
        SCENARIOS[name](case, monkeypatch)
        if name not in ("json-syntax", "yaml-syntax", "config-missing", "yaml-duplicate", "json-duplicate"):
            case.write_config()
        watched = os.path.dirname(case.D)
        before = snapshot(watched)
        capsys.readouterr()
        main = {"train": train_main, "infer": infer_main, "export": export_main, "data": data_main}[case.program]
        try:
            status = main(case.argv())
        except SystemExit as e:  # argparse's usage errors
            status = e.code
    finally:
        while HELD:
            HELD.pop().release()
    assert status == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    expected = message
    for key in "FCDT":
        expected = expected.replace("{" + key + "}", getattr(case, key))
    if expected.endswith("…"):
        assert last.startswith(expected[:-1]), last
    else:
        assert last == expected
    progress = ("imseg: caching", "converting:", "imseg: classes from", "predicting ")  # progress, before the error
    assert len([line for line in err.splitlines() if not line.startswith(progress)]) == 1, err
    assert snapshot(watched) == before  # nothing written: no out/, no cache, nothing changed
