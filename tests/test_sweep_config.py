"""Sweep files (SPEC §8): expansion, merging, YAML numbers, run ids and validation.

These tests only read and expand sweep files (``specblur.sweep_config.load_sweep``); no run
is fitted here. The command line and the results folder are tested in ``test_cli.py``.
"""
import itertools
import re
import shutil
import textwrap

import numpy as np
import pytest
import soundfile as sf

from specblur.errors import SpecblurError
from specblur.settings import SETTINGS
from specblur.sweep.config import load_sweep

SR = 8000
INPUT = "input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}\n"


def write_wav(path, seconds=0.3, freq=440.0, sr=SR):
    """A short deterministic PCM WAV file."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3 * freq * t)
    sf.write(str(path), y, sr, subtype="PCM_16")
    return path


@pytest.fixture
def folder(tmp_path):
    write_wav(tmp_path / "a.wav")
    return tmp_path


def sweep_file(folder, body, name="s.yaml", header=INPUT):
    path = folder / name
    path.write_text(header + textwrap.dedent(body))
    return path


def load(folder, body, **kw):
    return load_sweep(sweep_file(folder, body, **kw))


def defaults():
    out = {k: v for k, (_, v) in SETTINGS.items()}
    out["snapshot_every"] = out["epochs"]
    return out


# --- expansion ---------------------------------------------------------------------------


def test_no_runs_no_grid_gives_one_run_with_the_defaults(folder):
    sweep = load(folder, "name: plain\n")
    assert sweep.name == "plain"
    assert len(sweep.runs) == 1
    settings = sweep.runs[0].settings
    expected = defaults()
    assert settings["model"]["kind"] == "identity"
    assert {k: v for k, v in settings.items() if k != "model"} == {
        k: v for k, v in expected.items() if k != "model"}
    assert settings["seed"] == 0
    assert settings["snapshot_every"] == settings["epochs"] == 1000


def test_name_defaults_to_the_file_stem(folder):
    assert load(folder, "base: {lam: 2}\n", name="my-sweep.yaml").name == "my-sweep"


def test_runs_times_grid_times_seeds(folder):
    sweep = load(folder, """\
        runs:
          - {m_init: 0.5}
          - {m_init: 2.0, mode: conserve}
        grid:
          lam: [0.1, 1.0, 10.0]
          param: [raw, relu]
        seeds: [3, 4]
        """)
    assert len(sweep.runs) == 2 * 3 * 2 * 2
    got = {(r.settings["m_init"], r.settings["mode"], r.settings["lam"], r.settings["param"],
            r.settings["seed"]) for r in sweep.runs}
    want = {(m, mode, lam, p, s)
            for (m, mode), lam, p, s in itertools.product(
                [(0.5, "truncate"), (2.0, "conserve")], [0.1, 1.0, 10.0], ["raw", "relu"], [3, 4])}
    assert got == want
    assert len({r.run_id for r in sweep.runs}) == len(sweep.runs)


def test_only_runs_or_only_grid_or_only_seeds(folder):
    assert len(load(folder, "runs: [{lam: 1}, {lam: 2}, {lam: 3}]\n").runs) == 3
    assert len(load(folder, "grid: {lam: [1, 2], mode: [truncate, conserve]}\n").runs) == 4
    sweep = load(folder, "seeds: [0, 1, 2, 7]\n")
    assert [r.settings["seed"] for r in sweep.runs] == [0, 1, 2, 7]


def test_merge_order_defaults_base_entry_grid_seed(folder):
    sweep = load(folder, """\
        base: {lam: 2.0, m_init: 3.0, lr: 0.5, mode: conserve, epochs: 7}
        runs:
          - {lam: 4.0, lr: 0.25}
        grid:
          m_init: [8.0]
        seeds: [9]
        """)
    (run,) = sweep.runs
    s = run.settings
    assert s["optimizer"] == "sgd"         # default
    assert s["mode"] == "conserve"         # base over default
    assert s["epochs"] == 7 and s["snapshot_every"] == 7
    assert s["lam"] == 4.0                 # runs entry over base
    assert s["lr"] == 0.25                 # runs entry over base
    assert s["m_init"] == 8.0              # grid point over base
    assert s["seed"] == 9                  # seed


def test_grid_overrides_base_key(folder):
    sweep = load(folder, "base: {mode: conserve, lam: 5}\ngrid: {mode: [truncate]}\n")
    assert [r.settings["mode"] for r in sweep.runs] == ["truncate"]
    assert sweep.runs[0].settings["lam"] == 5.0


def test_model_mappings_merge_deeply_with_dotted_grid_keys(folder):
    sweep = load(folder, """\
        base:
          model: {kind: logmel, n_mels: 40, fmin: 25.0}
        grid:
          model.n_mels: [20, 30]
        """)
    models = [r.settings["model"] for r in sweep.runs]
    assert [m["kind"] for m in models] == ["logmel", "logmel"]
    assert [m["n_mels"] for m in models] == [20, 30]
    assert all(m["fmin"] == 25.0 for m in models)  # kept from base
    assert len({r.run_id for r in sweep.runs}) == 2


def test_runs_entry_merges_into_base_model(folder):
    sweep = load(folder, """\
        base:
          model: {kind: logmel, n_mels: 40}
        runs:
          - {model: {fmin: 100.0}}
          - {model.eps: 1e-3}
        """)
    first, second = (r.settings["model"] for r in sweep.runs)
    assert first["kind"] == "logmel" and first["n_mels"] == 40 and first["fmin"] == 100.0
    assert second["kind"] == "logmel" and second["n_mels"] == 40 and second["eps"] == 1e-3


def test_lists_and_scalars_replace(folder):
    sweep = load(folder, """\
        base:
          model: {kind: mlp, n_mels: 12, hidden: [16, 8, 4], out: 5}
        runs:
          - {model.hidden: [3]}
          - {model: {out: 2}}
        """)
    first, second = (r.settings["model"] for r in sweep.runs)
    assert first["hidden"] == [3]               # replaced, not merged element-wise
    assert first["out"] == 5 and first["n_mels"] == 12
    assert second["hidden"] == [16, 8, 4]
    assert second["out"] == 2


def test_dotted_keys_in_base_and_runs(folder):
    dotted = load(folder, "base: {model.kind: logmel, model.n_mels: 24}\n", name="d.yaml")
    nested = load(folder, "base: {model: {kind: logmel, n_mels: 24}}\n", name="n.yaml")
    assert dotted.runs[0].settings["model"] == nested.runs[0].settings["model"]
    assert dotted.runs[0].settings["model"]["n_mels"] == 24
    assert dotted.runs[0].run_id == nested.runs[0].run_id


def test_grid_on_whole_model_mapping(folder):
    sweep = load(folder, "grid:\n  model: [{kind: identity}, {kind: logmel, n_mels: 10}]\n")
    assert [r.settings["model"]["kind"] for r in sweep.runs] == ["identity", "logmel"]


def test_runs_entry_and_grid_on_different_model_keys_is_fine(folder):
    sweep = load(folder, """\
        runs:
          - {model: {kind: logmel}}
          - {model: {kind: mlp}}
        grid:
          model.n_mels: [10, 20]
        """)
    assert sorted((r.settings["model"]["kind"], r.settings["model"]["n_mels"])
                  for r in sweep.runs) == [("logmel", 10), ("logmel", 20), ("mlp", 10), ("mlp", 20)]


# --- YAML numbers -----------------------------------------------------------------------


def test_scientific_notation_is_float(folder):
    sweep = load(folder, """\
        base: {lam: 1e5, m_init: 1e-6, eps: 1E-9, lr: +2.5e+1, epochs: 1e3}
        grid:
          beta2: [1e-3, 5e-1]
        """)
    raw = sweep.raw["base"]
    assert isinstance(raw["lam"], float) and raw["lam"] == 1e5
    assert isinstance(raw["m_init"], float) and raw["m_init"] == 1e-6
    assert isinstance(raw["eps"], float) and raw["eps"] == 1e-9
    assert all(isinstance(v, float) for v in sweep.raw["grid"]["beta2"])
    s = sweep.runs[0].settings
    assert s["lam"] == 100000.0 and type(s["lam"]) is float
    assert s["m_init"] == 1e-6 and s["eps"] == 1e-9 and s["lr"] == 25.0
    assert s["epochs"] == 1000 and type(s["epochs"]) is int
    assert [r.settings["beta2"] for r in sweep.runs] == [1e-3, 0.5]


def test_scientific_notation_does_not_leak_into_plain_yaml():
    import yaml

    assert yaml.safe_load("x: 1e5")["x"] == "1e5"  # the custom loader is a subclass


def test_settings_are_cast_to_declared_types(folder):
    s = load(folder, "base: {lam: 1, m_init: 2, epochs: 5.0, model: {kind: logmel, n_mels: 8.0}}\n"
             ).runs[0].settings
    assert type(s["lam"]) is float and type(s["m_init"]) is float
    assert type(s["epochs"]) is int and s["epochs"] == 5
    assert type(s["model"]["n_mels"]) is int and s["model"]["n_mels"] == 8


# --- run ids ----------------------------------------------------------------------------


def ids(folder, body, name="s.yaml", header=INPUT):
    return [r.run_id for r in load(folder, body, name=name, header=header).runs]


def test_run_id_is_12_hex_digits(folder):
    for run_id in ids(folder, "grid: {lam: [0.1, 1, 10]}\nseeds: [0, 1]\n"):
        assert re.fullmatch(r"[0-9a-f]{12}", run_id)


def test_run_id_is_stable_across_loads(folder):
    body = "base: {lam: 0.5}\ngrid: {mode: [truncate, conserve]}\n"
    assert ids(folder, body, name="x.yaml") == ids(folder, body, name="y.yaml")


@pytest.mark.parametrize("one, other", [
    ("base: {lam: 1}", "base: {lam: 1.0}"),
    ("base: {m_init: 5}", "base: {m_init: 5.0}"),
    ("base: {epochs: 10}", "base: {epochs: 10.0}"),
    ("base: {epochs: 100}", "base: {epochs: 1e2}"),
    ("base: {lam: 100000}", "base: {lam: 1e5}"),
    ("base: {model: {kind: logmel, n_mels: 8}}", "base: {model: {kind: logmel, n_mels: 8.0}}"),
    ("base: {lam: 2, mode: conserve}", "base: {mode: conserve, lam: 2}"),
    ("base: {}", "base: {lam: 1.0, eps: 1e-8, mode: truncate, param: raw}"),
    ("base: {epochs: 30}", "base: {epochs: 30, snapshot_every: 30}"),
    ("base: {}", "base: {model: {kind: identity}}"),
    ("base: {}", "seeds: [0]"),
    ("base: {lam: 3}", "runs: [{lam: 3}]"),
    ("base: {lam: 3}", "grid: {lam: [3]}"),
])
def test_equivalent_settings_give_the_same_id(folder, one, other):
    assert ids(folder, one + "\n", name="one.yaml") == ids(folder, other + "\n", name="other.yaml")


@pytest.mark.parametrize("one, other", [
    ("base: {lam: 1}", "base: {lam: 1.5}"),
    ("base: {mode: truncate}", "base: {mode: conserve}"),
    ("base: {epochs: 10}", "base: {epochs: 11}"),
    ("base: {epochs: 10}", "base: {epochs: 10, snapshot_every: 5}"),
    ("seeds: [0]", "seeds: [1]"),
    ("base: {model: {kind: logmel, n_mels: 8}}", "base: {model: {kind: logmel, n_mels: 9}}"),
    ("base: {model: {kind: logmel}}", "base: {model: {kind: identity}}"),
])
def test_a_changed_setting_changes_the_id(folder, one, other):
    assert ids(folder, one + "\n", name="one.yaml") != ids(folder, other + "\n", name="other.yaml")


def test_input_bytes_decide_the_id_not_the_path(folder):
    body = "grid: {lam: [0.1, 1]}\n"
    first = ids(folder, body)
    (folder / "elsewhere").mkdir()
    shutil.copyfile(folder / "a.wav", folder / "elsewhere" / "b.wav")
    moved = ids(folder, body, header="input: {audio: elsewhere/b.wav, sr: 8000, n_fft: 64, hop: 32}\n")
    assert moved == first  # same content at another path
    write_wav(folder / "a.wav", freq=441.0)  # same length and rate, other bytes
    changed = ids(folder, body)
    assert set(changed).isdisjoint(first)


def test_input_path_is_relative_to_the_sweep_file(folder, monkeypatch, tmp_path_factory):
    sub = folder / "sweeps"
    sub.mkdir()
    path = sweep_file(sub, "base: {lam: 1}\n",
                      header="input: {audio: ../a.wav, sr: 8000, n_fft: 64, hop: 32}\n")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    sweep = load_sweep(path)
    assert sweep.runs[0].run_id == ids(folder, "base: {lam: 1}\n")[0]


@pytest.mark.parametrize("one, other", [
    ("input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}",
     "input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 16}"),
    ("input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}",
     "input: {audio: a.wav, sr: 8000, n_fft: 128, hop: 32}"),
    ("input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}",
     "input: {audio: a.wav, sr: 4000, n_fft: 64, hop: 32}"),
])
def test_input_settings_change_the_id(folder, one, other):
    body = "base: {lam: 1}\n"
    assert ids(folder, body, name="one.yaml", header=one + "\n") != ids(
        folder, body, name="other.yaml", header=other + "\n")


def test_input_settings_equivalent_numbers_same_id(folder):
    body = "base: {lam: 1}\n"
    assert ids(folder, body, name="one.yaml",
               header="input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}\n") == ids(
        folder, body, name="other.yaml",
        header="input: {audio: a.wav, sr: 8000.0, n_fft: 64, hop: 32.0}\n")


# --- validation -------------------------------------------------------------------------

# (sweep body after the input line, substrings the message must contain)
BAD = {
    "unknown top-level key": ("bse: {lam: 1}\n", ["s.yaml", "bse", "did you mean 'base'"]),
    "top-level seed typo": ("seed: [1]\n", ["s.yaml", "'seed'", "did you mean 'seeds'"]),
    "unknown setting in base": ("base: {epoch: 3}\n", ["s.yaml", "epoch", "did you mean 'epochs'"]),
    "unknown setting in runs": ("runs: [{lamda: 1}]\n", ["s.yaml", "lamda", "did you mean"]),
    "unknown setting in grid": ("grid: {optimiser: [sgd]}\n",
                                ["s.yaml", "optimiser", "did you mean 'optimizer'"]),
    "unknown model key": ("base: {model: {kind: logmel, n_mel: 3}}\n", ["n_mel", "did you mean 'n_mels'"]),
    "lam not a number": ("base: {lam: abc}\n", ["s.yaml", "lam", "abc"]),
    "lam a bool": ("base: {lam: true}\n", ["s.yaml", "lam"]),
    "epochs not an integer": ("base: {epochs: 2.5}\n", ["s.yaml", "epochs", "2.5"]),
    "epochs zero": ("base: {epochs: 0}\n", ["s.yaml", "epochs", "0"]),
    "epochs negative": ("base: {epochs: -1}\n", ["s.yaml", "epochs", "-1"]),
    "snapshot_every zero": ("base: {snapshot_every: 0}\n", ["s.yaml", "snapshot_every"]),
    "empty grid axis": ("grid: {lam: [1], mode: []}\n", ["s.yaml", "mode", "empty"]),
    "empty seeds": ("seeds: []\n", ["s.yaml", "seeds"]),
    "invalid mode": ("base: {mode: truncat}\n",
                     ["s.yaml", "mode", "truncate", "conserve", "did you mean 'truncate'"]),
    "invalid param": ("grid: {param: [raw, tanh]}\n",
                      ["s.yaml", "param", "tanh", "raw", "relu", "softplus", "exp", "sigmoid"]),
    "invalid lambda_on": ("base: {lambda_on: both}\n", ["s.yaml", "lambda_on", "entropy", "mse"]),
    "invalid model kind": ("base: {model: {kind: logmell}}\n",
                           ["logmell", "identity", "logmel", "mlp", "python"]),
    "runs entry and grid clash": ("runs: [{lam: 1}]\ngrid: {lam: [2, 3]}\n", ["s.yaml", "lam"]),
    "dotted clash": ("runs: [{model: {kind: logmel, n_mels: 8}}]\ngrid: {model.n_mels: [10]}\n",
                     ["s.yaml", "model.n_mels"]),
    "malformed YAML": ("base:\n  lam: 1\n   mode: x\n", ["s.yaml", "line 4"]),
    "unknown input key": ("", ["s.yaml", "input.rate"]),
    "missing audio": ("", ["s.yaml", "missing.wav"]),
}
HEADERS = {
    "unknown input key": "input: {audio: a.wav, rate: 8000}\n",
    "missing audio": "input: {audio: missing.wav, sr: 8000, n_fft: 64, hop: 32}\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_is_one_error_naming_the_key(folder, case):
    body, needles = BAD[case]
    path = sweep_file(folder, body, header=HEADERS.get(case, INPUT))
    with pytest.raises(SpecblurError) as info:
        load_sweep(path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (case, message)
    assert "\n" not in message.strip()


def test_malformed_yaml_names_the_right_line(folder):
    text = INPUT + "name: bad\nbase:\n  lam: 1\n  mode: [truncate, conserve\n  lr: 2\nseeds: [0]\n"
    path = folder / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecblurError, match=r"bad\.yaml.*line [4-7]\b"):
        load_sweep(path)


def test_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(SpecblurError, match="nope.yaml"):
        load_sweep(tmp_path / "nope.yaml")


def test_not_a_mapping(folder):
    path = folder / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpecblurError, match="list.yaml"):
        load_sweep(path)


@pytest.mark.parametrize("body", [
    "base: {model: {kind: logmell}}\n",
    "base: {model: {kind: logmel, n_mel: 3}}\n",
])
def test_model_errors_name_the_sweep_file(folder, body):
    with pytest.raises(SpecblurError) as info:
        load(folder, body)
    assert "s.yaml" in str(info.value)
