"""Φ = the pretrained GE2E speaker encoder shipped inside the ``resemblyzer`` wheel.

The network is rebuilt here in PyTorch and its weights are read from
``resemblyzer/pretrained.pt`` (Apache-2.0), found with :func:`importlib.util.find_spec`
so that ``resemblyzer`` itself (whose import pulls in ``webrtcvad``) is never imported.

Architecture, as in ``resemblyzer.VoiceEncoder`` and ``resemblyzer.audio``:

1. the power spectrogram ``Y**2`` (16 kHz, ``n_fft`` 400 = 25 ms, hop 160 = 10 ms,
   periodic Hann, centred frames with zero padding: the ``librosa.feature.melspectrogram``
   defaults resemblyzer calls) through librosa's 40-band Slaney mel filterbank, with no
   logarithm, laid out frames × mels;
2. a 3-layer LSTM with 256 units, run once over all the utterance's frames (not over
   1.6 s partial windows, and with no silence trimming);
3. the last layer's final hidden state, a linear layer 256 → 256, ReLU, L2 normalisation.

The output is the 256-d embedding, returned as shape ``(256, 1)`` (dimension first, one
"frame"). The VJP comes from torch autograd. Torch is imported only when the model is
built, and uses as many threads as Numba's kernels (the process's share of the cores).

On a GPU (:meth:`SpeakerEncoder.to_device`, which ``fit(..., device="cuda")`` calls) the
network runs there and the model takes device arrays too (``supports_device``): a numba
device array, or anything with ``__cuda_array_interface__``, becomes a torch tensor with
``torch.as_tensor(Y, device="cuda")``, which reads the same GPU memory (no copy to the
host), and the answers are torch CUDA tensors (float64), which the caller wraps again
with ``numba.cuda.as_cuda_array``. Host arrays in give host arrays out, as on the CPU.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .errors import SpecblurError
from .schema import SPEAKER_ENCODER_INPUT

__all__ = ["SpeakerEncoder", "INPUT", "weights_path", "missing_requirements"]

# The input settings the encoder consumes (resemblyzer.hparams).
INPUT = SPEAKER_ENCODER_INPUT
N_MELS = 40
HIDDEN = 256
EMBEDDING = 256
LAYERS = 3
DTYPES = ("float32", "float64")

INSTALL_HINT = ("pip install 'specblur[speaker]' && pip install --no-deps resemblyzer")


def weights_path() -> Path | None:
    """Path of ``resemblyzer/pretrained.pt``, or None when resemblyzer is not installed."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    return None


def missing_requirements() -> str | None:
    """A message naming what the encoder lacks (torch, the weights), or None."""
    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append("PyTorch")
    if weights_path() is None:
        missing.append("the resemblyzer weights (resemblyzer/pretrained.pt)")
    if not missing:
        return None
    return (f"model kind 'speaker_encoder' needs {' and '.join(missing)}; install with: "
            f"{INSTALL_HINT}")


