"""The results folder of a sweep (SPEC §8): atomic writes, readers and ``specblur.load``.

Layout of ``<out>/<name>/``: ``sweep.yaml``, ``runs.parquet``, ``history/``, ``fields/``,
``final/``, ``outputs/`` (one Parquet file per run, each with a string ``run_id`` column),
the optional ``segments/`` and ``faithfulness/`` (written by the sweep hooks) and
``audio/`` (``audio/<input stem>/original.wav`` per input, ``audio/<run_id>/epoch_<N>.wav``
per snapshot; older folders have one ``audio/original.wav``). Every file is written to a hidden
temporary file in its folder and renamed, so a reader never sees half a file; Parquet
readers skip names that start with ``.``.

``fields/`` stores the snapshots' fields at the sweep's ``store_dtype`` (float32 by
default) and ``final/`` the last snapshot's ``m`` and ``r`` at float64; the readers here
(:func:`read_fields`, :func:`read_table_folder`, :func:`load`) give every field as float64
and put the float64 values of ``final/`` in place of the last snapshot's rounded ones.
"""
from __future__ import annotations

import json
import numbers
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .._io import atomic_write, file_sha256
from ..errors import SpecblurError
from ..models import MODEL_KEYS
from ..schema import (FAITHFULNESS_TYPES, FIELD_NAMES, FIELD_TYPES, FINAL_NAMES, FINAL_TYPES,
                      OUTPUT_TYPES, RUN_TABLES, SEGMENT_COLUMNS, STORE_DTYPE, TABLES, is_run_id,
                      stored_field_types)

__all__ = ["Results", "faithfulness_frame", "field_array", "fields_frame", "final_frame",
           "flatten_settings",
           "input_magnitude", "load", "load_faithfulness", "load_segments", "original_audio",
           "original_wav", "ordered_runs", "read_fields", "read_geometry", "read_inputs",
           "read_runs", "read_sweep",
           "read_table_folder", "uniform_columns", "unreadable_tables", "write_table",
           "write_yaml"]


