"""The one set of value casts and checks, shared by settings, models, audio, segments and sweeps.

Each function takes the value and ``where``, the name that a message gives it (a key, a
file and key, an argument), and raises :class:`~specblur.errors.SpecblurError` naming it.
Strings such as ``'1e-6'`` are read as numbers, since YAML 1.1 reads them as strings.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real

from .errors import SpecblurError


def suggest(key: object, valid: Iterable) -> str:
    """A ``"; did you mean 'x'?"`` hint for a mistyped ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def to_float(value: object, where: str) -> float:
    """Cast a finite number, or a string such as ``'1e-6'``, to float."""
    if _is_bool(value) or not isinstance(value, (Real, str)):
        raise SpecblurError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise SpecblurError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SpecblurError(f"{where} must be finite, got {value!r}")
    return number


def to_int(value: object, where: str) -> int:
    """Cast an integer, an integral float (``1e4``) or such a string; reject others."""
    if _is_bool(value):
        raise SpecblurError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, Integral):
        return int(value)
    number = to_float(value, where)
    if not number.is_integer():
        raise SpecblurError(f"{where} must be an integer, got {value!r}")
    return int(number)


def to_positive_int(value: object, where: str, *, strict_type: bool = False) -> int:
    """An integer >= 1. With ``strict_type`` only integer types are accepted (no ``4.0``)."""
    if strict_type and (_is_bool(value) or not isinstance(value, Integral)):
        raise SpecblurError(f"{where} must be a positive integer, got {value!r}")
    number = to_int(value, where)
    if number < 1:
        raise SpecblurError(f"{where} must be a positive integer, got {value!r}")
    return number


def to_choice(value: object, choices: Iterable[str], where: str) -> str:
    """Check that ``value`` is one of the strings ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise SpecblurError(
            f"{where} must be one of {', '.join(choices)}; got {value!r}{suggest(value, choices)}")
    return value


def to_str(value: object, where: str) -> str:
    """Check that ``value`` is a string."""
    if not isinstance(value, str):
        raise SpecblurError(f"{where} must be a string, got {value!r}")
    return value


def to_int_list(value: object, where: str) -> list[int]:
    """A list of integers; a bare integer is a list of one."""
    items = [value] if isinstance(value, Integral) and not _is_bool(value) else value
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
        raise SpecblurError(f"{where} must be a list of integers, got {value!r}")
    return [to_int(v, f"{where}[{i}]") for i, v in enumerate(items)]


def to_mapping(value: object, where: str, *, empty_ok: bool = True) -> dict:
    """A mapping; None reads as an empty one when ``empty_ok``."""
    if value is None and empty_ok:
        return {}
    if not isinstance(value, Mapping):
        raise SpecblurError(f"{where} must be a mapping, got {value!r}")
    return dict(value)


def check_keys(mapping: Mapping, valid: Iterable[str], where: str, what: str = "key") -> None:
    """Reject the first key of ``mapping`` not in ``valid``, naming the closest valid one."""
    valid = tuple(valid)
    for key in mapping:
        if key not in valid:
            raise SpecblurError(f"{where}: unknown {what} {key!r}{suggest(key, valid)}")
