"""How good is the map: masks scored against vector ground truth, checked against counts made by hand."""

import numpy as np
import pytest

from helpers import SCENE_CRS

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")

from rasterio.transform import from_origin  # noqa: E402

ORIGIN = (500_000.0, 2_780_000.0)  # 1 m pixels


def box(y0, y1, x0, x1):
    """The pixel rectangle rows y0:y1, columns x0:x1 as a polygon in WGS84 (the truth comes in another CRS)."""
    from rasterio.warp import transform_geom

    left, top = ORIGIN[0] + x0, ORIGIN[1] - y0
    utm = shapely.box(left, top - (y1 - y0), left + (x1 - x0), top)
    return shapely.geometry.shape(transform_geom(SCENE_CRS, "EPSG:4326", shapely.geometry.mapping(utm)))


def test_pixel_scores_and_object_f1_equal_the_counts_made_by_hand(tmp_path):
    from imseg.geo.truth import score_scene, scores_of

    mask = np.zeros((100, 100), np.uint8)
    for y0, y1, x0, x1 in ((10, 30, 10, 30), (50, 60, 50, 70), (80, 90, 80, 90)):  # A, B and a false C
        mask[y0:y1, x0:x1] = 255
    with rasterio.open(tmp_path / "m.tif", "w", driver="GTiff", height=100, width=100, count=1, dtype="uint8",
                       crs=SCENE_CRS, transform=from_origin(*ORIGIN, 1.0, 1.0)) as dst:  # fmt: skip
        dst.write(mask[None])
    # A' overlaps A by 18 x 20 (IoU 360 / 440: a match), B' overlaps B by 10 x 10 (IoU 1/3: none), D' is missed.
    truth = {"building:other": [([box(12, 32, 10, 30), box(50, 60, 60, 80), box(5, 9, 90, 99)], "EPSG:4326")]}
    truth = {k: [(g, rasterio.crs.CRS.from_user_input(c)) for g, c in v] for k, v in truth.items()}
    counts = score_scene({"building:other": str(tmp_path / "m.tif")}, truth)["building:other"]
    assert (counts["tp"], counts["fp"], counts["fn"]) == (460, 240, 176)  # P 700 px, T 636 px, both 460
    assert counts["objects"] == {"tp": 1, "fp": 2, "fn": 2}
    scores = scores_of(counts)
    assert scores["iou"] == pytest.approx(460 / 876) and scores["precision"] == pytest.approx(460 / 700)
    assert scores["recall"] == pytest.approx(460 / 636) and scores["objects"]["f1"] == pytest.approx(2 / 6)


def test_footprints_match_one_to_one_at_iou_one_half_best_first():
    from imseg.geo.truth import match_objects

    true = [shapely.box(0, 0, 10, 10)]
    twins = [shapely.box(0, 0, 10, 9), shapely.box(0, 1, 10, 10)]  # both IoU 0.9 with the one true footprint
    assert match_objects(twins, true) == {"tp": 1, "fp": 1, "fn": 0}
    assert match_objects([shapely.box(0, 0, 10, 4.9)], true) == {"tp": 0, "fp": 1, "fn": 1}  # IoU 0.49
    assert match_objects([], true) == {"tp": 0, "fp": 0, "fn": 1}


def test_a_mapping_job_scores_each_scene_and_the_whole(tmp_path):
    import json

    from test_geo import brightness_model, write_town

    from helpers import write_features
    from imseg.checkpoints import save_model
    from imseg.mapping import map_images
    from imseg.predictor import load_predictor

    (tmp_path / "scenes").mkdir()
    for i in (0, 1):
        write_town(str(tmp_path / "scenes" / f"t{i}.tif"), 0.6)  # a 30 m x 24 m building, 10 m down, 20 m in
    save_model(brightness_model(), str(tmp_path / "m.keras"), {"classes": ["building:other"], "task": "multilabel"})
    building = shapely.box(500_000.0 + 33 * 0.6, 2_780_000.0 - 56 * 0.6, 500_000.0 + 83 * 0.6, 2_780_000.0 - 16 * 0.6)
    write_features(str(tmp_path / "truth.gpkg"), [building], SCENE_CRS)  # exactly the building's pixels
    summary = map_images(load_predictor(str(tmp_path / "m.keras")), [str(tmp_path / "scenes")], str(tmp_path / "out"),
                         truth=[("building:other", str(tmp_path / "truth.gpkg"))], log=lambda line: None)  # fmt: skip
    whole = summary["truth"]["building:other"]
    assert whole["iou"] == 1.0 and whole["pixels"]["tp"] == 2 * 50 * 40 and whole["objects"]["f1"] == 1.0
    assert summary["images"]["t1"]["truth"]["building:other"]["objects"] == {"tp": 1, "fp": 0, "fn": 0, "f1": 1.0}
    record = json.loads(open(tmp_path / "out" / "manifest.jsonl").readline())
    assert record["truth_counts"]["building:other"]["tp"] == 50 * 40
