"""Backbones: the feature pyramid of every keras.applications family by stride, raw layer names, keras-hub."""

import importlib.util

import keras
import pytest

from imseg.build import build_segmenter
from imseg.config import config_from_dict
from imseg.errors import ConfigError
from imseg.models.backbones import feature_maps, pyramid

# Family -> (constructor, the maps P2-P5 of a 64 px input: the stage outputs each family hands on).
FAMILIES = {
    "resnet": ("ResNet50", ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]),
    "resnet101": ("ResNet101", ["conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"]),
    "resnet_v2": (
        "ResNet50V2",
        ["conv2_block3_preact_relu", "conv3_block4_preact_relu", "conv4_block6_preact_relu", "post_relu"],
    ),  # fmt: skip
    "mobilenet_v2": (
        "MobileNetV2",
        ["block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"],
    ),  # fmt: skip
    "densenet": ("DenseNet121", ["pool2_relu", "pool3_relu", "pool4_relu", "relu"]),
    "efficientnet": (
        "EfficientNetB0",
        ["block3a_expand_activation", "block4a_expand_activation", "block6a_expand_activation", "top_activation"],
    ),  # fmt: skip
    "efficientnet_v2": (
        "EfficientNetV2B0",
        ["block2b_add", "block4a_expand_activation", "block6a_expand_activation", "top_activation"],
    ),  # fmt: skip
    "convnext": ("ConvNeXtTiny", None),  # its stage outputs are unnamed additions: checked by shape below
    "mobilenet_v3": ("MobileNetV3Small", None),
}


def backbone(name, size=64):
    return getattr(keras.applications, name)(include_top=False, weights=None, input_shape=(size, size, 3))


def test_the_pyramid_is_the_last_map_at_each_stride():
    from helpers import toy_backbone

    assert pyramid(toy_backbone()) == {"P2": "stage2_relu", "P3": "stage3_relu", "P4": "stage4_relu",
                                       "P5": "stage5_relu"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_pyramid_at_strides_4_to_32(family):
    name, expected = FAMILIES[family]
    model = backbone(name)
    levels = pyramid(model, family)
    shapes = {n: shape for n, _, shape in feature_maps(model)}
    assert [shapes[levels[level]][:2] for level in ("P2", "P3", "P4", "P5")] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    if expected:
        assert [levels[level] for level in ("P2", "P3", "P4", "P5")] == expected
    if family == "convnext":  # each level is the last residual sum of a stage, the full width of the stage
        assert [shapes[levels[level]][2] for level in ("P2", "P3", "P4", "P5")] == [96, 192, 384, 768]


@pytest.mark.slow
def test_a_backbone_without_a_map_at_some_stride_is_named_with_the_maps_it_has():
    config = config_from_dict({"name": "t", "backbone": "InceptionV3", "type": "FPN", "input_shape": [96, 96, 3]})
    with pytest.raises(ConfigError) as e:
        build_segmenter(config, ["a:x"])
    message = str(e.value)
    assert message.startswith("config: key 'backbone': inception_v3 has no feature map at stride 16 (P4) for a 96x96")
    assert "the maps that end each stride: " in message and "mixed10 (1x1x2048)" in message


@pytest.mark.slow
def test_refinenet_blocks_may_name_pyramid_levels_and_layers_alike():
    base = {"name": "t", "backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}, "input_shape": [64, 64, 3]}
    mixed = build_segmenter(config_from_dict({**base, "refine_net_blocks": [["P4"], ["block_3_expand_relu"]]}), ["a"])
    assert mixed.decoder_kwargs["blocks"] == [["block_13_expand_relu"], ["block_3_expand_relu"]]
    default = build_segmenter(config_from_dict(base), ["a"])  # the AIR layout on the pyramid
    assert default.decoder_kwargs["blocks"] == [["out_relu", "block_13_expand_relu"],
                                                ["block_6_expand_relu", "block_3_expand_relu"]]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None, reason="keras-hub is not installed")
def test_a_keras_hub_backbone_from_a_local_preset_folder(tmp_path):
    import keras_hub
    import numpy as np

    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(64, 64, 3),
    )  # fmt: skip
    hub.save_to_preset(str(tmp_path / "preset"))
    fpn = {"pyramid_channels": 16, "segmentation_channels": 16, "groups": 4}
    config = config_from_dict({"name": "t", "backbone": f"keras_hub:{tmp_path / 'preset'}", "type": "FPN",
                               "input_shape": [64, 64, 3], "normalization": "auto", "decoder_kwargs": fpn})  # fmt: skip
    model = build_segmenter(config, ["a:x"])
    assert [tuple(t.shape[1:3]) for t in model.backbone.outputs] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    out = model(np.zeros((1, 64, 64, 3), "float32"))
    assert out.shape == (1, 64, 64, 1)
