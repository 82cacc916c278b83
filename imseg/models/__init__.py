"""The network, with no idea how it is trained: backbones with feature pyramids (`backbones`), decoders by name
(`registry`, `decoders/`), and the `Segmenter` that puts them together and trains them (`segmenter`).

`register_decoder` and the decoder names are importable without TensorFlow; the rest loads on first use.
"""

from imseg.models.registry import decoder_names, get_decoder, register_decoder

__all__ = ["Segmenter", "decoder_names", "get_decoder", "register_decoder"]


def __getattr__(name):
    if name == "Segmenter":
        from imseg.models.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'imseg.models' has no attribute {name!r}")
