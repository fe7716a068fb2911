"""Evaluation in sweeps: check the ``evaluate:`` section and write each run's faithfulness table.

The domain (the energy-matched deletion test, SPEC §9.5) is :mod:`specblur.deletion`,
imported inside the functions so that a sweep that evaluates nothing does not load it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .._checks import check_keys
from ..audio import Spectrogram
from ..errors import SpecblurError
from .results import faithfulness_frame, field_array, read_fields, write_table

__all__ = ["EVALUATIONS", "check_config", "options_digest", "stale_faithfulness",
           "write_sweep_faithfulness"]

#: The evaluations a sweep's ``evaluate:`` section can ask for.
EVALUATIONS = ("faithfulness",)
#: Key of the Parquet schema metadata that holds a faithfulness table's options as JSON.
METADATA_KEY = "specblur.faithfulness.options"


def check_config(value: object, where: str) -> dict:
    """Check a sweep's ``evaluate:`` section and resolve it (hook of :mod:`.config`).

    Accepted forms: ``faithfulness`` (every option at its default); a mapping
    ``{faithfulness: true}``, ``{faithfulness: false}`` (off) or ``{faithfulness:
    {option: value, ...}}`` with options from :data:`specblur.deletion.OPTIONS`.

    Parameters
    ----------
    value : object
        The section as read from YAML (None when absent).
    where : str
        The sweep file, for messages.

    Returns
    -------
    dict
        ``{}``, or ``{"faithfulness": options}`` with every option resolved by
        :func:`specblur.deletion.check_options`.

    Raises
    ------
    SpecblurError
        Naming the file and the key (``evaluate.faithfulness.radii``), with the closest
        valid key for a typo.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = {value: True}
    if not isinstance(value, Mapping):
        raise SpecblurError(f"{where}: evaluate must be 'faithfulness' or a mapping such as "
                            f"{{faithfulness: {{radii: [16, 64]}}}}, got {value!r}")
    check_keys(value, EVALUATIONS, f"{where}: evaluate", what="evaluation")
    options = value.get("faithfulness", False)
    if options is False or options is None:
        return {}
    if options is True:
        options = {}
    if not isinstance(options, Mapping):
        raise SpecblurError(f"{where}: evaluate.faithfulness must be true, false or a "
                            f"mapping of options, got {options!r}")
    if "device" in options:
        raise SpecblurError(f"{where}: evaluate.faithfulness.device: the device comes from "
                            "the command line (--device)")
    from ..deletion import check_options

    return {"faithfulness": check_options(options, where=f"{where}: evaluate.faithfulness")}


def options_digest(options: Mapping) -> str:
    """First 12 hex digits of the sha256 of the resolved options' sorted-key JSON."""
    blob = json.dumps(dict(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _stored_digest(path: Path) -> str | None:
    """The ``options_digest`` of a stored table, or None when missing or unreadable."""
    try:
        digests = set(pq.read_table(path, columns=["options_digest"]).column(0).to_pylist())
    except Exception:  # noqa: BLE001 - missing, old or broken: compute it again
        return None
    return digests.pop() if len(digests) == 1 else None


def _final_radius(folder: Path, run_id: str, shape: tuple[int, int]):
    """The last snapshot's epoch and radius field ``(K, T)`` of a run."""
    fields = read_fields(folder, run_id, epochs="last", columns=("epoch", "k", "t", "r"))
    if fields.empty:
        raise SpecblurError("the run has no fields table")
    r = field_array(fields, "r", shape)
    if len(fields) != r.size:
        raise SpecblurError(f"its last snapshot has {len(fields)} bins, not K·T = {r.size}")
    return int(fields["epoch"].max()), r


def _evaluate_run(folder, run, options, digest, spec, device):
    from ..deletion import faithfulness
    from ..models import make_model

    epoch, r = _final_radius(folder, run.run_id, spec.mag.shape)
    settings = run.settings
    model = make_model(settings["model"], sr=spec.sr, n_fft=spec.n_fft,
                       n_bins=spec.mag.shape[0], seed=settings["seed"])
    table = faithfulness(spec, r, model=model, device=device, **options)
    return write_table(folder / "faithfulness" / f"{run.run_id}.parquet",
                       faithfulness_frame(run.run_id, epoch, table, digest),
                       metadata={METADATA_KEY: json.dumps(options)})


def stale_faithfulness(folder: str | os.PathLike, options: Mapping, runs: Sequence) -> list:
    """The runs among ``runs`` whose faithfulness table is missing, unreadable or made
    with other options than ``options``, in their order."""
    digest = options_digest(dict(options))
    return [run for run in runs if _stored_digest(
        Path(folder) / "faithfulness" / f"{run.run_id}.parquet") != digest]


def write_sweep_faithfulness(folder: str | os.PathLike, options: Mapping,
                             spec: Spectrogram | Mapping[str, Spectrogram], runs: Sequence, device: str = "cpu", fresh: Sequence[str] = (),
                             interactive: bool = False) -> list[Path]:
    """Write ``faithfulness/<run_id>.parquet`` for the given runs that need it.

    Called by :func:`specblur.sweep.runner.run_sweep` after the runs, in the parent
    process. A run is evaluated when it has no table, when its table was made with other
    options (its ``options_digest`` differs) or when it ran in this invocation
    (``fresh``); otherwise its table is kept as it is. The model is the run's own, built
    with the run's seed; ``options["seed"]`` seeds the random baseline.

    Parameters
    ----------
    folder : str or os.PathLike
        The results folder.
    options : mapping
        Resolved options (``Sweep.evaluate["faithfulness"]``).
    spec : Spectrogram or mapping of str to Spectrogram
        The sweep's input, or every input by name (``Input.name``): each run is evaluated
        on its own input.
    runs : sequence of Run
        The runs to consider: the sweep's ``done`` runs.
    device : {"cpu", "cuda"}
        Where the blur runs.
    fresh : sequence of str
        Ids of the runs that ran in this invocation.
    interactive : bool
        A progress bar on a terminal; otherwise one line per evaluated run on stdout.

    Returns
    -------
    list of pathlib.Path
        The tables written. A run whose evaluation fails gets a warning line on stderr
        and no table (a stale one is removed), and the others go on.
    """
    folder = Path(folder)
    options = dict(options)
    digest, fresh = options_digest(options), set(fresh)
    stale = {run.run_id for run in stale_faithfulness(
        folder, options, [run for run in runs if run.run_id not in fresh])}
    todo = [run for run in runs if run.run_id in fresh or run.run_id in stale]
    if not todo:
        return []
    if not interactive:
        print(f"faithfulness: {len(todo)} of {len(runs)} runs to evaluate", flush=True)
    bar = tqdm(total=len(todo), desc="faithfulness", unit="run", disable=not interactive)
    written = []
    for i, run in enumerate(todo, 1):
        start = time.perf_counter()
        try:
            own = spec[run.input.name] if isinstance(spec, Mapping) else spec
            written.append(_evaluate_run(folder, run, options, digest, own, device))
            outcome = "evaluated"
        except Exception as exc:  # noqa: BLE001 - one run's evaluation must not stop the rest
            (folder / "faithfulness" / f"{run.run_id}.parquet").unlink(missing_ok=True)
            outcome = "failed"
            print(f"specblur-sweep: warning: faithfulness of run {run.run_id} failed: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        bar.update()
        if not interactive:
            print(f"[faithfulness {i}/{len(todo)}] {run.run_id} {outcome} after "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    bar.close()
    return written
