"""Per-bin arithmetic of the objective (SPEC §7, §9.2-§9.3), shared by the CPU and the GPU.

``build(jit)`` defines these functions under a given decorator: ``specblur.objective``
passes ``_numba.jit(inline="always")`` and ``gpu_objective`` ``numba.cuda.jit(device=True)``,
so that the radius, the entropy term and its gradient, the optimiser step and the total
variation are written once for both devices. Only the loops and reductions around them
differ. The parameterisation is its code in ``PARAM_CODES`` (the value of a
:class:`~specblur.settings.Param`).

Two guards keep these formulas valid Python for the CUDA simulator, whose kernels run
as plain Python (where ``math.exp`` raises on overflow and ``math.log(0)`` on zero); both
give what IEEE arithmetic gives: ``exp(m) = inf`` above ``LOG_MAX`` and ``log(0) = -inf``.
"""
import math
import sys
from types import SimpleNamespace
from typing import Callable

from . import PARAM_CODES

# the codes as plain ints, for the compiled code
RAW, RELU, SOFTPLUS, EXP, SIGMOID = (PARAM_CODES[name] for name in
                                     ("raw", "relu", "softplus", "exp", "sigmoid"))
#: The optimiser codes of the objective kernels (``NO_STEP``: no update this epoch).
NO_STEP, SGD, ADAM = -1, 0, 1
#: ``exp(m)`` overflows to infinity for ``m`` above this (``log`` of the largest float).
LOG_MAX = math.log(sys.float_info.max)
#: ``log1p(e)`` rounds to ``e`` below this (``e / 2`` is far below half an ulp of 1).
TINY = 1e-30


