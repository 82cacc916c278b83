"""AIR `im_seg` splits -> validated, cached, streaming `tf.data` pipelines of (image, mask, valid) batches.

`valid` marks the pixels that count (1) and those that carry no label (0: an annotation's ignore plane);
Keras takes it as the per-pixel sample weight, so losses and metrics skip ignored pixels.
The first time a split is used, every image is decoded and every annotation parsed and checked once,
and the result is written as TFRecord shards (raw uint8 pixels, masks and ignore bit-packed per pixel) under
`D/im_seg/.cache/` (or `$IMSEG_CACHE_DIR`). Later runs read the shards only; a change to any file's name,
size or modification time rebuilds the cache. The cache can be deleted at any time.
"""

import concurrent.futures
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from imseg.annotations import read_packed
from imseg.errors import DataError
from imseg.images import GEOTIFF, check_bit_depth, read_image
from imseg.layout import list_split

CACHE_VERSION = 4
# Tiles are cached in file order, so neighbouring records come from one source image. Small shards read many at a
# time give each shuffle window records from all over the split, not from a few images (v3: 1024-record shards, four
# at a time, gave a window of 1024 tiles from 11-17 of the Dubai set's 58 training images; BatchNorm's statistics and
# the last steps of a run followed those few images).
RECORDS_PER_SHARD = 64
SHARDS_READ_AT_ONCE = 128
SHUFFLE_BUFFER = 1024


def cache_root(data_path):
    """`D/im_seg/.cache`, or `$IMSEG_CACHE_DIR` when set (e.g. for a read-only dataset)."""
    chosen = os.environ.get("IMSEG_CACHE_DIR")
    if chosen and os.path.exists(chosen) and not os.path.isdir(chosen):
        raise DataError(f"IMSEG_CACHE_DIR={chosen}: not a folder; point it at a folder (created if needed)")
    return chosen or os.path.join(data_path, "im_seg", ".cache")


