"""``specblur.fit_batch`` against separate ``specblur.fit`` calls, in one process.

    python benchmarks/bench_lockstep.py [--epochs 30] [--repeat 2]

Two cases, each timed alternately ``--repeat`` times (best of each):

* the speaker encoder over the inputs of ``sweeps/corpus.yaml`` with its base settings
  (7 clips of different lengths): one lockstep batch against 7 fits;
* 4 runs of the identity model on the bundled sample at 257 x 501 (the seed table's
  spectrogram; truncate and conserve, sgd): the case that automatic batches leave alone.

Then how far batched speaker-encoder runs drift from the same runs alone (float32, the
default, and float64), and the memory the speaker encoder keeps for a forward pass and its VJP, per frame: the
growth of a fresh process's peak RSS for stacks of B x T frames. The sweep runner's
batch-size estimate (``sweep/runner.py``) rests on it.
"""
import argparse
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

import specblur
from specblur.audio import load_input
from specblur.sweep.config import load_sweep
from _timing import alternate

ROOT = Path(__file__).resolve().parent.parent


def report(name, inputs, runs, repeat):
    specblur.fit_batch(inputs[:2], [dict(runs[0], epochs=1)] * 2)  # JIT and model warm-up
    batched, separate = alternate([lambda: specblur.fit_batch(inputs, runs),
                                   lambda: [specblur.fit(X, **run) for X, run in zip(inputs, runs)]],
                                  repeat, warm=False)
    epochs = sum(run["epochs"] for run in runs)
    print(f"{name}: fit_batch {batched:.2f} s, separate fits {separate:.2f} s, "
          f"{epochs / batched:.1f} against {epochs / separate:.1f} run-epochs/s: "
          f"{separate / batched:.2f}x")


def batch_dependence(specs, base):
    """How far a batched run's radii are from the same run alone, in float32 and float64:
    the model rounds differently in a batch, and Adam can amplify it."""
    clips = [spec.mag[:, :100] for spec in specs[:3]]
    for dtype in ("float32", "float64"):
        run = {**base, "model": {"kind": "speaker_encoder", "dtype": dtype}, "epochs": 40,
               "snapshot_every": 40}
        batch = specblur.fit_batch(clips, run, sr=16000)
        worst = max(float(np.max(np.abs(got.r - alone.r) / alone.r)) for got, alone in
                    zip(batch, (specblur.fit(X, sr=16000, **run) for X in clips)))
        print(f"speaker encoder ({dtype}), 3 clips x 100 frames, 40 epochs: batched radii "
              f"differ from single runs by up to {worst:.1e} relative")


def _peak_rss():
    """This process's peak RSS in bytes since the last :func:`_reset_peak` (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak():
    """Reset the peak to the current RSS: a forked child starts with its parent's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def speaker_bytes(B, T):
    """Peak-RSS growth of one speaker-encoder forward + VJP on ``B x T`` frames (run in a
    fresh process: the peak of this one is already raised)."""
    from specblur.speaker import SpeakerEncoder

    model = SpeakerEncoder(16000, 400, 201)
    rng = np.random.default_rng(0)
    model.forward(rng.random((201, 50)))
    Y = rng.random((B, 201, T))
    _reset_peak()
    before = _peak_rss()
    model.vjp(Y, rng.standard_normal((B, 256, 1)))
    print(_peak_rss() - before)


def speaker_bytes_per_frame():
    for B, T in ((1, 4000), (8, 1000), (4, 711)):
        out = subprocess.run([sys.executable, __file__, "--memory", str(B), str(T)],
                             check=True, capture_output=True, text=True).stdout
        print(f"speaker encoder forward + VJP, B x T = {B} x {T}: peak RSS grew "
              f"{int(out.split()[-1]) / (B * T) / 1024:.0f} kB per frame")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--memory", type=int, nargs=2, metavar=("B", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory:
        return speaker_bytes(*args.memory)
    sweep = load_sweep(ROOT / "sweeps" / "corpus.yaml")
    specs = [load_input(inp.settings) for inp in sweep.inputs]
    base = {**sweep.runs[0].settings, "epochs": args.epochs, "snapshot_every": args.epochs}
    report(f"speaker encoder, {len(specs)} clips", specs, [base] * len(specs), args.repeat)
    batch_dependence(specs, base)
    sample = specblur.Spectrogram.from_audio(ROOT / "data" / "arctic_a0007.wav", sr=16000,
                                             n_fft=512, hop=128)
    identity = [{"model": {"kind": "identity"}, "optimizer": "sgd", "param": "raw",
                 "m_init": 5.0, "lam": lam, "mode": mode, "epochs": 5 * args.epochs,
                 "snapshot_every": 10 ** 6}
                for mode, lam in (("truncate", 1.0), ("truncate", 0.01), ("conserve", 1.0),
                                  ("truncate", 10.0))]
    report("identity model, 4 runs at 257 x 501", [sample] * 4, identity, args.repeat)
    speaker_bytes_per_frame()


if __name__ == "__main__":
    main()
