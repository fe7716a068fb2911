"""Fused per-epoch arithmetic of the objective (SPEC §7), as Numba kernels.

Each epoch touches every bin a handful of times: radius from parameter, entropy and its
gradient, the MSE and its gradient, the history's statistics and the optimiser step.
These kernels do that in few passes over preallocated buffers: once the fields outgrow
the cache every pass streams them through memory, so everything after the blur VJP is one
sweep (:func:`descend`), and the blur kernels stay the main cost of an epoch. The
entropy's value (a logarithm per bin) is computed only for the epochs that are logged.
They take flat (1-D) views of the ``(K, T)`` fields, and the parameterisation as the
integer value of a :class:`~specblur.settings.Param` (``code``). The per-bin formulas are
those of ``kernels._terms``, which ``kernels.gpu_objective`` compiles for CUDA.
"""
import math

import numpy as np
from numba import prange

from .kernels import _terms
from .kernels._numba import jit, parallel_jit
from .settings import Param

RAW, RELU, EXP = _terms.RAW, _terms.RELU, _terms.EXP
#: ``descend``'s optimiser codes.
NO_STEP, SGD, ADAM = _terms.NO_STEP, _terms.SGD, _terms.ADAM

_bin = _terms.build(jit(inline="always"))
_finite = _bin.finite
_radius_of = _bin.radius_of
_entropy_grad = _bin.entropy_grad
_entropy_term = _bin.entropy_term
_g_mse = _bin.g_mse
_adam = _bin.adam
_moments = _bin.moments
_accumulate = _bin.accumulate
_log_radius = _bin.log_radius
_dudr = _bin.dudr
_tv_bin = _bin.tv_bin
_bin_log = _bin.log


# Logarithms summed as the logarithm of a running product, while both stay far from
# under- and overflow: one log per ~10-100 bins instead of one per bin.
_PRODUCT_ARG = 1e100
_PRODUCT_FLUSH = 1e200


@jit(inline="always")
def _add_log(h, prod, a):
    """``(h, prod)`` after adding ``log(a)`` to ``h + log(prod)``; ``a >= 0``, or NaN.

    A moderate ``a`` joins the product, which is folded into ``h`` once it leaves
    ``(1/_PRODUCT_FLUSH, _PRODUCT_FLUSH)``; any other ``a`` (0, tiny, huge, inf, NaN) goes
    straight to ``h`` through the guarded ``log`` (``log(0) = -inf``), as before.
    """
    if a > 1.0 / _PRODUCT_ARG and a < _PRODUCT_ARG:
        prod *= a
        if not (prod > 1.0 / _PRODUCT_FLUSH and prod < _PRODUCT_FLUSH):
            h += math.log(prod)
            prod = 1.0
        return h, prod
    return h + _bin_log(a), prod


def param_inverse(r0: np.ndarray | float, param: Param, r_max: float = np.inf) -> np.ndarray:
    """The parameter ``m`` whose radius is ``r0`` (SPEC §7: ``m = param⁻¹(r0)``).

    For ``sigmoid`` (SPEC §9.2) ``r0`` must lie in ``(1, r_max)``.
    """
    r0 = np.asarray(r0, dtype=np.float64)
    if param.radius_is_m:
        return r0.copy()
    if param is Param.SOFTPLUS:
        return r0 + np.log(-np.expm1(-r0))
    if param is Param.SIGMOID:
        q = (r0 - 1.0) / (r_max - 1.0)
        return np.log(q) - np.log1p(-q)
    return np.log(r0)


@parallel_jit
def radius(m, code, project, r_max, r, drdm):
    """Prepare ``m`` and the radius at the start of an epoch.

    ``relu`` with ``project``: ``m = max(m, 0)`` in place. ``softplus``, ``exp`` and
    ``sigmoid``: write ``r = param(m)`` and ``dr/dm``; softplus and exp are capped at
    ``r_max`` (``inf`` for no cap) with ``dr/dm = 0`` above it, and sigmoid is
    ``1 + (r_max - 1) σ(m)`` (SPEC §9.2). (``raw`` and ``relu`` use ``m`` itself as the
    radius.) Returns the number of bins where ``m`` or ``r`` is not finite.
    """
    bad = 0
    unit = code == RAW or code == RELU
    for i in prange(m.size):
        mi = m[i]
        if code == RELU and project and mi < 0.0:
            m[i] = 0.0
        if not unit:
            r[i], drdm[i] = _radius_of(mi, code, r_max)
        if not (_finite(mi) and _finite(r[i])):
            bad += 1
    return bad


@parallel_jit
def mse_and_grad(out, ref, scale, grad):
    """Return ``mean((out - ref)**2)`` and write ``scale * d(mean)/d(out)`` into ``grad``."""
    n = out.size
    k = 2.0 * scale / n
    total = 0.0
    for i in prange(n):
        d = out[i] - ref[i]
        grad[i] = k * d
        total += d * d
    return total / n


