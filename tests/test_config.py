"""The config file: AIR ImSeg keys read as they are, defaults filled, every mistake named precisely."""

import glob
import json
import os

import pytest

from helpers import REPO
from imseg.config import Config, config_from_dict, describe, load_config
from imseg.errors import ConfigError

SEED_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "refine_net_224_*.json")))


def write(tmp_path, data, name="c.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


MINIMAL = {"name": "run", "backbone": "ResNet50", "refine_net_blocks": [["conv5_block3_out"]]}


def test_three_seed_configs_are_shipped_and_load():
    names = [os.path.basename(p) for p in SEED_CONFIGS]
    assert names == [
        "refine_net_224_fresh.json",
        "refine_net_224_pretrained.json",
        "refine_net_224_pretrained_augment.json",
    ]
    augment = load_config(SEED_CONFIGS[2])
    assert augment.classes == ("building:other", "highway:other")
    assert (augment.augment.rotate_range, augment.augment.flip, augment.augment.channel_shift_range) == (30, True, 50)
    assert (augment.epochs, augment.batch_size, augment.benchmark_class) == (300, 16, "building:other")
    assert augment.optimizer_kwargs == {"learning_rate": 0.0001}
    plain = load_config(SEED_CONFIGS[1])
    assert plain.classes == ("building:other",) and not plain.augment.enabled and plain.epochs == 200
    fresh = load_config(SEED_CONFIGS[0])
    assert fresh.pretrained is False


def test_defaults_are_filled_and_resolved_config_round_trips(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.input_shape == (224, 224, 3)
    assert config.refine_net_kwargs.reduce_channel_scale == 4
    assert config.refine_net_kwargs.crp_kwargs.pool_size == 5
    assert config.loss == "BinaryCrossentropy" and config.loss_kwargs == {"from_logits": True}
    assert config.monitor == "val_mean_iou"
    again = load_config(write(tmp_path, config.to_dict(), "resolved.json"))
    assert again == config


def test_yaml_is_read_with_safe_load(tmp_path):
    path = write(tmp_path, "name: run\nbackbone: resnet50\nrefine_net_blocks: [[conv5_block3_out]]\n", "c.yaml")
    assert load_config(path).backbone == "resnet50"
    evil = write(tmp_path, "name: !!python/object/apply:os.system ['true']\n", "evil.yml")
    with pytest.raises(ConfigError, match="evil.yml: invalid YAML: line 1, column 7"):
        load_config(evil)


def test_benchmark_class_sets_the_monitored_log_name(tmp_path):
    config = load_config(write(tmp_path, {**MINIMAL, "benchmark_class": "building:other"}))
    assert config.monitor == "val_iou/building:other"


def test_set_overrides_use_yaml_values_and_dotted_keys(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        ["epochs=1", "input_shape=[32, 32, 3]", "augment.flip=true", "pretrained=false", "benchmark_class=a:b"],
    )
    assert (config.epochs, config.input_shape, config.augment.flip, config.pretrained) == (1, (32, 32, 3), True, False)
    assert config.benchmark_class == "a:b"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batchsize": 4}, "c.json: unknown key 'batchsize' (did you mean 'batch_size'?)"),
        ({"augment": {"rotate": 3}}, "unknown key 'augment.rotate' (did you mean 'rotate90'?)"),
        ({"batch_size": "16"}, "c.json: key 'batch_size': expected an integer >= 1, got \"16\""),
        ({"epochs": 0}, "key 'epochs': expected an integer >= 1, got 0"),
        ({"input_shape": [224, 224]}, "key 'input_shape': expected [height, width, bands], three positive"),
        ({"input_shape": [64, 64, 4], "bands": [1, 2]}, "key 'bands': 2 bands listed, but input_shape has 4"),
        ({"input_shape": [64, 64, 4]}, "key 'normalization': imagenet is the backbone's normalisation of 3-band"),
        (
            {"input_shape": [64, 64, 2], "normalization": "auto", "pretrained": True},
            "key 'rgb_bands': expected the 3 input bands (of 2) that are red, green and",
        ),
        (
            {"input_shape": [64, 64, 4], "normalization": {"mean": [0], "std": [1]}},
            "key 'normalization': 1 means and stds, but input_shape has 4 bands",
        ),
        ({"augment": {"rotate_range": -5}}, "key 'augment.rotate_range': expected a number >= 0 and <= 180, got -5"),
        ({"augment": {"flip": 1}}, "key 'augment.flip': expected true or false, got 1"),
        ({"type": "UNet"}, "key 'type': expected one of FPN, LightWeightRefineNet, RefineNet, RefineNetCascade"),
        ({"type": "refinenetcascad"}, "(did you mean 'RefineNetCascade'?)"),
        ({"mixed_precision": "bf16"}, "key 'mixed_precision': expected one of auto, none, mixed_bfloat16"),
        ({"name": "../escape"}, "key 'name': expected a plain folder name"),
        ({"name": ""}, "key 'name': expected a non-empty string"),
        ({"refine_net_blocks": ["conv5_block3_out"]}, "key 'refine_net_blocks': expected a non-empty list of"),
        (
            {"refine_net_kwargs": {"crp_kwargs": {"stages": 2}}},
            "unknown key 'refine_net_kwargs.crp_kwargs.stages' (did you mean 'num_stages'?)",
        ),
    ],
)
def test_bad_values_name_file_key_and_expectation(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**MINIMAL, **change}))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match="c.json: missing required key 'backbone'"):
        load_config(write(tmp_path, {"name": "x", "type": "FPN"}))


