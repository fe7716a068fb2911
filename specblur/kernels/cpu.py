"""CPU blur kernels: ``numba.njit(parallel=True)`` over tiles of frames.

Frequency is axis -2 of a C-ordered ``(B, K, T)`` array, so one frame is a strided column.
The kernels work on tiles of ``TILE`` neighbouring frames and walk along frequency with
the frames innermost, so every access to the arrays is contiguous. Each tile uses
O(K * TILE) float64 scratch.
"""
import numpy as np
from numba import njit, prange

from . import _scalar

TILE = 32
FASTMATH = {"nsz", "arcp", "contract", "afn"}

_bins = _scalar.build(njit(inline="always", fastmath=FASTMATH, cache=True))
scatter_source = _bins.scatter_source
bin_vjp = _bins.bin_vjp


@njit(inline="always", cache=True)
def _tile(job, ntiles, T):
    """Batch item, first frame and width of tile number ``job``."""
    b = job // ntiles
    t0 = (job - b * ntiles) * TILE
    return b, t0, min(TILE, T - t0)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def blur_forward(X, R, mode, Y):
    """Write ``blur(X, R)`` into ``Y``; all three are C-ordered ``(B, K, T)``.

    ``mode`` is the integer code of the boundary mode (``MODE_CODES``).
    """
    nb, K, T = X.shape
    ntiles = (T + TILE - 1) // TILE
    for job in prange(nb * ntiles):
        b, t0, width = _tile(job, ntiles, T)
        d2 = np.zeros((K + 2, TILE))
        own = np.empty((K, TILE))
        for p in range(K):
            for j in range(width):
                own[p, j] = scatter_source(d2, j, p, K, np.float64(R[b, p, t0 + j]),
                                           np.float64(X[b, p, t0 + j]), mode)
        slope = np.zeros(TILE)
        value = np.zeros(TILE)
        for i in range(K):
            for j in range(width):
                slope[j] += d2[i, j]
                value[j] += slope[j]
                Y[b, i, t0 + j] = value[j] + own[i, j]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def blur_backward(X, R, G, mode, dX, dR):
    """Write the vector-Jacobian products of ``blur`` for cotangent ``G`` into ``dX``, ``dR``."""
    nb, K, T = X.shape
    ntiles = (T + TILE - 1) // TILE
    for job in prange(nb * ntiles):
        b, t0, width = _tile(job, ntiles, T)
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
                    np.float64(G[b, p, t0 + j]), mode,
                )
                dX[b, p, t0 + j] = gx
                dR[b, p, t0 + j] = gr
