"""RefineNet as the AIR ImSeg project built it: the decoder of the seed configs.

Blocks of feature maps, coarse to fine; block i takes its own maps and the previous block's output, each
through an RCU `channels // reduce_channel_scale` wide, fuses them (MRF), pools them (CRP) and ends with an RCU
`min(channels) // reduce_channel_scale` wide. Without `blocks`, the AIR layout on the backbone's pyramid:
`[[P5, P4], [P3, P2]]`, as the seed configs list ResNet50's `conv5`/`conv4` and `conv3`/`conv2` outputs.
"""

from imseg.blocks import ArgumentError, refine_block
from imseg.models.registry import register_decoder

AIR_BLOCKS = (("P5", "P4"), ("P3", "P2"))


@register_decoder("RefineNet")
def refinenet(features, blocks=AIR_BLOCKS, reduce_channel_scale=4, rcu_kwargs=None, mrf_kwargs=None, crp_kwargs=None):
    """The AIR RefineNet on `features` ({name: feature map}); `blocks` lists their names, low resolution first."""
    y = None
    for i, block in enumerate(blocks, start=1):
        inputs = ([y] if y is not None else []) + [features[name] for name in block]
        if y is not None:
            _check_resolution(inputs, block, i)
        y = refine_block(inputs, reduce_channel_scale, rcu_kwargs, mrf_kwargs, crp_kwargs, name=f"refine{i}")
    return y


def _check_resolution(inputs, block, index):
    """Later blocks must not be coarser than earlier ones: the decoder climbs to full resolution."""
    previous = inputs[0].shape[1] * inputs[0].shape[2]
    for name, x in zip(block, inputs[1:]):
        if x.shape[1] * x.shape[2] < previous:
            raise ArgumentError(
                "blocks",
                f"block {index} input '{name}' ({x.shape[1]}x{x.shape[2]}) is coarser than block "
                f"{index - 1}'s output ({inputs[0].shape[1]}x{inputs[0].shape[2]}); list blocks from low to high "
                "resolution",
            )
