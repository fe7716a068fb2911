"""Segments of the input: label its frames, and summarise a radius field by label and band.

A *segmentation* is a table of intervals ``start, end, label`` in seconds. It comes from

* a Praat TextGrid (read with :mod:`praatio`; one interval tier, empty intervals skipped),
* a CSV file of ``start,end,label`` rows in seconds (an optional header row
  ``start,end,label``; blank lines and lines starting with ``#`` are skipped), or
* ``"auto"``: the waveform split into ``silence``, ``unvoiced`` and ``voiced`` frames from
  the frame energy and the pYIN voicing probability of :func:`librosa.pyin` (see
  :data:`AUTO_DEFAULTS` for the thresholds, all settable).

Frame ``t`` has its centre at ``t * hop / sr`` seconds (SPEC §2, centred frames) and
belongs to the interval that holds its centre: ``start <= centre < end`` (the interval that
ends last also holds a centre equal to its end). Frames held by no interval have no label
and are left out of every statistic. Intervals must not overlap.

:func:`segment_stats` turns the final radius field of a run (its ``fields`` table's last
snapshot) into one row per label and frequency band; ``specblur-sweep`` writes it as
``segments/<run_id>.parquet`` when the sweep's ``input.segments`` is set (the hooks are in
:mod:`specblur.sweep.segments`, the plot in :mod:`specblur.report.plots`).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ._checks import to_float
from .errors import SpecblurError
from .schema import SEGMENT_COLUMNS, SEGMENT_TYPES

__all__ = ["AUTO_DEFAULTS", "DEFAULT_BANDS", "auto_frame_labels", "auto_intervals", "check_auto_thresholds",
           "check_bands",
           "frame_labels", "read_csv_segments", "read_intervals", "read_textgrid", "segment_stats",
           "segments", "write_textgrid"]

#: Thresholds of ``segments("auto")``, all settable as keyword arguments or in a sweep file.
AUTO_DEFAULTS = {
    # a frame is silence when its RMS energy (over `frame_seconds`) is this many dB or
    # more below the loudest frame of the signal (a signal of zeros is all silence)
    "silence_db": -30.0,
    # a non-silent frame is voiced when pYIN's Viterbi decoding calls it voiced; these two
    # are pYIN's own priors (librosa.pyin): the probability of switching between voiced
    # and unvoiced from one frame to the next, and of a frame with no pitch candidate
    # being voiced. Raise them to call more frames voiced.
    "switch_prob": 0.01,
    "no_trough_prob": 0.01,
    # the pitch range pYIN searches, in Hz (speech: 60-500)
    "fmin": 60.0,
    "fmax": 500.0,
    # analysis window of the energy and of pYIN, in seconds (rounded up to a power of two
    # of samples; at 16 kHz 0.064 s is 1024 samples)
    "frame_seconds": 0.064,
    # runs of frames shorter than this many seconds are merged into a neighbour
    "min_duration": 0.03,
}

#: Frequency bands of the statistics: name -> [low Hz, high Hz), high None = open.
DEFAULT_BANDS = {"low": [0.0, 1000.0], "mid": [1000.0, 4000.0], "high": [4000.0, None]}

AUTO_LABELS = ("silence", "unvoiced", "voiced")


_EMPTY = pd.DataFrame({"start": pd.Series(dtype=float), "end": pd.Series(dtype=float),
                       "label": pd.Series(dtype=str)})


# --- reading segmentations ------------------------------------------------------------------


def read_intervals(path: str | os.PathLike, tier: str | None = None) -> pd.DataFrame:
    """Read a ``.TextGrid`` or ``.csv`` segmentation as a table ``start, end, label``.

    Parameters
    ----------
    path : str or os.PathLike
        A Praat TextGrid (``.TextGrid``, any case) or a CSV file (any other suffix).
    tier : str, optional
        TextGrid only: the interval tier to read; by default the only interval tier.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``start``; floats ``start, end`` in seconds and string ``label``.

    Raises
    ------
    SpecblurError
        For a missing or malformed file, naming the file and, where known, the line.
    """
    path = Path(path)
    if path.suffix.lower() == ".textgrid":
        return read_textgrid(path, tier=tier)
    if tier is not None:
        raise SpecblurError(f"{path}: 'tier' applies to TextGrid files only")
    return read_csv_segments(path)


def read_csv_segments(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV file of ``start,end,label`` rows (seconds); see :func:`read_intervals`."""
    path = Path(path)
    if not path.is_file():
        raise SpecblurError(f"segments file not found: {path}")
    try:
        raw = pd.read_csv(path, header=None, names=["start", "end", "label"], dtype=str,
                          skip_blank_lines=False, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as exc:
        msg = str(exc).strip()
        m = re.search(r"line (\d+)", msg)
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise SpecblurError(f"{where}: malformed CSV (expected start,end,label): {msg}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SpecblurError(f"cannot read segments file {path}: {exc}") from None
    rows = []
    for i, (start, end, label) in enumerate(raw.itertuples(index=False, name=None)):
        line = i + 1
        start, end, label = (str(start).strip(), str(end).strip(), str(label).strip())
        if not start and not end and not label or start.startswith("#"):
            continue
        if i == 0 and start.lower() == "start":
            if end.lower() != "end" or label.lower() != "label":
                raise SpecblurError(f"{path}:{line}: the header must be start,end,label")
            continue
        try:
            s, e = float(start), float(end)
        except ValueError:
            raise SpecblurError(f"{path}:{line}: start and end must be numbers of seconds, "
                                f"got {start!r}, {end!r}") from None
        if not label:
            raise SpecblurError(f"{path}:{line}: missing label (expected start,end,label)")
        rows.append((s, e, label, line))
    return _checked(rows, path)


def read_textgrid(path: str | os.PathLike, tier: str | None = None) -> pd.DataFrame:
    """Read one interval tier of a Praat TextGrid; see :func:`read_intervals`."""
    from praatio import textgrid

    path = Path(path)
    if not path.is_file():
        raise SpecblurError(f"segments file not found: {path}")
    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False,
                                     reportingMode="error")
    except Exception as exc:  # noqa: BLE001 - praatio raises many kinds; name the file
        line = _first_bad_textgrid_line(path)
        where = f"{path}:{line}" if line else str(path)
        raise SpecblurError(f"{where}: not a readable TextGrid: "
                            f"{type(exc).__name__}: {exc}") from None
    names = [name for name in grid.tierNames
             if grid.getTier(name).tierType == textgrid.INTERVAL_TIER]
    if tier is None:
        if len(names) != 1:
            raise SpecblurError(f"{path}: expected one interval tier, found {len(names)} "
                                f"({', '.join(map(repr, names))}); choose one with 'tier'")
        tier = names[0]
    elif tier not in names:
        raise SpecblurError(f"{path}: no interval tier {tier!r} (interval tiers: "
                            f"{', '.join(map(repr, names)) or 'none'})")
    text = _read_text(path)
    rows = []
    for start, end, label in grid.getTier(tier).entries:
        label = str(label).strip()
        if label:
            rows.append((float(start), float(end), label, _line_of_interval(text, start)))
    return _checked(rows, path)


def _read_text(path):
    raw = Path(path).read_bytes()
    for enc in ("utf-8-sig", "utf-16"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _first_bad_textgrid_line(path):
    """The first line of a long-format TextGrid whose ``xmin``/``xmax`` is not a number."""
    try:
        text = _read_text(path)
    except OSError:
        return None
    times = []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*(xmin|xmax)\s*=\s*(.*?)\s*$", line)
        if m:
            try:
                times.append((n, m.group(1), float(m.group(2))))
            except ValueError:
                return n
    # an interval whose end precedes its start
    for (n0, k0, v0), (n1, k1, v1) in zip(times, times[1:]):
        if k0 == "xmin" and k1 == "xmax" and v1 < v0:
            return n1
    return None


def _line_of_interval(text, start):
    """The line of ``xmin = <start>`` in an interval block (long format), or None."""
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        m = re.match(r"\s*xmin\s*=\s*(\S+)\s*$", line)
        if m and n >= 2 and re.match(r"\s*intervals\s*\[\d+\]", lines[n - 2]):
            try:
                if math.isclose(float(m.group(1)), start, rel_tol=0, abs_tol=1e-9):
                    return n
            except ValueError:
                continue
    return None


def _checked(rows, path):
    """Check rows ``(start, end, label, line)`` and return the sorted table."""
    def where(line):
        return f"{path}:{line}" if line else str(path)

    for s, e, label, line in rows:
        if not (math.isfinite(s) and math.isfinite(e)):
            raise SpecblurError(f"{where(line)}: start and end must be finite, got {s}, {e}")
        if s < 0:
            raise SpecblurError(f"{where(line)}: start must be >= 0, got {s}")
        if e <= s:
            raise SpecblurError(f"{where(line)}: end {e} must be after start {s}")
    rows = sorted(rows, key=lambda r: r[0])
    for prev, cur in zip(rows, rows[1:]):
        if cur[0] < prev[1] - 1e-9:
            raise SpecblurError(f"{where(cur[3])}: segment {cur[0]}-{cur[1]} {cur[2]!r} overlaps "
                                f"{prev[0]}-{prev[1]} {prev[2]!r}")
    if not rows:
        return _EMPTY.copy()
    return pd.DataFrame({"start": [r[0] for r in rows], "end": [r[1] for r in rows],
                         "label": [r[2] for r in rows]})


# --- automatic segmentation -----------------------------------------------------------------


def check_auto_thresholds(thresholds: Mapping, where: str = "segments") -> dict:
    unknown = set(thresholds) - set(AUTO_DEFAULTS)
    if unknown:
        raise SpecblurError(f"{where}: unknown auto threshold(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(AUTO_DEFAULTS)}")
    out = {**AUTO_DEFAULTS}
    for key, value in thresholds.items():
        out[key] = to_float(value, f"{where}: auto threshold {key}")
    if not (0 < out["switch_prob"] < 1 and 0 < out["no_trough_prob"] < 1):
        raise SpecblurError(f"{where}: switch_prob and no_trough_prob must be in (0, 1)")
    if not 0 < out["fmin"] < out["fmax"]:
        raise SpecblurError(f"{where}: auto thresholds need 0 < fmin < fmax")
    if out["frame_seconds"] <= 0 or out["min_duration"] < 0:
        raise SpecblurError(f"{where}: frame_seconds must be > 0 and min_duration >= 0")
    return out


def auto_frame_labels(waveform: np.ndarray, *, sr: int, hop: int, **thresholds) -> np.ndarray:
    """Label every centred frame ``silence``, ``unvoiced`` or ``voiced``.

    Silence: RMS energy at least ``-silence_db`` dB below the loudest frame. Otherwise
    voiced when pYIN's voicing decision (Viterbi, priors ``switch_prob`` and
    ``no_trough_prob``) says so, else unvoiced. Then
    runs shorter than ``min_duration`` are merged into the longer neighbour.

    Returns
    -------
    numpy.ndarray of str
        ``1 + len(waveform) // hop`` labels.
    """
    import librosa

    cfg = check_auto_thresholds(thresholds)
    y = np.asarray(waveform, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise SpecblurError("segments 'auto' needs a non-empty 1-D waveform")
    n_frames = 1 + y.size // hop
    frame = int(2 ** math.ceil(math.log2(max(cfg["frame_seconds"] * sr, 16))))
    rms = librosa.feature.rms(y=y, frame_length=frame, hop_length=hop, center=True)[0]
    rms = _fit_length(np.asarray(rms, dtype=np.float64), n_frames)
    peak = rms.max()
    if peak <= 0:
        return np.full(n_frames, AUTO_LABELS[0], dtype=object)
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(rms / peak)
    silent = db <= cfg["silence_db"]
    # pYIN needs a few periods of fmin in a frame
    fmin = max(cfg["fmin"], 2.0 * sr / frame)
    fmax = min(cfg["fmax"], sr / 2.0)
    _, flag, _ = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=sr, frame_length=frame,
                              hop_length=hop, center=True, switch_prob=cfg["switch_prob"],
                              no_trough_prob=cfg["no_trough_prob"])
    voiced = _fit_length(flag, n_frames) > 0.5
    labels = np.where(silent, 0, np.where(voiced, 2, 1))
    labels = _merge_short(labels, max(1, int(round(cfg["min_duration"] * sr / hop))))
    return np.asarray(AUTO_LABELS, dtype=object)[labels]


def _fit_length(x, n):
    """``x`` cut or padded (with its last value, or 0 when empty) to length ``n``."""
    x = np.asarray(x)
    if x.size >= n:
        return x[:n]
    return np.concatenate([x, np.full(n - x.size, x[-1] if x.size else 0, dtype=x.dtype)])


def _runs(labels):
    """(start, stop, value) of each run of equal values."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.r_[0, cuts]
    stops = np.r_[cuts, labels.size]
    return [(int(a), int(b), labels[a]) for a, b in zip(starts, stops)]


def _merge_short(labels, min_frames):
    """Merge runs shorter than ``min_frames`` into the longer neighbour, shortest first."""
    labels = np.array(labels)
    while True:
        runs = _runs(labels)
        short = [i for i, (a, b, _) in enumerate(runs) if b - a < min_frames]
        if not short or len(runs) == 1:
            return labels
        i = min(short, key=lambda j: runs[j][1] - runs[j][0])
        a, b, _ = runs[i]
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        if left is None or (right is not None and right[1] - right[0] > left[1] - left[0]):
            labels[a:b] = right[2]
        else:
            labels[a:b] = left[2]


def labels_to_intervals(labels: np.ndarray, *, sr: int, hop: int,
                        duration: float | None = None) -> pd.DataFrame:
    """Per-frame labels as intervals whose boundaries lie half-way between frame centres.

    Frame ``t`` of the result's intervals holds exactly frame ``t``'s centre, so
    :func:`frame_labels` gives the labels back.
    """
    runs = _runs(np.asarray(labels, dtype=object))
    n = len(labels)
    if duration is None:
        duration = (n - 1) * hop / sr
    rows = []
    for a, b, label in runs:
        start = 0.0 if a == 0 else (a - 0.5) * hop / sr
        end = duration if b == n else (b - 0.5) * hop / sr
        rows.append((start, max(end, start + 1e-9), str(label)))
    return pd.DataFrame(rows, columns=["start", "end", "label"])


def auto_intervals(waveform: np.ndarray, *, sr: int, hop: int, **thresholds) -> pd.DataFrame:
    """``segments("auto")`` as intervals ``start, end, label`` (for example to write a TextGrid)."""
    labels = auto_frame_labels(waveform, sr=sr, hop=hop, **thresholds)
    return labels_to_intervals(labels, sr=sr, hop=hop, duration=len(waveform) / sr)


# --- frames ---------------------------------------------------------------------------------


def frame_labels(intervals: pd.DataFrame, *, sr: int, hop: int, n_frames: int) -> np.ndarray:
    """The label of every frame's centre ``t * hop / sr`` (None where no interval holds it)."""
    centres = np.arange(n_frames) * hop / sr
    out = np.full(n_frames, None, dtype=object)
    if len(intervals) == 0:
        return out
    last_end = float(intervals["end"].max())
    for start, end, label in intervals[["start", "end", "label"]].itertuples(index=False):
        inside = (centres >= start) & ((centres < end) | ((end == last_end) & (centres == end)))
        out[inside] = label
    return out


def segments(source: str | os.PathLike | pd.DataFrame, *, sr: int, hop: int,
             n_frames: int | None = None, waveform: np.ndarray | None = None,
             tier: str | None = None, **thresholds) -> pd.DataFrame:
    """Label the frames of an input.

    Parameters
    ----------
    source : str, os.PathLike or pandas.DataFrame
        ``"auto"``, a ``.TextGrid`` or ``.csv`` file, or a table ``start, end, label``.
    sr, hop : int
        Sample rate and frame step; frame ``t`` is centred at ``t * hop / sr`` s.
    n_frames : int, optional
        Number of frames ``T``; by default ``1 + len(waveform) // hop``.
    waveform : array_like, optional
        The signal at ``sr``; needed for ``"auto"``.
    tier : str, optional
        TextGrid only: the interval tier.
    **thresholds
        ``"auto"`` only: any of :data:`AUTO_DEFAULTS`.

    Returns
    -------
    pandas.DataFrame
        One row per frame held by a segment: ``t`` (int), ``time`` (the centre, s) and
        ``label`` (str). Frames held by no segment are left out.

    Examples
    --------
    >>> import pandas as pd
    >>> import specblur
    >>> iv = pd.DataFrame({"start": [0.0, 0.02], "end": [0.02, 0.05], "label": ["sil", "V"]})
    >>> specblur.segments(iv, sr=1000, hop=10, n_frames=6)
       t  time label
    0  0  0.00   sil
    1  1  0.01   sil
    2  2  0.02     V
    3  3  0.03     V
    4  4  0.04     V
    5  5  0.05     V

    The bundled sample has a TextGrid of ``sil`` / ``C`` / ``V`` labels::

        spec = specblur.Spectrogram.from_audio("data/arctic_a0007.wav")
        seg = specblur.segments("data/arctic_a0007.TextGrid", sr=spec.sr, hop=spec.hop,
                                n_frames=spec.mag.shape[1])
    """
    if n_frames is None:
        if waveform is None:
            raise SpecblurError("segments: give n_frames or the waveform")
        n_frames = 1 + len(waveform) // hop
    n_frames = int(n_frames)
    if isinstance(source, str) and source == "auto":
        if waveform is None:
            raise SpecblurError("segments 'auto' needs the waveform (an audio input)")
        labels = auto_frame_labels(waveform, sr=sr, hop=hop, **thresholds)
        labels = _fit_length(np.asarray(labels, dtype=object), n_frames)
    else:
        if thresholds:
            raise SpecblurError(f"segments: thresholds {', '.join(sorted(thresholds))} apply "
                                f"to 'auto' only")
        if isinstance(source, pd.DataFrame):
            missing = {"start", "end", "label"} - set(source)
            if missing:
                raise SpecblurError(f"segments: the table lacks column(s) {sorted(missing)}")
            intervals = _checked([(float(s), float(e), str(lab), None) for s, e, lab in
                                  source[["start", "end", "label"]].itertuples(index=False)],
                                 "segments table")
        else:
            intervals = read_intervals(source, tier=tier)
        labels = frame_labels(intervals, sr=sr, hop=hop, n_frames=n_frames)
    t = np.arange(n_frames)
    held = np.array([lab is not None for lab in labels], dtype=bool)
    return pd.DataFrame({"t": t[held].astype(np.int32), "time": t[held] * hop / sr,
                         "label": pd.Series(labels[held], dtype=object).astype(str).to_numpy()})


# --- statistics -----------------------------------------------------------------------------


def check_bands(bands: Mapping | None, where: str = "segments") -> dict:
    """Bands as ``{name: (lo, hi)}`` with floats (hi inf when open); see :data:`DEFAULT_BANDS`."""
    if bands is None:
        bands = DEFAULT_BANDS
    if not isinstance(bands, dict) or not bands:
        raise SpecblurError(f"{where}: bands must be a mapping name -> [low Hz, high Hz]")
    out = {}
    for name, edges in bands.items():
        if not isinstance(edges, (list, tuple)) or len(edges) != 2:
            raise SpecblurError(f"{where}: band {name!r} must be [low Hz, high Hz], got {edges!r}")
        lo = to_float(edges[0], f"{where}: band {name!r} low edge")
        hi = math.inf if edges[1] is None else to_float(edges[1], f"{where}: band {name!r} high edge")
        if not (0 <= lo < hi):
            raise SpecblurError(f"{where}: band {name!r} needs 0 <= low < high, got {edges!r}")
        out[str(name)] = (lo, hi)
    return out


def segment_stats(fields: pd.DataFrame, labels: pd.DataFrame, *, sr: int, n_fft: int,
                  bands: Mapping | None = None, run_id: str | None = None,
                  epoch: int | None = None) -> pd.DataFrame:
    """Final-radius statistics per segment label and frequency band.

    Parameters
    ----------
    fields : pandas.DataFrame
        A run's ``fields`` table (columns ``epoch, k, t, r``); the snapshot ``epoch`` (by
        default the last one) is used.
    labels : pandas.DataFrame
        The result of :func:`segments` (columns ``t, label``).
    sr, n_fft : int
        Bin ``k`` is at ``k * sr / n_fft`` Hz.
    bands : mapping, optional
        ``name -> [low Hz, high Hz)`` (high None: open); :data:`DEFAULT_BANDS` by default.
    run_id : str, optional
        Written to the ``run_id`` column (default: the table's own, if any).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SEGMENT_COLUMNS`: per (label, band) the number of frames of that
        label, the number of (k, t) values, and the mean, median, 25 % and 75 % quantiles,
        IQR (q75 - q25) and 5 % and 95 % quantiles of ``r`` (linear interpolation, as
        :meth:`pandas.Series.quantile`).
    """
    bands = check_bands(bands)
    if epoch is None:
        epoch = int(fields["epoch"].max()) if len(fields) else 0
    snap = fields[fields["epoch"] == epoch]
    if run_id is None:
        run_id = str(snap["run_id"].iloc[0]) if "run_id" in snap and len(snap) else ""
    df = snap[["k", "t", "r"]].merge(labels[["t", "label"]], on="t", how="inner")
    freq = df["k"].to_numpy() * sr / n_fft
    rows = []
    n_frames = labels.groupby("label")["t"].nunique()
    for label in sorted(df["label"].unique()):
        of_label = df["label"].to_numpy() == label
        for name, (lo, hi) in bands.items():
            r = df.loc[of_label & (freq >= lo) & (freq < hi), "r"]
            if r.empty:
                continue
            q = r.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).to_numpy()
            rows.append({"run_id": str(run_id), "epoch": int(epoch), "label": str(label),
                         "band": name, "f_lo": lo, "f_hi": hi,
                         "n_frames": int(n_frames[label]), "n_values": int(r.size),
                         "mean": float(r.mean()), "median": float(q[2]), "q25": float(q[1]),
                         "q75": float(q[3]), "iqr": float(q[3] - q[1]), "q05": float(q[0]),
                         "q95": float(q[4])})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SEGMENT_TYPES.items()})
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS).astype(SEGMENT_TYPES)


# --- writing ---------------------------------------------------------------------------------


def write_textgrid(intervals: pd.DataFrame, path: str | os.PathLike, *, duration: float,
                   tier: str = "segments") -> Path:
    """Write intervals ``start, end, label`` as a one-tier Praat TextGrid (long format)."""
    from praatio import textgrid
    from praatio.utilities.constants import Interval

    entries = [Interval(float(s), float(e), str(lab))
               for s, e, lab in intervals[["start", "end", "label"]].itertuples(index=False)]
    grid = textgrid.Textgrid(0.0, float(duration))
    grid.addTier(textgrid.IntervalTier(tier, entries, 0.0, float(duration)))
    path = Path(path)
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    return path
