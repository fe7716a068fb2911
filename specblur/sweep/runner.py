"""Running a sweep: resume, execute runs locally or on Dask, write results atomically."""
from __future__ import annotations

import errno
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .._io import exit_with_parent, folder_lock, remove_dead_temporaries
from ..audio import Spectrogram, load_input, write_wav
from ..errors import SpecblurError
from ..fitting import fit
from ..models import make_model
from ..schema import FINISHED, INPUT_COLUMN, METRICS, STORE_DTYPE
from ..settings import Settings
from . import results
from .config import Sweep
from .evaluate import write_sweep_faithfulness
from .segments import write_sweep_segments

__all__ = ["Task", "execute_run", "plan", "run_sweep"]

_RUN_LOCK = threading.Lock()


@dataclass(frozen=True)
class Task:
    """One run to execute: what it learns on, with which settings, on which device.

    Attributes
    ----------
    run_id : str
    settings : Settings
    spectrogram : Spectrogram
        The analysed input (on Dask, a future of it until the worker resolves it).
    folder : str
        Absolute path of the results folder the run writes into.
    device : str
        ``"cpu"`` or ``"cuda"``: where the blur kernels run.
    input : str
        The input file's name as the runs table records it (``Input.name``).
    store_dtype : str
        How the fields table stores the snapshots (the sweep's ``store_dtype``).
    """

    run_id: str
    settings: Settings
    spectrogram: Spectrogram
    folder: str
    device: str = "cpu"
    input: str = ""
    store_dtype: str = STORE_DTYPE


#: A run that failed for one of these (a full disk, a read-only or forbidden folder) did
#: not fail by itself: a plain rerun retries it.
IO_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)


def plan(sweep: Sweep, folder: str | os.PathLike, force: bool = False,
         retry_failed: bool = False, recover: bool = False) -> tuple[dict, list]:
    """Split a sweep's runs into finished ones (with their status) and those to run.

    Runs that failed because of an I/O fault (:data:`IO_ERRNOS`) are run again.
    """
    previous = results.read_runs(folder, recover=recover)
    status = dict(zip(previous["run_id"].astype(str), previous["status"]))
    errors = dict(zip(previous["run_id"].astype(str), previous.get("error", pd.Series(
        [""] * len(previous), index=previous.index)).fillna("").astype(str)))
    keep = () if force else FINISHED + (() if retry_failed else ("failed",))
    todo = [run for run in sweep.runs if status.get(run.run_id) not in keep
            or (status.get(run.run_id) == "failed" and _io_fault(errors.get(run.run_id, "")))]
    return status, todo


def _io_fault(error: str) -> bool:
    return any(f"[Errno {code}]" in error for code in IO_ERRNOS)


