"""The cores of a local sweep's worker processes, shared out again as the runs run out.

Each of ``jobs`` workers starts with ``cores // jobs`` threads for numba's kernels and
torch (``cores // batches`` if there are fewer batches). Once fewer batches are left than
workers, the idle workers' cores would sit unused while the last runs finish, so the
parent publishes a new share, ``cores // batches left``, in shared memory
(:class:`CoreShare`), and each worker takes it up between two epochs (:func:`follow`).
The workers are started with ``NUMBA_NUM_THREADS`` equal to the cores, so that numba's
thread team can grow; a team kept at one thread leaves the others asleep (a worker at one
thread of two uses one core's time).
"""
from __future__ import annotations

import os
import sys

__all__ = ["CoreShare", "usable", "join", "follow"]


def usable() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class CoreShare:
    """The parent's side: the threads each busy worker may use, in shared memory.

    Parameters
    ----------
    context : multiprocessing context
        The context the workers are started with (its ``Value`` reaches them).
    cores, jobs : int
        The cores to share and the number of workers.

    Examples
    --------
    >>> import multiprocessing
    >>> share = CoreShare(multiprocessing.get_context("spawn"), cores=8, jobs=4)
    >>> share.threads, share.left(3), share.left(1)
    (2, 2, 8)
    """

    def __init__(self, context, cores: int, jobs: int):
        self.cores, self.jobs = cores, jobs
        self.threads = max(1, cores // jobs)
        self.value = context.Value("i", self.threads, lock=False)

    def left(self, batches: int) -> int:
        """Publish the share for ``batches`` batches not yet finished; returns it."""
        share = max(self.threads, self.cores // max(1, min(batches, self.jobs)))
        self.value.value = share
        return share


_shared = None  # in a worker: the parent's CoreShare.value
_applied = 0  # the share this worker last took up
_threads = 0  # the threads it gave numba and torch then


def join(value) -> None:
    """In a worker, at its start: take the share in ``value`` (a ``CoreShare.value``) and
    follow it from now on."""
    global _shared
    _shared = value
    _apply(value.value)


def follow() -> None:
    """In a worker, between epochs: take up the parent's current share, if it changed,
    also for a torch imported since (a plug-in model's, say).

    Does nothing outside a worker of a local sweep.
    """
    if _shared is None:
        return
    torch = sys.modules.get("torch")
    if _shared.value != _applied or (torch is not None and torch.get_num_threads() != _threads):
        _apply(_shared.value)


def _apply(share):
    global _applied, _threads
    import numba

    _applied = share
    _threads = threads = max(1, min(share, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    torch = sys.modules.get("torch")  # the speaker encoder's, or a plug-in's
    if torch is not None:
        torch.set_num_threads(threads)
