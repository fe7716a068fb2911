"""Running a sweep: resume, execute runs locally or on Dask, write results atomically."""
from __future__ import annotations

import errno
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .._io import exit_with_parent, folder_lock, remove_dead_temporaries, write_denied
from ..audio import Spectrogram, load_input, write_wav
from ..errors import SpecblurError
from ..fitting import fit_batch
from ..models import make_model
from ..schema import (AUTO_BATCH_KINDS, BATCH_MEMORY, FINISHED, INPUT_COLUMN, MAX_BATCH,
                      METRICS, STORE_DTYPE)
from ..settings import Settings, check_device
from . import cores, results
from .config import Sweep
from .evaluate import stale_faithfulness, write_sweep_faithfulness
from .segments import write_sweep_segments

__all__ = ["Task", "batches", "execute_batch", "execute_run", "plan", "run_sweep"]

#: float64 fields per input bin of one run in a batch: about 6 stacked and 10 of its own,
#: plus 5 per snapshot (:func:`run_bytes`).
_FIELDS_PER_RUN, _FIELDS_PER_SNAPSHOT = 16, 5
#: Bytes per input frame that the speaker encoder keeps for its VJP (3 LSTM layers of 256
#: units, gates and states, float32, with autograd's copies): peak RSS growth of a forward
#: and VJP measured at 36-48 kB per frame (``benchmarks/bench_lockstep.py``), so 64 kB.
_SPEAKER_BYTES_PER_FRAME = 64 * 1024

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
IO_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


def plan(sweep: Sweep, folder: str | os.PathLike, force: bool = False,
         retry_failed: bool = False, recover: bool = False) -> tuple[dict, list]:
    """Split a sweep's runs into finished ones (with their status) and those to run.

    Runs that failed because of an I/O fault (:data:`IO_ERRNOS`) are run again, and so
    are finished runs whose tables are unreadable (truncated), after a warning naming them.
    """
    previous = results.read_runs(folder, recover=recover)
    status = _statuses(previous)
    errors = dict(zip(previous["run_id"].astype(str), previous.get("error", pd.Series(
        [""] * len(previous), index=previous.index)).fillna("").astype(str)))
    keep = () if force else FINISHED + (() if retry_failed else ("failed",))
    todo = [run for run in sweep.runs if status.get(run.run_id) not in keep
            or (status.get(run.run_id) == "failed" and io_fault(errors.get(run.run_id, "")))
            or (status.get(run.run_id) in FINISHED and _damaged(folder, run.run_id))]
    return status, todo


def io_errno(error: str) -> int | None:
    """The errno of a run's recorded ``OSError`` (``OSError: [Errno 28] ...``), or None."""
    match = re.search(r"\[Errno (\d+)\]", error)
    return int(match.group(1)) if match else None


def io_fault(error: str) -> bool:
    """True when a run's recorded error is one of :data:`IO_ERRNOS` (a plain rerun retries it)."""
    return io_errno(error) in IO_ERRNOS


def _damaged(folder, run_id):
    """True (after a warning naming the files) when a finished run's tables are unreadable:
    the run is run again, since truncated tables would stop the steps that read them."""
    bad = results.unreadable_tables(folder, run_id)
    for path, reason in bad:
        print(f"specblur-sweep: warning: {path} is unreadable ({reason}); run {run_id} runs "
              "again", file=sys.stderr, flush=True)
    return bool(bad)


def run_bytes(task: Task) -> int:
    """Estimated memory of one run in a lockstep batch, in bytes."""
    K, T = task.spectrogram.mag.shape
    snapshots = task.settings.epochs // task.settings.snapshot_every + 1
    size = K * T * 8 * (_FIELDS_PER_RUN + _FIELDS_PER_SNAPSHOT * snapshots)
    if task.settings.model["kind"] == "speaker_encoder":
        size += T * _SPEAKER_BYTES_PER_FRAME
    return size


