"""imseg's decoders, one module each, registered by name in `imseg.models.registry`."""
