"""Per-bin arithmetic of the blur, shared by the CPU and the GPU kernels.

``build(jit)`` defines these functions under a given decorator: ``cpu.py`` passes
``_numba.jit(inline="always")`` and ``gpu.py`` ``numba.cuda.jit(device=True)``, so both devices run
the same formulas. All quantities are float64; counts and positions stay floats until
they are clamped, so radii far beyond any integer range cannot overflow. There are no
data-dependent branches, only selects: a source with ``r <= 1`` gives impulses of value 0
and keeps its value, so such bins are reproduced exactly (for finite input; an infinite
or NaN ``x`` makes its impulses NaN, and callers reject such input).

Notation (SPEC §3): ``n = ceil(r) - 1``, ``f = r - n`` in ``(0, 1]`` and
``S = (2n + 1) r - n (n + 1) = n (n + 2 f) + f``; the second form avoids cancellation.
Renormalize mode (SPEC §9.1) divides by ``S_p``, the mass of the in-range part of the
window, ``A = min(n, p)`` bins to the left and ``B = min(n, K - 1 - p)`` to the right.

The boundary mode is an integer code (``MODE_CODES``); branches on it are the same for
every bin of a call.
"""
import math
from types import SimpleNamespace
from typing import Callable

from . import MODE_CODES

TRUNCATE = MODE_CODES["truncate"]
CONSERVE = MODE_CODES["conserve"]
RENORMALIZE = MODE_CODES["renormalize"]

# The largest relative correction ``mass_scale`` applies; rounding stays far below it.
MAX_MASS_CORRECTION = 1.0e-6

# Radii beyond this are computed as R_MAX, so that S = O(r^2) stays finite; every weight
# of such a kernel is below 1e-15 either way.
R_MAX = 1.0e15


