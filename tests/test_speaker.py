"""Φ = the pretrained GE2E speaker encoder (model kind ``speaker_encoder``).

The checks of the input settings run everywhere. The tests that build the network skip,
with the reason, only where PyTorch is not installed (``pip install 'specblur[speaker]'``);
CI installs it, and the weights with ``pip install --no-deps resemblyzer``.
"""
import importlib.util
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import specblur
from specblur.audio import Spectrogram
from specblur.errors import SpecblurError
from specblur.models import make_model, validate_model_spec
from specblur.sweep.config import load_sweep

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "arctic_a0007.wav"
NO_TORCH = importlib.util.find_spec("torch") is None
needs_torch = pytest.mark.skipif(
    NO_TORCH, reason="PyTorch is not installed: pip install 'specblur[speaker]' "
                     "&& pip install --no-deps resemblyzer")
ENCODER_INPUT = "input: {audio: a.wav, sr: 16000, n_fft: 400, hop: 160, normalize_dbfs: -30}\n"


def write_sweep(folder, body, header=ENCODER_INPUT):
    shutil.copy(SAMPLE, folder / "a.wav")
    path = folder / "s.yaml"
    path.write_text(header + textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def sample():
    return Spectrogram.from_audio(SAMPLE, sr=16000, n_fft=400, hop=160, normalize_dbfs=-30)


@pytest.fixture(scope="module")
def encoder64():
    return make_model({"kind": "speaker_encoder", "dtype": "float64"},
                      sr=16000, n_fft=400, n_bins=201)


# --- settings (no torch needed) ------------------------------------------------------------


def test_spec_defaults_and_dtype_check():
    assert validate_model_spec("speaker_encoder") == {"kind": "speaker_encoder",
                                                      "dtype": "float32"}
    with pytest.raises(SpecblurError, match="float32, float64.*did you mean 'float64'"):
        validate_model_spec({"kind": "speaker_encoder", "dtype": "float46"})
    with pytest.raises(SpecblurError, match="unknown key model.n_mels"):
        validate_model_spec({"kind": "speaker_encoder", "n_mels": 40})


@pytest.mark.parametrize("header, wrong", [
    ("input: {audio: a.wav, sr: 16000, n_fft: 512, hop: 160}\n", "n_fft=512"),
    ("input: {audio: a.wav, sr: 16000, n_fft: 400, hop: 128}\n", "hop=128"),
    ("input: {audio: a.wav, sr: 22050, n_fft: 400, hop: 160}\n", "sr=22050"),
])
def test_sweep_with_other_input_settings_is_rejected_before_any_run(tmp_path, header, wrong):
    path = write_sweep(tmp_path, "base: {model: {kind: speaker_encoder}}\n", header=header)
    with pytest.raises(SpecblurError) as info:
        load_sweep(path)
    message = str(info.value)
    assert str(path) in message and "speaker_encoder" in message and wrong in message
    assert "sr: 16000, n_fft: 400, hop: 160" in message


def test_mismatch_in_a_grid_point_is_reported(tmp_path):
    path = write_sweep(tmp_path, """\
        grid:
          model.kind: [logmel, speaker_encoder]
        """, header="input: {audio: a.wav, sr: 16000, n_fft: 512, hop: 128}\n")
    with pytest.raises(SpecblurError, match="needs the input settings"):
        load_sweep(path)


def test_make_model_rejects_other_spectrogram_shapes():
    with pytest.raises(SpecblurError, match="n_fft: 400"):
        make_model("speaker_encoder", sr=16000, n_fft=512, n_bins=257)


def test_missing_weights_give_the_install_command(monkeypatch, tmp_path):
    import specblur.speaker as speaker

    monkeypatch.setattr(speaker, "weights_path", lambda: None)
    with pytest.raises(SpecblurError, match="pip install --no-deps resemblyzer"):
        make_model("speaker_encoder", sr=16000, n_fft=400, n_bins=201)
    path = write_sweep(tmp_path, "base: {model: {kind: speaker_encoder}}\n")
    with pytest.raises(SpecblurError, match="resemblyzer/pretrained.pt"):
        load_sweep(path)


def test_weights_are_found_without_importing_resemblyzer():
    import sys

    import specblur.speaker as speaker

    path = speaker.weights_path()
    if path is not None:
        assert path.name == "pretrained.pt" and path.parent.name == "resemblyzer"
    assert "resemblyzer" not in sys.modules


# --- the network ---------------------------------------------------------------------------


@needs_torch
def test_mel_input_is_resemblyzers(sample, encoder64):
    """The mel frames are those of resemblyzer.audio.wav_to_mel_spectrogram (power, no log)."""
    import librosa

    ref = librosa.feature.melspectrogram(y=sample.waveform, sr=16000, n_fft=400,
                                         hop_length=160, n_mels=40)
    ours = encoder64.mel @ sample.mag ** 2
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


@needs_torch
def test_sample_embedding_has_unit_norm_and_is_stable(sample, encoder64):
    e = encoder64.forward(sample.mag)
    assert e.shape == (256, 1) and e.dtype == np.float64
    assert abs(np.linalg.norm(e) - 1.0) < 1e-12
    assert (e >= 0).all() and (e > 0).sum() > 10
    rng = np.random.default_rng(0)
    tiny = sample.mag * (1 + 1e-6 * rng.standard_normal(sample.mag.shape))
    assert np.abs(encoder64.forward(tiny) - e).max() < 1e-4
    e32 = make_model("speaker_encoder", sr=16000, n_fft=400, n_bins=201).forward(sample.mag)
    assert np.abs(e32 - e).max() < 1e-5


@needs_torch
def test_vjp_matches_finite_differences_float64(sample, encoder64):
    rng = np.random.default_rng(1)
    Y = sample.mag[:, 150:190].copy()          # 40 voiced frames keep it fast
    g = rng.standard_normal((256, 1))
    grad = encoder64.vjp(Y, g)
    assert grad.shape == Y.shape and np.isfinite(grad).all()
    f = lambda Z: float(np.sum(encoder64.forward(Z) * g))
    h = 1e-6
    for _ in range(3):                         # directional derivatives
        V = rng.standard_normal(Y.shape) * Y.mean()
        fd = (f(Y + h * V) - f(Y - h * V)) / (2 * h)
        assert np.isclose(np.sum(grad * V), fd, rtol=1e-5, atol=1e-9 * np.abs(grad * V).sum())
    for k, t in [(5, 0), (40, 20), (120, 39)]:  # single bins
        E = np.zeros_like(Y)
        E[k, t] = 1.0
        fd = (f(Y + h * E) - f(Y - h * E)) / (2 * h)
        assert np.isclose(grad[k, t], fd, rtol=1e-4, atol=1e-8 * np.abs(grad).max())


@needs_torch
def test_vjp_after_forward_at_another_y_recomputes(sample, encoder64):
    Y = sample.mag[:, :30].copy()
    g = np.ones((256, 1))
    expected = encoder64.vjp(Y, g)
    encoder64.forward(Y * 2)                    # leaves a graph for another Y
    np.testing.assert_array_equal(encoder64.vjp(Y, g), expected)
    buf = Y.copy()
    encoder64.forward(buf)
    buf *= 2                                    # the same buffer, changed in place
    np.testing.assert_allclose(encoder64.vjp(buf, g), encoder64.vjp(Y * 2, g))


@needs_torch
def test_batch_axis(sample, encoder64):
    Y = np.stack([sample.mag[:, :30], sample.mag[:, 30:60]])
    g = np.random.default_rng(2).standard_normal((2, 256, 1))
    out = encoder64.forward(Y)
    assert out.shape == (2, 256, 1)
    np.testing.assert_allclose(out[1], encoder64.forward(Y[1]), atol=1e-12)
    np.testing.assert_allclose(encoder64.vjp(Y, g)[0], encoder64.vjp(Y[0], g[0]), atol=1e-12)


@needs_torch
def test_stack_of_different_lengths(sample, encoder64):
    lengths = [40, 25, 33]
    Y = np.zeros((3, 201, 40))
    for i, T in enumerate(lengths):
        Y[i, :, :T] = sample.mag[:, 10 * i:10 * i + T]
    Y[1, :, 30:] = 5.0  # beyond its length: ignored
    g = np.random.default_rng(3).standard_normal((3, 256, 1))
    out = encoder64.forward(Y, lengths=lengths)
    G = encoder64.vjp(Y, g, lengths=lengths)
    for i, T in enumerate(lengths):
        np.testing.assert_allclose(out[i], encoder64.forward(Y[i, :, :T]), atol=1e-12)
        np.testing.assert_allclose(G[i, :, :T], encoder64.vjp(Y[i, :, :T], g[i]), atol=1e-12)
        assert not G[i, :, T:].any()
    with pytest.raises(specblur.SpecblurError, match="lengths"):
        encoder64.forward(Y, lengths=[40, 41, 3])


@needs_torch
def test_lockstep_batch_of_clips_equals_separate_fits(sample):
    clips = [sample.mag[:, :60], sample.mag[:, 100:145], sample.mag[:, 200:260]]
    runs = [{"model": {"kind": "speaker_encoder", "dtype": "float64"}, "param": "sigmoid",
             "r_max": 16.0, "m_init": 1.5, "lam": 1e3 * (i + 1), "lambda_on": "mse",
             "mode": "conserve", "optimizer": "adam", "lr": 0.5, "epochs": 3 + i}
            for i in range(3)]
    batch = specblur.fit_batch(clips, runs, sr=16000)
    for X, run, got in zip(clips, runs, batch):
        want = specblur.fit(X, sr=16000, **run)
        np.testing.assert_allclose(got.r, want.r, rtol=1e-9)
        np.testing.assert_allclose(got.history["mse"], want.history["mse"], rtol=1e-9)


@needs_torch
def test_short_sweep_runs_end_to_end(tmp_path):
    from specblur.sweep.runner import run_sweep

    path = write_sweep(tmp_path, """\
        name: spk
        base: {model: {kind: speaker_encoder}, m_init: 5.0, lambda_on: mse, mode: conserve,
               epochs: 3, snapshot_every: 2}
        runs:
          - {lam: 1e5, param: raw}
          - {lam: 1e5, param: exp, optimizer: adam, lr: 0.01}
        """)
    runs = run_sweep(load_sweep(path), out=tmp_path / "results")
    assert list(runs.status) == ["done", "done"], runs.error.tolist()
    res = specblur.load(tmp_path / "results" / "spk")
    assert sorted(res.outputs.epoch.unique()) == [2, 3]
    assert res.outputs.groupby(["run_id", "epoch"]).dim.nunique().eq(256).all()
    assert (res.history.groupby("run_id").epoch.max() == 3).all()
    assert np.isfinite(res.history.mse).all() and (res.history.mse > 0).all()
    assert (tmp_path / "results" / "spk" / "audio").is_dir()
    assert isinstance(res.fields, pd.DataFrame) and res.fields.k.max() == 200
