"""The sweep key ``evaluate:`` (faithfulness of every done run, SPEC §9.5 in sweeps): its
checks, the run ids, the ``faithfulness/<run_id>.parquet`` tables, and when they are made
again. The report's side is in test_report.py."""
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

import specblur
from specblur.cli import sweep_main
from specblur.deletion import faithfulness
from specblur.models import make_model
from specblur.schema import FAITHFULNESS_TYPES
from specblur.sweep import evaluate
from specblur.sweep.config import load_sweep
from specblur.sweep.results import field_array, read_fields
from specblur.sweep.runner import run_sweep

SR = 8000
SMALL = "{radii: [4], fractions: [0.25, 0.5], n_random: 2, batch: 8}"


def write_sweep(folder, evaluate_line="", runs="  - {lam: 0.1}\n  - {m_init: 0.0, eps: 0.0}\n"):
    """A two-run sweep on a 0.25 s tone; by default its second run diverges at epoch 0."""
    t = np.arange(int(0.25 * SR)) / SR
    sf.write(str(folder / "a.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), SR, subtype="PCM_16")
    path = folder / "ev.yaml"
    path.write_text(textwrap.dedent("""\
        name: ev
        input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}
        base: {epochs: 3, snapshot_every: 2, model: {kind: mlp, n_mels: 8, hidden: [4], out: 3}}
        """) + "runs:\n" + runs + (f"evaluate: {evaluate_line}\n" if evaluate_line else ""))
    return path


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "faithfulness").glob("*.parquet")}


# --- the sweep file ---------------------------------------------------------------------

BAD = [
    ("faithfulnes", ["evaluate: unknown evaluation 'faithfulnes'", "did you mean 'faithfulness'"]),
    ("{faithfulness: {radius: [16]}}", ["evaluate.faithfulness: unknown option 'radius'",
                                        "did you mean 'radii'"]),
    ("{faithfulness: {radii: [1, 16]}}", ["evaluate.faithfulness.radii must be"]),
    ("{faithfulness: {fractions: [0.5, 1.5]}}", ["evaluate.faithfulness.fractions must be"]),
    ("{faithfulness: {baselines: [anti, randm]}}", ["evaluate.faithfulness.baselines: unknown "
                                                    "baseline 'randm'", "did you mean 'random'"]),
    ("{faithfulness: {mode: conserv}}", ["evaluate.faithfulness.mode", "did you mean 'conserve'"]),
    ("{faithfulness: {n_random: 0}}", ["evaluate.faithfulness.n_random"]),
    ("{faithfulness: {batch: 2.5}}", ["evaluate.faithfulness.batch"]),
    ("{faithfulness: {seed: -1}}", ["evaluate.faithfulness.seed"]),
    ("{faithfulness: {occlusion: maybe}}", ["evaluate.faithfulness.occlusion must be true or false"]),
    ("{faithfulness: {patch: [8, 0]}}", ["evaluate.faithfulness.patch[1]"]),
    ("{faithfulness: {device: cuda}}", ["evaluate.faithfulness.device", "--device"]),
    ("{faithfulness: 3}", ["evaluate.faithfulness must be true, false or a mapping"]),
    ("[faithfulness]", ["evaluate must be 'faithfulness' or a mapping"]),
]


