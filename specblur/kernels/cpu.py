"""CPU blur kernels: ``numba.njit(parallel=True)`` over tiles of frames.

Frequency is axis -2 of a C-ordered ``(B, K, T)`` array, so one frame is a strided column.
The kernels work on tiles of neighbouring frames and walk along frequency with the frames
innermost, so every access to the arrays is contiguous. The backward kernel's tiles are
``TILE`` frames wide (``WIDE_TILE`` for long inputs); the forward kernel's are
``WIDE_TILE`` wide unless that leaves fewer than two tiles per thread, since it writes the
rows of ``Y`` faster in longer runs. Each tile uses O(K * tile width) float64 scratch.

Frame indices are cast to unsigned (``_col``): Numba wraps negative signed indices
around, and that select on ``t0 + j`` kept LLVM from vectorising the frame loops with plain
contiguous loads and stores (it used gathers and scalar stores instead).

Both kernels report non-finite inputs as they read them (the forward kernel the number
of frames with any, the backward kernel the number of values): the public API rejects
such input after the call, with no pass of its own.

The forward kernel works one row of sources at a time, in two loops over the tile's frames.
The first vectorises: it computes every source's impulses (``_scalar.impulses``), adds
those at fixed rows (row 1 and the row below the source) with contiguous stores, sums the
non-finite probe and the mass each frame gives away, and stages the four impulses at
data-dependent rows with their flat indices into the scratch (``_at``: unsigned, so no
wraparound selects; the fourth lies one row below the third). The second only scatters
those four, since indexed stores cannot vectorise. From 8b2cccc to b2cba0b one loop did
both, so the formulas ran scalar too (``benchmarks/bench_scatter.py`` times the earlier
forms beside it). It prefetches the rows of ``X`` and ``R`` it reads and of ``Y`` it
writes a few rows ahead (``_prefetch``), so that its cost per bin grows little once the
fields leave the cache.
"""
import numba
import numpy as np
from numba import prange

from . import _scalar
from ._numba import TILE, WIDE_FROM, WIDE_TILE, jit, parallel_jit
from ._prefetch import AHEAD, fetch_row

_bins = _scalar.build(jit(inline="always"))
impulses = _bins.impulses
bin_vjp = _bins.bin_vjp
mass_scale = _bins.mass_scale
TRUNCATE = _scalar.TRUNCATE


@jit(inline="always")
def _non_finite(v):
    """1 if ``v`` is NaN or infinite, else 0 (a select, so loops stay vectorisable)."""
    return 0 if abs(v) < np.inf else 1


@jit(inline="always")
def _col(t0, j):
    """Frame ``t0 + j`` as an unsigned index: no wraparound check, so loops vectorise."""
    return np.uint64(t0 + j)


@jit(inline="always")
def _at(row, tile, j):
    """Flat index of ``(row, j)`` in a row-major ``(rows, tile)`` scratch; ``row`` is a
    non-negative float. Unsigned, so the scattered stores need no wraparound checks."""
    return np.uint64(row) * np.uint64(tile) + np.uint64(j)


@jit(inline="always")
def _tiling(T):
    """Frames per tile of the backward kernel: ``TILE``, or ``WIDE_TILE`` for long inputs."""
    return WIDE_TILE if T >= WIDE_FROM else TILE


