"""The sweep runner and ``specblur-sweep`` (SPEC §8): results layout, resuming, errors.

A few tests start real processes (the command line, a killed sweep, a Dask cluster); the
rest call ``specblur.cli.sweep_main`` in this process, which is the same entry point the
console script runs, to keep the suite fast.
"""
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

import specblur
from specblur.cli import sweep_main
from specblur.sweep.results import load
from specblur.sweep.config import load_sweep, make_run_id

SR = 8000
HISTORY_METRICS = ["loss", "mse", "entropy", "gmse_mean", "gmse_var", "gent_mean", "gent_var",
                   "m_mean", "m_std", "m_min", "m_max", "frac_identity", "frac_negative",
                   "energy_ratio", "tv", "gtv_mean", "gtv_var"]
SETTING_COLUMNS = ["m_init", "lam", "lambda_on", "entropy_reduce", "eps", "mode", "param",
                   "optimizer", "lr", "beta1", "beta2", "adam_eps", "epochs", "log_every",
                   "snapshot_every", "r_max", "tv", "tv_delta", "mse_norm", "model.kind", "seed"]
TABLES = ("history", "fields", "final", "outputs")


# --- helpers ----------------------------------------------------------------------------


def write_wav(path, seconds=0.3, freq=440.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3 * freq * t)
    sf.write(str(path), y, sr, subtype="PCM_16")
    return path


def write_sweep(folder, body, name="tiny", file="tiny.yaml", audio="a.wav"):
    path = Path(folder) / file
    path.write_text(f"name: {name}\ninput: {{audio: {audio}, sr: 8000, n_fft: 64, hop: 32}}\n"
                    + textwrap.dedent(body))
    return path


_script = Path(sys.executable).parent / "specblur-sweep"
SCRIPT = [str(_script)] if _script.exists() else [sys.executable, "-m", "specblur.cli"]


