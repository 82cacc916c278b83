"""`imseg-data convert`: folders of images and masks -> an AIR `im_seg` dataset of tiles.

Images of any size are cut into tiles (edge tiles padded with zeros, never dropped), split into
train/val/test by source image (tiles of one image never land in two splits), and written with a
`classes.json`, `im_seg/path_map.json` (tile -> source and pixel offset) and one annotation per tile.
Pixels that carry no label are written to the annotation's ignore plane: mask values mapped to
"ignore", the zero padding of edge tiles, and image pixels without data (GeoTIFF nodata, transparent).
Everything is built in a temporary folder beside the output and renamed into place at the end.
"""

import collections
import errno
import json
import math
import os
import random
import shutil
import tempfile

import numpy as np

from imseg.annotations import write_annotation
from imseg.config import parse_file
from imseg.errors import ConfigError, DataError, did_you_mean
from imseg.images import georeference, image_size, read_mask, rows_of, tile_extension, write_image
from imseg.layout import IMAGE_EXTENSIONS
from imseg.outputs import check_writable
from imseg.tiles import tile_starts

IGNORE = "ignore"  # class-map target: the pixel carries no label and never counts
BACKGROUND = "background"  # class-map target: the pixel is labelled, with none of the classes


def class_name(name):
    """`building` -> `building:other`; `super:sub` stays."""
    return name if ":" in name else f"{name}:other"


def load_class_map(path, mask_type):
    """{key: class name, IGNORE or BACKGROUND}: keys are (r, g, b) for colour masks, ints for index masks."""
    data = parse_file(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{path}: expected a mapping of {'#RRGGBB colours' if mask_type == 'color' else 'indices'} to class names"
        )
    table = {}
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f'{path}: key \'{key}\': expected a class name, "{BACKGROUND}" or "{IGNORE}"')
        target = value if value in (IGNORE, BACKGROUND) else class_name(value)
        if mask_type == "color":
            text = str(key).lstrip("#")
            if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise ConfigError(f"{path}: key '{key}': expected a colour as \"#RRGGBB\"")
            table[tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))] = target
        else:
            try:
                table[int(key)] = target
            except ValueError:
                raise ConfigError(f"{path}: key '{key}': expected a mask index (an integer)") from None
    return table


def pair_sources(image_dirs, mask_dirs, mask_type, class_dirs=None):
    """[(image path, mask path or {class: mask path})] for every image of every --images/--masks pair."""
    if len(image_dirs) != len(mask_dirs):
        raise ConfigError(
            f"--images was given {len(image_dirs)} times and --masks {len(mask_dirs)}; give them in pairs"
        )
    sources, missing = [], []
    for image_dir, mask_dir in zip(image_dirs, mask_dirs):
        for d, option in ((image_dir, "--images"), (mask_dir, "--masks")):
            if os.path.isfile(d):
                raise ConfigError(f"{d}: is a file; {option} takes a folder (images and masks pair up by name)")
            if not os.path.isdir(d):
                raise ConfigError(f"{d}: folder not found")
        masks = _files_by_stem(mask_dir) if mask_type != "binary" else None
        per_class = {c: _files_by_stem(os.path.join(mask_dir, c)) for c in class_dirs or ()}
        for stem, image in _files_by_stem(image_dir).items():
            if mask_type == "binary":
                mask = {c: found.get(stem) for c, found in per_class.items()}
                missing += [os.path.join(mask_dir, c, stem + ".*") for c, p in mask.items() if p is None]
            else:
                mask = masks.get(stem)
                if mask is None:
                    missing.append(os.path.join(mask_dir, stem + ".*"))
            sources.append((image, mask))
    if missing:
        raise DataError(f"{len(missing)} mask(s) missing: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if not sources:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(image_dirs)}")
    return sources


def _files_by_stem(folder):
    """{stem: path} of the image files of a folder, in name order; two files with one stem are an error (one
    scene in two formats would land in two splits)."""
    if not os.path.isdir(folder):
        raise ConfigError(f"{folder}: folder not found")
    found = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
            continue
        if stem in found:
            raise DataError(
                f"{folder}: two files share the name '{stem}': {os.path.basename(found[stem])} and "
                f"{name}; keep one (images and masks are paired by name)"
            )
        found[stem] = os.path.join(folder, name)
    return found