def test_syntax_errors_give_line_and_column(tmp_path):
    with pytest.raises(ConfigError, match=r"c.json: invalid JSON: line 2, column 12: Expecting"):
        load_config(write(tmp_path, '{"name": "x",\n "epochs": ,}'))
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML: line 2, column 7: expected ','"):
        load_config(write(tmp_path, "name: [x\nepochs: 3\n", "c.yaml"))
    with pytest.raises(ConfigError, match="nope.json: file not found"):
        load_config(str(tmp_path / "nope.json"))


def test_every_key_is_documented_in_the_readme():
    readme = open(os.path.join(REPO, "README.md")).read()
    for key, _, _ in describe(Config):
        assert f"`{key}`" in readme, key


def test_errors_in_set_values_point_at_the_option(tmp_path):
    with pytest.raises(ConfigError, match="^--set epochs: expected an integer >= 1, got 0$"):
        load_config(write(tmp_path, MINIMAL), ["epochs=0"])
    with pytest.raises(ConfigError, match="^--set: unknown key 'epoch' \\(did you mean 'epochs'\\?\\)"):
        load_config(write(tmp_path, MINIMAL), ["epoch=3"])
    with pytest.raises(ConfigError, match="^--set nothing: expected key=value"):
        load_config(write(tmp_path, MINIMAL), ["nothing"])


def test_the_config_is_frozen_all_the_way_down_and_replace_validates():
    config = config_from_dict({**MINIMAL, "loss_kwargs": {"class_weights": {"a": 2}}})
    for change in (
        lambda: config.optimizer_kwargs.update(learning_rate=1.0),
        lambda: config.loss_kwargs["class_weights"].pop("a"),
        lambda: config.backbone_kwargs.__setitem__("alpha", 1.0),
    ):
        with pytest.raises(TypeError, match="the config is frozen"):
            change()
    changed = config.replace(epochs=3, optimizer_kwargs={"learning_rate": 0.01})
    assert (changed.epochs, changed.optimizer_kwargs["learning_rate"], config.epochs) == (3, 0.01, 100)
    with pytest.raises(ConfigError, match="^Config.replace: key 'epochs': expected an integer >= 1, got 0$"):
        config.replace(epochs=0)
    assert config.replace(augment=config.augment) == config


def test_yaml_reads_1e_minus_4_as_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: run\nbackbone: ResNet50\nrefine_net_blocks: [[conv5_block3_out]]\n"
        "optimizer_kwargs: {learning_rate: 1e-4, epsilon: 1E-7}\n"
    )
    config = load_config(str(path), ["optimizer_kwargs.weight_decay=5e-5"])
    assert config.optimizer_kwargs == {"learning_rate": 1e-4, "epsilon": 1e-7, "weight_decay": 5e-5}
