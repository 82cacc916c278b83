"""imseg: RefineNet semantic segmentation of aerial imagery with Keras 3 / TensorFlow.

The public API (see README, "Python API") is imported lazily, so `import imseg` and the command-line
tools start without loading TensorFlow until it is needed.
"""

__version__ = "0.1.0"

_API = {
    "load_config": "imseg.config",
    "Config": "imseg.config",
    "load_class_names": "imseg.classes",
    "build_model": "imseg.build",
    "Segmenter": "imseg.models.segmenter",
    "register_decoder": "imseg.models.registry",
    "SegmentationAugment": "imseg.augment",
    "SegmentationMetrics": "imseg.metrics",
    "BestIoUCheckpoint": "imseg.callbacks",
    "predict_image": "imseg.predict",
    "ConfigError": "imseg.errors",
    "DataError": "imseg.errors",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'imseg' has no attribute {name!r}")
