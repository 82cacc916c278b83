"""AIR im_seg splits: pairing checks, a validated cache built once, and a streaming tf.data pipeline."""

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import write_air_dataset
from imseg import dataset
from imseg.dataset import load_split, make_dataset
from imseg.errors import DataError
from imseg.layout import list_split

NAMES = ["building:hospital", "building:other", "building:parking", "highway:other", "highway:roads"]


@pytest.fixture
def air(tmp_path):
    data_path, _ = write_air_dataset(str(tmp_path / "d"), counts=(7, 3, 2), size=(40, 40))
    return data_path


def annotation(data_path, split, i):
    with open(os.path.join(data_path, "im_seg", split, "annotations", f"{i}.json")) as f:
        return np.array(json.load(f)["annotation"], np.uint8)


def test_pairs_by_stem_in_natural_order(air):
    os.rename(os.path.join(air, "im_seg/train/images/6.jpg"), os.path.join(air, "im_seg/train/images/10.jpg"))
    os.rename(
        os.path.join(air, "im_seg/train/annotations/6.json"), os.path.join(air, "im_seg/train/annotations/10.json")
    )
    assert [stem for stem, _, _ in list_split(air, "train")] == ["0", "1", "2", "3", "4", "5", "10"]


def test_unpaired_and_missing_files_are_named(air):
    os.remove(os.path.join(air, "im_seg/train/annotations/3.json"))
    with pytest.raises(
        DataError, match=r"train/images/3.jpg: no annotation \(3.json or 3.npz expected in .*train/annotations\)$"
    ):
        list_split(air, "train")
    os.remove(os.path.join(air, "im_seg/val/images/1.jpg"))
    with pytest.raises(DataError, match=r"val/annotations/1.json: no image with this id in .*val/images$"):
        list_split(air, "val")
    with pytest.raises(DataError, match="test/images: folder not found"):
        list_split(str(os.path.join(air, "nowhere")), "test")


def test_empty_split(air):
    for sub in ("images", "annotations"):
        folder = os.path.join(air, "im_seg/test", sub)
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
    with pytest.raises(DataError, match="split 'test' is empty"):
        list_split(air, "test")


