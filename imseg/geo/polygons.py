"""Predicted masks -> polygons: one GeoJSON feature per connected region per class, holes kept.

The mask GeoTIFFs are read in strips of rows (so a scene larger than memory works too); the regions of each
strip are traced (rasterio.features.shapes), joined again across strip edges (shapely), simplified by a tolerance
in pixels, filtered by area in square metres, and written in WGS84 as RFC 7946 asks (or in the image's CRS).
"""

import json

import numpy as np

from imseg.errors import DataError
from imseg.geo import require
from imseg.geo.metres import area_m2
from imseg.outputs import write_text

STRIP = 2048  # rows traced at a time


def vectorize(masks, output, simplify=1.0, min_area=0.0, vector_crs="wgs84"):
    """Write the regions of `masks` ({class name: mask GeoTIFF}) to the GeoJSON file `output`.

    Args:
        masks: class name -> a one-band GeoTIFF whose non-zero, valid pixels are the class.
        output: the `.geojson` file to write (atomically).
        simplify: Douglas-Peucker tolerance in pixels (0: the pixel outlines as they are).
        min_area: regions smaller than this many square metres are left out.
        vector_crs: "wgs84" (RFC 7946) or "image" (the masks' CRS, named in a `crs` member).

    Returns:
        {class name: number of polygons written}.
    """
    rasterio, shapely = require()
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    from rasterio.windows import Window

    features, counts, crs = [], {}, None
    for name, path in masks.items():
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DataError(f"{path}: not georeferenced; polygons need a CRS (give GeoTIFF input with one)")
            crs = src.crs
            pieces = []
            for y in range(0, src.height, STRIP):
                window = Window(0, y, src.width, min(STRIP, src.height - y))
                region = (src.read(1, window=window) > 0) & (src.read_masks(1, window=window) > 0)
                if region.any():
                    traced = shapes(region.astype(np.uint8), mask=region, transform=src.window_transform(window))
                    pieces += [shapely.geometry.shape(geometry) for geometry, _ in traced]
            pixel = (abs(src.transform.a) + abs(src.transform.e)) / 2
        merged = shapely.unary_union(pieces) if pieces else shapely.geometry.Polygon()  # join across strips
        counts[name] = 0
        for polygon in getattr(merged, "geoms", [merged]):
            if polygon.is_empty:
                continue
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
    collection = {"type": "FeatureCollection", "features": features}
    if vector_crs == "image" and crs is not None:
        collection["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    write_text(output, json.dumps(collection))
    return counts
