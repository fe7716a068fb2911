"""``exp`` in loops that vectorise, for the CPU's per-bin radius (``objective.radius``).

This Numba build has no vector math library (SVML), so LLVM calls libm's scalar ``exp``
once per element and leaves the loop scalar. :func:`exp_parts` computes ``exp(x)`` as
``p * 2**k1 * 2**k2`` with plain arithmetic: ``k = round(x / ln 2)``, ``x - k ln 2`` in
two parts (Cody and Waite), and ``p`` its Taylor polynomial to degree 13, whose
truncation error is below 1e-17 relative on ``|x - k ln 2| <= ln(2) / 2``. ``k`` is split
in two halves so that both powers of two are normal floats for any result, subnormal
ones included. A loop writes ``p`` and the two powers' bits (integers, since Numba cannot
reinterpret a scalar's bits), and a second loop multiplies them through float views of
those integer arrays (:func:`scale`). Results agree with libm's to about 1 ulp
(``tests/test_objective_terms.py``); NaN gives NaN, ``-inf`` 0 and ``inf`` ``inf``.
"""
import math

import numpy as np

from ._numba import jit

_INV_LN2 = 1.4426950408889634
# ln 2 in two parts: the last 21 bits of the first are zero, so k * _LN2_HI is exact for
# the |k| <= 1077 used here
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# exp(x) underflows to 0 below about -745.13 and overflows above about 709.78
_X_LOW, _X_HIGH = -746.0, 710.0
_BIAS = 1023


@jit(inline="always")
def exp_parts(x):
    """``(p, bits1, bits2)`` with ``exp(x) = p * f1 * f2``, where ``f1``, ``f2`` are the
    float64 values of the int64 ``bits1``, ``bits2``. For NaN ``x`` the parts are
    meaningless (:func:`scale` takes ``x`` to give NaN)."""
    xc = min(max(x, _X_LOW), _X_HIGH)
    k = math.floor(xc * _INV_LN2 + 0.5)
    t = (xc - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0  # 1/13!
    p = p * t + 1.0 / 479001600.0
    p = p * t + 1.0 / 39916800.0
    p = p * t + 1.0 / 3628800.0
    p = p * t + 1.0 / 362880.0
    p = p * t + 1.0 / 40320.0
    p = p * t + 1.0 / 5040.0
    p = p * t + 1.0 / 720.0
    p = p * t + 1.0 / 120.0
    p = p * t + 1.0 / 24.0
    p = p * t + 1.0 / 6.0
    p = p * t + 0.5
    p = p * t + 1.0
    p = p * t + 1.0
    ki = np.int64(k)
    k1 = ki >> 1
    k2 = ki - k1
    return p, (k1 + _BIAS) << 52, (k2 + _BIAS) << 52


@jit(inline="always")
def scale(x, p, f1, f2):
    """``exp(x)`` from :func:`exp_parts`' ``p`` and its powers of two as floats."""
    return p * f1 * f2 if x == x else x