def write_table(path: str | os.PathLike, df: pd.DataFrame,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write a DataFrame as Parquet (zstd), atomically.

    Floating-point columns are written with the byte-stream-split encoding (each value's
    bytes in separate streams, which zstd compresses far better than plain floats: a
    lossless layout that any Parquet reader reads); the other columns (``run_id``,
    ``epoch``, ``k``, ``t``, strings) are dictionary- and run-length encoded.
    ``metadata`` adds key-value pairs to the file's schema metadata (read them back with
    ``pyarrow.parquet.read_schema(path).metadata``).
    """
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    others = [f.name for f in table.schema if f.name not in floats]
    return atomic_write(path, lambda tmp: pq.write_table(
        table, tmp, compression="zstd", use_dictionary=others, use_byte_stream_split=floats))


def write_yaml(path: str | os.PathLike, data: dict) -> Path:
    """Write a mapping as YAML, atomically."""
    text = yaml.safe_dump(data, sort_keys=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_sweep(folder: str | os.PathLike) -> dict:
    """The resolved sweep of a results folder (``sweep.yaml``), or ``{}`` if unreadable."""
    path = Path(folder) / "sweep.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_geometry(folder: str | os.PathLike) -> dict:
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
    inp = read_sweep(folder).get("input") or {}
    return {key: _positive_int(inp.get(key)) for key in ("sr", "n_fft", "hop")}


def _positive_int(value):
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def original_wav(folder: str | os.PathLike, stem: str | None = None) -> Path:
    """Where the input as analysed goes: ``audio/<stem>/original.wav``.

    Without ``stem``, the one ``audio/original.wav`` of results folders written before
    sweeps had several inputs.
    """
    audio = Path(folder) / "audio"
    return (audio / stem if stem else audio) / "original.wav"


def read_inputs(folder: str | os.PathLike) -> list[dict]:
    """Every input of the sweep in ``folder``, from its ``sweep.yaml``.

    Returns
    -------
    list of dict
        One mapping per input file, in the sweep's order: ``name`` (the runs table's
        ``input`` value), ``stem``, ``audio`` or ``spectrogram``, ``sha256`` and the shared
        ``sr``, ``n_fft``, ``hop``, ``normalize_dbfs``. A folder written before sweeps had
        several inputs gives its one input with ``name`` and ``stem`` None; an unreadable
        ``sweep.yaml`` gives ``[]``.
    """
    sweep = read_sweep(folder)
    inp = sweep.get("input") if isinstance(sweep.get("input"), dict) else {}
    shared = {k: inp.get(k) for k in ("sr", "n_fft", "hop", "normalize_dbfs")}
    listed = [i for i in sweep.get("inputs") or [] if isinstance(i, dict)]
    if listed:
        return [{**shared, **i} for i in listed]
    if inp.get("audio") or inp.get("spectrogram"):
        return [{**inp, "name": None, "stem": None}]
    return []


def original_audio(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """``[(input name, path)]`` of every input's ``original.wav`` that exists.

    The legacy ``audio/original.wav`` comes last, named by its input's file name.
    """
    folder = Path(folder)
    out = []
    for inp in read_inputs(folder):
        path = original_wav(folder, inp.get("stem"))
        if inp.get("stem") and path.is_file():
            out.append((str(inp.get("name") or inp["stem"]), path))
    legacy = original_wav(folder)
    if legacy.is_file():
        inp = read_sweep(folder).get("input") or {}
        out.append((Path(str(inp.get("audio") or "original.wav")).name, legacy))
    return out


def input_magnitude(folder: str | os.PathLike, name: str | None = None) -> np.ndarray | None:
    """The input magnitude spectrogram ``X`` of one input of the sweep in ``folder``, or None.

    The input file named in ``sweep.yaml`` is analysed again when it still exists with the
    recorded sha256 (this is exact, and works for ``.npy`` inputs too); otherwise ``X`` is
    the STFT of its ``audio/<stem>/original.wav`` (or the legacy ``audio/original.wav``):
    the input as analysed. None means neither works. The result is a ``(K, T)`` float64
    array.

    Parameters
    ----------
    folder : str or os.PathLike
        A sweep's results folder.
    name : str, optional
        The input, as the runs table's ``input`` column names it; by default the first.
    """
    from ..audio import load_audio, load_input, stft

    folder = Path(folder)
    inputs = read_inputs(folder)
    inp = next((i for i in inputs if name is None or i.get("name") == name), None)
    if inp is None:
        return None
    source = inp.get("audio") or inp.get("spectrogram")
    try:
        if source and Path(source).is_file() and inp.get("sha256") == file_sha256(source):
            return load_input(inp).mag
    except (SpecblurError, OSError, KeyError, TypeError, ValueError):
        pass
    geo = read_geometry(folder)
    original = original_wav(folder, inp.get("stem"))
    if not original.is_file() and len(inputs) == 1:
        original = original_wav(folder)
    if original.is_file() and None not in geo.values():
        try:
            return np.abs(stft(load_audio(original, geo["sr"]), geo["n_fft"], geo["hop"]))
        except SpecblurError:
            return None
    return None


def ordered_runs(runs: pd.DataFrame, sweep: dict) -> pd.DataFrame:
    """The runs table in the order of ``sweep.yaml``, then any others in their own order."""
    runs = runs.copy()
    runs["run_id"] = runs["run_id"].astype(str)
    order = [str(r.get("run_id")) for r in sweep.get("runs") or [] if isinstance(r, dict)]
    rank = {rid: i for i, rid in enumerate(order)}
    runs["_rank"] = [rank.get(rid, len(rank) + i) for i, rid in enumerate(runs["run_id"])]
    return runs.sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


def load_segments(folder: str | os.PathLike) -> pd.DataFrame:
    """All ``segments/*.parquet`` tables of a results folder (empty if there are none)."""
    df = read_table_folder(folder, "segments")
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SEGMENT_COLUMNS})
    return df


def load_faithfulness(folder: str | os.PathLike) -> pd.DataFrame:
    """All ``faithfulness/*.parquet`` tables of a results folder, with the columns and dtypes
    of :data:`~specblur.schema.FAITHFULNESS_TYPES` (empty if there are none)."""
    files = sorted((Path(folder) / "faithfulness").glob("[!.]*.parquet"))
    return _typed(_read_each(files, pd.read_parquet), FAITHFULNESS_TYPES)


def _read_each(files, read) -> list:
    """``[read(f) for f in files]``; a file that is not Parquet (truncated) raises a
    SpecblurError naming it."""
    out = []
    for f in files:
        try:
            out.append(read(f))
        except ValueError as exc:  # pyarrow's ArrowInvalid
            raise SpecblurError(f"cannot read {f}: {exc}") from None
    return out


def read_runs(folder: str | os.PathLike, *, recover: bool = False) -> pd.DataFrame:
    """The ``runs.parquet`` table of a results folder, or an empty one.

    An unreadable table (a truncated file) raises a SpecblurError naming it; with
    ``recover`` it is renamed to ``runs.parquet.unreadable.<time>`` and an empty table is
    returned, so that a rerun writes every run again (the per-run tables stay).
    """
    path = Path(folder) / "runs.parquet"
    if not path.exists():
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    try:
        return pd.read_parquet(path)
    except ValueError as exc:  # pyarrow's ArrowInvalid: not a Parquet file (truncated)
        if not recover:
            raise SpecblurError(f"cannot read {path}: {exc}") from None
        aside = path.with_name(f"runs.parquet.unreadable.{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        print(f"specblur-sweep: warning: {path} is unreadable ({exc}); it is kept as "
              f"{aside.name}, and every run of this sweep runs again", file=sys.stderr)
        return read_runs(folder)


def flatten_settings(settings: Mapping) -> dict:
    """Settings as flat columns: ``model`` becomes ``model.kind``, ``model.n_mels``, ...

    Lists become JSON strings, and so does every own key of a plug-in model (kind
    ``python``): its value may be a number in one run and text or a list in another, and
    each column must keep one scalar type.
    """
    out = {}
    for key, value in settings.items():
        if key == "model" and isinstance(value, dict) and value.get("kind") == "python":
            value = {k: v if k == "kind" or k in MODEL_KEYS["python"] else
                     json.dumps(v, sort_keys=True) for k, v in value.items()}
        if isinstance(value, dict):
            for sub, v in flatten_settings(value).items():
                out[f"{key}.{sub}"] = v
        elif isinstance(value, (list, tuple)):
            out[key] = json.dumps(value)
        else:
            out[key] = value
    return out


def uniform_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each column of mixed value types (text in some rows, numbers in
    others) as JSON text, so that Parquet can store it.

    A runs table written before plug-in model keys were stored as JSON text holds them as
    numbers; the rows added since hold text.
    """
    out = runs
    for column in runs.columns[runs.dtypes == object]:
        if len({_kind(v) for v in runs[column] if not _missing(v)}) > 1:
            out = out if out is not runs else runs.copy()
            out[column] = [None if _missing(v) else v if isinstance(v, str) else
                           json.dumps(v, sort_keys=True, default=_plain) for v in runs[column]]
    return out


def _kind(value):
    """A value's type, with every int and float one kind (Parquet stores them as double)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return numbers.Real
    return type(value)


def _missing(value) -> bool:
    return not isinstance(value, (str, list, tuple, dict, np.ndarray)) and bool(pd.isna(value))


def _plain(value):
    """JSON for NumPy scalars and arrays (``json.dumps``' ``default``)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def unreadable_tables(folder: str | os.PathLike, run_id: str) -> list[tuple[Path, str]]:
    """``[(path, reason)]`` for each of a run's per-run tables (``history``, ``fields``,
    ``final``, ``outputs``) that exists but is not a complete Parquet file (truncated).

    Only each file's footer is read. A missing table is not listed: folders written
    before ``final/`` lack it, and a user may delete a table to save space.
    """
    bad = []
    for name in RUN_TABLES:
        path = Path(folder) / name / f"{run_id}.parquet"
        if path.is_file():
            try:
                pq.read_metadata(path)
            except ValueError:  # pyarrow's ArrowInvalid: no footer
                bad.append((path, "not a complete Parquet file"))
    return bad


@dataclass
class Results:
    """Every table of a sweep's results folder, with ``run_id`` as a string.

    Attributes
    ----------
    runs, history, outputs : pandas.DataFrame
    fields : pandas.DataFrame
        Every snapshot's fields, as float64 (stored as the sweep's ``store_dtype``); the
        last snapshot's ``m`` and ``r`` are the exact float64 values of ``final``.
    final : pandas.DataFrame
        Each run's last snapshot's ``m`` and ``r`` at float64 (``final/<run_id>.parquet``;
        empty for folders written before it).
    segments : pandas.DataFrame
        Radius statistics by segment label and band; empty unless the sweep set
        ``input.segments``.
    faithfulness : pandas.DataFrame
        The deletion test of every evaluated run (see :func:`load_faithfulness`); empty,
        with its typed columns, unless the sweep set ``evaluate: faithfulness``.
    path : pathlib.Path
    """

    path: Path
    runs: pd.DataFrame
    history: pd.DataFrame
    fields: pd.DataFrame
    final: pd.DataFrame
    outputs: pd.DataFrame
    segments: pd.DataFrame
    faithfulness: pd.DataFrame


def read_fields(folder: str | os.PathLike, run_id: str, epochs: str | Sequence[int] = "ends",
                columns: Sequence[str] | None = ("epoch", "k", "t", "r", "g_mse", "g_ent"),
                ) -> pd.DataFrame:
    """Read some snapshots of one run's fields table, without reading the others.

    Parameters
    ----------
    folder : str or os.PathLike
        A sweep's results folder.
    run_id : str
        The run.
    epochs : "ends", "last", "all" or sequence of int
        Which snapshots: the first and the last (default), the last only, every one, or
        the listed epochs.
    columns : sequence of str or None
        Columns to read (None reads every column).

    Returns
    -------
    pandas.DataFrame
        The rows of those snapshots (empty when the run has no fields file). The fields
        are float64; the last snapshot's ``m`` and ``r`` come from ``final/<run_id>.parquet``
        when it exists, so they are exactly the fit's, whatever ``store_dtype`` was.
    """
    if not is_run_id(run_id):
        raise SpecblurError(f"{run_id!r} is not a run id (12 hex digits)")
    path = Path(folder) / "fields" / f"{run_id}.parquet"
    if not path.is_file():
        return pd.DataFrame({c: [] for c in (columns or ("epoch", "k", "t", "r"))})
    if isinstance(epochs, str):
        if epochs == "all":
            return _read_fields_file(path, columns)
        stored = np.unique(pq.read_table(path, columns=["epoch"]).column(0).to_numpy())
        if stored.size == 0:
            return _read_fields_file(path, columns)
        if epochs == "last":
            epochs = [stored[-1]]
        elif epochs == "ends":
            epochs = sorted({stored[0], stored[-1]})
        else:
            raise SpecblurError(f"epochs must be 'ends', 'last', 'all' or a list, got {epochs!r}")
    epochs = [int(e) for e in epochs]
    return _read_fields_file(path, columns, filters=[("epoch", "in", epochs)])


def _read_fields_file(path: Path, columns=None, filters=None, final=None) -> pd.DataFrame:
    """One ``fields/<run_id>.parquet`` with its fields as float64 and, for the snapshot
    that ``final/<run_id>.parquet`` holds, its exact ``m`` and ``r``. ``final`` is that
    table when the caller has read it already (an empty frame: the run has none)."""
    columns = list(columns) if columns is not None else None
    names = [n for n in FINAL_NAMES if columns is None or n in columns]
    keys = [c for c in ("epoch", "k", "t") if columns is not None and c not in columns]
    df = pd.read_parquet(path, columns=columns + keys if names and keys else columns,
                         filters=filters)
    df = df.astype({c: FIELD_TYPES[c] for c in df.columns if c in FIELD_NAMES})
    if names and len(df):
        if final is None:
            final = _read_final_file(path.parent.parent / "final" / path.name, names)
        df = _put_final(df, final, names)
    return df.drop(columns=keys) if names and keys else df


def _read_final_file(path: Path, names: list) -> pd.DataFrame:
    """The ``epoch``, ``k``, ``t`` and ``names`` of a final table; empty if it is missing
    (a folder written before the final tables, whose fields are float64)."""
    if not path.is_file():
        return _no_final(names)
    return pd.read_parquet(path, columns=["epoch", "k", "t", *names])


def _no_final(names: Sequence[str]) -> pd.DataFrame:
    """The final table of a run that has none: empty, with its columns."""
    return pd.DataFrame({c: [] for c in ("epoch", "k", "t", *names)})


def _put_final(df: pd.DataFrame, final: pd.DataFrame, names: list) -> pd.DataFrame:
    """``df`` with the float64 ``names`` of the final table ``final`` in its snapshot."""
    if final.empty:
        return df
    rows = np.flatnonzero(df["epoch"].to_numpy() == final["epoch"].iloc[0])
    if rows.size == 0:
        return df
    at = pd.MultiIndex.from_arrays([final["k"], final["t"]]).get_indexer(
        pd.MultiIndex.from_arrays([df["k"].to_numpy()[rows], df["t"].to_numpy()[rows]]))
    hit = at >= 0
    for name in names:
        values = df[name].to_numpy(dtype=np.float64, copy=True)
        values[rows[hit]] = final[name].to_numpy(dtype=np.float64)[at[hit]]
        df[name] = values
    return df


def read_table_folder(folder: str | os.PathLike, name: str,
                      final: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every run's file of one per-run table (``history``, ...) as one DataFrame.

    ``run_id`` comes back as a string; a folder with no files gives an empty frame.
    ``fields`` come back as :func:`read_fields` gives them: float64, with each run's last
    snapshot's ``m`` and ``r`` from ``final`` (the ``final`` table as this function
    returns it, if given; else read from each run's file).
    """
    files = sorted((Path(folder) / name).glob("[!.]*.parquet"))
    read = _fields_reader(final) if name == "fields" else pd.read_parquet
    df = pd.concat(_read_each(files, read), ignore_index=True) if files else \
        pd.DataFrame({"run_id": []})
    df["run_id"] = df["run_id"].astype(str)
    return df


def _fields_reader(final: pd.DataFrame | None):
    """``read(path)`` of a fields file that takes the run's final table from ``final``
    (every run's, read already), or from the run's own file (None)."""
    if final is None:
        return _read_fields_file
    finals = dict(iter(final.groupby("run_id", sort=False)))

    def read(path):
        own = finals[path.stem] if path.stem in finals else _no_final(FINAL_NAMES)
        return _read_fields_file(path, final=own)

    return read


def load(folder: str | os.PathLike, tables: Sequence[str] = TABLES) -> Results:
    """Read a sweep's results folder.

    Parameters
    ----------
    folder : str or os.PathLike
        ``<out>/<name>``, as written by ``specblur-sweep``.
    tables : sequence of str
        Which per-run tables to read (the ``fields`` table can be large).

    Returns
    -------
    Results

    Raises
    ------
    SpecblurError
        If ``folder`` holds no ``runs.parquet``.

    Examples
    --------
    >>> import specblur
    >>> specblur.load("no/such/folder")
    Traceback (most recent call last):
    ...
    specblur.errors.SpecblurError: no/such/folder is not a specblur results folder (no runs.parquet)

    With a finished sweep (``specblur-sweep sweeps/seed_table.yaml``)::

        res = specblur.load("results/seed-table", tables=("history",))
        res.history.groupby("run_id")["m_mean"].last()
    """
    folder = Path(folder)
    if not (folder / "runs.parquet").exists():
        raise SpecblurError(f"{folder} is not a specblur results folder (no runs.parquet)")
    # read once: the fields take their last snapshot's m and r from it
    final = read_table_folder(folder, "final") if "final" in tables else None
    parts = {name: final if name == "final" else read_table_folder(folder, name, final)
             if name in tables else pd.DataFrame({"run_id": pd.Series(dtype=str)})
             for name in TABLES}
    if "faithfulness" in tables:
        parts["faithfulness"] = load_faithfulness(folder)
    runs = read_runs(folder)
    runs["run_id"] = runs["run_id"].astype(str)
    return Results(path=folder, runs=runs, **parts)



def _typed(frames, types):
    """Concatenate ``frames`` into a frame with exactly the columns and dtypes of ``types``."""
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in types.items()})
    df = pd.concat(frames, ignore_index=True)[list(types)]
    return df.astype(types)


def _snapshot_rows(run_id: str, epoch: int, snap: dict, names) -> pd.DataFrame:
    """One snapshot's fields ``names`` as long rows: run_id, epoch, k, t, *names."""
    K, T = snap["m"].shape
    k, t = np.divmod(np.arange(K * T, dtype=np.int32), T)
    return pd.DataFrame({"run_id": run_id, "epoch": epoch, "k": k, "t": t,
                         **{c: snap[c].ravel() for c in names}})


def fields_frame(run_id: str, snapshots: dict, store_dtype: str = STORE_DTYPE) -> pd.DataFrame:
    """Long table of the snapshots' fields: run_id, epoch, k, t, m, r, g_mse, g_ent.

    The fields are cast to ``store_dtype`` (``float32`` or ``float64``, see
    :data:`~specblur.schema.STORE_DTYPES`); :func:`final_frame` keeps the last snapshot's
    ``m`` and ``r`` at float64.
    """
    frames = [_snapshot_rows(run_id, epoch, snap, FIELD_NAMES)
              for epoch, snap in sorted(snapshots.items())]
    return _typed(frames, stored_field_types(store_dtype))


def final_frame(run_id: str, snapshots: dict) -> pd.DataFrame:
    """The last snapshot's ``m`` and ``r`` at float64: run_id, epoch, k, t, m, r.

    For a ``done`` run these are the fit's final ``m`` and ``r``; for a ``diverged`` one,
    the last snapshot before it diverged. No snapshot gives an empty table.
    """
    frames = [_snapshot_rows(run_id, epoch, snapshots[epoch], FINAL_NAMES)
              for epoch in sorted(snapshots)[-1:]]
    return _typed(frames, FINAL_TYPES)


def faithfulness_frame(run_id: str, epoch: int, table: pd.DataFrame,
                       options_digest: str) -> pd.DataFrame:
    """A :func:`specblur.faithfulness` table as a run's ``faithfulness`` table.

    Adds ``run_id`` (first), the evaluated snapshot's ``epoch`` and ``options_digest``, and
    casts every column to :data:`~specblur.schema.FAITHFULNESS_TYPES`.
    """
    return _typed([table.assign(run_id=run_id, epoch=epoch, options_digest=options_digest)],
                  FAITHFULNESS_TYPES)


def field_array(snapshot: pd.DataFrame, column: str = "r",
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """One snapshot's column of a long fields table as a ``(K, T)`` array.

    Parameters
    ----------
    snapshot : pandas.DataFrame
        Rows of one snapshot with ``k``, ``t`` and ``column``.
    column : str
        The field (``r``, ``m``, ``g_mse``, ``g_ent``).
    shape : (int, int), optional
        ``(K, T)``; by default one more than the largest ``k`` and ``t``.

    Returns
    -------
    numpy.ndarray
        float64; bins without a row are NaN.
    """
    k = snapshot["k"].to_numpy(dtype=np.int64)
    t = snapshot["t"].to_numpy(dtype=np.int64)
    if shape is None:
        shape = (int(k.max()) + 1, int(t.max()) + 1)
    elif k.size and (k.max() >= shape[0] or t.max() >= shape[1]):
        raise SpecblurError(f"the fields reach bin {k.max()} and frame {t.max()}, beyond the "
                            f"shape {tuple(shape)}")
    out = np.full(shape, np.nan)
    out[k, t] = snapshot[column].to_numpy(dtype=np.float64)
    return out


def outputs_frame(run_id: str, snapshots: dict) -> pd.DataFrame:
    """Long table of the snapshots' output distributions."""
    frames = [snap["outputs"].assign(run_id=run_id, epoch=epoch)
              for epoch, snap in sorted(snapshots.items())]
    return _typed(frames, OUTPUT_TYPES)
