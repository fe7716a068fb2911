"""Time ``blur`` + ``blur_vjp`` against baselines measured in the same run.

Baselines: (a) a naive ``@njit`` forward pass that loops over each bin's window;
(b) a dense forward + VJP that materialises the K x T x K weight tensor, as the original
ArrayFire code did; (c) where torch is installed, the same dense construction under
PyTorch autograd; and (s) one streaming pass over arrays of the same size.

    python benchmarks/bench_kernels.py [--K 257] [--T 500] [--repeat 20]
    python benchmarks/bench_kernels.py --api-ratio [--K 257] [--T 300] [--repeat 300]

``--api-ratio`` prints only the ratio of ``specblur.blur`` + ``specblur.blur_vjp`` (the public
API, one thread, radii U(0, 2K)) to the streaming pass (s), the two timed alternately in
the same process, best of ``--repeat`` each.
"""
import argparse
import math

import numba
import numpy as np
from numba import njit, prange

import specblur
from specblur.kernels import MODE_CODES, cpu
from _timing import alternate, best_of, raise_mmap_threshold


@njit(parallel=True, cache=True)
def naive_forward(X, R, Y):
    """Truncate-mode blur that visits every bin of every window: O(K T n)."""
    K, T = X.shape
    for t in prange(T):
        for i in range(K):
            Y[i, t] = 0.0
        for p in range(K):
            r = R[p, t]
            x = X[p, t]
            if r <= 1.0:
                Y[p, t] += x
                continue
            n = math.ceil(r) - 1
            S = (2 * n + 1) * r - n * (n + 1)
            for i in range(max(0, p - n), min(K, p + n + 1)):
                Y[i, t] += x * (r - abs(i - p)) / S


def dense_weights(R):
    """(T, K, K) weights W[t, i, p] and their r-derivatives, built on whole tensors."""
    K, T = R.shape
    r = R.T[:, None, :]
    d = np.abs(np.arange(K)[:, None] - np.arange(K)[None, :])[None]
    n = np.where(r > 1, np.ceil(r) - 1, 0)
    S = np.where(r > 1, (2 * n + 1) * r - n * (n + 1), 1.0)
    inside = d <= n
    W = np.where(r > 1, np.where(inside, (r - d) / S, 0.0), d == 0)
    dW = np.where((r > 1) & inside, (S - (r - d) * (2 * n + 1)) / S**2, 0.0)
    return W, dW


def dense_forward_vjp(X, R, G):
    W, dW = dense_weights(R)
    Y = np.einsum("tip,pt->it", W, X)
    dX = np.einsum("tip,it->pt", W, G)
    dR = X * np.einsum("tip,it->pt", dW, G)
    return Y, dX, dR


