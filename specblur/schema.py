"""Every results table's columns and dtypes, and every default shared between modules.

Modules import these names; none of them spells a column list or a shared default out
again. SPEC §7 fixes the history and snapshot columns, SPEC §8 the results folder.
"""
import re

import numpy as np

from .errors import SpecblurError

# --- input defaults (SPEC §8's sweep example, and the API's keyword defaults) -------------
SR = 16000
N_FFT = 512
HOP = 128

#: The GE2E speaker encoder consumes its own spectrogram: 16 kHz, 25 ms windows, 10 ms hop.
SPEAKER_ENCODER_INPUT = {"sr": 16000, "n_fft": 400, "hop": 160}

# --- lockstep batches of a sweep (``specblur-sweep --batch``) -------------------------------
#: Memory one automatic batch of runs may take, in bytes (the runner's estimate).
BATCH_MEMORY = 2 * 1024 ** 3
#: Most runs in one automatic batch.
MAX_BATCH = 64
#: Model kinds whose runs are batched automatically: those whose calls cost more than the
#: blur. Runs of cheap models (identity, logmel, mlp) gain nothing from a shared model
#: call and lose up to ~20 % to a larger working set, so they run alone unless ``--batch`` asks.
AUTO_BATCH_KINDS = ("speaker_encoder",)

# --- the history table (SPEC §7) ----------------------------------------------------------
#: Statistics over bins that the objective computes in one pass, in this order.
STATS = ("gmse_mean", "gmse_var", "gent_mean", "gent_var", "m_mean", "m_std", "m_min", "m_max",
         "frac_identity", "frac_negative")
#: The smoothness term (SPEC §9.3): the total variation ``TV`` (without its weight ``tv``)
#: and the mean and variance over bins of its gradient part ``∂(tv·TV)/∂m``.
TV_COLUMNS = ("tv", "gtv_mean", "gtv_var")
#: The values of one history row besides ``epoch`` and ``seconds``.
METRICS = ("loss", "mse", "entropy", *STATS, "energy_ratio", *TV_COLUMNS)
#: Multi-scale training (SPEC §9.6): the exponent ``e`` of the radii ``r**e`` the epoch
#: blurred with (1: the run's own radii); ``loss``, ``mse``, ``gmse_mean``, ``gmse_var``
#: and ``energy_ratio`` are at that scale.
SCALE_COLUMN = "blur_exponent"
HISTORY_COLUMNS = ("epoch", *METRICS, SCALE_COLUMN, "seconds")

# --- snapshots ----------------------------------------------------------------------------
OUTPUT_COLUMNS = ("dim", "mean", "std", "q05", "q50", "q95")
FIELD_NAMES = ("m", "r", "g_mse", "g_ent")
#: A fields table in memory: the readers of :mod:`specblur.sweep.results` give every field
#: as float64, whatever the file holds.
FIELD_TYPES = {"run_id": str, "epoch": np.int32, "k": np.int32, "t": np.int32,
               **{name: np.float64 for name in FIELD_NAMES}}
OUTPUT_TYPES = {"run_id": str, "epoch": np.int32, "dim": np.int64,
                **{name: np.float64 for name in OUTPUT_COLUMNS[1:]}}
#: How ``fields/<run_id>.parquet`` stores the fields: a sweep's ``store_dtype`` key, the
#: default first. The choice does not change a run's id.
STORE_DTYPES = ("float32", "float64")
STORE_DTYPE = STORE_DTYPES[0]
#: ``final/<run_id>.parquet``: the last snapshot's ``m`` and ``r`` at float64 whatever
#: ``store_dtype`` is, so that the final fields read back exactly as the fit left them.
FINAL_NAMES = ("m", "r")
FINAL_TYPES = {key: kind for key, kind in FIELD_TYPES.items()
               if key not in FIELD_NAMES or key in FINAL_NAMES}


def stored_field_types(store_dtype: str = STORE_DTYPE) -> dict:
    """The dtypes of a fields file written with ``store_dtype`` (one of STORE_DTYPES)."""
    if store_dtype not in STORE_DTYPES:
        raise SpecblurError(f"store_dtype must be one of {', '.join(STORE_DTYPES)}, "
                            f"got {store_dtype!r}")
    return {**FIELD_TYPES, **{name: np.dtype(store_dtype).type for name in FIELD_NAMES}}


# --- segments (per label and band radius statistics) --------------------------------------
SEGMENT_TYPES = {"run_id": str, "epoch": np.int32, "label": str, "band": str, "f_lo": float,
                 "f_hi": float, "n_frames": np.int64, "n_values": np.int64, "mean": float,
                 "median": float, "q25": float, "q75": float, "iqr": float, "q05": float,
                 "q95": float}
SEGMENT_COLUMNS = list(SEGMENT_TYPES)

# --- the runs table (SPEC §8): run_id, input, every setting, then these ------------------
#: Column of ``runs.parquet`` after ``run_id``: the run's input file as the sweep file wrote
#: it after expansion, relative to the sweep file (a string). Older tables lack it.
INPUT_COLUMN = "input"
RUN_STATUS = ("done", "failed", "diverged")
FINISHED = ("done", "diverged")
#: Columns of ``runs.parquet`` that are not settings, in the order they are written.
#: ``batch``: how many runs were learnt together in lockstep (``--batch``), 1 for a run alone.
RUN_COLUMNS = ("status", "error", "epochs_done", *METRICS, "wall_seconds", "device", "batch")

#: The tables every finished run writes, one file each (``<table>/<run_id>.parquet``).
RUN_TABLES = ("history", "fields", "final", "outputs")
#: The per-run tables of a results folder, each ``<name>/<run_id>.parquet``.
TABLES = (*RUN_TABLES, "segments", "faithfulness")

# --- faithfulness (SPEC §9.5 in sweeps: the evaluate section, an extension of SPEC §8) ----
#: ``faithfulness/<run_id>.parquet``: the tidy table of :func:`specblur.faithfulness` for
#: the run's last snapshot ``epoch``, and ``options_digest``, which names the options used.
FAITHFULNESS_TYPES = {"run_id": str, "epoch": np.int32, "score": str, "R": np.float64,
                      "F": np.float64, "d": np.float64, "d_std": np.float64,
                      "n_bins": np.float64, "energy_share": np.float64, "options_digest": str}


#: A run id: the first 12 hex digits of a sha256 (SPEC §8).
RUN_ID = re.compile(r"[0-9a-f]{12}")


def is_run_id(value) -> bool:
    """True for a string of 12 lowercase hex digits (ids become file names)."""
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None
