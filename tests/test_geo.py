"""The geospatial workflow: vector labels burnt into GeoTIFF tiles, windowed prediction of scenes, polygons out."""

import json
import os

import numpy as np
import pytest

from helpers import (
    BUILDING,
    HOLE,
    PIXEL,
    SCENE_CRS,
    run_main,
    run_module,
    scene_truth,
    write_features,
    write_scene,
    write_vectors,
)

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")

from rasterio.transform import from_origin  # noqa: E402

from imseg.annotations import read_annotation  # noqa: E402
from imseg.checkpoints import read_metadata  # noqa: E402
from imseg.data.convert import convert  # noqa: E402
from imseg.errors import DataError  # noqa: E402


def scene_folder(tmp_path, count=1, size=(160, 192)):
    """`count` scenes side by side (500 m apart) in tmp_path/scenes and their vector labels; returns (folder,
    vector paths, transforms). Every scene gets the same building and road, vectors listing each copy."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    transforms = [
        write_scene(str(folder / f"s{i}.tif"), (500_000.0 + 500 * i, 2_780_000.0), size) for i in range(count)
    ]
    paths = [write_vectors(str(tmp_path), t) for t in transforms[:1]][0]
    if count > 1:  # one file with the features of every scene, as an OSM export of the area would be
        for name in paths:
            merged = {"type": "FeatureCollection", "features": []}
            for i, t in enumerate(transforms):
                os.makedirs(tmp_path / f"v{i}", exist_ok=True)
                data = json.load(open(write_vectors(str(tmp_path / f"v{i}"), t)[name]))
                merged["features"] += data["features"] if data["type"] == "FeatureCollection" else [data]
            json.dump(merged, open(paths[name], "w"))
    return folder, paths, transforms


def assembled(root, size, classes):
    """The dataset's annotations and ignore planes put back on the source grid through path_map.json."""
    path_map = json.load(open(os.path.join(root, "im_seg", "path_map.json")))
    annotation, ignore = np.zeros((classes, *size), np.uint8), np.zeros(size, np.uint8)
    for tile, entry in path_map.items():
        ann, ign = read_annotation(os.path.join(root, "im_seg", entry["split"], "annotations", f"{tile}.json"), True)
        y, x = entry["y"], entry["x"]
        h, w = min(entry["height"], size[0] - y), min(entry["width"], size[1] - x)
        annotation[:, y : y + h, x : x + w] = ann[:, :h, :w]
        ignore[y : y + h, x : x + w] = ign[:h, :w]
    return annotation, ignore, path_map


@pytest.mark.parametrize("line_width", [None, 4.0])
def test_convert_burns_polygons_with_holes_and_buffered_lines_into_geotiff_tiles(tmp_path, line_width):
    folder, vectors, (transform,) = scene_folder(tmp_path)
    said = []
    counts = convert(
        [str(folder)],
        output=str(tmp_path / "D"),
        tile_size=64,
        split=(1.0, 0.0, 0.0),
        vectors=[("building:other", vectors["building"]), ("road:other", vectors["road"])],
        line_widths={"road:other": line_width} if line_width else None,
        log=said.append,
    )
    assert counts == {"train": 9, "val": 0, "test": 0}  # 160 x 192 in 64 px tiles: 3 x 3
    assert "imseg-data: s0.tif: 1 building:other, 1 road:other; 1 point(s) left out" in said
    annotation, ignore, path_map = assembled(str(tmp_path / "D"), (160, 192), 2)
    np.testing.assert_array_equal(annotation, scene_truth(line_width=line_width or 6.0))
    assert not ignore.any()
    assert json.load(open(tmp_path / "D" / "classes.json")) == {"building": ["other"], "road": ["other"]}

    # Tiles are GeoTIFFs of the scene's four uint16 bands, each with its own corner in its transform.
    entry = path_map["4"]
    assert (entry["x"], entry["y"]) == (64, 64)
    with rasterio.open(tmp_path / "D" / "im_seg" / "train" / "images" / "4.tif") as tile:
        with rasterio.open(folder / "s0.tif") as scene:
            expected = scene.read(window=rasterio.windows.Window(64, 64, 64, 64))
        assert (tile.count, tile.dtypes[0]) == (4, "uint16")
        np.testing.assert_array_equal(tile.read(), expected)
        assert tile.crs.to_string() == SCENE_CRS and tile.transform == transform @ transform.translation(64, 64)
    assert entry["crs"] == SCENE_CRS and entry["transform"] == list(tile.transform)[:6]


