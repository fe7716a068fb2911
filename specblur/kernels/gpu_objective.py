"""The objective's kernels on the GPU: ``numba.cuda`` twins of ``specblur.objective``.

They work on the lockstep driver's ``(B, K, T_max)`` stacks, where run ``b`` owns slot
``b`` and its first ``T_b`` frames, and each does all the runs of an epoch in one launch:
one block per run (``TPB`` threads that stride over its bins, then a tree reduction in
shared memory, in float64 and a fixed order), so per-run statistics need no second pass.
The per-bin formulas are those of the CPU (``_terms``); only the loops and reductions are
the GPU's own. The sums behind the statistics are shifted by the run's first bin, as on
the CPU, so both agree to rounding (about 1e-12 relative for these sums).

Each run's settings sit in a float64 table (one row per slot, columns ``TABLE``), and its
state in another (``STATE``): whether it is alive (``ALIVE``), died at epoch ``e`` (then
``e``) or the slot is free (``FREE``), whether the last update was accepted, its MSE
``D`` and ``TV`` of the current epoch, and the values of the current epoch's history row
(``METRICS``). The kernels take the epoch ``n`` as a scalar and work out from the table
what the epoch does for each run (:func:`specblur.fitting._Descent.plan`), so nothing
goes from the host to the device during the epochs. A run dies at the first epoch where
its ``m`` or ``r`` (:func:`radius`), its MSE (:func:`mse`), its ``TV``
(:func:`total_variation`), an entropy term (``log(0)``) or its loss (:func:`descend`) is
not finite; from then on every kernel leaves its slot alone, so its ``m`` and ``r`` stay
those of that epoch. The host reads ``STATE`` when it needs a row, and learns of a death
there.

The update goes into ``m_next``; the next epoch's :func:`radius` makes it the state
(``m = m_next``) only if the update was accepted, and counts its non-finite values (the
CPU's ``descend`` counts them already, only to skip that check for ``raw`` and ``relu``;
either way the run dies at the next epoch). Importing this module needs a usable
CUDA device or the simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
import math

import numpy as np
from numba import config, float64

from . import _terms
from ._cuda import require_cuda
from ..schema import METRICS

cuda = require_cuda()

_bin = _terms.build(cuda.jit(device=True))
_finite = _bin.finite
_radius_of = _bin.radius_of
_entropy_grad = _bin.entropy_grad
_entropy_term = _bin.entropy_term
_g_mse = _bin.g_mse
_adam = _bin.adam
_accumulate = _bin.accumulate
_moments = _bin.moments
_log_radius = _bin.log_radius
_dudr = _bin.dudr
_tv_bin = _bin.tv_bin
RAW, RELU, SGD, ADAM = _terms.RAW, _terms.RELU, _terms.SGD, _terms.ADAM

#: True under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
SIMULATOR = bool(config.ENABLE_CUDASIM)
#: Threads per block of the per-run kernels (a power of two). The simulator runs every
#: thread as a Python thread, so it gets few.
TPB = 4 if SIMULATOR else 256
#: Most blocks of the element-wise kernels, which stride over their arrays.
MAX_BLOCKS = 2 if SIMULATOR else 4096

#: Columns of the settings table, one row per slot.
TABLE = ("code", "eps", "ent_scale", "r_max", "optimizer", "lr", "beta1", "beta2",
         "adam_eps", "c_mse", "c_ent", "h_scale", "norm", "tv", "tv_delta", "epochs",
         "log_every", "snapshot_every", "T", "x_total")
(P_CODE, P_EPS, P_ENT_SCALE, P_R_MAX, P_OPTIMIZER, P_LR, P_BETA1, P_BETA2, P_ADAM_EPS,
 P_C_MSE, P_C_ENT, P_H_SCALE, P_NORM, P_TV, P_TV_DELTA, P_EPOCHS, P_LOG_EVERY,
 P_SNAPSHOT_EVERY, P_T, P_X_TOTAL) = range(len(TABLE))

#: Columns of the state table: status, accepted update, this epoch's D and TV, then the
#: history row's values (``schema.METRICS``).
STATE = ("dead", "accept", "D", "TV", *METRICS)
S_DEAD, S_ACCEPT, S_D, S_TV = range(4)
S_ROW = 4
(R_LOSS, R_MSE, R_ENTROPY, R_STATS, R_ENERGY, R_TV, R_GTV) = (
    S_ROW + METRICS.index(name) for name in
    ("loss", "mse", "entropy", "gmse_mean", "energy_ratio", "tv", "gtv_mean"))
#: ``STATE["dead"]`` of a live run and of a slot that no run holds.
ALIVE, FREE = -1.0, -2.0

# the partial sums of descend (shifted sums and squares of g_mse, g_ent, m and g_tv,
# counts of r <= 1, m < 0 and log(0) terms, min and max of m, sum of h and of Y)
(_SA, _QA, _SB, _QB, _SM, _QM, _IDENT, _NEG, _MIN, _MAX, _ZERO, _H, _YSUM, _STV, _QTV) = \
    range(15)
_NPART = 15


def table_row(**values) -> np.ndarray:
    """One run's row of the settings table, from a value for every name of ``TABLE``."""
    return np.array([float(values[name]) for name in TABLE])


