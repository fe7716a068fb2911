"""The deletion test (SPEC §9.5) of the recommended configuration's map on a clip.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_faithfulness.py \\
        [extra.wav ...] [--sweep sweeps/speaker_faithful.yaml] [--entry 0] \\
        [--set KEY=VALUE ...] [--eval-mode conserve] [--radii 16 64] [--n-random 8] \\
        [--batch 16] [--occlusion]

Fits the settings of the sweep file's runs entry ``--entry`` (merged over ``base``; entry
0 is the recommended configuration) on the sweep's input, ``data/arctic_a0007.wav``, and
on any other clips given (with the same input settings), runs
:func:`specblur.faithfulness` on each map and prints the distances and the headline ratios
at ``F = 0.5`` (with the deletion-curve means normalised by random's) and the fit and
evaluation wall times. ``--set`` overrides any fit setting (e.g. ``--set lr=0.05``).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import specblur
from specblur.audio import load_input
from specblur.deletion import faithfulness_summary
from specblur.sweep.config import load_sweep

ROOT = Path(__file__).resolve().parent.parent


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text in ("null", "None") else text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", nargs="*", type=Path, help="more clips (the sweep's input always runs)")
    ap.add_argument("--sweep", type=Path, default=ROOT / "sweeps" / "speaker_faithful.yaml")
    ap.add_argument("--entry", type=int, default=0, help="runs entry (0: the recommendation)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a fit setting, e.g. lr=0.05 or r_max=64")
    ap.add_argument("--eval-mode", default="conserve", help="boundary mode of the test blur")
    ap.add_argument("--radii", type=float, nargs="+", default=[16, 64])
    ap.add_argument("--n-random", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--occlusion", action="store_true")
    args = ap.parse_args()

    sweep = load_sweep(args.sweep)
    settings = dict(sweep.runs[args.entry].settings)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set needs KEY=VALUE, got {item!r}")
        settings[key] = _value(value)
    shown = {k: v for k, v in settings.items() if k not in ("log_every", "snapshot_every")}
    print("fit:", ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"test: mode={args.eval_mode}, radii={args.radii}, n_random={args.n_random}, "
          f"batch={args.batch}, occlusion={args.occlusion}")
    pd.set_option("display.width", 160, "display.max_columns", 20)
    for path in [Path(sweep.input["audio"]), *args.audio]:
        spec = load_input({**sweep.input, "audio": str(path)})
        K, T = spec.mag.shape
        print(f"\n== {path.name}: K={K}, T={T} ({spec.length / spec.sr:.2f} s)")
        t = time.perf_counter()
        res = specblur.fit(spec, **settings)
        fit_s = time.perf_counter() - t
        r = res.r
        last = res.history.iloc[-1]
        print(f"fit: {fit_s:.1f} s, status {res.status}, mse {last['mse']:.3g}, "
              f"r median {np.median(r):.3g}, max {r.max():.3g}, "
              f"share r<=1 {np.mean(r <= 1):.2f}")
        if res.status != "done":
            print("the fit diverged; no evaluation")
            continue
        t = time.perf_counter()
        df = specblur.faithfulness(spec, res, mode=args.eval_mode, radii=args.radii,
                                   n_random=args.n_random, batch=args.batch,
                                   occlusion=args.occlusion, seed=settings["seed"])
        eval_s = time.perf_counter() - t
        print(f"evaluation: {eval_s:.1f} s ({df.attrs['model_calls']} model calls, "
              f"batched={df.attrs['batched']}, {len(df)} rows)")
        at = df[np.isclose(df.F, 0.5)]
        table = at.pivot_table(index="R", columns="score", values="d", sort=False)
        print("\nd at F = 0.5 (random: the mean over the draws, and their std)")
        std = at[at.score == "random"].set_index("R").d_std
        table["random std"] = std
        print(table.to_string(float_format=lambda v: f"{v:.3g}"))
        print("\nratios at F = 0.5, and curve means (F = 0.1 ... 0.9) over random's")
        print(faithfulness_summary(df, F=0.5).T.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
