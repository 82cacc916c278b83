"""imseg-export: a trained `.keras` model -> TensorFlow SavedModel, ONNX or LiteRT, for serving elsewhere.

The exported model takes 0-255 RGB images `(N, h, w, 3)` (float32) and returns float32 logits
`(N, h, w, classes)`: the backbone's normalisation is inside, augmentation is not (it only runs in training).
A SavedModel keeps the precision the model was trained in; ONNX and LiteRT get a float32 copy, because
their CPU runtimes have no bfloat16 convolutions.
"""

import os
import sys

from imseg.cli import ArgumentParser
from imseg.errors import ConfigError, DataError, UserError
from imseg.tfenv import import_tensorflow

FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}


def float32_copy(model):
    """The same network and weights with every layer computing in float32."""
    from imseg.model import rebuilt

    def float32(node):
        if node.get("class_name") == "DTypePolicy" and str(node["config"].get("name", "")).startswith("mixed_"):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return node

    return rebuilt(model, float32)


def export(model_path, fmt, output):
    """Export `model_path` in `fmt`; returns the path written (a folder for SavedModel, else a file)."""
    if not os.path.isfile(model_path):
        raise ConfigError(f"{model_path}: model file not found")
    import_tensorflow()
    import keras

    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as e:  # any failure to read the file means it is not a usable Keras model
        raise DataError(f"{model_path}: not a Keras model file ({str(e).strip().splitlines()[0][:160]})") from None
    if hasattr(model, "inference_model"):  # a RefineNet saved with its training code: export the plain network
        model = model.inference_model()
    if fmt != "saved_model":
        model = float32_copy(model)
    model(keras.ops.zeros((1, *model.input_shape[1:])))  # ONNX export wants a model that has been called
    if fmt == "saved_model":
        target = output
    else:
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(model_path))[0]
        target = os.path.join(output, stem + (".onnx" if fmt == "onnx" else ".tflite"))
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")]  # one tensor, not a list
    try:
        model.export(target, format=FORMATS[fmt], verbose=False, input_signature=signature)
    except ImportError as e:
        raise ConfigError(f"--format {fmt} needs a package that is not installed: {e}") from None
    return target


def main(argv=None):
    p = ArgumentParser(prog="imseg-export", description="Export a trained imseg model for serving.")
    p.add_argument("--model", required=True, help="a .keras model (e.g. .../checkpoints/best.keras)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="saved_model (verified), onnx, litert")
    p.add_argument("--output", required=True, help="output folder")
    args = p.parse_args(argv)
    try:
        target = export(args.model, args.format, args.output)
    except UserError as e:
        print(f"imseg-export: error: {e}", file=sys.stderr)
        return 2
    print(f"imseg-export: wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