@pytest.mark.slow
def test_pipeline_yields_uint8_images_and_selected_mask_channels(air):
    meta = load_split(air, "train", len(NAMES), log=lambda m: None)
    assert meta.count == 7
    ds = make_dataset(meta, [3, 1], (40, 40, 3), batch_size=4, training=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [4, 3]  # the partial last batch is kept
    images, masks, valid = batches[0]
    assert images.dtype == tf.uint8 and masks.dtype == tf.uint8 and masks.shape == (4, 40, 40, 2)
    expected = tf.io.decode_jpeg(tf.io.read_file(os.path.join(air, "im_seg/train/images/0.jpg")))
    np.testing.assert_array_equal(images[0], expected)
    np.testing.assert_array_equal(np.moveaxis(masks[0].numpy(), -1, 0), annotation(air, "train", 0)[[3, 1]])
    assert valid.dtype == tf.uint8 and valid.shape == (4, 40, 40) and np.all(valid.numpy() == 1)  # no ignore key
    assert ds.cardinality() == 2


@pytest.mark.parametrize("sizes", [[(24, 24)] * 3, [(24, 24), (16, 20), (24, 24)]])
def test_masks_of_many_classes_unpack_from_several_bytes_in_the_chosen_order(tmp_path, sizes):
    """10 classes and the ignore plane take two bytes per pixel; chosen channels come from both, out of order,
    through the whole-batch decoder (one size) and the one-by-one decoder (mixed sizes)."""
    classes = {"c": [f"{k:02d}" for k in range(10)]}
    data_path, _ = write_air_dataset(str(tmp_path / "d"), classes=classes, counts=(3, 1, 1), size=(24, 24), ignore=2)
    for i, (h, w) in enumerate(sizes):
        labels = (np.random.default_rng(i).random((10, h, w)) < 0.4).astype(np.uint8)
        tf.io.write_file(os.path.join(data_path, f"im_seg/train/images/{i}.jpg"),
                         tf.io.encode_jpeg(np.zeros((h, w, 3), np.uint8)))  # fmt: skip
        ignore = np.zeros((h, w), np.uint8)
        ignore[:, : i + 1] = 1
        _with_ignore(data_path, "train", i, ignore, labels)
    meta = load_split(data_path, "train", 10, log=lambda m: None)
    chosen = [9, 2, 7, 8]
    ds = make_dataset(meta, chosen, (24, 24, 3), batch_size=3, training=False)
    _, masks, valid = next(iter(ds))
    for i, (h, w) in enumerate(sizes):
        if (h, w) != (24, 24):
            continue  # resized by nearest: covered by the resizing tests
        np.testing.assert_array_equal(np.moveaxis(masks[i].numpy(), -1, 0), annotation(data_path, "train", i)[chosen])
        np.testing.assert_array_equal(valid[i].numpy()[:, : i + 1], 0)
        assert valid[i].numpy()[:, i + 1 :].all()


def _with_ignore(air, split, i, ignore, labels=None):
    path = os.path.join(air, "im_seg", split, "annotations", f"{i}.json")
    with open(path) as f:
        data = json.load(f)
    if labels is not None:
        data["annotation"] = labels.tolist()
    data["ignore"] = ignore.tolist()
    with open(path, "w") as f:
        json.dump(data, f)


def test_ignore_planes_become_the_valid_mask_and_leave_the_counts(air):
    rng = np.random.default_rng(5)
    ignore = (rng.random((40, 40)) < 0.3).astype(np.uint8)
    _with_ignore(air, "train", 1, ignore)
    _with_ignore(air, "train", 2, np.ones((40, 40), np.uint8))  # a fully ignored tile
    meta = load_split(air, "train", len(NAMES), log=lambda m: None)
    _, _, valid = next(iter(make_dataset(meta, [0], (40, 40, 3), batch_size=4, training=False)))
    np.testing.assert_array_equal(valid[1], 1 - ignore)
    assert not valid[2].numpy().any() and valid[0].numpy().all()
    labels = np.stack([annotation(air, "train", i) for i in range(7)]).astype(np.int64)
    weights = np.ones((7, 40, 40), np.int64)
    weights[1], weights[2] = 1 - ignore, 0
    assert meta.valid_pixels == weights.sum()
    assert meta.class_pixels == (labels * weights[:, None]).sum((0, 2, 3)).tolist()
    assert meta.pair_pixels[0][1] == (labels[:, 0] * labels[:, 1] * weights).sum()


def test_multiclass_adds_background_or_leaves_unlabelled_pixels_out(air):
    labels = np.zeros((5, 40, 40), np.uint8)
    labels[0, :10], labels[3, 10:20] = 1, 1  # rows 20-39: no label
    ignore = np.zeros((40, 40), np.uint8)
    ignore[20:25] = 1
    _with_ignore(air, "val", 0, ignore, labels)
    meta = load_split(air, "val", len(NAMES), log=lambda m: None)
    kw = {"input_shape": (40, 40, 3), "batch_size": 3, "training": False, "task": "multiclass"}
    _, masks, valid = next(iter(make_dataset(meta, [0, 3], background=True, **kw)))
    assert masks.shape == (3, 40, 40, 3)
    # Background: valid pixels with neither class; the ignored rows 20-24 are not background.
    np.testing.assert_array_equal(masks[0, :, 0, 2], [0] * 25 + [1] * 15)
    np.testing.assert_array_equal(valid[0, :, 0], [1] * 20 + [0] * 5 + [1] * 15)
    _, masks, valid = next(iter(make_dataset(meta, [0, 3], **kw)))
    assert masks.shape == (3, 40, 40, 2)
    np.testing.assert_array_equal(valid[0, :, 0], [1] * 20 + [0] * 20)  # unlabelled pixels do not count


def test_multiclass_refuses_a_pixel_with_two_labels(air):
    from imseg.dataset import check_exclusive

    meta = load_split(air, "train", len(NAMES), log=lambda m: None)
    pair = next((i, j) for i in range(5) for j in range(i + 1, 5) if meta.pair_pixels[i][j])
    with pytest.raises(
        DataError,
        match=rf"annotations/\d+.json: pixels labelled both {NAMES[pair[0]]} and "
        rf"{NAMES[pair[1]]} \(\d+ in split 'train'\); task multiclass needs",
    ):
        check_exclusive(meta, list(pair), [NAMES[k] for k in pair], "train")


def test_other_sizes_are_resized_masks_by_nearest(air):
    meta = load_split(air, "val", len(NAMES), log=lambda m: None)
    images, masks, _ = next(iter(make_dataset(meta, [0, 1, 2, 3, 4], (20, 20, 3), batch_size=3, training=False)))
    assert images.shape == (3, 20, 20, 3) and masks.shape == (3, 20, 20, 5)
    assert set(np.unique(masks.numpy())) <= {0, 1}
    nearest = tf.image.resize(np.moveaxis(annotation(air, "val", 0), 0, -1), (20, 20), method="nearest")
    np.testing.assert_array_equal(masks[0], nearest)


def test_splits_with_mixed_sizes_are_decoded_one_by_one_and_resized(air):
    big = np.random.default_rng(3).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    tf.io.write_file(os.path.join(air, "im_seg/val/images/1.jpg"), tf.io.encode_jpeg(big, quality=100))
    with open(os.path.join(air, "im_seg/val/annotations/1.json"), "w") as f:
        json.dump({"annotation": np.ones((5, 30, 50), int).tolist(), "img": "1.jpg"}, f)
    meta = load_split(air, "val", len(NAMES), log=lambda m: None)
    assert meta.shape is None
    images, masks, _ = next(iter(make_dataset(meta, [2, 0], (20, 20, 3), batch_size=3, training=False)))
    assert images.shape == (3, 20, 20, 3) and masks.shape == (3, 20, 20, 2)
    np.testing.assert_array_equal(masks[1], np.ones((20, 20, 2)))
    nearest = tf.image.resize(np.moveaxis(annotation(air, "val", 0), 0, -1)[..., [2, 0]], (20, 20), method="nearest")
    np.testing.assert_array_equal(masks[0], nearest)


@pytest.mark.slow
def test_training_order_is_shuffled_with_the_seed_and_the_epoch(air):
    meta = load_split(air, "train", len(NAMES), log=lambda m: None)

    def orders(seed, first_epoch=0, epochs=3):  # 7 images in batches of 3: 3 batches per epoch
        ds = make_dataset(meta, [0], (40, 40, 3), batch_size=3, training=True, seed=seed, first_epoch=first_epoch)
        sums = [tf.reduce_sum(tf.cast(b[0], tf.int32), axis=[1, 2, 3]).numpy().tolist() for b in ds.take(3 * epochs)]
        return [sum(sums[3 * e : 3 * e + 3], []) for e in range(epochs)]

    first = orders(1)
    assert [len(epoch) for epoch in first] == [7, 7, 7]  # the last partial batch of each epoch is kept
    assert first == orders(1) and sorted(first[0]) == sorted(first[1]) and first[0] != first[1]
    assert first[1:] == orders(1, first_epoch=1, epochs=2)  # a resumed run sees the same epochs
    assert orders(3)[0] != first[0]


def test_each_shuffle_window_draws_on_every_shard_not_on_a_few_neighbouring_images(tmp_path, monkeypatch):
    # The cache keeps file order, where neighbours come from one source image; a window read from a few shards
    # would hold a few images only.
    monkeypatch.setattr(dataset, "RECORDS_PER_SHARD", 4)
    monkeypatch.setattr(dataset, "SHUFFLE_BUFFER", 8)
    data_path, _ = write_air_dataset(str(tmp_path / "d"), counts=(24, 1, 1), size=(12, 12))
    meta = load_split(data_path, "train", len(NAMES), log=lambda m: None)
    assert len(meta.shards) == 6

    def sums(batches):
        return [s for b in batches for s in tf.reduce_sum(tf.cast(b[0], tf.int32), axis=[1, 2, 3]).numpy().tolist()]

    file_order = sums(make_dataset(meta, [0], (12, 12, 3), batch_size=8, training=False))
    assert len(set(file_order)) == 24  # each image is known by its pixel sum
    shard = {s: i // 4 for i, s in enumerate(file_order)}
    windows = sums(make_dataset(meta, [0], (12, 12, 3), batch_size=8, training=True, seed=2).take(3 * 5))
    for start in range(0, len(windows), 8):  # five epochs of three windows
        assert {shard[s] for s in windows[start : start + 8]} == set(range(6))


def test_cache_is_built_once_and_rebuilt_when_a_file_changes(air):
    logs = []
    first = load_split(air, "train", len(NAMES), log=logs.append)
    again = load_split(air, "train", len(NAMES), log=logs.append)
    assert first == again and len(logs) == 1 and "caching split 'train' (7 images)" in logs[0]
    path = os.path.join(air, "im_seg/train/annotations/2.json")
    old_pixels = int(annotation(air, "train", 2)[0].sum())
    with open(path, "w") as f:
        json.dump({"annotation": np.ones((5, 40, 40), int).tolist(), "img": "2.jpg"}, f)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    rebuilt = load_split(air, "train", len(NAMES), log=logs.append)
    assert len(logs) == 2 and rebuilt.shards != first.shards
    assert not os.path.exists(os.path.dirname(first.shards[0]))  # the stale cache is gone
    assert rebuilt.class_pixels[0] == first.class_pixels[0] - old_pixels + 40 * 40


def test_cache_dir_can_be_moved_with_an_environment_variable(air, tmp_path, monkeypatch):
    monkeypatch.setenv("IMSEG_CACHE_DIR", str(tmp_path / "cache"))
    meta = load_split(air, "val", len(NAMES), log=lambda m: None)
    assert meta.shards[0].startswith(str(tmp_path / "cache"))
    assert not os.path.exists(os.path.join(air, "im_seg", ".cache"))


@pytest.mark.slow
def test_many_files_are_parsed_in_parallel_with_the_same_result(tmp_path):
    data_path, _ = write_air_dataset(str(tmp_path / "big"), counts=(70, 1, 1), size=(12, 12))
    meta = load_split(data_path, "train", len(NAMES), log=lambda m: None)
    masks = np.concatenate([m.numpy() for _, m, _ in make_dataset(meta, list(range(5)), (12, 12, 3), 32, False)])
    expected = np.stack([np.moveaxis(annotation(data_path, "train", i), 0, -1) for i in range(70)])
    np.testing.assert_array_equal(masks, expected)


def _rewrite(air, name, content):
    with open(os.path.join(air, "im_seg/train", name), "wb") as f:
        f.write(content)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "annotations/1.json",
            json.dumps({"annotation": np.zeros((4, 40, 40), int).tolist()}).encode(),
            "1.json: annotation has 4 channels, classes.json defines 5",
        ),
        (
            "annotations/1.json",
            json.dumps({"annotation": np.zeros((5, 40, 39), int).tolist()}).encode(),
            "1.json: annotation is 40x39 but its image is 40x40",
        ),
        (
            "annotations/1.json",
            json.dumps({"annotation": np.full((5, 40, 40), 2).tolist()}).encode(),
            "1.json: annotation values must be 0 or 1, found \\[2\\]",
        ),
        ("annotations/1.json", b'{"annotation": [[[0, 1]', "1.json: unreadable annotation JSON"),
        ("annotations/1.json", b'{"img": "1.jpg"}', "1.json: no 'annotation' key"),
        ("images/1.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "1.jpg: unreadable image"),
    ],
)
def test_bad_files_are_named(air, name, content, message):
    _rewrite(air, name, content)
    with pytest.raises(DataError, match=message):
        load_split(air, "train", len(NAMES), log=lambda m: None)
    assert not os.path.exists(os.path.join(air, "im_seg", ".cache", "train"))


