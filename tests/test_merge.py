"""imseg-data merge: the polygons of every scene of a mapping job, joined across scene and strip edges."""

import json
import os

import numpy as np
import pytest

from helpers import SCENE_CRS

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")
pyogrio = pytest.importorskip("pyogrio")

from rasterio.transform import from_origin  # noqa: E402


def write_tif(path, bands, origin):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2], count=bands.shape[0],
                       dtype=bands.dtype, crs=SCENE_CRS, transform=from_origin(*origin, 1.0, 1.0)) as dst:  # fmt: skip
        dst.write(bands)


def job(folder, scenes, classes=("building:other",), sha="a" * 64, task="multilabel", probs=None):
    """A mapping job's folder as imseg-infer --images leaves it: masks, probabilities (`probs`: stem -> bands, all
    outputs) and a manifest of done scenes."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "manifest.jsonl"), "w") as manifest:
        for stem, (origin, mask) in scenes.items():
            for i, name in enumerate(classes):
                own = mask == i + 1 if task == "multiclass" else mask
                path = os.path.join(folder, "masks", name.replace(":", "-"), stem + ".tif")
                write_tif(path, own[None].astype(np.uint8) * 255, origin)
            if probs:
                write_tif(os.path.join(folder, "probs", stem + ".tif"), probs[stem], origin)
            outputs = ["background", *classes] if task == "multiclass" else list(classes)
            manifest.write(json.dumps({"stem": stem, "status": "done", "classes": outputs, "task": task,
                                       "model_sha256": sha}) + "\n")  # fmt: skip


def test_a_building_across_a_scene_edge_and_strip_edges_is_one_polygon_as_traced_from_the_joined_mask(
    tmp_path, monkeypatch
):
    from imseg.geo import merge as merging

    monkeypatch.setattr(merging, "STRIP", 16)  # strips of 16 rows: the building crosses several
    west, east = np.zeros((60, 50), np.uint8), np.zeros((60, 50), np.uint8)
    west[10:40, 30:50] = 1  # the building's west part, to the scene's edge ...
    east[10:40, 0:25] = 1  # ... and its east part, in the scene beside it (overlapping 10 px: 40..50 m)
    east[45:50, 40:45] = 1  # and a shed
    job(str(tmp_path / "job"), {"w": ((500_000.0, 2_780_000.0), west), "e": ((500_040.0, 2_780_000.0), east)})
    merged = str(tmp_path / "new" / "m.gpkg")  # its folder is created
    counts = merging.merge([str(tmp_path / "job")], merged, simplify=0)
    assert counts == {"building:other": 2}
    _, _, wkb, fields = pyogrio.raw.read(merged, layer="building:other")
    polygons = sorted(shapely.from_wkb(wkb), key=lambda p: -p.area)
    joined = shapely.box(500_030.0, 2_780_000.0 - 40, 500_065.0, 2_780_000.0 - 10)  # union: columns 30..65 m
    assert polygons[0].symmetric_difference(joined).area == 0 and polygons[1].area == 25
    assert sorted(fields[1]) == [25.0, 35 * 30.0]


def test_folders_of_other_models_and_regularize_without_buildings_are_refused(tmp_path):
    from imseg.errors import ConfigError
    from imseg.geo.merge import merge

    mask = np.ones((8, 8), np.uint8)
    job(str(tmp_path / "a"), {"s": ((500_000.0, 2_780_000.0), mask)})
    job(str(tmp_path / "b"), {"t": ((500_000.0, 2_780_000.0), mask)}, sha="b" * 64)
    with pytest.raises(ConfigError, match="b: scenes of another model or classes than .*a \\(building:other\\)"):
        merge([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m.gpkg"))
    job(str(tmp_path / "r"), {"s": ((500_000.0, 2_780_000.0), mask)}, classes=("highway:other",))
    with pytest.raises(ConfigError, match="--regularize makes building outlines right-angled, but no class is a"):
        merge([str(tmp_path / "r")], str(tmp_path / "m.gpkg"), regularize=True)
    assert not os.path.exists(tmp_path / "m.gpkg")


def test_regularize_squares_a_ragged_footprint_and_keeps_an_l_shape(tmp_path):
    from imseg.geo.merge import merge

    mask = np.zeros((60, 60), np.uint8)
    mask[10:30, 10:30] = 1
    mask[10, 10:15] = 0  # a ragged corner: the footprint fills 98 % of its rectangle
    mask[40:58, 40:45] = 1  # an L: 18 x 5 + 5 x 13, half of its rectangle
    mask[53:58, 45:58] = 1
    job(str(tmp_path / "j"), {"s": ((500_000.0, 2_780_000.0), mask)})
    merge([str(tmp_path / "j")], str(tmp_path / "m.gpkg"), simplify=0, regularize=True)
    _, _, wkb, _ = pyogrio.raw.read(str(tmp_path / "m.gpkg"))
    square, ell = sorted(shapely.from_wkb(wkb), key=lambda p: -p.area)
    assert square.area == 400 and len(shapely.get_coordinates(square)) == 5  # the full rectangle
    assert ell.area == 18 * 5 + 5 * 13


def test_where_multiclass_scenes_overlap_the_more_confident_scene_decides_the_class(tmp_path):
    """West says building at 0.6 and east says road at 0.9 over their 10 px overlap: the road wins there; without
    probabilities a pixel is every class a scene gives it."""
    from imseg.geo.merge import merge

    classes = ("building:other", "highway:other")
    west, east = np.ones((20, 30), np.uint8), np.full((20, 30), 2, np.uint8)  # 1 = building, 2 = road
    probs = {"w": np.zeros((3, 20, 30), np.float32), "e": np.zeros((3, 20, 30), np.float32)}
    probs["w"][1], probs["w"][0] = 0.6, 0.4
    probs["e"][2], probs["e"][0] = 0.9, 0.1
    scenes = {"w": ((500_000.0, 2_780_000.0), west), "e": ((500_020.0, 2_780_000.0), east)}
    job(str(tmp_path / "p"), scenes, classes, task="multiclass", probs=probs)
    job(str(tmp_path / "u"), scenes, classes, task="multiclass")
    for folder, building_east, road_west in (("p", 500_020.0, 500_020.0), ("u", 500_030.0, 500_020.0)):
        merge([str(tmp_path / folder)], str(tmp_path / f"{folder}.gpkg"), simplify=0)
        area = {}
        for name in classes:
            _, _, wkb, _ = pyogrio.raw.read(str(tmp_path / f"{folder}.gpkg"), layer=name)
            area[name] = shapely.union_all(shapely.from_wkb(wkb))
        assert area["building:other"].bounds == (500_000.0, 2_779_980.0, building_east, 2_780_000.0), folder
        assert area["highway:other"].bounds == (road_west, 2_779_980.0, 500_050.0, 2_780_000.0), folder
