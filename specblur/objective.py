"""Fused per-epoch arithmetic of the objective (SPEC §7), as Numba kernels.

Each epoch touches every bin a handful of times: radius from parameter, entropy and its
gradient, the MSE and its gradient, the history's statistics and the optimiser step.
These kernels do that in few passes over preallocated buffers: once the fields outgrow
the cache every pass streams them through memory, so everything after the blur VJP is one
sweep (:func:`descend`, block by block in loops that vectorise), and the blur kernels stay
the main cost of an epoch. The entropy's value and the statistics are computed only for the
epochs that are logged, with one logarithm per few hundred bins (:func:`_sum_log`).
They take flat (1-D) views of the ``(K, T)`` fields, and the parameterisation as the
integer value of a :class:`~specblur.settings.Param` (``code``). The per-bin formulas are
those of ``kernels._terms``, which ``kernels.gpu_objective`` compiles for CUDA.
"""
import math

import numpy as np
from numba import prange

from .kernels import _terms
from .kernels._numba import jit, parallel_jit
from .kernels._vexp import exp_parts, scale
from .settings import Param

RAW, RELU, SOFTPLUS, EXP, SIGMOID = (_terms.RAW, _terms.RELU, _terms.SOFTPLUS, _terms.EXP,
                                     _terms.SIGMOID)
#: ``descend``'s optimiser codes.
NO_STEP, SGD, ADAM = _terms.NO_STEP, _terms.SGD, _terms.ADAM

_bin = _terms.build(jit(inline="always"))
_finite = _bin.finite
_radius_from_exp = _bin.radius_from_exp
_entropy_grad = _bin.entropy_grad
_entropy_term = _bin.entropy_term
_g_mse = _bin.g_mse
_adam = _bin.adam
_moments = _bin.moments
_log_radius = _bin.log_radius
_dudr = _bin.dudr
_tv_bin = _bin.tv_bin
_bin_log = _bin.log


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


#: Bins per block of :func:`radius` and :func:`descend`. Each block's partial sums are
#: added in block order, so the statistics do not depend on the number of threads.
BLOCK = 4096


@parallel_jit
def radius(m, code, project, r_max, r, drdm):
    """Prepare ``m`` and the radius at the start of an epoch.

    ``relu`` with ``project``: ``m = max(m, 0)`` in place. ``softplus``, ``exp`` and
    ``sigmoid``: write ``r = param(m)`` and ``dr/dm``; softplus and exp are capped at
    ``r_max`` (``inf`` for no cap) with ``dr/dm = 0`` above it, and sigmoid is
    ``1 + (r_max - 1) σ(m)`` (SPEC §9.2). (``raw`` and ``relu`` use ``m`` itself as the
    radius.) Returns the number of bins where ``m`` or ``r`` is not finite.

    The exponentials go block by block through :func:`_radius_block`, whose loops
    vectorise (``kernels._vexp``).
    """
    n = m.size
    bad = 0
    if code == RAW or code == RELU:
        for i in prange(n):
            mi = m[i]
            if code == RELU and project and mi < 0.0:
                m[i] = 0.0
            if not _finite(mi):
                bad += 1
        return bad
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(n, lo + BLOCK)
        bad += _radius_block(m[lo:hi], code, r_max, r[lo:hi], drdm[lo:hi])
    return bad


@jit(error_model="numpy")  # x / 0 is inf, not an exception: the divisions vectorise
def _radius_block(m, code, r_max, r, drdm):
    """:func:`radius` of a softplus, exp or sigmoid block, in loops with the code a
    constant (compiled apart from :func:`radius`, like :func:`_block_step`)."""
    if code == SIGMOID:
        return _radius_loops(m, SIGMOID, r_max, r, drdm)
    if code == EXP:
        return _radius_loops(m, EXP, r_max, r, drdm)
    return _radius_loops(m, SOFTPLUS, r_max, r, drdm)


@jit(inline="always")
def _exp_arg(mi, code):
    """The argument of the radius's exponential: ``m`` for exp, ``-|m|`` otherwise."""
    return mi if code == EXP else -abs(mi)


@jit(inline="always")
def _radius_loops(m, code, r_max, r, drdm):
    """The two loops of :func:`_radius_block`: ``e = exp(m)`` (exp) or ``exp(-|m|)`` in
    parts (``_vexp.exp_parts``), then the radius from ``e`` (``_terms.radius_from_exp``,
    whose softplus takes ``_terms.log1p_unit``)."""
    n = m.size
    p = np.empty(n)
    bits1 = np.empty(n, np.int64)
    bits2 = np.empty(n, np.int64)
    for i in range(n):
        p[i], bits1[i], bits2[i] = exp_parts(_exp_arg(m[i], code))
    f1 = bits1.view(np.float64)
    f2 = bits2.view(np.float64)
    bad = 0
    for i in range(n):
        mi = m[i]
        e = scale(_exp_arg(mi, code), p[i], f1[i], f2[i])
        ri, drdm[i] = _radius_from_exp(mi, e, code, r_max)
        r[i] = ri
        bad += not (_finite(mi) and _finite(ri))
    return bad


