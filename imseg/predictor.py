"""A trained model with what its outputs mean: classes, task, threshold, bands and ground sample distance, read from
the model file's own record and checked against a config when one is given."""

import json
import os
from dataclasses import dataclass

from imseg.errors import ConfigError
from imseg.tasks import BACKGROUND


@dataclass(frozen=True)
class Predictor:
    """A trained model and what its outputs mean.

    Args:
        model: the Keras model (0-255 images in, logits out).
        path: its file.
        classes: the output channels' names, in order (`background` included for a multiclass task with one).
        task: `"multilabel"` or `"multiclass"`.
        threshold: the multilabel decision threshold on logits.
        name: the run's name (where split predictions go).
        batch_size: the default number of images or tiles per prediction call.
        config: the run's `Config`, when one was given (split prediction needs it).
        bands: the image bands the model reads, counted from 1 (None: all).
        gsd: the metres per pixel the model was trained at (None: unknown); scenes of another are resampled.
    """

    model: object
    path: str
    classes: tuple
    task: str = "multilabel"
    threshold: float = 0.0
    name: str = None
    batch_size: int = 8
    config: object = None
    bands: tuple = None
    gsd: float = None

    def check_tta(self, tta):
        """Refuse test-time views that this model's tiles cannot take, before anything is predicted or written."""
        from imseg.predict import TTA

        if tta not in TTA:
            raise ConfigError(f"tta {tta!r}: expected one of {', '.join(TTA)}")
        height, width = self.model.input_shape[1:3]
        if tta == "d4" and height != width:
            raise ConfigError(f"{self.path}: --tta d4 turns tiles by quarter turns, so it needs square tiles; "
                              f"this model takes {height}x{width} tiles: use --tta flip")  # fmt: skip


def load_predictor(model_path=None, config_path=None, data_path=None, classes_path=None, output_dir=None):
    """The trained model with its classes, task and threshold, all checked against each other.

    The model file's own record (`imseg.json`, see `imseg.checkpoints`) says what it predicts; a config,
    when given, must agree with it. Without a config the record alone is enough (image prediction).
    """
    from imseg.checkpoints import load_trained_model, read_metadata
    from imseg.classes import default_classes_path, load_class_names, output_names, select_classes
    from imseg.config import load_config
    from imseg.outputs import RunPaths

    config = load_config(config_path) if config_path else None
    if model_path is None:
        model_path = RunPaths.for_run(data_path, config.name, output_dir).best_model
    if not os.path.isfile(model_path):
        raise ConfigError(f"{model_path}: model file not found (train first, or pass --model)")
    record = read_metadata(model_path) or _best_json(model_path) or {}
    trained = record.get("classes")
    if config is not None:
        if config.classes and not classes_path:  # a run's config.json names its classes: no classes file needed
            selected = list(config.classes)
        else:
            classes_path = classes_path or default_classes_path(data_path or ".")
            selected = select_classes(config, load_class_names(classes_path), config_path, classes_path)[0]
        classes = output_names(config, selected)
        if trained and trained != classes:
            raise ConfigError(f"{model_path}: trained on classes {trained}, but {config_path} selects {classes}")
        settings = {
            "task": config.task,
            "threshold": config.threshold,
            "name": config.name,
            "batch_size": config.batch_size,
            "bands": config.bands or (tuple(record["bands"]) if record.get("bands") else None),
        }
    elif trained:
        classes = trained
        if classes_path:
            listed = load_class_names(classes_path)
            missing = [c for c in classes if c not in listed and c != BACKGROUND]
            if missing:
                raise ConfigError(
                    f"{model_path}: trained on classes {trained}, but {classes_path} lacks {', '.join(missing)}"
                )
        settings = {
            "task": record.get("task", "multilabel"),
            "threshold": record.get("threshold", 0.0),
            "name": record.get("name"),
            "bands": tuple(record["bands"]) if record.get("bands") else None,
        }
    else:
        raise ConfigError(
            f"{model_path}: the file does not say which classes it predicts (no imseg record); "
            "pass --config, the config it was trained with"
        )
    model = load_trained_model(model_path)
    if model.output_shape[-1] != len(classes):
        source = config_path or f"{model_path}'s record"
        raise ConfigError(
            f"{model_path}: predicts {model.output_shape[-1]} classes, but {source} selects "
            f"{len(classes)}: {', '.join(classes)}"
        )
    return Predictor(model=model, path=model_path, classes=tuple(classes), config=config, gsd=record.get("gsd"),
                     **settings)  # fmt: skip


def _best_json(model_path):
    """The best.json beside a model saved by an imseg run of before the record inside the model file."""
    path = os.path.join(os.path.dirname(model_path), "best.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
