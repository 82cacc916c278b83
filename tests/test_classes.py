"""classes.json: sorted super:sub names define the annotation channels; selections are checked."""

import json

import pytest

from imseg.classes import load_class_names, select_classes
from imseg.config import config_from_dict
from imseg.errors import ConfigError

BASE = {"name": "r", "backbone": "ResNet50", "refine_net_blocks": [["x"]]}


def classes_file(tmp_path, data):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_names_are_super_sub_sorted(tmp_path):
    path = classes_file(tmp_path, {"highway": ["roads", "other"], "building": ["hospital", "parking", "other"]})
    assert load_class_names(path) == [
        "building:hospital",
        "building:other",
        "building:parking",
        "highway:other",
        "highway:roads",
    ]


def test_selection_keeps_config_order_and_maps_channels():
    names = ["building:hospital", "building:other", "building:parking", "highway:other", "highway:roads"]
    config = config_from_dict({**BASE, "classes": ["highway:other", "building:other"]})
    assert select_classes(config, names, "c.json") == (["highway:other", "building:other"], [3, 1])
    assert select_classes(config_from_dict(BASE), names, "c.json") == (names, [0, 1, 2, 3, 4])


def test_unknown_class_and_benchmark_class_are_errors():
    names = ["building:other", "highway:other"]
    with pytest.raises(
        ConfigError, match="key 'classes': unknown class 'building:othr' \\(did you mean 'building:other'"
    ):
        select_classes(config_from_dict({**BASE, "classes": ["building:othr"]}), names, "c.json")
    bad = config_from_dict({**BASE, "classes": ["building:other"], "benchmark_class": "highway:other"})
    with pytest.raises(ConfigError, match="key 'benchmark_class': 'highway:other' is not among the trained classes"):
        select_classes(bad, names, "c.json")


@pytest.mark.parametrize("data", [["building"], {"building": "other"}, {"building": []}, {}])
def test_malformed_classes_file(tmp_path, data):
    with pytest.raises(ConfigError, match="classes.json"):
        load_class_names(classes_file(tmp_path, data))


def test_missing_classes_file(tmp_path):
    with pytest.raises(ConfigError, match="classes file not found"):
        load_class_names(str(tmp_path / "classes.json"))
