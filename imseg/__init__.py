"""imseg: RefineNet semantic segmentation of aerial imagery with Keras 3 / TensorFlow."""

__version__ = "0.1.0"
