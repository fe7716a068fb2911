"""Blur kernels: ``cpu`` (Numba, parallel over tiles of frames) and ``gpu`` (Numba CUDA).

``specblur`` compiles its cached kernels inside ``own_cache_dir()``, which points Numba's
on-disk cache at a folder named after a digest of specblur's jitted sources. Numba checks only the timestamp of the file that holds a
cached function, not of the helpers it inlines from other files, so without this a
change to ``_scalar.py`` could leave a stale compiled kernel in use.
"""
import contextlib
import hashlib
import os
from pathlib import Path

import numba

# Boundary modes (SPEC §4, §9.1) and the integer code the kernels take for each.
MODE_CODES = {"truncate": 0, "conserve": 1, "renormalize": 2}

_PACKAGE = Path(__file__).resolve().parent.parent
_JITTED = ("kernels/_scalar.py", "kernels/cpu.py", "objective.py")


def _cache_dir():
    digest = hashlib.sha256()
    for name in _JITTED:
        digest.update((_PACKAGE / name).read_bytes())
    root = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specblur")
    return os.path.join(root, f"numba-{digest.hexdigest()[:16]}")


@contextlib.contextmanager
def own_cache_dir():
    """Within this block, ``@njit(cache=True)`` functions cache under specblur's folder."""
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = _cache_dir()
    try:
        yield
    finally:
        numba.config.CACHE_DIR = saved
