"""Plots of a sweep's results, as functions of the DataFrames of :func:`specblur.load`.

They can be used in a notebook::

    import specblur
    from specblur import report
    from specblur.sweep.results import input_magnitude, read_fields, read_geometry

    res = specblur.load("results/seed-table", tables=("history", "outputs"))
    run = res.runs.iloc[0]
    fields = read_fields(res.path, run.run_id)          # first and last snapshot
    geo = read_geometry(res.path)                       # sr, n_fft, hop
    X = input_magnitude(res.path)                       # |STFT| of the input
    fig = report.plot_run(res.history, fields, res.outputs, run, X=X, **geo)

Figures are made with :class:`matplotlib.figure.Figure` on the Agg canvas, never through
``pyplot``: nothing opens a window or blocks, nothing is left open, and importing this
module does not change the backend of an interactive session.
"""
from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..errors import SpecblurError
from ..schema import RUN_COLUMNS, SCALE_COLUMN
from ..sweep.results import field_array

__all__ = [
    "faithfulness_ratios", "headline_fraction", "plot_faithfulness",
    "plot_faithfulness_summary", "plot_gradient_histograms", "plot_gradient_stats",
    "plot_loss_parts", "plot_outputs", "plot_radius_field", "plot_radius_histogram",
    "plot_radius_stats", "plot_run", "plot_segments", "plot_spectrograms", "plot_sweep",
    "run_label", "setting_columns", "varying_settings",
]

MSE_COLOUR, ENT_COLOUR = "C0", "C1"   # the log's colours: MSE in blue, entropy H in orange
IDENTITY_COLOUR = "red"               # bins with r <= 1 in the radius field
DB_RANGE = 80.0                       # dynamic range of the spectrogram plots
NOT_SETTINGS = {"run_id", *RUN_COLUMNS, "seconds", "epoch"}
AxesPair = Sequence[Axes]
ALWAYS_SHOWN = ("lam", "lambda_on", "mode", "param", "m_init")
RC = {"text.parse_math": False,  # labels and settings are data: "$x$" is not mathtext
      "font.size": 11, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
      "xtick.labelsize": 9, "ytick.labelsize": 9}

# Parameter entries that many plotting functions share, substituted into their docstrings
# by ``_shared_doc`` where a docstring says ``%(name)s`` (the scipy ``doccer`` convention).
_DOC_PARTS = {
    "history": "history : pandas.DataFrame\n    One run's history table.",
    "fields": "fields : pandas.DataFrame\n    One run's fields rows, as :func:`~specblur.sweep.results.read_fields` "
              "reads them",
    "ax": "ax : matplotlib.axes.Axes, optional\n    A new figure if None.",
    "axes": "axes : pair of matplotlib.axes.Axes, optional\n    A new figure if None.",
    "label": "label : str, optional\n    A first title line, such as :func:`run_label`.",
    "returns_ax": "Returns\n-------\nmatplotlib.axes.Axes",
    "returns_axes": "Returns\n-------\npair of matplotlib.axes.Axes",
}
_DOC_PARTS["fig_title_returns"] = (
    "fig : matplotlib.figure.Figure, optional\n    A new figure (on the Agg canvas) if None.\n"
    "title : str, optional\n    The figure's title.\n\nReturns\n-------\nmatplotlib.figure.Figure")
_DOC_PARTS["ax_label_returns"] = "\n".join(
    (_DOC_PARTS["ax"], _DOC_PARTS["label"], "", _DOC_PARTS["returns_ax"]))
_DOC_PARTS["axes_label_returns"] = "\n".join(
    (_DOC_PARTS["axes"], _DOC_PARTS["label"], "", _DOC_PARTS["returns_axes"]))


def _shared_doc(function):
    """Fill the ``%(name)s`` entries of ``function``'s docstring from ``_DOC_PARTS``."""
    doc = function.__doc__
    for name, text in _DOC_PARTS.items():
        doc = doc.replace(f"%({name})s", text.replace("\n", "\n    ").replace("\n    \n", "\n\n"))
    function.__doc__ = doc
    return function