def fingerprint(entries, num_classes):
    h = hashlib.sha256(f"v{CACHE_VERSION}:{num_classes}".encode())
    for stem, image, ann in entries:
        for path in (image, ann):
            st = os.stat(path)
            h.update(f"{stem}|{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    if os.environ.get("IMSEG_CACHE_DIR"):  # a shared cache folder can hold several datasets
        h.update(os.path.abspath(entries[0][1]).encode())
    return h.hexdigest()[:20]


def decode_image(path):
    """Decode an image file to (h, w, 3) uint8; grayscale is repeated to RGB, alpha dropped.

    Returns (array, note) where note says what was converted, or None. JPEG, PNG, BMP and GIF are decoded
    by TensorFlow, GeoTIFF by rasterio; images of more than 8 bits per sample are refused, as everywhere.
    """
    if path.lower().endswith(GEOTIFF):
        return read_image(path), None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: unreadable image: {e.strerror}") from None
    check_bit_depth(path, data)
    # libjpeg writes its own complaint about a truncated file straight to stderr before failing: refuse such a
    # file first (a JPEG ends with the EOI marker; anything after it is tolerated).
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        raise DataError(f"{path}: unreadable image: not a complete JPEG, PNG, BMP or GIF file")
    try:
        image = tf.io.decode_image(data, expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError):
        raise DataError(f"{path}: unreadable image: not a complete JPEG, PNG, BMP or GIF file") from None
    channels = image.shape[-1]
    note = None
    if channels in (1, 2):
        image, note = np.repeat(image[..., :1], 3, axis=-1), "grayscale"
    elif channels == 4:
        image, note = image[..., :3], "RGBA"
    if image.dtype != np.uint8:
        raise DataError(f"{path}: {image.dtype} pixels; expected 8-bit images")
    return image, note


class SplitCache:
    """The validated TFRecord cache of one split (built on first use)."""

    def __init__(self, data_path, split, num_classes, log=print):
        self.split = split
        self.entries = list_split(data_path, split)
        self.num_classes = num_classes
        self.key = fingerprint(self.entries, num_classes)
        self.dir = os.path.join(cache_root(data_path), f"{split}-{self.key}")
        self.log = log

    @property
    def meta_path(self):
        return os.path.join(self.dir, "meta.json")

    def build(self):
        """Check and write the split into a temporary folder beside the cache (None if the cache is current)."""
        if os.path.exists(self.meta_path):
            return None
        parent = os.path.dirname(self.dir)
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{self.split}-building-", dir=parent)
        except OSError as e:
            raise DataError(
                f"{parent}: cannot write the dataset cache ({e.strerror}); set IMSEG_CACHE_DIR to a writable folder"
            ) from None
        try:
            self.log(f"imseg: caching split '{self.split}' ({len(self.entries)} images) in {self.dir}")
            meta = self._write_shards(tmp)
            with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
                json.dump(meta, f)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def commit(self, tmp):
        """Move a built cache into place, removing superseded caches of this split.

        Another process (e.g. a second worker on a shared disk) may have committed the same cache first;
        then ours is dropped.
        """
        parent = os.path.dirname(self.dir)
        for old in os.listdir(parent):
            path = os.path.join(parent, old)
            if old.startswith(f"{self.split}-") and path != self.dir and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, self.dir)
        except OSError:
            if not os.path.exists(self.meta_path):
                raise
            shutil.rmtree(tmp, ignore_errors=True)

    def meta(self, folder=None):
        """The split's metadata, from the cache or from a just-built `folder` not yet committed."""
        folder = folder or self.dir
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        meta["shards"] = tuple(os.path.join(folder, s) for s in meta["shards"])
        return SplitMeta(**{**meta, "shape": tuple(meta["shape"]) if meta["shape"] else None})

    def _write_shards(self, folder):
        shards, notes, count, sizes = [], set(), 0, set()
        stats = LabelStats(self.num_classes)
        writer = None
        kind = None  # (bands, dtype) of the split's first image: every image must have the same
        for (stem, image_path, ann_path), (packed, shape) in zip(self.entries, _parse_all(self.entries)):
            image, note = decode_image(image_path)
            if note and note not in notes:
                notes.add(note)
                self.log(f"imseg: note: {image_path} is {note}; converting such images to RGB")
            if kind is None:
                kind, first = (image.shape[2], image.dtype.name), image_path
            elif (image.shape[2], image.dtype.name) != kind:
                raise DataError(
                    f"{image_path}: {image.shape[2]} band(s) of {image.dtype.name}, but {first} has {kind[0]} of "
                    f"{kind[1]}; the images of a split must have the same bands and type"
                )
            if shape[0] != self.num_classes:
                raise DataError(
                    f"{ann_path}: annotation has {shape[0]} channels, classes.json defines {self.num_classes}"
                )
            if tuple(shape[1:]) != image.shape[:2]:
                raise DataError(
                    f"{ann_path}: annotation is {shape[1]}x{shape[2]} but its image is "
                    f"{image.shape[0]}x{image.shape[1]}"
                )
            if count % RECORDS_PER_SHARD == 0:
                if writer:
                    writer.close()
                shards.append(f"shard-{len(shards):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(os.path.join(folder, shards[-1]))
            writer.write(_example(stem, image, packed))
            sizes.add(image.shape[:2])
            stats.add(packed, ann_path, image)
            count += 1
        writer.close()
        return {
            "count": count,
            "num_classes": self.num_classes,
            "shards": shards,
            "shape": list(sizes.pop()) if len(sizes) == 1 else None,
            "bands": kind[0],
            "dtype": kind[1],
            **stats.as_dict(),
        }


@dataclass(frozen=True)
class SplitMeta:
    """What the cache knows of a split: its records and pixel counts (over valid pixels).

    Args:
        count: images (records).
        num_classes: the classes of `classes.json` the records hold.
        shards: the TFRecord files.
        shape: (height, width) when every record has it, else None.
        bands, dtype: the images' bands and pixel type (uint8, uint16, int16 or float32).
        valid_pixels: pixels that count.
        class_pixels: per class, its valid pixels.
        pair_pixels: per pair of classes, valid pixels labelled with both (the diagonal: `class_pixels`).
        pair_examples: `"i,j"` -> the first annotation file where classes i and j overlap.
        band_mean, band_std, band_min, band_max: per band, over the valid pixels (`normalization: auto` uses
            the first two, augmentation of pixel types other than uint8 the range).
    """

    count: int
    num_classes: int
    shards: tuple
    shape: "tuple | None"
    bands: int
    dtype: str
    valid_pixels: int
    class_pixels: list
    pair_pixels: list
    pair_examples: dict
    band_mean: list
    band_std: list
    band_min: list
    band_max: list

    def value_range(self, bands=None):
        """(low, high) of the chosen bands' pixels: 0-255 for 8-bit imagery, else the split's own range."""
        if self.dtype == "uint8":
            return 0.0, 255.0
        chosen = range(self.bands) if bands is None else bands
        low, high = min(self.band_min[b] for b in chosen), max(self.band_max[b] for b in chosen)
        return float(low), float(high if high > low else low + 1)


class LabelStats:
    """Pixel counts of a split over its valid pixels: per class, per pair of classes (pixels labelled with
    both, which a multiclass task cannot take), and the first file where each pair overlaps."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.valid = 0
        self.pairs = np.zeros((num_classes, num_classes), np.int64)
        self.examples = {}
        self.band_sum = self.band_squares = 0.0
        self.band_min, self.band_max = np.inf, -np.inf

    def add(self, packed, path, image):
        planes = self.num_classes + 1
        bits = np.unpackbits(np.frombuffer(packed, np.uint8).reshape(-1, (planes + 7) // 8), axis=-1, count=planes)
        valid = bits[:, -1] == 0
        labels = bits[valid, :-1].astype(np.int64)
        pixels = image.reshape(-1, image.shape[-1])[valid].astype(np.float64)
        self.band_sum = self.band_sum + pixels.sum(axis=0)
        self.band_squares = self.band_squares + np.square(pixels).sum(axis=0)
        if len(pixels):
            self.band_min = np.minimum(self.band_min, pixels.min(axis=0))
            self.band_max = np.maximum(self.band_max, pixels.max(axis=0))
        self.valid += len(labels)
        pairs = labels.T @ labels  # diagonal: pixels of each class
        for i, j in zip(*np.nonzero((np.triu(pairs, 1) > 0) & (self.pairs == 0))):
            self.examples[f"{i},{j}"] = path
        self.pairs += pairs

    def as_dict(self):
        n = max(self.valid, 1)
        mean = np.asarray(self.band_sum, np.float64) / n
        std = np.sqrt(np.maximum(np.asarray(self.band_squares, np.float64) / n - mean**2, 0.0))
        return {
            "band_mean": np.atleast_1d(mean).tolist(),
            "band_std": np.atleast_1d(std).tolist(),
            "band_min": np.atleast_1d(self.band_min).tolist(),
            "band_max": np.atleast_1d(self.band_max).tolist(),
            "valid_pixels": int(self.valid),
            "class_pixels": np.diag(self.pairs).tolist(),
            "pair_pixels": self.pairs.tolist(),
            "pair_examples": self.examples,
        }


def _parse_all(entries):
    """Yield read_packed(annotation) in order, several files at a time (the parsing is NumPy, which
    releases the GIL, and file reads)."""
    pool = concurrent.futures.ThreadPoolExecutor(min(os.cpu_count() or 1, 8))
    try:
        yield from pool.map(read_packed, [ann for _, _, ann in entries])
    finally:  # on a bad file, do not wait for the rest to be parsed
        pool.shutdown(wait=True, cancel_futures=True)


def _example(stem, image, packed):
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[stem.encode()])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        "mask": tf.train.Feature(bytes_list=tf.train.BytesList(value=[packed])),
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(image.shape[:2]))),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "shape": tf.io.FixedLenFeature([2], tf.int64),
}


def _decoder(meta, class_indices, size, task="multilabel", background=False, bands=None):
    """Records -> (images (..., h, w, C) of the split's pixel type, masks (..., h, w, K) and valid (..., h, w)
    uint8), at `size`.

    `bands` (0-based) selects and orders the images' bands (default: all). The masks hold the chosen
    classes, plus (multiclass with `background`) a last channel for valid pixels that carry none of them;
    multiclass without background leaves such pixels out of `valid`. When every record has one size it
    decodes whole batches of records at once; otherwise one record at a time, each resized as needed.
    """
    num_classes, record_shape, pixel_type, stored = meta.num_classes, meta.shape, tf.as_dtype(meta.dtype), meta.bands
    chosen = list(range(stored)) if bands is None else list(bands)
    packed_bytes = (num_classes + 1 + 7) // 8
    # Plane k (a class, or k = num_classes: ignore) is bit 7 - k % 8 of byte k // 8. Unpacking looks each
    # byte up in a 256-row table of its chosen bits: one gather per byte, half the time of shift-and-mask.
    planes = list(class_indices) + [num_classes]
    used = sorted({k // 8 for k in planes})
    tables = [
        tf.constant([[(v >> (7 - k % 8)) & 1 for k in planes if k // 8 == b] for v in range(256)], tf.uint8)
        for b in used
    ]
    from_bytes = [k for b in used for k in planes if k // 8 == b]  # the planes in table order
    order = None if from_bytes == planes else tf.constant([from_bytes.index(k) for k in planes], tf.int32)
    height, width = size
    channels = len(class_indices) + (task == "multiclass" and background)

    def unpack(packed):
        parts = [tf.gather(table, tf.cast(packed[..., b], tf.int32)) for b, table in zip(used, tables)]
        bits = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
        return bits if order is None else tf.gather(bits, order, axis=-1)

    def targets(bits):
        mask, valid = bits[..., :-1], 1 - bits[..., -1]
        if task == "multiclass":
            labelled = tf.reduce_max(mask, axis=-1)
            if background:
                mask = tf.concat([mask, ((1 - labelled) * valid)[..., None]], axis=-1)
            else:
                valid = valid * labelled
        return mask, valid

    def pixels(raw, shape):
        image = tf.reshape(tf.io.decode_raw(raw, pixel_type), shape + [stored])
        return image if chosen == list(range(stored)) else tf.gather(image, chosen, axis=-1)

    def decode_one(record):
        ex = tf.io.parse_single_example(record, _FEATURES)
        hw = tf.cast(ex["shape"], tf.int32)
        image = pixels(ex["image"], [hw[0], hw[1]])
        bits = unpack(tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), [hw[0], hw[1], packed_bytes]))
        same = tf.reduce_all(tf.equal(hw, [height, width]))
        image = tf.cond(same, lambda: image, lambda: _resize(image, size, "bilinear"))
        bits = tf.cond(same, lambda: bits, lambda: _resize(bits, size, "nearest"))
        mask, valid = targets(bits)
        return (
            tf.ensure_shape(image, [height, width, len(chosen)]),
            tf.ensure_shape(mask, [height, width, channels]),
            tf.ensure_shape(valid, [height, width]),
        )

    def decode_batch(records):
        ex = tf.io.parse_example(records, _FEATURES)
        h, w = record_shape
        image = pixels(ex["image"], [-1, h, w])
        bits = unpack(tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), [-1, h, w, packed_bytes]))
        if (h, w) != (height, width):
            image, bits = _resize(image, size, "bilinear"), _resize(bits, size, "nearest")
        return (image, *targets(bits))

    return decode_batch if record_shape else decode_one


def _resize(x, size, method):
    """Resized, in the same pixel type (integers rounded and kept in their range)."""
    y = tf.image.resize(x, size, method=method)
    if x.dtype.is_floating:
        return tf.cast(y, x.dtype)
    return tf.cast(tf.clip_by_value(tf.round(y), x.dtype.min, x.dtype.max), x.dtype)


def make_dataset(
    meta: "SplitMeta",
    class_indices: list,
    input_shape: tuple,
    batch_size: int,
    training: bool,
    seed: int = 0,
    task: str = "multilabel",
    background: bool = False,
    first_epoch: int = 0,
    bands: "list | None" = None,
) -> tf.data.Dataset:
    """Stream a cached split as batches of (images, masks, valid); the last partial batch is kept.

    Args:
        meta: a split's metadata from `load_splits` / `load_split`.
        bands: 0-based bands of the images to keep, in order (default: all).
        class_indices: the `classes.json` channels to train on, in output order.
        input_shape: (height, width, ...) the images and masks are resized to.
        batch_size: images per batch.
        training: an endless, shuffled stream (see below) rather than one pass in file order.
        seed: the seed of the training order; `first_epoch`: the epoch the stream starts at.
        task, background: as the config's keys (the multiclass background channel, the valid mask).

    Returns:
        A `tf.data.Dataset` of (images (N, h, w, C) in the split's pixel type, masks (N, h, w, K) uint8,
        valid (N, h, w) uint8).

    `masks` has one channel per chosen class (plus the background channel for `task="multiclass"` with
    `background`); `valid` (N, h, w) is 1 where a pixel counts. Keras reads the triple as
    (x, y, sample_weight).

    Evaluation (`training=False`): one pass in file order. Training: an endless stream of epochs from
    `first_epoch` on, each `batches_per_epoch(meta, batch_size)` batches long (pass that to `fit` as
    `steps_per_epoch`), each a permutation of the split decided by (`seed`, epoch) alone — so a resumed
    run sees exactly the batches an uninterrupted run would. Shard order and a bounded buffer of records
    are shuffled, so memory does not grow with the dataset.
    """
    record_shape = meta.shape
    decode = _decoder(meta, class_indices, tuple(input_shape[:2]), task, background, bands)

    def one_pass(epoch=None):
        """The split once: in file order (`epoch` None) or in the permutation of (seed, epoch)."""
        shards = tf.data.Dataset.from_tensor_slices(list(meta.shards))
        if epoch is not None:
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            shards = shards.batch(len(meta.shards)).flat_map(lambda names: _permute(names, key, -1))
        ds = shards.interleave(  # evaluation reads shards one after another: records in file order
            tf.data.TFRecordDataset,
            cycle_length=min(SHARDS_READ_AT_ONCE, len(meta.shards)) if epoch is not None else 1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if epoch is not None:  # shuffle within consecutive windows of records (memory: one window)
            ds = ds.batch(SHUFFLE_BUFFER).enumerate().flat_map(lambda i, records: _permute(records, key, i))
        if record_shape:  # one size throughout: decode whole batches, far fewer and larger operations
            return ds.batch(batch_size).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)

    if training:
        ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(one_pass)
    else:  # Keras knows the length of the pass
        ds = one_pass().apply(tf.data.experimental.assert_cardinality(batches_per_epoch(meta, batch_size)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _permute(values, key, part):
    """The elements of a 1-D tensor as a dataset, in a permutation decided by (key, part) alone."""
    seed = tf.stack([key[0] * 1000003 + key[1], tf.cast(part, tf.int64)])
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(values)[:1], seed=seed, alg="philox"))
    return tf.data.Dataset.from_tensor_slices(tf.gather(values, order))


def spread_tiles(ds, count, n):
    """`n` tiles spread evenly over an evaluation stream of `count` tiles, as (images, masks, valid) arrays;
    the same tiles every time (the stream is in file order)."""
    wanted = set(np.linspace(0, count - 1, min(n, count)).round().astype(int).tolist())
    found, index = [], 0
    for batch in ds:
        for sample in zip(*(t.numpy() for t in batch)):
            if index in wanted:
                found.append(sample)
            index += 1
        if index > max(wanted):
            break
    return tuple(np.stack(parts) for parts in zip(*found))


def batches_per_epoch(meta, batch_size):
    return -(-meta.count // batch_size)


def load_splits(data_path, splits, num_classes, log=None, check=None):
    """Validate and cache the splits, all or nothing: a bad file in any of them leaves no cache behind.

    `check(split, meta)`, if given, may refuse a split by raising (e.g. `check_exclusive`); it runs
    before any new cache is kept. Returns the metadata (count, shards, pixel counts) of each split, in order.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    caches = [SplitCache(data_path, split, num_classes, log) for split in splits]
    root = cache_root(data_path)
    root_existed = os.path.isdir(root)
    built = []
    try:
        for cache in caches:
            built.append(cache.build())
        if check:
            for split, cache, tmp in zip(splits, caches, built):
                check(split, cache.meta(tmp))
    except BaseException:
        for tmp in built:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        if not root_existed and os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)  # no empty .cache/ left behind
        raise
    for cache, tmp in zip(caches, built):
        if tmp:
            cache.commit(tmp)
    return [cache.meta() for cache in caches]


