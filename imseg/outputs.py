"""Where runs write and how: the `out/<name>/` layout of a run, locks that keep one process per folder, and
atomic file writes (temp file + rename)."""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

from imseg.errors import ConfigError


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes. `root` is `D/im_seg/out/<name>`."""

    root: str
    name: str

    @classmethod
    def for_run(cls, data_path, name, output_dir=None):
        """`output_dir/<name>`, or by default `D/im_seg/out/<name>` beside the data."""
        parent = output_dir if output_dir else os.path.join(data_path, "im_seg", "out")
        return cls(os.path.join(parent, name), name)

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

    def predictions(self, split):
        """Where `imseg-infer` writes a split's predictions by default."""
        return os.path.join(self.root, "preds", split)

    def make(self):
        for folder in (self.checkpoints, self.metrics, self.resume):
            os.makedirs(folder, exist_ok=True)

    def clear(self):
        """Remove everything of an earlier run (`--overwrite`), except the lock this process holds."""
        clear_folder(self.root)

    def remove_stale_temporaries(self):
        """Temporary files left by a process killed while writing (the real files are intact)."""
        for folder in (self.root, self.checkpoints, self.metrics, self.resume):
            for path in glob.glob(os.path.join(folder, ".*.tmp*")):
                os.remove(path)


LOCK_NAME = ".lock"


def refuse_to_clear(folder, inputs):
    """A ConfigError, before anything is written, when clearing `folder` (`--overwrite`) would delete one of the
    command's own `inputs` (a model, a dataset, images: paths that exist inside it or are it)."""
    top = os.path.realpath(folder)
    for path in inputs:
        if path and os.path.exists(path) and os.path.commonpath([top, os.path.realpath(path)]) == top:
            raise ConfigError(
                f"{folder}: --overwrite would clear it and delete {path}, an input of this command; choose another "
                "--output"
            )


def clear_folder(folder):
    """Remove everything in `folder` but the lock this process holds on it (`--overwrite`)."""
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry != LOCK_NAME:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


class FolderLock:
    """An exclusive `fcntl.flock` on `folder/.lock`, held until `release()` or the end of the process (`shared`: a
    shared one, which processes that divide the work among themselves hold together, and which keeps out an
    exclusive holder).

    The kernel drops the lock when the process dies, even by `kill -9`, so it is never stale. The file
    records who holds it (PID, host, program, start time) for the message another process gets.
    """

    def __init__(self, folder, program, shared=False, name=LOCK_NAME):
        self.folder, self.program, self.shared = folder, program, shared
        self.path = os.path.join(folder, name)
        self._fd = None

    def acquire(self):
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ConfigError(
                f"{self.folder}: cannot create the output folder ({e.strerror}); "
                "pass --output-dir DIR to write elsewhere"
            ) from None
        self._lock(fd)
        if not self.shared:  # the holder's name, for the message another process gets
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            os.write(fd, f"{self.program} (PID {os.getpid()} on host {socket.gethostname()}, since {started})".encode())
        self._fd = fd
        return self

    def _lock(self, fd):
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.folder}: in use by {holder}; wait for it to finish or stop it, "
                "or choose another name or --output-dir"
            ) from None

    def check_free(self):
        """Raise the "in use" error now if another process holds the lock, without taking it (nor creating
        anything): that a run is in use says more than what its folder holds at this moment."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        self._lock(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def alone(self):
        """Whether this process is the lock's only holder now (a shared lock, upgraded when it is)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def try_lock(folder, name):
    """An exclusive lock on `folder/name` if no other process holds it, else None (release it when done)."""
    try:
        return FolderLock(folder, "imseg", name=name).acquire()
    except ConfigError:
        return None


def check_writable(folder, what, hint):
    """Refuse, before any work, a `folder` that cannot be created or written into: the nearest folder of its path
    that exists must be a writable folder. `what` names the folder in the message, `hint` ends it."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing):
        raise ConfigError(f"{existing}: not a folder, so {what} cannot be created there; {hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{existing}: output folder is not writable; {hint}")


@contextlib.contextmanager
def output_folder(folder, program, shared=False, keep=None):
    """Hold the lock of an output folder while writing into it (`shared`: with the other processes of one job);
    if the work fails, remove the folder when this call created it (nothing half-written is left behind), unless
    `keep()` says it holds finished work by then."""
    top = folder
    while not os.path.exists(os.path.dirname(top) or "."):
        top = os.path.dirname(top)
    created = not os.path.exists(top)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"{folder}: exists and is not a folder; choose another output folder")
    with FolderLock(folder, program, shared=shared) as lock:
        try:
            yield folder
        except BaseException:
            if created and (not shared or lock.alone()) and not (keep and keep()):  # never from under another
                shutil.rmtree(top, ignore_errors=True)
            raise


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


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
