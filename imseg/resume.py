"""Resuming a run: what may change, where it stopped, and the best score it had reached."""

import json
import math
import os

from imseg.errors import ConfigError
from imseg.outputs import sha256

RESUMABLE_CHANGES = ("epochs",)


def config_differences(old, new, prefix=""):
    """Dotted keys whose values differ between two resolved configs (ignoring what may change)."""
    keys = sorted(set(old) | set(new))
    different = []
    for key in keys:
        if not prefix and key in RESUMABLE_CHANGES + ("resolved",):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            different += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            different.append(f"{prefix}{key}")
    return different


def check_resumable(paths, resolved):
    """Refuse to resume a run that does not exist or whose config changed beyond `epochs`."""
    if not os.path.exists(paths.config):
        raise ConfigError(f"{paths.root}: nothing to resume (no run named '{paths.name}' was started there)")
    with open(paths.config, encoding="utf-8") as f:
        old = json.load(f)
    different = config_differences(old, resolved)
    if different:
        raise ConfigError(
            f"--resume: the config of run '{paths.name}' changed in {', '.join(different)}; only epochs may change "
            "(start a new run with another name, or --overwrite)"
        )


def load_state(paths):
    """The resume state written after the last completed epoch, or None before the first one."""
    if not os.path.exists(paths.resume_state):
        return None
    with open(paths.resume_state, encoding="utf-8") as f:
        return json.load(f)


def best_so_far(paths, state, score_checkpoint):
    """(value, epoch) the best checkpoint must beat after resuming.

    `best.json` is written just after `best.keras`; when its SHA-256 does not match the model file, the
    process died between the two writes and the file holds a newer model, which `score_checkpoint(path)`
    evaluates. The higher of that and the resume state's best is the bar, so nothing worse replaces it.
    """
    candidates = [(state["best"], state["best_epoch"])] if state and state.get("best") is not None else []
    if os.path.exists(paths.best_model):
        info = {}
        if os.path.exists(paths.best_json):
            with open(paths.best_json, encoding="utf-8") as f:
                info = json.load(f)
        if info.get("sha256") == sha256(paths.best_model):
            candidates.append((info["value"], info["epoch"]))
        else:
            candidates.append((score_checkpoint(paths.best_model), info.get("epoch")))
    candidates = [(v, e) for v, e in candidates if v is not None and math.isfinite(v)]
    return max(candidates, key=lambda c: c[0]) if candidates else (-math.inf, None)
