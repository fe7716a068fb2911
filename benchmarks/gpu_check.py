"""One short check for a lent GPU: CUDA = CPU, kernel timings, and a batched fit on the GPU.

    python benchmarks/gpu_check.py            # on a machine with an NVIDIA GPU (< 4 min, H200)
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_check.py --tiny   # the code paths, tiny sizes

1. Agreement of the blur kernels: the largest relative CPU/CUDA difference per output in
   float64 and float32, on random inputs.
2. Kernel timings: batched fwd + VJP at B=64, K=513, T=1000 and the achieved bandwidth,
   counting the bytes that the kernels must move (inputs read, outputs written; scratch
   excluded).
3. A batched fit (``specblur.fit_batch``) of B=64 runs of the bundled sample
   (data/arctic_a0007.wav; K=257 at n_fft 512, hop 128; every other run on its first
   three quarters, so that the kernels skip padding) for 50 epochs with the identity
   and the logmel models, and with the speaker encoder (n_fft 400, hop 160) where torch
   has CUDA and the resemblyzer weights are installed: run-epochs per second on cuda (the
   whole epoch on the GPU; JIT compilation is timed apart) and on cpu (the same runs for
   3 epochs; 4 runs for the speaker encoder), and a few runs learned on the CPU for all
   their epochs must equal the GPU's as in the tests (m, r and the history to 1e-9 relative, 1e-12 absolute near
   zero; 1e-6 for the speaker encoder, checked on two runs in float64, whose LSTM runs in
   cuDNN on the GPU).

Exit status: 0 if every check passed, 1 if one failed, 2 without a usable GPU.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

import specblur
from specblur.audio import Spectrogram
from specblur.errors import SpecblurError

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "arctic_a0007.wav"
START = time.perf_counter()


def say(*args):
    print(f"[{time.perf_counter() - START:5.0f} s]", *args, flush=True)


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# --- 1. agreement of the blur kernels ---------------------------------------------------

def check_agreement(rng, tiny):
    worst = {}
    shape = (2, 9, 3) if tiny else (3, 33, 17)
    K = shape[1]
    for dtype in (np.float64, np.float32):
        for mode in specblur.MODES:
            for lo, hi in ((-1, 3), (0, 60), (0, 4 * K)):
                X = rng.random(shape).astype(dtype)
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
        say(f"agreement {dtype:7} {name:2}: max rel diff {err:.2e} (tolerance {tol:g})")
    return ok


# --- 2. kernel timings -------------------------------------------------------------------

def time_batched(cuda, rng, tiny):
    B, K, T, repeat = (2, 9, 4, 1) if tiny else (64, 513, 1000, 5)
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
            say(f"batched fwd+vjp {np.dtype(dtype).name:7} {mode:8} B={B} K={K} T={T}: "
                f"{best * 1e3:8.2f} ms, {moved / best / 1e9:7.1f} GB/s")


# --- 3. a batched fit ------------------------------------------------------------------

def sample(n_fft, hop, frames=None):
    return cut(Spectrogram.from_audio(SAMPLE, sr=16000, n_fft=n_fft, hop=hop), frames)


def cut(spec, frames):
    """``spec``'s first ``frames`` frames (all of them for None)."""
    if not frames:
        return spec
    return dataclasses.replace(spec, mag=np.ascontiguousarray(spec.mag[:, :frames]),
                               phase=None, length=None, waveform=None)


def sweep_runs(B, epochs, model):
    """B runs of a small sweep: entropy weights, boundary modes and parameterisations."""
    params = [{"param": "raw"}, {"param": "softplus"},
              {"param": "sigmoid", "r_max": 64.0}, {"param": "exp", "r_max": 64.0}]
    lams = np.logspace(-4, 0, B)
    return [{"m_init": 3.0, "lam": float(lams[i]), "mode": specblur.MODES[i % 3],
             **params[i % len(params)], "optimizer": "adam", "lr": 0.05, "epochs": epochs,
             "log_every": 5, "model": model} for i in range(B)]


def compare(got, want):
    """The largest difference of two results, as ``tests/test_batch.py`` measures it:
    of ``m`` and ``r`` relative to their largest value, and of the history's values
    relative to ``max(|value|, 1e-3)`` (so 1e-9 allows 1e-12 near zero, where statistics
    such as ``m_std`` of nearly equal ``m`` are differences of nearly equal numbers)."""
    if got.status != want.status or len(got.history) != len(want.history):
        return float("inf")
    cols = [c for c in want.history.columns if c != "seconds"]
    a, b = got.history[cols].to_numpy(float), want.history[cols].to_numpy(float)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    a, b = np.nan_to_num(a), np.nan_to_num(b)
    history = float((np.abs(a - b) / np.maximum(np.abs(b), 1e-3)).max())
    return max(rel(got.m, want.m), rel(got.r, want.r), history)


