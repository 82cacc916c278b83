"""OpenStreetMap labels the AIR way: classes as tag filters, OSM XML, PBF, Overpass GeoJSON and tag columns."""

import json

import numpy as np
import pytest

from helpers import SCENE_CRS, write_features, write_scene

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")
osmium = pytest.importorskip("osmium")

from imseg.data.convert import convert  # noqa: E402
from imseg.errors import ConfigError  # noqa: E402
from imseg.geo.osm import classes_of, line_width, tag_filters  # noqa: E402

ORIGIN = (500_000.0, 2_780_000.0)
SIZE = (160, 192)
OUTER, HOLE, HOUSE = (20, 60, 30, 90), (30, 40, 50, 60), (80, 100, 120, 150)  # rows y0:y1, columns x0:x1
ROAD_ROW, LOOP = 120, (134, 150, 10, 40)  # a primary road along a row; a closed footway (a line, not an area)


def test_tag_filters_name_a_value_other_values_or_any_value():
    filters = tag_filters(["building:other", "highway:primary", "highway:other", "natural:*", "building:part:yes"])
    assert classes_of({"highway": "primary"}, filters) == [1]
    assert classes_of({"highway": "residential"}, filters) == [2]  # other: a value no other highway class names
    assert classes_of({"building": "house", "name": "x"}, filters) == [0]
    assert classes_of({"building": "no"}, filters) == []  # key=no: not a building
    assert classes_of({"natural": "tree"}, filters) == [3]
    assert classes_of({"building:part": "yes"}, filters) == [4]  # keys may hold colons
    for bad in ("building=yes", "highway:", ":x", "a b:c"):
        with pytest.raises(ConfigError, match=f"class '{bad}' is no OSM tag filter; write key:value"):
            tag_filters([bad])


def test_line_widths_by_tag_then_class_then_the_table():
    filters = tag_filters(["highway:other"])
    assert line_width({"highway": "primary"}, filters, {}) == 10.0  # the table
    assert line_width({"highway": "primary"}, filters, {"highway:other": 7.0}) == 7.0
    assert line_width({"highway": "primary"}, filters, {"highway:primary": 12.0, "highway:other": 7.0}) == 12.0
    assert line_width({"highway": "unknown_kind"}, filters, {}) is None  # the caller's default (6 m)


def corners(y0, y1, x0, x1, transform):
    """Lon/lat of a pixel rectangle's corners (closed ring), counter-clockwise as OSM areas may be drawn."""
    from rasterio.warp import transform as reproject

    pixels = [(y0, x0), (y1, x0), (y1, x1), (y0, x1), (y0, x0)]
    xs, ys = zip(*[transform @ (col, row) for row, col in pixels])
    lons, lats = reproject(SCENE_CRS, "EPSG:4326", xs, ys)
    return list(zip(lons, lats))


def lonlat(points, transform):
    from rasterio.warp import transform as reproject

    xs, ys = zip(*[transform @ (col, row) for row, col in points])
    lons, lats = reproject(SCENE_CRS, "EPSG:4326", xs, ys)
    return list(zip(lons, lats))


def shapes(transform):
    """The scene's features as (lon/lat geometry, tags): a building with a hole (a multipolygon), a house, a primary
    road, a closed footway and a tree."""
    building = shapely.Polygon(corners(*OUTER, transform), [corners(*HOLE, transform)])
    house = shapely.Polygon(corners(*HOUSE, transform))
    road = shapely.LineString(lonlat([(ROAD_ROW, -50), (ROAD_ROW, 400)], transform))
    loop = shapely.LineString(corners(*LOOP, transform))
    tree = shapely.Point(lonlat([(5, 5)], transform)[0])
    return [(building, {"building": "yes"}), (house, {"building": "house"}), (road, {"highway": "primary"}),
            (loop, {"highway": "footway"}), (tree, {"natural": "tree"})]  # fmt: skip