# --- labels ---------------------------------------------------------------------------------


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of a runs table that hold settings, in table order."""
    return [c for c in runs.columns if c not in NOT_SETTINGS and not c.startswith("_")]


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """The setting columns whose values differ between the runs."""
    return [c for c in setting_columns(runs) if runs[c].astype(str).nunique(dropna=False) > 1]


def fmt(value: object) -> str:
    """A value as the report shows it (4 significant digits for floats)."""
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def run_label(run: Mapping, keys: Sequence[str] | None = None) -> str:
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
    return ", ".join(f"{k}={fmt(run[k])}" for k in keys if k in run and not is_missing(run[k]))


def is_missing(value: object) -> bool:
    """True for None and NaN."""
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
    lam = fmt(run.get("lam", float("nan")))
    if run["lambda_on"] == "entropy":
        return f"L = D − λ·H, λ={lam}"
    return f"L = λ·D − H, λ={lam}"


@_shared_doc
def plot_loss_parts(history: pd.DataFrame, run: Mapping | None = None, ax: Axes | None = None,
                    label: str | None = None) -> Axes:
    """The two parts of the loss over epochs: the MSE ``D`` (blue) and the entropy ``H`` (orange).

    Parameters
    ----------
    %(history)s
    run : mapping, optional
        The run's row of the runs table (for the formula of the loss in the title).
    ax : matplotlib.axes.Axes, optional
        Where to draw ``D``; ``H`` goes on a twin axis on the right. A new figure if None.
    %(label)s

    %(returns_ax)s
    """
    ax = _new_axes(ax)
    h = _finite_history(history)
    # with multi-scale training (SPEC §9.6) only rows at the run's own radii show its D
    full = h[h[SCALE_COLUMN] == 1.0] if SCALE_COLUMN in h else h
    ax.plot(full["epoch"], full["mse"], color=MSE_COLOUR, label="D (MSE)")
    ax.set_xlabel("epoch (updates)")
    ax.set_ylabel("D = MSE of Φ(Y) − Φ(X)", color=MSE_COLOUR)
    ax.tick_params(axis="y", colors=MSE_COLOUR)
    twin = ax.twinx()
    twin.plot(h["epoch"], h["entropy"], color=ENT_COLOUR, label="H (entropy)")
    twin.set_ylabel("H = entropy term", color=ENT_COLOUR)
    twin.tick_params(axis="y", colors=ENT_COLOUR)
    _title(ax, f"loss parts: D (blue), H (orange); {_lambda_formula(run)}", label)
    return ax


@_shared_doc
def plot_gradient_stats(history: pd.DataFrame, axes: AxesPair | None = None,
                        label: str | None = None) -> AxesPair:
    """Mean (first axes) and variance (second) over bins of the gradient parts ``g_mse``, ``g_ent``.

    Parameters
    ----------
    %(history)s
    %(axes_label_returns)s
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


@_shared_doc
def plot_radius_stats(history: pd.DataFrame, run: Mapping | None = None,
                      axes: AxesPair | None = None, label: str | None = None) -> AxesPair:
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
    %(label)s

    %(returns_axes)s
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


@_shared_doc
def plot_radius_field(fields: pd.DataFrame, *, sr: int | None = None, n_fft: int | None = None,
                      hop: int | None = None, epoch: int | None = None, ax: Axes | None = None,
                      label: str | None = None) -> Axes:
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
    %(ax_label_returns)s
    """
    ax = _new_axes(ax)
    epoch = int(fields["epoch"].max()) if epoch is None else int(epoch)
    r = field_array(_snapshot(fields, epoch), "r")
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


@_shared_doc
def plot_radius_histogram(fields: pd.DataFrame, ax: Axes | None = None,
                          label: str | None = None) -> Axes:
    """Histograms of the radius at the first and the last snapshot in ``fields``.

    A dashed line marks ``r = 1``: bins at or below it are left as they are.

    Parameters
    ----------
    %(fields)s (needs ``epoch, r``).
    %(ax_label_returns)s
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


