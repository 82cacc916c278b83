"""Predicted masks -> polygons: one GeoJSON feature per connected region per class, holes kept.

The mask GeoTIFFs are read in strips of rows (so a scene larger than memory works too); the regions of each
strip are traced (rasterio.features.shapes), joined again across strip edges (shapely), simplified by a tolerance
in pixels, filtered by area in square metres, and written in WGS84 as RFC 7946 asks (or in the image's CRS).
"""

import json
import os

import numpy as np

from imseg.errors import DataError
from imseg.geo import require
from imseg.geo.metres import area_m2
from imseg.outputs import write_text

STRIP = 2048  # rows traced at a time


VECTOR_FORMATS = {"geojson": ".geojson", "gpkg": ".gpkg", "fgb": ".fgb"}


def regions(path):
    """(polygons, CRS, pixel size) of the connected regions of a mask GeoTIFF (its non-zero, valid pixels), traced
    in strips of rows and joined again across strip edges, holes kept, in the mask's CRS."""
    rasterio, shapely = require()
    from rasterio.features import shapes
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        if src.crs is None:
            raise DataError(f"{path}: not georeferenced; polygons need a CRS (give GeoTIFF input with one)")
        pieces = []
        for y in range(0, src.height, STRIP):
            window = Window(0, y, src.width, min(STRIP, src.height - y))
            region = (src.read(1, window=window) > 0) & (src.read_masks(1, window=window) > 0)
            if region.any():
                traced = shapes(region.astype(np.uint8), mask=region, transform=src.window_transform(window))
                pieces += [shapely.geometry.shape(geometry) for geometry, _ in traced]
        pixel = (abs(src.transform.a) + abs(src.transform.e)) / 2
        crs = src.crs
    merged = shapely.unary_union(pieces) if pieces else shapely.geometry.Polygon()  # join across strips
    return [p for p in getattr(merged, "geoms", [merged]) if not p.is_empty], crs, pixel


def vectorize(masks, output, simplify=1.0, min_area=0.0, vector_crs="wgs84", vector_format="geojson"):
    """Write the regions of `masks` ({class name: mask GeoTIFF}) to the vector file `output`.

    Args:
        masks: class name -> a one-band GeoTIFF whose non-zero, valid pixels are the class.
        output: the file to write (atomically): GeoJSON, GeoPackage (one layer per class) or FlatGeobuf, as
            `vector_format` says; every feature has the properties `class` and `area_m2`.
        simplify: Douglas-Peucker tolerance in pixels (0: the pixel outlines as they are).
        min_area: regions smaller than this many square metres are left out.
        vector_crs: "wgs84" (RFC 7946) or "image" (the masks' CRS).
        vector_format: "geojson", "gpkg" or "fgb".

    Returns:
        {class name: number of polygons written}.
    """
    _, shapely = require()
    from rasterio.warp import transform_geom

    features, counts, crs = [], {}, None
    for name, path in masks.items():
        found, crs, pixel = regions(path)
        counts[name] = 0
        for polygon in found:
            simple = polygon.simplify(simplify * pixel, preserve_topology=True) if simplify else polygon
            area = area_m2(simple, crs)
            if area < min_area:
                continue
            geometry = shapely.geometry.mapping(simple)
            if vector_crs == "wgs84":
                geometry = transform_geom(crs, "EPSG:4326", geometry)
            features.append({"type": "Feature", "properties": {"class": name, "area_m2": round(area, 2)},
                             "geometry": geometry})  # fmt: skip
            counts[name] += 1
    if vector_format == "geojson":
        collection = {"type": "FeatureCollection", "features": features}
        if vector_crs == "image" and crs is not None:
            collection["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
        write_text(output, json.dumps(collection))
    else:
        _write_layers(features, output, vector_format, "EPSG:4326" if vector_crs == "wgs84" else crs.to_string())
    return counts


def _write_layers(features, output, vector_format, crs):
    """GeoJSON-like features into a GeoPackage (a layer per class) or a FlatGeobuf, written by pyogrio."""
    import numpy as np
    import pyogrio
    import shapely

    from imseg.outputs import atomic_path

    # FlatGeobuf: one layer, named as the file (GDAL would name it after the temporary file)
    layers = {os.path.splitext(os.path.basename(output))[0]: features} if vector_format == "fgb" else {}
    if vector_format == "gpkg":
        for feature in features:
            layers.setdefault(feature["properties"]["class"], []).append(feature)
    with atomic_path(output, suffix=VECTOR_FORMATS[vector_format]) as tmp:
        os.remove(tmp)  # GDAL creates the file itself
        for i, (layer, chosen) in enumerate(layers.items()):
            geometry = np.array([shapely.to_wkb(shapely.geometry.shape(f["geometry"])) for f in chosen], object)
            fields = ["class", "area_m2"]
            data = [np.array([f["properties"][k] for f in chosen], object if k == "class" else float) for k in fields]
            pyogrio.raw.write(tmp, geometry, data, fields, layer=layer, driver=_DRIVERS[vector_format],
                              geometry_type="MultiPolygon", promote_to_multi=True, crs=crs, append=i > 0)  # fmt: skip
        if not layers:  # nothing found: a valid, empty file all the same
            pyogrio.raw.write(tmp, np.array([], object), [np.array([], object), np.array([], float)],
                              ["class", "area_m2"], driver=_DRIVERS[vector_format], geometry_type="MultiPolygon",
                              crs=crs)  # fmt: skip


_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}