def run_sweep(sweep: Sweep, out: str | os.PathLike = "results", jobs: int = 1, device: str = "cpu",
              scheduler: str | None = None, force: bool = False,
              retry_failed: bool = False) -> pd.DataFrame:
    """Run every pending run of a sweep and record it under ``<out>/<name>/``.

    Parameters
    ----------
    sweep : specblur.sweep.config.Sweep
    out : str or os.PathLike
        Parent folder of the results folder.
    jobs : int
        Local worker processes (ignored with ``scheduler``).
    device : {"cpu", "cuda"}
        Where the blur kernels run.
    scheduler : str, optional
        Address of a Dask distributed scheduler to send the runs to.
    force, retry_failed : bool
        Rerun every run, or also the runs that failed before.

    Returns
    -------
    pandas.DataFrame
        The ``runs`` table after the sweep.
    """
    folder = Path(out) / sweep.name
    # each input once, in this process; this checks them before anything is written
    specs = {inp.name: load_input(inp.settings) for inp in sweep.inputs}
    _check_before_runs(sweep, specs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SpecblurError(f"cannot make the results folder {folder}: a file is in the "
                            "way (choose another --out or sweep name)") from None
    note = lambda text: print(f"specblur-sweep: {text}", file=sys.stderr, flush=True)  # noqa: E731
    with folder_lock(folder, note=note):
        return _run_locked(sweep, folder, specs, jobs, device, scheduler, force, retry_failed)


def _run_locked(sweep, folder, specs, jobs, device, scheduler, force, retry_failed):
    """:func:`run_sweep` once this process holds the results folder's lock."""
    _check_same_sweep(sweep, folder)
    remove_dead_temporaries(folder)
    results.write_yaml(folder / "sweep.yaml", sweep.resolved())
    for inp in sweep.inputs:
        if specs[inp.name].waveform is not None:
            write_wav(results.original_wav(folder, inp.stem), specs[inp.name].waveform,
                      specs[inp.name].sr)
    _, todo = plan(sweep, folder, force, retry_failed, recover=True)
    tasks = [Task(run.run_id, run.settings, specs[run.input.name], str(folder.resolve()),
                  device, run.input.name, sweep.store_dtype) for run in todo]
    interactive = sys.stderr.isatty()
    bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=not interactive)
    if not interactive:
        print(f"{sweep.name}: {len(sweep.runs)} runs, {len(tasks)} to run", flush=True)
    done, ran = 0, []
    for row in _execute(tasks, jobs, scheduler, interactive):
        _record(folder, row)
        ran.append(row["run_id"])
        done += 1
        bar.update()
        if not interactive:
            print(f"[{done}/{len(tasks)}] {row['run_id']} {row['status']} after "
                  f"{row['wall_seconds']:.1f} s" + (f": {row['error']}" if row["error"] else ""),
                  flush=True)
    bar.close()
    finished = _finished(folder, sweep, FINISHED)
    for inp in sweep.inputs:  # per-segment radius statistics of every finished run
        if inp.settings.get("segments"):
            write_sweep_segments(folder, inp.settings["segments"], specs[inp.name],
                                 [run.run_id for run in finished if run.input is inp])
    if sweep.evaluate.get("faithfulness"):  # SPEC §9.5, in this process after the runs
        # only `done` runs: a diverged run's last radius field is not finite or meaningful
        write_sweep_faithfulness(folder, sweep.evaluate["faithfulness"], specs,
                                 _finished(folder, sweep, ("done",)), device=device,
                                 fresh=ran, interactive=interactive)
    return results.read_runs(folder)


def _finished(folder, sweep, statuses):
    """The sweep's runs whose status in ``runs.parquet`` is one of ``statuses``."""
    runs = results.read_runs(folder)
    ids = set(runs[runs["status"].isin(statuses)]["run_id"].astype(str))
    return [run for run in sweep.runs if run.run_id in ids]


def _check_same_sweep(sweep, folder):
    """Refuse a results folder that another sweep file wrote over other inputs.

    The same ``name`` in two sweep files over different audio would mix their runs in one
    table; a sweep file that was moved or copied, over the same inputs, may go on.
    """
    previous = results.read_sweep(folder)
    source = previous.get("source")
    if not source or source == str(sweep.path):
        return
    before = {i.get("sha256") for i in previous.get("inputs") or [] if isinstance(i, dict)}
    if not before:  # a sweep.yaml from before corpus input names one input file
        before = {(previous.get("input") or {}).get("sha256")}
    before.discard(None)
    if before and before != {inp.sha256 for inp in sweep.inputs}:
        raise SpecblurError(
            f"{sweep.path}: the results folder {folder} holds the runs of the sweep file "
            f"{source} over other inputs (both are named {sweep.name!r}); give one of them "
            "another name, or use another --out")


def _check_before_runs(sweep, specs):
    """Refuse silent inputs, and build each plug-in model once so that a factory that
    fails, or returns no ``forward``/``vjp``, stops the sweep before any run starts."""
    for name, spec in specs.items():
        if not spec.mag.any():
            raise SpecblurError(f"{sweep.path}: input {name} is silent (all zero): there is "
                                "nothing to blur, and every run would end with D = 0")
    first = next(iter(specs.values()))
    seen = []
    for run in sweep.runs:
        model = run.settings.model
        if model["kind"] == "python" and model not in seen:
            seen.append(model)
            try:
                make_model(model, sr=first.sr, n_fft=first.n_fft, n_bins=first.mag.shape[0],
                           seed=run.settings.seed)
            except SpecblurError as exc:
                raise SpecblurError(f"{sweep.path}: {exc}") from None


