"""imseg-data: convert imagery + masks to AIR tiles, verify a dataset, and draw a contact sheet."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import files_under
from imseg.annotations import read_annotation
from imseg.data.__main__ import main
from imseg.data.convert import split_sources
from imseg.tiles import tile_starts

COLOURS = {"#FF0000": "building", "#00FF00": "highway:roads", "#0000FF": "ignore", "#000000": "background"}
RGB = {"building": (255, 0, 0), "roads": (0, 255, 0), "ignore": (0, 0, 255), "none": (0, 0, 0)}


def make_sources(root, sizes, seed=0):
    """Images with colour masks: a red (building) block, a green (road) stripe, a blue (ignore) corner."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w, 3), np.uint8)
        mask[h // 4 : h // 2, w // 4 : w // 2] = RGB["building"]
        mask[:, w - 6 : w - 2] = RGB["roads"]
        mask[:3, :3] = RGB["ignore"]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(root, "images", f"s{i}.png"))
        Image.fromarray(mask).save(os.path.join(root, "masks", f"s{i}.png"))


@pytest.fixture
def sources(tmp_path):
    make_sources(str(tmp_path / "a"), [(50, 70), (33, 40), (40, 40)])
    make_sources(str(tmp_path / "b"), [(40, 40), (20, 20)], seed=1)  # same file names as in a/
    (tmp_path / "colours.yaml").write_text("\n".join(f'"{k}": {v}' for k, v in COLOURS.items()))
    return tmp_path


def convert(sources, *extra, output="out"):
    args = [
        "convert",
        "--mask-type",
        "color",
        "--class-map",
        str(sources / "colours.yaml"),
        "--tile-size",
        "16",
        "--overlap",
        "4",
        "--seed",
        "3",
        "--output",
        str(sources / output),
    ]
    for folder in ("a", "b"):
        args += ["--images", str(sources / folder / "images"), "--masks", str(sources / folder / "masks")]
    return main(args + list(extra))


def test_tile_origins_cover_with_overlap_and_pad_the_edge():
    assert tile_starts(50, 16, 12, edge="pad") == [0, 12, 24, 36]  # the last tile runs 36..52, padded past 50
    assert tile_starts(16, 16, 12, edge="pad") == [0]
    assert tile_starts(10, 16, 16, edge="pad") == [0]


def test_split_is_by_source_and_follows_the_fractions():
    splits = split_sources(10, [0.8, 0.1, 0.1], seed=0)
    assert sorted(sum(splits.values(), [])) == list(range(10))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert split_sources(10, [0.8, 0.1, 0.1], seed=0) == splits != split_sources(10, [0.8, 0.1, 0.1], seed=1)
    assert [len(v) for v in split_sources(3, [0.8, 0.1, 0.1], 0).values()] == [1, 1, 1]


def test_convert_colour_masks_to_air_tiles(sources):
    assert convert(sources) == 0
    out = sources / "out"
    assert json.loads((out / "classes.json").read_text()) == {"building": ["other"], "highway": ["roads"]}
    path_map = json.loads((out / "im_seg" / "path_map.json").read_text())
    expected_tiles = sum(
        len(tile_starts(h, 16, 12, edge="pad")) * len(tile_starts(w, 16, 12, edge="pad"))
        for h, w in [(50, 70), (33, 40), (40, 40), (40, 40), (20, 20)]
    )
    assert len(path_map) == expected_tiles
    # Tiles of one source image are all in one split; the two s0.png files are different sources.
    splits_of = {}
    for tile in path_map.values():
        splits_of.setdefault(tile["image"], set()).add(tile["split"])
    assert len(splits_of) == 5 and all(len(s) == 1 for s in splits_of.values())
    # A tile's annotation is the colour mask cut at its offset; black is background (labelled, no class) and
    # blue is ignored: the tile's ignore plane.
    for x, y in ((12, 12), (0, 0)):
        tile_id, tile = next(
            (k, t)
            for k, t in path_map.items()
            if t["image"].endswith(os.path.join("a", "images", "s0.png")) and (t["x"], t["y"]) == (x, y)
        )
        ann, ignore = read_annotation(
            str(out / "im_seg" / tile["split"] / "annotations" / f"{tile_id}.json"), with_ignore=True
        )
        mask = np.asarray(Image.open(sources / "a" / "masks" / "s0.png"))[y : y + 16, x : x + 16]
        np.testing.assert_array_equal(ann[0], (mask == RGB["building"]).all(-1))
        np.testing.assert_array_equal(ann[1], (mask == RGB["roads"]).all(-1))
        np.testing.assert_array_equal(ignore, (mask == RGB["ignore"]).all(-1))
    assert ignore[:3, :3].all() and ignore.sum() == 9