def cli(*args):
    """Run ``specblur-sweep`` as a separate process."""
    return subprocess.run([sys.executable, "-m", "specblur.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=240)


def sweep(capsys, *args):
    """Run ``specblur-sweep`` in this process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = sweep_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def file_states(folder):
    """{relative path: (inode, mtime_ns, size)} of every file under ``folder``."""
    folder = Path(folder)
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(folder))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def run_files(folder, run_id):
    """The files that belong to one run (tables and snapshot audio)."""
    folder = Path(folder)
    files = [folder / t / f"{run_id}.parquet" for t in TABLES]
    files += sorted((folder / "audio" / run_id).glob("*.wav"))
    return files


def assert_string_ids(series):
    """run_id values are str, and the column is not numeric (all-digit ids included)."""
    assert not pd.api.types.is_numeric_dtype(series), series.dtype
    assert all(isinstance(v, str) for v in series), series.head()


def all_digit_seed(sweep_path, want=1):
    """A seed for which at least ``want`` of the sweep's runs get an all-digit run id."""
    base = load_sweep(sweep_path)
    for seed in range(100000):
        hits = 0
        for run in base.runs:
            settings = {**run.settings, "seed": seed}
            if make_run_id(settings, base.input_sha256, base.input).isdigit():
                hits += 1
        if hits >= want:
            return seed
    raise AssertionError("no seed gives an all-digit run id")  # pragma: no cover


# --- one tiny real sweep, run as a separate process ---------------------------------------

TINY = """\
base:
  epochs: 5
  snapshot_every: 2
  model: {kind: logmel, n_mels: 8}
grid:
  lam: [0.1, 1e-2]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_wav(folder / "a.wav")
    path = write_sweep(folder, TINY)
    seed = all_digit_seed(path)
    path = write_sweep(folder, TINY + f"seeds: [{seed}]\n")
    sweep_obj = load_sweep(path)
    assert any(run.run_id.isdigit() for run in sweep_obj.runs)
    proc = cli(path, "--out", folder / "out")
    return {"proc": proc, "folder": folder / "out" / "tiny", "sweep": sweep_obj,
            "ids": [r.run_id for r in sweep_obj.runs], "path": path}


def test_tiny_sweep_succeeds(tiny):
    proc = tiny["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_progress_lines_and_summary_when_not_a_tty(tiny):
    out = tiny["proc"].stdout
    ids = tiny["ids"]
    assert "2 runs, 2 to run" in out
    lines = out.splitlines()
    progress = [line for line in lines if re.match(r"\[\d+/2\] ", line)]
    assert len(progress) == 2, out
    assert {re.match(r"\[(\d)/2\]", p).group(1) for p in progress} == {"1", "2"}
    for run_id in ids:
        assert any(re.match(rf"\[\d/2\] {run_id} done\b", p) for p in progress), out
    # the summary table, after the progress lines, has a header and one row per run
    tail = lines[lines.index(progress[-1]) + 1:]
    assert any("status" in line for line in tail), out
    for run_id in ids:
        assert any(line.startswith(run_id) and "done" in line for line in tail), out


def test_runs_table(tiny):
    runs = pd.read_parquet(tiny["folder"] / "runs.parquet")
    ids = tiny["ids"]
    assert sorted(runs["run_id"]) == sorted(ids)
    assert_string_ids(runs["run_id"])
    schema = pq.read_schema(tiny["folder"] / "runs.parquet")
    assert str(schema.field("run_id").type) in ("string", "large_string")
    for column in SETTING_COLUMNS + ["model.n_mels", "status", "error", "wall_seconds",
                                     "device"] + HISTORY_METRICS:
        assert column in runs.columns, column
    assert "model" not in runs.columns  # flattened
    assert (runs["status"] == "done").all()
    assert (runs["error"].fillna("") == "").all()
    assert (runs["device"] == "cpu").all()
    assert (runs["wall_seconds"] > 0).all()
    assert (runs["model.kind"] == "logmel").all() and (runs["model.n_mels"] == 8).all()
    assert sorted(runs["lam"]) == [0.01, 0.1]
    assert (runs["epochs"] == 5).all() and (runs["snapshot_every"] == 2).all()
    assert np.isfinite(runs[HISTORY_METRICS].to_numpy(dtype=float)).all()
    # the final metrics are the last history row's
    for _, row in runs.iterrows():
        hist = pd.read_parquet(tiny["folder"] / "history" / f"{row['run_id']}.parquet")
        last = hist.iloc[-1]
        assert last["epoch"] == 5
        for metric in HISTORY_METRICS:
            assert row[metric] == pytest.approx(last[metric], rel=1e-12, abs=1e-300)


def test_per_run_tables(tiny):
    folder = tiny["folder"]
    for table in TABLES:
        names = sorted(p.name for p in (folder / table).iterdir())
        assert names == sorted(f"{i}.parquet" for i in tiny["ids"]), (table, names)
        for run_id in tiny["ids"]:
            path = folder / table / f"{run_id}.parquet"
            schema = pq.read_schema(path)
            assert str(schema.field("run_id").type) in ("string", "large_string"), (table, schema)
            df = pd.read_parquet(path)
            assert (df["run_id"] == run_id).all()
    spec = specblur.Spectrogram.from_audio(tiny["path"].parent / "a.wav", sr=SR, n_fft=64, hop=32)
    K, T = spec.mag.shape
    for run_id in tiny["ids"]:
        hist = pd.read_parquet(folder / "history" / f"{run_id}.parquet")
        assert list(hist["epoch"]) == [0, 1, 2, 3, 4, 5]
        fields = pd.read_parquet(folder / "fields" / f"{run_id}.parquet")
        assert {"epoch", "k", "t", "m", "r", "g_mse", "g_ent"} <= set(fields.columns)
        assert sorted(fields["epoch"].unique()) == [2, 4, 5]
        assert len(fields) == 3 * K * T
        assert not fields.duplicated(["epoch", "k", "t"]).any()
        final = pd.read_parquet(folder / "final" / f"{run_id}.parquet")
        assert list(final.columns) == ["run_id", "epoch", "k", "t", "m", "r"]
        assert (final["epoch"] == 5).all() and len(final) == K * T
        outputs = pd.read_parquet(folder / "outputs" / f"{run_id}.parquet")
        assert {"epoch", "dim", "mean", "std", "q05", "q50", "q95"} <= set(outputs.columns)
        assert sorted(outputs["epoch"].unique()) == [2, 4, 5]
        assert len(outputs) == 3 * 8  # n_mels outputs per snapshot


def test_reading_a_whole_table_folder_at_once(tiny):
    folder = tiny["folder"]
    ids = tiny["ids"]
    for table in TABLES:
        df = pd.read_parquet(folder / table)
        assert_string_ids(df["run_id"])
        assert set(df["run_id"]) == set(ids), table
    hist = pd.read_parquet(folder / "history")
    assert len(hist) == 2 * 6
    digit = next(i for i in ids if i.isdigit())
    assert (hist["run_id"] == digit).sum() == 6


def test_audio_files(tiny):
    folder = tiny["folder"]
    original = sf.info(str(folder / "audio" / "a" / "original.wav"))
    assert original.samplerate == SR and original.channels == 1
    assert original.frames == int(0.3 * SR)
    for run_id in tiny["ids"]:
        names = sorted(p.name for p in (folder / "audio" / run_id).iterdir())
        assert names == ["epoch_2.wav", "epoch_4.wav", "epoch_5.wav"]
        for name in names:
            info = sf.info(str(folder / "audio" / run_id / name))
            assert info.samplerate == SR and info.frames == original.frames


def test_sweep_yaml_is_the_resolved_sweep(tiny):
    data = yaml.safe_load((tiny["folder"] / "sweep.yaml").read_text())
    assert data["name"] == "tiny"
    text = (tiny["folder"] / "sweep.yaml").read_text()
    for run_id in tiny["ids"]:
        assert run_id in text


def test_load_returns_every_table_with_string_run_ids(tiny):
    res = load(tiny["folder"])
    assert specblur.load is load
    for name in ("runs", "history", "fields", "final", "outputs"):
        df = getattr(res, name)
        assert isinstance(df, pd.DataFrame)
        assert set(df["run_id"]) == set(tiny["ids"]), name
        assert_string_ids(df["run_id"])
    assert len(res.history) == 12


def test_second_invocation_skips_everything(tiny):
    before = file_states(tiny["folder"])
    proc = cli(tiny["path"], "--out", tiny["folder"].parent)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs, 0 to run" in proc.stdout
    assert not re.search(r"^\[\d+/", proc.stdout, re.M)
    after = file_states(tiny["folder"])
    for rel, state in before.items():
        if rel.startswith(("runs.parquet", "history", "fields", "outputs", "audio/" + tiny["ids"][0],
                           "audio/" + tiny["ids"][1])):
            assert after.get(rel) == state, rel


# --- validation through the command line ------------------------------------------------

INPUT = "input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}\n"
BAD = {
    "unknown top-level key": (INPUT + "bse: {lam: 1}\n", ["bse", "did you mean 'base'"]),
    "unknown setting": (INPUT + "base: {lamda: 1}\n", ["lamda", "did you mean 'lam'"]),
    "unknown model key": (INPUT + "base: {model: {kind: logmel, n_mel: 3}}\n",
                          ["n_mel", "did you mean 'n_mels'"]),
    "lam abc": (INPUT + "base: {lam: abc}\n", ["lam", "abc"]),
    "epochs 2.5": (INPUT + "base: {epochs: 2.5}\n", ["epochs", "2.5"]),
    "epochs 0": (INPUT + "base: {epochs: 0}\n", ["epochs"]),
    "epochs -1": (INPUT + "grid: {epochs: [3, -1]}\n", ["epochs", "-1"]),
    "empty axis": (INPUT + "grid: {lam: []}\n", ["lam", "empty"]),
    "missing audio": ("input: {audio: gone.wav, sr: 8000, n_fft: 64, hop: 32}\n", ["gone.wav"]),
    "corrupt audio": ("input: {audio: garbage.wav, sr: 8000, n_fft: 64, hop: 32}\n",
                      ["garbage.wav"]),
    "invalid mode": (INPUT + "base: {mode: blurry}\n", ["mode", "truncate", "conserve"]),
    "invalid param": (INPUT + "base: {param: tanh}\n",
                      ["param", "raw", "relu", "softplus", "exp", "sigmoid"]),
    "sigmoid m_init outside (1, r_max)": (INPUT + "base: {param: sigmoid}\n",
                                          ["m_init", "(1, r_max) = (1, 132)"]),
    "r_max with raw": (INPUT + "base: {r_max: 8}\n", ["r_max", "raw"]),
    "invalid model kind": (INPUT + "base: {model: {kind: resnet}}\n",
                           ["resnet", "identity", "logmel", "mlp", "python"]),
    "runs and grid clash": (INPUT + "runs: [{m_init: 2}]\ngrid: {m_init: [1, 3]}\n", ["m_init"]),
    "malformed YAML": (INPUT + "base:\n  lam: 1\n  mode: [truncate\n  lr: 2\n", ["line"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_exits_2_with_one_message(tmp_path, capsys, case):
    text, needles = BAD[case]
    write_wav(tmp_path / "a.wav")
    (tmp_path / "garbage.wav").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(3000)))
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\n" + text)
    out = tmp_path / "out"
    rc, stdout, stderr = sweep(capsys, path, "--out", out)
    assert rc == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("specblur-sweep: error:"), stderr
    for needle in needles:
        assert needle in lines[0], (case, stderr)
    assert not out.exists(), "a results folder was written for an invalid sweep"


def test_malformed_yaml_line_number(tmp_path, capsys):
    write_wav(tmp_path / "a.wav")
    path = tmp_path / "bad.yaml"
    # line 5 is the bad one
    path.write_text("name: bad\n" + INPUT + "base:\n  lam: 1\n   mode: conserve\n")
    rc, _, stderr = sweep(capsys, path, "--out", tmp_path / "out")
    assert rc == 2
    assert "bad.yaml" in stderr and "line 5" in stderr, stderr


def test_missing_sweep_file(tmp_path, capsys):
    rc, _, stderr = sweep(capsys, tmp_path / "absent.yaml", "--out", tmp_path / "out")
    assert rc == 2
    assert "absent.yaml" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_real_process_exit_status_for_bad_files(tmp_path):
    write_wav(tmp_path / "a.wav")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(500))
    bad_key = write_sweep(tmp_path, "base: {lamm: 1}\n", file="typo.yaml")
    corrupt = write_sweep(tmp_path, "base: {lam: 1}\n", file="corrupt.yaml", audio="garbage.wav")
    out = tmp_path / "out"
    for path, needles in ((bad_key, ["lamm", "did you mean 'lam'"]), (corrupt, ["garbage.wav"])):
        proc = subprocess.run([*SCRIPT, str(path), "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        for needle in needles:
            assert needle in proc.stderr
    assert not out.exists()


# --- re-running ---------------------------------------------------------------------------

FAST = """\
base:
  epochs: 4
  snapshot_every: 2
"""


@pytest.fixture
def fast(tmp_path):
    write_wav(tmp_path / "a.wav")
    return tmp_path


def runs_table(folder):
    return pd.read_parquet(Path(folder) / "runs.parquet")


def test_rerun_skips_finished_runs_in_process(fast, capsys):
    path = write_sweep(fast, FAST + "grid: {lam: [0.1, 0.2]}\n")
    out = fast / "out"
    rc, stdout, _ = sweep(capsys, path, "--out", out)
    assert rc == 0 and "2 runs, 2 to run" in stdout
    folder = out / "tiny"
    before = file_states(folder)
    rc, stdout, _ = sweep(capsys, path, "--out", out)
    assert rc == 0 and "2 runs, 0 to run" in stdout
    after = file_states(folder)
    for run_id in runs_table(folder)["run_id"]:
        for file in run_files(folder, run_id):
            rel = str(file.relative_to(folder))
            assert after[rel] == before[rel], rel
    assert after["runs.parquet"] == before["runs.parquet"]


def test_widening_the_grid_runs_only_new_points(fast, capsys):
    out = fast / "out"
    path = write_sweep(fast, FAST + "grid: {lam: [0.1, 0.2]}\n")
    sweep(capsys, path, "--out", out)
    folder = out / "tiny"
    old_ids = set(runs_table(folder)["run_id"])
    before = file_states(folder)
    path = write_sweep(fast, FAST + "grid: {lam: [0.1, 0.2, 0.3]}\n")
    rc, stdout, _ = sweep(capsys, path, "--out", out)
    assert rc == 0
    assert "3 runs, 1 to run" in stdout
    progress = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 1 and progress[0].startswith("[1/1]")
    runs = runs_table(folder)
    assert len(runs) == 3 and runs["run_id"].is_unique
    assert sorted(runs["lam"]) == [0.1, 0.2, 0.3]
    (new_id,) = set(runs["run_id"]) - old_ids
    assert new_id in progress[0]
    after = file_states(folder)
    for run_id in old_ids:
        for file in run_files(folder, run_id):
            rel = str(file.relative_to(folder))
            assert after[rel] == before[rel], rel
    for file in run_files(folder, new_id):
        assert file.exists()


def test_force_reruns_everything(fast, capsys):
    out = fast / "out"
    path = write_sweep(fast, FAST + "grid: {lam: [0.1, 0.2]}\n")
    sweep(capsys, path, "--out", out)
    folder = out / "tiny"
    before = file_states(folder)
    rc, stdout, _ = sweep(capsys, path, "--out", out, "--force")
    assert rc == 0
    assert "2 runs, 2 to run" in stdout
    assert len([line for line in stdout.splitlines() if line.startswith("[")]) == 2
    after = file_states(folder)
    runs = runs_table(folder)
    assert len(runs) == 2 and runs["run_id"].is_unique and (runs["status"] == "done").all()
    for run_id in runs["run_id"]:
        rel = f"history/{run_id}.parquet"
        assert after[rel][:2] != before[rel][:2], "history was not rewritten by --force"


PLUGIN = '''\
import os
import numpy as np


class Model:
    def __init__(self, flag):
        self.flag = flag

    def forward(self, Y):
        if self.flag and os.path.exists(self.flag):
            raise RuntimeError("plugin forward exploded")
        return np.asarray(Y)

    def vjp(self, Y, g_out):
        return np.asarray(g_out)


def make(sr, n_fft, n_bins, seed, flag=""):
    return Model(flag)
'''


def test_failed_run_is_recorded_and_retried_only_on_request(fast, capsys, monkeypatch):
    module = f"sb_plugin_{os.getpid()}_{random.Random().randrange(10**9)}"
    (fast / f"{module}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(fast))
    flag = fast / "fail.flag"
    flag.write_text("fail")
    path = write_sweep(fast, FAST + textwrap.dedent(f"""\
          model: {{kind: python, factory: "{module}:make"}}
        runs:
          - {{lam: 0.1}}
          - {{lam: 0.2, model.flag: "{flag}"}}
          - {{lam: 0.3}}
        """))
    out = fast / "out"
    folder = out / "tiny"
    rc, stdout, stderr = sweep(capsys, path, "--out", out)
    assert rc in (0, 1), stderr
    assert "Traceback" not in stderr
    runs = runs_table(folder).set_index("run_id")
    assert len(runs) == 3
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1
    (failed_id,) = failed.index
    assert failed.loc[failed_id, "lam"] == 0.2
    assert "plugin forward exploded" in failed.loc[failed_id, "error"]
    assert (runs.drop(failed_id)["status"] == "done").all()
    assert re.search(rf"\] {failed_id} failed", stdout), stdout
    done_ids = list(runs.drop(failed_id).index)
    for run_id in done_ids:
        for file in run_files(folder, run_id):
            assert file.exists()

    before = file_states(folder)
    rc, stdout, _ = sweep(capsys, path, "--out", out)
    assert "3 runs, 0 to run" in stdout
    assert file_states(folder)["runs.parquet"] == before["runs.parquet"]

    rc, stdout, _ = sweep(capsys, path, "--out", out, "--dry-run")
    assert rc == 0
    line = next(line for line in stdout.splitlines() if failed_id in line)
    assert "failed" in line

    flag.unlink()  # the plug-in works now; the run id does not change
    rc, stdout, _ = sweep(capsys, path, "--out", out, "--retry-failed")
    assert rc == 0
    assert "3 runs, 1 to run" in stdout
    assert re.search(rf"\[1/1\] {failed_id} done", stdout), stdout
    runs = runs_table(folder)
    assert len(runs) == 3 and runs["run_id"].is_unique
    assert (runs["status"] == "done").all()
    after = file_states(folder)
    for run_id in done_ids:  # the runs that were done are untouched
        rel = f"history/{run_id}.parquet"
        assert after[rel] == before[rel]


def test_dry_run_lists_runs_and_writes_nothing(fast, capsys):
    out = fast / "out"
    path = write_sweep(fast, FAST + "grid: {lam: [0.1, 0.2]}\n")
    ids = [r.run_id for r in load_sweep(path).runs]
    rc, stdout, _ = sweep(capsys, path, "--out", out, "--dry-run")
    assert rc == 0
    assert "2 runs, 2 to run" in stdout
    for run_id in ids:
        line = next(line for line in stdout.splitlines() if run_id in line)
        assert "pending" in line
    assert not out.exists(), "--dry-run wrote files"

    sweep(capsys, path, "--out", out)
    wide = write_sweep(fast, FAST + "grid: {lam: [0.1, 0.2, 0.3]}\n")
    new_id = (set(r.run_id for r in load_sweep(wide).runs) - set(ids)).pop()
    before = file_states(out)
    rc, stdout, _ = sweep(capsys, wide, "--out", out, "--dry-run")
    assert rc == 0
    assert "3 runs, 1 to run" in stdout
    for run_id in ids:
        line = next(line for line in stdout.splitlines() if run_id in line)
        assert "done" in line and "pending" not in line
    assert "pending" in next(line for line in stdout.splitlines() if new_id in line)
    assert not re.search(r"^\[\d+/", stdout, re.M)
    assert file_states(out) == before

    rc, stdout, _ = sweep(capsys, wide, "--out", out, "--dry-run", "--force")
    assert "3 runs, 3 to run" in stdout
    assert file_states(out) == before


# --- interrupted sweeps -------------------------------------------------------------------


def wait_for(condition, proc=None, deadline_s=120.0):
    """Poll ``condition`` until it holds or ``proc`` ends; bounded by a deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return True
        if proc is not None:
            try:
                proc.wait(timeout=0.02)
                return condition()
            except subprocess.TimeoutExpired:
                pass
    return False


def check_folder_is_readable(folder):
    folder = Path(folder)
    for path in folder.rglob("*.parquet"):
        if not path.name.startswith("."):
            pq.read_table(path)  # raises for a half-written file
    for table in TABLES:
        if (folder / table).exists():
            visible = [p for p in (folder / table).iterdir()
                       if not p.name.startswith((".", "_"))]
            assert all(p.suffix == ".parquet" for p in visible), visible
            if visible:
                pd.read_parquet(folder / table)


def test_killed_sweep_resumes_cleanly(tmp_path, capsys):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    target = rng.choice(["runs.parquet", 0, 1, 2])
    write_wav(tmp_path / "a.wav")
    path = write_sweep(tmp_path, """\
        base: {epochs: 800, snapshot_every: 200, model: {kind: identity}}
        grid: {lam: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
        """)
    ids = [r.run_id for r in load_sweep(path).runs]
    out = tmp_path / "out"
    folder = out / "tiny"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "specblur.cli", str(path), "--out", str(out),
                             "--jobs", "2"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        if target == "runs.parquet":
            condition = (folder / "runs.parquet").exists
        else:
            def condition():
                hist = folder / "history"
                return (folder / "sweep.yaml").exists() and (
                    target == 0 or (hist.exists() and len(list(hist.glob("[!.]*.parquet"))) >= target))
        wait_for(condition, proc)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
        log.close()
    note = f"random seed {seed}, killed at {target!r}"

    if folder.exists():
        check_folder_is_readable(folder)
        if (folder / "runs.parquet").exists():
            assert runs_table(folder)["run_id"].is_unique, note

    rc, stdout, stderr = sweep(capsys, path, "--out", out)
    assert rc == 0, (note, stdout, stderr)
    runs = runs_table(folder)
    assert sorted(runs["run_id"]) == sorted(ids), note
    assert (runs["status"] == "done").all(), note
    check_folder_is_readable(folder)
    assert not list(folder.rglob("*.tmp")), (note, list(folder.rglob("*.tmp")))
    hist = pd.read_parquet(folder / "history")
    assert set(hist["run_id"]) == set(ids), note
    assert not hist.duplicated(["run_id", "epoch"]).any(), note
    for run_id, group in hist.groupby("run_id"):
        assert list(group["epoch"]) == list(range(801)), (note, run_id)
    fields = pd.read_parquet(folder / "fields")
    assert not fields.duplicated(["run_id", "epoch", "k", "t"]).any(), note
    assert set(fields["epoch"]) == {200, 400, 600, 800}


# --- Dask ---------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def test_sweep_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    write_wav(tmp_path / "a.wav")
    path = write_sweep(tmp_path, TINY)
    ids = [r.run_id for r in load_sweep(path).runs]
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    scheduler = worker = None
    logs = [open(tmp_path / "scheduler.log", "w"), open(tmp_path / "worker.log", "w")]
    try:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", port, "--no-dashboard"],
            stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard"],
            stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)

        def ready():
            if scheduler.poll() is not None or worker.poll() is not None:
                raise AssertionError("the Dask scheduler or worker exited: "
                                     + (tmp_path / "scheduler.log").read_text()
                                     + (tmp_path / "worker.log").read_text())
            try:
                with distributed.Client(address, timeout="2s") as client:
                    client.wait_for_workers(1, timeout=5)
                    return len(client.scheduler_info()["workers"]) == 1
            except (OSError, TimeoutError):
                return False

        assert wait_for(ready, deadline_s=90), "the Dask cluster did not come up"
        out = tmp_path / "out"
        proc = cli(path, "--out", out, "--scheduler", address, "--batch", "2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert "2 runs, 2 to run" in proc.stdout
        folder = out / "tiny"
        res = load(folder)
        assert sorted(res.runs["run_id"]) == sorted(ids)
        assert (res.runs["status"] == "done").all()
        assert (res.runs["batch"] == 2).all()  # one lockstep batch, one Dask task
        assert set(res.history["run_id"]) == set(ids)
        assert len(res.history) == 12
        for run_id in ids:
            assert sorted(p.name for p in (folder / "audio" / run_id).iterdir()) == [
                "epoch_2.wav", "epoch_4.wav", "epoch_5.wav"]
    finally:
        stop(worker)
        stop(scheduler)
        for log in logs:
            log.close()


# --- bugs found while writing these tests -------------------------------------------------


def test_diverged_run_tables_keep_their_types(fast, capsys):
    # m_init 0 with eps 0 gives log(0) in the entropy: the run diverges at epoch 0
    path = write_sweep(fast, FAST + "runs:\n  - {m_init: 0.0, eps: 0.0}\n  - {m_init: 1.0}\n")
    out = fast / "out"
    rc, stdout, stderr = sweep(capsys, path, "--out", out)
    assert rc == 0, stderr
    folder = out / "tiny"
    runs = runs_table(folder).set_index("run_id")
    assert sorted(runs["status"]) == ["diverged", "done"]
    for table in TABLES:
        for run_id in runs.index:
            schema = pq.read_schema(folder / table / f"{run_id}.parquet")
            assert str(schema.field("run_id").type) in ("string", "large_string"), (table, run_id)
        df = pd.read_parquet(folder / table)
        assert set(df["run_id"]) <= set(runs.index)


def test_changed_input_file_is_reread_in_the_same_process(fast, capsys):
    path = write_sweep(fast, FAST)
    out = fast / "out"
    sweep(capsys, path, "--out", out)
    write_wav(fast / "a.wav", seconds=0.5)  # new bytes: a new run id, and more frames
    new_id = load_sweep(path).runs[0].run_id
    rc, stdout, _ = sweep(capsys, path, "--out", out)
    assert rc == 0 and "1 to run" in stdout
    folder = out / "tiny"
    original = sf.info(str(folder / "audio" / "a" / "original.wav")).frames
    assert original == int(0.5 * SR)
    assert sf.info(str(folder / "audio" / new_id / "epoch_4.wav")).frames == original


def test_jobs_below_one_is_a_usage_error(fast, capsys):
    path = write_sweep(fast, FAST)
    rc, _, stderr = sweep(capsys, path, "--out", fast / "out", "--jobs", "0")
    assert rc == 2 and "--jobs" in stderr and "Traceback" not in stderr
    assert not (fast / "out").exists()
