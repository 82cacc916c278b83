"""Security rules: safe YAML, safe Keras loading, no eval/exec/shell=True on anything a user controls."""

import glob
import os
import re

from helpers import REPO

SOURCES = glob.glob(os.path.join(REPO, "imseg", "**", "*.py"), recursive=True)


def source_matches(pattern):
    found = []
    for path in SOURCES:
        for number, line in enumerate(open(path, encoding="utf-8"), start=1):
            if re.search(pattern, line):
                found.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    return found


def test_no_eval_exec_or_shell():
    assert source_matches(r"\b(eval|exec)\(|shell\s*=\s*True|os\.system\(") == []


def test_yaml_only_through_safe_load():
    import yaml

    from imseg.config import _YamlLoader

    assert source_matches(r"yaml\.(unsafe_load|full_load|safe_load|load)\(|yaml\.(Unsafe|Full)?Loader\b") == []
    assert source_matches(r"= _YamlLoader\(")  # the one parser: a SafeLoader
    assert issubclass(_YamlLoader, yaml.SafeLoader)  # adds the resolver of 1e-4 as a number, refuses duplicate keys


def test_keras_files_are_loaded_in_safe_mode():
    assert source_matches(r"safe_mode\s*=\s*False|enable_unsafe_deserialization") == []
    loads = source_matches(r"load_model\(")
    assert loads and all("safe_mode=False" not in line for line in loads)


def test_tensorboard_is_suggested_on_localhost_only():
    hints = source_matches(r"tensorboard --logdir")
    assert hints and all("--host 127.0.0.1" in line for line in hints)