def test_a_dataset_written_meanwhile_by_another_convert_is_kept(sources, monkeypatch, capsys):
    """Two converts to one new --output: the one that finishes second refuses to replace the first one's."""
    from imseg.data import convert as module

    write_tiles = module._write_tiles

    def other_process_finishes_first(*args):
        counts = write_tiles(*args)
        os.makedirs(sources / "out")
        (sources / "out" / "classes.json").write_text("theirs")
        return counts

    monkeypatch.setattr(module, "_write_tiles", other_process_finishes_first)
    assert convert(sources) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"imseg-data: error: {sources / 'out'}: another process wrote a dataset there while this one was converting; "
        "theirs is kept and this one discarded: choose a new --output"
    )
    assert os.listdir(sources / "out") == ["classes.json"]
    assert (sources / "out" / "classes.json").read_text() == "theirs"
    assert not [name for name in os.listdir(sources) if name.startswith(".out-")]  # its own tiles are gone


def test_edge_tiles_are_padded_with_zeros(sources):
    convert(sources)
    out = sources / "out"
    path_map = json.loads((out / "im_seg" / "path_map.json").read_text())
    tile_id, tile = next(
        (k, t)
        for k, t in path_map.items()
        if t["image"].endswith(os.path.join("b", "images", "s1.png")) and (t["x"], t["y"]) == (12, 12)
    )  # a 20x20 source: this tile holds 8x8 real pixels
    image = np.asarray(Image.open(out / "im_seg" / tile["split"] / "images" / f"{tile_id}.jpg"))
    ann, ignore = read_annotation(
        str(out / "im_seg" / tile["split"] / "annotations" / f"{tile_id}.json"), with_ignore=True
    )
    assert image.shape == (16, 16, 3) and image[9:, 9:].max() < 10  # JPEG leaves faint noise at most
    assert ann.shape == (2, 16, 16) and ann[:, 8:, :].max() == 0 and ann[:, :, 8:].max() == 0
    padding = np.ones((16, 16), bool)
    padding[:8, :8] = False
    np.testing.assert_array_equal(ignore, padding)  # the padding carries no label


def test_transparent_pixels_are_ignored(sources):
    rgba = np.asarray(Image.open(sources / "a" / "images" / "s2.png").convert("RGBA")).copy()
    rgba[20:, :, 3] = 0  # the lower half has no data
    Image.fromarray(rgba).save(sources / "a" / "images" / "s2.png")
    assert convert(sources, "--overlap", "0") == 0
    out = sources / "out"
    path_map = json.loads((out / "im_seg" / "path_map.json").read_text())
    for tile_id, tile in path_map.items():
        if tile["image"].endswith(os.path.join("a", "images", "s2.png")):
            _, ignore = read_annotation(
                str(out / "im_seg" / tile["split"] / "annotations" / f"{tile_id}.json"), with_ignore=True
            )
            rows, columns = np.mgrid[tile["y"] : tile["y"] + 16, tile["x"] : tile["x"] + 16]
            mask = np.asarray(Image.open(sources / "a" / "masks" / "s2.png"))  # 40 x 40
            blue = np.zeros((16, 16), bool)
            part = (mask[tile["y"] : tile["y"] + 16, tile["x"] : tile["x"] + 16] == RGB["ignore"]).all(-1)
            blue[: part.shape[0], : part.shape[1]] = part
            np.testing.assert_array_equal(ignore, (rows >= 20) | blue | (rows >= 40) | (columns >= 40))


def test_unmapped_colours_are_listed_with_counts_and_nothing_is_written(sources, capsys):
    (sources / "colours.yaml").write_text('"#FF0000": building\n"#000000": background\n')
    assert convert(sources) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imseg-data: error: ") and len(err.splitlines()) == 1
    assert "values not in the class map: #00FF00 (" in err and " px), #0000FF (9 px)" in err
    assert not os.path.exists(sources / "out") and not [p for p in os.listdir(sources) if p.startswith(".out")]