def batches(tasks: list[Task], size: int | None = None, workers: int = 1) -> list[list[Task]]:
    """Group tasks into lockstep batches of runs that share a model and input shape.

    ``size`` caps a batch (1: every run alone). With None, each group of runs that can
    share a batch is split evenly over ``workers``, in batches of at most
    :data:`MAX_BATCH` runs whose estimated memory (:func:`run_bytes`) stays under
    :data:`BATCH_MEMORY`; runs of models outside ``AUTO_BATCH_KINDS`` (cheap ones) then
    run alone. The batches of a group get about the same work.
    """
    groups = {}
    for task in tasks:
        spec = task.spectrogram
        key = (repr(task.settings.model), task.settings.seed, spec.sr, spec.n_fft,
               spec.mag.shape[0], task.device)
        groups.setdefault(key, []).append(task)
    out = []
    for group in groups.values():
        cap = size
        if cap is None and group[0].settings.model["kind"] not in AUTO_BATCH_KINDS:
            cap = 1
        if cap is None:
            by_memory = BATCH_MEMORY // max(max(run_bytes(task) for task in group), 1)
            cap = max(1, min(MAX_BATCH, by_memory, -(-len(group) // max(workers, 1))))
        out.extend(_balanced(group, cap))
    return out


def _balanced(group, cap):
    """Split ``group`` into ``ceil(len / cap)`` batches of at most ``cap`` tasks with work
    (frames x epochs) as even as possible: the costliest task goes to the lightest batch
    first. Each batch keeps the tasks' order."""
    n = -(-len(group) // cap)
    loads, members = [0] * n, [[] for _ in range(n)]
    cost = lambda i: group[i].spectrogram.mag.shape[1] * group[i].settings.epochs  # noqa: E731
    for i in sorted(range(len(group)), key=lambda i: -cost(i)):
        j = min((j for j in range(n) if len(members[j]) < cap), key=lambda j: loads[j])
        loads[j] += cost(i)
        members[j].append(i)
    return [[group[i] for i in sorted(m)] for m in members]


def run_sweep(sweep: Sweep, out: str | os.PathLike = "results", jobs: int = 1, device: str = "cpu",
              scheduler: str | None = None, force: bool = False,
              retry_failed: bool = False, batch: int | None = None) -> pd.DataFrame:
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
    batch : int, optional
        Most runs learnt together in lockstep (:func:`specblur.fit_batch`); 1 runs each
        run alone. By default (None) the runs that can share a batch are spread evenly
        over the workers, within :data:`BATCH_MEMORY` and :data:`MAX_BATCH`.

    Returns
    -------
    pandas.DataFrame
        The ``runs`` table after the sweep.
    """
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise SpecblurError(f"batch must be a positive integer or None, got {batch!r}")
    check_device((run.settings for run in sweep.runs), device, f"{sweep.path.name}: ",
                 "run this sweep with --device cpu")
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
    denied = write_denied(folder)
    if denied is not None:  # a read-only folder or filesystem
        return _run_read_only(sweep, folder, denied, force, retry_failed)
    with folder_lock(folder, note=note):
        return _run_locked(sweep, folder, specs, jobs, device, scheduler, force, retry_failed,
                           batch)


def _run_locked(sweep, folder, specs, jobs, device, scheduler, force, retry_failed, batch):
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
    for row in _execute(tasks, batch, jobs, scheduler, interactive):
        _record(folder, row)
        ran.append(row["run_id"])
        done += 1
        bar.update()
        if not interactive:
            print(f"[{done}/{len(tasks)}] {row['run_id']} {row['status']} after "
                  f"{row['wall_seconds']:.1f} s" + (f": {row['error']}" if row["error"] else ""),
                  flush=True)
    bar.close()
    status = _statuses(results.read_runs(folder))
    finished = _finished(sweep, status, FINISHED)
    for inp in sweep.inputs:  # per-segment radius statistics of every finished run
        if inp.settings.get("segments"):
            write_sweep_segments(folder, inp.settings["segments"], specs[inp.name],
                                 [run.run_id for run in finished if run.input is inp])
    if sweep.evaluate.get("faithfulness"):  # SPEC §9.5, in this process after the runs
        # only `done` runs: a diverged run's last radius field is not finite or meaningful
        write_sweep_faithfulness(folder, sweep.evaluate["faithfulness"], specs,
                                 _finished(sweep, status, ("done",)), device=device,
                                 fresh=ran, interactive=interactive)
    return results.read_runs(folder)


def _run_read_only(sweep, folder, denied, force=False, retry_failed=False):
    """:func:`run_sweep` in a folder that this process cannot write (``denied`` says why).

    With nothing to do (every run finished, and its segment and faithfulness tables there)
    the runs table is read and nothing is written; otherwise ``denied`` is raised.
    """
    _check_same_sweep(sweep, folder)
    status, todo = plan(sweep, folder, force, retry_failed)
    finished = _finished(sweep, status, FINISHED)
    missing = [run for inp in sweep.inputs if inp.settings.get("segments")
               for run in finished if run.input is inp
               and not (folder / "segments" / f"{run.run_id}.parquet").is_file()]
    if sweep.evaluate.get("faithfulness"):
        missing += stale_faithfulness(folder, sweep.evaluate["faithfulness"],
                                      _finished(sweep, status, ("done",)))
    if todo or missing:
        raise denied
    print(f"specblur-sweep: warning: cannot write in {folder} ({denied.strerror}); every run "
          "is finished, so nothing is written", file=sys.stderr, flush=True)
    if not sys.stderr.isatty():
        print(f"{sweep.name}: {len(sweep.runs)} runs, 0 to run", flush=True)
    return results.read_runs(folder)


def _statuses(runs):
    """``{run_id: status}`` of a runs table."""
    return dict(zip(runs["run_id"].astype(str), runs["status"]))


def _finished(sweep, status, statuses):
    """The sweep's runs whose status (``{run_id: status}``) is one of ``statuses``."""
    return [run for run in sweep.runs if status.get(run.run_id) in statuses]


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
    results.write_table(folder / "runs.parquet", results.uniform_columns(runs))


def _execute(tasks, batch, jobs, scheduler, interactive):
    """Run the tasks in batches (:func:`batches`); yield every run's row as its batch ends."""
    if not tasks:
        return
    if scheduler:
        yield from _execute_dask(tasks, batch, scheduler)
    elif jobs <= 1:
        for group in batches(tasks, batch, 1):
            yield from execute_batch(group, epoch_bar=interactive)
    else:
        yield from _execute_local(batches(tasks, batch, jobs), jobs)


def _execute_local(groups, jobs, work=None):
    """Run each group of tasks with ``work`` (:func:`execute_batch`) in ``jobs`` spawned
    worker processes that share the cores (``cores``); yield the rows as groups end."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    share = cores.CoreShare(context, cores.usable(), jobs)
    left = len(groups)
    first = share.left(left)  # fewer batches than workers: more cores each from the start
    saved = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS")}
    # read by the spawned workers: numba may grow to all the cores (cores.follow)
    os.environ.update({k: str(first) for k in saved}, NUMBA_NUM_THREADS=str(share.cores))
    try:
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                   initargs=(os.getpid(), share.value),
                                   mp_context=context)
        try:
            futures = [pool.submit(work or execute_batch, group) for group in groups]
            for future in as_completed(futures):
                left -= 1
                share.left(left)  # the idle workers' cores go to the busy ones
                yield from future.result()
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


def _init_worker(parent, share):
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    exit_with_parent(parent)
    cores.join(share)


def _execute_dask(tasks, batch, address):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SpecblurError("--scheduler needs Dask: pip install 'specblur[cluster]'") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise SpecblurError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        # automatic batches are spread over the cluster's worker threads
        groups = batches(tasks, batch, max(1, sum(client.nthreads().values())))
        scattered = {}  # each input's spectrogram once
        for task in tasks:
            if id(task.spectrogram) not in scattered:
                scattered[id(task.spectrogram)] = client.scatter(task.spectrogram,
                                                                 broadcast=True)
        futures = [client.submit(_execute_remote, [replace(task, spectrogram=None)
                                                   for task in group],
                                 [scattered[id(task.spectrogram)] for task in group], pure=False)
                   for group in groups]
        for future in as_completed(futures):
            yield from future.result()


def _execute_remote(tasks, spectrograms):
    """:func:`execute_batch` on a Dask worker, with the scattered spectrograms passed apart."""
    return execute_batch([replace(task, spectrogram=spec)
                          for task, spec in zip(tasks, spectrograms)])


def execute_run(task: Task, epoch_bar: bool = False) -> dict:
    """Fit one run and write its tables and audio; never raises for the run's own errors.

    Returns the run's row for ``runs.parquet``.
    """
    return execute_batch([task], epoch_bar)[0]


def execute_batch(tasks: list[Task], epoch_bar: bool = False) -> list[dict]:
    """Fit runs together (:func:`specblur.fit_batch`) and write each one's tables and audio.

    Never raises for the runs' own errors: if the batch fails before its runs are written
    (a run's settings are rejected, a plug-in model raises, memory runs out), each run is
    tried alone, so that only the bad one fails. Returns the runs' rows for
    ``runs.parquet``, in the order of ``tasks``.
    """
    lock = _RUN_LOCK if threading.current_thread() is not threading.main_thread() else None
    if lock:  # numba's parallel kernels must not run from several threads at once
        lock.acquire()
    try:
        if len(tasks) > 1:
            try:
                return _execute_batch(tasks, epoch_bar, raise_errors=True)
            except Exception:  # noqa: BLE001 - each run alone says which one fails
                pass
        return [row for task in tasks for row in _execute_batch([task], epoch_bar)]
    finally:
        if lock:
            lock.release()


def _execute_batch(tasks, epoch_bar, raise_errors=False):
    start = time.perf_counter()
    rows = [{"run_id": task.run_id, INPUT_COLUMN: task.input,
             **results.flatten_settings(task.settings), "status": "failed", "error": "",
             "epochs_done": 0, **{c: float("nan") for c in METRICS}, "wall_seconds": 0.0,
             "device": task.device, "batch": len(tasks)} for task in tasks]
    first = tasks[0]
    bar = tqdm(total=max(task.settings.epochs for task in tasks),
               desc=first.run_id if len(tasks) == 1 else f"{len(tasks)} runs",
               unit="epoch", leave=False, disable=not epoch_bar, mininterval=0.5)
    try:
        fits = fit_batch([task.spectrogram for task in tasks],
                         [task.settings for task in tasks], device=first.device,
                         callback=lambda n: (bar.update(1), cores.follow()))
    except Exception as exc:
        if raise_errors:
            raise
        for row in rows:
            _fail_row(row, exc)
        fits = []
    finally:
        bar.close()
    for task, row, res in zip(tasks, rows, fits):
        try:
            _write_run(Path(task.folder), task.run_id, task.spectrogram, res, task.store_dtype)
            final = res.history.iloc[-1]
            row.update({c: float(final[c]) for c in METRICS})
            row.update(status=res.status, epochs_done=int(final["epoch"]))
        except Exception as exc:  # a failed run is recorded and the sweep goes on
            _fail_row(row, exc)
    seconds = (time.perf_counter() - start) / len(tasks)  # each run's share of the batch
    for row in rows:
        row["wall_seconds"] = seconds
    return rows


def _fail_row(row, exc):
    row["error"] = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, SpecblurError) and not (isinstance(exc, OSError)
                                                   and exc.errno in IO_ERRNOS):
        row["error"] += "\n" + traceback.format_exc(limit=-3)


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
