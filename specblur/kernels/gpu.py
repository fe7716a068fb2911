"""GPU blur kernels: the ``numba.cuda`` twins of ``cpu.py``.

One thread owns one frame ``(b, t)`` and walks along frequency; neighbouring threads take
neighbouring frames, so global memory accesses coalesce. Scratch is float64, ``K + 2``
values per frame and buffer. With ``frames`` (one count per item, as on the CPU) the
threads of an item's frames beyond its count return at once: the lockstep's zero padding
is neither read nor written. Importing this module needs a usable CUDA device or the
simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
import numpy as np

from . import _scalar
from ._cuda import require_cuda
from ._numba import THREADS

cuda = require_cuda()

_bins = _scalar.build(cuda.jit(device=True))
scatter_source = _bins.scatter_source
kept = _bins.kept
bin_vjp = _bins.bin_vjp
mass_scale = _bins.mass_scale
TRUNCATE = _scalar.TRUNCATE


@cuda.jit(device=True)
def _frame(T):
    """The frame ``(b, t)`` this thread owns."""
    frame = cuda.grid(1)
    return frame // T, frame % T


@cuda.jit(device=True)
def _outside(b, t, nb, T, frames):
    """True if frame ``(b, t)`` is not one to compute: past the last item, or past item
    ``b``'s own ``frames[b]`` (an empty ``frames`` means every item has ``T``)."""
    return b >= nb or (frames.shape[0] > 0 and t >= frames[b])


@cuda.jit
def _forward_kernel(X, R, mode, d2, Y, frames):
    nb, K, T = X.shape
    b, t = _frame(T)
    if _outside(b, t, nb, T, frames):
        return
    buf = d2[b]
    for i in range(K + 2):
        buf[i, t] = 0.0
    sent = 0.0
    for p in range(K):
        x = np.float64(X[b, p, t])
        sent += x - scatter_source(buf, t, p, K, np.float64(R[b, p, t]), x, mode)
    slope = 0.0
    value = 0.0
    received = 0.0
    spread = 0.0
    for i in range(K):
        slope += buf[i, t]
        value += slope
        buf[i, t] = value
        received += value
        spread += abs(value)
    scale = mass_scale(sent, received, spread) if mode != TRUNCATE else 1.0
    for i in range(K):
        own = kept(i, K, np.float64(R[b, i, t]), np.float64(X[b, i, t]), mode)
        Y[b, i, t] = own + buf[i, t] * scale


@cuda.jit
def _backward_kernel(X, R, G, mode, P0, P1, dX, dR, frames):
    nb, K, T = X.shape
    b, t = _frame(T)
    if _outside(b, t, nb, T, frames):
        return
    keep_dx = dX.shape[0] > 0
    p0 = P0[b]
    p1 = P1[b]
    s0 = 0.0
    s1 = 0.0
    p0[0, t] = 0.0
    p1[0, t] = 0.0
    for i in range(K):
        g = np.float64(G[b, i, t])
        s0 += g
        s1 += i * g
        p0[i + 1, t] = s0
        p1[i + 1, t] = s1
    for p in range(K):
        gx, gr = bin_vjp(
            p0, p1, t, p, K, np.float64(R[b, p, t]), np.float64(X[b, p, t]),
            np.float64(G[b, p, t]), mode,
        )
        if keep_dx:
            dX[b, p, t] = gx
        dR[b, p, t] = gr


def _launch(nb, T):
    """``(blocks, threads)`` for one thread per frame: at most ``THREADS`` per block, fewer
    for small inputs (the simulator runs every thread, idle or not, as a Python thread)."""
    frames = nb * T
    threads = max(1, min(THREADS, frames))
    return max(1, (frames + threads - 1) // threads), threads


def _all_frames(frames, nb):
    """``frames`` as the kernels take it: the given device array (checked: one count per
    item), or an empty one, for every item's frames (made per call, in the current
    context)."""
    if frames is None:
        return cuda.device_array(0, dtype=np.int64)
    if tuple(frames.shape) != (nb,):
        raise ValueError(f"frames must give one count for each of {nb} items, "
                         f"got shape {tuple(frames.shape)}")
    return frames


def blur_forward(X, R, mode: int, Y, d2=None, frames=None) -> None:
    """Write ``blur(X, R)`` into ``Y``; device arrays of shape ``(B, K, T)``.

    ``d2`` is float64 scratch of shape ``(B, K + 2, T)``, allocated here if None. With
    ``frames`` (an int64 device array, one count per item), item ``b`` is its first
    ``frames[b]`` frames; ``Y`` is not written after them.
    """
    nb, K, T = X.shape
    if X.size == 0:
        return
    if d2 is None:
        d2 = cuda.device_array((nb, K + 2, T), dtype=np.float64)
    blocks, threads = _launch(nb, T)
    _forward_kernel[blocks, threads](X, R, mode, d2, Y, _all_frames(frames, nb))


def blur_backward(X, R, G, mode: int, dX, dR, P0=None, P1=None, frames=None) -> None:
    """Write the vector-Jacobian products of ``blur`` into ``dX`` and ``dR`` (device arrays).

    An empty ``dX`` (size 0, as the GPU lockstep passes: it learns the radii only) is not
    written, which saves a store per bin.

    ``P0`` and ``P1`` are float64 scratch of shape ``(B, K + 1, T)``, allocated here if None.
    ``frames`` as for :func:`blur_forward`: ``dX`` and ``dR`` are not written after them.
    """
    nb, K, T = X.shape
    if X.size == 0:
        return
    if P0 is None:
        P0 = cuda.device_array((nb, K + 1, T), dtype=np.float64)
    if P1 is None:
        P1 = cuda.device_array((nb, K + 1, T), dtype=np.float64)
    blocks, threads = _launch(nb, T)
    _backward_kernel[blocks, threads](X, R, G, mode, P0, P1, dX, dR, _all_frames(frames, nb))


@cuda.jit
def _count_nonfinite(a, out):
    i = cuda.grid(1)
    if i < a.size:
        v = a[i]
        if not (v == v and abs(v) < np.inf):
            cuda.atomic.add(out, 0, 1)


def all_finite(a) -> bool:
    """True if the flat device array ``a`` holds no NaN or infinity."""
    out = cuda.to_device(np.zeros(1, dtype=np.int64))
    if a.size:
        _count_nonfinite[max(1, (a.size + 255) // 256), 256](a, out)
    return out.copy_to_host()[0] == 0
