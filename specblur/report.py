"""Plots and a static HTML report of a sweep's results folder (``specblur-report DIR``).

The plotting functions take the DataFrames of :func:`specblur.load` (or of
:func:`read_fields` for the large fields table), so they can be used in a notebook::

    import specblur
    from specblur import report

    res = specblur.load("results/seed-table", tables=("history", "outputs"))
    run = res.runs.iloc[0]
    fields = report.read_fields(res.path, run.run_id)          # first and last snapshot
    geo = report.read_geometry(res.path)                       # sr, n_fft, hop
    X = report.input_magnitude(res.path)                       # |STFT| of the input
    fig = report.plot_run(res.history, fields, res.outputs, run, X=X, **geo)

:func:`write_report` draws one PNG per run and one for the sweep under ``DIR/report/`` and
writes ``DIR/report.html``, a static page with relative links only, which holds a table of
the runs, their plots and ``<audio>`` players for the original and for every snapshot.

Figures are made with :class:`matplotlib.figure.Figure` on the Agg canvas, never through
``pyplot``: nothing opens a window or blocks, nothing is left open, and importing this
module does not change the backend of an interactive session.
"""
import argparse
import html
import math
import os
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import quote

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ._io import atomic_write
from .results import read_fields
from .errors import SpecblurError

__all__ = [
    "input_magnitude", "main", "plot_gradient_histograms", "plot_gradient_stats",
    "plot_loss_parts", "plot_outputs", "plot_radius_field", "plot_radius_histogram",
    "plot_radius_stats", "plot_run", "plot_spectrograms", "plot_sweep", "read_fields",
    "read_geometry", "run_label", "write_report",
]

DPI = 80
MSE_COLOUR, ENT_COLOUR = "C0", "C1"   # the log's colours: MSE in blue, entropy H in orange
IDENTITY_COLOUR = "red"               # bins with r <= 1 in the radius field
DB_RANGE = 80.0                       # dynamic range of the spectrogram plots
METRICS = ("loss", "mse", "entropy", "gmse_mean", "gmse_var", "gent_mean", "gent_var",
           "m_mean", "m_std", "m_min", "m_max", "frac_identity", "frac_negative",
           "energy_ratio")
NOT_SETTINGS = {"run_id", "status", "error", "epochs_done", "wall_seconds", "device",
                "seconds", "epoch", *METRICS}
ALWAYS_SHOWN = ("lam", "lambda_on", "mode", "param", "m_init")
TABLE_METRICS = ("loss", "mse", "entropy", "m_mean", "frac_identity", "energy_ratio")
_RC = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
       "xtick.labelsize": 9, "ytick.labelsize": 9}


# --- reading --------------------------------------------------------------------------------


def read_geometry(folder):
    """The input's ``sr``, ``n_fft`` and ``hop`` from ``<folder>/sweep.yaml``.

    Parameters
    ----------
    folder : str or os.PathLike
        A sweep's results folder.

    Returns
    -------
    dict
        ``{"sr": int or None, "n_fft": int or None, "hop": int or None}``; the values are
        None when ``sweep.yaml`` is missing or unreadable, and the plots then use frames
        and bins instead of seconds and hertz.
    """
    inp = _read_sweep(Path(folder)).get("input") or {}
    return {key: _positive_int(inp.get(key)) for key in ("sr", "n_fft", "hop")}


def input_magnitude(folder):
    """The input magnitude spectrogram ``X`` of a sweep, or None if it cannot be rebuilt.

    The input file named in ``sweep.yaml`` is analysed again when it still exists with the
    recorded sha256 (this is exact, and works for ``.npy`` inputs too); otherwise ``X`` is
    the STFT of ``audio/original.wav`` (the input as analysed).

    Parameters
    ----------
    folder : str or os.PathLike
        A sweep's results folder.

    Returns
    -------
    numpy.ndarray or None
        ``(K, T)`` magnitudes.
    """
    from .audio import load_audio, stft
    from .runner import load_input
    from .sweep_config import file_sha256

    folder = Path(folder)
    inp = _read_sweep(folder).get("input") or {}
    source = inp.get("audio") or inp.get("spectrogram")
    try:
        if source and Path(source).is_file() and inp.get("sha256") == file_sha256(source):
            return load_input(inp).mag
    except (SpecblurError, OSError, KeyError, TypeError, ValueError):
        pass
    geo = read_geometry(folder)
    original = folder / "audio" / "original.wav"
    if original.is_file() and None not in geo.values():
        try:
            return np.abs(stft(load_audio(original, geo["sr"]), geo["n_fft"], geo["hop"]))
        except SpecblurError:
            return None
    return None


def _read_sweep(folder):
    path = Path(folder) / "sweep.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _positive_int(value):
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _ordered_runs(runs, sweep):
    """The runs table in the order of ``sweep.yaml``, then any others in their own order."""
    runs = runs.copy()
    runs["run_id"] = runs["run_id"].astype(str)
    order = [str(r.get("run_id")) for r in sweep.get("runs") or [] if isinstance(r, dict)]
    rank = {rid: i for i, rid in enumerate(order)}
    runs["_rank"] = [rank.get(rid, len(rank) + i) for i, rid in enumerate(runs["run_id"])]
    return runs.sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


