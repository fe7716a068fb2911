"""The results folder of a sweep (SPEC §8): atomic writes and ``specblur.load``.

Layout of ``<out>/<name>/``: ``sweep.yaml``, ``runs.parquet``, ``history/``, ``fields/``,
``outputs/`` (one Parquet file per run, each with a string ``run_id`` column) and
``audio/``. Every file is written to a hidden temporary file in its folder and renamed,
so a reader never sees half a file; Parquet readers skip names that start with ``.``.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ._io import atomic_write
from .errors import SpecblurError

TABLES = ("history", "fields", "outputs", "segments")


def write_table(path, df):
    """Write a DataFrame as Parquet (zstd), atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_yaml(path, data):
    """Write a mapping as YAML, atomically."""
    text = yaml.safe_dump(data, sort_keys=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temporaries(folder):
    """Delete temporary files that an interrupted sweep left behind."""
    for tmp in Path(folder).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def read_runs(folder):
    """The ``runs.parquet`` table of a results folder, or an empty one."""
    path = Path(folder) / "runs.parquet"
    if not path.exists():
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    return pd.read_parquet(path)


def flatten_settings(settings):
    """Settings as flat columns: ``model`` becomes ``model.kind``, ``model.n_mels``, ...

    Lists become JSON strings, so every column has one scalar type.
    """
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            for sub, v in flatten_settings(value).items():
                out[f"{key}.{sub}"] = v
        elif isinstance(value, (list, tuple)):
            out[key] = json.dumps(value)
        else:
            out[key] = value
    return out


@dataclass
class Results:
    """Every table of a sweep's results folder, with ``run_id`` as a string.

    Attributes
    ----------
    runs, history, fields, outputs : pandas.DataFrame
    segments : pandas.DataFrame
        Radius statistics by segment label and band; empty unless the sweep set
        ``input.segments``.
    path : pathlib.Path
    """

    path: Path
    runs: pd.DataFrame
    history: pd.DataFrame
    fields: pd.DataFrame
    outputs: pd.DataFrame
    segments: pd.DataFrame


def read_fields(folder, run_id, epochs="ends", columns=("epoch", "k", "t", "r", "g_mse", "g_ent")):
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
        The rows of those snapshots (empty when the run has no fields file).
    """
    path = Path(folder) / "fields" / f"{run_id}.parquet"
    if not path.is_file():
        return pd.DataFrame({c: [] for c in (columns or ("epoch", "k", "t", "r"))})
    columns = list(columns) if columns is not None else None
    if isinstance(epochs, str):
        if epochs == "all":
            return pd.read_parquet(path, columns=columns)
        stored = np.unique(pq.read_table(path, columns=["epoch"]).column(0).to_numpy())
        if stored.size == 0:
            return pd.read_parquet(path, columns=columns)
        if epochs == "last":
            epochs = [stored[-1]]
        elif epochs == "ends":
            epochs = sorted({stored[0], stored[-1]})
        else:
            raise ValueError(f"epochs must be 'ends', 'last', 'all' or a list, got {epochs!r}")
    epochs = [int(e) for e in epochs]
    return pd.read_parquet(path, columns=columns, filters=[("epoch", "in", epochs)])


def read_table_folder(folder, name):
    """Every run's file of one per-run table (``history``, ...) as one DataFrame.

    ``run_id`` comes back as a string; a folder with no files gives an empty frame.
    """
    files = sorted((Path(folder) / name).glob("[!.]*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else \
        pd.DataFrame({"run_id": []})
    df["run_id"] = df["run_id"].astype(str)
    return df


def load(folder, tables=TABLES):
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
    """
    folder = Path(folder)
    if not (folder / "runs.parquet").exists():
        raise SpecblurError(f"{folder} is not a specblur results folder (no runs.parquet)")
    parts = {name: read_table_folder(folder, name) if name in tables
             else pd.DataFrame({"run_id": pd.Series(dtype=str)}) for name in TABLES}
    runs = read_runs(folder)
    runs["run_id"] = runs["run_id"].astype(str)
    return Results(path=folder, runs=runs, **parts)


FIELD_TYPES = {"run_id": str, "epoch": np.int32, "k": np.int32, "t": np.int32, "m": np.float64,
               "r": np.float64, "g_mse": np.float64, "g_ent": np.float64}
OUTPUT_TYPES = {"run_id": str, "epoch": np.int32, "dim": np.int64, "mean": np.float64,
                "std": np.float64, "q05": np.float64, "q50": np.float64, "q95": np.float64}


def _typed(frames, types):
    """Concatenate ``frames`` into a frame with exactly the columns and dtypes of ``types``."""
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in types.items()})
    df = pd.concat(frames, ignore_index=True)[list(types)]
    return df.astype(types)


def fields_frame(run_id, snapshots):
    """Long table of the snapshots' fields: run_id, epoch, k, t, m, r, g_mse, g_ent."""
    frames = []
    for epoch, snap in sorted(snapshots.items()):
        K, T = snap["m"].shape
        k, t = np.divmod(np.arange(K * T, dtype=np.int32), T)
        frames.append(pd.DataFrame({"run_id": run_id, "epoch": epoch, "k": k, "t": t,
                                    **{c: snap[c].ravel() for c in ("m", "r", "g_mse", "g_ent")}}))
    return _typed(frames, FIELD_TYPES)


def outputs_frame(run_id, snapshots):
    """Long table of the snapshots' output distributions."""
    frames = [snap["outputs"].assign(run_id=run_id, epoch=epoch)
              for epoch, snap in sorted(snapshots.items())]
    return _typed(frames, OUTPUT_TYPES)
