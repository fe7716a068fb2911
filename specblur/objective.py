"""Fused per-epoch arithmetic of the objective (SPEC §7), as Numba kernels.

Each epoch touches every bin a handful of times: radius from parameter, entropy and its
gradient, the MSE and its gradient, the history's statistics and the optimiser step.
These kernels do that in few passes over preallocated buffers, so the blur kernels stay
the main cost of an epoch. They take flat (1-D) views of the ``(K, T)`` fields.
"""
import math

import numpy as np
from numba import njit, prange

from .kernels.cpu import FASTMATH

PARAM_CODES = {"raw": 0, "relu": 1, "softplus": 2, "exp": 3}
STATS = ("gmse_mean", "gmse_var", "gent_mean", "gent_var", "m_mean", "m_std", "m_min", "m_max",
         "frac_identity", "frac_negative")

_jit = dict(fastmath=FASTMATH, cache=True)


@njit(**_jit)
def _softplus(m):
    return max(m, 0.0) + math.log1p(math.exp(-abs(m)))


def param_inverse(r0, param):
    """The parameter ``m`` whose radius is ``r0`` (SPEC §7: ``m = param⁻¹(r0)``)."""
    r0 = np.asarray(r0, dtype=np.float64)
    if param in ("raw", "relu"):
        return r0.copy()
    if param == "softplus":
        return r0 + np.log(-np.expm1(-r0))
    return np.log(r0)


@njit(parallel=True, **_jit)
def radius_and_entropy(m, code, eps, r, drdm, dhdm):
    """Write ``r = param(m)``, ``dr/dm`` and ``dh/dm``; return ``sum h(m)``.

    Returns NaN if any ``m`` or ``r`` is not finite, which ends the run as diverged.
    """
    total = 0.0
    bad = 0
    for i in prange(m.size):
        mi = m[i]
        if code <= 1:
            ri = mi
            di = 1.0
            a = abs(mi)
            hi = math.log(a + eps)
            gi = (1.0 if mi > 0 else (-1.0 if mi < 0 else 0.0)) / (a + eps)
        elif code == 2:
            ri = _softplus(mi)
            di = 1.0 / (1.0 + math.exp(-mi))
            hi = math.log(ri + eps)
            gi = di / (ri + eps)
        else:
            ri = math.exp(mi)
            di = ri
            hi = mi
            gi = 1.0
        if not (abs(mi) < np.inf and abs(ri) < np.inf):
            bad += 1
        r[i] = ri
        drdm[i] = di
        dhdm[i] = gi
        total += hi
    return np.nan if bad else total


@njit(parallel=True, **_jit)
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


@njit(parallel=True, **_jit)
def split_gradient(dr, drdm, dhdm, ent_scale, g_mse, g_ent):
    """Write ``g_mse = dr * dr/dm`` and ``g_ent = -ent_scale * dh/dm``; return their sums."""
    s_mse = 0.0
    s_ent = 0.0
    for i in prange(dr.size):
        a = dr[i] * drdm[i]
        b = -ent_scale * dhdm[i]
        g_mse[i] = a
        g_ent[i] = b
        s_mse += a
        s_ent += b
    return s_mse, s_ent


@njit(parallel=True, **_jit)
def statistics(m, r, g_mse, g_ent, mean_mse, mean_ent, out):
    """Fill ``out`` with the history statistics named in ``STATS`` (population variances)."""
    n = m.size
    m_sum = 0.0
    for i in prange(n):
        m_sum += m[i]
    m_mean = m_sum / n
    va = 0.0
    vb = 0.0
    vm = 0.0
    ident = 0
    neg = 0
    m_min = np.inf
    m_max = -np.inf
    for i in prange(n):
        da = g_mse[i] - mean_mse
        db = g_ent[i] - mean_ent
        dm = m[i] - m_mean
        va += da * da
        vb += db * db
        vm += dm * dm
        if r[i] <= 1.0:
            ident += 1
        if m[i] < 0.0:
            neg += 1
        m_min = min(m_min, m[i])
        m_max = max(m_max, m[i])
    out[0] = mean_mse
    out[1] = va / n
    out[2] = mean_ent
    out[3] = vb / n
    out[4] = m_mean
    out[5] = math.sqrt(vm / n)
    out[6] = m_min
    out[7] = m_max
    out[8] = ident / n
    out[9] = neg / n


@njit(parallel=True, **_jit)
def sgd_step(m, g_mse, g_ent, lr):
    """``m -= lr * (g_mse + g_ent)``."""
    for i in prange(m.size):
        m[i] -= lr * (g_mse[i] + g_ent[i])


@njit(parallel=True, **_jit)
def adam_step(m, g_mse, g_ent, lr, beta1, beta2, eps, step, mom1, mom2):
    """One Adam update of ``m`` (Kingma & Ba), ``step`` counting from 1."""
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    for i in prange(m.size):
        g = g_mse[i] + g_ent[i]
        mom1[i] = beta1 * mom1[i] + (1.0 - beta1) * g
        mom2[i] = beta2 * mom2[i] + (1.0 - beta2) * g * g
        m[i] -= lr * (mom1[i] / c1) / (math.sqrt(mom2[i] / c2) + eps)


@njit(parallel=True, **_jit)
def project_nonnegative(m):
    """``m = max(m, 0)`` in place (the ``relu`` parameterisation)."""
    for i in prange(m.size):
        if m[i] < 0.0:
            m[i] = 0.0
