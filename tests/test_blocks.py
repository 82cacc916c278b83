"""RefineNet blocks follow Lin et al. and the AIR ImSeg width rule, with no discarded paths."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from imseg.blocks import (
    ArgumentError,
    chained_residual_pooling,
    multi_resolution_fusion,
    refine_block,
    residual_conv_unit,
)


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_rcu_is_relu_conv_twice_plus_identity():
    x = keras.Input((8, 8, 16))
    model = keras.Model(x, residual_conv_unit(x, 16, name="u"))
    assert layer_types(model) == ["InputLayer", "ReLU", "Conv2D", "ReLU", "Conv2D", "Add"]
    # Zeroed convs leave only the identity path.
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
    np.testing.assert_allclose(model(data), data)


def test_rcu_uses_a_1x1_shortcut_when_width_changes_and_counts_convs():
    x = keras.Input((8, 8, 16))
    model = keras.Model(x, residual_conv_unit(x, 4, num_convs=3, kernel_size=1, name="u"))
    shortcut = model.get_layer("u_shortcut")
    assert shortcut.kernel_size == (1, 1) and shortcut.filters == 4
    assert sum(isinstance(layer, layers.Conv2D) for layer in model.layers) == 4
    assert model.output.shape == (None, 8, 8, 4)


@pytest.mark.parametrize("mode", ["bilinear", "transpose"])
def test_mrf_convs_each_input_upsamples_to_the_largest_and_sums(mode):
    low, high = keras.Input((4, 4, 8)), keras.Input((16, 16, 4))
    model = keras.Model([low, high], multi_resolution_fusion([low, high], 6, upsampling=mode, name="m"))
    assert model.output.shape == (None, 16, 16, 6)
    assert isinstance(model.get_layer("m_up1"), layers.Resizing if mode == "bilinear" else layers.Conv2DTranspose)
    assert isinstance(model.get_layer("m_sum"), layers.Add)


def test_mrf_with_one_input_passes_it_through():
    x = keras.Input((4, 4, 8))
    assert multi_resolution_fusion([x], 8) is x


def test_transpose_upsampling_needs_integer_scale():
    with pytest.raises(ArgumentError, match="^upsampling: transpose needs an integer scale"):
        multi_resolution_fusion([keras.Input((3, 3, 4)), keras.Input((7, 7, 4))], 4, upsampling="transpose")


def test_crp_chains_pool_conv_stages_into_a_running_sum():
    x = keras.Input((8, 8, 4))
    model = keras.Model(x, chained_residual_pooling(x, 4, num_stages=3, pool_size=5, name="c"))
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    assert len(pools) == 3 and all(p.pool_size == (5, 5) and p.strides == (1, 1) for p in pools)
    assert sum(isinstance(layer, layers.Add) for layer in model.layers) == 3
    # With zero convs the output is ReLU(x): every stage adds onto the running sum.
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    data = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(model(data), np.maximum(data, 0), atol=1e-6)


def test_refine_block_widths_follow_the_seed_rule():
    low, high = keras.Input((4, 4, 64)), keras.Input((8, 8, 32))
    model = keras.Model([low, high], refine_block([low, high], reduce_channel_scale=4, name="b"))
    assert model.get_layer("b_rcu1_conv1").filters == 16  # 64 // 4
    assert model.get_layer("b_rcu2_conv1").filters == 8  # 32 // 4
    assert model.output.shape == (None, 8, 8, 8)  # min(64, 32) // 4, at the highest resolution


def test_every_rcu_output_reaches_the_block_output():
    """The old code fed raw inputs to MRF and dropped the RCU outputs; here each RCU conv matters."""
    low, high = keras.Input((4, 4, 16)), keras.Input((8, 8, 16))
    model = keras.Model([low, high], refine_block([low, high], reduce_channel_scale=2, name="b"))
    rng = np.random.default_rng(0)
    for layer in model.layers:  # trained weights, not the zero starts: the wiring is what is tested
        if isinstance(layer, layers.Conv2D):
            layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.get_weights()])
    data = [tf.random.normal((1, 4, 4, 16), seed=1), tf.random.normal((1, 8, 8, 16), seed=2)]
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(model(data) ** 2)
    convs = [model.get_layer(f"b_rcu{i}_conv{j}").kernel for i in (1, 2) for j in (1, 2)]
    for grad in tape.gradient(out, convs):
        assert float(tf.reduce_max(tf.abs(grad))) > 0


def test_too_large_reduction_names_the_argument():
    x = keras.Input((4, 4, 2))
    with pytest.raises(ArgumentError, match="^reduce_channel_scale: 4 leaves block"):
        refine_block([x], reduce_channel_scale=4)


def test_a_new_block_starts_from_its_inputs():
    """Residual branches start at zero: a new RCU is its shortcut, a new CRP is ReLU(x) (Fixup-style starts)."""
    x = keras.Input((8, 8, 4))
    rcu = keras.Model(x, residual_conv_unit(x, 4, name="r"))
    crp = keras.Model(x, chained_residual_pooling(x, 4, name="c"))
    data = np.random.default_rng(2).normal(size=(1, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(rcu(data), data, atol=1e-6)
    np.testing.assert_allclose(crp(data), np.maximum(data, 0), atol=1e-6)
    assert rcu.get_layer("r_conv1").kernel.numpy().any()  # only the branch's last conv starts at zero