def test_an_rgb_nir_scene_keeps_its_near_infrared_band_in_8_bit_tiles(tmp_path):
    """NAIP ships RGB+NIR uint8 with band 4 of undefined colour: tiles keep all four bands as data (GDAL would
    tag the 4th band of an 8-bit GeoTIFF alpha, and training would then read three)."""
    from imseg.dataset import load_split
    from imseg.images import read_image

    folder, vectors, (transform,) = scene_folder(tmp_path)
    scene = folder / "s0.tif"
    with rasterio.open(scene) as src:
        pixels, profile = (src.read() // 16).astype(np.uint8), src.profile
    profile.update(dtype="uint8", photometric="RGB")
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(pixels)
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.undefined]  # fmt: skip
    convert([str(folder)], output=str(tmp_path / "D"), tile_size=64, split=(1.0, 0.0, 0.0),
            vectors=[("building:other", vectors["building"])], log=lambda line: None)  # fmt: skip
    tile = str(tmp_path / "D" / "im_seg" / "train" / "images" / "4.tif")
    with rasterio.open(tile) as src:
        assert src.count == 4 and rasterio.enums.ColorInterp.alpha not in src.colorinterp
    np.testing.assert_array_equal(np.moveaxis(read_image(tile), -1, 0), pixels[:, 64:128, 64:128])
    assert load_split(str(tmp_path / "D"), "train", 1, log=lambda m: None).bands == 4


def test_ignore_vectors_and_the_padding_of_edge_tiles_are_ignored(tmp_path):
    folder, vectors, _ = scene_folder(tmp_path, size=(150, 192))
    convert(
        [str(folder)],
        output=str(tmp_path / "D"),
        tile_size=64,
        split=(1.0, 0.0, 0.0),
        vectors=[("building:other", vectors["building"])],
        vectors_ignore=[vectors["road"]],
        log=lambda line: None,
    )
    path_map = json.load(open(tmp_path / "D" / "im_seg" / "path_map.json"))
    _, ignore = read_annotation(str(tmp_path / "D" / "im_seg" / "train" / "annotations" / "6.json"), True)
    assert (path_map["6"]["y"], path_map["6"]["x"]) == (128, 0)
    assert ignore[150 - 128 :].all() and not ignore[: 150 - 128].any()  # rows beyond the scene
    annotation, ignore, _ = assembled(str(tmp_path / "D"), (150, 192), 1)
    np.testing.assert_array_equal(ignore, scene_truth((150, 192))[1])  # the road, burnt as ignored