def load_split(data_path, split, num_classes, log=None, check=None):
    """`load_splits` for one split."""
    return load_splits(data_path, [split], num_classes, log, check)[0]


def check_exclusive(meta, class_indices, names, split):
    """Multiclass needs classes that exclude each other: refuse a split where a valid pixel has two labels."""
    for a in range(len(class_indices)):
        for b in range(a + 1, len(class_indices)):
            i, j = sorted((class_indices[a], class_indices[b]))
            if meta.pair_pixels[i][j]:
                raise DataError(
                    f"{meta.pair_examples[f'{i},{j}']}: pixels labelled both {names[a]} and {names[b]} "
                    f"({meta.pair_pixels[i][j]} in split '{split}'); task multiclass needs classes that exclude "
                    "each other (use task: multilabel, or mark such pixels ignored)"
                )


def chosen_bands(config, tile_bands):
    """The 0-based image bands a model of `config` reads from tiles of `tile_bands` bands, or None for all:
    the config's `bands`, else the first 3 when a pretrained RGB backbone meets tiles of more bands."""
    if config.bands:
        return [b - 1 for b in config.bands]
    if config.pretrained and config.input_shape[2] == 3 and tile_bands > 3:
        return [0, 1, 2]
    return None


def split_check(task, class_indices, names, channels=None, bands=None, rgb_default=False, data_path=None):
    """The `check` of `load_splits` for a model: the images have the bands it takes (`channels` of them, or
    the 0-based `bands` chosen, or with `rgb_default` their first 3), and multiclass refuses overlapping labels.
    Messages name the split's image folder under `data_path`."""

    def check(split, meta):
        where = os.path.join(data_path, "im_seg", split, "images") if data_path else f"split '{split}'"
        if bands is not None and max(bands) >= meta.bands:
            raise DataError(f"{where}: band {max(bands) + 1} is chosen (bands), but the images have "
                            f"{meta.bands} band(s)")  # fmt: skip
        first_three = rgb_default and channels == 3 and meta.bands > 3
        if channels is not None and bands is None and meta.bands != channels and not first_three:
            raise DataError(f"{where}: the images have {meta.bands} band(s), but input_shape takes "
                            f"{channels}; set input_shape's last number to {meta.bands}, or choose bands")  # fmt: skip
        if task == "multiclass":
            check_exclusive(meta, class_indices, names, split)

    return check