@pytest.mark.slow
def test_compact_format_gives_the_same_batches_and_is_much_smaller(tmp_path):
    import keras

    from imseg.dataset import batches_per_epoch, load_split, make_dataset

    make_sources(str(tmp_path / "a"), [(128, 128)] * 4)
    (tmp_path / "colours.yaml").write_text("\n".join(f'"{k}": {v}' for k, v in COLOURS.items()))
    common = [
        "convert",
        "--mask-type",
        "color",
        "--class-map",
        str(tmp_path / "colours.yaml"),
        "--tile-size",
        "64",
        "--images",
        str(tmp_path / "a" / "images"),
        "--masks",
        str(tmp_path / "a" / "masks"),
    ]
    assert main(common + ["--output", str(tmp_path / "json")]) == 0
    assert main(common + ["--format", "npz", "--output", str(tmp_path / "npz")]) == 0
    size = lambda root: sum(os.path.getsize(p) for p in files_under(str(root)) if "annotations" in p)  # noqa: E731
    assert size(tmp_path / "json") > 10 * size(tmp_path / "npz")

    batches = []
    for fmt in ("json", "npz"):
        root = str(tmp_path / fmt)
        train, val = (load_split(root, s, 2, log=lambda m: None) for s in ("train", "val"))
        keras.utils.set_random_seed(0)  # as imseg-train does: TensorFlow's global seed is part of the shuffle's
        steps = batches_per_epoch(train, 4)
        training = make_dataset(train, [0, 1], (32, 32, 3), 4, training=True, seed=0).take(steps)
        validation = make_dataset(val, [0, 1], (32, 32, 3), 4, training=False)
        batches.append([b.numpy() for dataset in (training, validation) for batch in dataset for b in batch])
    assert len(batches[0]) == len(batches[1]) > 0
    for a, b in zip(*batches):  # the very same batches in the same order: a run trains the same on either format
        np.testing.assert_array_equal(a, b)


def test_index_and_binary_masks(tmp_path):
    os.makedirs(tmp_path / "img")
    os.makedirs(tmp_path / "idx")
    os.makedirs(tmp_path / "bin" / "water")
    os.makedirs(tmp_path / "bin" / "tree")
    index = np.zeros((20, 20), np.uint8)
    index[5:10] = 1
    index[12:] = 2
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "img" / "t.png")
    Image.fromarray(index).save(tmp_path / "idx" / "t.png")
    Image.fromarray((index == 1).astype(np.uint8) * 255).save(tmp_path / "bin" / "water" / "t.png")
    Image.fromarray((index == 2).astype(np.uint8)).save(tmp_path / "bin" / "tree" / "t.png")
    (tmp_path / "map.json").write_text(json.dumps({"0": "ignore", "1": "water", "2": "landuse:forest"}))
    common = ["--images", str(tmp_path / "img"), "--tile-size", "20", "--split", "1", "0", "0"]
    assert (
        main(
            [
                "convert",
                "--masks",
                str(tmp_path / "idx"),
                "--mask-type",
                "index",
                "--class-map",
                str(tmp_path / "map.json"),
                "--output",
                str(tmp_path / "o1"),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "convert",
                "--masks",
                str(tmp_path / "bin"),
                "--mask-type",
                "binary",
                "--output",
                str(tmp_path / "o2"),
                *common,
            ]
        )
        == 0
    )
    a1 = read_annotation(str(tmp_path / "o1" / "im_seg" / "train" / "annotations" / "0.json"))
    a2 = read_annotation(str(tmp_path / "o2" / "im_seg" / "train" / "annotations" / "0.json"))
    np.testing.assert_array_equal(a1, np.stack([index == 2, index == 1]))  # landuse:forest, water:other
    np.testing.assert_array_equal(a2, np.stack([index == 2, index == 1]))  # tree:other, water:other
    assert json.loads((tmp_path / "o2" / "classes.json").read_text()) == {"tree": ["other"], "water": ["other"]}


def test_verify_passes_a_clean_dataset(sources, capsys):
    convert(sources)
    assert main(["verify", "--data_path", str(sources / "out")]) == 0
    out = capsys.readouterr().out
    assert "dataset is clean" in out and "building:other" in out and "% of pixels" in out