@parallel_jit(reassociate=True)  # the sums vectorise
def mse_and_grad(out, ref, scale, grad):
    """Return ``(mean((out - ref)**2), sum(out))`` and write ``scale * d(mean)/d(out)`` into
    ``grad``. (The sum comes free with the pass; ``fit`` takes the blurred output's total
    from it when the model is the identity.)"""
    n = out.size
    k = 2.0 * scale / n
    total = 0.0
    out_sum = 0.0
    for i in prange(n):
        o = out[i]
        d = o - ref[i]
        grad[i] = k * d
        total += d * d
        out_sum += o
    return total / n, out_sum


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


#: Flips the magnitude bits of negative floats: float64 bits read as int64 then order like
#: the floats themselves, so that min and max are integer reductions, which vectorise.
_MAGNITUDE = 0x7FFFFFFFFFFFFFFF


@jit(reassociate=True)
def _block_sums(ga, gb, m, r, unit, ca, cb, cm):
    """Sums and sums of squares of ``ga - ca``, ``gb - cb`` and ``m - cm`` over a block,
    the counts of ``r <= 1`` (``m`` itself when ``unit``) and ``m < 0``, and the minimum
    and maximum of ``m`` (non-empty, no NaN; -0.0 counts as below 0.0).

    Compiled apart from :func:`descend` with reassociation allowed, so that the sums
    vectorise; the result depends on the block alone, not on the number of threads.
    """
    s1a = s2a = s1b = s2b = s1m = s2m = 0.0
    ident = neg = 0
    bits = m.view(np.int64)
    keys = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min])
    for i in range(m.size):
        da = ga[i] - ca
        db = gb[i] - cb
        mi = m[i]
        dm = mi - cm
        s1a += da
        s2a += da * da
        s1b += db
        s2b += db * db
        s1m += dm
        s2m += dm * dm
        ident += (mi if unit else r[i]) <= 1.0
        neg += mi < 0.0
        key = bits[i] ^ ((bits[i] >> 63) & _MAGNITUDE)
        keys[0] = min(keys[0], key)
        keys[1] = max(keys[1], key)
    for k in range(2):  # the flip is its own inverse
        keys[k] ^= (keys[k] >> 63) & _MAGNITUDE
    m_range = keys.view(np.float64)
    return s1a, s2a, s1b, s2b, s1m, s2m, ident, neg, m_range[0], m_range[1]


_LANES = 8


_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000  # the bits of 1.0
_HALF_BITS = 0x3FE0000000000000  # the bits of 0.5
_SQRT2_MANTISSA = 0x6A09E667F3BCD  # mantissa bits of sqrt(2)
_EXP_MASK = 0x7FF
# _sum_log multiplies _GROUP values per lane between two renormalisations of the lane's
# product; values within [2**-60, 2**60] keep every partial product a normal number
_GROUP = 16
_WILD_LOW, _WILD_HIGH = 2.0 ** -60, 2.0 ** 60
# _sum_log_each: mantissas in [sqrt(1/2), sqrt(2)) multiplied before one logarithm; their
# product stays within 2**(+-256)
_PRODUCT_RUN = 512


@jit(inline="always")
def _split(b):
    """``(exponent, mantissa bits, normal)`` of the float64 bits ``b``, with the mantissa
    in ``[sqrt(1/2), sqrt(2))``, so that values near 1 keep exponent 0."""
    e = (b >> 52) & _EXP_MASK
    normal = (e != 0) & (e != _EXP_MASK) & (b > 0)
    fraction = b & _MANTISSA
    high = fraction >= _SQRT2_MANTISSA  # the mantissa is halved, the exponent raised
    return (e - 1023 + (1 if high else 0), fraction | (_HALF_BITS if high else _ONE_BITS),
            normal)


@jit
def _sum_log(a):
    """``sum(log(a))`` for ``a >= 0`` (or NaN), with few logarithms and vectorised loops:
    :func:`_sum_log_lanes`, or :func:`_sum_log_each` for a block it cannot take."""
    h, taken = _sum_log_lanes(a)
    return h if taken else _sum_log_each(a)


