"""The CPU forward kernel against its two earlier forms.

    python benchmarks/bench_scatter.py [--K 257] [--T 501] [--repeat 60]

``cpu.blur_forward`` handles one row of sources in two loops over the tile's frames: one
that vectorises (the per-bin formulas, the impulses at fixed rows, the non-finite probe
and the given-away mass, and the flat indices of the other impulses) and one that only
scatters four impulses per source. Its tiles are ``WIDE_TILE`` (128) frames wide while
every thread still gets two (``cpu.forward_tile``). Two earlier forms are timed
beside it, both on the backward kernel's tiles (``cpu._tiling``: 32 frames below
``WIDE_FROM``):

- ``one_loop`` (commits 8b2cccc to b2cba0b): flat ``(K + 2) * tile`` scratch with
  unsigned indices, but the formulas and all six stores per source in one scalar loop,
  and the probe and the mass in passes of their own;
- ``two_d`` (up to 797e92d): the same single loop into a 2-D ``(K + 2, tile)`` array
  (``_scalar.scatter_source``, which the GPU kernel still uses), where Numba adds a
  wraparound select and a row multiply to every store, with the non-finite count and the
  mass summed inside the loop.

All three share today's per-bin formulas (``_scalar.impulses``) and running sums
(``cpu._integrate``). They add the impulses in different orders, so their outputs must
agree to rounding, which is asserted. They are timed alternately on the same inputs and
outputs (best of ``--repeat``, one thread).
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
def two_d(X, R, mode, Y):
    """The forward kernel up to 797e92d: one loop, 2-D scratch."""
    nb, K, T = X.shape
    tile = cpu._tiling(T)
    frames = np.full(nb, T, np.int64)
    first = cpu._first_tiles(frames, tile)
    bad = 0
    for job in prange(first[-1]):
        b, t0, width = cpu._tile(job, first, frames, tile)
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
        cpu._integrate(d2.reshape(-1), own, sent, mode != cpu.TRUNCATE, tile, width, Y, b, t0)
    return bad


@parallel_jit
def one_loop(X, R, mode, Y):
    """The forward kernel from 8b2cccc to b2cba0b: one loop, flat scratch."""
    nb, K, T = X.shape
    tile = cpu._tiling(T)
    frames = np.full(nb, T, np.int64)
    first = cpu._first_tiles(frames, tile)
    bad = 0
    for job in prange(first[-1]):
        b, t0, width = cpu._tile(job, first, frames, tile)
        d2 = np.zeros((K + 2) * tile)
        own = np.empty((K, tile))
        probe = np.zeros(tile)
        for p in range(K):
            for j in range(width):
                probe[j] += 0.0 * X[b, p, cpu._col(t0, j)] + 0.0 * R[b, p, cpu._col(t0, j)]
        for j in range(width):
            bad += cpu._non_finite(probe[j])
        for p in range(K):
            mid = cpu._at(p + 1.0, tile, 0)
            for j in range(width):
                r = np.float64(R[b, p, cpu._col(t0, j)])
                x = np.float64(X[b, p, cpu._col(t0, j)])
                lo0, lo1, hi, v_lo0, v_lo1, v_edge, v_mid, v_hi, v_hi1, kept = cpu.impulses(
                    p, K, r, x, mode)
                at_lo = cpu._at(lo0, tile, j)
                at_hi = cpu._at(hi, tile, j)
                d2[at_lo] += v_lo0
                d2[at_lo + np.uint64(tile if lo1 > lo0 else 0)] += v_lo1
                d2[np.uint64(tile + j)] += v_edge
                d2[mid + np.uint64(j)] += v_mid
                d2[at_hi] += v_hi
                d2[at_hi + np.uint64(tile)] += v_hi1
                own[p, j] = kept
        sent = np.zeros(tile)
        if mode != cpu.TRUNCATE:
            for p in range(K):
                for j in range(width):
                    sent[j] += np.float64(X[b, p, cpu._col(t0, j)]) - own[p, j]
        cpu._integrate(d2, own, sent, mode != cpu.TRUNCATE, tile, width, Y, b, t0)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("K", 257), ("T", 501), ("repeat", 60)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args()
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.random((1, args.K, args.T))
    forms = {"2-D": two_d, "one loop": one_loop, "now": cpu.blur_forward}
    outputs = {name: np.empty_like(X) for name in forms}
    print(f"K={args.K} T={args.T}, one thread, best of {args.repeat} alternating runs, ms")
    print(f"{'radii':9} {'mode':11} {'2-D':>7} {'one loop':>8} {'now':>7} {'now/2-D':>7} "
          f"{'now/one loop':>12}")
    for label, high in (("U(0,2)", 2.0), ("U(0,10)", 10.0), ("U(0,2K)", 2.0 * args.K)):
        R = rng.uniform(0, high, X.shape)
        for mode, code in MODE_CODES.items():
            for name, form in forms.items():
                form(X, R, code, outputs[name])
            scale = np.abs(outputs["now"]).max()
            for name in ("2-D", "one loop"):
                diff = float(np.abs(outputs[name] - outputs["now"]).max())
                assert diff <= 1e-12 * scale, f"{name} differs from the kernel by {diff}"
            t = alternate([lambda form=form, Y=Y: form(X, R, code, Y)
                           for form, Y in zip(forms.values(), outputs.values())], args.repeat)
            print(f"{label:9} {mode:11} {t[0] * 1e3:7.3f} {t[1] * 1e3:8.3f} {t[2] * 1e3:7.3f} "
                  f"{t[2] / t[0]:7.2f} {t[2] / t[1]:12.2f}")


if __name__ == "__main__":
    main()
