"""Lockstep batches (``specblur.fit_batch``): each run's result is that of its own fit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import specblur
from specblur import models
from specblur.errors import SpecblurError


def spectrogram(seed, T, K=33):
    rng = np.random.default_rng(seed)
    return rng.random((K, T)) ** 2 + 0.01


def assert_same_result(got, want, rtol=1e-9):
    assert got.status == want.status
    for a, b in ((got.m, want.m), (got.r, want.r)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12 * np.abs(b).max())
    assert list(got.history["epoch"]) == list(want.history["epoch"])
    values = [c for c in got.history.columns if c != "seconds"]
    np.testing.assert_allclose(got.history[values].to_numpy(float),
                               want.history[values].to_numpy(float), rtol=rtol, atol=1e-12,
                               equal_nan=True)
    assert got.snapshots.keys() == want.snapshots.keys()
    for epoch, snap in want.snapshots.items():
        for key in ("m", "r", "Y", "g_mse", "g_ent"):
            np.testing.assert_allclose(got.snapshots[epoch][key], snap[key], rtol=rtol,
                                       atol=1e-12 * max(np.abs(snap[key]).max(), 1e-300))
    assert got.settings == want.settings


MIXED_RUNS = [
    {"m_init": 3.0, "lam": 1e-3, "epochs": 7, "model": {"kind": "identity"}},
    {"m_init": 2.0, "lam": 1e-2, "lambda_on": "mse", "mode": "conserve", "optimizer": "adam",
     "lr": 0.05, "epochs": 12, "param": "softplus", "model": {"kind": "identity"},
     "snapshot_every": 4},
    {"m_init": 1.5, "lam": 1e3, "lambda_on": "mse", "mode": "renormalize", "param": "sigmoid",
     "r_max": 9.0, "optimizer": "adam", "lr": 0.2, "epochs": 9, "tv": 0.01,
     "model": {"kind": "identity"}, "log_every": 3},
    {"m_init": 4.0, "lam": 1e-4, "mode": "conserve", "param": "exp", "lr": 0.01, "epochs": 5,
     "model": {"kind": "identity"}, "mse_norm": "ref"},
]


def test_mixed_settings_and_lengths_equal_separate_fits():
    inputs = [spectrogram(i, T) for i, T in enumerate((30, 41, 17, 41))]
    batch = specblur.fit_batch(inputs, MIXED_RUNS)
    for X, run, got in zip(inputs, MIXED_RUNS, batch):
        assert got.r.shape == X.shape  # padding never reaches a result
        assert_same_result(got, specblur.fit(X, **run))


@pytest.mark.parametrize("model", [{"kind": "logmel", "n_mels": 8},
                                   {"kind": "mlp", "n_mels": 8, "hidden": [6], "out": 4}])
def test_batched_models_equal_separate_fits(model):
    inputs = [spectrogram(i, 25) for i in range(3)] + [spectrogram(9, 14)]
    runs = [{"m_init": 2.0 + i, "lam": 10.0 ** -i, "lambda_on": "mse", "mode": "conserve",
             "optimizer": "adam", "lr": 0.1, "epochs": 6 + i, "model": model} for i in range(4)]
    for X, run, got in zip(inputs, runs, specblur.fit_batch(inputs, runs, sr=8000)):
        assert_same_result(got, specblur.fit(X, sr=8000, **run))


def test_model_called_once_per_epoch_on_a_stack(monkeypatch):
    calls = []
    forward = models.LogMel.forward

    def counting(self, Y):
        calls.append(Y.shape)
        return forward(self, Y)

    monkeypatch.setattr(models.LogMel, "forward", counting)
    X = spectrogram(0, 20)
    runs = [{"lam": lam, "epochs": 4, "model": {"kind": "logmel", "n_mels": 8}}
            for lam in (1e-3, 1e-2, 1e-1)]
    specblur.fit_batch([X, X, X], runs, sr=8000)
    stacked = [shape for shape in calls if len(shape) == 3]
    assert stacked == [(3, 33, 20)] * 5  # epochs 0..4, one call each; refs are per run


class PerItem:
    """A plug-in without ``supports_batch``: it sees only (K, T) arrays."""

    def forward(self, Y):
        assert Y.ndim == 2
        return np.sqrt(Y + 1.0)

    def vjp(self, Y, g_out):
        assert Y.ndim == 2
        return 0.5 * g_out / np.sqrt(Y + 1.0)


def test_plug_in_without_batches_is_called_per_run(monkeypatch):
    from specblur import fitting

    monkeypatch.setattr(fitting, "make_model", lambda spec, **kw: PerItem())
    inputs = [spectrogram(1, 12), spectrogram(2, 12)]
    runs = [{"lam": 1e-3, "epochs": 3, "model": {"kind": "identity"}}] * 2
    for X, got in zip(inputs, specblur.fit_batch(inputs, runs)):
        assert_same_result(got, specblur.fit(X, **runs[0]))


class Ragged:
    """A plug-in that takes stacks of any lengths and checks that their padding is zero."""

    supports_batch = supports_lengths = True

    def __init__(self):
        self.stacks = []
        self.slices = []  # per stacked call: was it a view of another array (the lockstep's)?

    def _items(self, Y, lengths):
        if Y.ndim == 2:
            return [Y]
        lengths = [Y.shape[2]] * len(Y) if lengths is None else lengths
        for item, n in zip(Y, lengths):
            assert not item[:, n:].any(), "padding reached the model"
        self.stacks.append(Y.shape)
        self.slices.append(Y.base is not None)
        return [item[:, :n] for item, n in zip(Y, lengths)]

    def forward(self, Y, lengths=None):
        outs = [np.sqrt(item + 1.0).sum(axis=1, keepdims=True) for item in self._items(Y, lengths)]
        return outs[0] if Y.ndim == 2 else np.stack(outs)

    def vjp(self, Y, g_out, lengths=None):
        items = self._items(Y, lengths)
        if Y.ndim == 2:
            return 0.5 * g_out / np.sqrt(Y + 1.0)
        G = np.zeros(Y.shape)
        for i, item in enumerate(items):
            G[i, :, :item.shape[1]] = 0.5 * g_out[i] / np.sqrt(item + 1.0)
        return G


def test_a_model_of_any_lengths_gets_a_zero_padded_slice_of_the_stack(monkeypatch):
    # the 20-frame run leaves after 2 epochs and the 10-frame run moves into its slot:
    # the frames 10..19 it left there must be zero before the model sees the stack again
    from specblur import fitting

    model = Ragged()
    monkeypatch.setattr(fitting, "make_model", lambda spec, **kw: model)
    inputs = [spectrogram(1, 30), spectrogram(2, 20), spectrogram(3, 10)]
    runs = [{"lam": 1e-3, "epochs": n, "mode": "conserve", "model": {"kind": "identity"}}
            for n in (6, 2, 6)]
    batch = specblur.fit_batch(inputs, runs)
    assert model.stacks[-1] == (2, 33, 30)  # the stack's own slots, after the move
    assert all(model.slices)  # never a copy: the group's slots stay consecutive
    for X, run, got in zip(inputs, runs, batch):
        assert_same_result(got, specblur.fit(X, **run))


def test_a_model_gets_the_stack_in_slot_order_after_a_run_moves(monkeypatch):
    # slots go longest first (runs 0, 3, 1, 2, 4); run 1 ends first and run 4, the last,
    # moves into its slot: the runs' order in the batch (0, 2, 3, 4) is no longer their
    # slots' (0, 3, 4, 2), and the model's rows must follow the slots
    from specblur import fitting

    model = Ragged()
    monkeypatch.setattr(fitting, "make_model", lambda spec, **kw: model)
    inputs = [spectrogram(i, T) for i, T in enumerate((30, 25, 22, 30, 18))]
    runs = [{"m_init": 1.5 + i / 2, "lam": 1e-3, "epochs": 2 if i == 1 else 5,
             "model": {"kind": "identity"}} for i in range(5)]
    batch = specblur.fit_batch(inputs, runs)
    assert all(model.slices)
    for X, run, got in zip(inputs, runs, batch):
        assert_same_result(got, specblur.fit(X, **run))


def test_a_diverging_run_leaves_and_the_others_go_on():
    X = spectrogram(3, 16)
    runs = [{"m_init": 2.0, "lam": 1e-3, "epochs": 8, "model": {"kind": "identity"}},
            {"m_init": 2.5, "param": "exp", "lam": 1.0, "lr": 1e3, "epochs": 8,
             "model": {"kind": "identity"}},  # r = e^m overflows
            {"m_init": 3.0, "lam": 1e-2, "epochs": 6, "mode": "conserve",
             "model": {"kind": "identity"}}]
    batch = specblur.fit_batch([X, X, X], runs)
    assert [res.status for res in batch] == ["done", "diverged", "done"]
    assert len(batch[1].history) < 8
    for run, got in zip(runs, batch):
        assert_same_result(got, specblur.fit(X, **run))


def test_a_run_leaving_between_the_blur_and_its_vjp_hands_its_slot_on():
    # D = mean((Y - X)^2) overflows at epoch 0 for the first input: that run leaves after
    # the blur, and the last run of its mode moves into its slot before the VJP
    X = spectrogram(8, 14)
    loud = X.copy()
    loud[::2] = 1e200
    runs = [{"m_init": m, "lam": 1e-2, "epochs": 4, "model": {"kind": "identity"}}
            for m in (2.0, 3.0, 3.5)]  # different radii: the moved run's must be refilled
    inputs = [loud, X, spectrogram(9, 12)]
    batch = specblur.fit_batch(inputs, runs)
    assert [res.status for res in batch] == ["diverged", "done", "done"]
    for Xi, run, got in zip(inputs, runs, batch):
        assert_same_result(got, specblur.fit(Xi, **run))


def test_one_mapping_applies_to_every_input():
    inputs = [spectrogram(4, 10), spectrogram(5, 13)]
    run = {"lam": 1e-3, "epochs": 3, "model": {"kind": "identity"}}
    for X, got in zip(inputs, specblur.fit_batch(inputs, run)):
        assert_same_result(got, specblur.fit(X, **run))


def test_a_stack_is_a_batch_of_its_items():
    stack = np.stack([spectrogram(6, 11), spectrogram(7, 11)])
    run = {"lam": 1e-2, "epochs": 3, "model": {"kind": "identity"}}
    for X, got in zip(stack, specblur.fit_batch(stack, run)):
        assert_same_result(got, specblur.fit(X, **run))


@pytest.mark.parametrize("inputs, runs, match", [
    ([np.ones((5, 4)), np.ones((6, 4))], {}, "same number of bins"),
    ([np.ones((5, 4))], [{}, {}], "1 inputs and 2 settings"),
    ([np.ones((5, 4)), np.full((5, 4), np.nan)], {}, "run 1: X has non-finite"),
    ([np.ones((5, 4))], [{"lamda": 1.0}], "run 0: .*lamda"),
])
def test_bad_batches_are_rejected(inputs, runs, match):
    with pytest.raises(SpecblurError, match=match):
        specblur.fit_batch(inputs, runs)


def test_empty_batch():
    assert specblur.fit_batch([], []) == []


@settings(deadline=None, max_examples=12)
@given(lengths=st.lists(st.integers(3, 24), min_size=1, max_size=4),
       epochs=st.lists(st.integers(1, 6), min_size=4, max_size=4),
       modes=st.lists(st.sampled_from(specblur.MODES), min_size=4, max_size=4),
       seed=st.integers(0, 2**16))
def test_any_batch_equals_separate_fits(lengths, epochs, modes, seed):
    rng = np.random.default_rng(seed)
    inputs = [rng.random((9, T)) for T in lengths]
    runs = [{"m_init": float(rng.uniform(1.5, 4.0)), "lam": float(10 ** rng.uniform(-4, 0)),
             "epochs": e, "mode": mode, "optimizer": "adam", "lr": 0.1,
             "model": {"kind": "identity"}} for e, mode in zip(epochs, modes)][:len(inputs)]
    for X, run, got in zip(inputs, runs, specblur.fit_batch(inputs, runs)):
        assert_same_result(got, specblur.fit(X, **run))


# --- the sweep runner's batches ------------------------------------------------------------

def _task(run_id, spec, folder="", **settings):
    from specblur.settings import resolve
    from specblur.sweep.runner import Task

    return Task(run_id, resolve({"epochs": 3, "model": {"kind": "identity"}, **settings}),
                spec, str(folder))


def _spec(T=12, K=33, value=None):
    from specblur.audio import Spectrogram

    mag = spectrogram(0, T, K) if value is None else np.full((K, T), value)
    return Spectrogram(mag=mag, phase=None, sr=8000, n_fft=2 * (K - 1), hop=16)


def test_batches_group_runs_that_share_a_model_and_shape(monkeypatch):
    from specblur.sweep import runner
    from specblur.sweep.runner import batches

    monkeypatch.setattr(runner, "AUTO_BATCH_KINDS", ("identity",))
    a, b = _spec(), _spec(K=17)
    tasks = [_task(f"{i:012x}", a, lam=10.0 ** -i) for i in range(6)]
    tasks += [_task("b" * 12, b), _task("c" * 12, a, model={"kind": "logmel", "n_mels": 4}),
              _task("d" * 12, a, seed=7)]
    ids = lambda groups: [sorted(t.run_id for t in g) for g in groups]  # noqa: E731
    alike = sorted(t.run_id for t in tasks[:6])
    assert ids(batches(tasks, 1)) == [[t.run_id] for t in tasks]
    four = ids(batches(tasks, 4))  # six alike runs: two batches of three, not 4 + 2
    assert [len(g) for g in four] == [3, 3, 1, 1, 1]
    assert sorted(four[0] + four[1]) == alike and four[2:] == [["b" * 12], ["c" * 12], ["d" * 12]]
    auto = ids(batches(tasks, None, workers=2))  # six alike runs over two workers
    assert [len(g) for g in auto] == [3, 3, 1, 1, 1] and sorted(auto[0] + auto[1]) == alike
    assert ids(batches(tasks, None, workers=1))[0] == alike
    monkeypatch.setattr(runner, "AUTO_BATCH_KINDS", ("speaker_encoder",))
    assert ids(batches(tasks, None, workers=1)) == [[t.run_id] for t in tasks]  # cheap: alone
    assert [len(g) for g in batches(tasks, 6)][:1] == [6]  # unless --batch asks


def test_batches_share_the_work_evenly(monkeypatch):
    from specblur.sweep import runner
    from specblur.sweep.runner import batches

    monkeypatch.setattr(runner, "AUTO_BATCH_KINDS", ("identity",))
    lengths = [400, 110, 200, 150, 160, 710, 530]  # the corpus sweep's clips, in frames
    tasks = [_task(f"{i:012x}", _spec(T=T), lam=0.1) for i, T in enumerate(lengths)]
    groups = batches(tasks, None, workers=2)
    work = [sum(t.spectrogram.mag.shape[1] for t in g) for g in groups]
    assert len(groups) == 2 and max(work) <= 1.1 * sum(lengths) / 2  # in order: 860 + 1400
    for group in groups:  # each batch keeps the sweep's order
        order = [tasks.index(t) for t in group]
        assert order == sorted(order)


def test_automatic_batches_keep_under_the_memory_bound(monkeypatch):
    from specblur.sweep import runner

    monkeypatch.setattr(runner, "AUTO_BATCH_KINDS", ("identity",))
    tasks = [_task(f"{i:012x}", _spec(), lam=10.0 ** -i) for i in range(5)]
    one = runner.run_bytes(tasks[0])
    assert one >= 33 * 12 * 8 * 16
    monkeypatch.setattr(runner, "BATCH_MEMORY", 2 * one)
    assert [len(g) for g in runner.batches(tasks, None, workers=1)] == [2, 2, 1]
    monkeypatch.setattr(runner, "BATCH_MEMORY", one // 2)
    assert [len(g) for g in runner.batches(tasks, None, workers=1)] == [1] * 5


def test_a_run_that_cannot_start_fails_alone(tmp_path):
    from specblur.sweep.runner import execute_batch

    silent = _spec(value=0.0)  # mse_norm 'ref' divides by mean(Φ(X)²) = 0
    tasks = [_task("a" * 12, silent, tmp_path), _task("b" * 12, silent, tmp_path, mse_norm="ref"),
             _task("c" * 12, silent, tmp_path, lam=0.5)]
    rows = execute_batch(tasks)
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert "mse_norm" in rows[1]["error"]
    assert (tmp_path / "history" / f"{'a' * 12}.parquet").is_file()


def test_a_batch_that_fails_for_any_reason_falls_back_to_single_runs(tmp_path, monkeypatch):
    from specblur.sweep import runner

    real = runner.fit_batch

    def fails_together(inputs, runs, **kw):
        if len(inputs) > 1:
            raise MemoryError("a batch too big")
        return real(inputs, runs, **kw)

    monkeypatch.setattr(runner, "fit_batch", fails_together)
    tasks = [_task(f"{i:012x}", _spec(), tmp_path, lam=10.0 ** -i) for i in range(3)]
    rows = runner.execute_batch(tasks)
    assert [row["status"] for row in rows] == ["done"] * 3
    assert [row["batch"] for row in rows] == [1, 1, 1]


def test_batch_size_must_be_positive(tmp_path):
    from specblur.sweep.runner import run_sweep

    with pytest.raises(SpecblurError, match="batch must be a positive integer"):
        run_sweep(None, out=tmp_path, batch=0)


SWEEP = """\
name: lockstep
input: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}
base: {epochs: 6, snapshot_every: 3, log_every: 2, model: {kind: logmel, n_mels: 8}}
grid:
  lam: [0.1, 0.001]
  mode: [truncate, conserve, renormalize]
  epochs: [4, 6]
