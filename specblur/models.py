"""Downstream models Φ of SPEC §7, each with an analytic vector–Jacobian product.

A model maps a magnitude spectrogram ``Y`` of shape ``(K, T)`` to outputs of shape
``(D, T)`` (dimension first, frames second) with ``forward(Y)``, and pulls a gradient
``g_out`` of that shape back to ``(K, T)`` with ``vjp(Y, g_out)``. The built-in models
also accept a leading batch axis, ``(B, K, T) -> (B, D, T)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ._checks import suggest, to_float, to_int, to_int_list, to_str
from .errors import SpecblurError
from .schema import SPEAKER_ENCODER_INPUT

__all__ = ["MODEL_KEYS", "MODEL_INPUT", "Identity", "LogMel", "MLP", "call_key",
           "check_model_input", "make_model", "validate_model_spec"]

ACTIVATIONS = ("tanh", "relu")

# kind -> {key: (type, default)}. A default of None for a float key means "optional";
# for the python kind's `factory` it means "required". The python kind accepts extra keys.
MODEL_KEYS = {
    "identity": {},
    "logmel": {
        "n_mels": (int, 40),
        "fmin": (float, 0.0),
        "fmax": (float, None),
        "eps": (float, 1e-6),
    },
    "mlp": {
        "n_mels": (int, 40),
        "hidden": (list, [64]),
        "out": (int, 16),
        "activation": (str, "tanh"),
        "eps": (float, 1e-6),
        "fmin": (float, 0.0),
        "fmax": (float, None),
    },
    "python": {"factory": (str, None)},
    # The pretrained GE2E speaker encoder of resemblyzer (specblur.speaker); needs torch.
    "speaker_encoder": {"dtype": (str, "float32")},
}

# Input settings a model kind consumes: the spectrogram the sweep learns on must be the
# one the model was trained on, so a sweep whose input differs is rejected before it runs.
MODEL_INPUT = {
    "speaker_encoder": SPEAKER_ENCODER_INPUT,
}

# Keyword arguments make_model passes to a plug-in factory itself.
_FACTORY_ARGS = ("sr", "n_fft", "n_bins", "seed")


_CASTS = {int: to_int, float: to_float, str: to_str, list: to_int_list}


def _check_range(out, kind):
    def need(cond, key, what):
        if not cond:
            raise SpecblurError(f"model.{key} must be {what}, got {out[key]!r}")

    if kind in ("logmel", "mlp"):
        need(out["n_mels"] >= 1, "n_mels", "at least 1")
        need(out["eps"] > 0, "eps", "positive")
        need(out["fmin"] >= 0, "fmin", "non-negative")
        if out["fmax"] is not None:
            need(out["fmax"] > out["fmin"], "fmax", f"greater than fmin={out['fmin']}")
    if kind == "mlp":
        need(out["out"] >= 1, "out", "at least 1")
        need(all(h >= 1 for h in out["hidden"]), "hidden", "a list of positive integers")
        if out["activation"] not in ACTIVATIONS:
            raise SpecblurError(
                f"model.activation {out['activation']!r} is not one of "
                f"{', '.join(ACTIVATIONS)}{suggest(out['activation'], ACTIVATIONS)}")
    if kind == "speaker_encoder" and out["dtype"] not in ("float32", "float64"):
        raise SpecblurError(
            f"model.dtype must be one of float32, float64, got {out['dtype']!r}"
            f"{suggest(out['dtype'], ('float32', 'float64'))}")
    if kind == "python":
        factory = out["factory"]
        module, _, attr = factory.partition(":")
        if not module or not attr:
            raise SpecblurError(
                f"model.factory must look like 'package.module:function', got {factory!r}")
        clash = [k for k in _FACTORY_ARGS if k in out]
        if clash:
            raise SpecblurError(
                f"model key(s) {', '.join(clash)} are passed to the factory by specblur "
                "and cannot be set in the model spec")


def _check_plain(value, name):
    """A plug-in model's own key must hold what JSON holds (the run id is the JSON of the
    settings): numbers, text, true/false, null, lists and mappings with text keys."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{name}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecblurError(f"{name}: keys must be text, got {key!r}; quote it")
            _check_plain(item, f"{name}.{key}")
        return
    what = f"{value!r} ({type(value).__name__})"
    if hasattr(value, "isoformat"):  # YAML reads 2024-01-01 as a date
        what = f"the {type(value).__name__} {value}; quote it ('{value}') to pass it as text"
    raise SpecblurError(f"{name} must be a number, text, true/false, a list or a mapping, "
                        f"got {what}")