# --- labels ---------------------------------------------------------------------------------


def setting_columns(runs):
    """The columns of a runs table that hold settings, in table order."""
    return [c for c in runs.columns if c not in NOT_SETTINGS and not c.startswith("_")]


def varying_settings(runs):
    """The setting columns whose values differ between the runs."""
    return [c for c in setting_columns(runs) if runs[c].astype(str).nunique(dropna=False) > 1]


def _fmt(value):
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def run_label(run, keys=None):
    """A short description of a run's settings, for titles.

    Parameters
    ----------
    run : mapping or pandas.Series
        A row of the runs table.
    keys : sequence of str, optional
        Settings to name; by default λ, where it acts, the mode, the parameterisation and
        the initial radius.

    Returns
    -------
    str
        For example ``"lam=0.1, lambda_on=entropy, mode=truncate, param=raw, m_init=0.1"``.
    """
    keys = list(keys) if keys is not None else list(ALWAYS_SHOWN)
    return ", ".join(f"{k}={_fmt(run[k])}" for k in keys if k in run and not _missing(run[k]))


def _missing(value):
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


# --- per-run plots --------------------------------------------------------------------------


def _new_axes(ax, ncols=1):
    if ax is not None:
        return ax
    fig = Figure(figsize=(5.5 * ncols, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return axes


def _title(ax, text, label):
    ax.set_title(f"{label}\n{text}" if label else text)


def _finite_history(history):
    return history.sort_values("epoch").replace([np.inf, -np.inf], np.nan)


def _lambda_formula(run):
    if run is None or "lambda_on" not in run:
        return "L = c_D·D − c_H·H"
    lam = _fmt(run.get("lam", float("nan")))
    if run["lambda_on"] == "entropy":
        return f"L = D − λ·H, λ={lam}"
    return f"L = λ·D − H, λ={lam}"


def plot_loss_parts(history, run=None, ax=None, label=None):
    """The two parts of the loss over epochs: the MSE ``D`` (blue) and the entropy ``H`` (orange).

    Parameters
    ----------
    history : pandas.DataFrame
        One run's history table.
    run : mapping, optional
        The run's row of the runs table (for the formula of the loss in the title).
    ax : matplotlib.axes.Axes, optional
        Where to draw ``D``; ``H`` goes on a twin axis on the right. A new figure if None.
    label : str, optional
        A first title line, such as :func:`run_label`.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _new_axes(ax)
    h = _finite_history(history)
    ax.plot(h["epoch"], h["mse"], color=MSE_COLOUR, label="D (MSE)")
    ax.set_xlabel("epoch (updates)")
    ax.set_ylabel("D = MSE of Φ(Y) − Φ(X)", color=MSE_COLOUR)
    ax.tick_params(axis="y", colors=MSE_COLOUR)
    twin = ax.twinx()
    twin.plot(h["epoch"], h["entropy"], color=ENT_COLOUR, label="H (entropy)")
    twin.set_ylabel("H = entropy term", color=ENT_COLOUR)
    twin.tick_params(axis="y", colors=ENT_COLOUR)
    _title(ax, f"loss parts: D (blue), H (orange); {_lambda_formula(run)}", label)
    return ax


def plot_gradient_stats(history, axes=None, label=None):
    """Mean and variance over bins of the two gradient parts ``g_mse`` and ``g_ent``.

    Parameters
    ----------
    history : pandas.DataFrame
        One run's history table.
    axes : pair of matplotlib.axes.Axes, optional
        Where to draw the means and the variances. A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    pair of matplotlib.axes.Axes
    """
    axes = _new_axes(axes, ncols=2)
    h = _finite_history(history)
    ax = axes[0]
    ax.plot(h["epoch"], h["gmse_mean"], color=MSE_COLOUR)
    ax.set_ylabel("mean of g_mse = ∂(c_D·D)/∂m", color=MSE_COLOUR)
    ax.tick_params(axis="y", colors=MSE_COLOUR)
    twin = ax.twinx()
    twin.plot(h["epoch"], h["gent_mean"], color=ENT_COLOUR)
    twin.set_ylabel("mean of g_ent = ∂(−c_H·H)/∂m", color=ENT_COLOUR)
    twin.tick_params(axis="y", colors=ENT_COLOUR)
    _title(ax, "gradient parts: mean over bins", label)
    ax = axes[1]
    for col, colour, name in (("gmse_var", MSE_COLOUR, "var g_mse"),
                              ("gent_var", ENT_COLOUR, "var g_ent")):
        ax.plot(h["epoch"], h[col], color=colour, label=name)
    positive = h[["gmse_var", "gent_var"]].to_numpy()
    if np.any(positive[np.isfinite(positive)] > 0):
        ax.set_yscale("log")
    ax.set_ylabel("variance over bins (ddof 0)")
    ax.legend(loc="best")
    _title(ax, "gradient parts: variance over bins", label)
    for a in axes:
        a.set_xlabel("epoch (updates)")
    return axes


def plot_radius_stats(history, run=None, axes=None, label=None):
    """Radius statistics over epochs: mean ± std, min, max, and the identity and negative shares.

    Parameters
    ----------
    history : pandas.DataFrame
        One run's history table (its ``m_*`` columns are statistics of the parameter
        ``m``, which is the radius for the ``raw`` and ``relu`` parameterisations).
    run : mapping, optional
        The run's row, for the parameterisation in the labels.
    axes : pair of matplotlib.axes.Axes, optional
        Where to draw the statistics and the shares. A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    pair of matplotlib.axes.Axes
    """
    axes = _new_axes(axes, ncols=2)
    h = _finite_history(history)
    param = run.get("param", "raw") if run is not None else "raw"
    name = "r = m" if param in ("raw", "relu") else f"m (r = {param}(m))"
    ax = axes[0]
    ax.fill_between(h["epoch"], h["m_mean"] - h["m_std"], h["m_mean"] + h["m_std"],
                    color="C2", alpha=0.25, label="mean ± std")
    ax.plot(h["epoch"], h["m_mean"], color="C2", label="mean")
    ax.plot(h["epoch"], h["m_min"], color="C4", ls="--", label="min")
    ax.plot(h["epoch"], h["m_max"], color="C3", ls="--", label="max")
    ax.set_ylabel(f"{name} (bins)")
    ax.legend(loc="best")
    _title(ax, f"radius over epochs ({name})", label)
    ax = axes[1]
    ax.plot(h["epoch"], 100 * h["frac_identity"], color=IDENTITY_COLOUR, label="r ≤ 1 (identity)")
    ax.plot(h["epoch"], 100 * h["frac_negative"], color="C4", label="m < 0 (negative)")
    ax.plot(h["epoch"], 100 * h["energy_ratio"], color="0.4", ls=":", label="ΣY / ΣX (energy)")
    ax.set_ylabel("share of bins (%)")
    ax.set_ylim(-3, 103)
    ax.legend(loc="best")
    _title(ax, "identity and negative shares", label)
    for a in axes:
        a.set_xlabel("epoch (updates)")
    return axes


def _snapshot(fields, epoch):
    return fields[fields["epoch"] == epoch]


def _field(snap, column):
    """A long snapshot table's column as a (K, T) array."""
    k = snap["k"].to_numpy(dtype=np.int64)
    t = snap["t"].to_numpy(dtype=np.int64)
    out = np.full((int(k.max()) + 1, int(t.max()) + 1), np.nan)
    out[k, t] = snap[column].to_numpy(dtype=np.float64)
    return out


def _extent(K, T, sr, n_fft, hop):
    """imshow extent and axis labels: seconds and hertz when the geometry is known."""
    if sr and hop:
        dt = hop / sr
        x0, x1, xlabel = -0.5 * dt, (T - 0.5) * dt, "time (s)"
    else:
        x0, x1, xlabel = -0.5, T - 0.5, "frame"
    if sr and n_fft:
        df = sr / n_fft
        y0, y1, ylabel = -0.5 * df, (K - 0.5) * df, "frequency (Hz)"
    else:
        y0, y1, ylabel = -0.5, K - 0.5, "frequency bin"
    return (x0, x1, y0, y1), xlabel, ylabel


def plot_radius_field(fields, *, sr=None, n_fft=None, hop=None, epoch=None, ax=None, label=None):
    """The radius field of one snapshot as a heatmap over time and frequency.

    Bins with ``r ≤ 1`` (left as they are by the blur) are drawn in red; the colour bar
    covers the others between their 1st and 99th percentiles, on a log scale when those
    span more than a decade.

    Parameters
    ----------
    fields : pandas.DataFrame
        One run's fields rows (``epoch, k, t, r``), one or more snapshots.
    sr, n_fft, hop : int, optional
        The input's geometry: frame ``t`` is at ``t·hop/sr`` s and bin ``k`` at
        ``k·sr/n_fft`` Hz. Without them the axes are in frames and bins.
    epoch : int, optional
        The snapshot; the last one by default.
    ax : matplotlib.axes.Axes, optional
        A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _new_axes(ax)
    epoch = int(fields["epoch"].max()) if epoch is None else int(epoch)
    r = _field(_snapshot(fields, epoch), "r")
    K, T = r.shape
    extent, xlabel, ylabel = _extent(K, T, sr, n_fft, hop)
    identity = ~(r > 1)                          # NaN counts as "not blurred" too
    above = r[~identity]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=IDENTITY_COLOUR)
    if above.size:
        lo, hi = (float(v) for v in np.percentile(above, [1, 99]))
        hi = max(hi, lo * (1 + 1e-6), lo + 1e-9)
        norm = LogNorm(lo, hi) if hi > 10 * lo else Normalize(lo, hi)
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
                  (True, True): "both"}[(bool(above.min() < lo), bool(above.max() > hi))]
    else:
        norm, extend = Normalize(1.0, 2.0), "neither"
    im = ax.imshow(np.ma.masked_array(r, identity), origin="lower", aspect="auto",
                   extent=extent, cmap=cmap, norm=norm, interpolation="nearest")
    cbar = ax.figure.colorbar(im, ax=ax, extend=extend)
    cbar.set_label("radius r (bins)")
    share = 100.0 * identity.mean()
    ax.legend(handles=[Patch(color=IDENTITY_COLOUR, label=f"r ≤ 1 (identity): {share:.3g} %")],
              loc="upper right", framealpha=0.85)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, f"radius field at epoch {epoch}", label)
    return ax


def _hist(ax, values, colour, name, bins=60):
    """A histogram with log counts; heavy tails are clipped to the 0.5–99.5 % range."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ""
    lo, hi = float(values.min()), float(values.max())
    note = ""
    if hi > lo:
        counts, _ = np.histogram(values, bins=bins, range=(lo, hi))
        if counts.max() > 0.98 * values.size:   # one bin holds nearly all: zoom in
            qlo, qhi = np.percentile(values, [0.5, 99.5])
            if qhi > qlo:
                outside = int(np.sum((values < qlo) | (values > qhi)))
                lo, hi = float(qlo), float(qhi)
                note = f" ({outside} outside the 0.5–99.5 % range not shown)"
    else:                                        # one value: centre it, at its own scale
        half = 0.5 * abs(lo) if lo != 0 else 0.5
        lo, hi = lo - half, hi + half
    ax.hist(values, bins=bins, range=(lo, hi), color=colour, alpha=0.6, label=name,
            histtype="stepfilled", edgecolor=colour)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(6))      # narrow ranges of long numbers
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=True)
    ax.set_ylabel("bins (count)")
    return note


