"""One short check for a lent GPU: CUDA = CPU on random inputs, then batched timings.

    python benchmarks/gpu_check.py            # on a machine with an NVIDIA GPU

Prints the largest relative CPU/CUDA difference per output in float64 and float32, then
the time of batched fwd + VJP at B=64, K=513, T=1000 and the achieved bandwidth, counting
the bytes that the kernels must move (inputs read, outputs written; scratch excluded).
"""
import time

import numpy as np

import specblur
from specblur.kernels._cuda import require_cuda


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def check_agreement(rng):
    worst = {}
    for dtype in (np.float64, np.float32):
        for mode in specblur.MODES:
            for lo, hi in ((-1, 3), (0, 60), (0, 4 * 33)):
                X = rng.random((3, 33, 17)).astype(dtype)
                R = rng.uniform(lo, hi, X.shape).astype(dtype)
                G = rng.standard_normal(X.shape).astype(dtype)
                got = [specblur.blur(X, R, mode, "cuda"), *specblur.blur_vjp(X, R, G, mode, "cuda")]
                ref = [specblur.blur(X, R, mode, "cpu"), *specblur.blur_vjp(X, R, G, mode, "cpu")]
                for name, a, b in zip(("Y", "dX", "dr"), got, ref):
                    key = (np.dtype(dtype).name, name)
                    worst[key] = max(worst.get(key, 0.0), rel(a, b))
    ok = True
    for (dtype, name), err in sorted(worst.items()):
        tol = 1e-10 if dtype == "float64" else 1e-5
        ok &= err <= tol
        print(f"agreement {dtype:7} {name:2}: max rel diff {err:.2e} (tolerance {tol:g})")
    return ok


def time_batched(cuda, rng, B=64, K=513, T=1000, repeat=10):
    for dtype in (np.float32, np.float64):
        X = cuda.to_device(rng.random((B, K, T)).astype(dtype))
        R = cuda.to_device(rng.uniform(0, 2 * K, (B, K, T)).astype(dtype))
        G = cuda.to_device(rng.standard_normal((B, K, T)).astype(dtype))
        for mode in specblur.MODES:
            def step():
                specblur.blur(X, R, mode, "cuda")
                specblur.blur_vjp(X, R, G, mode, "cuda")
                cuda.synchronize()
            step()
            best = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - t)
            item = np.dtype(dtype).itemsize
            moved = B * K * T * item * (3 + 5)  # fwd: X, R in, Y out; vjp: X, R, G in, dX, dR out
            print(f"batched fwd+vjp {np.dtype(dtype).name:7} {mode:8} B={B} K={K} T={T}: "
                  f"{best * 1e3:8.2f} ms, {moved / best / 1e9:7.1f} GB/s")


def main():
    cuda = require_cuda()
    print("device:", cuda.get_current_device().name)
    rng = np.random.default_rng(0)
    ok = check_agreement(rng)
    time_batched(cuda, rng)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