def build(jit: Callable) -> SimpleNamespace:
    """Return the per-bin functions compiled by the decorator ``jit``."""

    @jit
    def geometry(r):
        """Return ``(n, f, S)`` for the radius ``r`` clipped to ``[1, R_MAX]``.

        A NaN radius reads as 1, so that window positions stay in range even for input
        that the caller rejects afterwards (the CPU kernels count non-finite input).
        """
        r = min(r, R_MAX) if r > 1.0 else 1.0
        n = float(math.ceil(r)) - 1.0
        f = r - n
        return n, f, n * (n + 2.0 * f) + f

    @jit
    def tail_mass(n, f, c):
        """Unnormalised weight beyond offset ``c``: ``sum_{j=c+1..n} (r - j)``."""
        k = n - c
        return k * (f + 0.5 * (k - 1.0))

    @jit
    def side_mass(n, f, c):
        """Unnormalised weight of offsets ``1..c``: ``sum_{j=1..c} (r - j)``, ``c <= n``.

        Written as ``c ((n - c) + f + (c - 1) / 2)``, a sum of non-negative terms, so it
        has no cancellation even for ``r`` far beyond ``c``.
        """
        return c * ((n - c) + f + 0.5 * (c - 1.0))

    @jit
    def reach(p, K, n):
        """In-range reach ``(A, B)`` of source ``p``: ``min(n, p)`` and ``min(n, K - 1 - p)``."""
        return min(n, float(p)), min(n, float(K - 1 - p))

    @jit
    def in_range_mass(n, f, A, B):
        """``S_p = sum_{d=-A..B} (r - |d|)`` (SPEC §9.1)."""
        return (n + f) + side_mass(n, f, A) + side_mass(n, f, B)

    @jit
    def given(r, x, S):
        """``s = x / S``, the mass per unit weight a source gives away; 0 for ``r <= 1``.

        ``S >= 1``, so the division is always safe: a multiply by 0 or 1 instead of a
        conditional division, which LLVM compiled to a branch that mispredicts where radii
        straddle 1.
        """
        return x / S * (1.0 if r > 1.0 else 0.0)

    @jit
    def own_value(p, K, r, x, n, f, s, mode):
        """What source ``p`` keeps for itself, given its geometry and ``s = x / S``.

        All of ``x`` for ``r <= 1`` (then ``s = 0``); in conserve mode also ``x`` times the
        weight that would leave ``[0, K)``. Renormalize mode keeps nothing else.
        """
        own = x if r <= 1.0 else 0.0
        if mode == CONSERVE:
            own += (tail_mass(n, f, min(n, float(p))) + tail_mass(n, f, min(n, float(K - 1 - p)))) * s
        return own

    @jit
    def impulses(p, K, r, x, mode):
        """The impulses of source ``p`` in the second running sum, and what it keeps.

        The second running sum of the impulses is ``x w(i - p; r)`` (SPEC §5): ``f s`` at
        ``p - n``, ``(1 - f) s`` at ``p - n + 1``, ``-2 s`` at ``p + 1``, ``(1 - f) s`` at
        ``p + n + 1`` and ``f s`` at ``p + n + 2``, with ``s = x / S`` (``x / S_p`` in
        renormalize mode, which rescales the in-range weights to sum to 1). An impulse
        ``c`` at ``q < 0`` acts on bins ``i >= 0`` as ``c (1 - q)`` at bin 0 plus ``c q`` at
        bin 1. Impulses at ``q >= K`` land in rows ``K`` and ``K + 1``, which are never
        read, so the running sums need ``K + 2`` rows. A source with ``r <= 1`` gives zeros
        and keeps ``x``.

        Returns ``(lo0, lo1, hi, v_lo0, v_lo1, v_edge, v_mid, v_hi, v_hi1, kept)``: the
        impulses ``v_lo0`` at row ``lo0``, ``v_lo1`` at ``lo1``, ``v_edge`` at row 1,
        ``v_mid`` at ``p + 1``, ``v_hi`` at ``hi`` and ``v_hi1`` at ``hi + 1`` (rows as
        non-negative floats), and the value the source keeps for itself.
        """
        n, f, S = geometry(r)
        if mode == RENORMALIZE:
            A, B = reach(p, K, n)
            S = in_range_mass(n, f, A, B)
        s = given(r, x, S)
        a = f * s
        c = s - a
        q = p - n
        neg0 = min(q, 0.0)
        neg1 = min(q + 1.0, 0.0)
        return (q - neg0, q + 1.0 - neg1, min(p + n + 1.0, float(K)),
                a * (1.0 - neg0), c * (1.0 - neg1), a * neg0 + c * neg1, -2.0 * s, c, a,
                own_value(p, K, r, x, n, f, s, mode))

    @jit
    def scatter_source(d2, col, p, K, r, x, mode):
        """Add the :func:`impulses` of source ``p`` to ``d2[:, col]`` (``K + 2`` rows);
        return what the source keeps."""
        lo0, lo1, hi, v_lo0, v_lo1, v_edge, v_mid, v_hi, v_hi1, own = impulses(p, K, r, x, mode)
        i = int(hi)
        d2[int(lo0), col] += v_lo0
        d2[int(lo1), col] += v_lo1
        d2[1, col] += v_edge
        d2[p + 1, col] += v_mid
        d2[i, col] += v_hi
        d2[i + 1, col] += v_hi1
        return own

    @jit
    def kept(p, K, r, x, mode):
        """What source ``p`` keeps for itself (the value ``scatter_source`` returns)."""
        n, f, S = geometry(r)
        return own_value(p, K, r, x, n, f, given(r, x, S), mode)

    @jit
    def bin_vjp(P0, P1, col, p, K, r, x, g, mode):
        """Gradients ``(dX[p], dr[p])`` of one source bin, from prefix sums of the cotangent.

        ``P0[i, col]`` is ``sum_{k<i} G[k]`` and ``P1[i, col]`` is ``sum_{k<i} k G[k]``, so
        any window sum of ``G`` or ``i G`` costs O(1), whatever the radius. ``g`` is
        ``G[p]``. A source with ``r <= 1`` gives ``(g, 0)``.

        With ``s0 = sum_d G[p + d]`` over the in-range window ``-A <= d <= B``, a window
        mass ``M0`` (``S``, or ``S_p`` in renormalize mode), its width ``N`` (``2n + 1``, or
        ``A + B + 1``) and ``M1 = sum |d|`` over it (``n (n + 1)``, or that of the in-range
        part): ``dx = sum_d (r - |d|) G[p + d] / M0`` and ``dr = x (s0 - N dx) / M0``, which
        is SPEC §9.1's formula in renormalize mode. Since ``M0 - N (r - |d|) = N |d| - M1``,
        ``dr`` is computed as ``x (N sum_d |d| G[p + d] - M1 s0) / M0^2``, which does not
        cancel terms of order ``r s0`` when ``r`` is large.
        """
        n, f, S = geometry(r)
        A, B = reach(p, K, n)
        lo = p - int(A)
        hi = p + int(B) + 1
        mid = p + 1
        p0lo = P0[lo, col]
        p0mid = P0[mid, col]
        p0hi = P0[hi, col]
        s0 = p0hi - p0lo
        left = p * (p0mid - p0lo) - (P1[mid, col] - P1[lo, col])
        right = (P1[hi, col] - P1[mid, col]) - p * (p0hi - p0mid)
        # Window mass, its width and sum_d |d| over the window: the full triangle's in
        # truncate and conserve modes (its out-of-range part has no G to weigh), the
        # in-range part's in renormalize mode. Selects, not branches, so that the loop
        # over frames vectorises.
        renorm = mode == RENORMALIZE
        inv = 1.0 / (in_range_mass(n, f, A, B) if renorm else S)
        count = (A + B + 1.0) if renorm else (2.0 * n + 1.0)
        spread = 0.5 * (A * (A + 1.0) + B * (B + 1.0)) if renorm else n * (n + 1.0)
        dx = ((n + f) * s0 - left - right) * inv        # sum of W[i, p] G[i]
        # sum of dW[i, p]/dr G[i]: S - count (r - |d|) = count |d| - spread
        dsum = (count * (left + right) - spread * s0) * (inv * inv)
        lost = (tail_mass(n, f, A) + tail_mass(n, f, B)) * inv
        conserve = mode == CONSERVE
        dx += lost * g if conserve else 0.0
        dsum -= g * ((2.0 * n + 1.0) * lost - (n - A) - (n - B)) * inv if conserve else 0.0
        blurred = r > 1.0
        return (dx if blurred else g), (x * dsum if blurred else 0.0)

    @jit
    def mass_scale(sent, received, spread):
        """Factor that brings a frame's blurred mass ``received`` to the mass ``sent``.

        ``sent`` sums over the frame what the sources give away (``x`` minus what they
        keep), ``received`` the running sums' values and ``spread`` their absolute values.
        The running sums accumulate rounding like ``K^2 eps`` (5e-12 at K = 4097);
        rescaling by ``sent / received`` removes it, so that conserve and renormalize keep
        each frame's total to about ``K eps`` (SPEC §4). The factor changes each value by
        about its own rounding only when the values mostly share a sign: where signed
        values cancel (``|received| < spread / 2``), or the gap is not of rounding size
        (non-finite values), the frame is left as it is.
        """
        gap = sent - received
        ok = abs(gap) < MAX_MASS_CORRECTION * abs(received) and abs(received) >= 0.5 * spread
        return 1.0 + gap / received if ok else 1.0

    return SimpleNamespace(mass_scale=mass_scale, geometry=geometry, tail_mass=tail_mass,
                           side_mass=side_mass, reach=reach, in_range_mass=in_range_mass,
                           given=given, own_value=own_value, impulses=impulses,
                           scatter_source=scatter_source, kept=kept, bin_vjp=bin_vjp)