@parallel_jit
def total_variation(r, drdm, unit_drdm, delta, scale, u, g_tv):
    """``TV`` of ``u = log(max(r, 1))`` over a ``(K, T)`` field, and ``g_tv = scale dTV/dm``.

    ``TV = Σ ρ(u[k+1,t] - u[k,t]) + ρ(u[k,t+1] - u[k,t])`` with ``ρ(z) = sqrt(z² + δ²) - δ``
    (SPEC §9.3). ``du/dr`` is ``1/r`` above 1 and 0 at or below it (the left derivative at
    ``r = 1``); ``dr/dm`` is ``drdm``, or 1 when ``unit_drdm`` (raw and relu). ``u`` is
    scratch of the field's shape.
    """
    K, T = r.shape
    d2 = delta * delta
    for k in prange(K):
        for t in range(T):
            u[k, t] = _log_radius(r[k, t])
    total = 0.0
    for k in prange(K):
        row = 0.0
        for t in range(T):
            along_k, along_t, g = _tv_bin(u, k, t, K, T, delta, d2)
            row += along_k
            row += along_t
            g_tv[k, t] = scale * g * _dudr(r[k, t]) * (1.0 if unit_drdm else drdm[k, t])
        total += row
    return total


#: Bins per block of :func:`descend`. Each block's partial sums are added in block order,
#: so the statistics do not depend on the number of threads.
BLOCK = 4096
# a block's partial sums: the shifted sums of g_mse, g_ent and m and of their squares,
# counts of r <= 1 and m < 0, min and max of m, count of log(0) terms, sum of h, count
# of non-finite new m
_NPART = 13


@parallel_jit(error_model="numpy")  # x / 0 is inf or NaN (log(0) is counted), not an exception
def descend(m, r, dr, drdm, g_tv, code, eps, ent_scale, r_max, log, optimizer, lr, beta1,
            beta2, adam_eps, step, mom1, mom2, g_mse, g_ent, m_next, stats):
    """The rest of an epoch after the blur VJP, in one sweep over the fields.

    From ``m``, ``r``, ``dr = dL_mse/dr``, ``dr/dm`` (ignored for raw and relu) and ``g_tv``
    (empty without the smoothness term), per bin: ``g_mse = dr dr/dm`` and ``g_ent = -ent_scale
    dh/dm`` (SPEC §7's table), written into ``g_mse`` and ``g_ent`` only where those are not
    empty (snapshots); the history statistics of this state into ``stats`` (the names of
    ``schema.STATS``; population variances from sums taken around the first bin's values,
    accurate when a mean is large against the spread); ``sum h(m)`` only if ``log`` (a
    logarithm per bin); and the ``sgd`` or ``adam`` update (``optimizer``, ``step`` counting
    from 1; ``NO_STEP`` for none) of the state, written into ``m_next``, so that ``m`` is
    still the state if the caller rejects the epoch. Adam updates ``mom1``, ``mom2`` in place.

    Returns ``(zero, H, bad)``: the number of bins whose entropy term is ``log(0) = -inf``
    (possible only with ``eps = 0``), ``sum h(m)`` (0 unless ``log``) and the number of
    non-finite new values of ``m``.
    """
    n = m.size
    unit = code == RAW or code == RELU
    has_tv = g_tv.size > 0
    keep_mse = g_mse.size > 0
    keep_ent = g_ent.size > 0
    log_cap = math.log(r_max)
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    ca = _g_mse(dr[0], 1.0 if unit else drdm[0], unit)
    cb = _entropy_grad(m[0], r[0], drdm[0], code, eps, ent_scale, r_max)[0]
    cm = m[0]
    nblocks = (n + BLOCK - 1) // BLOCK
    parts = np.empty((nblocks, _NPART))
    for blk in prange(nblocks):
        s1a = s2a = s1b = s2b = s1m = s2m = h = 0.0
        prod = 1.0  # logarithms still to add to h (_add_log)
        ident = neg = zero = bad = 0.0  # counts as floats, exact below 2**53
        m_min = np.inf
        m_max = -np.inf
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            mi = m[i]
            ri = mi if unit else r[i]
            drdmi = 1.0 if unit else drdm[i]
            ga = _g_mse(dr[i], drdmi, unit)
            gb, a = _entropy_grad(mi, ri, drdmi, code, eps, ent_scale, r_max)
            if keep_mse:
                g_mse[i] = ga
            if keep_ent:
                g_ent[i] = gb
            zero += a == 0.0
            if log:  # h(m) = log(a), except with exp
                if code == EXP:
                    h += _entropy_term(mi, ri, code, eps, log_cap)
                else:
                    h, prod = _add_log(h, prod, a)
            s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_min, m_max = _accumulate(
                s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_min, m_max, ga, gb, mi, ri, ca,
                cb, cm)
            if optimizer != NO_STEP:
                g = ga + gb + (g_tv[i] if has_tv else 0.0)
                if optimizer == ADAM:
                    new, mom1[i], mom2[i] = _adam(mi, g, mom1[i], mom2[i], lr, beta1, beta2,
                                                  adam_eps, c1, c2)
                else:
                    new = mi - lr * g
                m_next[i] = new
                bad += not _finite(new)
        h += math.log(prod)
        block = (s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_min, m_max, zero, h, bad)
        for k in range(_NPART):
            parts[blk, k] = block[k]
    total = np.zeros(_NPART)
    m_lo = np.inf
    m_hi = -np.inf
    for blk in range(nblocks):
        for k in range(_NPART):
            total[k] += parts[blk, k]
        m_lo = min(m_lo, parts[blk, 8])
        m_hi = max(m_hi, parts[blk, 9])
    stats[0], stats[1] = _moments(ca, total[0], total[1], n)
    stats[2], stats[3] = _moments(cb, total[2], total[3], n)
    stats[4], var_m = _moments(cm, total[4], total[5], n)
    stats[5] = math.sqrt(var_m)
    stats[6] = m_lo
    stats[7] = m_hi
    stats[8] = total[6] / n
    stats[9] = total[7] / n
    return int(total[10]), total[11], int(total[12])