def write_osm(path, transform):
    """The shapes as OSM data (XML or PBF by the extension), written by osmium: nodes, ways and a multipolygon."""
    from osmium.osm.mutable import Node, Relation, Way

    writer = osmium.SimpleWriter(str(path))
    ids = iter(range(1, 1000))
    nodes, ways = [], []

    def way(ring, tags):
        refs = []
        for lon, lat in ring[:-1] if ring[0] == ring[-1] else ring:
            refs.append(next(ids))
            nodes.append(Node(id=refs[-1], location=(lon, lat), tags={}, version=1))
        refs += [refs[0]] if ring[0] == ring[-1] else []
        ways.append(Way(id=len(ways) + 1, nodes=refs, tags=tags, version=1))
        return ways[-1].id

    (building, _), (house, _), (road, _), (loop, _), (tree, _) = shapes(transform)
    outer = way(list(building.exterior.coords), {})
    inner = way(list(building.interiors[0].coords), {})
    way(list(house.exterior.coords), {"building": "house"})
    way(list(road.coords), {"highway": "primary"})
    way(list(loop.coords), {"highway": "footway"})
    nodes.append(Node(id=next(ids), location=(tree.x, tree.y), tags={"natural": "tree"}, version=1))
    for n in nodes:
        writer.add_node(n)
    for w in ways:
        writer.add_way(w)
    writer.add_relation(Relation(id=1, members=[("w", outer, "outer"), ("w", inner, "inner")],
                                 tags={"type": "multipolygon", "building": "yes"}, version=1))  # fmt: skip
    writer.close()
    return [str(path)]


def write_overpass(path, transform):
    """The shapes as osmtogeojson exports an Overpass result: tags under properties.tags."""
    features = [{"type": "Feature", "properties": {"type": "way", "id": i, "tags": tags},
                 "geometry": shapely.geometry.mapping(g)} for i, (g, tags) in enumerate(shapes(transform))]  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return [str(path)]


def write_shapefiles(path, transform):
    """The shapes as Shapefiles of tag columns, one per kind of geometry (a shapefile holds one kind)."""
    written = []
    for kind in ("Polygon", "LineString", "Point"):
        chosen = [(g, t) for g, t in shapes(transform) if g.geom_type == kind]
        keys = sorted({k for _, t in chosen for k in t})
        target = str(path).replace(".shp", f"_{kind.lower()}.shp")
        write_features(target, [g for g, _ in chosen], "EPSG:4326", {k: [t.get(k) for _, t in chosen] for k in keys})
        written.append(target)
    return written


WRITERS = {"xml": ("map.osm", write_osm), "pbf": ("map.osm.pbf", write_osm),
           "overpass": ("map.geojson", write_overpass), "shapefile": ("map.shp", write_shapefiles)}  # fmt: skip


def converted(tmp_path, source, classes=None, **options):
    from test_geo import assembled

    (tmp_path / "scenes").mkdir(exist_ok=True)
    transform = write_scene(str(tmp_path / "scenes" / "s0.tif"), ORIGIN, SIZE)
    (tmp_path / "classes.json").write_text(json.dumps(classes or {"building": ["other"], "highway": ["other"]}))
    name, writer = WRITERS[source]
    said = []
    convert([str(tmp_path / "scenes")], output=str(tmp_path / "D"), tile_size=64, split=(1.0, 0.0, 0.0),
            osm=writer(tmp_path / name, transform), classes_path=str(tmp_path / "classes.json"), log=said.append,
            **options)  # fmt: skip
    return assembled(str(tmp_path / "D"), SIZE, len(json.load(open(tmp_path / "classes.json"))))[0], said


def test_the_same_map_as_osm_xml_pbf_overpass_geojson_and_shapefile_gives_the_same_masks(tmp_path):
    masks = {}
    for source in WRITERS:
        (tmp_path / source).mkdir()
        masks[source] = converted(tmp_path / source, source)[0]
    building = np.zeros(SIZE, np.uint8)
    for (y0, y1, x0, x1), value in ((OUTER, 1), (HOLE, 0), (HOUSE, 1)):
        building[y0:y1, x0:x1] = value
    for source, annotation in masks.items():
        np.testing.assert_array_equal(annotation[0], building, err_msg=source)  # the multipolygon keeps its hole
        np.testing.assert_array_equal(annotation[1], masks["xml"][1], err_msg=source)
    road = masks["xml"][1]
    assert road[ROAD_ROW - 10 : ROAD_ROW + 10].all() and not road[ROAD_ROW - 12 : ROAD_ROW - 10].any()  # 10 m
    y0, y1, x0, x1 = LOOP
    assert road[y0 - 2 : y0 + 2, x0 + 5 : x1 - 5].all() and not road[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3].any()


def test_the_summary_counts_what_matches_no_class_and_a_burn_order_makes_classes_exclusive(tmp_path):
    classes = {"building": ["other"], "highway": ["other"], "railway": ["other"]}
    annotation, said = converted(tmp_path, "overpass", classes, burn_order=["building:other", "highway:other"])
    assert "imseg-data: OSM features that match no class, by key: natural 1" in said
    assert f"imseg-data: note: class railway:other matches no feature of {tmp_path / 'map.geojson'}; its masks stay " \
           "empty" in said  # fmt: skip
    assert (
        "imseg-data: burn order (a later class takes the pixel): railway:other, building:other, highway:other" in said
    )
    assert not (annotation[0] & annotation[1]).any()
