"""The `D/im_seg/out/<name>/` layout of a run, and atomic file writes (temp file + rename)."""

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes. `root` is `D/im_seg/out/<name>`."""

    root: str
    name: str

    @classmethod
    def for_run(cls, data_path, name):
        return cls(os.path.join(data_path, "im_seg", "out", name), name)

    @property
    def config(self):
        return os.path.join(self.root, "config.json")

    @property
    def checkpoints(self):
        return os.path.join(self.root, "checkpoints")

    @property
    def best_model(self):
        return os.path.join(self.checkpoints, "best.keras")

    @property
    def best_json(self):
        return os.path.join(self.checkpoints, "best.json")

    @property
    def resume(self):
        return os.path.join(self.root, "resume")

    @property
    def resume_state(self):
        return os.path.join(self.resume, "state.json")

    @property
    def metrics(self):
        return os.path.join(self.root, "metrics")

    @property
    def log(self):
        return os.path.join(self.metrics, f"{self.name}.log")

    @property
    def history(self):
        return os.path.join(self.metrics, "history.csv")

    def make(self):
        for folder in (self.checkpoints, self.metrics, self.resume):
            os.makedirs(folder, exist_ok=True)

    def remove_stale_temporaries(self):
        """Temporary files left by a process killed while writing (the real files are intact)."""
        for folder in (self.root, self.checkpoints, self.metrics, self.resume):
            for path in glob.glob(os.path.join(folder, ".*.tmp*")):
                os.remove(path)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A crash at any instant leaves either the old file or the new one, never a partial file.
    `suffix` keeps an extension some writers insist on (Keras wants `.keras`).
    """
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp" + suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_png(path, array):
    """Write an (h, w) or (h, w, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_model(model, path):
    """Save a Keras model to `path` (a `.keras` file) atomically; returns the file's SHA-256."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        digest = sha256(tmp)
    return digest


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
