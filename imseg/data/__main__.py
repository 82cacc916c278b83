"""imseg-data convert | verify | show (also `python -m imseg.data`)."""

import sys

from imseg.cli import ArgumentParser
from imseg.errors import UserError


def parse_args(argv=None):
    p = ArgumentParser(prog="imseg-data", description="Build, check and look at AIR im_seg datasets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    c = sub.add_parser("convert", help="images + masks -> AIR im_seg tiles")
    c.add_argument("--images", action="append", required=True, help="folder of images (repeat, paired with --masks)")
    c.add_argument("--masks", action="append", required=True, help="folder of masks with the images' file stems")
    c.add_argument("--mask-type", required=True, choices=("color", "index", "binary"),
                   help="color: RGB masks; index: one-channel class indices; binary: one subfolder per class")
    c.add_argument("--class-map", help='JSON/YAML: {"#RRGGBB": class} (color) or {"index": class} (index); '
                                       'a class "ignore" leaves those pixels unlabelled')
    c.add_argument("--tile-size", type=int, required=True, help="tile edge in pixels")
    c.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbouring tiles (default 0)")
    c.add_argument("--split", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions of source images per split (default 0.8 0.1 0.1)")
    c.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    c.add_argument("--format", choices=("json", "npz"), default="json",
                   help="annotation files: json (AIR layout, default) or npz (compact, about 100x smaller)")
    c.add_argument("--output", required=True, help="dataset root D to create (D/im_seg/..., D/classes.json)")

    v = sub.add_parser("verify", help="check every split; exit 0 when clean, 1 otherwise")
    v.add_argument("--data_path", required=True)
    v.add_argument("--classes_path", help="classes.json (default: ./classes.json, else D/classes.json)")

    s = sub.add_parser("show", help="contact sheet of tiles with their masks overlaid")
    s.add_argument("--data_path", required=True)
    s.add_argument("--classes_path", help="classes.json (default: ./classes.json, else D/classes.json)")
    s.add_argument("--split", default="train", choices=("train", "val", "test"))
    s.add_argument("-n", type=int, default=16, help="number of tiles (default 16)")
    s.add_argument("--seed", type=int, default=0, help="which tiles are drawn (default 0)")
    s.add_argument("--output", required=True, help="PNG file to write")
    return p.parse_args(argv)




def main(argv=None):
    args = parse_args(argv)

    def log(line):
        print(line, file=sys.stderr, flush=True)

    try:
        if args.command == "convert":
            from imseg.data.convert import convert

            return convert(args, log)
        from imseg.classes import load_class_names
        from imseg.classes import default_classes_path

        names = load_class_names(args.classes_path or default_classes_path(args.data_path))
        if args.command == "verify":
            from imseg.data.verify import verify

            return 1 if verify(args.data_path, names, lambda line: print(line, flush=True)) else 0
        from imseg.data.show import show

        n = show(args.data_path, args.split, names, args.n, args.output, seed=args.seed)
        log(f"imseg-data: wrote {n} tiles to {args.output}")
        return 0
    except UserError as e:
        print(f"imseg-data: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