"""


def test_sweep_in_batches_writes_what_single_runs_write(tmp_path):
    import pandas as pd
    import soundfile as sf

    from specblur.sweep.config import load_sweep
    from specblur.sweep.runner import run_sweep

    t = np.arange(4000) / 8000
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(9 * t)), 8000)
    (tmp_path / "grid.yaml").write_text(SWEEP)
    sweep = load_sweep(tmp_path / "grid.yaml")
    alone = run_sweep(sweep, out=tmp_path / "one", batch=1)
    together = run_sweep(sweep, out=tmp_path / "all", batch=5)
    assert len(alone) == len(together) == 12
    assert sorted(together["run_id"]) == sorted(alone["run_id"])
    assert (together["status"] == "done").all()
    assert set(alone["batch"]) == {1} and together["batch"].between(2, 5).all()
    for table in ("history", "fields", "outputs"):
        for run_id in alone["run_id"]:
            a = pd.read_parquet(tmp_path / "one" / "lockstep" / table / f"{run_id}.parquet")
            b = pd.read_parquet(tmp_path / "all" / "lockstep" / table / f"{run_id}.parquet")
            assert list(a.columns) == list(b.columns) and len(a) == len(b)
            numeric = [c for c in a.columns if c != "seconds" and a[c].dtype.kind in "fi"]
            np.testing.assert_allclose(b[numeric].to_numpy(float), a[numeric].to_numpy(float),
                                       rtol=1e-9, atol=1e-12, equal_nan=True)
