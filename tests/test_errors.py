"""Every row of docs/errors.md: the exact message, the exit status, and that nothing was written."""

import json
import os

import keras
import numpy as np
import pytest

from helpers import REPO, write_air_dataset

BASE = {
    "name": "e", "backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35},
    "refine_net_blocks": [["block_6_expand_relu"], ["block_3_expand_relu"]], "input_shape": [32, 32, 3],
    "epochs": 1, "batch_size": 2, "mixed_precision": "none",
}
RESNET = {"backbone": "ResNet50", "backbone_kwargs": {},
          "refine_net_blocks": [["conv5_block3_out", "conv4_block6_out"], ["conv3_block4_out"]]}


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
        self.D, self.C = write_air_dataset(os.path.join(root, "d"), classes={"building": ["other"], "highway": ["other"]},
                                           counts=(4, 2, 2), size=(32, 32))
        self.F = os.path.join(root, "config.json")
        self.T = os.path.join(root, "other")
        self.config = dict(BASE)
        self.extra = []
        self.program = "train"

    def write_config(self, text=None):
        with open(self.F, "w") as f:
            f.write(text if text is not None else json.dumps(self.config))

    def argv(self):
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


def offline(monkeypatch):
    from keras.src.utils import file_utils

    def fail(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(file_utils, "get_file", fail)


def tiny_model(path, classes):
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Conv2D(classes, 1)(inputs)).save(path)


SCENARIOS = {
    "json-syntax": lambda c, m: c.write_config('{"name": "x",\n "epochs": ,}'),
    "yaml-syntax": lambda c, m: (setattr(c, "F", c.F.replace(".json", ".yaml")), c.write_config("name: [x\nepochs: 3\n")),
    "config-missing": lambda c, m: setattr(c, "F", c.T + ".json"),
    "type": lambda c, m: c.config.update(batch_size="16"),
    "range": lambda c, m: c.config.update(epochs=0),
    "shape": lambda c, m: c.config.update(input_shape=[224, 224]),
    "negative": lambda c, m: c.config.update(augment={"rotate_range": -5}),
    "unknown-key": lambda c, m: c.config.update(batchsize=8),
    "unknown-nested-key": lambda c, m: c.config.update(augment={"rotate": 10}),
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
    "name-path": lambda c, m: c.config.update(name="../x"),
    "name-empty": lambda c, m: c.config.update(name=""),
    "data-missing": lambda c, m: setattr(c, "D", c.T),
    "split-empty": lambda c, m: [os.remove(os.path.join(c.D, "im_seg", "val", sub, f))
                                 for sub in ("images", "annotations")
                                 for f in os.listdir(os.path.join(c.D, "im_seg", "val", sub))],
    "no-annotation": lambda c, m: os.remove(os.path.join(c.D, "im_seg/train/annotations/3.json")),
    "no-image": lambda c, m: os.remove(os.path.join(c.D, "im_seg/train/images/3.jpg")),
    "channels": lambda c, m: c.annotation("val", 1, np.zeros((4, 32, 32), int)),
    "size": lambda c, m: c.annotation("train", 1, np.zeros((2, 32, 31), int)),
    "values": lambda c, m: c.annotation("train", 1, np.full((2, 32, 32), 2)),
    "bad-json": lambda c, m: open(os.path.join(c.D, "im_seg/train/annotations/1.json"), "w").write('{"annotation": [[['),
    "bad-image": lambda c, m: open(os.path.join(c.D, "im_seg/train/images/1.jpg"), "wb").write(b"\xff\xd8\xff\xe0trunc"),
    "unwritable": lambda c, m: open(os.path.join(c.D, "im_seg", "out"), "w").close(),
    "run-exists": lambda c, m: c.existing_run(),
    "resume-nothing": lambda c, m: c.extra.append("--resume"),
    "resume-changed": lambda c, m: (c.existing_run(), c.extra.extend(["--resume", "--set", "batch_size=4"])),
    "model-missing": lambda c, m: (setattr(c, "program", "infer"), c.extra.extend(["--model", c.T])),
    "model-invalid": lambda c, m: (setattr(c, "program", "infer"), open(c.T, "w").write("no model"),
                                   c.extra.extend(["--model", c.T])),
    "model-classes": lambda c, m: (setattr(c, "program", "infer"), c.config.update(classes=["building:other"]),
                                   setattr(c, "T", c.T + ".keras"), tiny_model(c.T, 2), c.extra.extend(["--model", c.T])),
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
    "ema": lambda c, m: c.config.update(ema=1.5),
    "multiclass-overlap": lambda c, m: (c.config.update(task="multiclass", loss="CrossEntropy"),
                                        c.annotation("train", 2, np.ones((2, 32, 32)))),
    "ignore-values": lambda c, m: c.annotation("train", 1, np.zeros((2, 32, 32)), ignore=np.full((32, 32), 3)),
    "ignore-size": lambda c, m: c.annotation("val", 1, np.zeros((2, 32, 32)), ignore=np.zeros((32, 30))),
}


def test_every_documented_row_has_a_scenario():
    assert [r[0] for r in rows()] == list(SCENARIOS)


def snapshot(folder):
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs}


@pytest.mark.parametrize("row", rows(), ids=[r[0] for r in rows()])
def test_error(row, tmp_path, monkeypatch, capsys):
    from imseg.infer import main as infer_main
    from imseg.train import main as train_main

    name, message, code = row
    case = Case(str(tmp_path))
    if not os.path.exists(case.F):
        case.write_config()
    SCENARIOS[name](case, monkeypatch)
    if name not in ("json-syntax", "yaml-syntax", "config-missing"):
        case.write_config()
    watched = os.path.dirname(case.D)
    before = snapshot(watched)
    capsys.readouterr()
    main = infer_main if case.program == "infer" else train_main
    assert main(case.argv()) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    expected = message
    for key in "FCDT":
        expected = expected.replace("{%s}" % key, getattr(case, key))
    if expected.endswith("…"):
        assert last.startswith(expected[:-1]), last
    else:
        assert last == expected
    assert len([line for line in err.splitlines() if not line.startswith("imseg: caching")]) == 1, err
    assert snapshot(watched) == before  # nothing written: no out/, no cache, nothing changed
