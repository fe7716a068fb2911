"""Work for the worker processes of ``test_cores.py`` (importable by spawned workers)."""
import time

import numba

from specblur.sweep import cores


def threads_when_done(group):
    """``group`` is ``[name, cores]``: "short" returns at once; "long" waits (60 s at
    most) until the parent's share gives it ``cores`` threads, following it as a fit does
    between epochs. Returns ``[{name: the threads seen, first and last}]``."""
    name, want = group
    seen = [numba.get_num_threads()]
    deadline = time.perf_counter() + 60.0
    while name == "long" and seen[-1] != want and time.perf_counter() < deadline:
        cores.follow()
        seen.append(numba.get_num_threads())
    return [{name: [seen[0], seen[-1]]}]
