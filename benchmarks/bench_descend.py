"""Cost of ``objective.descend`` (everything in an epoch after the blur VJP), per bin.

    python benchmarks/bench_descend.py [--K 257] [--T 501] [--repeat 100]

For each parameterisation family (raw: ``m`` is the radius; softplus: ``r`` and ``dr/dm``
given) and optimiser, with and without the history's statistics (``log``), one call of
``descend`` on random fields, one thread. It is timed alternately with one streaming NumPy
pass over arrays of the same size (``A = M + D; B = M * D; A += M; B *= D``), and the
ratio to that pass is printed too: on a shared machine the ratio is steadier than the time.

Then ``objective.radius`` (the start of an epoch for softplus, exp and sigmoid), against the
same per-bin formula ``_terms.radius_of`` in one plain loop, which calls libm's ``exp``
once per bin and so stays scalar, as ``radius`` did before 82b3781 (then softplus also
called libm's ``log1p``).
"""
import argparse

import numba
import numpy as np

from specblur import objective
from specblur.kernels import _terms
from specblur.kernels._numba import jit
from specblur.settings import Param
from _timing import alternate

_radius_of = _terms.build(jit(inline="always")).radius_of


@jit
def _scalar_radius(m, code, r_max, r, drdm):
    for i in range(m.size):
        r[i], drdm[i] = _radius_of(m[i], code, r_max)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("K", 257), ("T", 501), ("repeat", 100)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args()
    numba.set_num_threads(1)
    n = args.K * args.T
    rng = np.random.default_rng(0)
    M, D = rng.uniform(0.5, 8.0, n), 1e-3 * rng.standard_normal(n)
    A, B = np.empty(n), np.empty(n)

    def stream():
        np.add(M, D, out=A)
        np.multiply(M, D, out=B)
        A.__iadd__(M)
        B.__imul__(D)

    print(f"K={args.K} T={args.T}, one thread, best of {args.repeat} alternating runs")
    print(f"{'param':9} {'optimizer':9} {'log':5} {'ns/bin':>7} {'/stream':>8}")
    for param, code in (("raw", int(Param.RAW)), ("softplus", int(Param.SOFTPLUS))):
        r = M if param == "raw" else np.log1p(np.exp(M))
        drdm = M if param == "raw" else 1.0 / (1.0 + np.exp(-M))
        for optimizer, opt in (("sgd", objective.SGD), ("adam", objective.ADAM)):
            for log in (False, True):
                call = _descend(M, r, D, drdm, code, log, opt)
                t_call, t_stream = alternate([call, stream], args.repeat)
                print(f"{param:9} {optimizer:9} {str(log):5} {t_call / n * 1e9:7.2f} "
                      f"{t_call / t_stream:8.2f}")
    print(f"\n{'param':9} {'radius ns/bin':>13} {'scalar loop':>12} {'ratio':>6}")
    m = rng.normal(0.0, 3.0, n)
    r, drdm = np.empty(n), np.empty(n)
    for param in (Param.SOFTPLUS, Param.EXP, Param.SIGMOID):
        code = int(param)
        t_new, t_scalar = alternate(
            [lambda: objective.radius(m, code, False, 128.0, r, drdm),
             lambda: _scalar_radius(m, code, 128.0, r, drdm)], args.repeat)
        print(f"{param.name.lower():9} {t_new / n * 1e9:13.2f} {t_scalar / n * 1e9:12.2f} "
              f"{t_scalar / t_new:6.2f}")


def _descend(m, r, dr, drdm, code, log, optimizer):
    """One ``descend`` call's closure, with its own outputs and optimiser state."""
    n = m.size
    empty = np.empty(0)
    mom1, mom2, m_next, stats = np.zeros(n), np.zeros(n), np.empty(n), np.empty(10)
    return lambda: objective.descend(m, r, dr, drdm, empty, code, 1e-8, 1.0, np.inf, log,
                                     optimizer, 1.0, 0.9, 0.999, 1e-8, 1, mom1, mom2, empty,
                                     empty, m_next, stats)


if __name__ == "__main__":
    main()