@dataclass(frozen=True)
class DataSummary:
    """What the training split says that a model is built with (`imseg.build.build_model(data=...)`).

    Args:
        bands: the 0-based image bands the model reads, or None for all of the tiles'.
        band_mean, band_std: per chosen band, over the valid pixels (`normalization: auto`; a constant band's
            std is 1).
        value_range: (low, high) of the chosen bands' pixels, which photometric augmentation works in.
        class_frequencies: per output channel, its share of the pixels (the head's prior).
        dtype: the tiles' pixel type.
    """

    bands: "tuple | None"
    band_mean: tuple
    band_std: tuple
    value_range: tuple
    class_frequencies: tuple
    dtype: str


def summarize(meta, class_indices, bands=None, task="multilabel", background=False):
    """The DataSummary of a split (its SplitMeta) for a model of the output channels `class_indices` (plus the
    implicit background of a multiclass task with `background`) that reads the 0-based `bands` (None: all)."""
    chosen = list(range(meta.bands)) if bands is None else list(bands)
    return DataSummary(
        bands=None if bands is None else tuple(bands),
        band_mean=tuple(float(meta.band_mean[b]) for b in chosen),
        band_std=tuple(float(meta.band_std[b] or 1.0) for b in chosen),
        value_range=meta.value_range(chosen),
        class_frequencies=tuple(float(f) for f in class_frequencies(meta, class_indices, task, background)),
        dtype=meta.dtype,
    )


def class_frequencies(meta, class_indices, task="multilabel", background=False):
    """Each output channel's share of the split's valid pixels (multilabel) or of its labelled pixels
    (multiclass: the channels' shares sum to 1), the priors the head's bias starts from."""
    pixels = np.array([meta.class_pixels[k] for k in class_indices], np.float64)
    valid = float(meta.valid_pixels)
    if task == "multilabel":
        return pixels / max(valid, 1.0)
    if background:
        pixels = np.append(pixels, max(valid - pixels.sum(), 0.0))
    return pixels / max(pixels.sum(), 1.0)