def plot_radius_histogram(fields, ax=None, label=None):
    """Histograms of the radius at the first and the last snapshot in ``fields``.

    Parameters
    ----------
    fields : pandas.DataFrame
        One run's fields rows (``epoch, r``).
    ax : matplotlib.axes.Axes, optional
        A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _new_axes(ax)
    epochs = sorted(fields["epoch"].unique())
    shown = epochs if len(epochs) <= 1 else [epochs[0], epochs[-1]]
    notes = []
    for epoch, colour in zip(shown, ("C0", "C2") if len(shown) > 1 else ("C2",)):
        notes.append(_hist(ax, _snapshot(fields, epoch)["r"], colour, f"epoch {epoch}"))
    ax.axvline(1.0, color=IDENTITY_COLOUR, ls="--", lw=1, label="r = 1")
    ax.set_xlabel("radius r (bins)")
    ax.legend(loc="upper right")
    _title(ax, "radius histogram", label)
    notes = [n for n in notes if n]
    if notes:
        ax.text(0.02, 0.98, "\n".join(n.strip(" ()") for n in notes), transform=ax.transAxes,
                ha="left", va="top", fontsize=8, color="0.3")
    return ax


def plot_gradient_histograms(fields, axes=None, label=None):
    """Histograms of ``g_mse`` and ``g_ent`` at the last snapshot in ``fields``.

    Parameters
    ----------
    fields : pandas.DataFrame
        One run's fields rows (``epoch, g_mse, g_ent``).
    axes : pair of matplotlib.axes.Axes, optional
        A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    pair of matplotlib.axes.Axes
    """
    axes = _new_axes(axes, ncols=2)
    epoch = int(fields["epoch"].max())
    snap = _snapshot(fields, epoch)
    for ax, col, colour, what in ((axes[0], "g_mse", MSE_COLOUR, "∂(c_D·D)/∂m"),
                                  (axes[1], "g_ent", ENT_COLOUR, "∂(−c_H·H)/∂m")):
        note = _hist(ax, snap[col], colour, col)
        ax.set_xlabel(f"{col} = {what} (per bin)")
        _title(ax, f"histogram of {col} at epoch {epoch}", label)
        if note:
            ax.text(0.02, 0.98, note.strip(" ()"), transform=ax.transAxes, ha="left",
                    va="top", fontsize=8, color="0.3")
    return axes


def plot_outputs(outputs, ax=None, label=None):
    """The per-dimension distribution of the model's output ``Φ(Y)`` over frames.

    The last snapshot is drawn as its 5–95 % band, median and mean; the first snapshot's
    median is drawn as a thin grey line for comparison.

    Parameters
    ----------
    outputs : pandas.DataFrame
        One run's outputs table (``epoch, dim, mean, std, q05, q50, q95``).
    ax : matplotlib.axes.Axes, optional
        A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _new_axes(ax)
    epochs = sorted(outputs["epoch"].unique())
    last = outputs[outputs["epoch"] == epochs[-1]].sort_values("dim")
    if len(epochs) > 1:
        first = outputs[outputs["epoch"] == epochs[0]].sort_values("dim")
        ax.plot(first["dim"], first["q50"], color="0.5", lw=1, label=f"median, epoch {epochs[0]}")
    ax.fill_between(last["dim"], last["q05"], last["q95"], color="C0", alpha=0.25,
                    step="mid", label="5–95 %")
    ax.plot(last["dim"], last["q50"], color="C0", drawstyle="steps-mid", label="median")
    ax.plot(last["dim"], last["mean"], color="C3", ls="none", marker=".", ms=4, label="mean")
    ax.set_xlabel("output dimension of Φ")
    ax.set_ylabel("Φ(Y) over frames (model units)")
    ax.legend(loc="best")
    _title(ax, f"output distribution per dimension, epoch {epochs[-1]}", label)
    return ax


