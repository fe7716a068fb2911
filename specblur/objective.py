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
RAW, RELU, SOFTPLUS, EXP, SIGMOID = (int(p) for p in Param)


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
        elif code == SIGMOID:
            t = math.exp(-abs(mi))
            big = 1.0 / (1.0 + t)           # σ(|m|)
            small = t / (1.0 + t)           # σ(-|m|) = 1 - σ(|m|), without cancellation
            s = big if mi >= 0.0 else small
            r[i] = 1.0 + (r_max - 1.0) * s
            drdm[i] = (r_max - 1.0) * big * small
        if (code == SOFTPLUS or code == EXP) and r[i] > r_max:
            r[i] = r_max
            drdm[i] = 0.0
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
def gradient_parts(m, r, dr, drdm, code, eps, ent_scale, r_max, g_mse, g_ent):
    """Write ``g_mse = dr * dr/dm`` and ``g_ent = -ent_scale * dh/dm`` (SPEC §7's table).

    For ``raw`` and ``relu`` (``dr/dm = 1``) ``g_mse`` is ``dr`` itself and is not written.
    Above the cap ``r_max`` of softplus and exp, ``h`` is constant (``dh/dm = 0``).
    Returns the number of bins whose entropy term is ``log(0) = -inf`` (possible only with
    ``eps = 0``).
    """
    zero = 0
    for i in prange(m.size):
        if code == RAW or code == RELU:
            a = abs(m[i]) + eps
            g_ent[i] = -ent_scale * (1.0 if m[i] > 0.0 else (-1.0 if m[i] < 0.0 else 0.0)) / a
        elif code == EXP:
            a = 1.0
            g_mse[i] = dr[i] * drdm[i]
            capped = r[i] == r_max and drdm[i] == 0.0
            g_ent[i] = 0.0 if capped else -ent_scale
        else:  # softplus and sigmoid: h = log(r + eps)
            a = r[i] + eps
            g_mse[i] = dr[i] * drdm[i]
            g_ent[i] = -ent_scale * drdm[i] / a
        if a == 0.0:
            zero += 1
    return zero


@parallel_jit
def entropy_sum(m, r, code, eps, r_max):
    """``sum h(m)``: ``log(|m| + eps)``, ``log(r + eps)`` or ``m`` by parameterisation.

    For ``exp`` capped at ``r_max``, ``h = min(m, log r_max)``.
    """
    log_cap = math.log(r_max)
    total = 0.0
    for i in prange(m.size):
        if code == RAW or code == RELU:
            total += math.log(abs(m[i]) + eps)
        elif code == EXP:
            total += min(m[i], log_cap)
        else:
            total += math.log(r[i] + eps)
    return total


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
            u[k, t] = math.log(max(r[k, t], 1.0))
    total = 0.0
    for k in prange(K):
        row = 0.0
        for t in range(T):
            uk = u[k, t]
            g = 0.0
            if k + 1 < K:
                z = u[k + 1, t] - uk
                q = math.sqrt(z * z + d2)
                row += q - delta
                g -= z / q
            if k > 0:
                z = uk - u[k - 1, t]
                g += z / math.sqrt(z * z + d2)
            if t + 1 < T:
                z = u[k, t + 1] - uk
                q = math.sqrt(z * z + d2)
                row += q - delta
                g -= z / q
            if t > 0:
                z = uk - u[k, t - 1]
                g += z / math.sqrt(z * z + d2)
            rk = r[k, t]
            dudr = 1.0 / rk if rk > 1.0 else 0.0
            g_tv[k, t] = scale * g * dudr * (1.0 if unit_drdm else drdm[k, t])
        total += row
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
def sgd_step(m, g_mse, g_ent, g_tv, lr):
    """``m -= lr * (g_mse + g_ent + g_tv)``; return the number of non-finite new values.

    ``g_tv`` may be empty (no smoothness term).
    """
    has_tv = g_tv.size > 0
    bad = 0
    for i in prange(m.size):
        m[i] -= lr * (g_mse[i] + g_ent[i] + (g_tv[i] if has_tv else 0.0))
        if not abs(m[i]) < np.inf:
            bad += 1
    return bad


@parallel_jit
def adam_step(m, g_mse, g_ent, g_tv, lr, beta1, beta2, eps, step, mom1, mom2):
    """One Adam update of ``m`` (Kingma & Ba), ``step`` counting from 1.

    ``g_tv`` may be empty (no smoothness term). Returns the number of non-finite new values.
    """
    has_tv = g_tv.size > 0
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    bad = 0
    for i in prange(m.size):
        g = g_mse[i] + g_ent[i] + (g_tv[i] if has_tv else 0.0)
        mom1[i] = beta1 * mom1[i] + (1.0 - beta1) * g
        mom2[i] = beta2 * mom2[i] + (1.0 - beta2) * g * g
        m[i] -= lr * (mom1[i] / c1) / (math.sqrt(mom2[i] / c2) + eps)
        if not abs(m[i]) < np.inf:
            bad += 1
    return bad
