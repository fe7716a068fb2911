"""Sweep files (SPEC §8): read, check and expand into runs with stable ids.

Everything a sweep file can get wrong is reported here, before any run starts, as one
``SpecblurError`` that names the file and the key.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .._checks import check_keys, suggest, to_choice, to_int, to_mapping
from ..errors import SpecblurError
from ..models import check_model_input
from ..schema import STORE_DTYPE, STORE_DTYPES
from ..settings import (ID_NEUTRAL, ID_ONLY_WITH, SETTINGS, Settings, check_m_init,
                        check_scale_min, resolve, resolved_r_max)
from .evaluate import check_config as check_evaluate
from .inputs import INPUT_KEYS, Input, expand_inputs, split_grid

__all__ = ["INPUT_KEYS", "Input", "Run", "Sweep", "TOP_KEYS", "load_sweep", "make_run_id"]

TOP_KEYS = ("name", "input", "base", "runs", "grid", "seeds",
            "evaluate",  # see specblur.sweep.evaluate.check_config
            "store_dtype")  # how fields/ stores the snapshots; not part of the run ids


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e5`` and ``1e-6`` as floats (YAML 1.2 style), and
    rejects a key given twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        first = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, not a key
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in first:
                raise _DuplicateKey(f"duplicate key {key!r} at line {line} (first given at "
                                    f"line {first[key]})")
            first.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    """A mapping of a sweep file names a key twice."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class Run:
    """One run of a sweep: its id, fully resolved settings and input file."""

    run_id: str
    settings: Settings
    input: Input | None = None


