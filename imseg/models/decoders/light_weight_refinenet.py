"""Light-Weight RefineNet (Nekrasov, Shen and Reid, BMVC 2018, "Light-Weight RefineNet for Real-Time Semantic
Segmentation").

RefineNet without its residual conv units, and with 1x1 convolutions where RefineNet has 3x3 ones: each pyramid
level, coarse to fine, is reduced by a 1x1 conv, added to the (upsampled) output of the coarser level, and passed
through chained residual pooling with 1x1 convs (ReLU, then `crp_stages` of 5x5 max-pool -> 1x1 conv, each added
to the sum); a 1x1 conv hands it to the next level. As in the paper: P5 is `top_filters` wide (512), the others
`filters` (256), four CRP stages.
"""

from keras import layers

from imseg.blocks import ArgumentError, chained_residual_pooling, resize_like
from imseg.models.registry import register_decoder

LEVELS = ("P5", "P4", "P3", "P2")


@register_decoder("LightWeightRefineNet")
def light_weight_refinenet(features, filters=256, top_filters=512, crp_stages=4, pool_size=5):
    """The light-weight cascade on the pyramid `features`; returns a map at stride 4, `filters` wide."""
    for argument, value in (("filters", filters), ("top_filters", top_filters), ("crp_stages", crp_stages),
                            ("pool_size", pool_size)):  # fmt: skip
        if not (isinstance(value, int) and value >= 1):
            raise ArgumentError(argument, f"expected an integer >= 1, got {value!r}")
    y = None
    for i, level in enumerate(LEVELS, start=1):
        width = top_filters if y is None else filters
        x = layers.Conv2D(width, 1, use_bias=False, name=f"lwrn{i}_reduce")(features[level])
        if y is not None:
            x = layers.Add(name=f"lwrn{i}_sum")([x, resize_like(y, x, name=f"lwrn{i}_up")])
        x = chained_residual_pooling(x, width, num_stages=crp_stages, pool_size=pool_size, kernel_size=1,
                                     name=f"lwrn{i}_crp")  # fmt: skip
        y = x if level == LEVELS[-1] else layers.Conv2D(filters, 1, use_bias=False, name=f"lwrn{i}_out")(x)
    return y
