"""Wall time of the whole seed table with ``--jobs 2``, against the kernel floor.

    python benchmarks/bench_seed_table.py [--jobs 2] [--out /tmp/specblur-bench]

Runs ``specblur-sweep sweeps/seed_table.yaml --force`` into a scratch folder, then reads
the results: per run, the fit's own time per epoch (from the history's ``seconds``) and
the run's wall time (fit + writing tables and audio). The kernel floor (issue 12) is the
public ``specblur.blur`` + ``specblur.blur_vjp`` time of one call on the sample's 257 x 501
spectrogram (one thread, radii U(0, 2K), truncate; best of 30) x the table's total epochs /
``--jobs``. The call is timed in this process before and after the sweep, with the outputs
served from the heap as in bench_api.py: on a shared machine its speed drifts over
minutes, so the ratio is given against both.

It also times that call while ``--jobs - 1`` other processes make the same calls, as the
sweep's workers do, and prints the floor at that speed: on a machine whose cores share
their resources (hyperthreads of one core, or little memory bandwidth), a kernel is slower
when the other cores are busy, and that bound holds for any sweep on ``--jobs`` workers.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

import specblur
from _timing import best_of, epoch_seconds, raise_mmap_threshold

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sweep", default=str(ROOT / "sweeps" / "seed_table.yaml"))
    ap.add_argument("--spin", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.spin is not None:  # a busy neighbour for the contended floor
        spin(args.spin)
        return
    out = args.out or tempfile.mkdtemp(prefix="specblur-bench-")
    cmd = [sys.executable, "-m", "specblur.cli", args.sweep, "--out", out, "--jobs",
           str(args.jobs), "--force"]
    before = kernel_call()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    res = specblur.load(Path(out) / "seed-table", tables=("history",))
    last = res.history.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    runs = res.runs.set_index("run_id")
    runs["fit_s"] = last["seconds"]
    runs["ms_per_epoch"] = 1e3 * last["seconds"] / last["epoch"]
    runs["write_s"] = runs["wall_seconds"] - runs["fit_s"]
    cols = ["m_init", "lam", "lambda_on", "mode", "param", "epochs", "status", "fit_s",
            "write_s", "ms_per_epoch"]
    print(runs[cols].to_string(float_format="{:.3g}".format))
    epochs = int(runs["epochs"].sum())
    print(f"\nseed table, --jobs {args.jobs}: {wall:.1f} s wall for {epochs} epochs; "
          f"fit {runs['fit_s'].sum():.1f} s, writing {runs['write_s'].sum():.1f} s (summed over "
          f"runs); median {runs['ms_per_epoch'].median():.2f} ms per epoch per worker")
    steps = [1e3 * epoch_seconds(h.sort_values("epoch"))  # each run's epochs, ms
             for _, h in res.history.groupby("run_id")]
    print("epochs of each run, ms: 10th percentile / median / mean, from the history: "
          + ", ".join(f"{np.percentile(d, 10):.2f} / {np.median(d):.2f} / {d.mean():.2f}"
                      for d in steps))
    after = kernel_call()
    for when, call in (("before", before), ("after", after)):
        floor = call * epochs / args.jobs
        print(f"kernel floor, timed {when} the sweep: {1e3 * call:.2f} ms per blur + blur_vjp "
              f"at 257 x 501 x {epochs} epochs / {args.jobs} = {floor:.1f} s; "
              f"wall / floor = {wall / floor:.2f}")
    call = after
    if args.jobs > 1:
        env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        busy = [subprocess.Popen([sys.executable, __file__, "--spin", "20"], env=env)
                for _ in range(args.jobs - 1)]
        try:
            loaded = kernel_call(warm=8.0)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
        floor_loaded = loaded * epochs / args.jobs
        print(f"the same call while {args.jobs - 1} other process(es) make it: "
              f"{1e3 * loaded:.2f} ms ({loaded / call:.2f}x); floor at that speed "
              f"{floor_loaded:.1f} s; wall / that floor = {wall / floor_loaded:.2f}")
    print(f"results in {out}")


def kernel_call(warm=0.0):
    """Best time of one public blur + blur_vjp at the sample's 257 x 501 (one thread)."""
    call = _call()
    time.sleep(warm)  # lets the busy neighbours start up
    return best_of(call, 30)


def spin(seconds):
    """Make the calls of :func:`kernel_call` for ``seconds``."""
    call = _call()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call()


def _call():
    numba.set_num_threads(1)
    raise_mmap_threshold()
    spec = specblur.Spectrogram.from_audio(ROOT / "data" / "arctic_a0007.wav", sr=16000,
                                           n_fft=512, hop=128)
    X = spec.mag
    r = np.random.default_rng(0).uniform(0, 2 * X.shape[0], X.shape)
    G = np.ones_like(X)
    return lambda: (specblur.blur(X, r), specblur.blur_vjp(X, r, G))


if __name__ == "__main__":
    main()
