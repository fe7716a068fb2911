"""What the GE2E speaker encoder listens to: the recommended configuration on several clips.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/speaker_findings.py \\
        [clip.wav ...] [--sweep sweeps/speaker_faithful.yaml] [--entry 0] [--seed S]
        [--out findings.csv]

For each clip (default: the bundled sample and every clip of ``data/corpus/``) it fits the
configuration of the sweep file's runs entry ``--entry`` (merged over ``base``; entry 0 is
the recommendation), with the sweep's input settings, then

* runs the energy-matched deletion test (SPEC §9.5) at R = 16 and 64 and prints the
  headline ratios at F = 0.5 against the must-haves of the recommendation;
* summarises the final radius by frequency band and by segment label: the clip's
  ``<stem>.TextGrid`` where there is one (the sample's labels ``sil`` / ``C`` / ``V``),
  else the automatic labels ``silence`` / ``unvoiced`` / ``voiced`` (pYIN and energy).

The tables are printed as text; ``--out`` also writes the per-clip rows as CSV.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import specblur
from specblur.audio import load_input
from specblur.deletion import faithfulness, faithfulness_summary
from specblur.segmentation import DEFAULT_BANDS, segment_stats
from specblur.sweep.config import load_sweep

ROOT = Path(__file__).resolve().parent.parent
MUST = {"map/random": 0.2, "map/gradient": 0.5, "anti/random": 1.2}


def clip_labels(path, spec):
    """The clip's TextGrid labels if it has one, else the automatic ones."""
    grid = path.with_suffix(".TextGrid")
    source = grid if grid.is_file() else "auto"
    return specblur.segments(source, sr=spec.sr, hop=spec.hop, n_frames=spec.mag.shape[1],
                             waveform=spec.waveform), "TextGrid" if grid.is_file() else "auto"


def study(path, sweep, settings, radii, seed):
    """Fit, test and summarise one clip; returns (ratio rows, segment rows)."""
    spec = load_input({**sweep.input, "audio": str(path), "spectrogram": None})
    start = time.perf_counter()
    res = specblur.fit(spec, **settings)
    fit_s = time.perf_counter() - start
    K, T = spec.mag.shape
    ratios = {"clip": path.name, "seconds_audio": spec.length / spec.sr, "fit_s": fit_s,
              "status": res.status, "r_max_seen": float(res.r.max()),
              "finite": bool(np.isfinite(res.r).all()), "bound_10K": bool(res.r.max() <= 10 * K)}
    if res.status != "done":
        return [ratios], pd.DataFrame()
    df = faithfulness(spec, res, radii=radii, seed=seed)
    summary = faithfulness_summary(df, F=0.5)
    rows = []
    for R, row in summary.iterrows():
        rows.append({**ratios, "R": R, **{k: row[k] for k in (*MUST, "energy/random",
                                                              "gradient/random")}})
    labels, kind = clip_labels(path, spec)
    k, t = np.divmod(np.arange(K * T), T)
    fields = pd.DataFrame({"run_id": path.stem, "epoch": settings["epochs"], "k": k, "t": t,
                           "r": res.r.ravel()})
    seg = segment_stats(fields, labels, sr=spec.sr, n_fft=spec.n_fft)
    seg = seg.merge(kept_shares(res.r, spec, labels, res.settings["r_max"]),
                    on=["label", "band"], how="left")
    seg.insert(0, "labels", kind)
    seg.insert(0, "clip", path.name)
    return rows, seg


def kept_shares(r, spec, labels, r_max):
    """Per label and band: the share of bins the map keeps sharp (``r < r_max / 2``) and
    the share of that cell's magnitude they hold."""
    freq = np.arange(r.shape[0]) * spec.sr / spec.n_fft
    out = []
    for label, frames in labels.groupby("label")["t"]:
        cols = frames.to_numpy()
        for band, (lo, hi) in DEFAULT_BANDS.items():
            rows = (freq >= lo) & (freq < (np.inf if hi is None else hi))
            rr, xx = r[np.ix_(rows, cols)], spec.mag[np.ix_(rows, cols)]
            kept = rr < r_max / 2
            out.append({"label": label, "band": band, "kept_bins": kept.mean(),
                        "kept_magnitude": xx[kept].sum() / xx.sum() if xx.sum() else np.nan})
    return pd.DataFrame(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--sweep", type=Path, default=ROOT / "sweeps" / "speaker_faithful.yaml")
    ap.add_argument("--entry", type=int, default=0, help="which runs entry (0: the recommendation)")
    ap.add_argument("--radii", type=float, nargs="+", default=[16, 64])
    ap.add_argument("--seed", type=int, default=None,
                    help="the fit's seed (multi-scale draws) and the test's; default the sweep's")
    ap.add_argument("--out", type=Path, help="also write the rows as CSV (<out> and <out>.segments.csv)")
    args = ap.parse_args()
    clips = args.clips or [ROOT / "data" / "arctic_a0007.wav",
                           *sorted((ROOT / "data" / "corpus").glob("*.wav"))]
    sweep = load_sweep(args.sweep)
    settings = dict(sweep.runs[args.entry].settings)
    if args.seed is not None:
        settings["seed"] = args.seed
    print("configuration:", ", ".join(f"{k}={v}" for k, v in settings.items()
                                      if k not in ("log_every", "snapshot_every")))
    ratio_rows, seg_frames = [], []
    for path in clips:
        rows, seg = study(Path(path), sweep, settings, args.radii, settings["seed"])
        ratio_rows += rows
        seg_frames.append(seg)
        print(f"{Path(path).name}: done ({rows[0]['fit_s']:.1f} s fit)", flush=True)
    ratios = pd.DataFrame(ratio_rows)
    segs = pd.concat(seg_frames, ignore_index=True)
    fmt = {"float_format": lambda v: f"{v:.3g}"}
    print("\n## Deletion test at F = 0.5 (lower map/random and map/gradient are better)\n")
    print(ratios.to_string(index=False, **fmt))
    for name, limit in MUST.items():
        if name in ratios:
            worst = ratios[name].max() if name != "anti/random" else ratios[name].min()
            ok = worst <= limit if name != "anti/random" else worst >= limit
            print(f"worst {name}: {worst:.3f} ({'meets' if ok else 'misses'} "
                  f"{'<=' if name != 'anti/random' else '>='} {limit})")
    if len(segs):
        print("\n## Final radius by band and segment label (median [q25, q75])\n")
        segs["cell"] = [f"{m:.3g} [{a:.3g}, {b:.3g}]" for m, a, b in
                        zip(segs["median"], segs["q25"], segs["q75"])]
        wide = segs.pivot_table(index=["clip", "labels", "label"], columns="band",
                                values="cell", aggfunc="first")
        print(wide.to_string())
        for column, what in (("kept_bins", "share of bins kept sharp (r < r_max / 2)"),
                             ("kept_magnitude", "share of the magnitude in those bins")):
            print(f"\n## {what}, per clip\n")
            print(segs.pivot_table(index=["clip", "labels", "label"], columns="band",
                                   values=column).to_string(float_format=lambda v: f"{v:.3f}"))
            pooled = segs.groupby(["labels", "label", "band"])[column].median().unstack("band")
            print(f"\n## {what}: median over clips\n")
            print(pooled.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.out:
        ratios.to_csv(args.out, index=False)
        segs.to_csv(args.out.with_suffix(".segments.csv"), index=False)


if __name__ == "__main__":
    main()
