"""Decoders by name: the `type` of a config.

A decoder is a function `decoder(features, **options)` that takes the backbone's feature maps —
`{"P2": stride 4, "P3": stride 8, "P4": stride 16, "P5": stride 32}` as keras-hub names pyramid levels, or
backbone layer names where a config lists them — and returns one feature map (any stride, any width) built
from Keras layers; the Segmenter puts the per-class head and the upsampling to the input on top. Register one
with `@register_decoder("Name")` (README, "Adding a decoder"); the modules named in the environment variable
IMSEG_PLUGINS are imported first, so that the command line finds such decoders too. imseg's own decoders are
imported when first asked for, so naming them costs no TensorFlow import.
"""

import importlib
import os

from imseg.errors import ConfigError, did_you_mean

BUILT_IN = {  # name -> (module, function)
    "RefineNet": ("imseg.models.decoders.refinenet", "refinenet"),
    "RefineNetCascade": ("imseg.models.decoders.refinenet_cascade", "refinenet_cascade"),
    "LightWeightRefineNet": ("imseg.models.decoders.light_weight_refinenet", "light_weight_refinenet"),
    "FPN": ("imseg.models.decoders.fpn", "fpn"),
}
DECODERS = {}  # name -> decoder function: the registry (imseg's own join it when their module is imported)
_PLUGINS_LOADED = set()


def register_decoder(name):
    """Register the decorated function as the decoder `name` (the config's `type`); returns it unchanged."""

    def register(fn):
        DECODERS[name] = fn
        return fn

    return register


def load_plugins():
    """Import the modules named in IMSEG_PLUGINS (comma-separated), where decoders of one's own are registered,
    so that the command line knows them too."""
    for module in filter(None, (m.strip() for m in os.environ.get("IMSEG_PLUGINS", "").split(","))):
        if module in _PLUGINS_LOADED:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"IMSEG_PLUGINS: cannot import '{module}' ({e}); put its folder on PYTHONPATH") from None
        _PLUGINS_LOADED.add(module)


def decoder_names():
    load_plugins()
    return sorted(set(BUILT_IN) | set(DECODERS))


def canonical_name(name):
    """The registered spelling of `name` (any case), or None."""
    return next((known for known in decoder_names() if known.lower() == str(name).lower()), None)


def get_decoder(name):
    """The decoder function registered as `name` (any case); a ValueError lists the known ones."""
    known = canonical_name(name)
    if known is None:
        names = decoder_names()
        raise ValueError(f"unknown decoder '{name}'{did_you_mean(name, names)}; choose one of: {', '.join(names)}")
    if known in DECODERS:
        return DECODERS[known]
    module, function = BUILT_IN[known]
    return getattr(importlib.import_module(module), function)
