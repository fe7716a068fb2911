"""The static HTML report of a sweep's results folder (``specblur-report DIR``).

:func:`write_report` draws one PNG per run and one for the sweep under ``DIR/report/`` and
writes ``DIR/report.html``, a static page with relative links only, which holds a table of
the runs, their plots and ``<audio>`` players for every input as analysed and for every
snapshot. When the sweep evaluated its runs (``evaluate: faithfulness``), a section compares
the runs' faithfulness and every run gets its deletion curves. A sweep over several inputs
also gets a section that pools the segment and faithfulness statistics over the inputs
(:mod:`.pooled`).
"""
from __future__ import annotations

import contextlib
import html
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import quote

import matplotlib
import pandas as pd

from .._io import (atomic_write, exit_with_parent, folder_lock, remove_dead_temporaries,
                   write_denied)
from ..errors import SpecblurError
from ..schema import INPUT_COLUMN, is_run_id
from ..sweep.results import (input_magnitude, load_faithfulness, load_segments, ordered_runs,
                             original_audio, read_fields, read_geometry, read_runs, read_sweep)
from .plots import (ALWAYS_SHOWN, RC, faithfulness_ratios, fmt, is_missing, plot_faithfulness,
                    plot_faithfulness_summary, plot_run, plot_segments, plot_sweep, run_label,
                    setting_columns, varying_settings)
from .pooled import has_corpus, plot_pooled_segments, pooled_faithfulness, pooled_segments

__all__ = ["DPI", "write_report"]

DPI = 80
TABLE_METRICS = ("loss", "mse", "entropy", "m_mean", "frac_identity", "energy_ratio")


def _save(fig, path, dpi):
    with matplotlib.rc_context(RC):
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _faithfulness_png(folder, run, dpi):
    """Draw and save one run's deletion curves, or return None when it has no table."""
    path = folder / "faithfulness" / f"{run['run_id']}.parquet"
    if not path.is_file():
        return None
    fig = plot_faithfulness(pd.read_parquet(path), run)
    return _save(fig, folder / "report" / f"{run['run_id']}-faithfulness.png", dpi)


def _run_png(job):
    """Draw and save one run's figures (in a worker process or in this one).

    Returns ``(run_id, png path or None, small history or None, problem or None,
    deletion-curve png or None)``; a run whose files cannot be read or drawn is reported
    on the page instead of stopping it.
    """
    folder, run, geo, X, dpi, keys = job
    folder = Path(folder)
    rid = str(run["run_id"])
    try:
        faith_png = _faithfulness_png(folder, run, dpi)
    except Exception as exc:  # noqa: BLE001 - the run's other plots are still drawn
        faith_png = None
        print(f"specblur-report: warning: cannot draw the faithfulness of run {rid}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
    try:
        hist_path = folder / "history" / f"{rid}.parquet"
        history = pd.read_parquet(hist_path) if hist_path.is_file() else None
        fields = read_fields(folder, rid)
        out_path = folder / "outputs" / f"{rid}.parquet"
        outputs = pd.read_parquet(out_path) if out_path.is_file() else None
        if history is None and not len(fields):
            return rid, None, None, None, faith_png
        fig = plot_run(history, fields, outputs, run, X=X, keys=keys, **geo)
        png = _save(fig, folder / "report" / f"{rid}.png", dpi)
    except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop the report
        problem = f"cannot draw run {rid}: {type(exc).__name__}: {exc}"
        print(f"specblur-report: warning: {problem}", file=sys.stderr)
        return rid, None, None, problem, faith_png
    small = history[["run_id", "epoch", "m_mean"]] if history is not None else None
    return rid, png, small, None, faith_png


def write_report(folder: str | os.PathLike, *, jobs: int | None = 1, dpi: int = DPI) -> Path:
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
        ``<folder>/report/sweep.png``, with faithfulness tables also
        ``<folder>/report/<run_id>-faithfulness.png`` and ``<folder>/report/faithfulness.png``;
        every file is written atomically.

    Raises
    ------
    SpecblurError
        If ``folder`` is not a results folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SpecblurError(f"results folder not found: {folder}")
    if not (folder / "runs.parquet").is_file():
        raise SpecblurError(f"{folder} is not a specblur results folder (no runs.parquet)")
    note = lambda text: print(f"specblur-report: warning: {text} (a sweep is writing to it): "
                              "runs it has not finished are not in this report",
                              file=sys.stderr)  # noqa: E731
    for where in (folder, folder / "report"):  # before drawing anything
        where.mkdir(exist_ok=True)
        denied = write_denied(where)
        if denied is not None:  # a read-only folder or filesystem
            raise denied
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(folder, shared=True, wait=False, note=note))
        except OSError:  # a read-only lock file: no sweep can be writing to it
            pass
        return _write_report(folder, jobs, dpi)