def _record(folder, row):
    """Replace the run's row in ``runs.parquet`` (atomically)."""
    runs = results.read_runs(folder)
    runs = runs[runs["run_id"].astype(str) != row["run_id"]]
    new = pd.DataFrame([row])
    runs = new if runs.empty else pd.concat([runs, new], ignore_index=True)
    results.write_table(folder / "runs.parquet", runs)


def _execute(tasks, jobs, scheduler, interactive):
    if not tasks:
        return
    if scheduler:
        yield from _execute_dask(tasks, scheduler)
    elif jobs <= 1:
        for task in tasks:
            yield execute_run(task, epoch_bar=interactive)
    else:
        yield from _execute_local(tasks, jobs)


def _execute_local(tasks, jobs):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    saved = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS")}
    os.environ.update({k: str(threads) for k in saved})  # read by the spawned workers
    try:
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                   initargs=(threads, os.getpid()),
                                   mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = [pool.submit(execute_run, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # Ctrl-C or a closed generator: drop the queued runs now
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _init_worker(threads, parent):
    import signal

    import numba

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    exit_with_parent(parent)

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _execute_dask(tasks, address):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SpecblurError("--scheduler needs Dask: pip install 'specblur[cluster]'") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise SpecblurError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        scattered = {}  # each input's spectrogram once
        for task in tasks:
            if id(task.spectrogram) not in scattered:
                scattered[id(task.spectrogram)] = client.scatter(task.spectrogram, broadcast=True)
        futures = [client.submit(_execute_remote, replace(task, spectrogram=None),
                                 scattered[id(task.spectrogram)], pure=False) for task in tasks]
        for future in as_completed(futures):
            yield future.result()


def _execute_remote(task, spectrogram):
    """:func:`execute_run` on a Dask worker, with the scattered spectrogram passed apart."""
    return execute_run(replace(task, spectrogram=spectrogram))


def execute_run(task: Task, epoch_bar: bool = False) -> dict:
    """Fit one run and write its tables and audio; never raises for the run's own errors.

    Returns the run's row for ``runs.parquet``.
    """
    lock = _RUN_LOCK if threading.current_thread() is not threading.main_thread() else None
    if lock:  # numba's parallel kernels must not run from several threads at once
        lock.acquire()
    try:
        return _execute_run(task, epoch_bar)
    finally:
        if lock:
            lock.release()


def _execute_run(task, epoch_bar):
    start = time.perf_counter()
    run_id, settings = task.run_id, task.settings
    row = {"run_id": run_id, INPUT_COLUMN: task.input, **results.flatten_settings(settings),
           "status": "failed",
           "error": "", "epochs_done": 0, **{c: float("nan") for c in METRICS},
           "wall_seconds": 0.0, "device": task.device}
    try:
        spec = task.spectrogram
        bar = tqdm(total=settings.epochs, desc=run_id, unit="epoch", leave=False,
                   disable=not epoch_bar, mininterval=0.5)
        res = fit(spec, device=task.device, callback=lambda n: bar.update(1), **settings)
        bar.close()
        _write_run(Path(task.folder), run_id, spec, res, task.store_dtype)
        final = res.history.iloc[-1]
        row.update({c: float(final[c]) for c in METRICS})
        row.update(status=res.status, epochs_done=int(final["epoch"]))
    except Exception as exc:  # a failed run is recorded and the sweep goes on
        row["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, SpecblurError):
            row["error"] += "\n" + traceback.format_exc(limit=-3)
    row["wall_seconds"] = time.perf_counter() - start
    return row


def _write_run(folder, run_id, spec, res, store_dtype=STORE_DTYPE):
    history = res.history.copy()
    history.insert(0, "run_id", run_id)
    results.write_table(folder / "history" / f"{run_id}.parquet", history)
    results.write_table(folder / "fields" / f"{run_id}.parquet",
                        results.fields_frame(run_id, res.snapshots, store_dtype))
    results.write_table(folder / "final" / f"{run_id}.parquet",
                        results.final_frame(run_id, res.snapshots))
    results.write_table(folder / "outputs" / f"{run_id}.parquet",
                        results.outputs_frame(run_id, res.snapshots))
    if spec.phase is not None:
        for epoch, snap in res.snapshots.items():
            spec.write_audio(folder / "audio" / run_id / f"epoch_{epoch}.wav", snap["Y"])