def test_vector_files_that_cannot_be_used_are_one_line_errors(tmp_path):
    folder, vectors, _ = scene_folder(tmp_path)
    (tmp_path / "bad.geojson").write_text('{"type": "FeatureCollection", "features": [')
    (tmp_path / "far").mkdir()
    far = write_vectors(str(tmp_path / "far"), from_origin(200_000.0, 1_000_000.0, PIXEL, PIXEL))
    cases = {
        str(tmp_path / "bad.geojson"): "bad.geojson: unreadable GeoJSON",
        str(tmp_path / "missing.geojson"): "missing.geojson: vector file not found",
        str(folder / "s0.tif"): "s0.tif: unknown vector format (imseg reads .fgb, .geojson, .geojsonl, .geojsons, "
        ".gpkg, .json, .shp, .zip, and OSM .osm/.osm.pbf with --osm)",
        far["building"]: "building.geojson: no feature overlaps any of the 1 image(s) (the file is in EPSG:4326, the "
        "images in EPSG:32640): is it of the same place?",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            convert([str(folder)], output=str(tmp_path / "D"), tile_size=64, split=(1.0, 0.0, 0.0),
                    vectors=[("building:other", path)], log=lambda line: None)  # fmt: skip
        assert not os.path.exists(tmp_path / "D")


def test_geopackage_features_in_a_projected_crs_burn_like_geojson(tmp_path):
    folder, _, (transform,) = scene_folder(tmp_path)
    (y0, y1, x0, x1), (hy0, hy1, hx0, hx1) = BUILDING, HOLE
    corner = lambda row, col: transform @ (col, row)  # noqa: E731
    polygon = shapely.Polygon(
        [corner(y0, x0), corner(y0, x1), corner(y1, x1), corner(y1, x0)],
        [[corner(hy0, hx0), corner(hy0, hx1), corner(hy1, hx1), corner(hy1, hx0)]],
    )
    write_features(str(tmp_path / "b.gpkg"), [polygon], SCENE_CRS)
    convert([str(folder)], output=str(tmp_path / "D"), tile_size=64, split=(1.0, 0.0, 0.0),
            vectors=[("building:other", str(tmp_path / "b.gpkg"))], log=lambda line: None)  # fmt: skip
    annotation, _, _ = assembled(str(tmp_path / "D"), (160, 192), 1)
    np.testing.assert_array_equal(annotation[0], scene_truth()[0])

    write_features(str(tmp_path / "nocrs.gpkg"), [polygon], None)
    with pytest.raises(DataError, match="nocrs.gpkg: its features have no CRS"):
        convert([str(folder)], output=str(tmp_path / "E"), tile_size=64, split=(1.0, 0.0, 0.0),
                vectors=[("building:other", str(tmp_path / "nocrs.gpkg"))], log=lambda line: None)  # fmt: skip


@pytest.mark.parametrize("extension", [".shp", ".zip", ".fgb", ".geojsonl", ".gpkg"])
def test_every_vector_format_burns_like_geojson(tmp_path, extension):
    """Shapefile (also zipped, as downloads come), FlatGeobuf, GeoJSONSeq and GeoPackage, read by pyogrio."""
    import zipfile

    folder, vectors, _ = scene_folder(tmp_path)
    from imseg.geo.vectors import read_vectors

    geometries, crs = read_vectors(vectors["building"])
    geometries = [g for g in geometries if g.geom_type == "Polygon"]  # a shapefile holds one kind
    target = str(tmp_path / f"b{'.shp' if extension == '.zip' else extension}")
    write_features(target, geometries, crs.to_string(), {"building": ["yes"] * len(geometries)})
    if extension == ".zip":
        with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
            for part in (tmp_path).glob("b.*"):
                if part.suffix != ".zip":
                    z.write(part, part.name)
        target = str(tmp_path / "b.zip")
    convert([str(folder)], output=str(tmp_path / "D"), tile_size=64, split=(1.0, 0.0, 0.0),
            vectors=[("building:other", target)], log=lambda line: None)  # fmt: skip
    annotation, _, _ = assembled(str(tmp_path / "D"), (160, 192), 1)
    np.testing.assert_array_equal(annotation[0], scene_truth()[0])


def test_line_widths_and_areas_are_metres_at_60_degrees_north(tmp_path):
    """In a geographic CRS a degree of longitude is cos(60°) = half a degree of latitude at 60° N: a road 10 m
    wide running north is 10 m wide, not 5 m (the rule of 111,320 m per degree)."""
    from rasterio.transform import from_origin

    from imseg.geo.metres import area_m2
    from imseg.geo.vectors import burn

    pixel = 1e-5  # degrees: 0.557 m east-west and 1.11 m north-south here
    transform = from_origin(10.0, 60.0, pixel, pixel)
    crs = rasterio.crs.CRS.from_epsg(4326)
    road = shapely.LineString([(10.0 + 100 * pixel, 60.0 + pixel), (10.0 + 100 * pixel, 60.0 - 201 * pixel)])
    annotation, _, _, _ = burn([[([road], crs)]], [], {"crs": crs, "transform": transform}, (200, 200),
                               {"road:other": 10.0}, ["road:other"])  # fmt: skip
    east_west = 111_320 * np.cos(np.radians(60)) * pixel
    assert annotation[0][100].sum() == pytest.approx(10.0 / east_west, abs=1.5)  # about 18 pixels, not 9
    square = shapely.box(10.0, 60.0, 10.001, 60.001)  # 0.001 degrees each way
    geod = area_m2(square, crs)
    assert geod == pytest.approx(111.4 * 55.8, rel=0.01)  # 111.4 m north-south by 55.8 m east-west


def test_one_large_scene_gives_train_val_and_test_by_blocks_or_by_areas(tmp_path):
    """Without cutting the scene by hand: whole blocks of tiles go to one split (neighbours never leak), or the
    polygons of --split-areas decide."""
    folder, vectors, (transform,) = scene_folder(tmp_path, size=(256, 256))
    convert([str(folder)], output=str(tmp_path / "B"), tile_size=32, split=(0.5, 0.25, 0.25), split_by="blocks",
            block_size=64, vectors=[("building:other", vectors["building"])], log=lambda line: None)  # fmt: skip
    path_map = json.load(open(tmp_path / "B" / "im_seg" / "path_map.json"))
    by_block = {}
    for entry in path_map.values():
        by_block.setdefault((entry["y"] // 64, entry["x"] // 64), set()).add(entry["split"])
    assert all(len(splits) == 1 for splits in by_block.values())  # a block's four tiles stay together
    assert [sum(s == {n} for s in by_block.values()) for n in ("train", "val", "test")] == [8, 4, 4]
    # Areas: the left half of the scene is validation, a strip at the bottom is test.
    left = shapely.box(*(transform @ (0, 256)), *(transform @ (128, 0)))
    bottom = shapely.box(*(transform @ (128, 256)), *(transform @ (256, 224)))
    write_features(str(tmp_path / "val.gpkg"), [left], SCENE_CRS)
    write_features(str(tmp_path / "test.gpkg"), [bottom], SCENE_CRS)
    convert([str(folder)], output=str(tmp_path / "A"), tile_size=32, split_areas={"val": str(tmp_path / "val.gpkg"),
            "test": str(tmp_path / "test.gpkg")}, vectors=[("building:other", vectors["building"])],
            log=lambda line: None)  # fmt: skip
    for entry in json.load(open(tmp_path / "A" / "im_seg" / "path_map.json")).values():
        expected = "val" if entry["x"] < 128 else "test" if entry["y"] >= 224 else "train"
        assert entry["split"] == expected, entry


def write_mask(path, mask, transform, crs=SCENE_CRS):
    with rasterio.open(path, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1], count=1, dtype="uint8",
                       crs=crs, transform=transform) as dst:  # fmt: skip
        dst.write(mask.astype(np.uint8)[None] * 255)


def test_vectorize_traces_regions_with_holes_across_strips_and_filters_by_area(tmp_path, monkeypatch):
    from imseg.geo import polygons

    monkeypatch.setattr(polygons, "STRIP", 16)  # the building spans three strips: joined again
    transform = from_origin(500_000.0, 2_780_000.0, PIXEL, PIXEL)
    mask = scene_truth()[0]
    mask[100:104, 10:14] = 1  # a 2 m x 2 m shed
    write_mask(str(tmp_path / "b.tif"), mask, transform)
    counts = polygons.vectorize({"building:other": str(tmp_path / "b.tif")}, str(tmp_path / "b.geojson"), simplify=0,
                                vector_crs="image")  # fmt: skip
    assert counts == {"building:other": 2}
    data = json.load(open(tmp_path / "b.geojson"))
    assert data["crs"]["properties"]["name"] == SCENE_CRS
    big, shed = sorted(data["features"], key=lambda f: -f["properties"]["area_m2"])
    assert big["properties"] == {"class": "building:other", "area_m2": (40 * 60 - 10 * 10) * PIXEL**2}
    assert shed["properties"]["area_m2"] == 16 * PIXEL**2
    outline = shapely.geometry.shape(big["geometry"])
    (y0, y1, x0, x1), (hy0, hy1, hx0, hx1) = BUILDING, HOLE
    assert outline.bounds == (
        500_000 + x0 * PIXEL,
        2_780_000 - y1 * PIXEL,
        500_000 + x1 * PIXEL,
        2_780_000 - y0 * PIXEL,
    )
    assert len(outline.interiors) == 1
    assert shapely.Polygon(outline.interiors[0]).area == (hy1 - hy0) * (hx1 - hx0) * PIXEL**2

    counts = polygons.vectorize({"building:other": str(tmp_path / "b.tif")}, str(tmp_path / "w.geojson"), min_area=5)
    assert counts == {"building:other": 1}
    wgs84 = json.load(open(tmp_path / "w.geojson"))
    assert "crs" not in wgs84  # RFC 7946: WGS84, longitude first
    lon, lat = wgs84["features"][0]["geometry"]["coordinates"][0][0]
    assert 56.9 < lon < 57.1 and 25.1 < lat < 25.2


@pytest.mark.parametrize("vector_format", ["gpkg", "fgb"])
def test_polygons_as_a_geopackage_layer_per_class_or_a_flatgeobuf(tmp_path, vector_format):
    import pyogrio

    from imseg.geo import polygons

    transform = from_origin(500_000.0, 2_780_000.0, PIXEL, PIXEL)
    write_mask(str(tmp_path / "b.tif"), scene_truth()[0], transform)
    write_mask(str(tmp_path / "r.tif"), scene_truth()[1], transform)
    masks = {"building:other": str(tmp_path / "b.tif"), "road:other": str(tmp_path / "r.tif")}
    expected = polygons.vectorize(masks, str(tmp_path / "p.geojson"), simplify=0, vector_crs="image")
    reference = sorted(f["properties"]["area_m2"] for f in json.load(open(tmp_path / "p.geojson"))["features"])
    target = str(tmp_path / f"p.{vector_format}")
    assert polygons.vectorize(masks, target, simplify=0, vector_crs="image", vector_format=vector_format) == expected
    layers = [name for name, _ in pyogrio.list_layers(target)]
    assert layers == (["building:other", "road:other"] if vector_format == "gpkg" else ["p"])
    areas = []
    for layer in layers:
        meta, _, _, fields = pyogrio.raw.read(target, layer=layer)
        assert meta["crs"] == SCENE_CRS and list(meta["fields"]) == ["class", "area_m2"]
        areas += list(fields[1])
    assert sorted(areas) == pytest.approx(reference)


def test_windowed_prediction_in_column_blocks_equals_the_whole_image(tmp_path):
    import keras

    from imseg.geo.raster import predict_geotiff
    from imseg.predict import predict_image

    inputs = keras.Input((32, 32, 4))
    x = keras.layers.Rescaling(1 / 3000)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", kernel_initializer="he_normal")(x))
    write_scene(str(tmp_path / "s.tif"), size=(70, 90))
    result = predict_geotiff(model, str(tmp_path / "s.tif"), str(tmp_path / "out"), "s", ["a:x", "b:y"], block=40,
                            save_probs=True)  # fmt: skip
    with rasterio.open(tmp_path / "s.tif") as src:
        image = np.moveaxis(src.read(), 0, -1)
    logits = predict_image(model, image, output="logits")
    with rasterio.open(tmp_path / "out" / "probs" / "s.tif") as probs:
        np.testing.assert_allclose(probs.read(), np.moveaxis(1 / (1 + np.exp(-logits)), -1, 0), atol=1e-5)
    with rasterio.open(tmp_path / "out" / "masks" / "b-y" / "s.tif") as mask:
        np.testing.assert_array_equal(mask.read(1) > 0, logits[..., 1] > 0)
        assert mask.profile["tiled"] and mask.profile["compress"] == "deflate" and mask.crs.to_string() == SCENE_CRS
    assert (result["height"], result["width"], result["nodata_pixels"]) == (70, 90, 0)


NODATA_SIZE = (560, 540)  # three GDAL blocks of 256 in each direction
NODATA_REGIONS = {  # rows, columns without data (0 in every band)
    "top": (slice(0, 100), slice(None)),
    "bottom": (slice(470, None), slice(None)),
    "left": (slice(None), slice(0, 90)),
    "right": (slice(None), slice(500, None)),
    "corner": (slice(0, 70), slice(0, 60)),
    "middle block": (slice(256, 512), slice(256, 512)),
}


@pytest.mark.slow
@pytest.mark.parametrize("region", NODATA_REGIONS)
def test_nodata_anywhere_in_a_scene_stays_exactly_where_it_is(tmp_path, region):
    """Every output, mask band included, equals whole-image prediction pixel for pixel, whichever windows hold
    the nodata (a mask band written only where a window had nodata made every block never written read as
    nodata)."""
    import keras

    from imseg.geo.raster import predict_geotiff
    from imseg.predict import predict_image

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 3000)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="he_normal")(x))
    rng = np.random.default_rng(1)
    pixels = rng.integers(1, 3000, (3, *NODATA_SIZE)).astype(np.uint16)
    pixels[(slice(None), *NODATA_REGIONS[region])] = 0
    profile = {"driver": "GTiff", "height": NODATA_SIZE[0], "width": NODATA_SIZE[1], "count": 3, "dtype": "uint16"}
    with rasterio.open(tmp_path / "s.tif", "w", **profile, nodata=0, crs=SCENE_CRS,
                       transform=from_origin(500_000.0, 2_780_000.0, PIXEL, PIXEL)) as dst:  # fmt: skip
        dst.write(pixels)
    classes = ["background", "a:x", "b:y"]
    result = predict_geotiff(model, str(tmp_path / "s.tif"), str(tmp_path / "out"), "s", classes, task="multiclass",
                            block=200, batch_size=32)  # fmt: skip
    valid = np.ones(NODATA_SIZE, bool)
    valid[NODATA_REGIONS[region]] = False
    winner = predict_image(model, np.moveaxis(pixels, 0, -1), output="logits").argmax(-1)
    assert result["nodata_pixels"] == (~valid).sum()
    with rasterio.open(tmp_path / "out" / "classes" / "s.tif") as out:
        np.testing.assert_array_equal(out.read(1), np.where(valid, winner, 255))
        np.testing.assert_array_equal(out.read_masks(1), valid * 255)
        # a Cloud Optimized GeoTIFF: COG layout, internal tiles and an overview, its mask kept at every level
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and out.profile["tiled"] and out.overviews(1)
    for k in (1, 2):
        with rasterio.open(tmp_path / "out" / "masks" / classes[k].replace(":", "-") / "s.tif") as out:
            np.testing.assert_array_equal(out.read(1), ((winner == k) & valid) * 255)
            np.testing.assert_array_equal(out.read_masks(1), valid * 255)
            np.testing.assert_array_equal(out.dataset_mask(), valid * 255)


