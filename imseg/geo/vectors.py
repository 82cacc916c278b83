"""Vector labels (GeoJSON, GeoPackage) -> class masks on an image's grid.

Readers, both offline and without GDAL's command-line tools:
- GeoJSON (`.geojson`, `.json`): a FeatureCollection, a Feature or a bare geometry; coordinates in WGS84
  (EPSG:4326) as RFC 7946 says, or in the CRS a legacy `"crs"` member names.
- GeoPackage (`.gpkg`): every feature table's geometry column, read with sqlite3 (the GeoPackage binary header,
  then WKB), in the CRS of its `gpkg_spatial_ref_sys` entry.
Features are reprojected to each image's CRS (rasterio), then burnt: polygons filled, lines buffered to a width in
metres, points left out and counted.
"""

import json
import os
import sqlite3
import struct

import numpy as np

from imseg.errors import DataError
from imseg.geo import require

DEFAULT_LINE_WIDTH = 6.0  # metres: a road as OpenStreetMap draws it, as a line
METRES_PER_DEGREE = 111_320.0  # at the equator; used only when an image's CRS is in degrees


def read_vectors(path):
    """(geometries (shapely), CRS (rasterio)) of a vector file. Raises DataError naming the file."""
    rasterio, shapely = require()
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise DataError(f"{path}: vector file not found")
    if ext in (".geojson", ".json"):
        return _read_geojson(path, rasterio, shapely)
    if ext == ".gpkg":
        return _read_geopackage(path, rasterio, shapely)
    raise DataError(f"{path}: unknown vector format (imseg reads .geojson, .json and .gpkg)")


def _read_geojson(path, rasterio, shapely):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable GeoJSON: {e}") from None
    crs = rasterio.crs.CRS.from_epsg(4326)
    named = ((data.get("crs") or {}).get("properties") or {}).get("name") if isinstance(data, dict) else None
    if named:
        try:
            crs = rasterio.crs.CRS.from_user_input(named.replace("urn:ogc:def:crs:", "").replace("::", ":"))
        except rasterio.errors.CRSError:
            raise DataError(f"{path}: unknown CRS {named!r} in its 'crs' member") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = [f.get("geometry") for f in data.get("features") or [] if isinstance(f, dict)]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data.get("geometry")]
    else:
        items = [data]
    try:
        geometries = [shapely.geometry.shape(g) for g in items if g]
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.GEOSException) as e:
        raise DataError(f"{path}: not GeoJSON geometries ({e})") from None
    return geometries, crs


def _read_geopackage(path, rasterio, shapely):
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            columns = db.execute("SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns").fetchall()
            geometries, srs_ids = [], set()
            for table, column, srs_id in columns:
                srs_ids.add(srs_id)
                for (blob,) in db.execute(f'SELECT "{column}" FROM "{table}"'):  # names from gpkg's own table
                    if blob is not None:
                        geometries.append(shapely.from_wkb(_wkb_of(blob)))
            definitions = {
                srs: db.execute(
                    "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
                    "WHERE srs_id = ?",
                    (srs,),
                ).fetchone()
                for srs in srs_ids
            }
        finally:
            db.close()
    except (sqlite3.Error, struct.error, shapely.errors.GEOSException, ValueError) as e:
        raise DataError(f"{path}: unreadable GeoPackage ({e})") from None
    if not columns:
        raise DataError(f"{path}: a GeoPackage without feature tables (gpkg_geometry_columns is empty)")
    if len(srs_ids) > 1:
        raise DataError(f"{path}: feature tables in several CRSs ({sorted(srs_ids)}); keep one per file")
    row = definitions[srs_ids.pop()]
    if row is None or row[0] in (None, "NONE") or (row[1] in (0, -1) and row[2] in (None, "undefined")):
        raise DataError(f"{path}: its features have no CRS (gpkg_spatial_ref_sys says undefined); assign one in QGIS")
    try:
        crs = rasterio.crs.CRS.from_epsg(row[1]) if row[0].upper() == "EPSG" else rasterio.crs.CRS.from_wkt(row[2])
    except rasterio.errors.CRSError:
        raise DataError(f"{path}: its CRS ({row[0]}:{row[1]}) is unknown to rasterio") from None
    return geometries, crs