def forward_tile(frames: np.ndarray, threads: int) -> int:
    """Frames per tile of the forward kernel for items of ``frames`` frames each:
    ``WIDE_TILE``, halved down to ``TILE`` while there would be fewer than two tiles per
    thread. Wide tiles let the kernel write each row of ``Y`` in longer runs, which costs
    less per bin (the backward kernel does not gain from them). Every frame's result is the
    same for any tile width."""
    counts = frames.tolist()  # plain ints, as in item_frames
    tile = WIDE_TILE
    while tile > TILE and sum(-(-count // tile) for count in counts) < 2 * threads:
        tile //= 2
    return tile


def item_frames(frames: np.ndarray | None, nb: int, T: int) -> np.ndarray:
    """Each item's number of frames as the kernels take it: ``frames`` as int64 (checked
    against ``(nb,)`` and ``0..T``), or ``T`` for every item."""
    if frames is None:
        return np.full(nb, T, np.int64)
    frames = np.asarray(frames)
    if frames.dtype.kind not in "iu":
        raise ValueError(f"frames must be integers, got {frames.dtype}")
    frames = frames.astype(np.int64, copy=False)
    counts = frames.tolist()  # plain ints: cheaper than numpy reductions of a few items
    if frames.shape != (nb,) or (nb and not 0 <= min(counts) <= max(counts) <= T):
        raise ValueError(f"frames must give 0..{T} frames for each of {nb} items, "
                         f"got {counts}")
    return frames


@jit(inline="always")
def _first_tiles(frames, tile):
    """``first[b]``: the number of tiles of ``tile`` frames before item ``b``
    (``first[-1]``: all of them)."""
    first = np.zeros(len(frames) + 1, np.int64)
    for b in range(len(frames)):
        first[b + 1] = first[b] + (frames[b] + tile - 1) // tile
    return first


@jit(inline="always")
def _tile(job, first, frames, tile):
    """Batch item, first frame and width of tile number ``job`` (tiles counted over the
    items' own frames only, ``first`` from :func:`_first_tiles`)."""
    b = np.searchsorted(first, job, side="right") - 1
    t0 = (job - first[b]) * tile
    return b, t0, min(tile, frames[b] - t0)


def blur_forward(X: np.ndarray, R: np.ndarray, mode: int, Y: np.ndarray,
                 frames: np.ndarray | None = None) -> int:
    """Write ``blur(X, R)`` into ``Y``; all three are C-ordered ``(B, K, T)``.

    Returns the number of frames where ``X`` or ``R`` has a non-finite value (``Y`` is then
    meaningless there).
    In the modes that keep each frame's total, the blurred mass is rescaled to that total
    (``_scalar.mass_scale``). With ``frames`` (one count per item), item ``b`` is its first
    ``frames[b]`` frames: the frames after them are neither read nor written (the lockstep
    fit's zero padding).
    """
    nb, _, T = X.shape
    frames = item_frames(frames, nb, T)
    return _forward(X, R, mode, Y, forward_tile(frames, numba.get_num_threads()), frames)


@parallel_jit
def _forward(X, R, mode, Y, tile, frames):
    """:func:`blur_forward` on tiles of ``tile`` frames (an argument: Numba cannot cache
    code that asks for the number of threads itself)."""
    _, K, _ = X.shape
    first = _first_tiles(frames, tile)
    keeps_total = mode != TRUNCATE
    bad = 0
    for job in prange(first[-1]):
        b, t0, width = _tile(job, first, frames, tile)
        d2 = np.zeros((K + 2) * tile)  # flat (K + 2, tile): the scatter indexes it directly
        own = np.empty((K, tile))
        probe = np.zeros(tile)  # 0 * v is NaN exactly when v is NaN or infinite
        sent = np.zeros(tile)  # what the sources give away
        # one row of sources: its impulses at data-dependent rows, staged for the scatter
        at_lo = np.empty(tile, np.uint64)
        at_lo1 = np.empty(tile, np.uint64)
        at_hi = np.empty(tile, np.uint64)
        v_lo0 = np.empty(tile)
        v_lo1 = np.empty(tile)
        v_hi = np.empty(tile)
        v_hi1 = np.empty(tile)
        edge = np.zeros(tile)  # the impulses at row 1, added after the last source
        for p in range(K):
            fetch_row(X, b, p + AHEAD, t0, width, False)
            fetch_row(R, b, p + AHEAD, t0, width, False)
            mid = _at(p + 1.0, tile, 0)
            for j in range(width):  # vectorises: the formulas, and the stores at fixed rows
                r = np.float64(R[b, p, _col(t0, j)])
                x = np.float64(X[b, p, _col(t0, j)])
                lo0, lo1, hi, a0, a1, v_edge, v_mid, h0, h1, kept = impulses(p, K, r, x, mode)
                probe[j] += 0.0 * x + 0.0 * r
                sent[j] += x - kept
                at = _at(lo0, tile, j)
                at_lo[j] = at
                at_lo1[j] = at + np.uint64(tile if lo1 > lo0 else 0)
                at_hi[j] = _at(hi, tile, j)
                v_lo0[j] = a0
                v_lo1[j] = a1
                v_hi[j] = h0
                v_hi1[j] = h1
                edge[j] += v_edge
                d2[mid + np.uint64(j)] += v_mid
                own[p, j] = kept
            for j in range(width):  # the scatter, which cannot vectorise
                d2[at_lo[j]] += v_lo0[j]
                d2[at_lo1[j]] += v_lo1[j]
                at = at_hi[j]
                d2[at] += v_hi[j]
                d2[at + np.uint64(tile)] += v_hi1[j]
        for j in range(width):
            d2[tile + j] += edge[j]
            bad += _non_finite(probe[j])
        _integrate(d2, own, sent, keeps_total, tile, width, Y, b, t0)
    return bad


@jit(inline="always")
def _integrate(d2, own, sent, keeps_total, tile, width, Y, b, t0):
    """The forward kernel's last step on one tile: the second running sums of the
    impulses in flat ``(K + 2, tile)`` scratch ``d2``, plus what each source keeps
    (``own``), into ``Y[b, :, t0:t0 + width]``; with ``keeps_total``, each frame's blurred
    mass rescaled to ``sent`` (``_scalar.mass_scale``)."""
    K = own.shape[0]
    slope = np.zeros(tile)
    value = np.zeros(tile)
    if not keeps_total:
        for i in range(K):
            fetch_row(Y, b, i + AHEAD, t0, width, True)
            for j in range(width):
                slope[j] += d2[i * tile + j]
                value[j] += slope[j]
                Y[b, i, _col(t0, j)] = value[j] + own[i, j]
        return
    received = np.zeros(tile)
    spread = np.zeros(tile)
    for i in range(K):
        for j in range(width):
            slope[j] += d2[i * tile + j]
            value[j] += slope[j]
            d2[i * tile + j] = value[j]
            received[j] += value[j]
            spread[j] += abs(value[j])
    for j in range(width):
        value[j] = mass_scale(sent[j], received[j], spread[j])
    for i in range(K):
        fetch_row(Y, b, i + AHEAD, t0, width, True)
        for j in range(width):
            Y[b, i, _col(t0, j)] = own[i, j] + d2[i * tile + j] * value[j]


def blur_backward(X: np.ndarray, R: np.ndarray, G: np.ndarray, mode: int, dX: np.ndarray,
                  dR: np.ndarray, frames: np.ndarray | None = None) -> int:
    """Write the vector-Jacobian products of ``blur`` for cotangent ``G`` into ``dX``, ``dR``.

    An empty ``dX`` (size 0, as ``fit`` passes: it learns the radii only) is not written.
    Returns the number of non-finite values in ``X``, ``R`` and ``G``. ``frames`` as for
    :func:`blur_forward`.
    """
    nb, _, T = X.shape
    return _backward(X, R, G, mode, dX, dR, item_frames(frames, nb, T))


@parallel_jit
def _backward(X, R, G, mode, dX, dR, frames):
    keep_dx = dX.size > 0
    bad = 0
    _, K, T = X.shape
    tile = _tiling(T)
    first = _first_tiles(frames, tile)
    for job in prange(first[-1]):
        b, t0, width = _tile(job, first, frames, tile)
        P0 = np.zeros((K + 1, tile))
        P1 = np.zeros((K + 1, tile))
        for i in range(K):
            for j in range(width):
                g = np.float64(G[b, i, _col(t0, j)])
                P0[i + 1, j] = P0[i, j] + g
                P1[i + 1, j] = P1[i, j] + i * g
        tile_bad = 0
        for p in range(K):
            for j in range(width):
                r = np.float64(R[b, p, _col(t0, j)])
                x = np.float64(X[b, p, _col(t0, j)])
                g = np.float64(G[b, p, _col(t0, j)])
                tile_bad += _non_finite(x) + _non_finite(r) + _non_finite(g)
                gx, gr = bin_vjp(P0, P1, j, p, K, r, x, g, mode)
                if keep_dx:
                    dX[b, p, _col(t0, j)] = gx
                dR[b, p, _col(t0, j)] = gr
        bad += tile_bad
    return bad
