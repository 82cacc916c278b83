"""imseg-export: a trained `.keras` model -> TensorFlow SavedModel, ONNX or LiteRT, for serving elsewhere.

The exported model takes 0-255 RGB images `(N, h, w, 3)` (float32) and returns float32 logits
`(N, h, w, classes)`: the backbone's normalisation is inside, augmentation is not (it only runs in training).
A SavedModel keeps the precision the model was trained in; ONNX and LiteRT get a float32 copy, because
their CPU runtimes have no bfloat16 convolutions. `imseg.json` beside the export says what the outputs mean
(classes, task, threshold), as the `.keras` file does inside.
"""

import importlib.util
import json
import os
import shutil
import sys
import warnings

from imseg.cli import ArgumentParser, run
from imseg.errors import ConfigError

FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
NEEDS = {"onnx": (("tf2onnx", "onnxruntime"), "imseg[onnx]")}  # format -> (modules, the extra that installs them)


def float32_copy(model):
    """The same network and weights with every layer computing in float32 (the model itself where it does)."""
    from imseg.models.segmenter import all_layers, rebuilt

    if not any(layer.dtype_policy.name.startswith("mixed_") for layer in all_layers(model)):
        return model

    def float32(node):
        if node.get("class_name") == "DTypePolicy" and str(node["config"].get("name", "")).startswith("mixed_"):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return node

    return rebuilt(model, float32)


def export(model_path, fmt, output, overwrite=False):
    """Export `model_path` in `fmt` into the folder `output`; returns the path written (the folder for a
    SavedModel, else a file in it). An existing, non-empty `output` is refused unless `overwrite`; a failed
    export leaves nothing behind."""
    from imseg.checkpoints import load_trained_model, read_metadata
    from imseg.outputs import check_writable, refuse_to_clear

    if os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f"{output}: --output names a file; give a folder")
    parent = os.path.dirname(os.path.abspath(output))
    check_writable(parent, "the --output folder", "choose another --output")  # the export is staged in parent
    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise ConfigError(f"{output}: folder exists and is not empty; choose another --output or pass --overwrite")
    if overwrite:
        refuse_to_clear(output, [model_path])
    modules, extra = NEEDS.get(fmt, ((), None))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--format {fmt} needs {', '.join(missing)}: pip install '{extra}'")
    model = load_trained_model(model_path)
    import keras

    if hasattr(model, "inference_model"):  # a RefineNet saved with its training code: export the plain network
        model = model.inference_model()
    if fmt != "saved_model":
        model = float32_copy(model)
    model(keras.ops.zeros((1, *model.input_shape[1:])))  # ONNX export wants a model that has been called
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")]  # one tensor, not a list
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(os.path.abspath(output))}.export-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:  # build the export beside its place, then move it there: a failure leaves nothing behind
        os.makedirs(staging)
        stem = os.path.splitext(os.path.basename(model_path))[0]
        name = "" if fmt == "saved_model" else stem + (".onnx" if fmt == "onnx" else ".tflite")
        with warnings.catch_warnings():
            # Keras's copy of tf2onnx probes `np.object`, which NumPy 2 answers with a FutureWarning on every export.
            warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
            model.export(
                os.path.join(staging, name) if name else staging,
                format=FORMATS[fmt],
                verbose=False,
                input_signature=signature,
            )
        with open(os.path.join(staging, "imseg.json"), "w", encoding="utf-8") as f:
            json.dump(read_metadata(model_path) or {}, f, indent=2)
        if os.path.isdir(output):
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(output, name) if name else output


def main(argv=None):
    p = ArgumentParser(prog="imseg-export", description="Export a trained imseg model for serving.")
    p.add_argument("--model", required=True, help="a .keras model (e.g. .../checkpoints/best.keras)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="saved_model (verified), onnx, litert")
    p.add_argument("--output", required=True, help="output folder (new or empty, or use --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    args = p.parse_args(argv)

    def work():
        target = export(args.model, args.format, args.output, overwrite=args.overwrite)
        print(f"imseg-export: wrote {target}", file=sys.stderr)

    return run("imseg-export", work)


if __name__ == "__main__":
    sys.exit(main())
