"""Run-epochs per second of a sweep in lockstep batches against ``--batch 1``, side by side.

    python benchmarks/bench_batch.py [sweeps/corpus.yaml] [--epochs 40] [--jobs 1 2]
                                     [--repeat 1]

Runs the sweep file's runs (by default the speaker encoder over the bundled sample and the
six corpus clips) through ``specblur.sweep.runner.run_sweep`` twice per ``--jobs`` value,
into temporary folders: with ``batch=1`` (each run alone, the behaviour before lockstep
batches) and with the automatic batch size; the two alternate ``--repeat`` times and the
best wall time of each counts. ``--epochs`` shortens every run (the per-epoch cost does
not depend on it); the faithfulness evaluation and the segment tables, fixed costs after
the runs, are left out. Prints run-epochs per second
and their ratio, and the peak RSS of this process (the sweep with ``--jobs 1`` runs in it).

It then times the model alone, as a batch epoch calls it: one forward and one VJP per
input, against one forward and one VJP of the zero-padded stack of all inputs (with
``lengths=`` where the model takes them), alternating, best of ``--repeat`` + 2. This
speed-up bounds the sweep's when the model takes most of an epoch, as the speaker encoder
does. (A model without ``lengths=`` is batched only over inputs of equal length, so for
it the stack of all inputs is a loose bound.) Beside it, the time the model's calls and
the blur kernels' calls took inside the fastest ``--jobs 1`` sweep of each kind, per
epoch of all the runs, and the rest of the wall time.
"""
import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _timing import alternate
from specblur.audio import load_input
from specblur.kernels import cpu
from specblur.models import make_model
from specblur.sweep.config import load_sweep
from specblur.sweep.runner import run_sweep


def shortened(path, epochs, folder):
    """A copy of the sweep file with ``epochs`` per run, no evaluation or segments, and
    absolute inputs."""
    spec = yaml.safe_load(Path(path).read_text())
    spec.pop("evaluate", None)
    spec["base"] = {**spec.get("base", {}), "epochs": epochs, "snapshot_every": epochs,
                    "log_every": max(1, epochs // 4)}
    audio = spec["input"]["audio"]
    audio = audio if isinstance(audio, list) else [audio]
    spec["input"]["audio"] = [str((Path(path).parent / a).resolve()) for a in audio]
    spec["input"].pop("segments", None)  # a fixed cost after the runs, the same for both
    out = Path(folder) / "bench.yaml"
    out.write_text(yaml.safe_dump(spec))
    return load_sweep(out)


def timed(sweep, jobs, batch, folder, clocks):
    """Wall seconds of the sweep, and the seconds of each clock's calls (this process only)."""
    for clock in clocks:
        clock[0] = 0.0
    start = time.perf_counter()
    runs = run_sweep(sweep, out=folder, jobs=jobs, batch=batch, force=True)
    wall = time.perf_counter() - start
    if not (runs["status"] == "done").all():
        sys.exit(f"a run did not finish: {runs[['run_id', 'status', 'error']]}")
    return (wall, *(clock[0] for clock in clocks))


def clock_calls(owner, names):
    """Make each ``owner.<name>`` add its seconds to the returned ``[0.0]``."""
    clock = [0.0]
    for name in names:
        function = getattr(owner, name)

        def timed_call(*args, _function=function, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                clock[0] += time.perf_counter() - start

        setattr(owner, name, timed_call)
    return clock


def model_speedup(sweep, repeat):
    """Seconds of the model's forward + VJP of every input one by one, and of one stack of
    them (the first run's model; inputs as the sweep loads them); the model's class; and the
    stack's frames over the inputs' (what zero padding adds)."""
    specs = [load_input(inp.settings) for inp in sweep.inputs]
    first = specs[0]
    model = make_model(sweep.runs[0].settings.model, sr=first.sr, n_fft=first.n_fft,
                       n_bins=first.mag.shape[0])
    mags = [spec.mag for spec in specs]
    lengths = [mag.shape[1] for mag in mags]
    stack = np.zeros((len(mags), mags[0].shape[0], max(lengths)))
    for i, mag in enumerate(mags):
        stack[i, :, :mag.shape[1]] = mag
    outs = [model.forward(mag) for mag in mags]
    ragged = {"lengths": lengths} if getattr(model, "supports_lengths", False) else {}

    def alone():
        for mag, out in zip(mags, outs):
            model.forward(mag)
            model.vjp(mag, np.ones_like(out))

    def together():
        out = model.forward(stack, **ragged)
        model.vjp(stack, np.ones_like(out), **ragged)

    each, batch = alternate([alone, together], repeat + 2)
    return each, batch, type(model), stack.shape[0] * stack.shape[2] / sum(lengths)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", nargs="?", default="sweeps/corpus.yaml")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = shortened(args.sweep, args.epochs, tmp)
        each, together, model_class, padded = model_speedup(sweep, args.repeat)
        clocks = (clock_calls(model_class, ("forward", "vjp")),
                  clock_calls(cpu, ("blur_forward", "blur_backward")))
        inside = {}
        n = len(sweep.runs) * args.epochs
        print(f"{args.sweep}: {len(sweep.runs)} runs x {args.epochs} epochs = {n} run-epochs")
        print(f"{'jobs':>4} {'batch 1 s':>10} {'auto s':>8} {'batch 1 ep/s':>13} "
              f"{'auto ep/s':>10} {'speed-up':>9}")
        for jobs in args.jobs:
            best = {1: float("inf"), None: float("inf")}
            for _ in range(args.repeat):
                for batch in (1, None):
                    wall, *parts = timed(sweep, jobs, batch, Path(tmp) / f"out-{jobs}-{batch}",
                                         clocks)
                    if wall < best[batch]:
                        best[batch] = wall
                        if jobs == 1:
                            inside[batch] = (wall, *parts)
            print(f"{jobs:4d} {best[1]:10.1f} {best[None]:8.1f} {n / best[1]:13.1f} "
                  f"{n / best[None]:10.1f} {best[1] / best[None]:8.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (the --jobs 1 sweeps run in it): {peak:.0f} MB")
    print(f"model alone, forward + VJP of all {len(sweep.inputs)} inputs: one by one "
          f"{1e3 * each:.0f} ms, as one stack {1e3 * together:.0f} ms: {each / together:.2f}x "
          f"(the stack has {padded:.2f} times the inputs' frames)")
    if inside:  # per batch kind: wall, model and kernels, in ms per epoch of all runs
        ms = {b: [1e3 * t / (args.epochs + 1) for t in times] for b, times in inside.items()}
        print("inside the fastest --jobs 1 sweeps, ms per epoch of all runs (batch 1, auto):")
        for i, name in ((1, "model"), (2, "blur kernels")):
            print(f"  {name:<13} {ms[1][i]:7.1f} {ms[None][i]:7.1f}  {ms[1][i] / ms[None][i]:.2f}x")
        rest = {b: t[0] - t[1] - t[2] for b, t in ms.items()}
        print(f"  {'the rest':<13} {rest[1]:7.1f} {rest[None]:7.1f}  (the objective, copies, "
              "Python, and each run's set-up and writing, spread over the epochs)")


if __name__ == "__main__":
    main()
