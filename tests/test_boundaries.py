"""The module boundaries of the design: read from the source, so a new import that crosses one fails here."""

import ast
import os

import pytest

from helpers import REPO

PACKAGE = os.path.join(REPO, "imseg")
CLI = {"imseg.cli", "imseg.train", "imseg.infer", "imseg.export", "imseg.data.__main__"}
# Layers, losses, metrics, schedules, augmentation, models and writers take plain values, never a Config.
PLAIN = ("imseg.losses", "imseg.metrics", "imseg.schedules", "imseg.augment", "imseg.visualize", "imseg.blocks",
         "imseg.predict", "imseg.geo", "imseg.models")  # fmt: skip


def modules():
    """{module name: the imseg modules it imports (as `from imseg.x import y` or `import imseg.x`)}."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            imports = []
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imseg"):
                    imports += [(node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    imports += [(alias.name, None) for alias in node.names if alias.name.startswith("imseg")]
            found[name] = imports
    return found


MODULES = modules()


@pytest.mark.parametrize("module", sorted(set(MODULES) - CLI))
def test_the_library_never_imports_a_command_line_module(module):
    assert not [m for m, _ in MODULES[module] if m in CLI]


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m in PLAIN or m.startswith(tuple(p + "." for p in PLAIN)))
)
def test_layers_losses_metrics_and_models_take_plain_values_not_the_config(module):
    assert not [m for m, _ in MODULES[module] if m == "imseg.config"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_helper_is_imported_across_modules(module):
    assert not [(m, n) for m, n in MODULES[module] if n and n.startswith("_") and not n.startswith("__")]


# TensorFlow where it is the point: tf.data, tf.distribute, stateless random draws and image ops, TensorBoard
# summaries, SavedModel/LiteRT export, and its import; everything else (models, decoders, losses, metrics,
# schedules) is keras.ops, so that the network can be measured on another Keras backend.
TENSORFLOW = {"imseg.dataset", "imseg.distribute", "imseg.augment", "imseg.callbacks", "imseg.export", "imseg.tfenv",
              "imseg.demo"}  # fmt: skip


def test_tensorflow_is_imported_only_where_it_is_the_point():
    found = set()
    for folder, _, files in os.walk(PACKAGE):
        for file in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file)
            tree = ast.parse(open(path).read())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
            if any(name.split(".")[0] == "tensorflow" for name in names):
                found.add(os.path.relpath(path, REPO)[:-3].replace(os.sep, "."))
    assert found == TENSORFLOW


def test_the_training_pipeline_reads_images_through_the_shared_io_module():
    assert not [m for m, _ in MODULES["imseg.dataset"] if m.startswith("imseg.data")]


def test_the_config_names_every_operation_of_the_library_and_no_other():
    from imseg.augment import PHOTOMETRIC
    from imseg.config import SCHEDULES, AugmentConfig
    from imseg.schedules import SCHEDULES as IMPLEMENTED

    assert AugmentConfig.PHOTOMETRIC == PHOTOMETRIC
    assert SCHEDULES == IMPLEMENTED
