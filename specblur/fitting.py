"""Learning the radius field: ``specblur.fit`` (SPEC §7)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from . import objective
from .audio import Spectrogram
from .errors import SpecblurError
from .kernels import for_device, mode_code
from .models import check_model_input, make_model
from .schema import HISTORY_COLUMNS, SR, STATS
from .settings import Param, Settings, check_m_init, resolve, resolved_r_max

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    m, r : numpy.ndarray
        Final parameter and radius fields, shape of ``X``.
    history : pandas.DataFrame
        One row per logged epoch, columns ``HISTORY_COLUMNS``.
    snapshots : dict
        ``{N: {"m", "r", "Y", "g_mse", "g_ent", "outputs"}}`` after ``N`` updates;
        ``outputs`` is a DataFrame with columns ``OUTPUT_COLUMNS``.
    status : str
        ``"done"``, or ``"diverged"`` if ``m``, ``r`` or the loss stopped being finite.
    settings : Settings
        The resolved settings of the run (``m_init`` is None if it was a field); a
        read-only mapping.
    """

    m: np.ndarray
    r: np.ndarray
    history: pd.DataFrame
    snapshots: dict = field(default_factory=dict)
    status: str = "done"
    settings: Optional[Settings] = None


def fit(X, *, sr: int = SR, device: str = "cpu", callback: Optional[Callable[[int], None]] = None,
        **settings) -> FitResult:
    """Learn per-bin blur radii by gradient descent (SPEC §7).

    Parameters
    ----------
    X : array_like (K, T) or Spectrogram
        Magnitude spectrogram. A :class:`~specblur.audio.Spectrogram` also gives the
        sample rate and DFT length; for an array they are ``sr`` and ``2 (K - 1)``.
    sr : int
        Sample rate, for mel-based models, when ``X`` is an array.
    device : {"cpu", "cuda"}
        Where the blur kernels run.
    callback : callable, optional
        Called as ``callback(n)`` after the ``n``-th update (for progress bars).
    **settings
        The run's settings (SPEC §8): ``m_init`` (a radius, scalar or a field of the shape
        of ``X``), ``lam``, ``lambda_on`` (entropy | mse), ``entropy_reduce`` (sum | mean),
        ``eps``, ``mode`` (truncate | conserve | renormalize), ``param`` (raw | relu |
        softplus | exp),
        ``optimizer`` (sgd | adam), ``lr``, ``beta1``, ``beta2``, ``adam_eps``, ``epochs``,
        ``log_every``, ``snapshot_every``, ``model`` and ``seed``. Unset keys take the
        defaults of ``specblur.settings.SETTINGS``.

    Returns
    -------
    FitResult

    Raises
    ------
    SpecblurError
        For unknown settings, bad values, or an ``X`` that is not a finite real 2-D array.

    Notes
    -----
    History row ``e`` is evaluated at the parameters after ``e`` updates. With ``relu``,
    ``m`` is projected onto ``m >= 0`` at the start of every epoch, so rows 0 to
    ``epochs - 1`` are projected and the final row, after the last update, is not.

    Examples
    --------
    >>> import numpy as np
    >>> import specblur
    >>> X = np.random.default_rng(0).random((33, 20))
    >>> res = specblur.fit(X, m_init=2.0, lam=1e-3, epochs=5, model={"kind": "identity"})
    >>> res.status, res.r.shape, len(res.history)
    ('done', (33, 20), 6)
    """
    spec = X if isinstance(X, Spectrogram) else None
    X = _check_spectrogram(spec.mag if spec else X)
    r0 = settings.get("m_init", 1.0)
    field_init = np.ndim(r0) > 0
    if field_init:  # checked as a field below; None skips the scalar checks
        settings = {**settings, "m_init": None}
    cfg = resolve(settings, where="fit", m_init_field=field_init)
    r_max = resolved_r_max(cfg, X.shape[0])
    r0 = _check_field(r0, X.shape, cfg.param_kind, r_max) if field_init else cfg.m_init
    if not field_init:
        check_m_init(r0, cfg.param_kind, r_max, "fit")
    if spec is not None:
        check_model_input(cfg.model, sr=spec.sr, n_fft=spec.n_fft, hop=spec.hop, where="fit")
    model = make_model(cfg.model, sr=spec.sr if spec else int(sr),
                       n_fft=spec.n_fft if spec else 2 * (X.shape[0] - 1),
                       n_bins=X.shape[0], seed=cfg.seed)
    with np.errstate(all="ignore"):
        result = _Descent(X, r0, cfg, model, device, r_max).run(callback)
    result.settings = cfg.replace(r_max=r_max)  # the bound actually used (SPEC §9.2)
    return result


