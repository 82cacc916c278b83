"""imseg-infer: predict a split of an AIR dataset (with scores) or any images (of any size) with a trained model.

Split mode writes to `D/im_seg/out/<name>/preds/<split>/`; `--images` mode writes to `--output`:
- `masks/<class>/<id>.png`: 0/255 mask per image and class (`<class>` is `super-sub`); GeoTIFF input
  gives GeoTIFF masks with the input's georeference when rasterio is installed;
- `classes/<id>.png` (multiclass): one class index per pixel, in the order of `summary.json`'s `classes`,
  255 where a pixel does not count (ignored in a split, nodata in an image);
- `overlays/<id>.png`: the image with each class in its colour (labelled splits: prediction | truth);
- `legend.png` and `summary.json` (classes and colours; for splits the scores over the whole split);
- `sheet.png` (splits): 16 images spread over the split, prediction next to truth, with the legend;
- `metrics.csv` (splits): per image and class IoU, precision and recall;
- `probs/<id>.npy` with `--save-probs`: float16 (h, w, classes) sigmoid probabilities.
"""

import dataclasses
import os
import sys

from imseg.cli import ArgumentParser, integer, number, run
from imseg.errors import ConfigError
from imseg.predict import TTA


def shard_spec(text):
    """ "K/N" -> (K, N), checked: 1 <= K <= N."""
    import argparse

    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 2/8, got {text!r}")
    return int(k), int(n)


