"""The settings of one run (SPEC §7-8): their types, defaults and checks.

A run's settings are exactly the keyword arguments of :func:`specblur.fit`. The sweep
runner and ``fit`` both resolve them here into a frozen :class:`Settings`, so one table
decides what is valid, and code reads ``settings.mode`` rather than a key of a loose dict.
:class:`Settings` is also a read-only mapping, so ``dict(settings)`` and
``fit(X, **settings)`` work.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Optional

from ._checks import check_keys, to_choice, to_float, to_int
from .errors import SpecblurError
from .kernels import MODES, PARAM_CODES
from .models import validate_model_spec

__all__ = ["ENTROPY_REDUCE", "ID_NEUTRAL", "ID_ONLY_WITH", "LAMBDA_ON", "MSE_NORM", "OPTIMIZERS",
           "PARAMS", "Param", "SETTINGS", "Settings", "check_device", "check_m_init",
           "check_scale_min", "resolve", "resolved_r_max"]

#: More updates than this is a typo, not a run (1e8 epochs of a 4 s clip take months).
MAX_EPOCHS = 10 ** 8
LAMBDA_ON = ("entropy", "mse")
ENTROPY_REDUCE = ("sum", "mean")
OPTIMIZERS = ("sgd", "adam")
MSE_NORM = ("none", "ref")
#: Settings added after the first release (SPEC §9). At their defaults they are left out of
#: the run id (:func:`specblur.sweep.config.make_run_id`), so older sweeps keep their ids.
ID_NEUTRAL = ("r_max", "tv", "tv_delta", "mse_norm", "scale_min", "scale_p")
#: Settings that mean nothing without another one: left out of the run id while that other
#: setting is None (``scale_p`` alone does not change a single-scale fit).
ID_ONLY_WITH = {"scale_p": "scale_min"}


class Param(enum.IntEnum):
    """Parameterisations of the radius (SPEC §7); the values are the objective kernels' codes."""

    RAW = PARAM_CODES["raw"]
    RELU = PARAM_CODES["relu"]
    SOFTPLUS = PARAM_CODES["softplus"]
    EXP = PARAM_CODES["exp"]
    SIGMOID = PARAM_CODES["sigmoid"]

    @classmethod
    def of(cls, name: str) -> "Param":
        """The member named ``name`` (``"raw"``, ``"relu"``, ...)."""
        return cls[name.upper()]

    @property
    def radius_is_m(self) -> bool:
        """True when ``r = m`` (raw and relu), so ``dr/dm = 1`` and no radius pass is needed."""
        return self in (Param.RAW, Param.RELU)

    @property
    def needs_positive_init(self) -> bool:
        """True when ``param⁻¹(r0)`` needs ``r0 > 0``."""
        return self in (Param.SOFTPLUS, Param.EXP)

    @property
    def takes_r_max(self) -> bool:
        """True when ``r_max`` applies: the bound of sigmoid, the cap of softplus and exp."""
        return self in (Param.SOFTPLUS, Param.EXP, Param.SIGMOID)


PARAMS = tuple(p.name.lower() for p in Param)