def _check_spectrogram(X):
    X = np.asarray(X)
    if X.ndim != 2 or X.size == 0:
        raise SpecblurError(f"X must be a non-empty 2-D (K, T) spectrogram, got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise SpecblurError(f"X must have a real dtype, got {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise SpecblurError("X has non-finite values (NaN or infinity)")
    return X


def _check_field(r0, shape, param, r_max):
    r0 = np.asarray(r0, dtype=np.float64)
    if r0.shape != shape:
        raise SpecblurError(f"m_init field has shape {r0.shape}, X has shape {shape}")
    if not np.isfinite(r0).all():
        raise SpecblurError("m_init field has non-finite values")
    if param.needs_positive_init and (r0 <= 0).any():
        raise SpecblurError(f"m_init must be > 0 everywhere with param {param.name.lower()!r}")
    if param is Param.SIGMOID and not ((r0 > 1) & (r0 < r_max)).all():
        raise SpecblurError(f"m_init must lie in (1, r_max) = (1, {r_max:g}) everywhere with "
                            "param 'sigmoid'")
    return r0


class _Blur:
    """Forward blur and its radius gradient for a fixed ``X``, on preallocated buffers.

    The kernels are called directly: ``fit`` has checked ``X`` and keeps ``r`` and the
    cotangent finite, so the public API's per-call checks would only cost time. On the
    GPU, ``X`` and the outputs stay on the device; ``r`` and ``G`` go over each epoch.
    """

    def __init__(self, X, mode, device):
        self.mode = mode_code(mode)
        backend = for_device(device)
        self.kernels, self.send, self.fetch = backend.kernels, backend.send, backend.fetch
        self.X = self.send(X[None])
        self.Y, self.dX, self.dr = (backend.empty(self.X.shape) for _ in range(3))

    def forward(self, r):
        self.kernels.blur_forward(self.X, self.send(r[None]), self.mode, self.Y)
        return self.fetch(self.Y)[0]

    def radius_grad(self, r, G):
        G = np.ascontiguousarray(G, dtype=np.float64)
        self.kernels.blur_backward(self.X, self.send(r[None]), self.send(G[None]), self.mode,
                                   self.dX, self.dr)
        return self.fetch(self.dr)[0]


class _Descent:
    """State of one optimisation: parameters, buffers, optimiser moments, records.

    Fields are ``(K, T)`` arrays; the objective kernels get flat views of them (``_f``).
    With ``raw`` and ``relu`` the radius is ``m`` itself.
    """

    def __init__(self, X, r0, cfg: Settings, model, device, r_max):
        self.cfg = cfg
        self.model = model
        self.blur = _Blur(X, cfg.mode, device)
        self.param = cfg.param_kind
        self.code = int(self.param)
        self.r_max = np.inf if r_max is None else float(r_max)
        self.m = np.array(np.broadcast_to(objective.param_inverse(r0, self.param, self.r_max),
                                          X.shape), dtype=np.float64, order="C")  # writable
        own_radius = not self.param.radius_is_m
        self.r = np.empty_like(X) if own_radius else self.m
        self.drdm = np.empty_like(X) if own_radius else self.m  # unused for raw and relu
        self.m_next = np.empty_like(self.m)  # the update's target; swapped with m after it
        self.g_mse = np.empty_like(X) if own_radius else None  # raw, relu: g_mse is dr
        self.g_ent = np.empty_like(X)  # written only for snapshots
        self.nothing = np.empty(0)
        self.m_finite = False  # known only after a step; radius() checks the start
        self.c_mse, self.c_ent = cfg.weights
        self.h_scale = 1.0 / X.size if cfg.entropy_reduce == "mean" else 1.0
        self.ref = np.array(model.forward(X), dtype=np.float64, order="C")
        self.g_out = np.empty_like(self.ref)
        self.norm = 1.0  # D = mean((Φ(Y) - Φ(X))²) * norm (SPEC §9.4)
        if cfg.mse_norm == "ref":
            power = float(np.mean(self.ref ** 2))
            if not power > 0:
                raise SpecblurError("mse_norm 'ref' divides by mean(Φ(X)²), which is 0 here")
            self.norm = 1.0 / power
        self.tv = cfg.tv
        if self.tv > 0:  # the smoothness term (SPEC §9.3)
            self.u, self.g_tv = np.empty_like(X), np.empty_like(X)
        else:
            self.g_tv = np.empty(0)
        self.x_total = float(X.sum())
        self.stats = np.empty(len(STATS))
        adam = cfg.optimizer == "adam"
        self.adam = adam
        if adam:
            self.mom1, self.mom2 = np.zeros_like(X), np.zeros_like(X)

    def epoch(self, n, project, update, log, snapshot):
        """Evaluate the state after ``n`` updates, then make update ``n + 1``.

        Returns ``(history values, snapshot or None)``, or None if ``m``, ``r`` or the
        loss is not finite. The entropy and loss values are computed only if ``log``.
        """
        f, cfg = _f, self.cfg
        # raw and relu use m as the radius; the last step already counted non-finite m
        if project or not self.param.radius_is_m or not self.m_finite:
            if objective.radius(f(self.m), self.code, project, self.r_max, f(self.r),
                                f(self.drdm)):
                return None
        Y = self.blur.forward(self.r)
        out = self.model.forward(Y)
        D = self.norm * objective.mse_and_grad(f(out), f(self.ref), self.c_mse * self.norm,
                                               f(self.g_out))
        if not np.isfinite(D):
            return None
        TV = 0.0
        if self.tv > 0:
            TV = objective.total_variation(self.r, self.drdm, self.param.radius_is_m,
                                           cfg.tv_delta, self.tv, self.u, self.g_tv)
            if not np.isfinite(TV):
                return None
        dr = self.blur.radius_grad(self.r, self.model.vjp(Y, self.g_out))
        unit = self.param.radius_is_m
        g_mse = dr if unit else self.g_mse  # dr/dm = 1 for raw and relu
        # gradient parts, entropy, statistics of this state and the update into m_next
        none = self.nothing
        optimizer = objective.NO_STEP if not update else objective.ADAM if self.adam \
            else objective.SGD
        zero, h_sum, bad = objective.descend(
            f(self.m), f(self.r), f(dr), f(self.drdm), f(self.g_tv), self.code, cfg.eps,
            self.c_ent * self.h_scale, self.r_max, log, optimizer, cfg.lr, cfg.beta1,
            cfg.beta2, cfg.adam_eps, n + 1, f(self.mom1) if self.adam else none,
            f(self.mom2) if self.adam else none, f(g_mse) if snapshot and not unit else none,
            f(self.g_ent) if snapshot else none, f(self.m_next), self.stats)
        if zero:
            return None  # some h(m) = log(0)
        H = loss = np.nan
        if log:
            H = self.h_scale * h_sum
            loss = self.c_mse * D - self.c_ent * H + self.tv * TV
            if not np.isfinite(loss):
                return None
        gtv = (float(self.g_tv.mean()), float(self.g_tv.var())) if self.tv > 0 and log \
            else (0.0, 0.0) if self.tv == 0 else (np.nan, np.nan)
        values = (loss, D, H, *self.stats, float(Y.sum()) / self.x_total if self.x_total else np.nan,
                  TV, *gtv)
        snap = self.snapshot(self.m.copy(), self.r.copy(), Y, g_mse, out) if snapshot else None
        if update:  # the epoch is accepted: the updated parameter becomes the state
            self.m, self.m_next = self.m_next, self.m
            if unit:
                self.r = self.drdm = self.m
            self.m_finite = bad == 0
        return values, snap

    def snapshot(self, m, r, Y, g_mse, out):
        out = np.asarray(out, dtype=np.float64)
        q = np.quantile(out, [0.05, 0.5, 0.95], axis=1)
        outputs = pd.DataFrame({"dim": np.arange(out.shape[0]), "mean": out.mean(axis=1),
                                "std": out.std(axis=1), "q05": q[0], "q50": q[1], "q95": q[2]})
        return {"m": m, "r": r, "Y": np.array(Y, dtype=np.float64), "g_mse": np.array(g_mse),
                "g_ent": self.g_ent.copy(), "outputs": outputs}

    def run(self, callback):
        cfg = self.cfg
        epochs = cfg.epochs
        relu = self.param is Param.RELU
        rows, snapshots, status = [], {}, "done"
        start = time.perf_counter()
        for n in range(epochs + 1):
            last = n == epochs
            logged = n % cfg.log_every == 0 or last
            state = self.epoch(n, project=relu and not last, update=not last, log=logged,
                               snapshot=n > 0 and (n % cfg.snapshot_every == 0 or last))
            seconds = time.perf_counter() - start
            if state is None:
                rows.append((n, *[np.nan] * (len(HISTORY_COLUMNS) - 2), seconds))
                status = "diverged"
                break
            values, snap = state
            if logged:
                rows.append((n, *values, seconds))
            if snap is not None:
                snapshots[n] = snap
            if not last and callback is not None:
                callback(n + 1)
        history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
        history["epoch"] = history["epoch"].astype(np.int64)
        return FitResult(m=self.m.copy(), r=self.r.copy(), history=history,
                         snapshots=snapshots, status=status)


def _f(a):
    """A flat float64 view of ``a`` (a copy only if ``a`` is not C-contiguous float64)."""
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