def test_truncated_jpeg_is_named(air):
    path = os.path.join(air, "im_seg/train/images/2.jpg")
    data = open(path, "rb").read()
    _rewrite(air, "images/2.jpg", data[: len(data) // 2])
    with pytest.raises(DataError, match="2.jpg: unreadable image"):
        load_split(air, "train", len(NAMES), log=lambda m: None)


def test_grayscale_and_rgba_images_are_converted_and_said_once(air):
    gray = tf.io.encode_png(np.full((40, 40, 1), 77, np.uint8))
    rgba = tf.io.encode_png(np.full((40, 40, 4), 200, np.uint8))
    for i, data in ((0, gray), (1, gray), (2, rgba)):
        os.remove(os.path.join(air, f"im_seg/train/images/{i}.jpg"))
        tf.io.write_file(os.path.join(air, f"im_seg/train/images/{i}.png"), data)
    logs = []
    meta = load_split(air, "train", len(NAMES), log=logs.append)
    assert sum("is grayscale;" in m for m in logs) == 1 and sum("is RGBA;" in m for m in logs) == 1
    images, _, _ = next(iter(make_dataset(meta, [0], (40, 40, 3), 3, False)))
    assert images.shape == (3, 40, 40, 3)
    np.testing.assert_array_equal(images[0], np.full((40, 40, 3), 77))
    np.testing.assert_array_equal(images[2], np.full((40, 40, 3), 200))