def test_verify_reports_an_empty_test_split_as_training_sees_it(sources, capsys):
    assert convert(sources, "--split", "0.6", "0.4", "0") == 0
    assert main(["verify", "--data_path", str(sources / "out")]) == 0  # training needs train and val only
    assert "test: empty (training does not need it; imseg-infer --split test does)" in capsys.readouterr().out
    for name in os.listdir(sources / "out" / "im_seg" / "val" / "images"):
        os.remove(sources / "out" / "im_seg" / "val" / "images" / name)
        os.remove(sources / "out" / "im_seg" / "val" / "annotations" / (os.path.splitext(name)[0] + ".json"))
    assert main(["verify", "--data_path", str(sources / "out")]) == 1
    assert "split 'val' is empty (no images) (training needs it)" in capsys.readouterr().out


def test_verify_names_every_planted_problem(sources, capsys):
    convert(sources)
    train = sources / "out" / "im_seg" / "train"
    ids = sorted(int(os.path.splitext(n)[0]) for n in os.listdir(train / "images"))
    missing, channels, values, corrupt = (str(i) for i in ids[:4])
    os.remove(train / "annotations" / f"{missing}.json")
    (train / "annotations" / f"{channels}.json").write_text(
        json.dumps({"annotation": np.zeros((3, 16, 16), int).tolist()})
    )
    (train / "annotations" / f"{values}.json").write_text(json.dumps({"annotation": np.full((2, 16, 16), 7).tolist()}))
    (train / "images" / f"{corrupt}.jpg").write_bytes((train / "images" / f"{corrupt}.jpg").read_bytes()[:200])
    assert main(["verify", "--data_path", str(sources / "out")]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 4
    text = "\n".join(problems)
    assert f"{missing}.jpg: no annotation" in text
    assert f"{channels}.json: annotation has 3 channels, classes.json defines 2" in text
    assert f"{values}.json: annotation values must be 0 or 1, found [7]" in text
    assert f"{corrupt}.jpg: unreadable image" in text


def test_show_draws_what_a_configs_augmentation_makes_of_the_tiles(sources, capsys):
    convert(sources)
    config = sources / "aug.yaml"
    config.write_text("name: a\nbackbone: MobileNetV2\nrefine_net_blocks: [[block_1_expand_relu]]\n"
                      "augment: {rotate90: true, scale_range: 0.5, brightness: {probability: 1.0}}\n")  # fmt: skip
    sheet = sources / "augmented.png"
    assert main(["show", "--data-path", str(sources / "out"), "-n", "4", "--augment", "--config", str(config),
                 "--output", str(sheet)]) == 0  # fmt: skip
    cell = (2 * 16 + 4) * (192 // (2 * 16 + 4))  # tile | augmented, enlarged as contact sheets do
    assert Image.open(sheet).width == 2 * (cell + 8) + 8  # two cells a row
    plain = sources / "plain.yaml"
    plain.write_text("name: a\nbackbone: MobileNetV2\nrefine_net_blocks: [[block_1_expand_relu]]\n")
    capsys.readouterr()
    assert main(["show", "--data-path", str(sources / "out"), "--augment", "--config", str(plain),
                 "--output", str(sheet)]) == 2  # fmt: skip
    assert "no augmentation is switched on" in capsys.readouterr().err
    assert (
        main(
            [
                "show",
                "--data-path",
                str(sources / "out"),
                "--augment",
                "--config",
                str(plain),
                "--set",
                "augment.flip=true",
                "--output",
                str(sheet),
            ]
        )
        == 0
    )  # fmt: skip (as imseg-train's --set)


def test_show_writes_a_contact_sheet(sources):
    convert(sources)
    sheet = sources / "sheet.png"
    assert (
        main(["show", "--data_path", str(sources / "out"), "--split", "train", "-n", "6", "--output", str(sheet)]) == 0
    )
    image = Image.open(sheet)
    assert image.width >= 4 * 16 * 12 and image.height > 2 * 16 * 12  # 6 enlarged tiles in rows of 4, plus legend
    # A .jpg name gets JPEG bytes, and a folder that does not exist yet is made, as the other commands do.
    assert main(["show", "--data_path", str(sources / "out"), "--output", str(sources / "new" / "s.jpg")]) == 0
    assert Image.open(sources / "new" / "s.jpg").format == "JPEG"