@_shared_doc
def plot_gradient_histograms(fields: pd.DataFrame, axes: AxesPair | None = None,
                             label: str | None = None) -> AxesPair:
    """Histograms of ``g_mse`` and ``g_ent`` at the last snapshot in ``fields``.

    Each part gets its own axes and range: their scales differ by orders of magnitude.

    Parameters
    ----------
    %(fields)s (needs ``epoch, g_mse, g_ent``).
    %(axes_label_returns)s
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


@_shared_doc
def plot_outputs(outputs: pd.DataFrame, ax: Axes | None = None, label: str | None = None) -> Axes:
    """The per-dimension distribution of the model's output ``Φ(Y)`` over frames.

    The last snapshot is drawn as its 5–95 % band, median and mean; the first snapshot's
    median is drawn as a thin grey line for comparison.

    Parameters
    ----------
    outputs : pandas.DataFrame
        One run's outputs table (``epoch, dim, mean, std, q05, q50, q95``).
    %(ax_label_returns)s
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


@_shared_doc
def plot_spectrograms(X: np.ndarray, r: np.ndarray, mode: str, *, sr: int | None = None,
                      n_fft: int | None = None, hop: int | None = None,
                      axes: AxesPair | None = None, label: str | None = None) -> AxesPair:
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
    %(axes_label_returns)s
    """
    from ..blur_api import blur

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


def plot_run(history: pd.DataFrame | None, fields: pd.DataFrame, outputs: pd.DataFrame | None,
             run: Mapping, *, sr: int | None = None, n_fft: int | None = None,
             hop: int | None = None, X: np.ndarray | None = None, fig: Figure | None = None,
             keys: Sequence[str] | None = None) -> Figure:
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
    with matplotlib.rc_context(RC):
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
            r = field_array(_snapshot(fields, int(fields["epoch"].max())), "r")
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
        tail = f"status {status}, {fmt(run.get('epochs_done', ''))} epochs"
        fig.suptitle("\n".join(textwrap.wrap(head, 150)) + f"\n{tail}", fontsize=14,
                     fontweight="bold")
    return fig


# --- the sweep ------------------------------------------------------------------------------


def plot_sweep(runs: pd.DataFrame, history: pd.DataFrame | None = None, fig: Figure | None = None,
               title: str | None = None) -> Figure:
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
    with matplotlib.rc_context(RC):
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


# --- segments -----------------------------------------------------------------------------------


def plot_segments(table: pd.DataFrame, fig: Figure | None = None, max_runs: int = 12,
                  title: str | None = None) -> Figure:
    """Box plot of the final radius by label, one panel per band, one box per run.

    Each box is drawn from the stored statistics: the box spans q25-q75 with the median
    line and the mean as a dot, the whiskers span q05-q95.
    """
    if fig is None:
        fig = Figure(figsize=(12, 4))
    bands = list(dict.fromkeys(table["band"]))
    labels = sorted(table["label"].unique())
    runs = list(dict.fromkeys(table["run_id"]))[:max_runs]
    axes = fig.subplots(1, max(len(bands), 1), squeeze=False)[0]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    width = 0.8 / max(len(runs), 1)
    for ax, band in zip(axes, bands):
        sub = table[table["band"] == band]
        for j, rid in enumerate(runs):
            stats, pos = [], []
            for i, label in enumerate(labels):
                row = sub[(sub["run_id"] == rid) & (sub["label"] == label)]
                if row.empty:
                    continue
                row = row.iloc[0]
                stats.append({"med": row["median"], "q1": row["q25"], "q3": row["q75"],
                              "whislo": row["q05"], "whishi": row["q95"], "mean": row["mean"],
                              "label": label})
                pos.append(i - 0.4 + width * (j + 0.5))
            if stats:
                ax.bxp(stats, positions=pos, widths=width * 0.85, showfliers=False,
                       showmeans=True, patch_artist=True,
                       boxprops={"facecolor": colours[j], "alpha": 0.5},
                       meanprops={"marker": "o", "markersize": 3,
                                  "markerfacecolor": "k", "markeredgecolor": "k"})
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        lo, hi = sub["f_lo"].iloc[0], sub["f_hi"].iloc[0]
        span = f"{lo:g}-{hi:g} Hz" if math.isfinite(hi) else f">= {lo:g} Hz"
        ax.set_title(f"band {band} ({span})")
        ax.set_xlabel("segment label")
        ax.set_ylabel("final radius r")
    if len(runs) > 1:
        axes[-1].legend([Patch(facecolor=c, alpha=0.5) for c in colours], runs, fontsize=7,
                        loc="best", title="run")
    fig.suptitle(title or "final radius by segment label and band "
                 "(box q25-q75, whiskers q05-q95, dot mean)")
    return fig


# --- faithfulness (SPEC §9.5) ---------------------------------------------------------------

SCORE_COLOURS = {"map": "C0", "anti": "C3", "random": "0.35", "energy": "C2", "gradient": "C1",
                 "occlusion": "C4"}
#: The headline ratios of SPEC §9.5, as :func:`specblur.faithfulness_summary` names them.
RATIOS = ("map/random", "map/gradient", "anti/random")


def headline_fraction(table: pd.DataFrame, F: float = 0.5) -> float:
    """The fraction ``F`` of a faithfulness table closest to ``F`` (``F`` itself when present)."""
    fractions = np.unique(table["F"].to_numpy(dtype=np.float64))
    if not fractions.size:
        raise SpecblurError("the faithfulness table is empty")
    return float(fractions[np.argmin(np.abs(fractions - F))])


def faithfulness_ratios(table: pd.DataFrame, F: float = 0.5) -> pd.DataFrame:
    """The headline ratios of every run of a faithfulness table, one row per run and ``R``.

    Parameters
    ----------
    table : pandas.DataFrame
        Faithfulness tables of one or more runs (``specblur.load(...).faithfulness``).
    F : float
        The magnitude share of the point ratios; a run without it uses its closest one.

    Returns
    -------
    pandas.DataFrame
        Columns ``run_id``, ``R``, ``F`` (the share used), then those of :data:`RATIOS`
        and ``curve map/random`` that the table's scores allow (see
        :func:`specblur.faithfulness_summary`), in the table's run order.
    """
    from ..deletion import faithfulness_summary

    parts = []
    for rid, sub in table.groupby(table["run_id"].astype(str), sort=False):
        used = headline_fraction(sub, F)
        summary = faithfulness_summary(sub, F=used).reset_index()
        summary.insert(0, "run_id", rid)
        summary.insert(2, "F", used)
        parts.append(summary)
    if not parts:
        return pd.DataFrame({c: [] for c in ("run_id", "R", "F", *RATIOS)})
    out = pd.concat(parts, ignore_index=True)
    keep = [c for c in ("run_id", "R", "F", *RATIOS, "curve map/random") if c in out]
    return out[keep]


def _log_if_wide(ax, values):
    """A log y axis when the positive finite values span more than a decade."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() > 10 * values.min():
        ax.set_yscale("log", nonpositive="mask")
        return float(values.min())
    return None


