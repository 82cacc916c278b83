"""One clean vector layer per class from the masks of every scene of a mapping job: `imseg-data merge`.

The scenes' masks are read on one grid (the finest pixel of them, in their common CRS) strip by strip; where scenes
overlap, a pixel is the class when any scene says so (the union). Regions are traced in each strip and joined to
the regions of the strip above that touch the edge between them, so that a building cut by a scene edge or a
strip edge is one polygon again; a region that no longer touches the next strip is finished and written at once,
so memory holds one strip and the regions along its lower edge, however many polygons the region has. Then, as
`--vectorize` does, a region is simplified and kept if at least `min_area` square metres; with `regularize`,
buildings become right-angled: the minimum rotated rectangle of a footprint that fills at least 80 % of it, else the
footprint itself, simplified.
"""

import json
import math
import os

import numpy as np

from imseg.errors import ConfigError, DataError
from imseg.geo import require
from imseg.geo.metres import area_m2

STRIP = 2048  # rows read and traced at a time
FILL = 0.8  # a footprint filling its minimum rotated rectangle this much becomes the rectangle (--regularize)
BUILDING_KEYS = ("building",)  # the classes --regularize is for: OSM building tags


def merge(folders, output, min_area=0.0, simplify=1.0, regularize=False, log=None):
    """Write `output` (a GeoPackage, a layer per class) from the scenes of the mapping jobs in `folders` (their
    manifests); returns {class: polygons written}. Folders of other models or classes are refused."""
    from imseg.outputs import atomic_path, check_writable

    check_writable(os.path.dirname(os.path.abspath(output)), "the --output file's folder", "choose another --output")
    rasterio, shapely = require()
    records, classes = _scenes(folders)
    if regularize:
        others = [c for c in classes if c.split(":")[0] not in BUILDING_KEYS]
        if others == classes:
            raise ConfigError(f"--regularize makes building outlines right-angled, but no class is a building "
                              f"({', '.join(classes)}); leave it out")  # fmt: skip
    grids = []
    for folder, record in records:
        masks = {c: os.path.join(folder, "masks", c.replace(":", "-"), record["stem"] + ".tif") for c in classes}
        probs = os.path.join(folder, "probs", record["stem"] + ".tif")
        with rasterio.open(next(iter(masks.values()))) as src:
            grids.append((masks, src.crs, src.transform, src.width, src.height, probs))
    # Multiclass scenes with probabilities: where they overlap, the more confident one decides the class.
    outputs = records[0][1]["classes"]
    confident = records[0][1]["task"] == "multiclass" and all(os.path.exists(g[5]) for g in grids)
    crss = {g[1].to_string() for g in grids if g[1] is not None}
    if len(crss) != 1 or any(g[1] is None for g in grids):
        raise DataError(
            f"merge needs georeferenced scenes in one CRS; these are in {', '.join(sorted(crss)) or 'none'}"
        )
    crs = grids[0][1]
    step = min(min(abs(t.a), abs(t.e)) for _, _, t, _, _, _ in grids)
    left = min(t.c for _, _, t, _, _, _ in grids)
    top = max(t.f for _, _, t, _, _, _ in grids)
    width = math.ceil((max(t.c + w * abs(t.a) for _, _, t, w, _, _ in grids) - left) / step)
    height = math.ceil((top - min(t.f - h * abs(t.e) for _, _, t, _, h, _ in grids)) / step)
    counts = {}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with atomic_path(output, suffix=".gpkg") as tmp:
        os.remove(tmp)
        for name in classes:
            building = regularize and name.split(":")[0] in BUILDING_KEYS
            writer = _Layer(tmp, name, crs, min_area, simplify * step, building)
            index = outputs.index(name) if confident else None
            _trace_class(name, grids, crs, left, top, step, width, height, writer, index)
            counts[name] = writer.close()
            if log:
                log(f"imseg-data: {name}: {counts[name]} polygon(s)")
    return counts


def _scenes(folders):
    """[(folder, record)] of the finished scenes of the jobs, and their classes (without background)."""
    records, settings = [], None
    for folder in folders:
        manifest = os.path.join(folder, "manifest.jsonl")
        if not os.path.isfile(manifest):
            raise ConfigError(f"{folder}: no manifest.jsonl; merge takes the output folders of imseg-infer --images")
        with open(manifest, encoding="utf-8") as f:
            found = [json.loads(line) for line in f if line.strip().endswith("}")]
        for record in found:
            if record.get("status") != "done":
                continue
            mine = (record["model_sha256"], tuple(record["classes"]), record["task"])
            if settings is None:
                settings = (folder, mine)
            elif mine != settings[1]:
                raise ConfigError(
                    f"{folder}: scenes of another model or classes than {settings[0]} "
                    f"({', '.join(record['classes'])}); merge the folders of one model"
                )
            records.append((folder, record))
    if not records:
        raise DataError(f"no finished scene in {', '.join(folders)}; run imseg-infer --images into them first")
    return records, [c for c in records[0][1]["classes"] if c != "background"]