def build(jit: Callable) -> SimpleNamespace:
    """Return the per-bin functions of the objective compiled by the decorator ``jit``."""

    @jit
    def finite(v):
        """True if ``v`` is neither NaN nor infinite."""
        return abs(v) < math.inf

    @jit
    def exp(v):
        """``exp(v)``, infinite above ``LOG_MAX`` (as IEEE, but also in plain Python)."""
        return math.inf if v > LOG_MAX else math.exp(v)

    @jit
    def log(v):
        """``log(v)`` for ``v >= 0``: ``-inf`` at 0 (as IEEE, but also in plain Python)."""
        return -math.inf if v == 0.0 else math.log(v)

    @jit
    def log1p_unit(e):
        """``log1p(e)`` for ``0 <= e <= 1`` (or NaN), in arithmetic that vectorises on the CPU.

        ``log1p(e) = 2 atanh(s)`` with ``s = e / (2 + e)`` in ``[0, 1/3]``, summed as
        ``2 (s + s z (1/3 + z/5 + ...))`` with ``z = s²`` to ``z**16`` (truncation error
        below 2e-18 relative). ``s`` carries a correction for the rounding of ``2 + e`` and
        of the division (exact where ``e - s d`` becomes a fused multiply-add, as compiled
        code does), so the result is within about 1 ulp of libm's ``log1p``. Below
        ``TINY``, where ``s`` would lose bits to underflow, ``log1p(e)`` rounds to ``e``.
        """
        d = 2.0 + e
        c = e - (d - 2.0)  # d + c = 2 + e exactly (d >= e)
        s = e / d
        s_lo = (e - s * d - s * c) / d  # e / (2 + e) - s, to first order
        z = s * s
        q = 1.0 / 33.0
        for j in range(15, 0, -1):
            q = q * z + 1.0 / (2 * j + 1)
        return e if e < TINY else 2.0 * (s + (s_lo + s * z * q))

    @jit
    def radius_from_exp(m, e, code, r_max):
        """:func:`radius_of` of a softplus, exp or sigmoid ``m``, given ``e = exp(m)`` for
        exp and ``e = exp(-|m|)`` for the others (``objective.radius`` computes ``e`` in
        loops that vectorise)."""
        if code == SOFTPLUS:
            r = max(m, 0.0) + log1p_unit(e)
            drdm = 1.0 / (1.0 + e) if m >= 0.0 else e / (1.0 + e)
        elif code == EXP:
            r = e
            drdm = e
        else:  # sigmoid
            big = 1.0 / (1.0 + e)           # σ(|m|)
            small = e / (1.0 + e)           # σ(-|m|) = 1 - σ(|m|), without cancellation
            s = big if m >= 0.0 else small
            r = 1.0 + (r_max - 1.0) * s
            drdm = (r_max - 1.0) * big * small
        if (code == SOFTPLUS or code == EXP) and r > r_max:
            return r_max, 0.0
        return r, drdm

    @jit
    def radius_of(m, code, r_max):
        """``(r, dr/dm)`` of parameter ``m`` (SPEC §7, §9.2).

        ``softplus`` and ``exp`` are capped at ``r_max`` (``inf`` for no cap) with
        ``dr/dm = 0`` above it; ``sigmoid`` is ``1 + (r_max - 1) σ(m)``. ``raw`` and
        ``relu`` give ``(m, 1)``.
        """
        if code == RAW or code == RELU:
            return m, 1.0
        return radius_from_exp(m, exp(m) if code == EXP else math.exp(-abs(m)), code, r_max)

    @jit
    def entropy_grad(mi, ri, drdmi, code, eps, ent_scale, r_max):
        """``(g_ent, a)`` at one bin: ``-ent_scale dh/dm`` and the argument ``a`` of h's log.

        SPEC §7's table; above the cap ``r_max`` of softplus and exp ``h`` is constant.
        Raw and relu share one formula, and so do softplus and sigmoid:
        ``objective._block_step`` compiles one loop per formula and relies on that.
        """
        if code == RAW or code == RELU:
            a = abs(mi) + eps
            return -ent_scale * (1.0 if mi > 0.0 else (-1.0 if mi < 0.0 else 0.0)) / a, a
        if code == EXP:
            capped = ri == r_max and drdmi == 0.0
            return (0.0 if capped else -ent_scale), 1.0
        a = ri + eps  # softplus and sigmoid: h = log(r + eps)
        return -ent_scale * drdmi / a, a

    @jit
    def entropy_term(mi, a, code, log_cap):
        """``h(m)`` at one bin (SPEC §7's table), from ``a``, the argument of its log that
        :func:`entropy_grad` returns: ``min(m, log r_max)`` for exp (``log_cap = log
        r_max``), else ``log(a)``."""
        return min(mi, log_cap) if code == EXP else log(a)

    @jit
    def g_mse(dr, drdm, unit):
        """``dL_mse/dm = dr dr/dm``; ``dr`` itself when ``unit`` (raw and relu)."""
        return dr if unit else dr * drdm

    @jit
    def adam(mi, g, mom1, mom2, lr, beta1, beta2, adam_eps, c1, c2):
        """One Adam step: ``(new m, new first moment, new second moment)``.

        ``c1 = 1 - beta1**step`` and ``c2 = 1 - beta2**step`` are the bias corrections.
        """
        mom1 = beta1 * mom1 + (1.0 - beta1) * g
        mom2 = beta2 * mom2 + (1.0 - beta2) * g * g
        return mi - lr * (mom1 / c1) / (math.sqrt(mom2 / c2) + adam_eps), mom1, mom2

    @jit
    def accumulate(s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_min, m_max, ga, gb, mi, ri,
                   ca, cb, cm):
        """The history statistics' running sums after one more bin.

        Sums and sums of squares of ``g_mse``, ``g_ent`` and ``m`` taken around ``ca``,
        ``cb``, ``cm`` (the first bin's values), counts of ``r <= 1`` and ``m < 0``, and the
        range of ``m``.
        """
        da = ga - ca
        db = gb - cb
        dm = mi - cm
        return (s1a + da, s2a + da * da, s1b + db, s2b + db * db, s1m + dm, s2m + dm * dm,
                ident + (ri <= 1.0), neg + (mi < 0.0), min(m_min, mi), max(m_max, mi))

    @jit
    def moments(c, s1, s2, n):
        """Mean and population variance of ``n`` values from their sums ``s1``, ``s2``
        around ``c``."""
        return c + s1 / n, max(s2 / n - (s1 / n) ** 2, 0.0)

    @jit
    def log_radius(r):
        """``u = log(max(r, 1))``, the field whose total variation is the smoothness term."""
        return math.log(max(r, 1.0))

    @jit
    def dudr(r):
        """``du/dr``: ``1/r`` above 1 and 0 at or below it (the left derivative at 1)."""
        return 1.0 / r if r > 1.0 else 0.0

    @jit
    def tv_bin(u, k, t, K, T, delta, d2):
        """Bin ``(k, t)``'s part of ``TV`` (SPEC §9.3) on the ``(K, T)`` field ``u``.

        Returns ``(along_k, along_t, g)``: the terms ``ρ(u[k+1,t] - u[k,t])`` and
        ``ρ(u[k,t+1] - u[k,t])`` (0 at the edges), with ``ρ(z) = sqrt(z² + δ²) - δ`` and
        ``d2 = δ²``, and ``dTV/du[k,t]``, which also takes the terms of the neighbours below.
        """
        uk = u[k, t]
        g = 0.0
        along_k = 0.0
        along_t = 0.0
        if k + 1 < K:
            z = u[k + 1, t] - uk
            q = math.sqrt(z * z + d2)
            along_k = q - delta
            g -= z / q
        if k > 0:
            z = uk - u[k - 1, t]
            g += z / math.sqrt(z * z + d2)
        if t + 1 < T:
            z = u[k, t + 1] - uk
            q = math.sqrt(z * z + d2)
            along_t = q - delta
            g -= z / q
        if t > 0:
            z = uk - u[k, t - 1]
            g += z / math.sqrt(z * z + d2)
        return along_k, along_t, g

    return SimpleNamespace(finite=finite, exp=exp, log=log, radius_of=radius_of,
                           radius_from_exp=radius_from_exp, log1p_unit=log1p_unit,
                           entropy_grad=entropy_grad, entropy_term=entropy_term, g_mse=g_mse,
                           adam=adam, accumulate=accumulate, moments=moments,
                           log_radius=log_radius, dudr=dudr,
                           tv_bin=tv_bin)
