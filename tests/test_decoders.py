"""Every decoder on a representative backbone: its architecture, logits at input size, round trips through its
config and a `.keras` file, a training step (on two replicas in bfloat16), and exports."""

import os

import keras
import numpy as np
import pytest

from helpers import assert_round_trip, litert_logits, toy_segmenter
from imseg.build import build_model
from imseg.config import config_from_dict

BASE = {
    "name": "t",
    "backbone": "MobileNetV2",
    "backbone_kwargs": {"alpha": 0.35},
    "input_shape": [64, 64, 3],
    "mixed_precision": "none",
}
DECODERS = {  # narrow, so that each builds and steps in seconds
    "RefineNet": {"refine_net_kwargs": {"reduce_channel_scale": 8}},
    "RefineNetCascade": {"decoder_kwargs": {"filters": 16, "top_filters": 32}},
    "LightWeightRefineNet": {"decoder_kwargs": {"filters": 16, "top_filters": 32}},
    "FPN": {"decoder_kwargs": {"pyramid_channels": 32, "segmentation_channels": 16, "groups": 8}},
}
CLASSES = ["a:x", "b:y"]


def config(decoder, **changes):
    return config_from_dict({**BASE, "type": decoder, **DECODERS[decoder], **changes})


def images(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3)).astype("uint8")


def batch(n=4):
    rng = np.random.default_rng(1)
    return images(n), (rng.random((n, 64, 64, 2)) > 0.5).astype("float32"), (rng.random((n, 64, 64)) > 0.2) * 1.0


def decoder_layers(model, prefix):
    return [layer for layer in model.layers if layer.name.startswith(prefix)]


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_gives_float32_logits_at_input_size_round_trips_and_trains_a_step(decoder):
    """On the toy backbone (builds in milliseconds); keras.applications backbones: the slow tests below."""
    options = DECODERS[decoder].get("decoder_kwargs") or {"reduce_channel_scale": 4}
    model = toy_segmenter(decoder, options, class_names=CLASSES)
    out = keras.ops.convert_to_numpy(model(images(), training=False))
    assert out.shape == (2, 64, 64, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.0)  # a zero head kernel: the first logits are the (zero) prior
    clone = assert_round_trip(model)
    assert clone.decoder == decoder and clone.decoder_kwargs == model.decoder_kwargs
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True), run_eagerly=True)
    x, y, valid = batch(2)
    before = model.get_layer("head").kernel.numpy().copy()
    assert np.isfinite(model.train_on_batch(x, y, sample_weight=valid))
    assert not np.array_equal(model.get_layer("head").kernel.numpy(), before)


def test_the_cascade_is_lin_et_als_four_blocks_of_two_rcus_per_path():
    model = toy_segmenter("RefineNetCascade")  # the paper's widths
    names = {layer.name for layer in model.layers}
    for m, paths in ((4, 1), (3, 2), (2, 2), (1, 2)):
        width = 512 if m == 4 else 256
        for j in range(1, paths + 1):
            for r in (1, 2):
                assert model.get_layer(f"cascade{m}_path{j}_rcu{r}_conv2").kernel.shape[:2] == (3, 3)
                assert model.get_layer(f"cascade{m}_path{j}_rcu{r}_conv2").filters == width
            assert f"cascade{m}_path{j}_rcu3_add" not in names
        assert f"cascade{m}_path{paths + 1}_rcu1_add" not in names
        assert {f"cascade{m}_crp_pool1", f"cascade{m}_crp_pool2", f"cascade{m}_out_add"} <= names
        assert f"cascade{m}_crp_pool3" not in names
    assert {"cascade_final_rcu1_add", "cascade_final_rcu2_add"} <= names
    assert model.get_layer("head").input.shape[1:] == (16, 16, 256)  # stride 4


def test_light_weight_refinenet_has_only_1x1_convs_and_four_crp_stages_per_level():
    model = toy_segmenter("LightWeightRefineNet")
    convs = [layer for layer in decoder_layers(model, "lwrn") if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.kernel_size == (1, 1) for layer in convs)
    assert model.get_layer("lwrn1_reduce").filters == 512
    assert [model.get_layer(f"lwrn{i}_reduce").filters for i in (2, 3, 4)] == [256, 256, 256]
    for i in (1, 2, 3, 4):
        pools = [layer for layer in decoder_layers(model, f"lwrn{i}_crp") if "pool" in layer.name]
        assert len(pools) == 4 and all(p.pool_size == (5, 5) and p.strides == (1, 1) for p in pools)
    assert not [layer for layer in model.layers if "rcu" in layer.name]
    assert model.get_layer("head").input.shape[1:] == (16, 16, 256)


def test_fpn_is_the_panoptic_fpn_head_of_segmentation_models_pytorch():
    model = toy_segmenter("FPN")
    laterals = [model.get_layer(f"fpn_P{k}_lateral") for k in (2, 3, 4, 5)]
    assert all(layer.filters == 256 and layer.kernel_size == (1, 1) for layer in laterals)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert len(norms) == 1 + 1 + 2 + 3 and all(layer.groups == 32 for layer in norms)  # P2, P3, P4, P5
    branch_convs = [layer for layer in decoder_layers(model, "fpn_P") if "_conv" in layer.name]
    assert all(layer.filters == 128 and layer.kernel_size == (3, 3) and not layer.use_bias for layer in branch_convs)
    assert model.get_layer("fpn_merge").output.shape[1:] == (16, 16, 128)
    assert model.get_layer("fpn_dropout").rate == 0.2


