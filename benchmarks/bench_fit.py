"""Per-epoch cost of ``specblur.fit`` against the blur kernels alone, in the same run.

    python benchmarks/bench_fit.py [--K 257] [--T 500] [--epochs 300] [--threads 1] [--log-every 1]

One epoch is: radius from parameter, blur, model, MSE, model VJP, blur VJP, gradient
split, history statistics and the optimiser step. Epoch times are the 10th percentile of
the history's per-epoch wall times; kernel times are the best of 50 calls on the run's
final radii. The overhead is the epoch time minus the kernel time, over the kernel time.
"""
import argparse
import numba
import numpy as np

import specblur
from specblur.kernels import MODE_CODES, cpu
from _timing import best_of, epoch_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, default=257)
    ap.add_argument("--T", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=1,
                    help="history stride; the entropy's logarithms are only taken for logged epochs")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.random((args.K, args.T))
    print(f"K={args.K} T={args.T} threads={args.threads} log_every={args.log_every}, "
          "identity model, sgd, lr 1")
    print(f"{'mode':11} {'param':9} {'kernels ms':>10} {'epoch ms':>9} {'overhead':>9}")
    for mode in specblur.MODES:
        for param in ("raw", "softplus", "sigmoid"):
            settings = dict(m_init=5.0, lam=1.0, mode=mode, param=param, log_every=args.log_every)
            specblur.fit(X, epochs=2, **settings)  # compile
            res = specblur.fit(X, epochs=args.epochs, **settings)
            # the 10th percentile: robust to other load on the machine
            epoch = float(np.percentile(epoch_seconds(res.history), 10))
            R = res.r[None].copy()
            X3, G3 = X[None], rng.standard_normal((1,) + X.shape)
            Y3, dX3, dR3 = (np.empty_like(X3) for _ in range(3))
            cons = MODE_CODES[mode]
            kern = best_of(lambda: cpu.blur_forward(X3, R, cons, Y3), 50) + best_of(
                lambda: cpu.blur_backward(X3, R, G3, cons, dX3, dR3), 50)
            print(f"{mode:11} {param:9} {kern * 1e3:10.3f} {epoch * 1e3:9.3f} "
                  f"{(epoch - kern) / kern:9.0%}")


if __name__ == "__main__":
    main()