@jit(reassociate=True)
def _sum_log_lanes(a):
    """``(sum(log(a)), True)``, or ``(0, False)`` if ``a`` needs :func:`_sum_log_each`.

    Each of ``_LANES`` lanes multiplies its values, and after every ``_GROUP`` of them
    moves its product's exponent into an integer sum (:func:`_split`); one logarithm per
    lane at the end. A value outside ``[2**-60, 2**60]``, where a partial product could
    leave the normal range (zero and infinity among them), sends the block to
    :func:`_sum_log_each`; so does NaN, which fails no comparison but makes its lane's
    product NaN. The last ``size % (_LANES * _GROUP)`` values take their own logarithm.
    """
    n = a.size
    step = _LANES * _GROUP
    whole = n - n % step
    prod = np.ones(_LANES)
    bits = prod.view(np.int64)
    exponents = 0
    wild = False
    for start in range(0, whole, step):
        for k in range(start, start + step, _LANES):
            for lane in range(_LANES):
                v = a[k + lane]
                prod[lane] *= v
                wild |= (v < _WILD_LOW) | (v > _WILD_HIGH)
        for lane in range(_LANES):
            e, mantissa, normal = _split(bits[lane])
            exponents += e
            bits[lane] = mantissa
            wild |= not normal
    if wild:
        return 0.0, False
    h = exponents * math.log(2.0)
    for lane in range(_LANES):
        h += math.log(prod[lane])
    for k in range(whole, n):
        h += _bin_log(a[k])
    return h, True


@jit(reassociate=True)
def _sum_log_each(a):
    """:func:`_sum_log` for any values: each one split into exponent and mantissa
    (:func:`_split`), the exponents summed as integers and the mantissas multiplied in runs
    of ``_PRODUCT_RUN``, one logarithm per run. Zero, subnormal, infinite and NaN values
    take ``_bin_log`` one by one (``log(0) = -inf``).
    """
    bits = a.view(np.int64)
    mantissas = np.empty(a.size, np.int64)
    exponents = 0
    odd = 0
    for k in range(a.size):
        e, mantissa, normal = _split(bits[k])
        mantissas[k] = mantissa if normal else _ONE_BITS
        exponents += e if normal else 0
        odd += not normal
    factors = mantissas.view(np.float64)
    h = exponents * math.log(2.0)
    for start in range(0, a.size, _PRODUCT_RUN):
        prod = 1.0
        for k in range(start, min(a.size, start + _PRODUCT_RUN)):
            prod *= factors[k]
        h += math.log(prod)
    if odd:
        for k in range(a.size):
            e = (bits[k] >> 52) & _EXP_MASK
            if e == 0 or e == _EXP_MASK or bits[k] <= 0:
                h += _bin_log(a[k])
    return h


@jit(error_model="numpy")
def _block_step(m, r, dr, drdm, g_tv, code, eps, ent_scale, r_max, optimizer, lr, beta1, beta2,
                adam_eps, c1, c2, mom1, mom2, ga, gb, arg, g, m_next):
    """:func:`descend`'s gradient parts and update on one block (views of its bins).

    Writes ``g_mse`` into ``ga``, ``g_ent`` into ``gb``, h's argument into ``arg``, the
    whole gradient into ``g`` and the updated ``m`` into ``m_next``. Returns the number of arguments that are 0 and of
    non-finite new values. Compiled apart from :func:`descend`, whose parallel loop body
    kept LLVM from vectorising these loops.
    """
    size = m.size
    # one loop per formula, with the code a constant, so that each vectorises
    if code == RAW or code == RELU:  # the same entropy
        zero = _gradient_parts(m, m, dr, m, RAW, True, eps, ent_scale, r_max, ga, gb, arg, g)
    elif code == EXP:
        zero = _gradient_parts(m, r, dr, drdm, EXP, False, eps, ent_scale, r_max, ga, gb, arg, g)
    else:  # softplus and sigmoid share h = log(r + eps)
        zero = _gradient_parts(m, r, dr, drdm, SOFTPLUS, False, eps, ent_scale, r_max, ga, gb,
                               arg, g)
    if g_tv.size > 0:
        for k in range(size):
            g[k] += g_tv[k]
    bad = 0
    if optimizer == ADAM:
        for k in range(size):
            new, mom1[k], mom2[k] = _adam(m[k], g[k], mom1[k], mom2[k], lr, beta1, beta2,
                                          adam_eps, c1, c2)
            m_next[k] = new
            bad += not _finite(new)
    elif optimizer != NO_STEP:
        for k in range(size):
            new = m[k] - lr * g[k]
            m_next[k] = new
            bad += not _finite(new)
    return zero, bad


