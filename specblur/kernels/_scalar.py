"""Per-bin arithmetic of the blur, shared by the CPU and the GPU kernels.

``build(jit)`` defines these functions under a given decorator: ``cpu.py`` passes
``numba.njit`` and ``gpu.py`` passes ``numba.cuda.jit(device=True)``, so both devices run
the same formulas. All quantities are float64; counts and positions stay floats until
they are clamped, so radii far beyond any integer range cannot overflow. There are no
data-dependent branches, only selects: a source with ``r <= 1`` gives no impulses and
keeps its value, so such bins are reproduced exactly.

Notation (SPEC §3): ``n = ceil(r) - 1``, ``f = r - n`` in ``(0, 1]`` and
``S = (2n + 1) r - n (n + 1) = n (n + 2 f) + f``; the second form avoids cancellation.
"""
import math
from types import SimpleNamespace


def build(jit):
    """Return the per-bin functions compiled by the decorator ``jit``."""

    @jit
    def geometry(r):
        """Return ``(n, f, S)`` for the radius ``max(r, 1)``."""
        r = max(r, 1.0)
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
    def impulses(p, K, r, x):
        """The five impulses of source ``p`` whose second running sum is ``x w(i - p; r)``.

        SPEC §5: ``f s`` at ``p - n``, ``(1 - f) s`` at ``p - n + 1``, ``-2 s`` at ``p + 1``,
        ``(1 - f) s`` at ``p + n + 1`` and ``f s`` at ``p + n + 2``, with ``s = x / S``.
        An impulse ``c`` at ``q < 0`` acts on bins ``i >= 0`` as ``c (1 - q)`` at bin 0 plus
        ``c q`` at bin 1; impulses at ``q >= K`` are moved to the unread rows ``K`` and
        ``K + 1``. Returns ``(q0, c0, q1, c1, c_bin1, s, q3, c3, c4)``: impulses ``c0`` at
        row ``q0``, ``c1`` at ``q1``, ``c_bin1`` at 1, ``-2 s`` at ``p + 1``, ``c3`` at ``q3``
        and ``c4`` at ``q3 + 1`` (rows as floats).
        """
        n, f, S = geometry(r)
        s = x / S if r > 1.0 else 0.0
        a = f * s
        c = s - a
        q = p - n
        neg0 = min(q, 0.0)
        neg1 = min(q + 1.0, 0.0)
        return (q - neg0, a * (1.0 - neg0), q + 1.0 - neg1, c * (1.0 - neg1),
                a * neg0 + c * neg1, s, min(p + n + 1.0, float(K)), c, a)

    @jit
    def kept(p, K, r, x, conserve):
        """What source ``p`` keeps for itself.

        All of ``x`` for ``r <= 1``; in conserve mode, ``x`` times the weight that would
        leave ``[0, K)``; otherwise nothing.
        """
        if not conserve:
            return x if r <= 1.0 else 0.0
        n, f, S = geometry(r)
        A = min(n, float(p))
        B = min(n, float(K - 1 - p))
        return x if r <= 1.0 else (tail_mass(n, f, A) + tail_mass(n, f, B)) * (x / S)

    @jit
    def bin_vjp(P0, P1, col, p, K, r, x, g, conserve):
        """Gradients ``(dX[p], dr[p])`` of one source bin, from prefix sums of the cotangent.

        ``P0[i, col]`` is ``sum_{k<i} G[k]`` and ``P1[i, col]`` is ``sum_{k<i} k G[k]``, so
        any window sum of ``G`` or ``i G`` costs O(1), whatever the radius. ``g`` is
        ``G[p]``.
        """
        n, f, S = geometry(r)
        A = min(n, float(p))
        B = min(n, float(K - 1 - p))
        lo = p - int(A)
        hi = p + int(B) + 1
        mid = p + 1
        s0 = P0[hi, col] - P0[lo, col]
        left = p * (P0[mid, col] - P0[lo, col]) - (P1[mid, col] - P1[lo, col])
        right = (P1[hi, col] - P1[mid, col]) - p * (P0[hi, col] - P0[mid, col])
        inv = 1.0 / S
        dx = (max(r, 1.0) * s0 - left - right) * inv  # sum of w(i - p) G[i]
        dsum = (s0 - (2.0 * n + 1.0) * dx) * inv       # sum of dw(i - p)/dr G[i]
        if conserve:
            lost = (tail_mass(n, f, A) + tail_mass(n, f, B)) * inv
            dx += lost * g
            dsum -= g * ((2.0 * n + 1.0) * lost - (n - A) - (n - B)) * inv
        if r <= 1.0:
            return g, 0.0
        return dx, x * dsum

    return SimpleNamespace(geometry=geometry, tail_mass=tail_mass, impulses=impulses,
                           kept=kept, bin_vjp=bin_vjp)
