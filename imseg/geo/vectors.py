"""Vector labels (any vector file GDAL reads, through pyogrio) -> class masks on an image's grid.

Files: GeoJSON and GeoJSONSeq (WGS84 as RFC 7946 says, or the CRS a legacy `crs` member names), GeoPackage (every
layer), Shapefile (also zipped), FlatGeobuf; each feature with its attributes (as OSM tags: `imseg.geo.osm`).
Features are reprojected to each image's CRS (rasterio), then burnt: polygons filled, lines widened to a width in
metres (`imseg.geo.metres`: right in degrees too), points left out and counted.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from imseg.errors import ConfigError, DataError
from imseg.geo import require

DEFAULT_LINE_WIDTH = 6.0  # metres: a road as OpenStreetMap draws it, as a line
VECTOR_FORMATS = {  # extension -> what it is, for messages
    ".geojson": "GeoJSON", ".json": "GeoJSON", ".geojsonl": "GeoJSONSeq", ".geojsons": "GeoJSONSeq",
    ".gpkg": "GeoPackage", ".shp": "Shapefile", ".zip": "zipped Shapefile", ".fgb": "FlatGeobuf",
}  # fmt: skip


def _pyogrio():
    try:
        import pyogrio
    except ImportError:
        raise ConfigError("reading vector files needs pyogrio: pip install 'imseg[geo]'") from None
    return pyogrio


def read_features(path):
    """(geometries (shapely), CRS (rasterio), attributes: one {name: value} per geometry) of every layer of a
    vector file; a DataError names the file for anything unreadable."""
    rasterio, shapely = require()
    pyogrio = _pyogrio()
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise DataError(f"{path}: vector file not found")
    if ext not in VECTOR_FORMATS:
        known = ", ".join(sorted(VECTOR_FORMATS))
        raise DataError(f"{path}: unknown vector format (imseg reads {known}, and OSM .osm/.osm.pbf with --osm)")
    source = f"/vsizip/{os.path.abspath(path)}" if ext == ".zip" else path
    kind = VECTOR_FORMATS[ext]
    geometries, attributes, crs_names = [], [], set()
    try:
        layers = [name for name, _ in pyogrio.list_layers(source)]
        for layer in layers:
            meta, _, wkb, fields = pyogrio.raw.read(source, layer=layer)
            crs_names.add(meta["crs"])
            names = list(meta["fields"])
            for i, blob in enumerate(wkb):
                if blob is None:
                    continue
                geometries.append(shapely.from_wkb(blob))
                attributes.append({n: _plain(column[i]) for n, column in zip(names, fields)})
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, shapely.errors.GEOSException) as e:
        raise DataError(f"{path}: unreadable {kind} ({' '.join(str(e).split())[:200]})") from None
    if not layers:
        raise DataError(f"{path}: a {kind} without feature layers")
    if len(crs_names) > 1:
        raise DataError(f"{path}: layers in several CRSs ({', '.join(sorted(map(str, crs_names)))}); keep one per file")
    crs_name = crs_names.pop()
    if not crs_name:
        raise DataError(f"{path}: its features have no CRS; assign one (in QGIS: Layer CRS) and save again")
    try:
        crs = rasterio.crs.CRS.from_user_input(crs_name)
    except rasterio.errors.CRSError:
        raise DataError(f"{path}: its CRS ({crs_name}) is unknown to rasterio") from None
    return geometries, crs, attributes


def _plain(value):
    """An attribute as Python data: None for missing, numbers and text as they are, JSON objects parsed."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value.item() if isinstance(value, np.generic) else value


def read_vectors(path):
    """(geometries (shapely), CRS (rasterio)) of a vector file. Raises DataError naming the file."""
    geometries, crs, _ = read_features(path)
    return geometries, crs


def overlapping(layers, georef, shape):
    """Whether any feature of `layers` ([(geometries, crs)]) comes near the image (bounding boxes meet)."""
    rasterio, shapely = require()
    from rasterio.warp import transform_bounds

    bounds = rasterio.transform.array_bounds(shape[0], shape[1], georef["transform"])
    for geometries, crs, *_ in layers:
        if geometries and len(
            shapely.STRtree(geometries).query(shapely.box(*transform_bounds(georef["crs"], crs, *bounds)))
        ):
            return True
    return False