@jit(inline="always")
def _gradient_parts(m, r, dr, drdm, code, unit, eps, ent_scale, r_max, ga, gb, arg, g):
    """:func:`_block_step`'s ``g_mse``, ``g_ent``, h's argument and their sum ``g``;
    returns the number of arguments that are 0."""
    zero = 0
    for k in range(m.size):
        drdmk = 1.0 if unit else drdm[k]
        ga[k] = _g_mse(dr[k], drdmk, unit)
        gb[k], arg[k] = _entropy_grad(m[k], r[k], drdmk, code, eps, ent_scale, r_max)
        g[k] = ga[k] + gb[k]
        zero += arg[k] == 0.0
    return zero


# a block's partial results: the shifted sums of g_mse, g_ent and m and of their squares,
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
    empty (snapshots); only if ``log``, the history statistics of this state into ``stats``
    (the names of ``schema.STATS``; population variances from sums taken around the first
    bin's values, accurate when a mean is large against the spread) and ``sum h(m)``
    (:func:`_sum_log`); and the ``sgd`` or ``adam`` update (``optimizer``, ``step`` counting
    from 1; ``NO_STEP`` for none) of the state, written into ``m_next``, so that ``m`` is
    still the state if the caller rejects the epoch. Adam updates ``mom1``, ``mom2`` in place.

    The sweep goes block by block (``BLOCK`` bins, in parallel), each block in a few tight
    loops over block-sized scratch that the compiler can vectorise: the gradient parts and
    the update (:func:`_block_step`), and on logged epochs the statistics
    (:func:`_block_sums`) and the entropy (:func:`_sum_log`; for exp a plain sum of
    ``_terms.entropy_term``). The three functions are compiled apart from this one.

    Returns ``(zero, H, bad)``: the number of bins whose entropy term is ``log(0) = -inf``
    (possible only with ``eps = 0``), ``sum h(m)`` (0 unless ``log``; :func:`_sum_log`) and
    the number of non-finite new values of ``m``.
    """
    n = m.size
    unit = code == RAW or code == RELU
    keep_mse = g_mse.size > 0
    keep_ent = g_ent.size > 0
    log_cap = math.log(r_max)
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    ca = _g_mse(dr[0], 1.0 if unit else drdm[0], unit)
    cb = _entropy_grad(m[0], r[0], drdm[0], code, eps, ent_scale, r_max)[0]
    cm = m[0]
    nblocks = (n + BLOCK - 1) // BLOCK
    parts = np.zeros((nblocks, _NPART))
    for blk in prange(nblocks):
        lo = blk * BLOCK
        size = min(n, lo + BLOCK) - lo
        ga = np.empty(size)
        gb = np.empty(size)
        arg = np.empty(size)  # the argument a of h = log(a)
        g = np.empty(size)  # the whole gradient
        span = slice(lo, lo + size)
        zero, bad = _block_step(
            m[span], r[span], dr[span], drdm[span], g_tv[span], code, eps, ent_scale, r_max,
            optimizer, lr, beta1, beta2, adam_eps, c1, c2, mom1[span], mom2[span], ga, gb,
            arg, g, m_next[span])
        if keep_mse:
            g_mse[span] = ga
        if keep_ent:
            g_ent[span] = gb
        parts[blk, 10] = zero
        parts[blk, 12] = bad
        if not log:
            continue
        mb = m[lo:lo + size]
        (parts[blk, 0], parts[blk, 1], parts[blk, 2], parts[blk, 3], parts[blk, 4],
         parts[blk, 5], parts[blk, 6], parts[blk, 7], parts[blk, 8],
         parts[blk, 9]) = _block_sums(ga, gb, mb, r[lo:lo + size] if not unit else mb, unit,
                                      ca, cb, cm)
        h = 0.0
        if code == EXP:
            for k in range(size):
                h += _entropy_term(mb[k], arg[k], EXP, log_cap)
        else:  # h(m) = log(a), with few logarithms
            h = _sum_log(arg)
        parts[blk, 11] = h
    total = np.zeros(_NPART)
    m_lo = np.inf
    m_hi = -np.inf
    for blk in range(nblocks):
        for k in range(_NPART):
            total[k] += parts[blk, k]
        m_lo = min(m_lo, parts[blk, 8])
        m_hi = max(m_hi, parts[blk, 9])
    if log:
        stats[0], stats[1] = _moments(ca, total[0], total[1], n)
        stats[2], stats[3] = _moments(cb, total[2], total[3], n)
        stats[4], var_m = _moments(cm, total[4], total[5], n)
        stats[5] = math.sqrt(var_m)
        stats[6] = m_lo
        stats[7] = m_hi
        stats[8] = total[6] / n
        stats[9] = total[7] / n
    return int(total[10]), total[11], int(total[12])