def _trace_class(name, grids, crs, left, top, step, width, height, writer, index=None):
    """Trace the class's pixels strip by strip (see `_strip`), joining regions across strip edges."""
    rasterio, shapely = require()
    from rasterio.features import shapes
    from rasterio.transform import from_origin

    grid = from_origin(left, top, step, step)
    open_regions = []  # regions that touch the lower edge of the strip traced last
    for y in range(0, height, STRIP):
        rows = min(STRIP, height - y)
        window_transform = rasterio.windows.transform(rasterio.windows.Window(0, y, width, rows), grid)
        bounds = rasterio.transform.array_bounds(rows, width, window_transform)
        strip = _strip(name, grids, window_transform, bounds, rows, width, index)
        pieces = []
        if strip.any():
            traced = shapes(strip.astype(np.uint8), mask=strip, transform=window_transform)
            pieces = [shapely.geometry.shape(g) for g, _ in traced]
        edge = shapely.LineString([(left, bounds[1]), (left + width * step, bounds[1])])  # the strip's lower edge
        upper = shapely.LineString([(left, bounds[3]), (left + width * step, bounds[3])])
        joining = [p for p in pieces if p.distance(upper) < step / 2]
        rest = [p for p in pieces if p.distance(upper) >= step / 2]
        # regions of the strip above that meet a piece along the edge become one with it
        merged = _join(open_regions + joining, shapely) if open_regions and joining else open_regions + joining
        open_regions = []
        for region in merged + rest:
            if y + rows < height and region.distance(edge) < step / 2:
                open_regions.append(region)
            else:
                writer.add(region)
    for region in open_regions:
        writer.add(region)


def _strip(name, grids, window_transform, bounds, rows, width, index=None):
    """The class's pixels in a strip of the merged grid: the union of the scenes' masks, or with `index` (the class's
    channel of multiclass probabilities) the class of the most confident scene at each pixel."""
    rasterio, _ = require()
    from rasterio.vrt import WarpedVRT

    strip = np.zeros((rows, width), bool)
    best = np.zeros((rows, width), np.float32)
    for masks, scene_crs, transform, w, h, probs in grids:
        s = rasterio.transform.array_bounds(h, w, transform)
        if s[0] >= bounds[2] or s[2] <= bounds[0] or s[1] >= bounds[3] or s[3] <= bounds[1]:
            continue
        source = probs if index is not None else masks[name]
        with rasterio.open(source) as src, WarpedVRT(src, crs=scene_crs, transform=window_transform, width=width,
                                                     height=rows, nodata=0) as view:  # fmt: skip
            if index is None:
                strip |= view.read(1) > 0
                continue
            p, valid = view.read(), view.dataset_mask() > 0
            confidence = np.where(valid, p.max(0), 0.0)
            better = confidence > best
            best[better] = confidence[better]
            strip[better] = p.argmax(0)[better] == index
    return strip


def _join(polygons, shapely):
    """Polygons that touch or overlap, unioned; the others as they are."""
    union = shapely.unary_union(polygons)
    return [p for p in getattr(union, "geoms", [union]) if not p.is_empty]


class _Layer:
    """The polygons of one class, regularized, simplified (`tolerance` in CRS units), filtered by area and written
    to a GeoPackage layer in batches."""

    def __init__(self, path, name, crs, min_area, tolerance, regularize, batch=10_000):
        self.path, self.name, self.crs = path, name, crs
        self.min_area, self.tolerance, self.regularize, self.batch = min_area, tolerance, regularize, batch
        self.pending, self.count = [], 0

    def add(self, polygon):
        if self.regularize:
            rectangle = polygon.minimum_rotated_rectangle
            if rectangle.area and polygon.area / rectangle.area >= FILL:
                polygon = rectangle
        if self.tolerance:
            polygon = polygon.simplify(self.tolerance, preserve_topology=True)
        area = area_m2(polygon, self.crs)
        if area < self.min_area or polygon.is_empty:
            return
        self.pending.append((polygon, round(area, 2)))
        if len(self.pending) >= self.batch:
            self._flush()

    def _flush(self):
        import pyogrio
        import shapely

        if not self.pending:
            return
        geometry = np.array([shapely.to_wkb(shapely.multipolygons([p]) if p.geom_type == "Polygon" else p)
                             for p, _ in self.pending], object)  # fmt: skip
        data = [np.array([self.name] * len(self.pending), object), np.array([a for _, a in self.pending], float)]
        pyogrio.raw.write(self.path, geometry, data, ["class", "area_m2"], layer=self.name, driver="GPKG",
                          geometry_type="MultiPolygon", crs=self.crs.to_string(),
                          append=os.path.exists(self.path))  # fmt: skip
        self.count += len(self.pending)
        self.pending = []

    def close(self):
        self._flush()
        return self.count
