"""Per-bin arithmetic of the blur, shared by the CPU and the GPU kernels.

``build(jit)`` defines them under a given decorator: ``cpu.py`` passes ``numba.njit`` and
``gpu.py`` passes ``numba.cuda.jit(device=True)``, so both devices run the same formulas.
All quantities are float64. Counts such as ``n`` stay floats so that radii far beyond any
integer range cannot overflow.

Notation (SPEC §3): for a radius ``r > 1``, ``n = ceil(r) - 1``, ``f = r - n`` in ``(0, 1]``
and ``S = (2n + 1) r - n (n + 1) = n (n + 2 f) + f``. The second form avoids cancellation.
"""
import math
from types import SimpleNamespace


def build(jit):
    """Return the per-bin functions compiled by the decorator ``jit``."""

    @jit
    def geometry(r):
        """Return ``(n, f, S)`` for a radius ``r > 1``."""
        if r < 4.0e15:
            n = float(math.ceil(r)) - 1.0
        else:
            n = r - 1.0  # every float this large is an integer
        f = r - n
        return n, f, n * (n + 2.0 * f) + f

    @jit
    def tail_mass(n, f, c):
        """Unnormalised weight beyond offset ``c``: ``sum_{j=c+1..n} (r - j)``."""
        k = n - c
        return k * (f + 0.5 * (k - 1.0))


    @jit
    def reach(p, n, K):
        """Offsets ``(A, B)`` that stay in ``[0, K)`` to the left and right of bin ``p``."""
        return min(n, float(p)), min(n, float(K - 1 - p))


    @jit
    def kept_share(p, K, r, conserve):
        """What source ``p`` keeps for itself, as a share of its value.

        1 for an identity radius; in conserve mode the weight that would leave ``[0, K)``;
        otherwise 0.
        """
        if r <= 1.0:
            return 1.0
        if not conserve:
            return 0.0
        n, f, S = geometry(r)
        A, B = reach(p, n, K)
        return (tail_mass(n, f, A) + tail_mass(n, f, B)) / S


    @jit
    def bin_vjp(P0, P1, col, p, K, r, x, g, conserve):
        """Gradients ``(dX[p], dr[p])`` of one source bin, from prefix sums of the cotangent.

        ``P0[i, col]`` is ``sum_{k<i} G[k]`` and ``P1[i, col]`` is ``sum_{k<i} k G[k]``, so any
        window sum of ``G`` or ``i G`` costs O(1), whatever the radius.
        """
        if r <= 1.0:
            return g, 0.0
        n, f, S = geometry(r)
        A, B = reach(p, n, K)
        lo = p - int(A)
        hi = p + int(B) + 1
        mid = p + 1
        s0 = P0[hi, col] - P0[lo, col]
        left = p * (P0[mid, col] - P0[lo, col]) - (P1[mid, col] - P1[lo, col])
        right = (P1[hi, col] - P1[mid, col]) - p * (P0[hi, col] - P0[mid, col])
        inv = 1.0 / S
        dx = (r * s0 - left - right) * inv          # sum of w(i - p) G[i]
        dsum = (s0 - (2.0 * n + 1.0) * dx) * inv    # sum of dw(i - p)/dr G[i]
        if conserve:
            lost = (tail_mass(n, f, A) + tail_mass(n, f, B)) * inv
            outside = (n - A) + (n - B)
            dx += lost * g
            dsum -= g * ((2.0 * n + 1.0) * lost - outside) * inv
        return dx, x * dsum


    @jit
    def scatter_source(d2, col, p, K, r, x):
        """Add the five impulses of source ``p`` (radius ``r > 1``, value ``x``) to ``d2[:, col]``.

        The second running sum of ``d2`` is then the source's triangle ``x w(i - p; r)``
        (SPEC §5). Impulses at or beyond ``K`` are dropped. Impulses left of bin 0 cannot be
        stored; they are returned as ``(slope, value)``, the running sums' state just before
        bin 0.
        """
        n, f, S = geometry(r)
        s = x / S
        a = f * s
        c = (1.0 - f) * s
        slope = 0.0
        value = 0.0
        q = p - n
        if q >= 0.0:
            i = int(q)
            d2[i, col] += a
            d2[i + 1, col] += c
        else:
            slope += a
            value -= a * q
            if q == -1.0:
                d2[0, col] += c
            else:
                slope += c
                value -= c * (q + 1.0)
        if p + 1 < K:
            d2[p + 1, col] -= 2.0 * s
        q = p + n + 1.0
        if q < K:
            i = int(q)
            d2[i, col] += c
            if i + 1 < K:
                d2[i + 1, col] += a
        return slope, value

    return SimpleNamespace(
        geometry=geometry, tail_mass=tail_mass, reach=reach,
        kept_share=kept_share, bin_vjp=bin_vjp, scatter_source=scatter_source,
    )
