"""Shared test helpers: tiny AIR datasets, the CLI in a subprocess, Keras round trips, NumPy references."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_CONFIG = os.path.join(REPO, "configs", "refine_net_224_pretrained_augment.json")
RUN = "refine_net_224_pretrained_augment"  # the name in SEED_CONFIG
SMALL = ["--set", "pretrained=false", "--set", "input_shape=[32, 32, 3]", "--set", "batch_size=4"]
# The seed config on a narrow backbone cut after its stride-4 features (two refine levels, strides 4 and 2): a run
# that only needs *a* trained model builds, traces and exports in a fraction of ResNet50's time (tracing is most of a
# small run's time, and follows the layers kept: a 1-epoch run costs 20 % less CPU than when cut at stride 8).
LIGHT = ["--set", "backbone=MobileNetV2", "--set", "backbone_kwargs.alpha=0.35",
         "--set", 'refine_net_blocks=[["block_3_expand_relu"], ["block_1_expand_relu"]]']  # fmt: skip
AIR_CLASSES = {"building": ["hospital", "parking", "other"], "highway": ["roads", "other"]}


def write_air_dataset(root, classes=None, counts=(8, 4, 4), size=(40, 40), seed=0, exclusive=False, ignore=0):
    """Write an AIR im_seg dataset of random rectangles (one set per class, overlaps allowed unless `exclusive`:
    then a later class takes the pixel). `ignore` > 0 marks a border that many pixels wide as ignored in
    every annotation (the "ignore" key).

    Returns (data_path, classes_path). Images are brighter where any class is present, so a model
    can learn something in a few steps.
    """
    classes = classes or AIR_CLASSES
    names = sorted(f"{s}:{c}" for s, subs in classes.items() for c in subs)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in zip(("train", "val", "test"), counts):
        os.makedirs(os.path.join(root, "im_seg", split, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, "im_seg", split, "annotations"), exist_ok=True)
        for i in range(count):
            ann = np.zeros((len(names), h, w), np.uint8)
            for k in range(len(names)):
                y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
                ann[k, y : y + rng.integers(4, h // 2), x : x + rng.integers(4, w // 2)] = 1
                if exclusive:
                    ann[:k, ann[k] == 1] = 0
            image = rng.integers(0, 90, (h, w, 3)) + 120 * ann.max(axis=0)[..., None]
            encoded = tf.io.encode_jpeg(image.astype(np.uint8), quality=95)
            tf.io.write_file(os.path.join(root, "im_seg", split, "images", f"{i}.jpg"), encoded)
            data = {"annotation": ann.tolist(), "img": f"{i}.jpg"}
            if ignore:
                border = np.ones((h, w), np.uint8)
                border[ignore:-ignore, ignore:-ignore] = 0
                data["ignore"] = border.tolist()
            with open(os.path.join(root, "im_seg", split, "annotations", f"{i}.json"), "w") as f:
                json.dump(data, f)
    classes_path = os.path.join(root, "classes.json")
    with open(classes_path, "w") as f:
        json.dump(classes, f)
    return root, classes_path


def run_module(module, *args, cwd=None, env=None, timeout=600):
    """Run `python -m module args` as a user would; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(module, *args, cwd=None):
    """`python -m module args` in this process: the tool's `main()` with stdout and stderr captured; returns a
    CompletedProcess as `run_module` does. For tests of what a tool does, not of its process (signals, locks,
    imports): each process would first spend seconds importing TensorFlow."""
    import contextlib
    import importlib
    import io

    main = importlib.import_module("imseg.data.__main__" if module == "imseg.data" else module).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or os.getcwd()):
        try:
            status = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            status = e.code
    return subprocess.CompletedProcess([module, *args], status or 0, out.getvalue(), err.getvalue())


def files_under(folder):
    """Every file below `folder` (empty list when it does not exist)."""
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]


def assert_round_trip(obj, tmp_path=None, example=None):
    """`obj` survives get_config -> JSON -> from_config, and (models, given `tmp_path`) a `.keras` file with equal
    outputs."""
    serialized = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(clone) is type(obj)
    assert _plain(clone.get_config()) == _plain(obj.get_config())
    if isinstance(obj, keras.Model) and tmp_path is not None:
        path = os.path.join(tmp_path, "round_trip.keras")
        obj.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(obj)
        assert _plain(loaded.get_config()) == _plain(obj.get_config())
        if example is not None:  # called eagerly: tracing a predict function twice costs more than the call
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(loaded(example, training=False)),
                keras.ops.convert_to_numpy(obj(example, training=False)),
                atol=1e-5,
            )
        return loaded
    return clone


def _plain(config):
    """Configs compared as JSON data (tuples and lists are the same there)."""
    return json.loads(json.dumps(config))


def reference_scores(truth, logits, threshold=0.0):
    """NumPy reference of imseg's metrics: exact counts over all pixels, NaN for 0/0."""
    c = truth.shape[-1]
    t = truth.reshape(-1, c) > 0.5
    p = logits.reshape(-1, c) > threshold
    tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    mean = np.nanmean(iou) if np.isfinite(iou).any() else np.nan
    return {"iou": iou, "precision": precision, "recall": recall, "mean_iou": mean}


