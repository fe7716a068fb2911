"""Small timing helpers shared by the benchmarks."""
import time

import numpy as np


def raise_mmap_threshold():
    """Free one big mmapped block, so that glibc serves MB-sized arrays from its heap.

    glibc serves the 1 MB temporaries with mmap (page faults, ~1 ms here) until a larger
    mmapped block has been freed, which raises its threshold; any longer computation has
    done that already, so do it once before timing calls that allocate their outputs.
    """
    del_me = np.empty(4 << 20, dtype=np.uint8)
    del del_me


def best_of(fn, repeat=20, min_seconds=0.0):
    """Best wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    best = float("inf")
    start = time.perf_counter()
    runs = 0
    while runs < repeat or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def alternate(fns, repeat, warm=True):
    """Best wall time of each of ``fns``, called in turn ``repeat`` times (after one warm-up
    call each, if ``warm``), so that other load on the machine hits them alike."""
    best = [float("inf")] * len(fns)
    if warm:
        for fn in fns:
            fn()
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def epoch_seconds(history):
    """Seconds per epoch between a fit's logged rows (its ``history``: ``epoch`` and the
    cumulative ``seconds``), one value per gap."""
    return np.diff(history["seconds"].to_numpy()) / np.diff(history["epoch"].to_numpy())
