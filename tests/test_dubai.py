"""The real-data path on the Dubai aerial set (CC0) beside the repository: convert, verify, train.

Skips when ../shared/data/dubai-aerial is absent (it is not part of the repository).
"""

import json
import os

import pytest

from helpers import REPO, run_module
from imseg.data.__main__ import main as data_main

DUBAI = os.path.join(os.path.dirname(REPO), "shared", "data", "dubai-aerial")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(DUBAI), reason=f"real data set not found at {DUBAI}"),
]


def test_convert_verify_and_train_one_short_epoch(tmp_path):
    args = [
        "convert",
        "--mask-type",
        "color",
        "--class-map",
        os.path.join(REPO, "configs", "dubai_aerial_colors.yaml"),
        "--tile-size",
        "128",
        "--format",
        "npz",
        "--output",
        str(tmp_path / "dubai"),
    ]
    for tile in ("Tile 1", "Tile 2"):  # two of the eight folders: the same file names in each
        args += ["--images", os.path.join(DUBAI, tile, "images"), "--masks", os.path.join(DUBAI, tile, "masks")]
    assert data_main(args) == 0
    with open(tmp_path / "dubai" / "im_seg" / "path_map.json") as f:
        path_map = json.load(f)
    splits_of = {}
    for tile in path_map.values():
        splits_of.setdefault(tile["image"], set()).add(tile["split"])
    assert len(splits_of) == 18 and all(len(s) == 1 for s in splits_of.values())  # no leakage between splits
    assert data_main(["verify", "--data_path", str(tmp_path / "dubai")]) == 0
    result = run_module(
        "imseg.train",
        "--data_path",
        str(tmp_path / "dubai"),
        "--config",
        os.path.join(REPO, "configs", "dubai_aerial.yaml"),
        "--set",
        "epochs=1",
        "--set",
        "input_shape=[32, 32, 3]",
        "--set",
        "backbone_kwargs.alpha=0.35",
        "--set",
        "batch_size=32",
        "--set",
        "augment={}",
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "dubai" / "im_seg" / "out" / "dubai_mobilenetv2" / "config.json") as f:
        config = json.load(f)
    assert config["classes"] == ["building:other", "land:other", "road:other", "vegetation:other", "water:other"]
    assert "best val_mean_iou = " in result.stderr
