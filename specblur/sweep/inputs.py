"""Sweep inputs (SPEC §8, corpus extension): one file, a list, a glob pattern or a grid axis.

Every input file of a sweep becomes an :class:`Input` with its resolved settings (shared
``sr``, ``n_fft``, ``hop`` and ``normalize_dbfs``; its own ``segments``) and its content
hash. Everything that can go wrong is reported before any run starts, naming the file and
the key.
"""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from .._checks import suggest, to_float, to_int
from .._io import file_sha256
from ..errors import SpecblurError
from ..schema import HOP, N_FFT, SR
from .segments import check_config as check_segments

__all__ = ["GRID_INPUT_KEYS", "INPUT_KEYS", "Input", "expand_inputs", "split_grid"]

#: The smallest valid input settings: an STFT needs at least 2 samples per frame.
LOWEST = {"sr": 1, "n_fft": 2, "hop": 1}
#: RMS levels a waveform may be scaled to: quieter is all but silence, louder clips.
DBFS_RANGE = (-100.0, 0.0)
INPUT_KEYS = {"audio": None, "spectrogram": None, "sr": SR, "n_fft": N_FFT, "hop": HOP,
              "normalize_dbfs": None,
              "segments": None}  # see specblur.sweep.segments.check_config
#: The ``input.*`` keys a grid may vary: the input file itself (each value a file or pattern).
GRID_INPUT_KEYS = ("input.audio", "input.spectrogram")
SOURCES = ("audio", "spectrogram")
_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Input:
    """One input file of a sweep.

    Attributes
    ----------
    name : str
        The file as written after expansion, relative to the sweep file (the ``input``
        column of ``runs.parquet``).
    settings : dict
        The resolved input mapping: ``audio`` or ``spectrogram`` (an absolute path),
        ``sr``, ``n_fft``, ``hop``, ``normalize_dbfs`` and this file's ``segments``.
    sha256 : str
        Content hash of the file.
    """

    name: str
    settings: dict
    sha256: str

    @property
    def file(self) -> str:
        """The absolute path of the input file."""
        return self.settings.get("audio") or self.settings["spectrogram"]

    @property
    def stem(self) -> str:
        """The file name without its suffix; unique within a sweep (``audio/<stem>/``)."""
        return Path(self.file).stem

    def resolved(self) -> dict:
        """This input as ``sweep.yaml`` records it in its ``inputs`` list."""
        source = "audio" if self.settings.get("audio") else "spectrogram"
        return {"name": self.name, "stem": self.stem, source: self.file, "sha256": self.sha256,
                "segments": self.settings.get("segments")}


def split_grid(grid: object, where: str) -> tuple[object, dict]:
    """Take the ``input.*`` axes out of a sweep's ``grid``.

    Returns
    -------
    (grid, axes)
        The grid without them (as given when it is not a mapping), and ``{"audio" or
        "spectrogram": values}``.

    Raises
    ------
    SpecblurError
        For another ``input.*`` key: only the input file may vary in a grid.
    """
    if not isinstance(grid, dict):
        return grid, {}
    rest, axes = {}, {}
    for key, values in grid.items():
        if isinstance(key, str) and key.split(".")[0] == "input":
            if key not in GRID_INPUT_KEYS:
                raise SpecblurError(
                    f"{where}: grid.{key}: only the input file ({', '.join(GRID_INPUT_KEYS)}) "
                    f"may vary in a grid{suggest(key, GRID_INPUT_KEYS)}; input settings such as "
                    "sr and hop are shared by every input")
            axes[key.split(".", 1)[1]] = values
        else:
            rest[key] = values
    return rest, axes


