"""Segments in sweeps: check ``input.segments`` and write each run's ``segments`` table.

The domain (reading label files, automatic labels, statistics) is :mod:`specblur.segmentation`.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pandas as pd

from ..audio import Spectrogram
from ..errors import SpecblurError
from ..segmentation import check_auto_thresholds, check_bands, read_intervals, segment_stats, segments
from .results import read_fields, write_table

__all__ = ["check_config", "frame_table_for", "write_sweep_segments"]


def check_config(value: object, folder: str | os.PathLike, where: str,
                 has_audio: bool = True, stem: str | None = None,
                 input_name: str | None = None) -> dict | None:
    """Check a sweep's ``input.segments`` for one input and resolve it (hook of :mod:`.inputs`).

    Accepted forms: ``auto``; a path (relative to the sweep file) of a ``.TextGrid`` or
    ``.csv`` file, in which ``{stem}`` stands for the input file's stem (one label file per
    input: ``{stem}.TextGrid``); or a mapping with ``path`` (and optional ``tier``) or
    ``auto`` (``true`` or a mapping of thresholds), and optional ``bands``.

    Parameters
    ----------
    value : object
        The ``input.segments`` value as read from YAML (None when absent).
    folder : str or os.PathLike
        The sweep file's folder.
    where : str
        The sweep file, for messages.
    has_audio : bool
        Whether the input is audio (``auto`` needs it).
    stem : str, optional
        The input file's stem, substituted for ``{stem}`` in the path.
    input_name : str, optional
        The input as written, named by the messages of a sweep with several inputs.

    Returns
    -------
    dict or None
        ``{"source": "auto" or absolute path, "tier": ..., "auto": {...}, "bands": {...}}``.
    """
    if value is None:
        return None
    key = f"{where}: input.segments"
    if isinstance(value, str):
        value = {"auto": True} if value == "auto" else {"path": value}
    if not isinstance(value, dict):
        raise SpecblurError(f"{key} must be 'auto', a file path or a mapping, got {value!r}")
    unknown = set(value) - {"path", "tier", "auto", "bands"}
    if unknown:
        raise SpecblurError(f"{key}: unknown key(s) {', '.join(map(str, sorted(unknown)))} "
                            f"(valid: path, tier, auto, bands)")
    has_path = value.get("path") is not None
    auto = value.get("auto")
    if has_path == bool(auto):
        raise SpecblurError(f"{key} needs exactly one of 'path' or 'auto'")
    bands = check_bands(value.get("bands"), key)
    out = {"bands": {n: [lo, None if math.isinf(hi) else hi] for n, (lo, hi) in bands.items()}}
    if has_path:
        if not isinstance(value["path"], str):
            raise SpecblurError(f"{key}.path must be a file path, got {value['path']!r}")
        if "{stem}" in value["path"] and stem is None:
            raise SpecblurError(f"{key}.path: '{{stem}}' needs an input file")
        file = (Path(folder) / value["path"].replace("{stem}", stem or "")).resolve()
        if not file.is_file():
            which = f" for input {input_name}" if input_name else ""
            raise SpecblurError(f"{key}: file not found{which}: {file}")
        tier = value.get("tier")
        if tier is not None and not isinstance(tier, str):
            raise SpecblurError(f"{key}.tier must be a string, got {tier!r}")
        try:  # report a bad file before any run starts
            read_intervals(file, tier=tier)
        except SpecblurError as exc:
            raise SpecblurError(f"{key}: {exc}") from None
        out.update(source=str(file), tier=tier, auto=None)
    else:
        if value.get("tier") is not None:
            raise SpecblurError(f"{key}: 'tier' applies to a TextGrid path, not to auto")
        if not has_audio:
            raise SpecblurError(f"{key}: 'auto' needs an audio input, not a spectrogram")
        thresholds = auto if isinstance(auto, dict) else {}
        if not isinstance(auto, (dict, bool)):
            raise SpecblurError(f"{key}.auto must be true or a mapping of thresholds")
        out.update(source="auto", tier=None, auto=check_auto_thresholds(thresholds, f"{key}.auto"))
    return out


def frame_table_for(config: dict, spec: Spectrogram) -> pd.DataFrame:
    """The :func:`segments` table of a sweep's resolved ``input.segments`` and its input."""
    n_frames = spec.mag.shape[1]
    if config["source"] == "auto":
        return segments("auto", sr=spec.sr, hop=spec.hop, n_frames=n_frames,
                        waveform=spec.waveform, **config["auto"])
    return segments(config["source"], sr=spec.sr, hop=spec.hop, n_frames=n_frames,
                    tier=config.get("tier"))


def write_sweep_segments(folder: str | os.PathLike, config: dict, spec: Spectrogram,
                         run_ids: list[str]) -> list[Path]:
    """Write ``segments/<run_id>.parquet`` for every given run with a fields table.

    Called by :func:`specblur.sweep.runner.run_sweep` after the runs; cheap, so it
    rewrites every table (a changed segmentation does not change the run ids).
    """
    folder = Path(folder)
    labels = frame_table_for(config, spec)
    if labels.empty and run_ids:
        print(f"specblur-sweep: warning: the segments {config['source']} label no frame of "
              f"this input (T = {spec.mag.shape[1]} frames of {spec.hop / spec.sr:g} s): its "
              "segment tables are empty", file=sys.stderr)
    written = []
    for rid in run_ids:
        fields = read_fields(folder, rid, epochs="last", columns=("epoch", "k", "t", "r"))
        if fields.empty:
            continue
        last = int(fields["epoch"].max())
        stats = segment_stats(fields, labels, sr=spec.sr, n_fft=spec.n_fft,
                              bands=config.get("bands"), run_id=rid, epoch=last)
        written.append(write_table(folder / "segments" / f"{rid}.parquet", stats))
    return written