def burn(layers, ignore, georef, shape, line_widths=None, names=None):
    """Class masks and an ignore mask on an image's grid.

    Args:
        layers: per class, in channel order, [(geometries, crs)] or [(geometries, crs, widths)] (several files may
            feed one class); `widths`, one per geometry (metres, or None), overrides the class's width for its lines.
        ignore: [(geometries, crs)] whose polygons and lines mark pixels as ignored.
        georef: the image's {"crs", "transform"}.
        shape: (height, width) of the image.
        line_widths: {class name: metres}; lines are buffered to this width (default 6 m).
        names: the class names of `layers`, for `line_widths`.

    Returns:
        ((C, h, w) uint8 annotation, (h, w) uint8 ignore plane, [features burnt per class], points left out).
    """
    shapes = prepare(layers, ignore, georef, shape, line_widths, names)
    annotation, ignored = rasterize_rows(shapes, georef["transform"], shape, 0, shape[0])
    return annotation, ignored, shapes.counts, shapes.points


@dataclass
class Shapes:
    """The features of an image, ready to rasterize in any window of its grid: per class, polygons (lines
    already widened) in the image's CRS; the ignored ones; and what was burnt and left out."""

    classes: list
    ignore: list
    counts: list
    points: int


def prepare(layers, ignore, georef, shape, line_widths=None, names=None):
    """The Shapes of `layers` and `ignore` on an image's grid (see `burn` for the arguments): reprojected and
    widened once, so that an image read in strips rasterizes each strip alone."""
    rasterio, shapely = require()
    from rasterio.warp import transform_geom

    from imseg.geo.metres import buffer_m

    crs, transform = georef["crs"], georef["transform"]
    bounds = shapely.geometry.box(*rasterio.transform.array_bounds(shape[0], shape[1], transform))
    points = 0

    def prepared(geometries, source_crs, width, widths=None):
        nonlocal points
        out = []
        for i, geometry in enumerate(geometries):
            moved = shapely.geometry.shape(transform_geom(source_crs, crs, shapely.geometry.mapping(geometry)))
            if not moved.intersects(bounds.buffer(bounds.length)):  # far away: not worth widening
                continue
            own = widths[i] if widths is not None and widths[i] is not None else width
            for part in getattr(moved, "geoms", [moved]):
                kind = part.geom_type
                if kind in ("Point", "MultiPoint"):
                    points += part.intersects(bounds)
                elif kind in ("LineString", "LinearRing", "MultiLineString"):
                    out.append(buffer_m(part, crs, own))
                else:
                    out.append(part)
        return [g for g in out if not g.is_empty and g.intersects(bounds)]

    classes = []
    for k, files in enumerate(layers):
        width = (line_widths or {}).get((names or [None] * len(layers))[k], DEFAULT_LINE_WIDTH)
        classes.append([g for entry in files for g in prepared(*entry[:2], width, *entry[2:])])
    ignored = [g for entry in ignore for g in prepared(*entry[:2], DEFAULT_LINE_WIDTH)]
    return Shapes(classes, ignored, [len(c) for c in classes], points)


def rasterize_rows(shapes, transform, shape, y0, y1):
    """((C, y1 - y0, w) annotation, (y1 - y0, w) ignore plane) of rows y0:y1 of the image grid (`transform`,
    `shape`): a pixel belongs to a shape when its centre does."""
    rasterio, shapely = require()
    from rasterio.features import rasterize

    height, width = y1 - y0, shape[1]
    moved = rasterio.windows.transform(rasterio.windows.Window(0, y0, width, height), transform)
    window = shapely.geometry.box(*rasterio.transform.array_bounds(height, width, moved))

    def burnt(geometries):
        inside = [g for g in geometries if g.intersects(window)]
        if not inside:
            return np.zeros((height, width), np.uint8)
        return rasterize(((g, 1) for g in inside), out_shape=(height, width), transform=moved, dtype="uint8")

    annotation = np.zeros((len(shapes.classes), height, width), np.uint8)
    for k, geometries in enumerate(shapes.classes):
        annotation[k] = burnt(geometries)
    return annotation, burnt(shapes.ignore)
