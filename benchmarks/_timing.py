"""Small timing helpers shared by the benchmarks."""
import time


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
