"""CPU blur kernels: ``numba.njit(parallel=True)`` over tiles of frames.

Frequency is axis -2 of a C-ordered ``(B, K, T)`` array, so one frame is a strided column.
The kernels work on tiles of ``TILE`` neighbouring frames and walk along frequency with
the frames innermost, so every access to the arrays is contiguous. Per source row, a
vectorisable loop computes the impulses of all the tile's frames; a second loop scatters
the few that land at data-dependent rows. Each tile uses O(K * TILE) float64 scratch.
"""
import numpy as np
from numba import njit, prange

from . import _scalar

TILE = 32
FASTMATH = {"nsz", "arcp", "contract", "afn"}

_bins = _scalar.build(njit(inline="always", fastmath=FASTMATH, cache=True))
impulses = _bins.impulses
kept = _bins.kept
bin_vjp = _bins.bin_vjp


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def blur_forward(X, R, conserve, Y):
    """Write ``blur(X, R)`` into ``Y``; all three are C-ordered ``(B, K, T)``."""
    nb, K, T = X.shape
    ntiles = (T + TILE - 1) // TILE
    for job in prange(nb * ntiles):
        b = job // ntiles
        t0 = (job - b * ntiles) * TILE
        width = min(TILE, T - t0)
        d2 = np.zeros((K + 2, TILE))  # rows K, K + 1 catch impulses beyond the edge
        own = np.zeros((K, TILE))
        rows = np.empty((3, TILE))
        coef = np.empty((4, TILE))
        for p in range(K):
            for j in range(width):
                x = np.float64(X[b, p, t0 + j])
                r = np.float64(R[b, p, t0 + j])
                q0, c0, q1, c1, c_bin1, s, q3, c3, c4 = impulses(p, K, r, x)
                rows[0, j] = q0
                rows[1, j] = q1
                rows[2, j] = q3
                coef[0, j] = c0
                coef[1, j] = c1
                coef[2, j] = c3
                coef[3, j] = c4
                d2[1, j] += c_bin1
                d2[p + 1, j] -= 2.0 * s
                own[p, j] = kept(p, K, r, x, conserve)
            for j in range(width):
                i3 = int(rows[2, j])
                d2[int(rows[0, j]), j] += coef[0, j]
                d2[int(rows[1, j]), j] += coef[1, j]
                d2[i3, j] += coef[2, j]
                d2[i3 + 1, j] += coef[3, j]
        slope = np.zeros(TILE)
        value = np.zeros(TILE)
        for i in range(K):
            for j in range(width):
                slope[j] += d2[i, j]
                value[j] += slope[j]
                Y[b, i, t0 + j] = value[j] + own[i, j]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def blur_backward(X, R, G, conserve, dX, dR):
    """Write the vector-Jacobian products of ``blur`` for cotangent ``G`` into ``dX``, ``dR``."""
    nb, K, T = X.shape
    ntiles = (T + TILE - 1) // TILE
    for job in prange(nb * ntiles):
        b = job // ntiles
        t0 = (job - b * ntiles) * TILE
        width = min(TILE, T - t0)
        P0 = np.zeros((K + 1, TILE))
        P1 = np.zeros((K + 1, TILE))
        for i in range(K):
            for j in range(width):
                g = np.float64(G[b, i, t0 + j])
                P0[i + 1, j] = P0[i, j] + g
                P1[i + 1, j] = P1[i, j] + i * g
        for p in range(K):
            for j in range(width):
                gx, gr = bin_vjp(
                    P0, P1, j, p, K, np.float64(R[b, p, t0 + j]), np.float64(X[b, p, t0 + j]),
                    np.float64(G[b, p, t0 + j]), conserve,
                )
                dX[b, p, t0 + j] = gx
                dR[b, p, t0 + j] = gr