def plot_spectrograms(X, r, mode, *, sr=None, n_fft=None, hop=None, axes=None, label=None):
    """The input spectrogram and its blur ``Y = blur(X, r, mode)``, in dB on one colour scale.

    Parameters
    ----------
    X : numpy.ndarray
        ``(K, T)`` input magnitudes (see :func:`input_magnitude`).
    r : numpy.ndarray
        ``(K, T)`` radius field (for example the last snapshot's).
    mode : {"truncate", "conserve", "renormalize"}
        The run's blur mode.
    sr, n_fft, hop : int, optional
        The input's geometry, for axes in seconds and hertz.
    axes : pair of matplotlib.axes.Axes, optional
        A new figure if None.
    label : str, optional
        A first title line.

    Returns
    -------
    pair of matplotlib.axes.Axes
    """
    from .blur_api import blur

    axes = _new_axes(axes, ncols=2)
    X = np.asarray(X, dtype=np.float64)
    Y = blur(X, np.asarray(r, dtype=np.float64), mode=mode)
    ref = max(float(X.max()), 1e-300)
    K, T = X.shape
    extent, xlabel, ylabel = _extent(K, T, sr, n_fft, hop)
    norm = Normalize(-DB_RANGE, 0.0)
    for ax, mag, what in ((axes[0], X, "before the blur: X"), (axes[1], Y, "after the blur: Y")):
        db = 20.0 * np.log10(np.maximum(mag, ref * 10 ** (-DB_RANGE / 20 - 1)) / ref)
        im = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
                       norm=norm, interpolation="nearest")
        ax.figure.colorbar(im, ax=ax).set_label("magnitude (dB re max |X|)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _title(ax, what, label)
    return axes


def _note(ax, text):
    ax.set_axis_off()
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 40)), ha="center", va="center",
            transform=ax.transAxes, color="0.3")