def _write_report(folder, jobs, dpi):
    """:func:`write_report` for a checked folder."""
    sweep = read_sweep(folder)
    try:
        runs = ordered_runs(read_runs(folder), sweep)
    except (OSError, ValueError) as exc:
        raise SpecblurError(f"cannot read {folder / 'runs.parquet'}: {exc}") from exc
    valid = runs["run_id"].map(is_run_id)
    for rid in runs.loc[~valid, "run_id"]:  # an id becomes a path: never follow a crafted one
        print(f"specblur-report: warning: skipping run id {rid!r} in runs.parquet: a run id is "
              "12 hex digits", file=sys.stderr)
    runs = runs[valid].reset_index(drop=True)
    remove_dead_temporaries(folder / "report")  # left by a report that was killed
    geo = read_geometry(folder)
    keys = varying_settings(runs)
    X = {}  # each input's magnitudes once; runs without an input column use the first input
    for name in (runs[INPUT_COLUMN] if INPUT_COLUMN in runs else pd.Series([None])):
        name = name if isinstance(name, str) else None
        if name not in X:
            X[name] = input_magnitude(folder, name)
    jobs_list = [(str(folder), run.to_dict(), geo, X[_input_of(run)], dpi, keys)
                 for _, run in runs.iterrows()]
    if jobs is None:
        jobs = min(4, os.cpu_count() or 1) if len(jobs_list) >= 4 else 1
    if jobs > 1 and len(jobs_list) > 1:
        import multiprocessing

        with ProcessPoolExecutor(min(jobs, len(jobs_list)), initializer=exit_with_parent,
                                 initargs=(os.getpid(),),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_run_png, jobs_list))
    else:
        done = [_run_png(job) for job in jobs_list]
    pngs = {rid: png for rid, png, *_ in done}
    problems = {rid: problem for rid, _, _, problem, _ in done if problem}
    faith_pngs = {rid: png for rid, *_, png in done if png}
    small = [h for _, _, h, *_ in done if h is not None]
    history = pd.concat(small, ignore_index=True) if small else None
    name = sweep.get("name") or folder.name
    fig = plot_sweep(runs, history, title=f"sweep {name}: {len(runs)} runs")
    sweep_png = _save(fig, folder / "report" / "sweep.png", dpi)
    # the per-label radius comparison, when the sweep wrote segments tables
    seg = load_segments(folder)
    seg_png = _save(plot_segments(seg), folder / "report" / "segments.png", dpi) \
        if len(seg) else None
    faith = _faithfulness_summary(folder, runs, dpi)
    pooled = _pooled(folder, runs, seg, dpi) if has_corpus(runs) else None
    page = _html(folder, name, runs, keys, pngs, problems, sweep_png, sweep, seg_png,
                 (faith, faith_pngs), pooled)
    return atomic_write(folder / "report.html", lambda tmp: Path(tmp).write_text(page, "utf-8"))


def _input_of(run):
    """The run's input name, or None for a runs table without the ``input`` column."""
    name = run.get(INPUT_COLUMN)
    return name if isinstance(name, str) else None


