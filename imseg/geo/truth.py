"""How good is the map: predicted masks scored against vector ground truth.

Per class, pixel counts over the scene's valid pixels (the truth burnt on the mask's grid as training burns labels:
polygons filled, lines widened, in metres) give IoU, precision and recall; for a class whose truth is polygons,
objects are matched as SpaceNet scores buildings: a predicted and a true footprint match when their IoU is at least
0.5, each at most once (best first), and F1 = 2 TP / (2 TP + FP + FN) over the matched and unmatched footprints.
"""

from imseg.geo import require

MATCH_IOU = 0.5


def score_scene(masks, truth, line_widths=None, rows=1024):
    """{class: {"tp", "fp", "fn" (pixels), "objects": {"tp", "fp", "fn"} or None}} of the mask GeoTIFFs `masks`
    ({class: path}) against `truth` ({class: [(geometries, crs)]})."""
    rasterio, shapely = require()
    from rasterio.warp import transform_geom
    from rasterio.windows import Window

    from imseg.geo.polygons import regions
    from imseg.geo.vectors import prepare, rasterize_rows

    scores = {}
    for name, path in masks.items():
        layers = truth.get(name, [])
        with rasterio.open(path) as src:
            georef, size = {"crs": src.crs, "transform": src.transform}, (src.height, src.width)
            shapes = prepare([layers], [], georef, size, line_widths, [name])
            tp = fp = fn = 0
            for y in range(0, src.height, rows):
                window = Window(0, y, src.width, min(rows, src.height - y))
                valid = src.read_masks(1, window=window) > 0
                predicted = (src.read(1, window=window) > 0) & valid
                burnt = rasterize_rows(shapes, src.transform, size, y, y + window.height)[0][0].astype(bool) & valid
                tp += int((predicted & burnt).sum())
                fp += int((predicted & ~burnt).sum())
                fn += int((~predicted & burnt).sum())
            crs, bounds = src.crs, shapely.box(*src.bounds)
        polygons = [
            shapely.geometry.shape(transform_geom(source_crs, crs, shapely.geometry.mapping(g)))
            for geometries, source_crs, *_ in layers
            for g in geometries
            if g.geom_type in ("Polygon", "MultiPolygon")
        ]
        objects = None
        if polygons:
            true = [p.intersection(bounds) for p in polygons if p.intersects(bounds)]
            objects = match_objects(regions(path)[0], [p for p in true if p.area > 0])
        scores[name] = {"tp": tp, "fp": fp, "fn": fn, "objects": objects}
    return scores


def match_objects(predicted, true):
    """{"tp", "fp", "fn"} of footprints matched one to one at IoU >= 0.5, the best pairs first."""
    _, shapely = require()
    tree = shapely.STRtree(true) if true else None
    pairs = []
    for i, p in enumerate(predicted):
        for j in tree.query(p) if tree is not None else []:
            union = p.union(true[j]).area
            iou = p.intersection(true[j]).area / union if union else 0.0
            if iou >= MATCH_IOU:
                pairs.append((iou, i, int(j)))
    used_p, used_t = set(), set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return {"tp": len(used_p), "fp": len(predicted) - len(used_p), "fn": len(true) - len(used_t)}


def scores_of(counts):
    """IoU, precision, recall (and object F1) from summed counts; None where a ratio is 0/0."""

    def ratio(a, b):
        return round(a / b, 6) if b else None

    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    out = {"iou": ratio(tp, tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
           "pixels": {"tp": tp, "fp": fp, "fn": fn}}  # fmt: skip
    objects = counts.get("objects")
    if objects is not None:
        t, f_p, f_n = objects["tp"], objects["fp"], objects["fn"]
        out["objects"] = {**objects, "f1": ratio(2 * t, 2 * t + f_p + f_n)}
    return out


def combine(per_scene):
    """Summed counts of several scenes' `score_scene` results, per class."""
    total = {}
    for scores in per_scene:
        for name, c in scores.items():
            t = total.setdefault(name, {"tp": 0, "fp": 0, "fn": 0, "objects": None})
            for k in ("tp", "fp", "fn"):
                t[k] += c[k]
            if c.get("objects") is not None:
                objects = t["objects"] or {"tp": 0, "fp": 0, "fn": 0}
                t["objects"] = {k: objects[k] + c["objects"][k] for k in objects}
    return total
