"""OpenStreetMap data -> class layers, the AIR way: class names are tag filters.

A class name of `classes.json` is a filter on one OSM key:
- `key:value` (`highway:primary`): that key with that value;
- `key:other` (`building:other`): that key with any value that no other class of the same key names;
- `key:*`, or a bare `key`: that key with any value.

Features come from OSM XML (`.osm`) or PBF (`.osm.pbf`), read with osmium (closed ways are areas by their tags,
`area=yes/no` honoured; multipolygon relations become polygons with their holes), from GeoJSON as Overpass and
osmtogeojson export it (tags flat in `properties` or under `properties.tags`), or from any vector file whose
attribute columns are tags. Lines are widened by `--line-width` (per class, or per tag such as
`highway:primary=10`), else by the table `LINE_WIDTHS` below, else by 6 m; points are counted and left out.
"""

import os
import re
from dataclasses import dataclass

from imseg.errors import ConfigError, DataError
from imseg.geo import require

OSM_EXTENSIONS = (".osm", ".osm.pbf", ".pbf", ".osm.bz2", ".osm.gz")
ANY, OTHER = "*", "other"
_KEY = re.compile(r"^[A-Za-z0-9_:.\-]+$")

# Full widths in metres of lines by their tag, as a road, rail or water course of that kind is drawn from the air.
LINE_WIDTHS = {
    "highway:motorway": 14.0, "highway:trunk": 12.0, "highway:primary": 10.0, "highway:secondary": 9.0,
    "highway:tertiary": 8.0, "highway:unclassified": 6.0, "highway:residential": 6.0, "highway:living_street": 5.0,
    "highway:service": 4.0, "highway:pedestrian": 4.0, "highway:track": 3.0, "highway:footway": 2.0,
    "highway:cycleway": 2.0, "highway:steps": 2.0, "highway:path": 1.5, "railway:rail": 3.0, "railway:tram": 3.0,
    "waterway:river": 10.0, "waterway:canal": 8.0, "waterway:stream": 3.0, "waterway:ditch": 2.0,
    "waterway:drain": 2.0,
}  # fmt: skip

# A closed way is an area when it carries one of these keys (and no `area=no`), except for these values (lines).
AREA_KEYS = {
    "building", "building:part", "landuse", "amenity", "leisure", "natural", "water", "place", "shop", "tourism",
    "man_made", "military", "aeroway", "parking", "landcover", "wetland", "glacier", "historic", "craft", "office",
    "public_transport", "power", "healthcare", "sport",
}  # fmt: skip
LINE_VALUES = {
    "natural": {"coastline", "cliff", "ridge", "arete", "tree_row"},
    "man_made": {"pipeline", "embankment", "breakwater", "groyne", "cutline", "pier"},
    "leisure": {"track", "slipway"},
    "power": {"line", "minor_line", "cable"},
}


@dataclass(frozen=True)
class TagFilter:
    """The filter of one class: `key` with `value` (None: any value; `other`: any value no other class names)."""

    name: str
    key: str
    value: "str | None"
    other: bool = False


def tag_filters(class_names, source="classes.json"):
    """The TagFilter of each class name (in order); a ConfigError names the class whose syntax is unknown."""
    filters = []
    for name in class_names:
        # The value is after the last colon: keys may hold colons themselves (building:part:yes).
        key, value = name.rsplit(":", 1) if ":" in name else (name, ANY)
        if not key or not _KEY.match(key) or not value or any(c in value for c in "=;,") or value != value.strip():
            raise ConfigError(
                f"{source}: class '{name}' is no OSM tag filter; write key:value (highway:primary), key:other (the "
                "key with any value no other class names) or key:* (any value)"
            )
        filters.append(TagFilter(name, key, None if value in (ANY, OTHER) else value, value == OTHER))
    return filters


def classes_of(tags, filters):
    """Indices of the classes whose filter the tags {key: value} match."""
    named = {}
    for f in filters:
        if f.value is not None:
            named.setdefault(f.key, set()).add(f.value)
    matched = []
    for k, f in enumerate(filters):
        value = tags.get(f.key)
        if value is None or value == "no":  # key=no: not such a thing
            continue
        if f.other:
            if str(value) not in named.get(f.key, set()):
                matched.append(k)
        elif f.value is None or str(value) == f.value:
            matched.append(k)
    return matched


def line_width(tags, filters_of_match, widths):
    """The width in metres of a line with these tags: `widths` by `key:value` tag, then by class name, then the
    table LINE_WIDTHS, else None (the caller's default)."""
    for key, value in tags.items():
        if f"{key}:{value}" in widths:
            return widths[f"{key}:{value}"]
    for f in filters_of_match:
        if f.name in widths:
            return widths[f.name]
    for key, value in tags.items():
        if f"{key}:{value}" in LINE_WIDTHS:
            return LINE_WIDTHS[f"{key}:{value}"]
    return None


# Keys that say what a feature is, for counting those that match no class.
MAIN_KEYS = AREA_KEYS | {"highway", "railway", "waterway", "barrier", "boundary", "route", "bridge", "tunnel"}


def main_key(tags):
    """The key that says what a feature is (`building`, `highway`, ...), or "other"."""
    return next((k for k in tags if k in MAIN_KEYS), "other")


def is_osm(path):
    return path.lower().endswith(OSM_EXTENSIONS)


def read_osm(path):
    """[(geometry (shapely, EPSG:4326 lon/lat), tags)] of a file of OSM data: OSM XML or PBF (osmium), Overpass or
    osmtogeojson GeoJSON, or any vector file of tag columns (pyogrio). Returns (features, crs)."""
    if is_osm(path):
        return _read_osmium(path)
    from imseg.geo.vectors import read_features

    geometries, crs, attributes = read_features(path)
    features = []
    for geometry, attrs in zip(geometries, attributes):
        tags = attrs.get("tags") if isinstance(attrs.get("tags"), dict) else {}
        tags = {**{k: v for k, v in attrs.items() if k != "tags" and v not in (None, "")}, **tags}
        features.append((geometry, {str(k): str(v) for k, v in tags.items()}))
    return features, crs


def _is_area(tags):
    area = tags.get("area")
    if area in ("yes", "no"):
        return area == "yes"
    return any(k in AREA_KEYS and v not in LINE_VALUES.get(k, ()) for k, v in tags.items())


def _read_osmium(path):
    rasterio, shapely = require()
    if not os.path.isfile(path):
        raise DataError(f"{path}: OSM file not found")
    try:
        import osmium
    except ImportError:
        raise ConfigError(f"{path}: reading OSM data needs osmium: pip install 'imseg[geo]'") from None
    wkb = osmium.geom.WKBFactory()
    features = []
    try:
        for obj in osmium.FileProcessor(path).with_locations().with_areas():
            tags = {t.k: t.v for t in obj.tags}
            if not tags:
                continue
            if obj.is_node():
                features.append((shapely.Point(obj.location.lon, obj.location.lat), tags))
            elif obj.is_way() and not (obj.is_closed() and _is_area(tags)):
                features.append((shapely.from_wkb(bytes.fromhex(wkb.create_linestring(obj))), tags))
            elif obj.is_area() and (not obj.from_way() or _is_area(tags)):
                features.append((shapely.from_wkb(bytes.fromhex(wkb.create_multipolygon(obj))), tags))
    except (RuntimeError, osmium.InvalidLocationError) as e:
        raise DataError(f"{path}: unreadable OSM data ({' '.join(str(e).split())[:200]})") from None
    return features, rasterio.crs.CRS.from_epsg(4326)