@dataclass
class Sweep:
    """A checked sweep file.

    Attributes
    ----------
    name : str
        Results go to ``<out>/<name>/``.
    path : pathlib.Path
        The sweep file.
    inputs : list of Input
        Every input file, resolved (one or more; see :mod:`specblur.sweep.inputs`).
    runs : list of Run
        In expansion order (every runs entry × grid point × seed, then every input),
        without duplicates.
    raw : dict
        The file's contents as read.
    evaluate : dict
        What to evaluate after the runs: ``{}`` or ``{"faithfulness": options}``. Not part
        of the run ids.
    store_dtype : str
        How ``fields/<run_id>.parquet`` stores the snapshots' fields, one of
        :data:`~specblur.schema.STORE_DTYPES` (the last snapshot's ``m`` and ``r`` go to
        ``final/`` at float64 either way). Not part of the run ids.
    """

    name: str
    path: Path
    inputs: list
    runs: list
    raw: dict
    evaluate: dict = field(default_factory=dict)
    store_dtype: str = STORE_DTYPE

    @property
    def input(self) -> dict:
        """The first input's resolved settings (the only one of a one-file sweep)."""
        return self.inputs[0].settings

    @property
    def input_sha256(self) -> str:
        """The first input's content hash."""
        return self.inputs[0].sha256

    def resolved(self) -> dict:
        """The sweep as resolved, for ``sweep.yaml`` in the results folder.

        ``input`` holds the shared input settings (and, for one input file, the file, its
        segments and sha256 as before); ``inputs`` lists every input file with its sha256.
        """
        if len(self.inputs) == 1:
            inp = {**self.input, "sha256": self.input_sha256}
        else:
            inp = {k: v for k, v in self.input.items() if k not in ("audio", "spectrogram",
                                                                    "segments")}
        return {
            "name": self.name,
            "source": str(self.path),
            "input": inp,
            "inputs": [i.resolved() for i in self.inputs],
            "runs": [{"run_id": run.run_id, "input": run.input.name, **run.settings.as_dict()}
                     for run in self.runs],
            **({"evaluate": self.evaluate} if self.evaluate else {}),
            "store_dtype": self.store_dtype,
        }


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read, check and expand a sweep file.

    Parameters
    ----------
    path : str or os.PathLike
        The YAML sweep file.

    Returns
    -------
    Sweep

    Raises
    ------
    SpecblurError
        For a missing or malformed file (with its line number), unknown keys (with the
        closest valid one), wrong types, empty axes, a key set by both a runs entry and
        the grid, a missing or unreadable input file, an input pattern that matches no
        file, two inputs with the same stem or content, a bad ``evaluate`` section and a
        ``store_dtype`` other than ``float32`` or ``float64``.
    """
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecblurError(f"cannot read sweep file {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecblurError(f"cannot read sweep file {where}: not UTF-8 text ({exc.reason} "
                            f"at byte {exc.start})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except _DuplicateKey as exc:
        raise SpecblurError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecblurError(f"{where}: malformed YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecblurError(f"{where}: a sweep file must be a mapping with keys {', '.join(TOP_KEYS)}")
    check_keys(raw, TOP_KEYS, where, what="top-level key")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"\w[\w.-]*", name):
        raise SpecblurError(f"{where}: name must be a plain folder name (letters, digits, _ . -, "
                            f"starting with a letter or digit), got {name!r}")
    grid, input_axes = split_grid(raw.get("grid"), where)
    inputs = expand_inputs(raw.get("input"), path.parent, where, input_axes)
    inp = inputs[0].settings  # sr, n_fft and hop are shared by every input
    base = _nested(to_mapping(raw.get("base", {}), f"{where}: base"), f"{where}: base")
    entries = raw.get("runs")
    if entries is None:
        entries = [{}]
    if not isinstance(entries, list) or not entries:
        raise SpecblurError(f"{where}: runs must be a non-empty list of mappings")
    entries = [_nested(to_mapping(e, f"{where}: runs[{i}]"), f"{where}: runs[{i}]")
               for i, e in enumerate(entries)]
    grid = _check_grid(grid, where)
    seeds = _check_seeds(raw.get("seeds", [0]), where)
    evaluate = check_evaluate(raw.get("evaluate"), where)  # not part of the run ids
    store_dtype = _check_store_dtype(raw.get("store_dtype", STORE_DTYPE), where)  # nor this

    runs, seen = [], set()
    for i, entry in enumerate(entries):
        for point in grid:
            clash = _clashes(entry, point)
            if clash:
                raise SpecblurError(
                    f"{where}: runs[{i}] and grid both set {clash!r}; set it in one place")
            origin = _origin(where, raw, i, point)
            for seed in seeds:
                merged = _merge(_merge(_merge(base, entry), point), {"seed": seed})
                settings = resolve(merged, where=origin)
                check_model_input(settings.model, sr=inp["sr"], n_fft=inp["n_fft"],
                                  hop=inp["hop"], where=f"{where}: runs[{i}]")
                r_max = resolved_r_max(settings, inp["n_fft"] // 2 + 1)
                check_m_init(settings.m_init, settings.param_kind, r_max, origin)
                check_scale_min(settings.scale_min, r_max, origin)
                for source in inputs:  # each input x each settings point is one run
                    run_id = make_run_id(settings, source.sha256, source.settings)
                    if run_id not in seen:
                        seen.add(run_id)
                        runs.append(Run(run_id, settings, source))
    return Sweep(name=name, path=path.resolve(), inputs=inputs, runs=runs, raw=raw,
                 evaluate=evaluate, store_dtype=store_dtype)


def _origin(where, raw, i, point):
    """How messages name the run being resolved: its runs entry and grid point."""
    parts = [f"runs[{i}]"] if raw.get("runs") else ["base"]
    if point:
        parts.append("grid point " + ", ".join(f"{k}={v}" for k, v in _dotted(point)))
    return f"{where}: " + " with ".join(parts)


def _dotted(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def make_run_id(settings: Mapping, input_sha256: str, input_settings: dict) -> str:
    """First 12 hex digits of the sha256 of the settings, input file hash and input settings."""
    # segments do not change the fit, so they are not part of the run id
    inp = {k: v for k, v in input_settings.items()
           if k not in ("audio", "spectrogram", "segments")}
    # settings added after the first release count only when they differ from their default
    kept = {k: v for k, v in settings.items()
            if not (k in ID_NEUTRAL and v == SETTINGS[k][1])
            and not (k in ID_ONLY_WITH and settings.get(ID_ONLY_WITH[k]) is None)}
    blob = json.dumps([kept, input_sha256, inp], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _nested(flat, where):
    """Expand dotted keys (``model.n_mels``) into nested mappings, and check top keys."""
    out = {}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise SpecblurError(f"{where}: keys must be strings, got {key!r}")
        head, *rest = key.split(".")
        if head not in SETTINGS or head == "seed":
            valid = [k for k in SETTINGS if k != "seed"]
            hint = " (seeds come from the top-level 'seeds' list)" if head == "seed" else suggest(head, valid)
            raise SpecblurError(f"{where}: unknown setting {key!r}{hint}")
        if rest and head != "model":
            raise SpecblurError(f"{where}: {key!r}: only 'model' has nested keys")
        node = out
        for part in [head, *rest][:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecblurError(f"{where}: {key!r} conflicts with a non-mapping value")
        node[[head, *rest][-1]] = copy.deepcopy(value)
    return out


def _merge(low, high):
    """Deep merge: mappings merge, scalars and lists from ``high`` replace."""
    out = copy.deepcopy(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _paths(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def _clashes(entry, point):
    """A dotted key set by both mappings (or one a prefix of the other), or None."""
    mine = set(_paths(entry))
    for path in _paths(point):
        for other in mine:
            n = min(len(path), len(other))
            if path[:n] == other[:n]:
                return ".".join(path if len(path) <= len(other) else other)
    return None


def _check_grid(grid, where):
    if grid is None:
        return [{}]
    if not isinstance(grid, dict):
        raise SpecblurError(f"{where}: grid must be a mapping of setting -> list of values")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list):
            raise SpecblurError(f"{where}: grid.{key} must be a list of values, got {values!r}")
        if not values:
            raise SpecblurError(f"{where}: grid.{key} is an empty axis")
        _nested({key: values[0]}, f"{where}: grid")
        axes.append([(key, v) for v in values])
    return [_nested(dict(combo), f"{where}: grid") for combo in itertools.product(*axes)]


def _check_store_dtype(value, where):
    if value is None:
        raise SpecblurError(f"{where}: store_dtype is empty (null); give it a value or leave "
                            f"the key out for its default {STORE_DTYPE!r}")
    return to_choice(value, STORE_DTYPES, f"{where}: store_dtype")


def _check_seeds(seeds, where):
    if not isinstance(seeds, list):
        seeds = [seeds]
    if not seeds:
        raise SpecblurError(f"{where}: seeds is an empty list")
    seeds = [to_int(s, f"{where}: seeds") for s in seeds]
    bad = [s for s in seeds if not 0 <= s < 2 ** 32]
    if bad:
        raise SpecblurError(f"{where}: seeds must be integers in [0, 2**32), got {bad[0]}")
    return seeds

