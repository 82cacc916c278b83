"""imseg-data convert | verify | show (also `python -m imseg.data`)."""

import os
import sys

from imseg.cli import ArgumentParser, integer, log, number, run
from imseg.errors import ConfigError


def parse_args(argv=None):
    p = ArgumentParser(prog="imseg-data", description="Build, check and look at AIR im_seg datasets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    c = sub.add_parser("convert", help="images + masks (or vector labels) -> AIR im_seg tiles")
    c.add_argument("--images", action="append", required=True, help="folder of images (repeat, paired with --masks)")
    c.add_argument("--masks", action="append", help="folder of masks with the images' file stems")
    c.add_argument(
        "--vectors",
        action="append",
        metavar="CLASS=FILE",
        help="instead of masks: burn the features of FILE (GeoJSON, GeoPackage) into class CLASS (repeatable)",
    )
    c.add_argument(
        "--line-width", action="append", metavar="CLASS=METRES", help="width of CLASS's line features (default 6)"
    )
    c.add_argument("--vectors-ignore", action="append", metavar="FILE", help="features that mark ignored pixels")
    c.add_argument("--osm", action="append", metavar="FILE",
                   help="OpenStreetMap data (.osm, .osm.pbf, Overpass GeoJSON, tag columns): features go to the "
                        "classes of --classes-path, whose names are tag filters (repeatable)")  # fmt: skip
    c.add_argument("--classes-path", help="with --osm: classes.json of tag filters (default ./classes.json)")
    c.add_argument("--resolution", type=number(1e-6, 1e6), metavar="M",
                   help="with --vectors/--osm: resample every scene to M metres per pixel first")  # fmt: skip
    c.add_argument("--burn-order", nargs="*", metavar="CLASS",
                   help="one class per pixel, a later class taking it (no classes: their order); default: keep "
                        "overlaps")  # fmt: skip
    c.add_argument("--bands", type=integer(1), nargs="+", help="GeoTIFF bands to keep, counted from 1, in order")
    c.add_argument(
        "--mask-type",
        choices=("color", "index", "binary"),
        help="color: RGB masks; index: one-channel class indices; binary: one subfolder per class",
    )
    c.add_argument(
        "--class-map",
        help='JSON/YAML: {"#RRGGBB": class} (color) or {"index": class} (index); '
        '"background": labelled, no class; "ignore": no label, never counts',
    )
    c.add_argument("--tile-size", type=integer(1), required=True, help="tile edge in pixels")
    c.add_argument("--overlap", type=integer(0), default=0, help="pixels shared by neighbouring tiles (default 0)")
    c.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of source images per split (default 0.8 0.1 0.1)",
    )
    c.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    c.add_argument("--split-by", choices=("image", "blocks"), default="image",
                   help="image: every tile of an image in one split (default); blocks: square blocks of "
                        "--block-size px drawn into the splits, so one large scene gives all three")  # fmt: skip
    c.add_argument("--block-size", type=integer(1), metavar="PX", help="with --split-by blocks: the block's edge")
    c.add_argument("--split-areas", nargs="+", metavar="SPLIT=FILE",
                   help="val=FILE test=FILE: tiles mostly inside a file's polygons go to that split, the rest to "
                        "train")  # fmt: skip
    c.add_argument(
        "--format",
        choices=("json", "npz"),
        default="json",
        help="annotation files: json (AIR layout, default) or npz (compact, about 100x smaller)",
    )
    c.add_argument("--output", required=True, help="dataset root D to create (D/im_seg/..., D/classes.json)")

    v = sub.add_parser("verify", help="check every split; exit 0 when clean, 1 otherwise")
    v.add_argument("--data-path", required=True, help="dataset root D")
    v.add_argument("--classes-path", help="classes.json (default: D/classes.json, else ./classes.json)")

    s = sub.add_parser("show", help="contact sheet of tiles with their masks overlaid")
    s.add_argument("--data-path", required=True, help="dataset root D")
    s.add_argument("--classes-path", help="classes.json (default: D/classes.json, else ./classes.json)")
    s.add_argument("--split", default="train", choices=("train", "val", "test"))
    s.add_argument("-n", type=integer(1), default=16, help="number of tiles (default 16)")
    s.add_argument("--seed", type=int, default=0, help="which tiles are drawn (default 0)")
    s.add_argument("--output", required=True, help="PNG file to write")
    s.add_argument("--augment", action="store_true", help="show each tile beside its augmented version (--config)")
    s.add_argument("--config", help="the config whose augment settings --augment shows")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of --config, as imseg-train's --set (repeatable)")  # fmt: skip
    g = sub.add_parser("merge", help="one GeoPackage, a layer per class, from the scenes of mapping jobs")
    g.add_argument("folders", nargs="+", metavar="DIR", help="output folders of imseg-infer --images (one model)")
    g.add_argument("--output", help="the GeoPackage to write (default: DIR/merged.gpkg of the first DIR)")
    g.add_argument("--min-area", type=number(0, 1e12), default=0.0, help="drop regions under this many m2 (default 0)")
    g.add_argument("--simplify", type=number(0, 100), default=1.0, help="polygon tolerance in pixels (default 1)")
    g.add_argument("--regularize", action="store_true", help="right-angled building outlines (building classes)")
    args = p.parse_args(argv)
    if getattr(args, "augment", False) and not args.config:
        s.error("--augment needs --config F (the config whose augment settings to show)")
    if getattr(args, "set", None) and not getattr(args, "augment", False):
        s.error("--set changes the config of --augment; give --augment --config F")
    return args