def _pooled(folder, runs, seg, dpi):
    """``(pooled faithfulness table, pooled segments table, its png)``, parts None if absent."""
    try:
        table = load_faithfulness(folder)
        faith = pooled_faithfulness(table, runs) if len(table) else None
        seg_table = pooled_segments(seg, runs) if len(seg) else None
        png = _save(plot_pooled_segments(seg_table), folder / "report" / "pooled-segments.png",
                    dpi) if seg_table is not None and len(seg_table) else None
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still written
        print(f"specblur-report: warning: cannot pool the runs over inputs: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return faith, seg_table, png


def _pooled_html(folder, runs, pooled):
    """The section "Pooled over inputs": the settings points' medians and IQRs."""
    e = html.escape
    faith, seg, png = pooled
    n = runs[INPUT_COLUMN].dropna().nunique()
    out = ['<h2 id="pooled">Pooled over inputs</h2>',
           f"<p>{n} input files. The runs that differ only in their input form one settings "
           "point; each value is the median over the point's inputs, with the interquartile "
           "range (q25-q75) over inputs. The sections below still show every run.</p>"]
    for title, table, first in (
            ("Faithfulness per settings point (ratios at F = 0.5, median over inputs)", faith,
             ("point", "settings", "R", "n_inputs")),
            ("Final radius per settings point, label and band (each run's median r; median "
             "over inputs)", seg, ("point", "settings", "label", "band", "n_inputs"))):
        if table is None or not len(table):
            continue
        out.append(f"<h3>{e(title)}</h3>")
        if table is seg and png:
            out.append(f'<img src="{e(_href(folder, png))}" alt="pooled final radius by label">')
        values = [c.removesuffix(" median") for c in table.columns if c.endswith(" median")]
        out.append('<table class="pooled"><thead><tr>' + "".join(
            f'<th class="{"text" if c == "settings" else ""}">{e(c)}</th>' for c in first)
            + "".join(f"<th>{e(v)} median</th><th>{e(v)} IQR</th>" for v in values)
            + "</tr></thead><tbody>")
        for _, row in table.iterrows():
            out.append("<tr>" + "".join(
                f'<td class="{"text" if c == "settings" else ""}">{e(fmt(row[c]))}</td>'
                for c in first) + "".join(
                f"<td>{e(fmt(row[f'{v} median']))}</td>"
                f"<td>{e(fmt(row[f'{v} q25']))} - {e(fmt(row[f'{v} q75']))}</td>"
                for v in values) + "</tr>")
        out.append("</tbody></table>")
    return out


def _inputs_html(folder, sweep, n_runs):
    """The header's player(s) of the input(s) as analysed, and the line about the inputs."""
    e = html.escape
    originals = original_audio(folder)
    header, body = [], []
    if len(originals) == 1:
        header.append(f'<figure><figcaption>original (input as analysed)</figcaption>'
                      f'<audio controls preload="metadata" '
                      f'src="{e(_href(folder, originals[0][1]))}"></audio></figure>')
    elif not originals:
        header.append("<p>no original audio (the input was a spectrogram)</p>")
    else:
        body.append('<h2 id="inputs">Inputs (as analysed)</h2><div class="audio">')
        body += [f'<figure><figcaption>{e(name)}</figcaption><audio controls '
                 f'preload="metadata" src="{e(_href(folder, wav))}"></audio></figure>'
                 for name, wav in originals]
        body.append("</div>")
    inp = sweep.get("input") or {}
    if inp:
        listed = [i for i in sweep.get("inputs") or [inp] if isinstance(i, dict)]
        names = [str(i.get("name") or Path(str(i.get("audio") or i.get("spectrogram") or ""))
                     .name) for i in listed]
        what = f"input <code>{e(names[0])}</code>" if len(names) == 1 else \
            f"{len(names)} inputs (" + ", ".join(f"<code>{e(n)}</code>" for n in names) + ")"
        body.insert(0, f"<p>{what}: sr {e(fmt(inp.get('sr')))} Hz, "
                    f"n_fft {e(fmt(inp.get('n_fft')))}, hop {e(fmt(inp.get('hop')))}; "
                    f"{n_runs} runs.</p>")
    return header, body


def _faithfulness_summary(folder, runs, dpi):
    """``(ratios table, comparison png)`` of the runs' faithfulness tables, or None."""
    table = load_faithfulness(folder)
    if not len(table):
        return None
    order = {rid: i for i, rid in enumerate(runs["run_id"].astype(str))}
    table = table.sort_values("run_id", key=lambda c: c.map(order).fillna(len(order)),
                              kind="stable")
    try:
        png = _save(plot_faithfulness_summary(table), folder / "report" / "faithfulness.png",
                    dpi)
        return faithfulness_ratios(table), png
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still written
        print(f"specblur-report: warning: cannot summarise the faithfulness tables: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _faithfulness_html(folder, summary):
    """The section "Faithfulness (SPEC §9.5)": the comparison figure and the ratios table."""
    e = html.escape
    ratios, png = summary
    cols = [c for c in ratios.columns if c not in ("run_id", "R", "F")]
    out = ['<h2 id="faithfulness">Faithfulness (SPEC §9.5)</h2>',
           "<p>The energy-matched deletion test of every run's final radius map: the bins the "
           "map calls most blurrable, up to a share F of the total magnitude, are blurred at "
           "a test radius R, and the model's output distance d is compared with that of other "
           "orders of the bins. A faithful map has map/random and map/gradient well below 1 "
           "and anti/random above 1. Ratios at F = 0.5 (or the run's closest fraction); "
           "curve map/random compares the mean of the deletion curves.</p>",
           f'<img src="{e(_href(folder, png))}" alt="faithfulness ratios of every run">',
           '<table class="faithfulness"><thead><tr><th class="text">run</th><th>R</th>'
           "<th>F</th>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"]
    for _, row in ratios.iterrows():
        rid = e(str(row["run_id"]))
        out.append(f'<tr><td class="text"><a href="#run-{rid}"><code>{rid}</code></a></td>'
                   + "".join(f"<td>{e(fmt(row[c]))}</td>" for c in ("R", "F", *cols))
                   + "</tr>")
    out.append("</tbody></table>")
    return out


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


def _html(folder, name, runs, keys, pngs, problems, sweep_png, sweep, segments_png=None,
          faith=(None, {}), pooled=None):
    e = html.escape
    faith_summary, faith_pngs = faith
    shown = keys or [k for k in ALWAYS_SHOWN if k in runs]
    header, inputs = _inputs_html(folder, sweep, len(runs))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>specblur report: {e(name)}</title>", f"<style>{_CSS}</style></head><body>",
           "<header>", f"<h1>specblur sweep <code>{e(name)}</code></h1>", *header, "</header>",
           *inputs]
    # the table of runs
    cols = ["run"] + shown + ["status", "epochs done"] + \
        [m for m in TABLE_METRICS if m in runs] + ["wall s"]
    out.append("<table><thead><tr>" + "".join(
        f'<th class="{"text" if c in ("run", "status") else ""}">{e(c)}</th>' for c in cols)
        + "</tr></thead><tbody>")
    for _, run in runs.iterrows():
        rid = str(run["run_id"])
        cells = [f'<td class="text"><a href="#run-{e(rid)}"><code>{e(rid)}</code></a></td>']
        cells += [f"<td>{e(fmt(run[k]))}</td>" for k in shown]
        cells.append(f'<td class="text">{e(str(run.get("status", "")))}</td>')
        cells.append(f"<td>{e(fmt(run.get('epochs_done', '')))}</td>")
        cells += [f"<td>{e(fmt(run[m]))}</td>" for m in TABLE_METRICS if m in runs]
        cells.append(f"<td>{e(fmt(run.get('wall_seconds', float('nan'))))}</td>")
        status = e(str(run.get("status", "")))
        out.append(f'<tr class="{status}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out.append('<h2>Across runs</h2>')
    out.append(f'<img src="{e(_href(folder, sweep_png))}" alt="comparison across runs">')
    if segments_png:
        out.append('<h2 id="segments">Final radius by segment label and band</h2>')
        out.append(f'<img src="{e(_href(folder, segments_png))}" '
                   f'alt="final radius by segment label and band">')
    if faith_summary:
        out.extend(_faithfulness_html(folder, faith_summary))
    if pooled:
        out.extend(_pooled_html(folder, runs, pooled))
    settings = setting_columns(runs)
    for _, run in runs.iterrows():
        rid = str(run["run_id"])
        out.append(f'<section id="run-{e(rid)}"><h2>run <code>{e(rid)}</code>: '
                   f"{e(run_label(run, shown))}</h2>")
        out.append('<p class="settings">' + e(", ".join(
            f"{k}={fmt(run[k])}" for k in settings if not is_missing(run[k]))) + "</p>")
        out.append(f"<p>status <b>{e(str(run.get('status', '')))}</b> after "
                   f"{e(fmt(run.get('epochs_done', '')))} epochs, "
                   f"{e(fmt(run.get('wall_seconds', float('nan'))))} s on "
                   f"{e(str(run.get('device', '')))}.</p>")
        if str(run.get("error", "") or ""):
            out.append(f'<pre class="error">{e(str(run["error"]))}</pre>')
        if problems.get(rid):
            out.append(f'<pre class="error">{e(problems[rid])}</pre>')
        if pngs.get(rid):
            out.append(f'<img src="{e(_href(folder, pngs[rid]))}" '
                       f'alt="plots of run {e(rid)}">')
        if faith_pngs.get(rid):
            out.append("<h3>faithfulness: deletion curves (SPEC §9.5)</h3>")
            out.append(f'<img src="{e(_href(folder, faith_pngs[rid]))}" '
                       f'alt="deletion curves of run {e(rid)}">')
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