def _only_run(df, run_id):
    if df is None:
        return None
    if "run_id" in df.columns and run_id is not None:
        return df[df["run_id"].astype(str) == str(run_id)]
    return df


def plot_run(history, fields, outputs, run, *, sr=None, n_fft=None, hop=None, X=None, fig=None,
             keys=None):
    """Every plot of one run, on one figure of 4 × 3 panels.

    Parameters
    ----------
    history, fields, outputs : pandas.DataFrame
        The run's tables (rows of other runs are dropped). ``fields`` needs the last
        snapshot and may hold others: the radius histogram compares the first and the
        last one present (see :func:`read_fields`).
    run : mapping or pandas.Series
        The run's row of the runs table.
    sr, n_fft, hop : int, optional
        The input's geometry (see :func:`read_geometry`).
    X : numpy.ndarray, optional
        The input magnitudes (see :func:`input_magnitude`), for the spectrograms before
        and after the blur; without them those panels say why they are empty.
    fig : matplotlib.figure.Figure, optional
        The figure to draw on; a new one (on the Agg canvas) if None.
    keys : sequence of str, optional
        Settings to name in the title, besides those of :func:`run_label`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    run_id = str(run["run_id"]) if "run_id" in run else None
    history = _only_run(history, run_id)
    fields = _only_run(fields, run_id)
    outputs = _only_run(outputs, run_id)
    with matplotlib.rc_context(_RC):
        if fig is None:
            # a fixed layout: constrained layout would triple the time to draw
            fig = Figure(figsize=(17, 18))
            FigureCanvasAgg(fig)
            fig.subplots_adjust(left=0.05, right=0.96, bottom=0.035, top=0.925, wspace=0.42,
                                hspace=0.36)
        grid = fig.subplots(4, 3)
        (a_loss, a_gmean, a_gvar), (a_m, a_share, a_rhist), (a_gmse, a_gent, a_out), \
            (a_field, a_before, a_after) = grid
        if history is not None and len(history):
            plot_loss_parts(history, run, ax=a_loss)
            plot_gradient_stats(history, axes=(a_gmean, a_gvar))
            plot_radius_stats(history, run, axes=(a_m, a_share))
        else:
            for ax in (a_loss, a_gmean, a_gvar, a_m, a_share):
                _note(ax, "no history recorded")
        has_fields = fields is not None and len(fields) > 0
        if has_fields:
            plot_radius_histogram(fields, ax=a_rhist)
            plot_gradient_histograms(fields, axes=(a_gmse, a_gent))
            plot_radius_field(fields, sr=sr, n_fft=n_fft, hop=hop, ax=a_field)
        else:
            for ax in (a_rhist, a_gmse, a_gent, a_field):
                _note(ax, "no snapshot recorded")
        if outputs is not None and len(outputs):
            plot_outputs(outputs, ax=a_out)
        else:
            _note(a_out, "no output snapshot recorded")
        why = None
        if X is None:
            why = "no input audio or spectrogram found, so no spectrogram before/after the blur"
        elif not has_fields:
            why = "no snapshot recorded"
        else:
            r = _field(_snapshot(fields, int(fields["epoch"].max())), "r")
            if r.shape != np.shape(X):
                why = f"the radius field {r.shape} does not match the input {np.shape(X)}"
            elif not np.all(np.isfinite(r)):
                why = "the last radius field holds non-finite values"
            else:
                mode = run.get("mode", "truncate")
                try:
                    plot_spectrograms(X, r, mode, sr=sr, n_fft=n_fft, hop=hop,
                                      axes=(a_before, a_after))
                    a_after.set_title(f"after the blur: Y = blur(X, r at epoch "
                                      f"{int(fields['epoch'].max())}, {mode})")
                except (ValueError, SpecblurError) as exc:
                    why = f"cannot blur: {exc}"
        if why:
            _note(a_before, why)
            _note(a_after, why)
        keys = list(ALWAYS_SHOWN) + [k for k in (keys or ()) if k not in ALWAYS_SHOWN]
        status = run.get("status", "")
        head = f"run {run_id}: {run_label(run, keys)}"
        tail = f"status {status}, {_fmt(run.get('epochs_done', ''))} epochs"
        fig.suptitle("\n".join(textwrap.wrap(head, 150)) + f"\n{tail}", fontsize=14,
                     fontweight="bold")
    return fig


# --- the sweep ------------------------------------------------------------------------------


def plot_sweep(runs, history=None, fig=None, title=None):
    """A comparison across runs: final radius, MSE and identity share against λ, coloured by mode.

    Markers tell where λ acts (circle: on the entropy, square: on the MSE); failed runs
    are left out. With ``history``, a fourth panel overlays every run's mean radius.

    Parameters
    ----------
    runs : pandas.DataFrame
        The runs table.
    history : pandas.DataFrame, optional
        The history of every run (``run_id, epoch, m_mean``).
    fig : matplotlib.figure.Figure, optional
        A new figure (on the Agg canvas) if None.
    title : str, optional
        The figure's title, such as the sweep's name.

    Returns
    -------
    matplotlib.figure.Figure
    """
    panels = [("m_mean", "final mean of m (= r for raw/relu, bins)", "final mean radius", "log"),
              ("mse", "final D = MSE", "final MSE", "linear"),
              ("frac_identity", "final share of bins with r ≤ 1 (%)", "final identity share",
               "linear")]
    with matplotlib.rc_context(_RC):
        if fig is None:
            fig = Figure(figsize=(17, 4.8), layout="constrained")
            FigureCanvasAgg(fig)
        n = len(panels) + (history is not None)
        axes = np.atleast_1d(fig.subplots(1, n))
        ok = runs[runs.get("status", pd.Series("done", index=runs.index)) != "failed"]
        modes = sorted(ok["mode"].astype(str).unique()) if "mode" in ok else ["?"]
        colours = {m: f"C{i}" for i, m in enumerate(modes)}
        markers = {"entropy": "o", "mse": "s"}
        lam = ok["lam"].to_numpy(dtype=float) if "lam" in ok else np.array([])
        for ax, (col, ylabel, what, yscale) in zip(axes, panels):
            if col not in ok or not len(ok):
                _note(ax, f"no {col} recorded")
                continue
            where_col = ok["lambda_on"] if "lambda_on" in ok else pd.Series("entropy", ok.index)
            for (mode, where), group in ok.groupby([ok["mode"].astype(str), where_col]):
                y = group[col].to_numpy(dtype=float) * (100 if col == "frac_identity" else 1)
                ax.scatter(group["lam"], y, color=colours.get(mode, "k"),
                           marker=markers.get(where, "^"), s=50, alpha=0.8,
                           edgecolor="k", label=f"mode={mode}, λ on {where}")
            if lam.size and np.all(lam > 0) and lam.max() > 10 * lam.min():
                ax.set_xscale("log")
            values = ok[col].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if yscale == "log" and values.size and np.all(values > 0) and \
                    values.max() > 10 * values.min():
                ax.set_yscale("log")
            ax.set_xlabel("λ (lam)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{what} against λ, by mode")
            ax.grid(alpha=0.3)
        axes[0].legend(loc="best")
        if history is not None:
            ax = axes[-1]
            for i, (rid, h) in enumerate(history.groupby("run_id", sort=False)):
                h = _finite_history(h)
                row = runs[runs["run_id"].astype(str) == str(rid)]
                name = str(rid)
                if len(row):
                    name += ": " + run_label(row.iloc[0], ("lam", "mode"))
                ax.plot(h["epoch"], h["m_mean"], lw=1.2, label=name, color=f"C{i % 10}")
            ax.set_xlabel("epoch (updates)")
            ax.set_ylabel("mean radius r (bins)")
            ax.set_title("mean radius over epochs, every run")
            if history["run_id"].nunique() <= 12:
                ax.legend(loc="best", fontsize=7)
        if title:
            fig.suptitle(title, fontsize=14, fontweight="bold")
    return fig


# --- the report -----------------------------------------------------------------------------


def _save(fig, path, dpi):
    with matplotlib.rc_context(_RC):
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _run_png(job):
    """Draw and save one run's figure (in a worker process or in this one).

    Returns ``(run_id, png path or None, small history or None, problem or None)``; a run
    whose files cannot be read or drawn is reported on the page instead of stopping it.
    """
    folder, run, geo, X, dpi, keys = job
    folder = Path(folder)
    rid = str(run["run_id"])
    try:
        hist_path = folder / "history" / f"{rid}.parquet"
        history = pd.read_parquet(hist_path) if hist_path.is_file() else None
        fields = read_fields(folder, rid)
        out_path = folder / "outputs" / f"{rid}.parquet"
        outputs = pd.read_parquet(out_path) if out_path.is_file() else None
        if history is None and not len(fields):
            return rid, None, None, None
        fig = plot_run(history, fields, outputs, run, X=X, keys=keys, **geo)
        png = _save(fig, folder / "report" / f"{rid}.png", dpi)
    except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop the report
        problem = f"cannot draw run {rid}: {type(exc).__name__}: {exc}"
        print(f"specblur-report: warning: {problem}", file=sys.stderr)
        return rid, None, None, problem
    small = history[["run_id", "epoch", "m_mean"]] if history is not None else None
    return rid, png, small, None


def write_report(folder, *, jobs=1, dpi=DPI):
    """Draw every plot of a sweep's results folder and write ``report.html``.

    Parameters
    ----------
    folder : str or os.PathLike
        A sweep's results folder (``<out>/<name>``).
    jobs : int or None
        Worker processes (spawned) that draw the runs' figures; 1 draws them in this
        process, and None picks ``min(4, CPU count)`` for 4 runs or more, else 1. A
        script that calls this with ``jobs != 1`` needs an ``if __name__ == "__main__":``
        guard, as for any spawned process pool.
    dpi : int
        Resolution of the PNG files.

    Returns
    -------
    pathlib.Path
        ``<folder>/report.html``. The plots are ``<folder>/report/<run_id>.png`` and
        ``<folder>/report/sweep.png``; every file is written atomically.

    Raises
    ------
    SpecblurError
        If ``folder`` is not a results folder.
    """
    from .results import read_runs

    folder = Path(folder)
    if not folder.is_dir():
        raise SpecblurError(f"results folder not found: {folder}")
    if not (folder / "runs.parquet").is_file():
        raise SpecblurError(f"{folder} is not a specblur results folder (no runs.parquet)")
    sweep = _read_sweep(folder)
    try:
        runs = _ordered_runs(read_runs(folder), sweep)
    except (OSError, ValueError) as exc:
        raise SpecblurError(f"cannot read {folder / 'runs.parquet'}: {exc}") from exc
    geo = read_geometry(folder)
    X = input_magnitude(folder)
    keys = varying_settings(runs)
    jobs_list = [(str(folder), run.to_dict(), geo, X, dpi, keys) for _, run in runs.iterrows()]
    if jobs is None:
        jobs = min(4, os.cpu_count() or 1) if len(jobs_list) >= 4 else 1
    if jobs > 1 and len(jobs_list) > 1:
        import multiprocessing

        with ProcessPoolExecutor(min(jobs, len(jobs_list)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_run_png, jobs_list))
    else:
        done = [_run_png(job) for job in jobs_list]
    pngs = {rid: png for rid, png, _, _ in done}
    problems = {rid: problem for rid, _, _, problem in done if problem}
    small = [h for _, _, h, _ in done if h is not None]
    history = pd.concat(small, ignore_index=True) if small else None
    name = sweep.get("name") or folder.name
    fig = plot_sweep(runs, history, title=f"sweep {name}: {len(runs)} runs")
    sweep_png = _save(fig, folder / "report" / "sweep.png", dpi)
    # the per-label radius comparison, when the sweep wrote segments tables
    from .segments import load_segments, plot_segments
    seg = load_segments(folder)
    seg_png = _save(plot_segments(seg), folder / "report" / "segments.png", dpi) \
        if len(seg) else None
    page = _html(folder, name, runs, keys, pngs, problems, sweep_png, sweep, seg_png)
    return atomic_write(folder / "report.html", lambda tmp: Path(tmp).write_text(page, "utf-8"))


def _href(folder, path):
    """A relative, URL-quoted link from ``folder`` to ``path``."""
    return quote(Path(os.path.relpath(path, folder)).as_posix())


def _snapshot_audio(folder, run_id):
    files = []
    for wav in (folder / "audio" / run_id).glob("epoch_*.wav"):
        try:
            files.append((int(wav.stem.removeprefix("epoch_")), wav))
        except ValueError:
            continue
    return sorted(files)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 1.5em 3em; color: #222; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ccc;
         padding: .4em 0; z-index: 1; display: flex; gap: 1.5em; align-items: center; }
h1 { font-size: 1.4em; margin: .2em 0; }
table { border-collapse: collapse; font-size: .85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
tr.failed { background: #fdd; } tr.diverged { background: #ffe9c7; }
section { border-top: 2px solid #888; margin-top: 2em; scroll-margin-top: 5.5em; }
h3 { font-size: 1em; margin: .8em 0 .3em; }
img { max-width: 100%; height: auto; display: block; }
.audio { display: flex; flex-wrap: wrap; gap: .6em 1.2em; }
figure { margin: 0; } figcaption { font-size: .85em; color: #444; }
.settings { font-family: monospace; font-size: .85em; color: #333; }
pre.error { background: #fee; padding: .5em; white-space: pre-wrap; }
"""


