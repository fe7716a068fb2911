"""Statistics pooled over a corpus: the runs that differ only in their input, together.

A sweep over several input files (``input.audio`` a list, a pattern or a grid axis) runs
every settings point on every input. These functions group the runs by their settings (every
setting column but ``input``) and summarise each group's per-run values by the median over
inputs and the interquartile range, which shows how much the inputs disagree.
"""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..schema import INPUT_COLUMN
from .plots import (RATIOS, RC, _shared_doc, faithfulness_ratios, run_label, setting_columns,
                    varying_settings)

__all__ = ["has_corpus", "plot_pooled_segments", "pooled_faithfulness", "pooled_segments",
           "settings_points"]

#: The columns that name a settings point in the pooled tables.
POINT_COLUMNS = ("point", "settings")


def has_corpus(runs: pd.DataFrame) -> bool:
    """Whether the runs table holds runs of more than one input file."""
    return INPUT_COLUMN in runs and runs[INPUT_COLUMN].dropna().nunique() > 1


def settings_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's settings point: the runs that differ only in their input share one.

    Parameters
    ----------
    runs : pandas.DataFrame
        The runs table (``specblur.load(...).runs``).

    Returns
    -------
    pandas.DataFrame
        One row per run: ``run_id``, ``input`` (empty for a table without that column),
        ``point`` (1, 2, ... in the order of the runs table) and ``settings`` (the settings
        that differ between the points, as :func:`~specblur.report.run_label` writes them).
    """
    cols = [c for c in setting_columns(runs) if c != INPUT_COLUMN]
    key = pd.Series(["\x1f".join(map(str, row)) for row in runs[cols].itertuples(index=False)],
                    index=runs.index, dtype=object)
    number = {k: i + 1 for i, k in enumerate(dict.fromkeys(key))}
    varying = [c for c in varying_settings(runs) if c != INPUT_COLUMN]
    labels = [run_label(row, varying) if varying else "every run" for _, row in runs.iterrows()]
    inputs = runs[INPUT_COLUMN].fillna("") if INPUT_COLUMN in runs else ""
    return pd.DataFrame({"run_id": runs["run_id"].astype(str), INPUT_COLUMN: inputs,
                         "point": key.map(number).astype(int), "settings": labels},
                        index=runs.index).reset_index(drop=True)


def _pool(df: pd.DataFrame, by: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """Median, q25 and q75 over the rows of each ``by`` group, for each column."""
    rows = []
    for key, sub in df.groupby(by, sort=False, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_inputs"] = int(sub[INPUT_COLUMN].nunique())
        for col, name in columns.items():
            values = sub[col].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            stats = np.quantile(values, [0.5, 0.25, 0.75]) if values.size else [math.nan] * 3
            row.update({f"{name} median": stats[0], f"{name} q25": stats[1],
                        f"{name} q75": stats[2]})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, "n_inputs", *(
        f"{name} {s}" for name in columns.values() for s in ("median", "q25", "q75"))])


def pooled_faithfulness(table: pd.DataFrame, runs: pd.DataFrame, F: float = 0.5) -> pd.DataFrame:
    """The headline faithfulness ratios per settings point: median over inputs and IQR.

    Parameters
    ----------
    table, runs : pandas.DataFrame
        The faithfulness tables and the runs table (``specblur.load(...).faithfulness``
        and ``.runs``).
    F : float
        The magnitude share of the ratios (see :func:`~specblur.report.faithfulness_ratios`).

    Returns
    -------
    pandas.DataFrame
        One row per settings point and test radius: ``point``, ``settings``, ``R``,
        ``n_inputs`` (inputs with a table), then ``<ratio> median``, ``<ratio> q25`` and
        ``<ratio> q75`` for ``map/random``, ``map/gradient``, ``anti/random`` and ``curve
        map/random``, as far as the tables' scores allow.
    """
    ratios = faithfulness_ratios(table, F)
    merged = ratios.merge(settings_points(runs), on="run_id")
    present = [c for c in (*RATIOS, "curve map/random") if c in merged]
    merged = merged.sort_values(["point", "R"], kind="stable")
    return _pool(merged, [*POINT_COLUMNS, "R"], {c: c for c in present})


def pooled_segments(segments: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The final radius per settings point, label and band: median over inputs and IQR.

    Each run contributes its median radius of that label and band (the ``median`` column
    of its segments table).

    Parameters
    ----------
    segments, runs : pandas.DataFrame
        The segments tables and the runs table (``specblur.load(...).segments`` and
        ``.runs``).

    Returns
    -------
    pandas.DataFrame
        ``point``, ``settings``, ``label``, ``band``, ``n_inputs`` (inputs that have the
        label), ``r median``, ``r q25``, ``r q75``.
    """
    seg = segments.assign(run_id=segments["run_id"].astype(str))
    merged = seg.merge(settings_points(runs), on="run_id")
    merged = merged.sort_values(["point", "label"], kind="stable")
    return _pool(merged, [*POINT_COLUMNS, "label", "band"], {"median": "r"})


@_shared_doc
def plot_pooled_segments(pooled: pd.DataFrame, fig: Figure | None = None,
                         title: str | None = None) -> Figure:
    """The pooled final radius by label, one panel per band, one marker per settings point.

    A marker is the median over inputs of the runs' median radius; its bar spans the
    quartiles over inputs.

    Parameters
    ----------
    pooled : pandas.DataFrame
        :func:`pooled_segments`.
    %(fig_title_returns)s
    """
    bands = list(dict.fromkeys(pooled["band"]))
    labels = sorted(pooled["label"].astype(str).unique())
    points = list(dict.fromkeys(zip(pooled["point"], pooled["settings"])))
    with matplotlib.rc_context(RC):
        if fig is None:
            fig = Figure(figsize=(max(6.0, 4.5 * len(bands)), 4.5), layout="constrained")
            FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(1, max(len(bands), 1)))
        width = 0.8 / max(len(points), 1)
        for ax, band in zip(axes, bands):
            sub = pooled[pooled["band"] == band]
            for j, (point, settings) in enumerate(points):
                rows = sub[sub["point"] == point].set_index("label").reindex(labels)
                x = np.arange(len(labels)) - 0.4 + width * (j + 0.5)
                mid = rows["r median"].to_numpy(dtype=np.float64)
                err = np.abs(np.vstack([mid - rows["r q25"].to_numpy(dtype=np.float64),
                                        rows["r q75"].to_numpy(dtype=np.float64) - mid]))
                ax.errorbar(x, mid, yerr=err, fmt="o", color=f"C{j % 10}", capsize=3,
                            label=f"{point}: {settings}")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            ax.set_title(f"band {band}")
            ax.set_xlabel("segment label")
            ax.set_ylabel("final radius r: median over inputs")
            ax.grid(alpha=0.3, axis="y")
        if points and len(points) <= 12:
            axes[-1].legend(loc="best", fontsize=7, title="settings point")
        fig.suptitle(title or "final radius by label and band, pooled over inputs "
                     "(marker: median over inputs of each run's median r; bar: IQR)")
    return fig