# A georeferenced scene: UTM zone 40N (Dubai), 0.5 m pixels; vector labels in WGS84 as OpenStreetMap exports them.
SCENE_CRS = "EPSG:32640"
PIXEL = 0.5
BUILDING = (20, 60, 30, 90)  # rows y0:y1, columns x0:x1, with a hole ...
HOLE = (30, 40, 50, 60)
ROAD_ROW = 120  # ... and a road along this pixel row boundary, across the whole scene


def write_scene(path, origin=(500_000.0, 2_780_000.0), size=(160, 192), bands=4, crs=SCENE_CRS):
    """A uint16 GeoTIFF of `bands` bands whose building and road pixels are brighter; returns its transform."""
    import rasterio
    from rasterio.transform import from_origin

    transform = from_origin(*origin, PIXEL, PIXEL)
    truth = scene_truth(size)
    rng = np.random.default_rng(0)
    pixels = rng.integers(800, 1200, (bands, *size)) + np.tensordot([2000, 1000], truth, 1)
    profile = {"driver": "GTiff", "height": size[0], "width": size[1], "count": bands, "dtype": "uint16"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform) as dst:
        dst.write(pixels.astype(np.uint16))
    return transform


def scene_truth(size=(160, 192), line_width=6.0):
    """(2, h, w) building and road masks the vector file of `write_vectors` burns into `write_scene`'s grid:
    a pixel is inside when its centre is, and the road is `line_width` metres wide about its row boundary."""
    truth = np.zeros((2, *size), np.uint8)
    y0, y1, x0, x1 = BUILDING
    truth[0, y0:y1, x0:x1] = 1
    y0, y1, x0, x1 = HOLE
    truth[0, y0:y1, x0:x1] = 0
    half = int(line_width / PIXEL / 2)
    truth[1, ROAD_ROW - half : ROAD_ROW + half] = 1
    return truth


def write_vectors(folder, transform, crs=SCENE_CRS):
    """building.geojson (a polygon with a hole, and a point) and road.geojson (a line beyond the scene's edges), in
    WGS84 (RFC 7946). Returns their paths."""
    from rasterio.warp import transform as reproject

    def lonlat(pixels):  # (row, col) pixel corners -> [lon, lat]
        xs, ys = zip(*[transform @ (col, row) for row, col in pixels])
        lons, lats = reproject(crs, "EPSG:4326", xs, ys)
        return [[lon, lat] for lon, lat in zip(lons, lats)]

    def ring(y0, y1, x0, x1):
        return lonlat([(y0, x0), (y0, x1), (y1, x1), (y1, x0), (y0, x0)])

    building = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"building": "yes"},
         "geometry": {"type": "Polygon", "coordinates": [ring(*BUILDING), ring(*HOLE)]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": lonlat([(5, 5)])[0]}},
    ]}  # fmt: skip
    road = {"type": "Feature", "properties": {"highway": "residential"},
            "geometry": {"type": "LineString", "coordinates": lonlat([(ROAD_ROW, -50), (ROAD_ROW, 400)])}}  # fmt: skip
    paths = {}
    for name, data in (("building", building), ("road", road)):
        paths[name] = os.path.join(folder, f"{name}.geojson")
        with open(paths[name], "w") as f:
            json.dump(data, f)
    return paths


def toy_backbone(size=64, bands=3):
    """A five-stage conv backbone (strides 2 to 32) that builds in milliseconds, for the fast tier's model tests;
    keras.applications backbones are tested in the slow tier."""
    x = inputs = keras.Input((size, size, bands))
    for i, width in enumerate((8, 16, 24, 32, 40), start=1):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"stage{i}")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
    return keras.Model(inputs, x, name="toy")


def toy_segmenter(decoder="RefineNet", decoder_kwargs=None, num_classes=2, **kwargs):
    """A Segmenter of `decoder` on the toy backbone's pyramid (P2-P5), built directly."""
    from imseg.models.backbones import STRIDES, feature_extractor, pyramid
    from imseg.models.segmenter import Segmenter

    backbone = toy_backbone()
    levels = pyramid(backbone)
    extractor = feature_extractor(backbone, [levels[k] for k in STRIDES])
    return Segmenter(extractor, list(STRIDES), num_classes, decoder, decoder_kwargs, **kwargs)


def write_features(path, geometries, crs, attributes=None, layer=None):
    """A vector file of shapely `geometries` in `crs` (None: no CRS) with `attributes` ({name: [value per feature]}),
    written by pyogrio (GDAL): the format follows the extension (.gpkg, .shp, .fgb, .geojson, .geojsonl)."""
    import pyogrio
    import shapely

    attributes = attributes or {}
    names = list(attributes)
    data = [np.array(attributes[n], dtype=object) for n in names]
    kinds = {g.geom_type for g in geometries}
    kind = kinds.pop() if len(kinds) == 1 else "Unknown"
    pyogrio.raw.write(path, np.array(shapely.to_wkb(geometries), dtype=object), data, names, layer=layer,
                      geometry_type=kind, crs=crs)  # fmt: skip


def litert_logits(path, images):
    """The logits of a LiteRT (.tflite) model for a batch of images."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(path)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
