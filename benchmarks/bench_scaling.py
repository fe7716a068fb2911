"""Per-bin cost of one ``specblur.fit`` epoch as the input grows (identity model, one thread).

    python benchmarks/bench_scaling.py [--K 257] [--T 500 2000 8000 32000] [--bins 5e7]
                                       [--repeat 1]

Each run takes about ``--bins`` bin-epochs (at least 20 epochs); an epoch's time is the
10th percentile of the history's per-epoch wall times, robust to other load on the
machine. (Until 2026-12-01 the defaults gave the long inputs 6 epochs against hundreds
for the short ones, and their ratio moved by a tenth from run to run.) With ``--repeat N``
the lengths take turns N times and each keeps its best, so that a slow spell of a shared
machine does not fall on one length only. Printed: ns per bin per epoch for ``raw`` and
``sigmoid`` parameters (truncate mode, sgd, lr 1, m_init 5, lam 1), and each T's cost over
the first T's.
"""
import argparse

import numba
import numpy as np

import specblur
from _timing import epoch_seconds


def per_bin_ns(X, epochs, param):
    settings = dict(m_init=5.0, lam=1.0, mode="truncate", param=param, model={"kind": "identity"})
    res = specblur.fit(X, epochs=epochs, **settings)
    return float(np.percentile(epoch_seconds(res.history), 10)) / X.size * 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, default=257)
    ap.add_argument("--T", type=int, nargs="+", default=[500, 2000, 8000, 32000])
    ap.add_argument("--bins", type=float, default=5e7, help="bin-epochs per run")
    ap.add_argument("--repeat", type=int, default=1, help="turns of all lengths; best kept")
    args = ap.parse_args()
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    specblur.fit(rng.random((args.K, 20)), epochs=2, m_init=5.0, param="raw")  # compile
    specblur.fit(rng.random((args.K, 20)), epochs=2, m_init=5.0, param="sigmoid")
    print(f"K={args.K}, identity model, truncate, sgd, one thread: ns per bin per epoch")
    print(f"{'T':>6} {'epochs':>6} {'raw':>7} {'raw/T0':>7} {'sigmoid':>8} {'sig/T0':>7}")
    inputs = {T: rng.random((args.K, T)) for T in args.T}
    epochs = {T: max(20, int(args.bins / X.size)) for T, X in inputs.items()}
    best = {T: [np.inf, np.inf] for T in args.T}
    for _ in range(args.repeat):
        for T, X in inputs.items():
            for k, param in enumerate(("raw", "sigmoid")):
                best[T][k] = min(best[T][k], per_bin_ns(X, epochs[T], param))
    first = best[args.T[0]]
    for T, (raw, sig) in best.items():
        print(f"{T:6d} {epochs[T]:6d} {raw:7.1f} {raw / first[0]:7.2f} {sig:8.1f} {sig / first[1]:7.2f}")


if __name__ == "__main__":
    main()