@pytest.mark.parametrize("line, needles", BAD, ids=[b[0] for b in BAD])
def test_bad_evaluate_section_exits_2_naming_the_key(tmp_path, capsys, line, needles):
    path = write_sweep(tmp_path, line)
    rc = sweep_main([str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("specblur-sweep: error: ") and "ev.yaml: evaluate" in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()


def test_forms_defaults_and_run_ids(tmp_path):
    plain = load_sweep(write_sweep(tmp_path))
    assert plain.evaluate == {} and "evaluate" not in plain.resolved()
    defaults = load_sweep(write_sweep(tmp_path, "faithfulness"))
    assert [r.run_id for r in defaults.runs] == [r.run_id for r in plain.runs]
    opts = defaults.evaluate["faithfulness"]
    assert opts == {"radii": [16.0, 64.0], "fractions": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                         0.8, 0.9],
                    "baselines": ["anti", "random", "energy", "gradient"], "mode": "conserve",
                    "n_random": 8, "seed": 0, "occlusion": False, "patch": [8, 8], "batch": 16}
    assert load_sweep(write_sweep(tmp_path, "{faithfulness: true}")).evaluate == defaults.evaluate
    assert load_sweep(write_sweep(tmp_path, "{faithfulness: false}")).evaluate == {}
    small = load_sweep(write_sweep(tmp_path, f"{{faithfulness: {SMALL}}}"))
    assert [r.run_id for r in small.runs] == [r.run_id for r in plain.runs]
    assert yaml.safe_load(yaml.safe_dump(small.resolved()))["evaluate"] == small.evaluate
    occl = load_sweep(write_sweep(tmp_path, "{faithfulness: {baselines: [occlusion]}}"))
    assert occl.evaluate["faithfulness"]["occlusion"] is True


# --- the tables -------------------------------------------------------------------------


def test_sweep_writes_one_table_per_done_run_and_recomputes_only_when_needed(
        tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path, f"{{faithfulness: {SMALL}}}")
    sweep = load_sweep(path)
    out = tmp_path / "out"
    run_sweep(sweep, out=out, jobs=2)        # the runs in worker processes, evaluation here
    folder = out / "ev"
    runs = pd.read_parquet(folder / "runs.parquet").set_index("run_id")
    done = runs.index[runs.status == "done"].tolist()
    assert sorted(runs.status) == ["diverged", "done"]
    assert sorted(p.stem for p in (folder / "faithfulness").glob("*.parquet")) == done
    assert "faithfulness: 1 of 1 runs to evaluate" in capsys.readouterr().out

    # the table: run_id first, typed columns, the run's final map with the run's own model
    (rid,) = done
    path_t = folder / "faithfulness" / f"{rid}.parquet"
    table = pd.read_parquet(path_t)
    assert list(table.columns) == list(FAITHFULNESS_TYPES)
    assert str(pq.read_schema(path_t).field("run_id").type) in ("string", "large_string")
    assert table.dtypes.drop(["run_id", "score", "options_digest"]).to_dict() == {
        c: np.dtype(t) for c, t in FAITHFULNESS_TYPES.items()
        if c not in ("run_id", "score", "options_digest")}
    assert (table.epoch == 3).all() and set(table.score) == {"map", "anti", "random", "energy",
                                                             "gradient"}
    spec = specblur.Spectrogram.from_audio(tmp_path / "a.wav", sr=SR, n_fft=64, hop=32)
    r = field_array(read_fields(folder, rid, epochs="last"), "r", spec.mag.shape)
    run = next(run for run in sweep.runs if run.run_id == rid)
    model = make_model(run.settings["model"], sr=SR, n_fft=64, n_bins=33, seed=run.settings["seed"])
    direct = faithfulness(spec, r, model=model, **sweep.evaluate["faithfulness"])
    pd.testing.assert_frame_equal(table[direct.columns.tolist()], direct)
    loaded = specblur.load(folder).faithfulness
    pd.testing.assert_frame_equal(loaded, table)
    assert b"n_random" in pq.read_schema(path_t).metadata[evaluate.METADATA_KEY.encode()]

    # nothing to do: nothing is recomputed
    before = mtimes(folder)
    run_sweep(load_sweep(path), out=out)
    assert mtimes(folder) == before
    assert "faithfulness:" not in capsys.readouterr().out

    # other options: recomputed, with another digest
    path = write_sweep(tmp_path, "{faithfulness: {radii: [4], fractions: [0.25, 0.5], "
                                 "n_random: 3, batch: 8}}")
    run_sweep(load_sweep(path), out=out)
    assert mtimes(folder)[f"{rid}.parquet"] != before[f"{rid}.parquet"]
    again = pd.read_parquet(path_t)
    assert again.options_digest.nunique() == 1 and again.options_digest[0] != table.options_digest[0]

    # a failing evaluation warns, removes the stale table, and the sweep goes on
    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(sys.modules["specblur.deletion"], "faithfulness", broken)
    path = write_sweep(tmp_path, f"{{faithfulness: {SMALL}}}")
    runs_after = run_sweep(load_sweep(path), out=out)
    assert sorted(runs_after.status) == ["diverged", "done"]
    captured = capsys.readouterr()
    assert f"warning: faithfulness of run {rid} failed: RuntimeError: the model broke" in captured.err
    assert f"{rid} failed" in captured.out and not path_t.exists()
    assert len(specblur.load(folder).faithfulness) == 0
    assert list(specblur.load(folder).faithfulness.columns) == list(FAITHFULNESS_TYPES)


def test_importing_the_sweep_and_report_keeps_the_function_name():
    code = ("import specblur, specblur.sweep.runner, specblur.report, specblur.deletion; "
            "print(callable(specblur.faithfulness))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
