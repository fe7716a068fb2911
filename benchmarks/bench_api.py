"""Overhead of the public API (``specblur.blur`` + ``specblur.blur_vjp``) over the raw kernels.

    python benchmarks/bench_api.py [--K 257] [--T 501] [--repeat 300] [--threads 1]

The raw kernels (``cpu.blur_forward`` and ``cpu.blur_backward``) write into preallocated
arrays; the API checks its inputs, allocates its outputs and calls the same kernels. The
two are timed alternately in the same process, call after call, and the best of
``--repeat`` runs of each is kept, so that other load on the machine hits both alike.
C-ordered float64 inputs (the common case) and radii U(0, 2K). As in bench_kernels.py,
one big block is freed first so that glibc serves the MB-sized outputs from its heap, as
it does in any process that has run a longer computation.
"""
import argparse

import numba
import numpy as np

import specblur
from specblur.kernels import MODE_CODES, cpu
from _timing import alternate, raise_mmap_threshold


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("K", 257), ("T", 501), ("repeat", 300), ("threads", 1)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--fresh-pages", action="store_true",
                    help="skip the heap warm-up: outputs come from mmap, with page faults")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    K, T = args.K, args.T
    rng = np.random.default_rng(0)
    X = rng.random((K, T))
    R = rng.uniform(0, 2 * K, (K, T))
    G = rng.standard_normal((K, T))
    X3, R3, G3 = X[None], R[None], G[None]
    Y3, dX3, dR3 = (np.empty_like(X3) for _ in range(3))
    if not args.fresh_pages:
        raise_mmap_threshold()
    print(f"K={K} T={T} float64 threads={args.threads}; best of {args.repeat} alternating runs, ms")
    print(f"{'mode':11} {'raw fwd+vjp':>11} {'api fwd+vjp':>11} {'overhead':>9}")
    for mode, code in MODE_CODES.items():
        def raw():
            cpu.blur_forward(X3, R3, code, Y3)
            cpu.blur_backward(X3, R3, G3, code, dX3, dR3)

        def api():
            specblur.blur(X, R, mode=mode)
            specblur.blur_vjp(X, R, G, mode=mode)

        t_raw, t_api = alternate([raw, api], args.repeat)
        print(f"{mode:11} {t_raw * 1e3:11.3f} {t_api * 1e3:11.3f} {(t_api - t_raw) / t_raw:9.1%}")


if __name__ == "__main__":
    main()