@_shared_doc
def plot_faithfulness(table: pd.DataFrame, run: Mapping | str | None = None,
                      fig: Figure | None = None, title: str | None = None) -> Figure:
    """Deletion curves of one run: ``d`` against ``F``, one line per score, one panel per ``R``.

    The random baseline is drawn as its mean with a band of ± one standard deviation over
    the draws. A faithful map's curve lies below random's and gradient's, and ``anti``
    lies above. The y axis is logarithmic when the distances span more than a decade.

    Parameters
    ----------
    table : pandas.DataFrame
        A faithfulness table (:func:`specblur.faithfulness`, or a sweep's
        ``faithfulness`` table, whose rows of other runs are dropped).
    run : str or mapping, optional
        The run: its id, or its row of the runs table. Needed when ``table`` holds more
        than one run.
    %(fig_title_returns)s
    """
    from ..deletion import SCORES

    run_id = run if isinstance(run, str) or run is None else str(run["run_id"])
    table = _only_run(table, run_id)
    if "run_id" in table and table["run_id"].nunique() > 1:
        raise SpecblurError("the table holds several runs; pass run= to choose one")
    if not len(table):
        raise SpecblurError(f"no faithfulness rows for run {run_id}")
    radii = sorted(table["R"].unique())
    with matplotlib.rc_context(RC):
        if fig is None:
            fig = Figure(figsize=(6 * len(radii), 4.5), layout="constrained")
            FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(1, len(radii)))
        for ax, R in zip(axes, radii):
            sub = table[table["R"] == R]
            floor = _log_if_wide(ax, sub["d"])
            for score in [s for s in SCORES if s in set(sub["score"])]:
                s = sub[sub["score"] == score].sort_values("F")
                colour = SCORE_COLOURS.get(score, "k")
                ax.plot(s["F"], s["d"], marker="o", ms=3, color=colour, label=score,
                        lw=2.2 if score == "map" else 1.3)
                if score == "random" and np.isfinite(s["d_std"]).any():
                    lo = s["d"] - s["d_std"]
                    ax.fill_between(s["F"], lo.clip(lower=floor / 10) if floor else lo,
                                    s["d"] + s["d_std"], color=colour, alpha=0.2,
                                    label="random ± std")
            ax.set_xlabel("F: share of the total magnitude blurred")
            ax.set_ylabel("d = D(Y): output distance")
            ax.set_title(f"deletion curves at test radius R = {R:g}")
            ax.grid(alpha=0.3)
        axes[0].legend(loc="best")
        rid = run_id or (str(table["run_id"].iloc[0]) if "run_id" in table else "")
        fig.suptitle(title or f"faithfulness (SPEC §9.5) of run {rid}: bins blurred in each "
                     "score's order; lower d = the model noticed less")
    return fig