def _setting(default, kind, **extra):
    """A dataclass field carrying its declared kind: a type, or a tuple of valid strings."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"kind": kind, **extra})
    return field(default=default, metadata={"kind": kind, **extra})


@dataclass(frozen=True, eq=False)  # Mapping's == (by items), so Settings == its dict
class Settings(Mapping):
    """The resolved settings of one run, each in its declared type (SPEC §8's table).

    Build it with :func:`resolve`, which fills in defaults and checks every value.
    ``snapshot_every`` is None only before resolution (it then defaults to ``epochs``);
    ``m_init`` is None in a :class:`~specblur.FitResult` whose initial radius was a field.
    ``r_max`` None means: no cap for softplus and exp, and ``4 K`` for sigmoid (resolved
    by :func:`specblur.fit`, which knows K). ``scale_min`` None means no multi-scale
    training (SPEC §9.6).
    """

    m_init: Optional[float] = _setting(1.0, float)
    lam: float = _setting(1.0, float)
    lambda_on: str = _setting("entropy", LAMBDA_ON)
    entropy_reduce: str = _setting("sum", ENTROPY_REDUCE)
    eps: float = _setting(1e-8, float, low=0.0)
    mode: str = _setting("truncate", MODES)
    param: str = _setting("raw", PARAMS)
    optimizer: str = _setting("sgd", OPTIMIZERS)
    lr: float = _setting(1.0, float)
    beta1: float = _setting(0.9, float, low=0.0, high=1.0)
    beta2: float = _setting(0.999, float, low=0.0, high=1.0)
    adam_eps: float = _setting(1e-8, float, low=0.0)
    epochs: int = _setting(1000, int, positive=True, high=MAX_EPOCHS)
    log_every: int = _setting(1, int, positive=True)
    snapshot_every: Optional[int] = _setting(None, int, positive=True)
    r_max: Optional[float] = _setting(None, float)
    tv: float = _setting(0.0, float, low=0.0)
    tv_delta: float = _setting(1e-2, float)
    mse_norm: str = _setting("none", MSE_NORM)
    scale_min: Optional[float] = _setting(None, float)
    scale_p: float = _setting(0.5, float)
    model: dict = _setting({"kind": "identity"}, dict)
    seed: int = _setting(0, int, low=0, high=2 ** 32)

    # read-only mapping over the fields, in declaration order
    def __getitem__(self, key):
        if key not in SETTINGS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(SETTINGS)

    def __len__(self):
        return len(SETTINGS)

    @property
    def param_kind(self) -> Param:
        """``param`` as a :class:`Param`."""
        return Param.of(self.param)

    @property
    def weights(self) -> tuple[float, float]:
        """``(c_D, c_H)``: the factors of the MSE and of the entropy in the loss (SPEC §7)."""
        return (1.0, self.lam) if self.lambda_on == "entropy" else (self.lam, 1.0)

    def as_dict(self) -> dict:
        """A plain dict of the settings (the model spec copied)."""
        return {key: (dict(value) if isinstance(value, dict) else value)
                for key, value in self.items()}

    def replace(self, **changes) -> "Settings":
        """A copy with some values changed (unchecked: use :func:`resolve` for user input)."""
        return replace(self, **changes)


#: key -> (type or tuple of valid strings, default); derived from :class:`Settings`.
SETTINGS = {f.name: (f.metadata["kind"],
                     f.default if not callable(f.default_factory) else f.default_factory())
            for f in fields(Settings)}
_META = {f.name: f.metadata for f in fields(Settings)}


def resolve(settings: Mapping, where: str = "settings", *, m_init_field: bool = False) -> Settings:
    """Fill in defaults, cast every value to its declared type and check it.

    Parameters
    ----------
    settings : mapping
        Any subset of the keys of ``SETTINGS``.
    where : str
        How messages name the source of the settings (a file, a run).
    m_init_field : bool
        ``m_init`` is a field, checked by the caller: here it must be None.

    Returns
    -------
    Settings
        Every key of ``SETTINGS``, in its declared type. An empty value (None, YAML's
        null) is an error, except for keys whose default is None (``r_max``,
        ``snapshot_every``): there it means the default.

    Raises
    ------
    SpecblurError
        Naming the first unknown key (with the closest valid one), wrong type or bad value.
    """
    check_keys(settings, SETTINGS, where, what="setting")
    out = {}
    for key, (kind, default) in SETTINGS.items():
        value = settings.get(key, default)
        name = f"{where}: {key}"
        if value is None and default is not None and not (key == "m_init" and m_init_field):
            raise SpecblurError(f"{name} is empty (null); give it a value or leave the key out "
                                f"for its default {default!r}")
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
        meta = _META[key]
        if meta.get("positive") and out[key] is not None and out[key] <= 0:
            raise SpecblurError(f"{name} must be a positive integer, got {value!r}")
        low, high = meta.get("low", -float("inf")), meta.get("high", float("inf"))
        if ("low" in meta or "high" in meta) and out[key] is not None \
                and not low <= out[key] < high:
            span = f"below {high:.10g}" if low == -float("inf") else \
                f"in [{low:.10g}, {high:.10g})"
            raise SpecblurError(f"{where}: {key} must be {span}, got {out[key]}")
    if out["snapshot_every"] is None:
        out["snapshot_every"] = out["epochs"]
    if Param.of(out["param"]).needs_positive_init and out["m_init"] is not None \
            and out["m_init"] <= 0:
        raise SpecblurError(f"{where}: m_init must be > 0 with param {out['param']!r}, got {out['m_init']}")
    if out["lr"] <= 0:
        raise SpecblurError(f"{where}: lr must be positive, got {out['lr']}")
    if out["tv_delta"] <= 0:
        raise SpecblurError(f"{where}: tv_delta must be positive, got {out['tv_delta']}")
    _check_r_max(out, where)
    _check_scales(out, where)
    return Settings(**out)


def _check_scales(out: dict, where: str) -> None:
    """Multi-scale training (SPEC §9.6) needs a bounded radius and ``scale_min > 1``."""
    if not 0.0 <= out["scale_p"] <= 1.0:
        raise SpecblurError(f"{where}: scale_p must be in [0, 1], got {out['scale_p']}")
    lo = out["scale_min"]
    if lo is None:
        return
    param = Param.of(out["param"])
    if not lo > 1:
        raise SpecblurError(f"{where}: scale_min must be > 1, got {lo}")
    if param is not Param.SIGMOID and out["r_max"] is None:
        raise SpecblurError(f"{where}: scale_min (multi-scale training) needs a bounded "
                            f"radius: param 'sigmoid', or 'softplus' or 'exp' with r_max; "
                            f"got param {out['param']!r}"
                            + (" without r_max" if param.takes_r_max else ""))
    check_scale_min(lo, out["r_max"], where)


def check_device(settings: Iterable[Settings], device: str, where: str, hint: str) -> None:
    """Multi-scale training (SPEC §9.6) runs on the CPU only: refuse ``"cuda"`` for runs
    with ``scale_min``, with ``hint`` on what to do instead."""
    if device == "cuda" and any(s.scale_min is not None for s in settings):
        raise SpecblurError(f"{where}scale_min (multi-scale training) runs on the CPU only; "
                            f"{hint}")


def check_scale_min(scale_min: float | None, r_max: float | None, where: str) -> None:
    """``scale_min`` may not exceed the radius bound ``r_max`` (SPEC §9.6); None skips."""
    if scale_min is not None and r_max is not None and scale_min > r_max:
        raise SpecblurError(f"{where}: scale_min must not exceed r_max = {r_max:g}, "
                            f"got {scale_min}")


def _check_r_max(out: dict, where: str) -> None:
    param, r_max = Param.of(out["param"]), out["r_max"]
    if r_max is None:
        return
    if not param.takes_r_max:
        raise SpecblurError(f"{where}: r_max applies to param sigmoid, softplus and exp, "
                            f"not to {out['param']!r}")
    if r_max <= 1:
        raise SpecblurError(f"{where}: r_max must be > 1, got {r_max}")
    check_m_init(out["m_init"], param, r_max, where)


def resolved_r_max(settings: Settings, n_bins: int) -> float | None:
    """The ``r_max`` a run uses: the setting, or ``4 K`` for sigmoid (SPEC §9.2), or None."""
    if settings.r_max is None and settings.param_kind is Param.SIGMOID:
        return 4.0 * n_bins
    return settings.r_max


def check_m_init(m_init: float | None, param: Param, r_max: float | None, where: str) -> None:
    """For sigmoid, ``m_init`` must lie in ``(1, r_max)`` (SPEC §9.2); below a cap otherwise.

    A scalar ``m_init`` above the cap of softplus or exp would freeze every bin (their
    gradient is 0 there). A field may hold such bins: they stay at the cap.
    """
    if m_init is None or r_max is None:
        return
    if param is Param.SIGMOID and not 1 < m_init < r_max:
        raise SpecblurError(f"{where}: m_init must lie in (1, r_max) = (1, {r_max:g}) with "
                            f"param 'sigmoid', got {m_init}")
    if param.takes_r_max and m_init > r_max:
        raise SpecblurError(f"{where}: m_init must not exceed r_max = {r_max:g} with param "
                            f"{param.name.lower()!r}, got {m_init}: its bins would never move")