def to_annotation(mask, mask_type, table, names, path):
    """A mask array -> ((C, h, w) 0/1 annotation, (h, w) 0/1 ignore plane); unmapped values are an error
    listing them with counts."""
    index = {n: i for i, n in enumerate(names)}
    if mask_type == "binary":
        annotation = np.stack([(mask[n] > 0) for n in names]).astype(np.uint8)
        return annotation, np.zeros(annotation.shape[1:], np.uint8)
    if mask_type == "color":
        codes = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
        keys = {(k[0] << 16) | (k[1] << 8) | k[2]: v for k, v in table.items()}
        label = lambda code: f"#{code:06X}"
    else:
        codes, keys, label = mask.astype(np.int64), table, str
    values, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    unmapped = [(label(v), int(c)) for v, c in zip(values, counts) if int(v) not in keys]
    if unmapped:
        listed = ", ".join(f"{v} ({c} px)" for v, c in sorted(unmapped, key=lambda x: -x[1]))
        raise DataError(
            f'{path}: values not in the class map: {listed}; map them to a class, to "{BACKGROUND}" or to "{IGNORE}"'
        )
    channel = np.array([index.get(keys[int(v)], -1) for v in values])
    per_pixel = channel[inverse.reshape(codes.shape)]
    ignored = np.array([keys[int(v)] == IGNORE for v in values])[inverse.reshape(codes.shape)]
    return np.stack([(per_pixel == k) for k in range(len(names))]).astype(np.uint8), ignored.astype(np.uint8)