class SpeakerEncoder:
    """The GE2E speaker encoder as a downstream model Φ.

    Parameters
    ----------
    sr, n_fft, n_bins : int
        The spectrogram's sample rate, DFT length and number of bins; they must be
        16000, 400 and 201.
    dtype : {'float32', 'float64'}
        Precision of the network (the weights are stored in float32).
    weights : str or os.PathLike, optional
        A checkpoint with resemblyzer's layout; default ``resemblyzer/pretrained.pt``.
    """

    supports_batch = True  # takes (B, K, T) arrays too
    supports_lengths = True  # and stacks of inputs of different lengths, zero-padded

    def __init__(self, sr, n_fft, n_bins, dtype="float32", weights=None):
        if (sr, n_fft) != (INPUT["sr"], INPUT["n_fft"]) or n_bins != INPUT["n_fft"] // 2 + 1:
            raise SpecblurError(
                f"model kind 'speaker_encoder' needs input sr={INPUT['sr']}, "
                f"n_fft={INPUT['n_fft']} (K={INPUT['n_fft'] // 2 + 1} bins), "
                f"hop={INPUT['hop']}; got sr={sr}, n_fft={n_fft}, K={n_bins}")
        if dtype not in DTYPES:
            raise SpecblurError(f"model.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if weights is None:
            problem = missing_requirements()
            if problem:
                raise SpecblurError(problem)
            weights = weights_path()
        try:
            import torch
        except ImportError:
            raise SpecblurError(missing_requirements() or "PyTorch is missing") from None
        import librosa

        import numba

        # the process's share of the cores, as for the kernels (one per worker with
        # --jobs equal to the cores); two threads were 1.2-1.3x faster than one with
        # --jobs 1 on 2 cores, for single clips and for batches alike
        torch.set_num_threads(max(1, numba.get_num_threads()))
        self.torch = torch
        self.device = torch.device("cpu")
        self.n_bins = n_bins
        self.dtype = getattr(torch, dtype)
        try:
            checkpoint = torch.load(str(weights), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SpecblurError(f"cannot read speaker encoder weights {weights}: {exc}") from exc
        state = checkpoint.get("model_state", checkpoint)
        self.lstm = torch.nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN, EMBEDDING)
        for prefix, module in (("lstm.", self.lstm), ("linear.", self.linear)):
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                raise SpecblurError(f"speaker encoder weights {weights}: {exc}") from None
            module.to(self.dtype).eval().requires_grad_(False)
        mel = librosa.filters.mel(sr=INPUT["sr"], n_fft=INPUT["n_fft"], n_mels=N_MELS,
                                  dtype=np.float64)
        self.mel = mel
        self._mel = torch.from_numpy(mel).to(self.dtype)  # (n_mels, K)
        self._cache = None

    @property
    def supports_device(self) -> bool:
        """True once the network is on a GPU: it then takes CUDA arrays (module docstring)."""
        return self.device.type == "cuda"

    def to_device(self, device: str = "cuda") -> "SpeakerEncoder":
        """Move the network to ``device`` (``"cuda"`` or ``"cpu"``); returns the model.

        ``"cuda"`` leaves it on the CPU where torch has no CUDA, and under numba's CUDA
        simulator (whose "device arrays" are host arrays): it then takes host copies.
        """
        from numba import config

        torch = self.torch
        if device != "cpu" and (config.ENABLE_CUDASIM or not torch.cuda.is_available()):
            return self
        self.device = torch.device(device)
        self.lstm.to(self.device)
        self.linear.to(self.device)
        self._mel = self._mel.to(self.device)
        self._cache = None
        return self

    def _check(self, Y):
        if not _on_gpu(Y):
            Y = np.asarray(Y)
        if Y.ndim not in (2, 3) or Y.shape[-2] != self.n_bins:
            raise SpecblurError(f"expected ({self.n_bins}, T) or (B, {self.n_bins}, T), "
                                f"got shape {tuple(Y.shape)}")
        return Y

    def _input(self, Y, gpu):
        """``Y`` as a ``(B, K, T)`` leaf tensor of the network's dtype on its device.

        A CUDA array is read in place by ``torch.as_tensor`` (``__cuda_array_interface__``)
        and copied on the GPU into the network's dtype, so autograd owns its input.
        """
        torch = self.torch
        if gpu:
            t = torch.as_tensor(Y, device=self.device)
            t = t if Y.ndim == 3 else t.unsqueeze(0)
            return t.to(dtype=self.dtype, copy=True)
        return torch.tensor(Y if Y.ndim == 3 else Y[None], dtype=self.dtype, device=self.device)

    def _embed(self, Yt, lengths=None):
        """Embeddings ``(B, 256)`` of a ``(B, K, T)`` magnitude tensor.

        With ``lengths``, item ``b`` is its first ``lengths[b]`` frames (see :meth:`_ragged`).
        """
        power = Yt * Yt
        # (B, T, n_mels), not log; the product keeps (B, K, T) order, so that its backward
        # pass hands the square a contiguous gradient
        mels = (self._mel @ power).transpose(1, 2).contiguous()
        if lengths is None:
            _, (hidden, _) = self.lstm(mels)
            last = hidden[-1]
        else:
            last = self._ragged(mels, lengths)
        raw = self.torch.relu(self.linear(last))
        return raw / self.torch.linalg.vector_norm(raw, dim=1, keepdim=True)

    def _ragged(self, mels, lengths):
        """The last layer's final state of each item of a zero-padded batch of lengths.

        The items run longest first, in segments between consecutive lengths: each
        segment is one LSTM call on the items that are still going, from the state the
        previous one left, and an item's state is read where its own frames end. So no
        padded frame is computed, and each call is the fast fused LSTM (a packed sequence
        gives the same values, but its backward pass is ~50x slower on CPU).
        """
        torch = self.torch
        order = np.argsort(-lengths, kind="stable")            # longest first
        ordered = lengths[order]
        in_order = (order == np.arange(len(order))).all()  # as fit_batch's stacks come
        x = mels if in_order else mels[torch.as_tensor(order)]
        finals, state, start = [], None, 0
        for end in sorted(set(ordered.tolist())):
            going = int((ordered >= end).sum())                # a prefix of the order
            if state is not None:
                state = (state[0][:, :going].contiguous(), state[1][:, :going].contiguous())
            _, state = self.lstm(x[:going, start:end], state)
            ending = int((ordered == end).sum())
            finals.append(state[0][-1, going - ending:going])
            start = end
        last = torch.cat(finals[::-1])                         # back to longest first
        return last if in_order else last[torch.as_tensor(np.argsort(order, kind="stable"))]

    def _lengths(self, Y, lengths):
        if lengths is None:
            return None
        lengths = np.asarray(lengths, dtype=np.int64)
        if Y.ndim != 3 or lengths.shape != (Y.shape[0],) or (lengths < 1).any() \
                or (lengths > Y.shape[2]).any():
            raise SpecblurError(f"lengths must give 1..T frames for each item of a (B, K, T) "
                                f"stack; got {lengths.tolist()} for shape {Y.shape}")
        return lengths

    def forward(self, Y: np.ndarray, lengths=None) -> np.ndarray:
        """The unit-norm embedding, shape ``(256, 1)`` (or ``(B, 256, 1)``), float64.

        ``lengths`` (for a ``(B, K, T)`` stack) gives each item's number of frames; the
        frames beyond it are ignored.
        """
        Y = self._check(Y)
        lengths = self._lengths(Y, lengths)
        batch = Y.ndim == 3
        gpu = _on_gpu(Y) and self.supports_device
        Yt = self._input(Y, gpu).requires_grad_(True)
        with self.torch.enable_grad():
            emb = self._embed(Yt, lengths)
        # Kept for the vjp that usually follows at the same Y (one forward per epoch); a
        # CUDA array is known by identity (the caller passes the same object, unchanged).
        self._cache = (Y if gpu else np.array(Y, copy=True), lengths, Yt, emb)
        if gpu:
            out = emb.detach().to(self.torch.float64)[..., None]
        else:
            out = emb.detach().cpu().numpy().astype(np.float64)[..., None]
        return out if batch else out[0]

    def _cached(self, Y, lengths, gpu):
        """The forward pass kept for ``Y`` (run again if it was for another input)."""
        cache, self._cache = self._cache, None
        if cache is not None and np.array_equal(cache[1], lengths):
            same = (cache[0] is Y) if gpu else (isinstance(cache[0], np.ndarray)
                                                and cache[0].shape == Y.shape
                                                and np.array_equal(cache[0], Y))
            if same:
                return cache
        self.forward(Y, lengths)
        cache, self._cache = self._cache, None
        return cache

    def vjp(self, Y: np.ndarray, g_out: np.ndarray, lengths=None) -> np.ndarray:
        """Pull `g_out` of shape ``(256, 1)`` (or ``(B, 256, 1)``) back to ``Y``'s shape.

        With ``lengths``, as in :meth:`forward`; frames beyond an item's length get 0.
        """
        Y = self._check(Y)
        lengths = self._lengths(Y, lengths)
        gpu = _on_gpu(Y) and self.supports_device
        cache = self._cached(Y, lengths, gpu)
        _, _, Yt, emb = cache
        torch = self.torch
        if _on_gpu(g_out) and self.supports_device:
            g = torch.as_tensor(g_out, device=self.device).reshape(emb.shape).to(self.dtype)
        else:
            g = torch.tensor(np.asarray(g_out, dtype=np.float64).reshape(emb.shape),
                             dtype=self.dtype, device=self.device)
        (grad,) = torch.autograd.grad(emb, Yt, g)
        grad = grad.to(torch.float64) if gpu else grad.cpu().numpy().astype(np.float64)
        return grad if Y.ndim == 3 else grad[0]


def _on_gpu(a) -> bool:
    """True for an array that lives on a GPU (it has ``__cuda_array_interface__``)."""
    try:
        return hasattr(a, "__cuda_array_interface__")
    except RuntimeError:  # a torch CUDA tensor that requires grad
        return True
