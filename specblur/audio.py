"""Audio input and output, and the STFT of SPEC §2.

The STFT uses a periodic Hann window of ``n_fft`` samples, the plain (unscaled) DFT sum,
and frame ``t`` centred on sample ``t * hop`` with zeros outside the signal, so that
``K = n_fft // 2 + 1`` and ``T = 1 + len(y) // hop`` (librosa's ``center=True`` with
constant padding).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from ._checks import to_positive_int
from ._io import atomic_write
from .errors import SpecblurError
from .schema import HOP, N_FFT, SR

__all__ = ["Spectrogram", "istft", "load_audio", "load_input", "resynthesize", "stft", "write_wav"]


def _check_positive_int(value, name):
    return to_positive_int(value, name, strict_type=True)


def _check_frames(n_fft, hop):
    n_fft = _check_positive_int(n_fft, "n_fft")
    hop = _check_positive_int(hop, "hop")
    if n_fft < 2:
        raise SpecblurError(f"n_fft must be at least 2, got {n_fft}")
    return n_fft, hop


@lru_cache(maxsize=16)
def _stft_plan(n_fft, hop):
    from scipy.signal import ShortTimeFFT, get_window  # slow to import (~1.5 s)

    window = get_window("hann", n_fft)  # periodic ("fftbins=True") by default
    # phase_shift=None: each frame is the plain DFT of its own slice, as in SPEC §2.
    # ShortTimeFFT's default (phase_shift=0) references the phase to the window centre.
    plan = ShortTimeFFT(window, hop, fs=1.0, fft_mode="onesided", scale_to=None,
                        phase_shift=None)
    return plan, window


def load_audio(path: str | os.PathLike, sr: int) -> np.ndarray:
    """Read an audio file as a mono float64 waveform at the rate `sr`.

    Parameters
    ----------
    path : str or os.PathLike
        A file that soundfile can read (WAV, FLAC, OGG, ...).
    sr : int
        Target sample rate in Hz. The audio is resampled with
        :func:`scipy.signal.resample_poly` if the file's rate differs.

    Returns
    -------
    numpy.ndarray
        1-D float64 waveform. Integer (PCM) files map to [-1, 1]; samples of float files
        and the small overshoot of resampling are passed through unclipped.

    Raises
    ------
    SpecblurError
        If the file is missing, unreadable or corrupt, holds no samples, or holds
        non-finite samples.
    """
    sr = _check_positive_int(sr, "sr")
    path = Path(path)
    if not path.is_file():
        raise SpecblurError(f"audio file not found: {path}")
    try:
        data, file_sr = sf.read(path, dtype="float64", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        raise SpecblurError(f"cannot read audio file {path}: {exc}") from exc
    if data.size == 0:
        raise SpecblurError(f"audio file {path} holds no samples")
    if not np.all(np.isfinite(data)):
        raise SpecblurError(f"audio file {path} holds non-finite samples")
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if file_sr != sr:
        from scipy.signal import resample_poly

        g = gcd(int(file_sr), sr)
        y = resample_poly(y, sr // g, int(file_sr) // g)
        if y.size == 0:
            raise SpecblurError(f"audio file {path} is too short to resample to {sr} Hz")
    return np.ascontiguousarray(y, dtype=np.float64)


def stft(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex STFT of SPEC §2.

    Parameters
    ----------
    y : array_like
        1-D real waveform.
    n_fft : int
        Window and DFT length.
    hop : int
        Frame step in samples.

    Returns
    -------
    numpy.ndarray
        Complex128 array of shape ``(n_fft // 2 + 1, 1 + len(y) // hop)``. Frame ``t`` is
        ``sum_n y[t*hop - n_fft//2 + n] * w[n] * exp(-2j*pi*k*n/n_fft)`` with ``w`` the
        periodic Hann window and ``y`` zero outside the signal.
    """
    n_fft, hop = _check_frames(n_fft, hop)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise SpecblurError(f"stft expects a 1-D waveform, got shape {y.shape}")
    n_frames = 1 + y.size // hop
    min_len = n_fft - n_fft // 2  # ShortTimeFFT refuses shorter input
    if y.size < min_len:
        y = np.concatenate([y, np.zeros(min_len - y.size)])
    plan, _ = _stft_plan(n_fft, hop)
    return plan.stft(y, p0=0, p1=n_frames)


def istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Invert :func:`stft` by least-squares weighted overlap-add.

    Each frame is inverse-transformed, weighted by the window and overlap-added; every
    sample is then divided by the sum of squared windows that cover it. For a spectrogram
    made by :func:`stft` this reproduces the waveform to rounding. (ShortTimeFFT's dual
    window assumes frames before ``t = 0`` too, which SPEC §2 does not keep.)

    Parameters
    ----------
    spec : array_like
        Complex array of shape ``(n_fft // 2 + 1, T)``.
    n_fft, hop : int
        As given to :func:`stft`.
    length : int
        Number of output samples. Samples that no frame covers are zero.

    Returns
    -------
    numpy.ndarray
        1-D float64 waveform of `length` samples.
    """
    n_fft, hop = _check_frames(n_fft, hop)
    length = int(length)
    if length < 0:
        raise SpecblurError(f"length must be non-negative, got {length}")
    spec = np.asarray(spec)
    if spec.ndim != 2 or spec.shape[0] != n_fft // 2 + 1:
        raise SpecblurError(
            f"istft expects shape ({n_fft // 2 + 1}, T) for n_fft={n_fft}, got {spec.shape}")
    _, window = _stft_plan(n_fft, hop)
    n_frames = spec.shape[1]
    frames = np.fft.irfft(spec, n=n_fft, axis=0)  # (n_fft, T)
    frames *= window[:, None]
    # Output index of frame sample n in frame t, shifted by n_fft//2 so it is >= 0.
    idx = np.arange(n_fft)[:, None] + hop * np.arange(n_frames)[None, :]
    size = max(n_fft + hop * (n_frames - 1), n_fft // 2 + length)
    y = np.bincount(idx.ravel(), weights=frames.ravel(), minlength=size)
    wss = np.bincount(idx.ravel(), weights=np.repeat(window**2, n_frames), minlength=size)
    y = y[n_fft // 2: n_fft // 2 + length]
    wss = wss[n_fft // 2: n_fft // 2 + length]
    covered = wss > np.finfo(np.float64).tiny
    out = np.zeros(length)
    np.divide(y, wss, out=out, where=covered)
    return out


def resynthesize(mag: np.ndarray, phase: np.ndarray, n_fft: int, hop: int,
                 length: int) -> np.ndarray:
    """Waveform from a magnitude spectrogram and a phase, ``istft(mag * exp(1j*phase))``.

    Parameters
    ----------
    mag, phase : array_like
        Real arrays of shape ``(n_fft // 2 + 1, T)``.
    n_fft, hop, length : int
        As for :func:`istft`.

    Returns
    -------
    numpy.ndarray
        1-D float64 waveform of `length` samples.
    """
    mag = np.asarray(mag, dtype=np.float64)
    phase = np.asarray(phase, dtype=np.float64)
    if mag.shape != phase.shape:
        raise SpecblurError(f"magnitude shape {mag.shape} differs from phase shape {phase.shape}")
    return istft(mag * np.exp(1j * phase), n_fft, hop, length)


def write_wav(path: str | os.PathLike, y: np.ndarray, sr: int) -> Path:
    """Write a mono waveform as a 32-bit float WAV file, atomically.

    Samples are not clipped. If the peak magnitude exceeds 1 the whole waveform is
    scaled down to a peak of 1; otherwise it is written unchanged. The write is atomic
    (see :func:`specblur._io.atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    y : array_like
        1-D finite waveform.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    sr = _check_positive_int(sr, "sr")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise SpecblurError(f"write_wav {path}: expected a 1-D waveform, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise SpecblurError(f"write_wav {path}: waveform holds non-finite samples")
    peak = np.max(np.abs(y)) if y.size else 0.0
    if peak > 1.0:
        y = y / peak
    y = y.astype(np.float32)
    buffer = io.BytesIO()  # encoded in memory, so that a full disk raises an OSError with
    sf.write(buffer, y, sr, format="WAV", subtype="FLOAT")  # its errno, not libsndfile's
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


@dataclass
class Spectrogram:
    """A magnitude spectrogram with what is needed to turn it back into audio.

    Attributes
    ----------
    mag : numpy.ndarray
        ``(K, T)`` float64 magnitude.
    phase : numpy.ndarray or None
        ``(K, T)`` phase in radians, or None for a ``.npy`` input.
    sr, n_fft, hop : int
        Sample rate and STFT settings.
    length : int or None
        Waveform length in samples, or None for a ``.npy`` input.
    waveform : numpy.ndarray or None
        The waveform as analysed (mono, at `sr`, after any normalisation).
    """

    mag: np.ndarray
    phase: np.ndarray | None
    sr: int
    n_fft: int
    hop: int
    length: int | None = None
    waveform: np.ndarray | None = None

    @classmethod
    def from_audio(cls, path: str | os.PathLike, sr: int = SR, n_fft: int = N_FFT, hop: int = HOP,
                   normalize_dbfs: float | None = None) -> "Spectrogram":
        """Analyse an audio file.

        Parameters
        ----------
        path : str or os.PathLike
            Audio file, read with :func:`load_audio`.
        sr, n_fft, hop : int
            Sample rate and STFT settings.
        normalize_dbfs : float, optional
            If given, the waveform is scaled so that its RMS is this level in dBFS
            (``20 * log10(rms)``) before the STFT.

        Returns
        -------
        Spectrogram
        """
        y = load_audio(path, sr)
        if normalize_dbfs is not None:
            try:
                target = 10.0 ** (float(normalize_dbfs) / 20.0)
            except (TypeError, ValueError) as exc:
                raise SpecblurError(
                    f"normalize_dbfs must be a number, got {normalize_dbfs!r}") from exc
            rms = np.sqrt(np.mean(y * y))
            if rms == 0.0:
                raise SpecblurError(f"audio file {path} is silent and cannot be normalised")
            y = y * (target / rms)
        spec = stft(y, n_fft, hop)
        return cls(mag=np.abs(spec), phase=np.angle(spec), sr=int(sr), n_fft=int(n_fft),
                   hop=int(hop), length=y.size, waveform=y)

    @classmethod
    def from_npy(cls, path: str | os.PathLike, *, sr: int = SR, n_fft: int | None = None,
                 hop: int = HOP) -> "Spectrogram":
        """Load a magnitude spectrogram saved with :func:`numpy.save`.

        Parameters
        ----------
        path : str or os.PathLike
            ``.npy`` file holding a real, finite, non-negative ``(K, T)`` array.
        sr : int, optional
            Sample rate the spectrogram was made at (used by mel-based models).
        n_fft : int, optional
            DFT length; defaults to ``2 * (K - 1)`` and must satisfy
            ``n_fft // 2 + 1 == K``.
        hop : int, optional
            Frame step, kept for reference.

        Returns
        -------
        Spectrogram
            With ``phase``, ``length`` and ``waveform`` set to None.
        """
        path = Path(path)
        if not path.is_file():
            raise SpecblurError(f"spectrogram file not found: {path}")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise SpecblurError(f"cannot read spectrogram file {path}: {exc}") from exc
        if not isinstance(arr, np.ndarray):
            raise SpecblurError(f"spectrogram file {path} holds an archive, not one array")
        if arr.ndim != 2:
            raise SpecblurError(
                f"spectrogram file {path}: expected a 2-D (K, T) array, got shape {arr.shape}")
        if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating)
                                         or np.issubdtype(arr.dtype, np.integer)):
            raise SpecblurError(
                f"spectrogram file {path}: expected a real dtype, got {arr.dtype}")
        if arr.size == 0:
            raise SpecblurError(f"spectrogram file {path} is empty (shape {arr.shape})")
        mag = arr.astype(np.float64)
        if not np.all(np.isfinite(mag)):
            raise SpecblurError(f"spectrogram file {path} holds non-finite values")
        if np.any(mag < 0):
            raise SpecblurError(f"spectrogram file {path} holds negative magnitudes")
        n_bins = mag.shape[0]
        if n_fft is None:
            n_fft = max(2 * (n_bins - 1), 2)
        n_fft, hop = _check_frames(n_fft, hop)
        if n_fft // 2 + 1 != n_bins:
            raise SpecblurError(
                f"spectrogram file {path} has {n_bins} bins, but n_fft={n_fft} "
                f"gives {n_fft // 2 + 1}")
        return cls(mag=mag, phase=None, sr=_check_positive_int(sr, "sr"), n_fft=n_fft,
                   hop=hop, length=None, waveform=None)

    def to_audio(self, mag: np.ndarray) -> np.ndarray:
        """Resynthesise a (blurred) magnitude with the stored phase.

        Parameters
        ----------
        mag : array_like
            ``(K, T)`` magnitude, the shape of ``self.mag``.

        Returns
        -------
        numpy.ndarray
            Waveform of ``self.length`` samples at ``self.sr``.
        """
        if self.phase is None or self.length is None:
            raise SpecblurError(
                "this spectrogram has no phase (it was loaded from a .npy file), "
                "so it cannot be turned into audio")
        mag = np.asarray(mag)
        if mag.shape != self.phase.shape:
            raise SpecblurError(
                f"magnitude shape {mag.shape} differs from the spectrogram's {self.phase.shape}")
        return resynthesize(mag, self.phase, self.n_fft, self.hop, self.length)

    def write_audio(self, path: str | os.PathLike, mag: np.ndarray) -> Path:
        """Resynthesise ``mag`` with the stored phase and write it as a WAV file.

        Parameters
        ----------
        path : str or os.PathLike
            Destination ``.wav`` file, written atomically.
        mag : array_like
            ``(K, T)`` magnitude, for example a snapshot's ``Y``.

        Returns
        -------
        pathlib.Path
        """
        return write_wav(path, self.to_audio(mag), self.sr)


def load_input(inp: Mapping) -> Spectrogram:
    """The spectrogram described by a sweep's resolved ``input`` mapping.

    ``inp`` has ``audio`` or ``spectrogram`` (a file path), ``sr``, ``n_fft``, ``hop`` and
    ``normalize_dbfs`` (audio only).
    """
    if inp.get("audio"):
        return Spectrogram.from_audio(inp["audio"], sr=inp["sr"], n_fft=inp["n_fft"],
                                      hop=inp["hop"], normalize_dbfs=inp["normalize_dbfs"])
    return Spectrogram.from_npy(inp["spectrogram"], sr=inp["sr"], n_fft=inp["n_fft"],
                                hop=inp["hop"])