def test_a_scene_without_nodata_gets_no_mask_band(tmp_path):
    import keras

    from imseg.geo.raster import predict_geotiff

    inputs = keras.Input((32, 32, 4))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs))
    write_scene(str(tmp_path / "s.tif"), size=(70, 90))
    predict_geotiff(model, str(tmp_path / "s.tif"), str(tmp_path / "out"), "s", ["a:x"])
    with rasterio.open(tmp_path / "out" / "masks" / "a-x" / "s.tif") as out:
        assert out.mask_flag_enums == ([rasterio.enums.MaskFlags.all_valid],)


@pytest.mark.slow
def write_town(path, pixel, size_m=96.0):
    """A one-band uint8 scene of a 96 m square in UTM at `pixel` metres: a bright 30 m x 24 m building (10 m from the
    top, 20 m from the left), dark elsewhere. Returns the building's truth on this grid."""
    n = int(round(size_m / pixel))
    truth = np.zeros((n, n), np.uint8)
    truth[int(10 / pixel) : int(34 / pixel), int(20 / pixel) : int(50 / pixel)] = 1
    with rasterio.open(path, "w", driver="GTiff", height=n, width=n, count=1, dtype="uint8", crs=SCENE_CRS,
                       transform=from_origin(500_000.0, 2_780_000.0, pixel, pixel)) as dst:  # fmt: skip
        dst.write((40 + 160 * truth)[None].astype(np.uint8))
    return truth