def _html(folder, name, runs, keys, pngs, problems, sweep_png, sweep, segments_png=None):
    e = html.escape
    shown = keys or [k for k in ALWAYS_SHOWN if k in runs]
    original = folder / "audio" / "original.wav"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>specblur report: {e(name)}</title>", f"<style>{_CSS}</style></head><body>",
           "<header>", f"<h1>specblur sweep <code>{e(name)}</code></h1>"]
    if original.is_file():
        out.append(f'<figure><figcaption>original (input as analysed)</figcaption>'
                   f'<audio controls preload="metadata" src="{e(_href(folder, original))}">'
                   f'</audio></figure>')
    else:
        out.append("<p>no original audio (the input was a spectrogram)</p>")
    out.append("</header>")
    inp = sweep.get("input") or {}
    if inp:
        src = Path(str(inp.get("audio") or inp.get("spectrogram") or "")).name
        out.append(f"<p>input <code>{e(src)}</code>: sr {e(_fmt(inp.get('sr')))} Hz, "
                   f"n_fft {e(_fmt(inp.get('n_fft')))}, hop {e(_fmt(inp.get('hop')))}; "
                   f"{len(runs)} runs.</p>")
    # the table of runs
    cols = ["run"] + shown + ["status", "epochs done"] + \
        [m for m in TABLE_METRICS if m in runs] + ["wall s"]
    out.append("<table><thead><tr>" + "".join(
        f'<th class="{"text" if c in ("run", "status") else ""}">{e(c)}</th>' for c in cols)
        + "</tr></thead><tbody>")
    for _, run in runs.iterrows():
        rid = str(run["run_id"])
        cells = [f'<td class="text"><a href="#run-{e(rid)}"><code>{e(rid)}</code></a></td>']
        cells += [f"<td>{e(_fmt(run[k]))}</td>" for k in shown]
        cells.append(f'<td class="text">{e(str(run.get("status", "")))}</td>')
        cells.append(f"<td>{e(_fmt(run.get('epochs_done', '')))}</td>")
        cells += [f"<td>{e(_fmt(run[m]))}</td>" for m in TABLE_METRICS if m in runs]
        cells.append(f"<td>{e(_fmt(run.get('wall_seconds', float('nan'))))}</td>")
        status = e(str(run.get("status", "")))
        out.append(f'<tr class="{status}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out.append('<h2>Across runs</h2>')
    out.append(f'<img src="{e(_href(folder, sweep_png))}" alt="comparison across runs">')
    if segments_png:
        out.append('<h2 id="segments">Final radius by segment label and band</h2>')
        out.append(f'<img src="{e(_href(folder, segments_png))}" '
                   f'alt="final radius by segment label and band">')
    settings = setting_columns(runs)
    for _, run in runs.iterrows():
        rid = str(run["run_id"])
        out.append(f'<section id="run-{e(rid)}"><h2>run <code>{e(rid)}</code>: '
                   f"{e(run_label(run, shown))}</h2>")
        out.append('<p class="settings">' + e(", ".join(
            f"{k}={_fmt(run[k])}" for k in settings if not _missing(run[k]))) + "</p>")
        out.append(f"<p>status <b>{e(str(run.get('status', '')))}</b> after "
                   f"{e(_fmt(run.get('epochs_done', '')))} epochs, "
                   f"{e(_fmt(run.get('wall_seconds', float('nan'))))} s on "
                   f"{e(str(run.get('device', '')))}.</p>")
        if str(run.get("error", "") or ""):
            out.append(f'<pre class="error">{e(str(run["error"]))}</pre>')
        if problems.get(rid):
            out.append(f'<pre class="error">{e(problems[rid])}</pre>')
        if pngs.get(rid):
            out.append(f'<img src="{e(_href(folder, pngs[rid]))}" '
                       f'alt="plots of run {e(rid)}">')
        audio = _snapshot_audio(folder, rid)
        if audio:
            out.append("<h3>blurred audio at each snapshot (the input's phase)</h3>")
            out.append('<div class="audio">')
            for epoch, wav in audio:
                out.append(f"<figure><figcaption>epoch {epoch}</figcaption>"
                           f'<audio controls preload="metadata" src="{e(_href(folder, wav))}">'
                           f"</audio></figure>")
            out.append("</div>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- command line ---------------------------------------------------------------------------


def main(argv=None):
    """Entry point of ``specblur-report DIR [--jobs N]``: write ``DIR/report.html``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        0, or 2 with one message on stderr when ``DIR`` is not a results folder.
    """
    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(
        prog="specblur-report",
        description="Draw the plots of a sweep's results folder and write DIR/report.html.")
    parser.add_argument("folder", metavar="DIR", help="a sweep's results folder (<out>/<name>)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes that draw the runs' figures "
                             "(default: up to 4, one per CPU, for 4 runs or more)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        print(f"{parser.prog}: error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        page = write_report(args.folder, jobs=args.jobs)
    except SpecblurError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(page)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
