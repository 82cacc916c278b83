"""The tile grid: where tiles start along one axis of an image, for conversion and prediction alike."""


def tile_starts(length, tile, stride, edge="fit"):
    """Starts of the tiles along an axis of `length` pixels, every `stride` pixels.

    `edge="fit"` (prediction): the last tile ends exactly at the image's edge, so every tile is whole image;
    `edge="pad"` (conversion): tiles keep the stride until the image is covered, the last one padded past the edge.
    An image shorter than a tile gets one tile at 0.
    """
    if length <= tile:
        return [0]
    if edge == "pad":
        starts = [0]
        while starts[-1] + tile < length:
            starts.append(starts[-1] + stride)
        return starts
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]