def expand_inputs(inp: object, folder: Path, where: str, grid_axes: dict | None = None
                  ) -> list[Input]:
    """Check a sweep's ``input`` section (and its grid axis) and expand it into inputs.

    Parameters
    ----------
    inp : object
        The ``input`` mapping as read from YAML.
    folder : pathlib.Path
        The sweep file's folder: paths and patterns are relative to it.
    where : str
        The sweep file, for messages.
    grid_axes : dict, optional
        ``{"audio": values}`` or ``{"spectrogram": values}`` from :func:`split_grid`.

    Returns
    -------
    list of Input
        In the order written (each pattern's matches sorted), without repeated files.

    Raises
    ------
    SpecblurError
        For unknown keys, no or two sources, a missing file, a pattern without matches,
        two inputs with the same stem or the same content, and a bad ``segments``.
    """
    if not isinstance(inp, dict):
        raise SpecblurError(f"{where}: input must be a mapping with 'audio' or 'spectrogram'")
    for key in inp:  # named as input.<key>, which check_keys does not do
        if key not in INPUT_KEYS:
            raise SpecblurError(f"{where}: unknown key input.{key}{suggest(key, INPUT_KEYS)}")
    grid_axes = grid_axes or {}
    given = [(f"input.{k}", k, inp[k]) for k in SOURCES if inp.get(k) is not None]
    given += [(f"grid.input.{k}", k, v) for k, v in grid_axes.items()]
    if len(given) != 1:
        both = " (set it in input or in grid, not both)" if grid_axes and len(given) > 1 else ""
        raise SpecblurError(f"{where}: input needs exactly one of 'audio' or 'spectrogram'{both}")
    key, source, value = given[0]
    files = _expand_files(value, folder, f"{where}: {key}", is_axis=key.startswith("grid."))
    shared = {**INPUT_KEYS, **inp, "audio": None, "spectrogram": None}
    for k in ("sr", "n_fft", "hop"):
        shared[k] = to_int(shared[k], f"{where}: input.{k}")
        if shared[k] < LOWEST[k]:
            raise SpecblurError(f"{where}: input.{k} must be at least {LOWEST[k]}, got {shared[k]}")
    if shared["normalize_dbfs"] is not None:
        level = to_float(shared["normalize_dbfs"], f"{where}: input.normalize_dbfs")
        if not DBFS_RANGE[0] <= level <= DBFS_RANGE[1]:
            raise SpecblurError(f"{where}: input.normalize_dbfs must lie in [{DBFS_RANGE[0]:g}, "
                                f"{DBFS_RANGE[1]:g}] dBFS, got {level:g}")
        shared["normalize_dbfs"] = level
    inputs, stems, digests = [], {}, {}
    for name, file in files:
        stem = file.stem
        if stem in stems:
            raise SpecblurError(f"{where}: {key}: inputs {stems[stem]} and {name} share the stem "
                                f"{stem!r}; stems must be unique (audio/<stem>/original.wav)")
        digest = file_sha256(file)
        if digest in digests:
            raise SpecblurError(f"{where}: {key}: inputs {digests[digest]} and {name} have the "
                                "same content; list it once")
        stems[stem], digests[digest] = name, name
        segments = check_segments(inp.get("segments"), folder, where, has_audio=source == "audio",
                                  stem=stem, input_name=name if len(files) > 1 else None)
        inputs.append(Input(name, {**shared, source: str(file), "segments": segments}, digest))
    return inputs


def _expand_files(value, folder, key, is_axis):
    """``[(name as written, absolute path)]`` of a file, a pattern or a list of them."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise SpecblurError(f"{key} is an empty list" + (" (an empty axis)" if is_axis else ""))
    if is_axis and not isinstance(value, list):
        raise SpecblurError(f"{key} must be a list of files or patterns, got {value!r}")
    out, seen = [], set()
    for item in items:
        if not isinstance(item, str) or not item:
            raise SpecblurError(f"{key} must be a file path, a glob pattern or a list of them, "
                                f"got {item!r}")
        if _MAGIC.search(item):
            names = sorted(n for n in glob.glob(item, root_dir=folder, recursive=True)
                           if (folder / n).is_file())
            if not names:
                raise SpecblurError(f"{key}: the pattern {item!r} matches no file "
                                    f"(relative to {folder})")
        else:
            names = [item]
        for name in names:
            file = (folder / name).resolve()
            if not file.is_file():
                raise SpecblurError(f"{key}: file not found: {file}")
            if file not in seen:
                seen.add(file)
                out.append((name, file))
    return out