def validate_model_spec(spec: Mapping | str) -> dict:
    """Check a model spec and fill in its defaults.

    Parameters
    ----------
    spec : Mapping or str
        A mapping with ``kind`` and that kind's keys (see `MODEL_KEYS`), or a bare kind
        name. Floats may be given as strings such as ``'1e-6'``.

    Returns
    -------
    dict
        A new dict with ``kind`` first, every declared key present, and values cast to
        their declared types. A ``python`` spec keeps its extra keys unchanged.

    Raises
    ------
    SpecblurError
        For a missing or unknown kind, an unknown key (naming the closest valid one), a
        value of the wrong type or out of range, or an unknown activation.
    """
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise SpecblurError(f"model must be a mapping with a 'kind' key, got {spec!r}")
    kinds = ", ".join(MODEL_KEYS)
    if "kind" not in spec:
        raise SpecblurError(f"model has no 'kind'; valid kinds are: {kinds}")
    kind = spec["kind"]
    if not isinstance(kind, str) or kind not in MODEL_KEYS:
        raise SpecblurError(
            f"unknown model kind {kind!r}; valid kinds are: {kinds}{suggest(kind, MODEL_KEYS)}")
    declared = MODEL_KEYS[kind]
    out = {"kind": kind}
    for key, value in spec.items():
        if key == "kind":
            continue
        if key in declared:
            typ, default = declared[key]
            if value is None and default is None and typ is float:
                out[key] = None
            else:
                out[key] = _CASTS[typ](value, f"model.{key}")
        elif kind == "python":
            _check_plain(value, f"model.{key}")
            out[key] = value
        else:
            valid = ["kind", *declared]
            raise SpecblurError(
                f"unknown key model.{key} for model kind {kind!r}; valid keys: "
                f"{', '.join(valid)}{suggest(key, valid)}")
    for key, (_, default) in declared.items():
        if key not in out:
            if default is None and kind == "python":
                raise SpecblurError(f"model kind 'python' needs the key model.{key}")
            out[key] = list(default) if isinstance(default, list) else default
    _check_range(out, kind)
    return out


def check_model_input(spec: Mapping | str, *, sr: int, n_fft: int, hop: int | None = None,
                      where: str | None = None) -> None:
    """Check that the input settings give the spectrogram a model kind consumes.

    Parameters
    ----------
    spec : Mapping or str
        A model spec (only its ``kind`` is read).
    sr, n_fft : int
        The input's sample rate and DFT length.
    hop : int, optional
        The input's hop; not checked when None (a bare array has none).
    where : str, optional
        Prefix for the message (a sweep file).

    Raises
    ------
    SpecblurError
        Naming the input settings the model needs, for a kind listed in `MODEL_INPUT`
        whose needs differ from the input's; and, for ``speaker_encoder``, when torch or
        the resemblyzer weights are not installed.
    """
    kind = spec if isinstance(spec, str) else spec.get("kind")
    prefix = f"{where}: " if where else ""
    fmax = None if isinstance(spec, str) else spec.get("fmax")
    if kind in ("logmel", "mlp") and fmax is not None and float(fmax) > sr / 2:
        raise SpecblurError(f"{prefix}model.fmax={fmax} is above the Nyquist frequency "
                            f"{sr / 2:g} of the input (sr={sr})")
    needs = MODEL_INPUT.get(kind)
    if needs is None:
        return
    have = {"sr": sr, "n_fft": n_fft, "hop": hop}
    wrong = [k for k in needs if have[k] is not None and int(have[k]) != needs[k]]
    if wrong:
        want = ", ".join(f"{k}: {v}" for k, v in needs.items())
        got = ", ".join(f"{k}={have[k]}" for k in wrong)
        raise SpecblurError(
            f"{prefix}model kind {kind!r} consumes its own spectrogram and needs the input "
            f"settings {{{want}}}; got {got}. Set them under 'input:'")
    if kind == "speaker_encoder":
        from .speaker import missing_requirements

        problem = missing_requirements()
        if problem:
            raise SpecblurError(prefix + problem)


