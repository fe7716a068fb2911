"""Numba defaults shared by every jitted module, and the compile cache they use.

``jit`` and ``parallel_jit`` decorate the CPU kernels and the objective's loops with one
set of options: float64 accumulators are the code's business, ``fastmath`` without
``nnan``/``ninf`` (non-finite values must be seen, to stop a run as diverged) is set
here, and so is caching. Cached code goes to a folder named after a digest of the shared
inlined code (``_scalar.py``, ``_terms.py``, ``_prefetch.py``, ``_vexp.py``), of this
file and of the decorated function's own file: Numba checks only the timestamp of the
file that holds a cached function, not of the helpers it inlines from other files, so
without this a change to ``_scalar.py`` could leave a stale compiled kernel in use.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numba

#: LLVM fast-math flags: no ``nnan`` or ``ninf``, so NaN and infinity tests keep working.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn"})
#: Frames per tile of the CPU kernels (contiguous inner loops, O(K * TILE) scratch).
TILE = 32
#: Frames per tile from ``WIDE_FROM`` frames on: longer contiguous runs per row (rows lie
#: ``T * 8`` bytes apart), which keep the cost per bin flat once the arrays outgrow the
#: cache, while every thread still gets many tiles. The forward kernel uses it at any
#: length while every thread gets two tiles (``cpu.forward_tile``).
WIDE_TILE = 128
WIDE_FROM = 1024
#: Threads per block of the CUDA kernels.
THREADS = 128

_HERE = Path(__file__).resolve().parent
# inlined formulas, these options, and the code tables that compiled code bakes in
_SHARED = (_HERE / "_scalar.py", _HERE / "_terms.py", _HERE / "_numba.py", _HERE / "_prefetch.py",
           _HERE / "_vexp.py", _HERE / "__init__.py", _HERE.parent / "settings.py")


@lru_cache(maxsize=None)
def cache_dir(source_file: str) -> str:
    """The cache folder of the jitted functions defined in ``source_file``."""
    digest = hashlib.sha256()
    for path in (*_SHARED, Path(source_file)):
        digest.update(path.read_bytes())
    root = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specblur")
    return os.path.join(root, f"numba-{digest.hexdigest()[:16]}")


@contextlib.contextmanager
def _cache_dir_for(function):
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = cache_dir(inspect.getsourcefile(function))
    try:
        yield
    finally:
        numba.config.CACHE_DIR = saved


def jit(function: Callable | None = None, *, reassociate: bool = False, **options) -> Callable:
    """``numba.njit`` with specblur's fast-math flags and its compile cache.

    Used bare (``@jit``) or with extra options (``@jit(inline="always")``).
    ``reassociate=True`` adds ``reassoc``, which lets LLVM vectorise a loop's floating-point
    sums (their rounding then depends on the compiled vector width, not on the data's
    order alone); only for functions that are not inlined, since an inlined function
    takes its caller's flags.
    """
    flags = FASTMATH | {"reassoc"} if reassociate else FASTMATH

    def decorate(fn):
        with _cache_dir_for(fn):  # the cache locator reads CACHE_DIR when it is created
            return numba.njit(fastmath=set(flags), cache=True, **options)(fn)

    return decorate(function) if function is not None else decorate


def parallel_jit(function: Callable | None = None, **options) -> Callable:
    """:func:`jit` with ``parallel=True`` (loops written with ``numba.prange``)."""
    return jit(function, parallel=True, **options)
