"""AIR `im_seg` splits -> validated, cached, streaming `tf.data` pipelines of (uint8 image, uint8 mask).

The first time a split is used, every image is decoded and every annotation parsed and checked once,
and the result is written as TFRecord shards (raw uint8 pixels, masks bit-packed per pixel) under
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

import numpy as np
import tensorflow as tf

from imseg.annotations import read_packed
from imseg.errors import DataError
from imseg.layout import list_split

CACHE_VERSION = 1
RECORDS_PER_SHARD = 1024
SHUFFLE_BUFFER = 1024


def cache_root(data_path):
    return os.environ.get("IMSEG_CACHE_DIR") or os.path.join(data_path, "im_seg", ".cache")


def fingerprint(entries, num_classes):
    h = hashlib.sha256(f"v{CACHE_VERSION}:{num_classes}".encode())
    for stem, image, ann in entries:
        for path in (image, ann):
            st = os.stat(path)
            h.update(f"{stem}|{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    if os.environ.get("IMSEG_CACHE_DIR"):  # a shared cache folder can hold several datasets
        h.update(os.path.abspath(entries[0][1]).encode())
    return h.hexdigest()[:20]


def decode_image(path, data=None):
    """Decode a JPEG/PNG file to (h, w, 3) uint8; grayscale is repeated to RGB, alpha dropped.

    Returns (array, note) where note says what was converted, or None.
    """
    try:
        data = tf.io.read_file(path) if data is None else data
        image = tf.io.decode_image(data, expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError) as e:
        raise DataError(f"{path}: unreadable image: {str(e).strip().splitlines()[0][:200]}") from None
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
            raise DataError(f"{parent}: cannot write the dataset cache ({e.strerror}); set IMSEG_CACHE_DIR") from None
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

    def meta(self):
        with open(self.meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        meta["shards"] = [os.path.join(self.dir, s) for s in meta["shards"]]
        return meta

    def _write_shards(self, folder):
        shards, notes, count, sizes = [], set(), 0, set()
        pixels = np.zeros(self.num_classes, np.int64)
        writer = None
        for (stem, image_path, ann_path), (packed, shape) in zip(self.entries, _parse_all(self.entries)):
            image, note = decode_image(image_path)
            if note and note not in notes:
                notes.add(note)
                self.log(f"imseg: note: {image_path} is {note}; converting such images to RGB")
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
            bits = np.unpackbits(np.frombuffer(packed, np.uint8).reshape(-1, (self.num_classes + 7) // 8), axis=-1)
            pixels += bits[:, : self.num_classes].sum(axis=0, dtype=np.int64)
            count += 1
        writer.close()
        return {"count": count, "num_classes": self.num_classes, "shards": shards, "class_pixels": pixels.tolist(),
                "shape": list(sizes.pop()) if len(sizes) == 1 else None}


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


def _decoder(class_indices, num_classes, size, record_shape=None):
    """Records -> (images (..., h, w, 3) uint8, masks (..., h, w, K) uint8 of the chosen classes) at `size`.

    With `record_shape` (every record of the split has that size) it decodes whole batches of records
    at once; otherwise one record at a time, each resized as needed.
    """
    packed_bytes = (num_classes + 7) // 8
    # Class k is bit 7 - k % 8 of byte k // 8: pick each chosen class's byte, then its bit.
    byte = tf.constant([k // 8 for k in class_indices], tf.int32)
    shift = tf.constant([7 - k % 8 for k in class_indices], tf.uint8)
    height, width = size

    def unpack(packed):
        return tf.bitwise.bitwise_and(tf.bitwise.right_shift(tf.gather(packed, byte, axis=-1), shift), 1)

    def fit(image, mask, same):
        image = tf.cond(same, lambda: image, lambda: _resize(image, size, "bilinear"))
        mask = tf.cond(same, lambda: mask, lambda: _resize(mask, size, "nearest"))
        return image, mask

    def decode_one(record):
        ex = tf.io.parse_single_example(record, _FEATURES)
        hw = tf.cast(ex["shape"], tf.int32)
        image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [hw[0], hw[1], 3])
        mask = unpack(tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), [hw[0], hw[1], packed_bytes]))
        image, mask = fit(image, mask, tf.reduce_all(tf.equal(hw, [height, width])))
        return tf.ensure_shape(image, [height, width, 3]), tf.ensure_shape(mask, [height, width, len(class_indices)])

    def decode_batch(records):
        ex = tf.io.parse_example(records, _FEATURES)
        h, w = record_shape
        image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, h, w, 3])
        mask = unpack(tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), [-1, h, w, packed_bytes]))
        if (h, w) != (height, width):
            image, mask = _resize(image, size, "bilinear"), _resize(mask, size, "nearest")
        return image, mask

    return decode_batch if record_shape else decode_one


def _resize(x, size, method):
    y = tf.image.resize(x, size, method=method)
    return tf.cast(tf.clip_by_value(tf.round(y), 0, 255), tf.uint8)


def make_dataset(meta, class_indices, input_shape, batch_size, training, seed=0):
    """Stream a cached split as batches of (uint8 images, uint8 masks); the last partial batch is kept.

    Training shuffles the shard order and a bounded buffer of records, so memory does not grow with
    the dataset.
    """
    shards = tf.data.Dataset.from_tensor_slices(meta["shards"])
    if training:
        shards = shards.shuffle(len(meta["shards"]), seed=seed, reshuffle_each_iteration=True)
    ds = shards.interleave(  # evaluation reads shards one after another: records in file order
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(meta["shards"])) if training else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # the seed alone decides the order: runs are reproducible
    )
    if training:
        ds = ds.shuffle(min(meta["count"], SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    record_shape = meta.get("shape")
    decode = _decoder(class_indices, meta["num_classes"], tuple(input_shape[:2]), record_shape)
    batches = -(-meta["count"] // batch_size)
    if record_shape:  # one size throughout: decode whole batches, far fewer and larger operations
        ds = ds.batch(batch_size).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))  # Keras knows the epoch length
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def load_splits(data_path, splits, num_classes, log=None):
    """Validate and cache the splits, all or nothing: a bad file in any of them leaves no cache behind.

    Returns the metadata (count, shards, class pixel counts) of each split, in order.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    caches = [SplitCache(data_path, split, num_classes, log) for split in splits]
    built = []
    try:
        for cache in caches:
            built.append(cache.build())
    except BaseException:
        for tmp in built:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        raise
    for cache, tmp in zip(caches, built):
        if tmp:
            cache.commit(tmp)
    return [cache.meta() for cache in caches]


def load_split(data_path, split, num_classes, log=None):
    """`load_splits` for one split."""
    return load_splits(data_path, [split], num_classes, log)[0]