@pytest.fixture
def registry(monkeypatch):
    """The decoder registry, restored after the test (decoders a test registers stay in it)."""
    from imseg.models import registry

    monkeypatch.setattr(registry, "DECODERS", dict(registry.DECODERS))
    monkeypatch.setattr(registry, "_PLUGINS_LOADED", set(registry._PLUGINS_LOADED))
    return registry


@pytest.fixture
def all_four(registry):
    """A decoder that is every decoder at once, each on the same pyramid, their maps joined by a 1x1 conv each
    and summed: one Segmenter whose step, file and exports exercise every decoder's layers (one build, trace
    and conversion instead of four: each costs tens of seconds here)."""
    from keras import layers

    from imseg.blocks import resize_like

    @registry.register_decoder("AllFour")
    def every_decoder(features, reduce_channel_scale=8):  # the toy backbone's pyramid is narrower: 2
        joined = []
        for name, keys in DECODERS.items():
            options = keys.get("decoder_kwargs") or {"reduce_channel_scale": reduce_channel_scale}
            y = registry.get_decoder(name)(features, **options)
            y = resize_like(y, features["P2"], name=f"{name}_to_p2")
            joined.append(layers.Conv2D(8, 1, name=f"{name}_join")(y))
        return layers.Add(name="every_decoder")(joined)

    return {**BASE, "type": "AllFour"}


@pytest.mark.slow
def test_every_decoder_saves_and_trains_in_bfloat16_on_two_replicas(all_four, tmp_path):
    """Steps run eagerly: a decoder is layers, which trace alike in a graph, and the traced step of the Segmenter
    itself is the one every training test runs (a traced step on two replicas costs over a minute here). Eager
    replicas may launch their collectives in different orders, so the gradients meet on one device."""
    import tensorflow as tf

    model = toy_segmenter("AllFour", {"reduce_channel_scale": 2}, class_names=CLASSES)  # its file, on the toy
    assert {f"{name}_join" for name in DECODERS} <= {layer.name for layer in model.layers}
    assert_round_trip(model, str(tmp_path), example=images())
    # bfloat16 on two replicas: float32 on one is what every training test runs.
    one_device = tf.distribute.ReductionToOneDevice()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=one_device)
    model, details = build_model(config_from_dict({**all_four, "mixed_precision": "mixed_bfloat16"}), CLASSES,
                                 strategy=strategy)  # fmt: skip
    assert details["replicas"] == 2
    model.run_eagerly = True
    x, y, valid = batch()
    head = model.get_layer("head")  # its kernel starts at zero, which would stop every gradient below it
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.1, head.kernel.shape).astype("float32"))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    logs = model.fit(x, y, sample_weight=valid, batch_size=4, epochs=1, verbose=0).history  # one step
    assert np.isfinite(logs["loss"][0])
    for name in DECODERS:  # every decoder learnt (its join conv had a gradient)
        kernel = model.get_layer(f"{name}_join").kernel
        assert not np.array_equal(kernel.numpy(), before[kernel.path]), name
    assert keras.ops.convert_to_numpy(model(x[:1], training=False)).dtype == np.float32


@pytest.mark.slow
def test_every_decoder_exports_to_onnx_and_litert(all_four, tmp_path):
    """The converters meet every decoder's layers, on the toy backbone: a conversion's time grows with the layers
    it meets (MobileNetV2 here took 97 s, the toy 58). A keras.applications backbone is exported to ONNX and a
    SavedModel through the command line in tests/test_export.py."""
    from imseg.export import export

    model = toy_segmenter("AllFour", {"reduce_channel_scale": 2}, class_names=CLASSES).inference_model()
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-zero weights everywhere, so that the exports are compared on real logits
        if layer.name != "preprocess":
            layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in layer.get_weights()])
    path = str(tmp_path / "best.keras")
    model.save(path)
    x = images(2).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(expected).max() > 0.1
    import onnxruntime

    session = onnxruntime.InferenceSession(export(path, "onnx", str(tmp_path / "onnx")))
    assert np.abs(session.run(None, {session.get_inputs()[0].name: x})[0] - expected).max() < 1e-4
    assert np.abs(litert_logits(export(path, "litert", str(tmp_path / "lite")), x) - expected).max() < 1e-4


@pytest.mark.slow
def test_the_readme_decoder_builds_trains_saves_and_reloads(registry, tmp_path, monkeypatch):
    """The README's "Adding a decoder" example, exactly as written: registered, named in a config, one training
    step, saved and reloaded (as a Segmenter, and as the plain best.keras network); and found from IMSEG_PLUGINS."""
    import re
    import subprocess
    import sys

    from helpers import REPO

    readme = open(os.path.join(REPO, "README.md")).read()
    code = re.search(r"<!-- example: decoder -->\n```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "my_decoders.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("IMSEG_PLUGINS", "my_decoders")
    model, _ = build_model(config_from_dict({**BASE, "type": "tinyunet", "decoder_kwargs": {"filters": 8}}), CLASSES)
    assert model.decoder == "TinyUNet" and sum("concatenate" in layer.name for layer in model.layers) == 3
    x, y, valid = batch()
    model.run_eagerly = True  # a traced step costs tens of seconds; the Segmenter's is traced in other tests
    model.fit(x, y, sample_weight=valid, batch_size=4, epochs=1, verbose=0)
    loaded = assert_round_trip(model, str(tmp_path), example=x)
    assert loaded.decoder_kwargs == {"filters": 8}
    model.inference_model().save(tmp_path / "best.keras")
    check = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({str(tmp_path / 'best.keras')!r})\n"
        "assert not [n for n in sys.modules if n.startswith(('imseg', 'my_decoders'))]\n"
        "print(tuple(m(np.zeros((1, 64, 64, 3), 'float32')).shape))\n"
    )
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(1, 64, 64, 2)")