def time_fit(name, spec, model, tiny, tol, check_model=None):
    """Time fit_batch on cuda and cpu for one model; True if the checked runs agree."""
    B, epochs, cpu_epochs = (3, 3, 2) if tiny else (64, 50, 3)
    runs = sweep_runs(B, epochs, model)
    K, T = spec.mag.shape
    inputs = [spec, cut(spec, 3 * T // 4)] * (B // 2) + [spec] * (B % 2)
    t = time.perf_counter()
    specblur.fit_batch(inputs[:2], [dict(run, epochs=1) for run in runs[:2]], device="cuda")
    say(f"fit {name:8} cuda warm-up (JIT compilation, first calls): "
        f"{time.perf_counter() - t:6.1f} s")
    t = time.perf_counter()
    gpu = specblur.fit_batch(inputs, runs, device="cuda")
    dt = time.perf_counter() - t
    say(f"fit {name:8} cuda B={B} K={K} T={T} {epochs} epochs: {dt:7.2f} s, "
        f"{B * epochs / dt:9.1f} run-epochs/s")
    cpu_B = B if name != "speaker" else min(B, 4)
    specblur.fit_batch(inputs[:1], [dict(runs[0], epochs=1)])
    t = time.perf_counter()
    specblur.fit_batch(inputs[:cpu_B], [dict(run, epochs=cpu_epochs) for run in runs[:cpu_B]])
    dt_cpu = time.perf_counter() - t
    say(f"fit {name:8} cpu  B={cpu_B} K={K} T={T} {cpu_epochs} epochs: {dt_cpu:7.2f} s, "
        f"{cpu_B * cpu_epochs / dt_cpu:9.1f} run-epochs/s "
        f"(cuda/cpu: {B * epochs / dt / (cpu_B * cpu_epochs / dt_cpu):.1f}x)")
    if check_model is not None:  # checked in another precision, on fewer runs and epochs
        check_epochs = 2 if tiny else 5
        picks = [0, 1]
        runs = sweep_runs(B, check_epochs, check_model)
        gpu = specblur.fit_batch([inputs[i] for i in picks], [runs[i] for i in picks],
                                 device="cuda")
        gpu = dict(zip(picks, gpu))
    else:
        picks = sorted({0, B // 3, 2 * B // 3, B - 1})
    cpu = specblur.fit_batch([inputs[i] for i in picks], [runs[i] for i in picks])
    worst = max(compare(gpu[i], want) for i, want in zip(picks, cpu))
    ok = worst <= tol
    say(f"fit {name:8} runs {picks} cuda = cpu: max rel diff {worst:.2e} (tolerance {tol:g})"
        f" {'ok' if ok else 'FAILED'}")
    return ok


def speaker_available():
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    from specblur.speaker import missing_requirements

    problem = missing_requirements()
    if problem:
        return problem
    from numba import config

    if not torch.cuda.is_available() and not config.ENABLE_CUDASIM:
        return "torch has no CUDA"
    return None


def check_fits(tiny):
    ok = True
    frames = 4 if tiny else None
    n_fft, hop = (16, 8) if tiny else (512, 128)
    spec = sample(n_fft, hop, frames)
    ok &= time_fit("identity", spec, {"kind": "identity"}, tiny, 1e-9)
    ok &= time_fit("logmel", spec, {"kind": "logmel", "n_mels": 4 if tiny else 40}, tiny, 1e-9)
    why = speaker_available()
    if why:
        say(f"fit speaker  skipped: {why}")
        return ok
    spec = sample(400, 160, 3 if tiny else None)
    ok &= time_fit("speaker", spec, {"kind": "speaker_encoder"}, tiny, 1e-6,
                   check_model={"kind": "speaker_encoder", "dtype": "float64"})
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes, to run the code paths (e.g. in the CUDA simulator)")
    args = parser.parse_args(argv)
    from specblur.kernels._cuda import require_cuda

    try:
        cuda = require_cuda()
    except SpecblurError as exc:
        say(f"gpu_check: {exc}")
        return 2
    try:
        say("device:", cuda.get_current_device().name)
    except AttributeError:  # the simulator
        say("device: the CUDA simulator")
    rng = np.random.default_rng(0)
    ok = check_agreement(rng, args.tiny)
    time_batched(cuda, rng, args.tiny)
    ok &= check_fits(args.tiny)
    say(f"gpu_check: {'all checks passed' if ok else 'SOME CHECKS FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
