"""Wall time of the whole seed table with ``--jobs 2``, and where the time goes.

    python benchmarks/bench_seed_table.py [--jobs 2] [--out /tmp/specblur-bench]

Runs ``specblur-sweep sweeps/seed_table.yaml --force`` into a scratch folder, then reads
the results: per run, the fit's own time per epoch (from the history's ``seconds``) and
the run's wall time (fit + writing tables and audio).
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import specblur

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sweep", default=str(ROOT / "sweeps" / "seed_table.yaml"))
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="specblur-bench-")
    cmd = [sys.executable, "-m", "specblur.cli", args.sweep, "--out", out, "--jobs",
           str(args.jobs), "--force"]
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
    print(f"results in {out}")


if __name__ == "__main__":
    main()
