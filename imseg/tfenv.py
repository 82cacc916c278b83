"""Importing TensorFlow for the command-line tools: quietly, and with a clear message when it is missing."""

import contextlib
import os
import sys

from imseg.errors import UserError


@contextlib.contextmanager
def _stderr_to_devnull():
    """Silence file descriptor 2 (C++ logging that Python cannot filter) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow without its start-up banner (absl and oneDNN notices printed at import), with oneDNN's
    CPU kernels on unless the user chose: TensorFlow turns them on only for CPUs with AVX-512 VNNI/BF16 or AMX, and
    on an AVX2 CPU they train 2-3 x faster (docs/performance.md). `TF_ENABLE_ONEDNN_OPTS=0` turns them off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        with _stderr_to_devnull():
            import tensorflow
    except ImportError as e:
        raise UserError(
            f"TensorFlow cannot be imported ({e}); install it with: pip install 'imseg[cpu]' (or 'imseg[gpu]')"
        ) from None
    return tensorflow
