"""Fit a radius map on a clip, then run the energy-matched deletion test (SPEC §9.5).

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_faithfulness.py \\
        [extra.wav ...] [--model speaker_encoder] [--param exp] [--lam 1e6] \\
        [--lambda-on mse] [--mode conserve] [--optimizer adam] [--lr 0.01] [--epochs 300] \\
        [--m-init 1.0] [--set KEY=VALUE ...] [--eval-mode conserve] [--radii 16 64] \\
        [--n-random 8] [--batch 16] [--occlusion]

Loads ``data/arctic_a0007.wav`` (and any files given) at sr 16000, n_fft 400, hop 160,
fits with ``specblur.fit``, evaluates ``specblur.faithfulness`` on the map,
and prints the distances and the headline ratios at ``F = 0.5`` (and the deletion-curve
means normalised by random's), with the fit and evaluation wall times. ``--set`` passes
any other fit setting (e.g. ``--set r_max=800`` where fit supports it).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import specblur
from specblur.audio import Spectrogram
from specblur.deletion import faithfulness, faithfulness_summary

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "arctic_a0007.wav"


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", nargs="*", type=Path, help="more clips (the sample is always run)")
    ap.add_argument("--model", default="speaker_encoder", help="model kind (default: %(default)s)")
    ap.add_argument("--param", default="exp")
    ap.add_argument("--lam", type=float, default=1e6)
    ap.add_argument("--lambda-on", default="mse")
    ap.add_argument("--mode", default="conserve", help="boundary mode of the fit")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--m-init", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other fit setting, e.g. r_max=800 or tv=0.1 where fit has them")
    ap.add_argument("--normalize-dbfs", type=float, default=None)
    ap.add_argument("--eval-mode", default="conserve", help="boundary mode of the test blur")
    ap.add_argument("--radii", type=float, nargs="+", default=[16, 64])
    ap.add_argument("--n-random", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--occlusion", action="store_true")
    args = ap.parse_args()

    settings = dict(param=args.param, lam=args.lam, lambda_on=args.lambda_on, mode=args.mode,
                    optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
                    m_init=args.m_init, seed=args.seed, model={"kind": args.model},
                    log_every=max(1, args.epochs // 10))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set needs KEY=VALUE, got {item!r}")
        settings[key] = _value(value)
    shown = {k: v for k, v in settings.items() if k != "log_every"}
    print("fit:", ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"test: mode={args.eval_mode}, radii={args.radii}, n_random={args.n_random}, "
          f"batch={args.batch}, occlusion={args.occlusion}")
    pd.set_option("display.width", 160, "display.max_columns", 20)
    for path in [SAMPLE, *args.audio]:
        spec = Spectrogram.from_audio(path, sr=16000, n_fft=400, hop=160,
                                      normalize_dbfs=args.normalize_dbfs)
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
        df = faithfulness(spec, res, mode=args.eval_mode, radii=args.radii,
                          n_random=args.n_random, batch=args.batch, occlusion=args.occlusion,
                          seed=args.seed)
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