def torch_forward_vjp(torch, X, R, G):
    X = torch.from_numpy(X).requires_grad_()
    R = torch.from_numpy(R).requires_grad_()
    K, T = X.shape
    r = R.T[:, None, :]
    d = (torch.arange(K)[:, None] - torch.arange(K)[None, :]).abs()[None].double()
    n = torch.where(r > 1, torch.ceil(r.detach()) - 1, torch.zeros_like(r))
    S = torch.where(r > 1, (2 * n + 1) * r - n * (n + 1), torch.ones_like(r))
    W = torch.where(r > 1, torch.where(d <= n, (r - d) / S, 0.0), (d == 0).double())
    Y = torch.einsum("tip,pt->it", W, X)
    Y.backward(torch.from_numpy(G))
    return Y.detach(), X.grad, R.grad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, default=257)
    ap.add_argument("--T", type=int, default=None, help="frames (default 500, 300 with --api-ratio)")
    ap.add_argument("--repeat", type=int, default=None, help="runs (default 20, 300 with --api-ratio)")
    ap.add_argument("--api-ratio", action="store_true",
                    help="only the public API's fwd + vjp over the streaming pass, one thread")
    args = ap.parse_args()
    if args.api_ratio:
        return api_ratio(args.K, args.T or 300, args.repeat or 300)
    args.T = args.T or 500
    args.repeat = args.repeat or 20
    K, T = args.K, args.T
    rng = np.random.default_rng(0)
    X = rng.random((K, T))
    G = rng.standard_normal((K, T))
    X3, G3 = X[None], G[None]
    Y3, dX3, dR3 = (np.empty_like(X3) for _ in range(3))
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None

    stream = _streaming(X, G)
    raise_mmap_threshold()

    radii = {"U(1,3)": (1, 3), "U(0,2K)": (0, 2 * K), "U(0,4K)": (0, 4 * K)}
    threads = sorted({1, numba.config.NUMBA_NUM_THREADS})
    print(f"K={K} T={T}; times are the best of {args.repeat} runs, in ms")
    print("ours = fwd + vjp; a/fwd compares forward passes; s = one streaming pass (see code)")
    for nthreads in threads:
        numba.set_num_threads(nthreads)
        t_stream = best_of(stream, args.repeat)
        print(f"\n== {nthreads} thread(s); streaming pass (s) {t_stream * 1e3:.3f} ms")
        print(f"{'radii':9} {'mode':11} {'fwd':>7} {'vjp':>7} {'fwd+vjp':>8} {'naive(a)':>9} "
              f"{'a/fwd':>7} {'a/ours':>7} {'dense(b)':>9} {'b/ours':>7} {'torch(c)':>9} "
              f"{'c/ours':>7} {'ours/s':>7}")
        base = {}
        for label, (lo, hi) in radii.items():
            R = rng.uniform(lo, hi, (K, T))
            R3 = R[None]
            for mode, code in MODE_CODES.items():
                fwd = best_of(lambda: cpu.blur_forward(X3, R3, code, Y3), args.repeat)
                vjp = best_of(lambda: cpu.blur_backward(X3, R3, G3, code, dX3, dR3), args.repeat)
                ours = fwd + vjp
                base.setdefault(mode, ours)
                row = f"{label:9} {mode:11} {fwd*1e3:7.3f} {vjp*1e3:7.3f} {ours*1e3:8.3f} "
                if mode != "truncate":  # the baselines are truncate mode
                    row += f"{'':>9} {'':>7} {'':>7} {'':>9} {'':>7} {'':>9} {'':>7} "
                else:
                    Yn = np.empty_like(X)
                    a = best_of(lambda: naive_forward(X, R, Yn), max(3, args.repeat // 4))
                    b = best_of(lambda: dense_forward_vjp(X, R, G), 2)
                    row += f"{a*1e3:9.2f} {a/fwd:7.1f} {a/ours:7.1f} {b*1e3:9.1f} {b/ours:7.0f} "
                    if torch is not None and nthreads == 1:
                        c = best_of(lambda: torch_forward_vjp(torch, X, R, G), 2)
                        row += f"{c*1e3:9.1f} {c/ours:7.0f} "
                    else:
                        row += f"{'-':>9} {'-':>7} "
                row += f"{ours/t_stream:7.2f}"
                print(row)
        print("cost of U(0,4K) relative to U(1,3): "
              + ", ".join(f"{m} {v:.2f}" for m, v in _spread(base, rng, K, T, X3, G3, args.repeat).items()))


def _streaming(X, G):
    """One cache-resident streaming pass over arrays of the shape of ``X`` (baseline s)."""
    def stream():
        A = X + G
        B = X * G
        np.add(A, X, out=A)
        np.multiply(B, G, out=B)
    return stream


def api_ratio(K, T, repeat):
    """Public ``blur`` + ``blur_vjp`` against the streaming pass, alternating, one thread."""
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.random((K, T))
    G = rng.standard_normal((K, T))
    R = rng.uniform(0, 2 * K, (K, T))
    stream = _streaming(X, G)
    raise_mmap_threshold()
    print(f"K={K} T={T} float64, one thread, radii U(0,2K); best of {repeat} alternating runs")
    print(f"{'mode':11} {'stream ms':>9} {'api ms':>8} {'api/s':>7}")
    for mode in MODE_CODES:
        def api():
            specblur.blur(X, R, mode=mode)
            specblur.blur_vjp(X, R, G, mode=mode)
        best = alternate([stream, api], repeat)
        print(f"{mode:11} {best[0] * 1e3:9.3f} {best[1] * 1e3:8.3f} {best[1] / best[0]:7.2f}")


def _spread(base, rng, K, T, X3, G3, repeat):
    R3 = rng.uniform(0, 4 * K, (1, K, T))
    out = {}
    for mode, t13 in base.items():
        code = MODE_CODES[mode]
        Y3, dX3, dR3 = (np.empty_like(X3) for _ in range(3))
        t4k = best_of(lambda: cpu.blur_forward(X3, R3, code, Y3), repeat) + best_of(
            lambda: cpu.blur_backward(X3, R3, G3, code, dX3, dR3), repeat)
        out[mode] = t4k / t13
    return out


if __name__ == "__main__":
    main()
