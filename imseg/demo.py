"""A synthetic aerial dataset in the AIR `im_seg` layout, for the demo and the tests.

Textured ground, straight roads (`highway:other`) and rectangular roofs (`building:other`), with the
image, `classes.json` and a small config written exactly as AIR ImSeg users have them.
"""

import json
import os

import numpy as np
import tensorflow as tf

from imseg.outputs import write_json

CLASSES = {"building": ["other"], "highway": ["other"]}  # sorted: building:other, highway:other

DEMO_CONFIG = {
    "type": "RefineNet",
    "name": "demo",
    "backbone": "MobileNetV2",
    "backbone_kwargs": {"alpha": 0.35},
    "pretrained": False,
    "backbone_trainable": True,
    "refine_net_blocks": [
        ["block_13_expand_relu", "block_6_expand_relu"],
        ["block_3_expand_relu", "block_1_expand_relu"],
    ],
    "input_shape": [64, 64, 3],
    "classes": [],
    "refine_net_kwargs": {"reduce_channel_scale": 2},
    "augment": {"flip": True, "multiplier": 1, "seed": 0},
    "epochs": 20,
    "batch_size": 16,
    "loss": "BinaryCrossentropy",
    "loss_kwargs": {"from_logits": True},
    "optimizer": "Adam",
    "optimizer_kwargs": {"learning_rate": 0.002},
    "benchmark_class": None,
}


def _smooth_noise(rng, size, cells):
    """Low-frequency noise: a coarse random grid upsampled bilinearly."""
    coarse = rng.random((cells + 1, cells + 1))
    xs = np.linspace(0, cells, size)
    i = np.minimum(xs.astype(int), cells - 1)
    f = xs - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def make_tile(rng, size=64):
    """One (image (size, size, 3) uint8, annotation (2, size, size) uint8) pair."""
    ground = np.array([110, 120, 80]) + rng.normal(0, 12, 3)
    image = ground + 40 * (_smooth_noise(rng, size, 4)[..., None] - 0.5) + rng.normal(0, 8, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    road = np.zeros((size, size), bool)
    for _ in range(rng.integers(0, 3)):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-size / 3, size / 3)
        dist = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle) - offset
        road |= np.abs(dist) < rng.uniform(1.5, 3.5)
    image[road] = np.array([70, 70, 75]) + rng.normal(0, 6, (road.sum(), 3))
    building = np.zeros((size, size), bool)
    for _ in range(rng.integers(0, 5)):
        h, w = rng.integers(6, 18, 2)
        y, x = rng.integers(-4, size - 4, 2)
        roof = np.zeros((size, size), bool)
        roof[max(y, 0) : y + h, max(x, 0) : x + w] = True
        shadow = np.roll(roof, (2, 2), axis=(0, 1)) & ~roof & ~building
        image[shadow] *= 0.55
        colour = rng.choice([[200, 200, 205], [170, 80, 60], [150, 150, 160], [220, 190, 150]])
        image[roof] = colour + rng.normal(0, 6, (roof.sum(), 3))
        building |= roof
    road &= ~building
    annotation = np.stack([building, road]).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), annotation


def write_demo_data(root, counts=(256, 64, 32), size=64, seed=0):
    """Write `root/im_seg/{train,val,test}`, `root/classes.json` and `root/demo_config.json`.

    Returns (data_path, classes_path, config_path). Existing complete demo data is reused.
    """
    config_path = os.path.join(root, "demo_config.json")
    classes_path = os.path.join(root, "classes.json")
    if os.path.exists(config_path):  # written last, so its presence means the data is complete
        return root, classes_path, config_path
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val", "test"), counts):
        image_dir = os.path.join(root, "im_seg", split, "images")
        ann_dir = os.path.join(root, "im_seg", split, "annotations")
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            image, annotation = make_tile(rng, size)
            tf.io.write_file(os.path.join(image_dir, f"{i}.jpg"), tf.io.encode_jpeg(image, quality=92))
            with open(os.path.join(ann_dir, f"{i}.json"), "w", encoding="utf-8") as f:
                json.dump({"annotation": annotation.tolist(), "img": f"{i}.jpg"}, f)
    write_json(classes_path, CLASSES)
    write_json(config_path, DEMO_CONFIG)
    return root, classes_path, config_path
