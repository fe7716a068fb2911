"""Tests for specblur.audio: the STFT of SPEC §2, audio input and output."""

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import get_window

from specblur.audio import (Spectrogram, istft, load_audio, resynthesize, stft,
                            write_wav)
from specblur.errors import SpecblurError


def direct_stft(y, n_fft, hop):
    """SPEC §2 written out: frame t = sum_n y[t*hop - n_fft//2 + n] w[n] e^{-2πikn/n_fft}."""
    w = get_window("hann", n_fft)
    n_frames = 1 + len(y) // hop
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    basis = np.exp(-2j * np.pi * k * n / n_fft)
    out = np.zeros((n_fft // 2 + 1, n_frames), dtype=complex)
    for t in range(n_frames):
        idx = t * hop - n_fft // 2 + np.arange(n_fft)
        inside = (idx >= 0) & (idx < len(y))
        frame = np.where(inside, y[np.clip(idx, 0, len(y) - 1)], 0.0)
        out[:, t] = basis @ (frame * w)
    return out


@pytest.mark.parametrize("n_fft,hop,length", [(16, 4, 37), (32, 8, 64), (15, 5, 23),
                                              (64, 16, 10), (64, 16, 1)])
def test_stft_matches_direct_dft(n_fft, hop, length):
    y = np.random.default_rng(0).standard_normal(length)
    S = stft(y, n_fft, hop)
    assert S.shape == (n_fft // 2 + 1, 1 + length // hop)
    np.testing.assert_allclose(S, direct_stft(y, n_fft, hop), rtol=0, atol=1e-12)


def test_window_is_periodic_hann_and_unscaled():
    n_fft = 8
    y = np.zeros(40)
    y[16] = 1.0  # with hop 1, frame t holds this impulse at window index n = 16 - t + 4
    S = stft(y, n_fft, 1)
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    t = np.arange(13, 21)
    for k in (0, 1, 4):
        np.testing.assert_allclose(np.abs(S[k, t]), periodic_hann[20 - t], atol=1e-15)
    assert np.all(S[:, :13] == 0) and np.all(S[:, 21:] == 0)


@pytest.mark.parametrize("n_fft,hop,length", [(512, 128, 4000), (64, 16, 1001),
                                              (32, 16, 333), (15, 5, 100)])
def test_istft_round_trip(n_fft, hop, length):
    y = np.random.default_rng(1).uniform(-1, 1, length)
    S = stft(y, n_fft, hop)
    np.testing.assert_allclose(istft(S, n_fft, hop, length), y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(resynthesize(np.abs(S), np.angle(S), n_fft, hop, length), y,
                               rtol=0, atol=1e-10)


def test_resynthesis_through_float_wav(tmp_path):
    sr, n_fft, hop = 16000, 512, 128
    t = np.arange(8000) / sr
    y = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(2).standard_normal(t.size)
    S = stft(y, n_fft, hop)
    out = tmp_path / "sub" / "dir" / "x.wav"
    write_wav(out, resynthesize(np.abs(S), np.angle(S), n_fft, hop, y.size), sr)
    back, back_sr = sf.read(out, dtype="float64")
    assert back_sr == sr
    assert sf.info(str(out)).subtype == "FLOAT"
    np.testing.assert_allclose(back, y, rtol=0, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == ["x.wav"]  # no temporary left


def test_write_wav_normalises_only_above_one(tmp_path):
    quiet = np.array([0.0, 0.5, -0.25])
    write_wav(tmp_path / "q.wav", quiet, 8000)
    np.testing.assert_allclose(sf.read(tmp_path / "q.wav")[0], quiet, atol=1e-7)
    loud = np.array([0.0, 4.0, -2.0])
    write_wav(tmp_path / "l.wav", loud, 8000)
    np.testing.assert_allclose(sf.read(tmp_path / "l.wav")[0], loud / 4, atol=1e-7)


def test_load_resamples_and_mixes_stereo_flac(tmp_path):
    sr_in, sr_out, f0, seconds = 44100, 16000, 1000.0, 0.5
    t = np.arange(int(sr_in * seconds)) / sr_in
    left = 0.6 * np.sin(2 * np.pi * f0 * t)
    stereo = np.stack([left, 0.2 * left], axis=1)  # mono mix = 0.36 * sine
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, sr_in, subtype="PCM_16")
    y = load_audio(path, sr_out)
    assert y.dtype == np.float64 and y.ndim == 1
    assert y.size == int(sr_in * seconds) * sr_out // sr_in
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * sr_out / y.size
    assert abs(peak_hz - f0) <= sr_out / y.size
    middle = y[y.size // 4: 3 * y.size // 4]
    assert np.max(np.abs(middle)) == pytest.approx(0.36, abs=5e-3)


def test_load_without_resampling(tmp_path):
    y = np.random.default_rng(3).uniform(-0.9, 0.9, 1000)
    sf.write(tmp_path / "a.wav", y, 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav", 8000), y, atol=1e-7)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(SpecblurError, match="nope.wav"):
        load_audio(missing, 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00garbage" * 50)
    with pytest.raises(SpecblurError, match="corrupt.wav"):
        load_audio(corrupt, 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 8000)
    with pytest.raises(SpecblurError, match="empty.wav"):
        load_audio(empty, 8000)
    bad = tmp_path / "nan.wav"
    sf.write(bad, np.array([0.0, np.nan, 0.1]), 8000, subtype="FLOAT")
    with pytest.raises(SpecblurError, match="nan.wav"):
        load_audio(bad, 8000)


def test_spectrogram_from_audio_and_to_audio(tmp_path):
    sr = 8000
    y = 0.3 * np.sin(2 * np.pi * 300 * np.arange(3001) / sr)
    sf.write(tmp_path / "s.wav", y, sr, subtype="FLOAT")
    spec = Spectrogram.from_audio(tmp_path / "s.wav", sr=sr, n_fft=256, hop=64)
    assert spec.mag.shape == (129, 1 + 3001 // 64) == spec.phase.shape
    assert spec.length == 3001 and spec.sr == sr
    np.testing.assert_allclose(spec.to_audio(spec.mag), y, atol=1e-6)

    norm = Spectrogram.from_audio(tmp_path / "s.wav", sr=sr, n_fft=256, hop=64,
                                  normalize_dbfs=-20.0)
    rms = np.sqrt(np.mean(norm.waveform ** 2))
    assert 20 * np.log10(rms) == pytest.approx(-20.0)
    np.testing.assert_allclose(norm.mag, spec.mag * (0.1 / np.sqrt(np.mean(y ** 2))),
                               rtol=1e-6, atol=1e-9)


def test_spectrogram_from_npy(tmp_path):
    mag = np.random.default_rng(4).uniform(0, 1, (33, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", mag)
    spec = Spectrogram.from_npy(tmp_path / "x.npy")
    assert spec.mag.dtype == np.float64 and spec.n_fft == 64
    assert spec.phase is None and spec.length is None and spec.waveform is None
    with pytest.raises(SpecblurError, match="no phase"):
        spec.to_audio(spec.mag)

    cases = {"three_d.npy": np.ones((2, 3, 4)), "cplx.npy": np.ones((3, 4), complex),
             "inf.npy": np.array([[1.0, np.inf]]), "neg.npy": -np.ones((3, 4))}
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(SpecblurError, match=name):
            Spectrogram.from_npy(tmp_path / name)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(SpecblurError, match="junk.npy"):
        Spectrogram.from_npy(tmp_path / "junk.npy")
    with pytest.raises(SpecblurError, match="gone.npy"):
        Spectrogram.from_npy(tmp_path / "gone.npy")