def call_key(model, T: int, alone: object) -> tuple:
    """Which runs of a lockstep batch share one call of ``model`` (``fit_batch``).

    Runs with equal keys are called together: every run of a model with
    ``supports_lengths = True``, the runs of equal length ``T`` of one with
    ``supports_batch = True``, and otherwise each run alone (``alone`` names the run).
    """
    if getattr(model, "supports_batch", False) is not True:
        return (alone,)
    if getattr(model, "supports_lengths", False) is True:
        return (id(model),)
    return (id(model), T)


class Identity:
    """Φ(Y) = Y.

    With ``device="cuda"`` it takes and returns the GPU driver's device arrays
    (``supports_device``), so its epochs need no copies to the host.
    """

    supports_batch = True  # takes (B, K, T) arrays too
    supports_device = True  # and device arrays (returned as they are)

    def forward(self, Y: np.ndarray) -> np.ndarray:
        """Return `Y` unchanged, as shape ``(K, T)``."""
        return Y

    def vjp(self, Y: np.ndarray, g_out: np.ndarray) -> np.ndarray:
        """Return `g_out` unchanged."""
        return g_out


def _matmul(A, X):
    """``A @ X`` for a sparse `A` and `X` of shape ``(..., K, T)``."""
    if X.ndim == 2:
        return A @ X
    moved = np.moveaxis(X, -2, 0)
    out = A @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(out.reshape((A.shape[0],) + moved.shape[1:]), 0, -2)


class LogMel:
    """Φ(Y) = log(M @ Y + eps) with `M` librosa's Slaney mel filterbank.

    Parameters
    ----------
    sr, n_fft : int
        Sample rate and DFT length of the spectrogram.
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Frequency range in Hz; ``fmax=None`` means ``sr / 2``.
    eps : float
        Offset inside the logarithm.
    """

    supports_batch = True  # takes (B, K, T) arrays too

    def __init__(self, sr, n_fft, n_mels=40, fmin=0.0, fmax=None, eps=1e-6):
        import librosa  # slow to import; only mel-based models need it

        if fmax is not None and fmax > sr / 2:
            raise SpecblurError(f"model.fmax={fmax} is above the Nyquist frequency {sr / 2}")
        self.mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                       fmax=fmax, dtype=np.float64)
        self.eps = float(eps)
        self.n_bins = self.mel.shape[1]
        # Each bin feeds at most two Slaney filters: sparse products are ~50x cheaper.
        self._mel = sp.csr_array(self.mel)
        self._mel_t = sp.csr_array(self.mel.T)

    def _check(self, Y):
        if Y.shape[-2] != self.n_bins:
            raise SpecblurError(f"expected {self.n_bins} frequency bins, got shape {Y.shape}")

    def forward(self, Y: np.ndarray) -> np.ndarray:
        """Log-mel features, shape ``(n_mels, T)``."""
        self._check(Y)
        Z = _matmul(self._mel, Y)
        Z += self.eps
        return np.log(Z, out=Z)

    def vjp(self, Y: np.ndarray, g_out: np.ndarray) -> np.ndarray:
        """Pull `g_out` of shape ``(n_mels, T)`` back to ``(K, T)``."""
        self._check(Y)
        Z = _matmul(self._mel, Y)
        Z += self.eps
        np.divide(g_out, Z, out=Z)
        return _matmul(self._mel_t, Z)


