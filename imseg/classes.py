"""classes.json -> the sorted `super:sub` class names that index annotation channels, and selections of them."""

import os

from imseg.config import parse_file
from imseg.errors import ConfigError, did_you_mean
from imseg.tasks import BACKGROUND


def default_classes_path(data_path):
    """The classes file when none is given: the dataset's own `D/classes.json` (as `imseg-data convert` writes
    it), else ./classes.json as in AIR ImSeg. When both exist and list different classes, neither silently
    wins: a ConfigError names both."""
    here, beside = "classes.json", os.path.join(data_path, "classes.json")
    if not os.path.exists(beside):
        return here
    if os.path.exists(here) and not os.path.samefile(here, beside):
        if load_class_names(here) != load_class_names(beside):
            raise ConfigError(
                f"{os.path.abspath(here)} and {beside} both exist and list different classes; pass --classes-path "
                "to choose one"
            )
    return beside


def load_class_names(path: str) -> list:
    """Read `{"building": ["hospital", "other"], ...}` and return the sorted `super:sub` names.

    Channel k of every annotation is the k-th name of this list (the AIR ImSeg convention).

    Args:
        path: a `classes.json` (or YAML) file.

    Returns:
        The sorted `super:sub` names.

    Raises:
        ConfigError: the file is missing or not a `{super: [sub, ...]}` mapping, or lists a class twice.
    """
    if not os.path.exists(path):
        raise ConfigError(f"{path}: classes file not found (pass --classes-path)")
    data = parse_file(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f'{path}: expected a mapping {{"super": ["sub", ...]}}, e.g. {{"building": ["other"]}}')
    names = []
    for sup, subs in data.items():
        if not isinstance(subs, list) or not subs or not all(isinstance(s, str) and s for s in subs):
            raise ConfigError(f"{path}: key '{sup}': expected a non-empty list of sub-class names")
        names.extend(f"{sup}:{sub}" for sub in subs)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{path}: class {', '.join(twice)} is listed twice")
    return sorted(names)


def select_classes(config, all_names, source, classes_path="classes.json"):
    """Return (names, channel indices) of the classes the config trains on, validating benchmark_class;
    `classes_path` is where `all_names` came from, for the messages."""
    names = list(config.classes) or list(all_names)
    for name in names:
        if name not in all_names:
            raise ConfigError(
                f"{source}: key 'classes': unknown class '{name}'{did_you_mean(name, all_names)}; "
                f"{classes_path} has: {', '.join(all_names)}"
            )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: key 'classes': {', '.join(twice)} is listed twice")
    if config.benchmark_class is not None and config.benchmark_class not in names:
        raise ConfigError(
            f"{source}: key 'benchmark_class': '{config.benchmark_class}' is not among the trained classes"
            f"{did_you_mean(config.benchmark_class, names)}; choose one of: {', '.join(names)}"
        )
    return names, [all_names.index(n) for n in names]


def output_names(config, class_names):
    """The model's output channels: the classes, and `background` for a multiclass task that has one."""
    return list(class_names) + ([BACKGROUND] if config.task == "multiclass" and config.background else [])
