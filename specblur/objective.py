"""Fused per-epoch arithmetic of the objective (SPEC §7), as Numba kernels.

Each epoch touches every bin a handful of times: radius from parameter, entropy and its
gradient, the MSE and its gradient, the history's statistics and the optimiser step.
These kernels do that in a few simple passes over preallocated buffers, loops that the
compiler vectorises, so that the blur kernels stay the main cost of an epoch. The
entropy's value (a logarithm per bin) is computed only for the epochs that are logged.
They take flat (1-D) views of the ``(K, T)`` fields, and the parameterisation as the
integer value of a :class:`~specblur.settings.Param` (``code``).
"""
import math

import numpy as np
from numba import prange

from .kernels._numba import jit, parallel_jit
from .settings import Param

# the codes as plain ints, for the compiled loops
RAW, RELU, SOFTPLUS, EXP = (int(p) for p in (Param.RAW, Param.RELU, Param.SOFTPLUS, Param.EXP))


def param_inverse(r0: np.ndarray | float, param: Param) -> np.ndarray:
    """The parameter ``m`` whose radius is ``r0`` (SPEC §7: ``m = param⁻¹(r0)``)."""
    r0 = np.asarray(r0, dtype=np.float64)
    if param.radius_is_m:
        return r0.copy()
    if param is Param.SOFTPLUS:
        return r0 + np.log(-np.expm1(-r0))
    return np.log(r0)


@parallel_jit
def radius(m, code, project, r, drdm):
    """Prepare ``m`` and the radius at the start of an epoch.

    ``relu`` with ``project``: ``m = max(m, 0)`` in place. ``softplus`` and ``exp``: write
    ``r = param(m)`` and ``dr/dm``. (``raw`` and ``relu`` use ``m`` itself as the radius.)
    Returns the number of bins where ``m`` or ``r`` is not finite.
    """
    bad = 0
    for i in prange(m.size):
        mi = m[i]
        if code == RELU and project and mi < 0.0:
            m[i] = 0.0
        if code == SOFTPLUS:
            t = math.exp(-abs(mi))
            r[i] = max(mi, 0.0) + math.log1p(t)
            drdm[i] = 1.0 / (1.0 + t) if mi >= 0.0 else t / (1.0 + t)
        elif code == EXP:
            r[i] = math.exp(mi)
            drdm[i] = r[i]
        if not (abs(mi) < np.inf and abs(r[i]) < np.inf):
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
def gradient_parts(m, r, dr, drdm, code, eps, ent_scale, g_mse, g_ent):
    """Write ``g_mse = dr * dr/dm`` and ``g_ent = -ent_scale * dh/dm`` (SPEC §7's table).

    For ``raw`` and ``relu`` (``dr/dm = 1``) ``g_mse`` is ``dr`` itself and is not written.
    Returns the number of bins whose entropy term is ``log(0) = -inf`` (possible only with
    ``eps = 0``).
    """
    zero = 0
    for i in prange(m.size):
        if code == RAW or code == RELU:
            a = abs(m[i]) + eps
            g_ent[i] = -ent_scale * (1.0 if m[i] > 0.0 else (-1.0 if m[i] < 0.0 else 0.0)) / a
        elif code == SOFTPLUS:
            a = r[i] + eps
            g_mse[i] = dr[i] * drdm[i]
            g_ent[i] = -ent_scale * drdm[i] / a
        else:
            a = 1.0
            g_mse[i] = dr[i] * drdm[i]
            g_ent[i] = -ent_scale
        if a == 0.0:
            zero += 1
    return zero


@parallel_jit
def entropy_sum(m, r, code, eps):
    """``sum h(m)``: ``log(|m| + eps)``, ``log(r + eps)`` or ``m`` by parameterisation."""
    total = 0.0
    for i in prange(m.size):
        if code == RAW or code == RELU:
            total += math.log(abs(m[i]) + eps)
        elif code == SOFTPLUS:
            total += math.log(r[i] + eps)
        else:
            total += m[i]
    return total


@jit
def statistics(m, r, g_mse, g_ent, out):
    """Fill ``out`` with the history statistics named in ``schema.STATS``, in one pass.

    Variances are population variances, from sums taken around the first bin's values,
    which keeps them accurate when a mean is large against the spread.
    """
    n = m.size
    ca, cb, cm = g_mse[0], g_ent[0], m[0]
    s1a = s2a = s1b = s2b = s1m = s2m = 0.0
    ident = 0
    neg = 0
    m_min = np.inf
    m_max = -np.inf
    for i in range(n):
        da = g_mse[i] - ca
        db = g_ent[i] - cb
        dm = m[i] - cm
        s1a += da
        s2a += da * da
        s1b += db
        s2b += db * db
        s1m += dm
        s2m += dm * dm
        ident += r[i] <= 1.0
        neg += m[i] < 0.0
        m_min = min(m_min, m[i])
        m_max = max(m_max, m[i])
    out[0] = ca + s1a / n
    out[1] = max(s2a / n - (s1a / n) ** 2, 0.0)
    out[2] = cb + s1b / n
    out[3] = max(s2b / n - (s1b / n) ** 2, 0.0)
    out[4] = cm + s1m / n
    out[5] = math.sqrt(max(s2m / n - (s1m / n) ** 2, 0.0))
    out[6] = m_min
    out[7] = m_max
    out[8] = ident / n
    out[9] = neg / n


@parallel_jit
def sgd_step(m, g_mse, g_ent, lr):
    """``m -= lr * (g_mse + g_ent)``; return the number of non-finite new values."""
    bad = 0
    for i in prange(m.size):
        m[i] -= lr * (g_mse[i] + g_ent[i])
        if not abs(m[i]) < np.inf:
            bad += 1
    return bad


@parallel_jit
def adam_step(m, g_mse, g_ent, lr, beta1, beta2, eps, step, mom1, mom2):
    """One Adam update of ``m`` (Kingma & Ba), ``step`` counting from 1.

    Returns the number of non-finite new values.
    """
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    bad = 0
    for i in prange(m.size):
        g = g_mse[i] + g_ent[i]
        mom1[i] = beta1 * mom1[i] + (1.0 - beta1) * g
        mom2[i] = beta2 * mom2[i] + (1.0 - beta2) * g * g
        m[i] -= lr * (mom1[i] / c1) / (math.sqrt(mom2[i] / c2) + eps)
        if not abs(m[i]) < np.inf:
            bad += 1
    return bad
