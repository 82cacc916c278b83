"""The 4-cascade RefineNet of Lin et al. (CVPR 2017, "RefineNet: Multi-Path Refinement Networks").

One RefineNet block per pyramid level, coarse to fine: RefineNet-4 refines P5 alone, and RefineNet-m
(m = 3, 2, 1) refines P(m+1) together with the output of the block before it. A block runs `num_rcus` residual
conv units on each input path, fuses the paths (a 3x3 conv each, upsampled to the finest, summed), applies
chained residual pooling, and ends with one more RCU; two RCUs follow the last block, as in the paper. Paths
are `filters` wide, RefineNet-4's `top_filters` (the paper: 256 and 512).
"""

from imseg.blocks import ArgumentError, chained_residual_pooling, multi_resolution_fusion, residual_conv_unit
from imseg.models.registry import register_decoder

LEVELS = ("P5", "P4", "P3", "P2")


@register_decoder("RefineNetCascade")
def refinenet_cascade(features, filters=256, top_filters=512, num_rcus=2, crp_stages=2, pool_size=5):
    """The cascade on the pyramid `features` ({"P2".."P5": map}); returns a map at stride 4, `filters` wide."""
    for argument, value in (("filters", filters), ("top_filters", top_filters), ("num_rcus", num_rcus),
                            ("crp_stages", crp_stages), ("pool_size", pool_size)):  # fmt: skip
        if not (isinstance(value, int) and value >= 1):
            raise ArgumentError(argument, f"expected an integer >= 1, got {value!r}")
    y = None
    for m, level in zip((4, 3, 2, 1), LEVELS):
        width = top_filters if y is None else filters
        paths = []
        for j, x in enumerate([features[level]] + ([y] if y is not None else []), start=1):
            for r in range(1, num_rcus + 1):
                x = residual_conv_unit(x, width, name=f"cascade{m}_path{j}_rcu{r}")
            paths.append(x)
        y = multi_resolution_fusion(paths, width, name=f"cascade{m}_mrf")
        y = chained_residual_pooling(y, width, num_stages=crp_stages, pool_size=pool_size, name=f"cascade{m}_crp")
        y = residual_conv_unit(y, width, name=f"cascade{m}_out")
    for r in (1, 2):
        y = residual_conv_unit(y, filters, name=f"cascade_final_rcu{r}")
    return y