def _wkb_of(blob):
    """The WKB inside a GeoPackage geometry blob: 'GP', version, flags, srs_id, then an envelope of 0-8 doubles."""
    if bytes(blob[:2]) != b"GP":
        raise ValueError("not a GeoPackage geometry")
    envelope = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}.get((blob[3] >> 1) & 0x07)
    if envelope is None:
        raise ValueError("bad GeoPackage envelope flag")
    return bytes(blob[8 + envelope :])


def overlapping(layers, georef, shape):
    """Whether any feature of `layers` ([(geometries, crs)]) comes near the image (bounding boxes meet)."""
    rasterio, shapely = require()
    from rasterio.warp import transform_bounds

    bounds = rasterio.transform.array_bounds(shape[0], shape[1], georef["transform"])
    for geometries, crs in layers:
        if geometries and len(
            shapely.STRtree(geometries).query(shapely.box(*transform_bounds(georef["crs"], crs, *bounds)))
        ):
            return True
    return False


def burn(layers, ignore, georef, shape, line_widths=None, names=None):
    """Class masks and an ignore mask on an image's grid.

    Args:
        layers: per class, in channel order, [(geometries, crs)] (several files may feed one class).
        ignore: [(geometries, crs)] whose polygons and lines mark pixels as ignored.
        georef: the image's {"crs", "transform"}.
        shape: (height, width) of the image.
        line_widths: {class name: metres}; lines are buffered to this width (default 6 m).
        names: the class names of `layers`, for `line_widths`.

    Returns:
        ((C, h, w) uint8 annotation, (h, w) uint8 ignore plane, [features burnt per class], points left out).
    """
    rasterio, shapely = require()
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    crs, transform = georef["crs"], georef["transform"]
    scale = 1.0 / METRES_PER_DEGREE if crs.is_geographic else 1.0 / (crs.linear_units_factor[1] or 1.0)
    bounds = shapely.geometry.box(*rasterio.transform.array_bounds(shape[0], shape[1], transform))
    points = 0

    def prepared(geometries, source_crs, width):
        nonlocal points
        out = []
        for geometry in geometries:
            moved = shapely.geometry.shape(transform_geom(source_crs, crs, shapely.geometry.mapping(geometry)))
            polygons, lines = [], []
            for part in getattr(moved, "geoms", [moved]):
                kind = part.geom_type
                if kind in ("Point", "MultiPoint"):
                    points += part.intersects(bounds)
                elif kind in ("LineString", "LinearRing", "MultiLineString"):
                    lines.append(part)
                else:
                    polygons.append(part)
            out += polygons + [line.buffer(width * scale / 2, cap_style="flat") for line in lines]
        return [g for g in out if not g.is_empty and g.intersects(bounds)]

    annotation, counts = np.zeros((len(layers), *shape), np.uint8), []
    for k, files in enumerate(layers):
        width = (line_widths or {}).get((names or [None] * len(layers))[k], DEFAULT_LINE_WIDTH)
        burnt = [g for geometries, source_crs in files for g in prepared(geometries, source_crs, width)]
        counts.append(len(burnt))
        if burnt:
            annotation[k] = rasterize(((g, 1) for g in burnt), out_shape=shape, transform=transform, dtype="uint8")
    ignored = np.zeros(shape, np.uint8)
    for geometries, source_crs in ignore:
        burnt = prepared(geometries, source_crs, DEFAULT_LINE_WIDTH)
        if burnt:
            ignored |= rasterize(((g, 1) for g in burnt), out_shape=shape, transform=transform, dtype="uint8")
    return annotation, ignored, counts, points