def parse_args(argv=None):
    p = ArgumentParser(prog="imseg-infer", description="Predict with a trained imseg model.")
    p.add_argument("--config", help="the run's config (needed for --split; optional with --model and --images)")
    p.add_argument("--data-path", help="dataset root D (split mode, and the default model location)")
    p.add_argument("--classes-path", help="classes.json (default: D/classes.json, else ./classes.json)")
    p.add_argument("--split", choices=("train", "val", "test"), help="split to predict (default val)")
    p.add_argument("--model", help="a .keras model (default: the run's checkpoints/best.keras)")
    p.add_argument("--output-dir", metavar="DIR", help="where the run folder is: DIR/<name> (as imseg-train's)")
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files or folders to predict instead of a split")
    p.add_argument(
        "--output",
        help="output folder: for --images (required), or for a split's predictions (default: the run's preds/<split>)",
    )
    p.add_argument(
        "--overlap", type=number(0, 0.5), default=0.25, help="tile overlap for large images, 0-0.5 (default 0.25)"
    )
    p.add_argument("--batch-size", type=integer(1), help="images or tiles per batch (default: the config's)")
    p.add_argument("--save-probs", action="store_true", help="also write float16 probabilities (.npy)")
    p.add_argument(
        "--bands", type=integer(1), nargs="+", help="image bands to read, counted from 1 (default: the model's)"
    )
    p.add_argument("--threshold", type=number(-1e9, 1e9), metavar="T",
                   help="multilabel: a class where its logit > T (default: the model's, usually 0)")  # fmt: skip
    p.add_argument("--shard", type=shard_spec, metavar="K/N",
                   help="take scenes K, K+N, K+2N, ... of --images (1-based): N processes share one job")  # fmt: skip
    p.add_argument("--merge", action="store_true",
                   help="at the end, --output/merged.gpkg: all scenes' polygons joined across scene edges")  # fmt: skip
    p.add_argument("--truth", action="append", metavar="CLASS=FILE",
                   help="score the scenes against vector ground truth of CLASS (any CRS): pixel IoU, precision, "
                        "recall, object F1 (repeatable)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="clear an --output folder that holds other files or predictions before writing")  # fmt: skip
    p.add_argument("--tta", choices=TTA, default="none",
                   help="none (default): one view; flip: average each tile's logits over its four flips (4x the "
                        "work); d4: over its eight quarter turns and mirrors (8x; square tiles)")  # fmt: skip
    p.add_argument("--vectorize", action="store_true", help="also write <stem>.geojson: the regions as polygons")
    p.add_argument("--simplify", type=number(0, 100), default=1.0, help="polygon tolerance in pixels (default 1)")
    p.add_argument("--min-area", type=number(0, 1e12), default=0.0, help="drop regions under this many m2 (default 0)")
    p.add_argument("--output-grid", choices=("scene", "model"), default="scene",
                   help="masks of a scene resampled to the model's ground sample distance: on the scene's own grid "
                        "(default) or the model's")  # fmt: skip
    p.add_argument("--vector-format", choices=("geojson", "gpkg", "fgb"), default="geojson",
                   help="polygons as GeoJSON (default), GeoPackage (a layer per class) or FlatGeobuf")  # fmt: skip
    p.add_argument("--vector-crs", choices=("wgs84", "image"), default="wgs84",
                   help="polygons in WGS84 (RFC 7946, default) or the image's CRS")  # fmt: skip
    args = p.parse_args(argv)
    if args.vectorize and not args.images:
        p.error("--vectorize turns predicted images into polygons; give --images (GeoTIFF scenes)")
    if args.shard and not args.images:
        p.error("--shard shares the scenes of --images among processes; give --images")
    if args.images and args.split:
        p.error("--split predicts a dataset split, --images predicts image files; give one of them")
    if args.images and not args.output:
        p.error("--images needs --output DIR")
    if not args.images and not args.data_path:
        p.error("give --data-path (to predict a split) or --images and --output")
    if not args.images and not args.config:
        p.error("predicting a split needs --config (the run's config, e.g. its out/<name>/config.json)")
    if not args.model and not (args.config and args.data_path):
        p.error("give --model, or --config and --data-path to use the run's best.keras")
    args.split = args.split or "val"
    return args


def main(argv=None):
    args = parse_args(argv)

    def work():
        from imseg.config import load_config
        from imseg.data.convert import parse_assignments
        from imseg.evaluate import evaluate_split
        from imseg.mapping import map_images
        from imseg.outputs import RunPaths, check_writable, refuse_to_clear
        from imseg.predictor import load_predictor

        if args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
            raise ConfigError(f"{args.output}: --output names a file; give a folder (it is created if needed)")
        # said before the model loads (seconds for a large one), as every cheap check
        if args.output:
            check_writable(args.output, "the --output folder", "choose another --output")
        else:
            run_paths = RunPaths.for_run(args.data_path, load_config(args.config).name, args.output_dir)
            hint = "pass --output DIR (or --output-dir DIR, where the run folder is) to write elsewhere"
            check_writable(run_paths.predictions(args.split), "the predictions' folder", hint)
        if args.output and args.overwrite:
            inputs = [*(args.images or []), args.model, args.config, args.classes_path, args.output_dir, args.data_path]
            refuse_to_clear(args.output, inputs)
        predictor = load_predictor(args.model, args.config, args.data_path, args.classes_path, args.output_dir)
        if args.bands:
            predictor = dataclasses.replace(predictor, bands=tuple(args.bands))
        if args.threshold is not None:
            if predictor.task != "multilabel":
                raise ConfigError("--threshold is for multilabel models; a multiclass model predicts the class of the "
                                  "largest logit")  # fmt: skip
            predictor = dataclasses.replace(predictor, threshold=args.threshold)
        if args.images:
            map_images(
                predictor,
                args.images,
                args.output,
                overlap=args.overlap,
                batch_size=args.batch_size,
                save_probs=args.save_probs,
                tta=args.tta,
                vectorize=args.vectorize,
                simplify=args.simplify,
                min_area=args.min_area,
                vector_crs=args.vector_crs,
                vector_format=args.vector_format,
                overwrite=args.overwrite,
                output_grid=args.output_grid,
                shard=args.shard,
                truth=parse_assignments(args.truth, "truth") if args.truth else None,
                merge=args.merge,
            )
        else:
            evaluate_split(
                predictor,
                args.data_path,
                args.split,
                classes_path=args.classes_path,
                output_dir=args.output_dir,
                batch_size=args.batch_size,
                save_probs=args.save_probs,
                tta=args.tta,
                output=args.output,
                overwrite=args.overwrite,
            )

    return run("imseg-infer", work)


if __name__ == "__main__":
    sys.exit(main())