def brightness_model():
    """Logit > 0 where a pixel is brighter than 120: a 'building' detector that knows no scale."""
    import keras

    inputs = keras.Input((32, 32, 1))
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.ones((1, 1, 1, 1)), np.array([-120.0])])
    return model


def test_a_scene_of_another_ground_resolution_is_predicted_at_the_models(tmp_path):
    """The same town at 0.3 m and at 0.6 m gives the same building pixels on the model's 0.6 m grid (to the
    resampling's tolerance), and masks on the 0.3 m scene's own grid by default."""
    from imseg.geo.raster import predict_geotiff

    fine, coarse = write_town(str(tmp_path / "fine.tif"), 0.3), write_town(str(tmp_path / "coarse.tif"), 0.6)
    model = brightness_model()
    run = {"classes": ["building:other"], "gsd": 0.6}
    a = predict_geotiff(model, str(tmp_path / "coarse.tif"), str(tmp_path / "a"), "coarse", **run)
    b = predict_geotiff(model, str(tmp_path / "fine.tif"), str(tmp_path / "b"), "fine", **run, output_grid="model")
    assert (a["resampled"], b["resampled"], b["gsd"]) == (False, True, 0.6)
    with rasterio.open(tmp_path / "a/masks/building-other/coarse.tif") as x, \
         rasterio.open(tmp_path / "b/masks/building-other/fine.tif") as y:  # fmt: skip
        assert (x.transform, x.shape) == (y.transform, y.shape)
        np.testing.assert_array_equal(x.read(1) > 0, coarse > 0)
        edge = 2 * (40 + 50)  # the building's outline on the 0.6 m grid: resampling may move it by a pixel
        assert ((x.read(1) > 0) != (y.read(1) > 0)).sum() <= edge / 2
    predict_geotiff(model, str(tmp_path / "fine.tif"), str(tmp_path / "c"), "fine", **run)  # the scene's grid
    with rasterio.open(tmp_path / "c/masks/building-other/fine.tif") as z:
        assert z.shape == fine.shape and abs(z.transform.a - 0.3) < 1e-9
        assert ((z.read(1) > 0) != (fine > 0)).sum() <= 2 * (80 + 100)  # a fine pixel along the outline
    assert not [p for p in os.listdir(tmp_path / "c/masks/building-other") if p.startswith(".")]


