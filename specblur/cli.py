"""Command-line tools: ``specblur-sweep`` and ``specblur-report``, and their error printing.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .errors import SpecblurError
from .kernels import DEVICES
from .schema import AUTO_BATCH_KINDS, BATCH_MEMORY, MAX_BATCH


def _fail(prog, message):
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _io_fail(prog, exc):
    """One line for an I/O fault, naming the file; status 1 (rerun once it is fixed)."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    print(f"{prog}: error: cannot write{where}: {exc.strerror or exc}; finished results are "
          "kept, rerun once this is fixed", file=sys.stderr)
    return 1


def sweep_main(argv: list[str] | None = None) -> int:
    """Entry point of ``specblur-sweep grid.yaml [options]``."""
    parser = argparse.ArgumentParser(
        prog="specblur-sweep",
        description="Run a grid of specblur fits described by a YAML sweep file.",
        epilog="Sweep files are trusted code: a model of kind 'python' names a factory "
               "(package.module:function) that specblur imports and calls, as Hydra's "
               "_target_ does. Run only sweep files you would run as Python scripts. "
               "--dry-run never calls a factory.")
    parser.add_argument("sweep", help="the YAML sweep file")
    parser.add_argument("--out", default="results", help="parent folder of the results (default: results)")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes (default: 1)")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="send the runs to this Dask scheduler")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and which are done")
    parser.add_argument("--force", action="store_true", help="rerun every run")
    parser.add_argument("--retry-failed", action="store_true", help="rerun the runs that failed")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="learn at most N runs together in lockstep (1: each run alone; "
                             "default: runs of the models in "
                             f"{', '.join(AUTO_BATCH_KINDS)} that can share a batch, spread "
                             f"over the workers, at most {MAX_BATCH} and about "
                             f"{BATCH_MEMORY / 2 ** 30:g} GiB per batch; others alone)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        return _fail(parser.prog, f"--jobs must be at least 1, got {args.jobs}")
    if args.batch is not None and args.batch < 1:
        return _fail(parser.prog, f"--batch must be at least 1, got {args.batch}")
    try:
        from pathlib import Path

        import pandas as pd

        from .sweep.config import load_sweep
        from .sweep.runner import io_fault, plan, run_sweep

        sweep = load_sweep(args.sweep)
        if args.dry_run:
            status, todo = plan(sweep, Path(args.out) / sweep.name, args.force, args.retry_failed)
            _print_plan(sweep, status, {run.run_id for run in todo})
            return 0
        if args.device == "cuda":
            from .kernels import for_device
            for_device("cuda")
        runs = run_sweep(sweep, out=args.out, jobs=args.jobs, device=args.device,
                         scheduler=args.scheduler, force=args.force,
                         retry_failed=args.retry_failed, batch=args.batch)
    except SpecblurError as exc:
        return _fail(parser.prog, str(exc))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; finished runs are kept, rerun to go on", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = None
        return 0
    except OSError as exc:  # a full disk, a read-only folder: finished runs are kept
        return _io_fail(parser.prog, exc)
    _print_summary(sweep, runs)
    failed = runs[runs["run_id"].isin([r.run_id for r in sweep.runs])
                  & (runs["status"] == "failed")]
    faults = [e for e in failed.get("error", pd.Series(dtype=str)).fillna("").astype(str)
              if io_fault(e)]
    if faults:
        print(f"{parser.prog}: {len(faults)} runs failed on an I/O fault ({_reason(faults[0])}); "
              "finished runs are kept, and a plain rerun retries these once it is fixed",
              file=sys.stderr)
    return 1 if len(failed) else 0


def _reason(error):
    """The system's message in a run's recorded I/O error (``OSError: [Errno 28] ...``)."""
    import os

    from .sweep.runner import io_errno

    code = io_errno(error)
    return os.strerror(code) if code is not None else error.splitlines()[0]


def _flat(run):
    """A run's input name and flattened settings, as the runs table's columns."""
    from .sweep.results import flatten_settings

    return {"input": run.input.name if run.input else "", **flatten_settings(run.settings)}


def _varying(sweep):
    """Input and flattened setting names whose values differ between the sweep's runs."""
    flat = [_flat(run) for run in sweep.runs]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({str(f.get(k)) for f in flat}) > 1]


def _print_plan(sweep, status, todo):
    keys = _varying(sweep)
    print(f"{sweep.name}: {len(sweep.runs)} runs, {len(todo)} to run")
    for run in sweep.runs:
        state = "pending" if run.run_id in todo else status.get(run.run_id, "pending")
        flat = _flat(run)
        print(f"  {run.run_id}  {state:8}  " + "  ".join(f"{k}={flat[k]}" for k in keys if k in flat))


def _print_summary(sweep, runs):
    import pandas as pd

    ids = [run.run_id for run in sweep.runs]
    table = runs[runs["run_id"].isin(ids)].set_index("run_id").reindex(ids)
    cols = [c for c in _varying(sweep) if c in table] + [
        "status", "epochs_done", "loss", "mse", "m_mean", "frac_identity", "wall_seconds"]
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.float_format", "{:.4g}".format):
        print(table[cols].to_string())


def report_main(argv: list[str] | None = None) -> int:
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
    import matplotlib

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
        return _fail(parser.prog, f"--jobs must be at least 1, got {args.jobs}")
    try:
        from .report import write_report

        page = write_report(args.folder, jobs=args.jobs)
    except SpecblurError as exc:
        return _fail(parser.prog, str(exc))
    except OSError as exc:
        return _io_fail(parser.prog, exc)
    print(page)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sweep_main())
