"""Plots (:mod:`.plots`) and the HTML page (:mod:`.page`) of a sweep's results.

The plotting functions take the DataFrames of :func:`specblur.load`; :func:`write_report`
draws them all for a results folder and writes ``report.html`` with audio players.
"""
from .page import write_report
from .plots import (faithfulness_ratios, plot_faithfulness, plot_faithfulness_summary,
                    plot_gradient_histograms, plot_gradient_stats, plot_loss_parts, plot_outputs,
                    plot_radius_field, plot_radius_histogram, plot_radius_stats, plot_run,
                    plot_segments, plot_spectrograms, plot_sweep, run_label)
from .pooled import plot_pooled_segments, pooled_faithfulness, pooled_segments

__all__ = [
    "faithfulness_ratios", "plot_faithfulness", "plot_faithfulness_summary",
    "plot_gradient_histograms", "plot_gradient_stats", "plot_loss_parts", "plot_outputs",
    "plot_pooled_segments", "pooled_faithfulness", "pooled_segments", "plot_radius_field", "plot_radius_histogram", "plot_radius_stats", "plot_run",
    "plot_segments", "plot_spectrograms", "plot_sweep", "run_label", "write_report",
]