def test_convert_resamples_scenes_to_a_resolution_that_the_dataset_and_model_record(tmp_path):
    from imseg.layout import ground_sample_distance

    (tmp_path / "scenes").mkdir()
    write_town(str(tmp_path / "scenes" / "fine.tif"), 0.3)
    building = shapely.box(500_020.0, 2_780_000.0 - 34, 500_050.0, 2_780_000.0 - 10)
    write_features(str(tmp_path / "b.gpkg"), [building], SCENE_CRS)
    convert([str(tmp_path / "scenes")], output=str(tmp_path / "D"), tile_size=64, split=(1.0, 0.0, 0.0),
            vectors=[("building:other", str(tmp_path / "b.gpkg"))], resolution=0.6, log=lambda line: None)  # fmt: skip
    annotation, _, path_map = assembled(str(tmp_path / "D"), (160, 160), 1)
    assert {e["resolution"] for e in path_map.values()} == {0.6}
    assert abs(path_map["0"]["transform"][0] - 0.6) < 1e-9 and ground_sample_distance(str(tmp_path / "D")) == 0.6
    assert annotation[0].sum() == 50 * 40  # 30 m x 24 m at 0.6 m
    with rasterio.open(tmp_path / "D" / "im_seg" / "train" / "images" / "0.tif") as tile:
        assert tile.read(1)[20:50, 36:80].min() > 150  # the building, bright, where the labels put it


