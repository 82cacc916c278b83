"""The FPN decoder as segmentation_models.pytorch builds it (Kirillov et al., "Panoptic Feature Pyramid Networks",
CVPR 2019): the decoder of imseg's peer, so that decoders and encoders compare on equal terms.

Top-down pathway: a 1x1 lateral conv per level to `pyramid_channels`, each level plus the nearest-upsampled level
above. Segmentation branch: every level through (3x3 conv -> GroupNorm -> ReLU -> 2x bilinear upsampling) until it
reaches stride 4 (one conv for P2), the four summed (`merge: add`) or concatenated (`cat`), then spatial dropout.
"""

from keras import layers

from imseg.blocks import ArgumentError, resize_like
from imseg.models.registry import register_decoder

LEVELS = ("P5", "P4", "P3", "P2")
MERGE = ("add", "cat")


@register_decoder("FPN")
def fpn(features, pyramid_channels=256, segmentation_channels=128, groups=32, dropout=0.2, merge="add"):
    """The FPN decoder on the pyramid `features`; returns a map at stride 4."""
    for argument, value in (("pyramid_channels", pyramid_channels), ("segmentation_channels", segmentation_channels),
                            ("groups", groups)):  # fmt: skip
        if not (isinstance(value, int) and value >= 1):
            raise ArgumentError(argument, f"expected an integer >= 1, got {value!r}")
    if segmentation_channels % groups:
        raise ArgumentError("groups", f"{groups} does not divide segmentation_channels ({segmentation_channels})")
    if merge not in MERGE:
        raise ArgumentError("merge", f"expected one of {', '.join(MERGE)}, got {merge!r}")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ArgumentError("dropout", f"expected a number in [0, 1), got {dropout!r}")
    pyramid, above = {}, None
    for level in LEVELS:
        x = layers.Conv2D(pyramid_channels, 1, name=f"fpn_{level}_lateral")(features[level])
        if above is not None:
            x = layers.Add(name=f"fpn_{level}_topdown")([resize_like(above, x, "nearest", f"fpn_{level}_up"), x])
        pyramid[level] = above = x
    finest = pyramid[LEVELS[-1]]
    branches = []
    for steps, level in enumerate(reversed(LEVELS)):  # P2 needs no upsampling, P5 three
        x = pyramid[level]
        for k in range(max(steps, 1)):
            x = layers.Conv2D(segmentation_channels, 3, padding="same", use_bias=False, name=f"fpn_{level}_conv{k}")(x)
            x = layers.GroupNormalization(groups, name=f"fpn_{level}_gn{k}")(x)
            x = layers.ReLU(name=f"fpn_{level}_relu{k}")(x)
            if steps:
                target = pyramid[LEVELS[-steps + k]] if k < steps - 1 else finest
                x = resize_like(x, target, "bilinear", f"fpn_{level}_up{k}")
        branches.append(x)
    y = layers.Add(name="fpn_merge")(branches) if merge == "add" else layers.Concatenate(name="fpn_merge")(branches)
    return layers.SpatialDropout2D(dropout, name="fpn_dropout")(y) if dropout else y
