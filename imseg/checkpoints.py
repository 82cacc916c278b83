"""Trained model files (`best.keras`): written atomically with what they predict, and read back with clear errors.

A `.keras` file is a zip archive that Keras reads by name (`config.json`, `metadata.json`,
`model.weights.h5`); imseg adds `imseg.json` beside them — the class names in output order, the task, the
decision threshold and where the model came from — so a model file moved away from its run still says
what its outputs mean. Keras ignores the extra member: the file loads with `keras.models.load_model` anywhere.
"""

import json
import os
import zipfile

from imseg.errors import ConfigError, DataError
from imseg.outputs import atomic_path, sha256

METADATA = "imseg.json"


def save_model(model, path, metadata=None):
    """Save a Keras model to `path` (a `.keras` file) atomically, with `metadata` as `imseg.json` inside;
    returns the file's SHA-256."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA, json.dumps(metadata, indent=2))
        digest = sha256(tmp)
    return digest


def read_metadata(path):
    """The `imseg.json` of a model file, or None (a model saved by other code, or no zip archive at all)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(METADATA))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None


def load_trained_model(path):
    """A trained `.keras` model, for prediction. Raises a one-line UserError for anything that is not one."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: model file not found (train first, or pass --model)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a Keras model file (a .keras file is a zip archive; this one is not)")
    from imseg.tfenv import import_tensorflow

    import_tensorflow()
    import keras

    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, KeyError ... for a file that is no usable model
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise DataError(f"{path}: not a usable Keras model file ({reason})") from None