def new_state(B: int) -> np.ndarray:
    """A host state table of ``B`` free slots."""
    state = np.zeros((B, len(STATE)))
    state[:, S_DEAD] = FREE
    return state


# --- helpers -------------------------------------------------------------------------

@cuda.jit(device=True)
def _plan(n, table, b):
    """``(last, update, log, snapshot)`` of epoch ``n`` for slot ``b`` (``_Descent.plan``)."""
    epochs = int(table[b, P_EPOCHS])
    last = n == epochs
    log = n % int(table[b, P_LOG_EVERY]) == 0 or last
    snapshot = n > 0 and (n % int(table[b, P_SNAPSHOT_EVERY]) == 0 or last)
    return last, not last, log, snapshot


@cuda.jit(device=True)
def _reduce(buf, nparts, i_min, i_max):
    """Tree-reduce ``buf[p, :TPB]`` into ``buf[p, 0]`` for ``p < nparts``, in a fixed order.

    Part ``i_min`` takes the minimum, ``i_max`` the maximum, the others the sum. Every
    thread of the block must call it.
    """
    tid = cuda.threadIdx.x
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            for p in range(nparts):
                a = buf[p, tid]
                b = buf[p, tid + step]
                if p == i_min:
                    buf[p, tid] = min(a, b)
                elif p == i_max:
                    buf[p, tid] = max(a, b)
                else:
                    buf[p, tid] = a + b
        cuda.syncthreads()
        step //= 2


