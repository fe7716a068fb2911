"""The settings of one run (SPEC §8): their types, defaults and checks.

A run's settings are exactly the keyword arguments of :func:`specblur.fit`. The sweep
runner and ``fit`` both resolve them here, so one table decides what is valid.
"""
import difflib

import numpy as np

from .blur_api import MODES
from .errors import SpecblurError

PARAMS = ("raw", "relu", "softplus", "exp")
LAMBDA_ON = ("entropy", "mse")
ENTROPY_REDUCE = ("sum", "mean")
OPTIMIZERS = ("sgd", "adam")

# key -> (type or tuple of valid strings, default). snapshot_every defaults to epochs.
SETTINGS = {
    "m_init": (float, 1.0),
    "lam": (float, 1.0),
    "lambda_on": (LAMBDA_ON, "entropy"),
    "entropy_reduce": (ENTROPY_REDUCE, "sum"),
    "eps": (float, 1e-8),
    "mode": (MODES, "truncate"),
    "param": (PARAMS, "raw"),
    "optimizer": (OPTIMIZERS, "sgd"),
    "lr": (float, 1.0),
    "beta1": (float, 0.9),
    "beta2": (float, 0.999),
    "adam_eps": (float, 1e-8),
    "epochs": (int, 1000),
    "log_every": (int, 1),
    "snapshot_every": (int, None),
    "model": (dict, {"kind": "identity"}),
    "seed": (int, 0),
}
POSITIVE = ("epochs", "log_every", "snapshot_every")


def suggest(key, valid):
    """A ``"; did you mean 'x'?"`` hint for a mistyped ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def to_float(value, where):
    """Cast a finite number, or a string such as ``'1e-6'`` (YAML 1.1 reads those as strings)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating, str)):
        raise SpecblurError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise SpecblurError(f"{where} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise SpecblurError(f"{where} must be finite, got {value!r}")
    return number


def to_int(value, where):
    """Cast an integer, an integral float (``1e4``) or such a string; reject others."""
    if isinstance(value, (bool, np.bool_)):
        raise SpecblurError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = to_float(value, where)
    if not number.is_integer():
        raise SpecblurError(f"{where} must be an integer, got {value!r}")
    return int(number)


def to_choice(value, choices, where):
    """Check that ``value`` is one of the strings ``choices``."""
    if value not in choices:
        raise SpecblurError(
            f"{where} must be one of {', '.join(choices)}; got {value!r}{suggest(value, choices)}"
        )
    return value


def resolve(settings, where="settings"):
    """Fill in defaults, cast every value to its declared type and check it.

    Parameters
    ----------
    settings : mapping
        Any subset of the keys of ``SETTINGS``.
    where : str
        How messages name the source of the settings (a file, a run).

    Returns
    -------
    dict
        Every key of ``SETTINGS``, in its declared type.

    Raises
    ------
    SpecblurError
        Naming the first unknown key (with the closest valid one), wrong type or bad value.
    """
    from .models import validate_model_spec

    for key in settings:
        if key not in SETTINGS:
            raise SpecblurError(f"{where}: unknown setting {key!r}{suggest(key, SETTINGS)}")
    out = {}
    for key, (kind, default) in SETTINGS.items():
        value = settings.get(key, default)
        name = f"{where}: {key}"
        if value is None:
            out[key] = None
        elif kind is float:
            out[key] = to_float(value, name)
        elif kind is int:
            out[key] = to_int(value, name)
        elif kind is dict:
            if not isinstance(value, dict):
                raise SpecblurError(f"{name} must be a mapping with a 'kind', got {value!r}")
            try:
                out[key] = validate_model_spec(value)
            except SpecblurError as exc:
                raise SpecblurError(f"{where}: {exc}") from None
        else:
            out[key] = to_choice(value, kind, name)
        if key in POSITIVE and out[key] is not None and out[key] <= 0:
            raise SpecblurError(f"{name} must be a positive integer, got {value!r}")
    if out["snapshot_every"] is None:
        out["snapshot_every"] = out["epochs"]
    if out["param"] in ("softplus", "exp") and out["m_init"] <= 0:
        raise SpecblurError(f"{where}: m_init must be > 0 with param {out['param']!r}, got {out['m_init']}")
    for key, low, high in (("eps", 0.0, np.inf), ("adam_eps", 0.0, np.inf),
                           ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0)):
        if not low <= out[key] < high:
            raise SpecblurError(f"{where}: {key} must be in [{low:g}, {high:g}), got {out[key]}")
    if out["lr"] <= 0:
        raise SpecblurError(f"{where}: lr must be positive, got {out['lr']}")
    return out