def test_rgb_weights_are_adapted_to_four_bands(tmp_path):
    import keras

    from imseg.build import build_segmenter
    from imseg.config import config_from_dict

    donor = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    path = str(tmp_path / "mnv2.weights.h5")
    donor.save_weights(path)
    config = config_from_dict({
        "name": "x", "backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35, "weights": path},
        "pretrained": True, "refine_net_blocks": [["block_6_expand_relu"], ["block_3_expand_relu"]],
        "input_shape": [32, 32, 4], "normalization": "auto", "rgb_bands": [3, 2, 1],
    })  # fmt: skip
    model = build_segmenter(config, ["a:x"])
    kernel, adapted = donor.get_layer("Conv1").kernel.numpy(), model.backbone.get_layer("Conv1").kernel.numpy()
    assert adapted.shape == (3, 3, 4, 16)
    for colour, band in enumerate([3, 2, 1]):  # red to band 3, green to 2, blue to 1; the sum keeps its size
        np.testing.assert_allclose(adapted[:, :, band - 1], kernel[:, :, colour] * 3 / 4, rtol=1e-6)
    np.testing.assert_allclose(adapted[:, :, 3], kernel.mean(axis=2) * 3 / 4, rtol=1e-6, atol=1e-8)
    for name in ("block_3_project", "block_5_project"):
        np.testing.assert_array_equal(model.backbone.get_layer(name).kernel.numpy(), donor.get_layer(name).kernel)