def _blocks(size):
    """Blocks of ``TPB`` threads for an element-wise kernel over ``size`` values."""
    return max(1, min(MAX_BLOCKS, (size + TPB - 1) // TPB))


# --- radius --------------------------------------------------------------------------

@cuda.jit
def _radius_kernel(n, M, M_next, R, DRDM, table, state):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if state[b, S_DEAD] != ALIVE:
        return
    code = int(table[b, P_CODE])
    T = int(table[b, P_T])
    size = M.shape[1] * T
    r_max = table[b, P_R_MAX]
    accept = state[b, S_ACCEPT] != 0.0
    project = code == RELU and not _plan(n, table, b)[0]  # no projection at the last epoch
    unit = code == RAW or code == RELU
    bad = 0.0
    for i in range(tid, size, TPB):
        k = i // T
        t = i - k * T
        mi = M_next[b, k, t] if accept else M[b, k, t]
        mp = 0.0 if project and mi < 0.0 else mi
        if accept or project:
            M[b, k, t] = mp
        if unit:
            r = mp
        else:
            r, drdm = _radius_of(mi, code, r_max)
            DRDM[b, k, t] = drdm
        R[b, k, t] = r
        if not (_finite(mi) and _finite(r)):
            bad += 1.0
    buf = cuda.shared.array((1, TPB), float64)
    buf[0, tid] = bad
    _reduce(buf, 1, -1, -1)
    if tid == 0:
        state[b, S_ACCEPT] = 0.0
        if buf[0, 0] > 0.0:
            state[b, S_DEAD] = n


def radius(n, M, M_next, R, DRDM, table, state, nslots):
    """Start epoch ``n`` of every live run in slots ``0 .. nslots - 1``.

    Makes an accepted update the state (``M = M_next``), projects ``relu`` runs onto
    ``m >= 0`` (not at their last epoch), writes ``R`` and, for softplus, exp and sigmoid,
    ``DRDM`` (``objective.radius``); a run whose ``m`` or ``r`` is not finite dies at ``n``.
    """
    if nslots:
        _radius_kernel[nslots, TPB](n, M, M_next, R, DRDM, table, state)


# --- MSE -----------------------------------------------------------------------------

@cuda.jit
def _mse_kernel(n, out, ref, g_out, slots, table, state):
    g = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    b = slots[g]
    D = out.shape[1]
    T = out.shape[2]
    size = D * T
    if state[b, S_DEAD] != ALIVE:  # a dead run pulls back nothing
        for i in range(tid, size, TPB):
            g_out[g, i // T, i % T] = 0.0
        return
    norm = table[b, P_NORM]
    k2 = 2.0 * (table[b, P_C_MSE] * norm) / size
    total = 0.0
    for i in range(tid, size, TPB):
        d = i // T
        t = i - d * T
        diff = float64(out[g, d, t]) - ref[g, d, t]
        g_out[g, d, t] = k2 * diff
        total += diff * diff
    buf = cuda.shared.array((1, TPB), float64)
    buf[0, tid] = total
    _reduce(buf, 1, -1, -1)
    if tid == 0:
        value = norm * (buf[0, 0] / size)
        state[b, S_D] = value
        if not _finite(value):
            state[b, S_DEAD] = n


def mse(n, out, ref, g_out, slots, table, state):
    """The MSE ``D`` of each item of a model call and the cotangent ``g_out``.

    ``out``, ``ref`` and ``g_out`` are ``(G, D, T)``; item ``g`` belongs to the run in
    slot ``slots[g]``. Writes ``D = norm mean((out - ref)²)`` into the run's state and
    ``g_out = c_mse norm dmean/dout`` (``objective.mse_and_grad``), 0 for a dead run; a
    run whose ``D`` is not finite dies at ``n``.
    """
    if out.shape[0]:
        _mse_kernel[out.shape[0], TPB](n, out, ref, g_out, slots, table, state)


# --- total variation -----------------------------------------------------------------

@cuda.jit
def _log_radius_kernel(R, U, table, state):
    b = cuda.blockIdx.x
    if state[b, S_DEAD] != ALIVE or table[b, P_TV] == 0.0:
        return
    T = int(table[b, P_T])
    for i in range(cuda.threadIdx.x, R.shape[1] * T, TPB):
        k = i // T
        t = i - k * T
        U[b, k, t] = _log_radius(R[b, k, t])


@cuda.jit
def _tv_kernel(n, U, R, DRDM, G_tv, table, state):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    scale = table[b, P_TV]
    if state[b, S_DEAD] != ALIVE or scale == 0.0:
        return
    code = int(table[b, P_CODE])
    unit = code == RAW or code == RELU
    K = R.shape[1]
    T = int(table[b, P_T])
    delta = table[b, P_TV_DELTA]
    d2 = delta * delta
    u = U[b]
    total = 0.0
    for i in range(tid, K * T, TPB):
        k = i // T
        t = i - k * T
        along_k, along_t, g = _tv_bin(u, k, t, K, T, delta, d2)
        total += along_k
        total += along_t
        G_tv[b, k, t] = scale * g * _dudr(R[b, k, t]) * (1.0 if unit else DRDM[b, k, t])
    buf = cuda.shared.array((1, TPB), float64)
    buf[0, tid] = total
    _reduce(buf, 1, -1, -1)
    if tid == 0:
        state[b, S_TV] = buf[0, 0]
        if not _finite(buf[0, 0]):
            state[b, S_DEAD] = n


def total_variation(n, R, DRDM, U, G_tv, table, state, nslots):
    """``TV`` of each live run with ``tv > 0`` into its state, and ``G_tv = tv dTV/dm``.

    As ``objective.total_variation``; ``U`` is scratch of the stacks' shape. A run whose
    ``TV`` is not finite dies at ``n``.
    """
    if nslots:
        _log_radius_kernel[nslots, TPB](R, U, table, state)
        _tv_kernel[nslots, TPB](n, U, R, DRDM, G_tv, table, state)


# --- the rest of the epoch -----------------------------------------------------------

@cuda.jit
def _descend_kernel(n, M, R, DRDM, DR, G_tv, mom1, mom2, Y, G_mse, G_ent, M_next, table,
                    state):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if state[b, S_DEAD] != ALIVE:
        return
    last, update, log, snapshot = _plan(n, table, b)
    code = int(table[b, P_CODE])
    unit = code == RAW or code == RELU
    T = int(table[b, P_T])
    size = M.shape[1] * T
    eps = table[b, P_EPS]
    ent_scale = table[b, P_ENT_SCALE]
    r_max = table[b, P_R_MAX]
    log_cap = math.log(r_max)
    tv = table[b, P_TV]
    has_tv = tv > 0.0
    adam = table[b, P_OPTIMIZER] == ADAM
    lr = table[b, P_LR]
    beta1 = table[b, P_BETA1]
    beta2 = table[b, P_BETA2]
    adam_eps = table[b, P_ADAM_EPS]
    c1 = 1.0 - beta1 ** (n + 1)
    c2 = 1.0 - beta2 ** (n + 1)
    # the shifts of the sums: the run's first bin, as on the CPU
    m0 = M[b, 0, 0]
    drdm0 = 1.0 if unit else DRDM[b, 0, 0]
    ca = _g_mse(DR[b, 0, 0], drdm0, unit)
    cb = _entropy_grad(m0, m0 if unit else R[b, 0, 0], drdm0, code, eps, ent_scale, r_max)[0]
    ctv = G_tv[b, 0, 0] if has_tv else 0.0
    s1a = s2a = s1b = s2b = s1m = s2m = s1t = s2t = h = ysum = 0.0
    ident = neg = zero = 0.0
    m_min = math.inf
    m_max = -math.inf
    for i in range(tid, size, TPB):
        k = i // T
        t = i - k * T
        mi = M[b, k, t]
        ri = mi if unit else R[b, k, t]
        drdmi = 1.0 if unit else DRDM[b, k, t]
        ga = _g_mse(DR[b, k, t], drdmi, unit)
        gb, a = _entropy_grad(mi, ri, drdmi, code, eps, ent_scale, r_max)
        if snapshot:
            if not unit:
                G_mse[b, k, t] = ga
            G_ent[b, k, t] = gb
        zero += a == 0.0
        if log:
            h += _entropy_term(mi, a, code, log_cap)
            ysum += Y[b, k, t]
        s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_min, m_max = _accumulate(
            s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_min, m_max, ga, gb, mi, ri, ca, cb, m0)
        gtv = G_tv[b, k, t] if has_tv else 0.0
        if has_tv and log:
            dt = gtv - ctv
            s1t += dt
            s2t += dt * dt
        if update:
            g = ga + gb + gtv
            if adam:
                new, mom1[b, k, t], mom2[b, k, t] = _adam(
                    mi, g, mom1[b, k, t], mom2[b, k, t], lr, beta1, beta2, adam_eps, c1, c2)
            else:
                new = mi - lr * g
            M_next[b, k, t] = new
    buf = cuda.shared.array((_NPART, TPB), float64)
    buf[_SA, tid] = s1a
    buf[_QA, tid] = s2a
    buf[_SB, tid] = s1b
    buf[_QB, tid] = s2b
    buf[_SM, tid] = s1m
    buf[_QM, tid] = s2m
    buf[_IDENT, tid] = ident
    buf[_NEG, tid] = neg
    buf[_MIN, tid] = m_min
    buf[_MAX, tid] = m_max
    buf[_ZERO, tid] = zero
    buf[_H, tid] = h
    buf[_YSUM, tid] = ysum
    buf[_STV, tid] = s1t
    buf[_QTV, tid] = s2t
    _reduce(buf, _NPART, _MIN, _MAX)
    if tid != 0:
        return
    state[b, S_ACCEPT] = 0.0
    if buf[_ZERO, 0] > 0.0:  # some h(m) = log(0)
        state[b, S_DEAD] = n
        return
    D = state[b, S_D]
    TV = state[b, S_TV]
    H = math.nan
    loss = math.nan
    if log:
        H = table[b, P_H_SCALE] * buf[_H, 0]
        loss = table[b, P_C_MSE] * D - table[b, P_C_ENT] * H + tv * TV
        if not _finite(loss):
            state[b, S_DEAD] = n
            return
    state[b, R_LOSS] = loss
    state[b, R_MSE] = D
    state[b, R_ENTROPY] = H
    state[b, R_STATS], state[b, R_STATS + 1] = _moments(ca, buf[_SA, 0], buf[_QA, 0], size)
    state[b, R_STATS + 2], state[b, R_STATS + 3] = _moments(cb, buf[_SB, 0], buf[_QB, 0], size)
    mean_m, var_m = _moments(m0, buf[_SM, 0], buf[_QM, 0], size)
    state[b, R_STATS + 4] = mean_m
    state[b, R_STATS + 5] = math.sqrt(var_m)
    state[b, R_STATS + 6] = buf[_MIN, 0]
    state[b, R_STATS + 7] = buf[_MAX, 0]
    state[b, R_STATS + 8] = buf[_IDENT, 0] / size
    state[b, R_STATS + 9] = buf[_NEG, 0] / size
    x_total = table[b, P_X_TOTAL]
    state[b, R_ENERGY] = buf[_YSUM, 0] / x_total if x_total != 0.0 else math.nan
    state[b, R_TV] = TV
    if has_tv:
        state[b, R_GTV], state[b, R_GTV + 1] = _moments(ctv, buf[_STV, 0], buf[_QTV, 0], size)
    else:
        state[b, R_GTV] = 0.0
        state[b, R_GTV + 1] = 0.0
    if update:
        state[b, S_ACCEPT] = 1.0


def descend(n, M, R, DRDM, DR, G_tv, mom1, mom2, Y, G_mse, G_ent, M_next, table, state,
            nslots):
    """The rest of epoch ``n`` after the blur VJP ``DR = dL_mse/dr``, for every live run.

    As ``objective.descend``, per run: ``g_mse`` and ``g_ent`` into ``G_mse`` (not for raw
    and relu, whose ``g_mse`` is ``DR``) and ``G_ent`` at snapshot epochs; the history row
    into the state at logged epochs (the loss from the state's ``D`` and ``TV``, the
    entropy, ``schema.STATS``, the energy ratio from ``Y`` and the mean and variance of
    ``G_tv``); the update into ``M_next`` and the Adam moments, and "accepted" into the
    state unless it is the run's last epoch. A run with a ``log(0)`` entropy term, or a
    logged loss that is not finite, dies at ``n``. ``mom1`` and ``mom2`` may be dummies if
    no run uses Adam, ``G_tv`` if none has a smoothness term.
    """
    if nslots:
        _descend_kernel[nslots, TPB](n, M, R, DRDM, DR, G_tv, mom1, mom2, Y, G_mse, G_ent,
                                     M_next, table, state)


# --- moving data between the stacks and a model's arrays ----------------------------

@cuda.jit(device=True)
def _position(i, K, T):
    """Item, bin and frame of flat index ``i`` of a ``(n, K, T)`` array."""
    plane = K * T
    g = i // plane
    k = (i - g * plane) // T
    return g, k, i - g * plane - k * T


@cuda.jit
def _gather_kernel(Y, slots, lengths, out):
    G, K, T = out.shape
    for i in range(cuda.grid(1), G * K * T, cuda.gridsize(1)):
        g, k, t = _position(i, K, T)
        out[g, k, t] = Y[slots[g], k, t] if t < lengths[g] else 0.0


def gather(Y, slots, lengths, out):
    """``out[g, :, :lengths[g]] = Y[slots[g], :, :lengths[g]]``, and zeros after it."""
    if out.size:
        _gather_kernel[_blocks(out.size), TPB](Y, slots, lengths, out)


@cuda.jit
def _scatter_kernel(src, slots, lengths, G):
    n, K, T = src.shape
    for i in range(cuda.grid(1), n * K * T, cuda.gridsize(1)):
        g, k, t = _position(i, K, T)
        if t < lengths[g]:
            G[slots[g], k, t] = float64(src[g, k, t])


def scatter(src, slots, lengths, G):
    """``G[slots[g], :, :lengths[g]] = src[g, :, :lengths[g]]`` (``src`` of any float dtype)."""
    if src.size:
        _scatter_kernel[_blocks(src.size), TPB](src, slots, lengths, G)


@cuda.jit
def _copy_kernel(src, out):
    D, T = src.shape
    for i in range(cuda.grid(1), D * T, cuda.gridsize(1)):
        d = i // T
        t = i - d * T
        out[0, d, t] = src[d, t]


def stacked(a):
    """A ``(D, T)`` device array as a ``(1, D, T)`` one (a view if it is contiguous)."""
    if a.ndim == 3:
        return a
    if a.ndim != 2:
        raise ValueError(f"expected a (D, T) or (G, D, T) array, got shape {a.shape}")
    if a.is_c_contiguous():
        return a.reshape(1, *a.shape)
    out = cuda.device_array((1,) + tuple(a.shape), dtype=a.dtype)
    if a.size:
        _copy_kernel[_blocks(a.size), TPB](a, out)
    return out
