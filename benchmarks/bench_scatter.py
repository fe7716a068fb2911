"""The CPU forward kernel against its previous scatter loop, into 2-D scratch.

    python benchmarks/bench_scatter.py [--K 257] [--T 501] [--repeat 60]

``cpu.blur_forward`` scatters each source's impulses into flat ``(K + 2) * tile`` scratch
with unsigned indices (``cpu._at``), and sums its non-finite probe and each frame's
given-away mass in separate loops. Up to commit 797e92d (before 8b2cccc) it scattered into
a 2-D ``(K + 2, tile)`` array (``_scalar.scatter_source``, which the GPU kernel still uses),
where Numba adds a wraparound select and a row multiply to every store, and it counted
non-finite inputs and summed the mass inside the scatter loop. ``forward_2d`` below is
that loop; both share today's per-bin formulas (``_scalar.impulses``, without the branch
on ``r > 1`` that 797e92d had), so they must give the same values, which is asserted.
Both are timed alternately on the same inputs and outputs (best of ``--repeat``, one
thread).
"""
import argparse

import numba
import numpy as np
from numba import prange

from specblur.kernels import MODE_CODES, cpu
from specblur.kernels._numba import parallel_jit
from _timing import alternate

_scatter_2d = cpu._bins.scatter_source


@parallel_jit
def forward_2d(X, R, mode, Y):
    """``cpu.blur_forward`` as it was: the impulses go into a 2-D ``(K + 2, tile)`` array."""
    nb, K, T = X.shape
    tile, ntiles = cpu._tiling(T)
    keeps_total = mode != cpu.TRUNCATE
    bad = 0
    for job in prange(nb * ntiles):
        b, t0, width = cpu._tile(job, ntiles, T, tile)
        d2 = np.zeros((K + 2, tile))
        own = np.empty((K, tile))
        sent = np.zeros(tile)
        tile_bad = 0
        for p in range(K):
            for j in range(width):
                r = np.float64(R[b, p, cpu._col(t0, j)])
                x = np.float64(X[b, p, cpu._col(t0, j)])
                tile_bad += cpu._non_finite(x) + cpu._non_finite(r)
                kept = _scatter_2d(d2, j, p, K, r, x, mode)
                own[p, j] = kept
                sent[j] += x - kept
        bad += tile_bad
        slope = np.zeros(tile)
        value = np.zeros(tile)
        if not keeps_total:
            for i in range(K):
                for j in range(width):
                    slope[j] += d2[i, j]
                    value[j] += slope[j]
                    Y[b, i, cpu._col(t0, j)] = value[j] + own[i, j]
            continue
        received = np.zeros(tile)
        spread = np.zeros(tile)
        for i in range(K):
            for j in range(width):
                slope[j] += d2[i, j]
                value[j] += slope[j]
                d2[i, j] = value[j]
                received[j] += value[j]
                spread[j] += abs(value[j])
        for j in range(width):
            value[j] = cpu.mass_scale(sent[j], received[j], spread[j])
        for i in range(K):
            for j in range(width):
                Y[b, i, cpu._col(t0, j)] = own[i, j] + d2[i, j] * value[j]
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("K", 257), ("T", 501), ("repeat", 60)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args()
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.random((1, args.K, args.T))
    Y, Y_2d = np.empty_like(X), np.empty_like(X)
    print(f"K={args.K} T={args.T}, one thread, best of {args.repeat} alternating runs, ms")
    print(f"{'radii':9} {'mode':11} {'2-D scratch':>11} {'flat':>7} {'flat/2-D':>8}")
    for label, high in (("U(0,2)", 2.0), ("U(0,10)", 10.0), ("U(0,2K)", 2.0 * args.K)):
        R = rng.uniform(0, high, X.shape)
        for mode, code in MODE_CODES.items():
            forward_2d(X, R, code, Y_2d)
            cpu.blur_forward(X, R, code, Y)
            diff = float(np.abs(Y - Y_2d).max())
            assert diff == 0.0, f"the two forms differ by {diff}"
            old, new = alternate([lambda: forward_2d(X, R, code, Y),
                                  lambda: cpu.blur_forward(X, R, code, Y)], args.repeat)
            print(f"{label:9} {mode:11} {old * 1e3:11.3f} {new * 1e3:7.3f} {new / old:8.2f}")


if __name__ == "__main__":
    main()