@pytest.mark.slow
def test_from_a_geotiff_and_vector_labels_to_polygons(tmp_path):
    """The issue's 'done when': 4-band uint16 scenes in UTM, GeoJSON in WGS84 -> tiles -> one epoch on four bands
    with normalisation from the data -> a scene predicted window by window -> polygons."""
    folder, vectors, transforms = scene_folder(tmp_path, count=3)
    data = tmp_path / "D"
    result = run_main(
        "imseg.data", "convert", "--images", str(folder), "--vectors", f"building={vectors['building']}",
        "--vectors", f"road={vectors['road']}", "--line-width", "road=8", "--tile-size", "64",
        "--split", "0.34", "0.33", "0.33", "--output", str(data),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = {
        "name": "geo", "backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35},
        "refine_net_blocks": [["block_3_expand_relu"], ["block_1_expand_relu"]], "input_shape": [64, 64, 4],
        "normalization": "auto", "epochs": 1, "batch_size": 3, "mixed_precision": "none",
    }  # fmt: skip
    (tmp_path / "geo.json").write_text(json.dumps(config))
    result = run_module("imseg.train", "--data-path", str(data), "--config", str(tmp_path / "geo.json"))
    assert result.returncode == 0, result.stderr
    run = data / "im_seg" / "out" / "geo"
    resolved = json.load(open(run / "config.json"))["resolved"]
    assert resolved["pixels"] == "uint16" and len(resolved["normalization"]["mean"]) == 4
    assert read_metadata(str(run / "checkpoints" / "best.keras"))["gsd"] == PIXEL  # the metres it learnt at

    result = run_main(
        "imseg.infer", "--model", str(run / "checkpoints" / "best.keras"), "--images", str(folder / "s1.tif"),
        "--output", str(tmp_path / "pred"), "--vectorize", "--simplify", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    areas = {}
    for name in ("building-other", "road-other"):
        with rasterio.open(tmp_path / "pred" / "masks" / name / "s1.tif") as mask:
            assert mask.crs.to_string() == SCENE_CRS and mask.transform == transforms[1]
            areas[name.replace("-", ":")] = (mask.read(1) > 0).sum() * PIXEL**2
    collection = json.load(open(tmp_path / "pred" / "s1.geojson"))
    assert collection["type"] == "FeatureCollection"
    for name, area in areas.items():  # the polygons cover exactly the masks' pixels
        features = [f for f in collection["features"] if f["properties"]["class"] == name]
        assert sum(f["properties"]["area_m2"] for f in features) == pytest.approx(area, abs=0.01 * len(features))
    summary = json.load(open(tmp_path / "pred" / "summary.json"))
    assert summary["images"]["s1"]["georeferenced"] and set(summary["images"]["s1"]["polygons"]) == set(areas)


@pytest.mark.parametrize("preset, expected", [(None, "256"), ("1024", "1024")])
def test_gdal_block_cache_is_bounded_unless_the_user_set_it(monkeypatch, preset, expected):
    from imseg.geo import require

    if preset is None:
        monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    else:
        monkeypatch.setenv("GDAL_CACHEMAX", preset)
    require()
    assert os.environ["GDAL_CACHEMAX"] == expected