@_shared_doc
def plot_faithfulness_summary(table: pd.DataFrame, F: float = 0.5, fig: Figure | None = None,
                              max_runs: int = 24, title: str | None = None) -> Figure:
    """The headline ratios at ``F`` of every run: one panel per ``R``, one group of bars per run.

    Bars: ``map/random`` and ``map/gradient`` (a faithful map is well below 1) and
    ``anti/random`` (above 1), drawn from 1 on a log axis, with a dashed line at 1.

    Parameters
    ----------
    table : pandas.DataFrame
        Faithfulness tables of one or more runs.
    F : float
        The magnitude share (each run uses its closest fraction, see
        :func:`faithfulness_ratios`).
    max_runs : int
        At most this many runs, the first ones.
    %(fig_title_returns)s
    """
    ratios = faithfulness_ratios(table, F)
    runs = list(dict.fromkeys(ratios["run_id"]))[:max_runs]
    ratios = ratios[ratios["run_id"].isin(runs)]
    radii = sorted(ratios["R"].unique())
    present = [c for c in RATIOS if c in ratios]
    with matplotlib.rc_context(RC):
        if fig is None:
            fig = Figure(figsize=(max(6.0, 0.6 * len(runs) + 3) * len(radii), 4.5),
                         layout="constrained")
            FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(1, max(len(radii), 1)))
        width = 0.8 / max(len(present), 1)
        for ax, R in zip(axes, radii):
            sub = ratios[ratios["R"] == R].set_index("run_id").reindex(runs)
            for j, col in enumerate(present):  # bars grow from 1: below 1 they hang down
                ax.bar(np.arange(len(runs)) - 0.4 + width * (j + 0.5), sub[col] - 1.0, width,
                       bottom=1.0, color=f"C{j}", label=col)
            values = sub[present].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size and np.all(values > 0):
                ax.set_yscale("log")
            ax.axhline(1.0, color="k", ls="--", lw=1)
            ax.set_xticks(range(len(runs)))
            ax.set_xticklabels(runs, rotation=45, ha="right", fontsize=8)
            ax.set_xlabel("run")
            ax.set_ylabel(f"ratio of d at F = {fmt(float(sub['F'].iloc[0]))}" if len(sub)
                          else "ratio of d")
            ax.set_title(f"headline ratios at test radius R = {R:g}")
            ax.grid(alpha=0.3, axis="y")
        axes[0].legend(loc="best")
        fig.suptitle(title or "faithfulness across runs: map/random and map/gradient below 1, "
                     "anti/random above 1 mean a faithful map")
    return fig


def _plain_text(plot):
    """Run ``plot`` under :data:`RC`, so that no text it draws is read as mathtext."""
    @functools.wraps(plot)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return plot(*args, **kwargs)
    return wrapped


for _name in [n for n in __all__ if n.startswith("plot_")]:
    globals()[_name] = _plain_text(globals()[_name])