class MLP:
    """Fixed random per-frame MLP on log-mel features.

    Weights of each layer are drawn from ``numpy.random.default_rng(seed)`` in layer
    order, first the ``(fan_out, fan_in)`` weight matrix from N(0, 1/fan_in), then the
    bias from 0.01·N(0, 1). The last layer has no activation.

    Parameters
    ----------
    sr, n_fft : int
        Sample rate and DFT length of the spectrogram.
    n_mels, fmin, fmax, eps
        Log-mel settings, as for `LogMel`.
    hidden : list of int
        Hidden layer widths.
    out : int
        Output dimension.
    activation : {'tanh', 'relu'}
        Hidden-layer activation.
    seed : int
        Seed of the weights.
    """

    supports_batch = True  # takes (B, K, T) arrays too

    def __init__(self, sr, n_fft, n_mels=40, hidden=(64,), out=16, activation="tanh",
                 eps=1e-6, fmin=0.0, fmax=None, seed=0):
        if activation not in ACTIVATIONS:
            raise SpecblurError(
                f"model.activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.logmel = LogMel(sr, n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, eps=eps)
        self.activation = activation
        rng = np.random.default_rng(seed)
        sizes = [n_mels, *hidden, out]
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            self.weights.append(rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in))
            self.biases.append(0.01 * rng.standard_normal((fan_out, 1)))

    def _layers(self, F):
        """Forward through the layers, returning the hidden activations and the output."""
        acts = []
        h = F
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = W @ h
            z += b
            if i < last:
                if self.activation == "tanh":
                    np.tanh(z, out=z)
                else:
                    np.maximum(z, 0.0, out=z)
                acts.append(z)
            h = z
        return acts, h

    def forward(self, Y: np.ndarray) -> np.ndarray:
        """Network outputs, shape ``(out, T)``."""
        return self._layers(self.logmel.forward(Y))[1]

    def vjp(self, Y: np.ndarray, g_out: np.ndarray) -> np.ndarray:
        """Pull `g_out` of shape ``(out, T)`` back to ``(K, T)``."""
        acts, _ = self._layers(self.logmel.forward(Y))
        g = g_out
        for i in range(len(self.weights) - 1, -1, -1):
            g = self.weights[i].T @ g
            if i > 0:
                a = acts[i - 1]
                if self.activation == "tanh":
                    g *= 1.0 - a * a
                else:
                    g *= a > 0
        return self.logmel.vjp(Y, g)


def _load_factory(factory):
    module_name, _, attr = factory.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecblurError(
            f"model factory {factory!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecblurError(
                f"model factory {factory!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise SpecblurError(f"model factory {factory!r} is not callable")
    return obj


def make_model(spec: Mapping | str, *, sr: int, n_fft: int, n_bins: int, seed: int = 0):
    """Build the downstream model Φ described by `spec`.

    Parameters
    ----------
    spec : Mapping or str
        Model spec, checked with `validate_model_spec`.
    sr : int
        Sample rate of the spectrogram.
    n_fft : int
        DFT length; mel-based models need ``n_bins == n_fft // 2 + 1``.
    n_bins : int
        Number of frequency bins K.
    seed : int, optional
        Seed for models with random weights; passed on to plug-in factories.

    Returns
    -------
    object
        A model with ``forward(Y) -> out`` and ``vjp(Y, g_out) -> g_Y``.
    """
    spec = validate_model_spec(spec)
    kind = spec.pop("kind")
    if kind == "identity":
        return Identity()
    if kind == "python":
        factory = spec.pop("factory")
        make = _load_factory(factory)
        try:
            model = make(sr=sr, n_fft=n_fft, n_bins=n_bins, seed=seed, **spec)
        except SpecblurError:
            raise
        except Exception as exc:
            raise SpecblurError(f"model factory {factory!r} failed: {exc!r}") from exc
        missing = [name for name in ("forward", "vjp")
                   if not callable(getattr(model, name, None))]
        if missing:
            raise SpecblurError(
                f"model factory {factory!r} returned {type(model).__name__}, which has no "
                f"callable {' or '.join(missing)}")
        return model
    if kind == "speaker_encoder":
        from .speaker import SpeakerEncoder

        check_model_input(kind, sr=sr, n_fft=n_fft)
        return SpeakerEncoder(sr, n_fft, n_bins, **spec)
    if n_bins != n_fft // 2 + 1:
        raise SpecblurError(
            f"model kind {kind!r} needs n_bins == n_fft // 2 + 1, got n_bins={n_bins} "
            f"with n_fft={n_fft}")
    if kind == "logmel":
        return LogMel(sr, n_fft, **spec)
    return MLP(sr, n_fft, seed=seed, **spec)