def split_sources(count, fractions, seed):
    """Shuffle source indices with `seed` and cut them into train/val/test by `fractions`."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    sizes = [int(round(f * count)) for f in fractions]
    # Every split asked for gets an image when there are enough; rounding never loses or invents any.
    for i, f in enumerate(fractions):
        if f > 0 and sizes[i] == 0 and count >= sum(1 for x in fractions if x > 0):
            sizes[i] = 1
    while sum(sizes) > count:
        sizes[sizes.index(max(sizes))] -= 1
    while sum(sizes) < count:
        sizes[fractions.index(max(fractions))] += 1
    bounds = np.cumsum([0] + sizes)
    return {
        split: [order[i] for i in range(bounds[k], bounds[k + 1])] for k, split in enumerate(("train", "val", "test"))
    }


def parse_assignments(items, what, number=False):
    """["CLASS=VALUE", ...] of --vectors / --line-width -> [(class name, value)]; errors name the option."""
    pairs = []
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"--{what} {item}: expected CLASS=" + ("METRES" if number else "FILE"))
        if number:
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"--{what} {item}: expected a width in metres, got {value!r}") from None
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"--{what} {item}: expected a finite width in metres > 0")
        pairs.append((class_name(name), value))
    return pairs


def parse_split_areas(items):
    """["val=FILE", "test=FILE"] of --split-areas -> {split: file}, or None."""
    if not items:
        return None
    areas = {}
    for item in items:
        split, sep, path = item.partition("=")
        if not sep or split not in ("val", "test") or not path:
            raise ConfigError(f"--split-areas {item}: expected val=FILE or test=FILE (the rest goes to train)")
        areas[split] = path
    return areas


def convert(
    images,
    masks=None,
    mask_type=None,
    output=None,
    tile_size=None,
    class_map=None,
    overlap=0,
    split=(0.8, 0.1, 0.1),
    seed=0,
    annotation_format="json",
    bands=None,
    vectors=None,
    line_widths=None,
    vectors_ignore=None,
    osm=None,
    classes_path=None,
    burn_order=None,
    resolution=None,
    split_by="image",
    block_size=None,
    split_areas=None,
    log=print,
):
    """Build an AIR `im_seg` dataset of tiles at `output` from folders of images with masks or vector labels.

    Args:
        images: folders of images (JPEG, PNG, GeoTIFF).
        masks: folders of masks, paired in order with `images`; each image needs a mask with its file stem.
        mask_type: "color" (RGB masks and a class map of "#RRGGBB" colours), "index" (one-channel masks and a
            class map of indices) or "binary" (one subfolder of masks per class).
        output: the dataset root to create (new, or an empty folder).
        tile_size: tile edge in pixels; `overlap`: pixels shared by neighbouring tiles.
        class_map: the class map file (color and index masks).
        split: fractions of source images for train, val and test; `seed` draws them.
        annotation_format: "json" (AIR) or "npz" (compact).
        bands: GeoTIFF bands to keep, counted from 1, in order (default: all but alpha).
        vectors: instead of masks, [(class, vector file)]: features burnt into georeferenced images.
        line_widths: {class: metres} for line features (default 6).
        vectors_ignore: vector files whose features mark ignored pixels.
        osm: files of OpenStreetMap data (OSM XML, PBF, Overpass GeoJSON, tag columns): their features go to the
            classes of `classes_path`, whose names are tag filters (`imseg.geo.osm`); `line_widths` may also name
            tags (`highway:primary`).
        burn_order: vector labels made exclusive, a later class taking the pixel ([] : the classes' order); None
            keeps overlaps.
        resolution: with vector or OSM labels, resample every scene (bilinear) to this many metres per pixel
            before it is tiled and labelled, so that scenes of different ground sample distance look alike.
        split_by: "image" (every tile of a source image in one split) or "blocks" (square blocks of `block_size`
            pixels drawn into the splits by `split` and `seed`: one large scene gives all three, and neighbouring
            tiles, in one block, never leak across splits).
        split_areas: {"val": vector file, "test": vector file}: tiles whose larger part lies in a file's polygons go
            to that split, the others to train (instead of `split`).
        log: called with each line to report.

    Returns:
        {split: tiles written}.
    """
    if not 0 <= overlap < tile_size:
        raise ConfigError(f"--overlap must be at least 0 and less than --tile-size ({tile_size}), got {overlap}")
    fractions = list(split)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"--split needs three fractions >= 0 that sum to 1 (train val test), got {fractions}")
    if resolution is not None and not (resolution > 0 and math.isfinite(resolution)):
        raise ConfigError(f"--resolution {resolution}: expected metres per pixel > 0")
    output = os.path.abspath(output)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ConfigError(f"{output}: output exists and is not an empty folder; choose a new one")
    parent = os.path.dirname(output)
    check_writable(parent, "the --output folder", "choose another --output")  # before labels are read (minutes)
    if vectors or osm:
        if masks:
            raise ConfigError(f"give --masks or {'--osm' if osm else '--vectors'}, not both")
        names, sources, labels = _vector_labels(images, vectors or [], line_widths, vectors_ignore, log, osm or [],
                                                classes_path, burn_order, resolution)  # fmt: skip
    else:
        if resolution is not None:
            raise ConfigError("--resolution resamples georeferenced scenes labelled by --vectors or --osm; masks are "
                              "drawn on their images' own grid")  # fmt: skip
        if not masks or not mask_type:
            raise ConfigError("give --masks with --mask-type, --vectors CLASS=FILE or --osm FILE")
        names, sources, labels = _mask_labels(images, masks, mask_type, class_map)
    if split_areas or split_by == "blocks":
        split_of = _tile_splits(sources, fractions, seed, split_by, block_size, split_areas, tile_size, overlap,
                                resolution)  # fmt: skip
        splits = None
    else:
        splits = split_sources(len(sources), fractions, seed)
        split_of = None
    empty = (
        [] if splits is None else [n for n, f in zip(("train", "val", "test"), fractions) if f > 0 and not splits[n]]
    )
    if empty:
        where = (f"{len(sources)} source image(s) leave split {', '.join(empty)} empty (tiles of one image stay in one "
                 "split)")  # fmt: skip
        if len(sources) == 1:
            raise ConfigError(f"{where}; one image fills one split only, and training needs train and val: add images")
        train, val = fractions[0] or 0.5, fractions[1] or 0.5
        raise ConfigError(f"{where}; add images, or leave test out: --split {train / (train + val):.2g} "
                          f"{val / (train + val):.2g} 0 (training needs train and val)")  # fmt: skip
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}-", dir=parent)
    try:
        counts = _write_tiles(sources, labels, splits, names, tile_size, overlap, annotation_format, bands, tmp,
                              resolution, split_of)  # fmt: skip
        classes = collections.defaultdict(list)
        for n in names:
            sup, sub = n.split(":", 1)
            classes[sup].append(sub)
        with open(os.path.join(tmp, "classes.json"), "w", encoding="utf-8") as f:
            json.dump(dict(classes), f, indent=2)
        try:
            if os.path.exists(output):
                os.rmdir(output)
            os.replace(tmp, output)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise ConfigError(f"{output}: another process wrote a dataset there while this one was converting; "
                              "theirs is kept and this one discarded: choose a new --output") from None  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(
        f"imseg-data: {len(sources)} images -> "
        + ", ".join(f"{counts[s]} {s}" for s in counts)
        + f" tiles of {tile_size}x{tile_size} in {output}; classes: {', '.join(names)}"
    )
    return counts


def _mask_labels(images, masks, mask_type, class_map):
    """(class names, [(image, mask)], labels) for mask folders: `labels(source, (h, w))` gives `rows(y0, y1)` ->
    (annotation, ignored) of those rows of the image."""
    if mask_type == "binary":
        class_dirs = sorted(d for d in os.listdir(masks[0]) if os.path.isdir(os.path.join(masks[0], d)))
        if not class_dirs:
            raise ConfigError(f"{masks[0]}: --mask-type binary needs one subfolder per class")
        table, names = None, sorted({class_name(c) for c in class_dirs})
        names_by_dir = {class_name(c): c for c in class_dirs}
    else:
        if not class_map:
            raise ConfigError(f"--mask-type {mask_type} needs --class-map FILE")
        table = load_class_map(class_map, mask_type)
        class_dirs, names_by_dir = None, None
        names = sorted({v for v in table.values() if v not in (IGNORE, BACKGROUND)})
        if not names:
            raise ConfigError(f'{class_map}: maps every value to "{BACKGROUND}" or "{IGNORE}"; name at least one class')
    sources = pair_sources(images, masks, mask_type, class_dirs)

    def labels(source, size):
        image_path, mask_path = source
        if mask_type == "binary":
            mask = {n: read_mask(mask_path[names_by_dir[n]], "index") for n in names}
            shapes = {n: m.shape[:2] for n, m in mask.items()}
        else:
            mask = read_mask(mask_path, mask_type)
            shapes = {mask_path: mask.shape[:2]}
        for which, shape in shapes.items():
            if shape != tuple(size):
                path = mask_path[names_by_dir[which]] if mask_type == "binary" else which
                raise DataError(
                    f"{path}: mask is {shape[1]}x{shape[0]} (width x height) but its image {image_path} "
                    f"is {size[1]}x{size[0]}"
                )
        annotation, ignored = to_annotation(mask, mask_type, table, names, mask_path)
        return lambda y0, y1: (annotation[:, y0:y1], ignored[y0:y1])

    return names, sources, labels


def _vector_labels(
    images, vectors, line_widths, vectors_ignore, log, osm=(), osm_classes=None, burn_order=None, resolution=None
):
    """(class names, [(image, None)], labels) for vector files (and OSM data) burnt into georeferenced images."""
    from imseg.geo.vectors import overlapping, prepare, rasterize_rows, read_vectors

    filters = _osm_filters(osm_classes, vectors) if osm else []
    names = sorted({name for name, _ in vectors} | {f.name for f in filters})
    # --line-width may name a class, or with --osm a tag (highway:primary)
    unknown = sorted(n for n in line_widths or {} if n not in names and not (osm and ":" in n))
    if unknown:
        what = "--vectors or --osm tag filter" if osm else "--vectors"
        raise ConfigError(f"--line-width {unknown[0]}: no {what} for this class; classes: {', '.join(names)}")
    order = _burn_order(burn_order, names)
    loaded = {}  # path -> (geometries, crs): what must overlap some image
    files = {}  # class -> [(geometries, crs[, widths])]
    for name, path in vectors:
        loaded.setdefault(path, read_vectors(path))
        files.setdefault(name, []).append(loaded[path])
    if osm:
        _osm_layers(osm, filters, line_widths or {}, files, loaded, log)
    ignore = [read_vectors(path) for path in vectors_ignore or ()]
    sources = []
    for folder in images:  # folders of scenes, or scene files
        if os.path.isfile(folder):
            sources.append((folder, None))
            continue
        if not os.path.isdir(folder):
            raise ConfigError(f"{folder}: no such file or folder")
        sources += [(path, None) for path in _files_by_stem(folder).values()]
    stems = [os.path.splitext(os.path.basename(p))[0] for p, _ in sources]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ConfigError(f"two scenes share the name '{twice[0]}'; their tiles would mix: rename one")
    if not sources:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(images)}")
    layers = [files.get(n, []) for n in names]
    grids = {}
    for path, _ in sources:  # before anything is written: every image can take the features
        georef = georeference(path, resolution)
        if georef is None:
            raise DataError(f"{path}: not georeferenced (no CRS or geotransform), so vector labels cannot be placed")
        grids[path] = (georef, image_size(path, resolution))
    # Every vector file labels some image: one of another place would train an all-negative class.
    reach = {path: [image for image, (georef, size) in grids.items() if overlapping([data], georef, size)]
             for path, data in loaded.items()}  # fmt: skip
    for path, images_reached in reach.items():
        if not images_reached:
            scenes = sorted({g["crs"].to_string() for g, _ in grids.values()})
            raise DataError(
                f"{path}: no feature overlaps any of the {len(grids)} image(s) (the file is in "
                f"{loaded[path][1].to_string()}, the images in {', '.join(scenes)}): is it of the same place?"
            )
    for image in grids:
        if not any(image in reached for reached in reach.values()):
            log(f"imseg-data: note: {image}: no feature of any vector file overlaps it; its tiles get no labels")
    if order is not None:
        log(f"imseg-data: burn order (a later class takes the pixel): {', '.join(names[k] for k in order)}")

    def labels(source, size):
        georef = grids[source[0]][0]
        shapes = prepare(layers, ignore, georef, size, line_widths, names)  # once per scene, rasterized by rows
        if any(shapes.counts):
            found = ", ".join(f"{shapes.counts[k]} {n}" for k, n in enumerate(names))
            log(
                f"imseg-data: {os.path.basename(source[0])}: {found}"
                + (f"; {shapes.points} point(s) left out" if shapes.points else "")
            )

        def rows(y0, y1):
            annotation, ignored = rasterize_rows(shapes, georef["transform"], size, y0, y1)
            if order is not None:  # one class per pixel: each class in turn takes its pixels from those before it
                taken = np.zeros_like(annotation)
                for k in order:
                    taken[:, annotation[k] > 0] = 0
                    taken[k] = annotation[k]
                annotation = taken
            return annotation, ignored

        return rows

    return names, sources, labels


def _osm_filters(classes_path, vectors):
    """The tag filters of the classes file for --osm; no class may come from --vectors too."""
    from imseg.classes import load_class_names
    from imseg.geo.osm import tag_filters

    if not classes_path or not os.path.exists(classes_path):
        raise ConfigError(
            f"{classes_path or 'classes.json'}: --osm needs a classes file of OSM tag filters, e.g. "
            '{"building": ["other"], "highway": ["primary", "other"]}; pass --classes-path'
        )
    filters = tag_filters(load_class_names(classes_path), classes_path)
    given = dict(vectors)
    clash = [f.name for f in filters if f.name in given]
    if clash:
        raise ConfigError(f"class {clash[0]}: given by --vectors {given[clash[0]]} and by the tag filters of "
                          f"{classes_path} for --osm; give each class one source")  # fmt: skip
    return filters


def _osm_layers(osm, filters, line_widths, files, loaded, log):
    """Add the features of the OSM files to `files` by their tag `filters` (and each file to `loaded`)."""
    from imseg.geo.osm import classes_of, line_width, main_key, read_osm

    unmatched, matched_any = collections.Counter(), set()
    for path in osm:
        features, crs = read_osm(path)
        loaded[path] = ([g for g, _ in features], crs)
        per_class = {f.name: ([], []) for f in filters}
        for geometry, tags in features:
            matched = classes_of(tags, filters)
            if not matched:
                unmatched[main_key(tags)] += 1
                continue
            width = line_width(tags, [filters[k] for k in matched], line_widths)
            for k in matched:
                per_class[filters[k].name][0].append(geometry)
                per_class[filters[k].name][1].append(width)
                matched_any.add(filters[k].name)
        for name, (geometries, widths) in per_class.items():
            files.setdefault(name, []).append((geometries, crs, widths))
    if unmatched:
        log("imseg-data: OSM features that match no class, by key: "
            + ", ".join(f"{key} {n}" for key, n in unmatched.most_common()))  # fmt: skip
    for f in filters:
        if f.name not in matched_any:
            log(f"imseg-data: note: class {f.name} matches no feature of {', '.join(osm)}; its masks stay empty")


def _burn_order(order, names):
    """Channel indices in burn order (a later class takes the pixel), or None to keep overlaps (multilabel)."""
    if order is None:
        return None
    unknown = [n for n in order if n not in names]
    if unknown:
        raise ConfigError(f"--burn-order {unknown[0]}: no such class{did_you_mean(unknown[0], names)}; classes: "
                          f"{', '.join(names)}")  # fmt: skip
    listed = [names.index(n) for n in order]
    return [k for k in range(len(names)) if k not in listed] + listed


def _tile_splits(sources, fractions, seed, split_by, block_size, split_areas, tile_size, overlap, resolution):
    """split(source index, y, x) of every tile, by blocks of `block_size` pixels or by the polygons of
    `split_areas`; checks first that every split asked for gets tiles."""
    sizes = [image_size(path, resolution) for path, _ in sources]
    stride = tile_size - overlap
    tiles = [(i, y, x) for i, (h, w) in enumerate(sizes) for y in tile_starts(h, tile_size, stride, edge="pad")
             for x in tile_starts(w, tile_size, stride, edge="pad")]  # fmt: skip
    if split_areas:
        table = _area_splits(sources, tiles, split_areas, tile_size, resolution)
    else:
        if not block_size or block_size < tile_size:
            raise ConfigError(f"--split-by blocks needs --block-size PX of at least --tile-size ({tile_size})")
        blocks = sorted({(i, y // block_size, x // block_size) for i, y, x in tiles})
        drawn = split_sources(len(blocks), fractions, seed)
        block_split = {blocks[k]: split for split, members in drawn.items() for k in members}
        table = {(i, y, x): block_split[(i, y // block_size, x // block_size)] for i, y, x in tiles}
        empty = [n for n, f in zip(("train", "val", "test"), fractions) if f > 0 and not drawn[n]]
        if empty:
            raise ConfigError(f"{len(blocks)} block(s) of {block_size} px leave split {', '.join(empty)} empty; give a "
                              "smaller --block-size")  # fmt: skip
    missing = [n for n in ("train", "val") if n not in table.values()]
    if missing:
        raise ConfigError(f"split {', '.join(missing)} gets no tile; training needs train and val")
    return lambda i, y, x: table[(i, y, x)]


def _area_splits(sources, tiles, split_areas, tile_size, resolution):
    """{(source, y, x): split}: a tile goes to the split of the area that holds its larger part, else to train."""
    from imseg.geo import require
    from imseg.geo.vectors import read_vectors

    _, shapely = require()
    from rasterio.warp import transform_geom

    areas = {split: read_vectors(path) for split, path in split_areas.items()}
    table, grids = {}, {}
    for i, y, x in tiles:
        if i not in grids:
            georef = georeference(sources[i][0], resolution)
            if georef is None:
                raise DataError(f"{sources[i][0]}: not georeferenced, so --split-areas cannot place its tiles")
            regions = {}
            for split, (geometries, crs) in areas.items():
                moved = [shapely.geometry.shape(transform_geom(crs, georef["crs"], shapely.geometry.mapping(g)))
                         for g in geometries]  # fmt: skip
                regions[split] = shapely.unary_union([g for g in moved if g.area > 0] or [shapely.Polygon()])
            grids[i] = (georef["transform"], regions)
        transform, regions = grids[i]
        corners = [transform @ (x, y), transform @ (x + tile_size, y + tile_size)]
        box = shapely.box(*(min(c[0] for c in corners), min(c[1] for c in corners)),
                          *(max(c[0] for c in corners), max(c[1] for c in corners)))  # fmt: skip
        share = {split: box.intersection(region).area for split, region in regions.items()}
        best = max(share, key=share.get) if share else None
        table[(i, y, x)] = best if best and share[best] > box.area / 2 else "train"
    return table


def _write_tiles(
    sources, labels, splits, names, tile_size, overlap, annotation_format, bands, root, resolution=None, tile_split=None
):
    from imseg.progress import progress

    path_map, counts = {}, {}
    ext = ".npz" if annotation_format == "npz" else ".json"
    number = 0
    split_of = {i: s for s, members in (splits or {}).items() for i in members}
    for split in ("train", "val", "test"):
        for sub in ("images", "annotations"):
            os.makedirs(os.path.join(root, "im_seg", split, sub), exist_ok=True)
        counts[split] = 0
    for i, (image_path, mask_path) in progress(list(enumerate(sources)), "converting", unit="images"):
        split, t = split_of.get(i), tile_size
        georef = georeference(image_path, resolution)
        # Row by row of tiles: memory holds a strip of the scene, not the scene (a GeoTIFF is read in windows).
        with rows_of(image_path, bands, resolution) as (h, w, read_rows):
            label_rows = labels((image_path, mask_path), (h, w))
            for y in tile_starts(h, t, t - overlap, edge="pad"):
                strip, has_data = read_rows(y, min(y + t, h))
                annotation, ignored = label_rows(y, min(y + t, h))
                ignored = ignored | ~has_data
                for x in tile_starts(w, t, t - overlap, edge="pad"):
                    where = tile_split(i, y, x) if tile_split else split
                    number = _write_tile(strip, annotation, ignored, x, y, t, names, number, where, root, ext, georef,
                                         image_path, resolution, path_map, counts)  # fmt: skip
    with open(os.path.join(root, "im_seg", "path_map.json"), "w", encoding="utf-8") as f:
        json.dump(path_map, f, indent=1)
    return counts


def _write_tile(strip, annotation, ignored, x, y, t, names, number, split, root, ext, georef, image_path, resolution,
                path_map, counts):  # fmt: skip
    """Cut the tile at column x of a strip of rows starting at row y, write it and record it; returns the next tile
    number. Edge tiles are padded with zeros, and the padding is ignored."""
    tile = np.zeros((t, t, strip.shape[2]), strip.dtype)
    ann = np.zeros((len(names), t, t), np.uint8)
    ignore = np.ones((t, t), np.uint8)  # the zero padding of edge tiles carries no label
    part = strip[:, x : x + t]
    tile[: part.shape[0], : part.shape[1]] = part
    ann[:, : part.shape[0], : part.shape[1]] = annotation[:, :, x : x + t]
    ignore[: part.shape[0], : part.shape[1]] = ignored[:, x : x + t]
    tile_id = str(number)
    folder = os.path.join(root, "im_seg", split)
    name = tile_id + tile_extension(tile)
    entry = {"split": split, "image": os.path.abspath(image_path), "x": x, "y": y, "width": t, "height": t}
    tile_georef = None
    if georef:  # the tile's own transform: the source's, moved to the tile's corner
        corner = georef["transform"] @ type(georef["transform"]).translation(x, y)
        tile_georef = {"crs": georef["crs"], "transform": corner}
        entry.update(crs=georef["crs"].to_string(), transform=list(corner)[:6])
    if resolution is not None:
        entry["resolution"] = resolution
    write_image(os.path.join(folder, "images", name), tile, tile_georef)
    write_annotation(os.path.join(folder, "annotations", tile_id + ext), ann, name, ignore)
    path_map[tile_id] = entry
    counts[split] += 1
    return number + 1