def main(argv=None):
    args = parse_args(argv)

    def work():
        if args.command == "convert":
            from imseg.data.convert import convert, parse_assignments, parse_split_areas

            convert(
                args.images,
                args.masks,
                args.mask_type,
                args.output,
                args.tile_size,
                class_map=args.class_map,
                overlap=args.overlap,
                split=args.split,
                seed=args.seed,
                annotation_format=args.format,
                bands=args.bands,
                vectors=parse_assignments(args.vectors, "vectors"),
                line_widths=dict(parse_assignments(args.line_width, "line-width", number=True)),
                vectors_ignore=args.vectors_ignore,
                osm=args.osm,
                classes_path=args.classes_path or ("classes.json" if args.osm else None),
                burn_order=args.burn_order,
                resolution=args.resolution,
                split_by=args.split_by,
                block_size=args.block_size,
                split_areas=parse_split_areas(args.split_areas),
                log=log,
            )
            return 0
        if args.command == "merge":
            from imseg.geo.merge import merge

            output = args.output or os.path.join(args.folders[0], "merged.gpkg")
            counts = merge(args.folders, output, args.min_area, args.simplify, args.regularize, log=log)
            log(f"imseg-data: wrote {sum(counts.values())} polygon(s) to {output}")
            return 0
        from imseg.classes import default_classes_path, load_class_names

        names = load_class_names(args.classes_path or default_classes_path(args.data_path))
        if args.command == "verify":
            from imseg.data.verify import verify

            return 1 if verify(args.data_path, names, lambda line: print(line, flush=True)) else 0
        from imseg.data.show import show

        if os.path.isdir(args.output) or args.output.endswith(os.sep):
            raise ConfigError(f"{args.output}: --output names a folder; give the PNG file to write, e.g. sheet.png")
        from imseg.data.show import SHEET_FORMATS

        if os.path.splitext(args.output)[1].lower() not in SHEET_FORMATS:
            raise ConfigError(f"{args.output}: --output needs a .png or .jpg file name (the sheet's type follows it)")
        augment = None
        if args.augment:
            from imseg.config import load_config
            from imseg.tfenv import import_tensorflow

            config = load_config(args.config, args.set)
            import_tensorflow()
            from imseg.recipe import augment_kwargs

            augment = augment_kwargs(config, args.config)
            if augment is None:
                raise ConfigError(f"{args.config}: key 'augment': no augmentation is switched on; nothing to show")
        n = show(args.data_path, args.split, names, args.n, args.output, seed=args.seed, augment=augment)
        log(f"imseg-data: wrote {n} tiles to {args.output}")
        return 0

    return run("imseg-data", work)


if __name__ == "__main__":
    sys.exit(main())
