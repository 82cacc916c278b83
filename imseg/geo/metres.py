"""Metres on the ground, whatever the CRS: line widths and areas where coordinates are degrees.

A degree of longitude is 111 km at the equator and cos(latitude) of that elsewhere (half at 60° N), so widths and
areas in a geographic CRS are never taken from degrees: a line is buffered in the UTM zone of its own centre and
brought back, and an area is the geodesic area on the WGS84 ellipsoid (pyproj). In a projected CRS its own unit is
used, scaled to metres.
"""

from imseg.geo import require


def _pyproj():
    try:
        import pyproj
    except ImportError:
        from imseg.errors import ConfigError

        raise ConfigError("metres in a geographic CRS need pyproj: pip install 'imseg[geo]'") from None
    return pyproj


def utm_of(geometry, crs):
    """The CRS of the UTM zone (WGS84) at the centre of `geometry`, given in the geographic CRS `crs`."""
    rasterio, _ = require()
    from rasterio.warp import transform

    point = geometry.centroid if not geometry.is_empty else geometry
    (lon,), (lat,) = transform(crs, "EPSG:4326", [point.x], [point.y])
    zone = min(max(int((lon + 180) // 6) + 1, 1), 60)
    return rasterio.crs.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def buffer_m(line, crs, width):
    """`line` (in `crs`) widened to `width` metres (flat ends), in `crs`."""
    _, shapely = require()
    if not crs.is_geographic:
        return line.buffer(width / 2 / (crs.linear_units_factor[1] or 1.0), cap_style="flat")
    from rasterio.warp import transform_geom

    local = utm_of(line, crs)
    moved = shapely.geometry.shape(transform_geom(crs, local, shapely.geometry.mapping(line)))
    wide = moved.buffer(width / 2, cap_style="flat")
    return shapely.geometry.shape(transform_geom(local, crs, shapely.geometry.mapping(wide)))


def area_m2(polygon, crs):
    """The area of `polygon` (in `crs`) in square metres: geodesic on WGS84 for a geographic CRS."""
    _, shapely = require()
    if not crs.is_geographic:
        return polygon.area * (crs.linear_units_factor[1] ** 2)
    from rasterio.warp import transform_geom

    lonlat = shapely.geometry.shape(transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(polygon)))
    area, _ = _pyproj().Geod(ellps="WGS84").geometry_area_perimeter(lonlat)
    return abs(area)
