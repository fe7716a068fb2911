"""Learning the radius field: ``specblur.fit`` (SPEC §7)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from . import objective
from .audio import Spectrogram
from .errors import SpecblurError
from .kernels import cpu, for_device, mode_code
from .models import call_key, check_model_input, make_model
from .schema import HISTORY_COLUMNS, SR, STATS
from .settings import (Param, Settings, check_device, check_m_init, check_scale_min,
                       resolve, resolved_r_max)

__all__ = ["FitResult", "fit", "fit_batch"]


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
        Where the epochs run. With ``"cuda"`` all of each epoch runs on the GPU and the
        host reads the GPU's results only at logged, snapshot and last epochs (see
        :func:`fit_batch`).
    callback : callable, optional
        Called as ``callback(n)`` after the ``n``-th update (for progress bars).
    **settings
        The run's settings (SPEC §8): ``m_init`` (a radius, scalar or a field of the shape
        of ``X``), ``lam``, ``lambda_on`` (entropy | mse), ``entropy_reduce`` (sum | mean),
        ``eps``, ``mode`` (truncate | conserve | renormalize), ``param`` (raw | relu |
        softplus | exp),
        ``optimizer`` (sgd | adam), ``lr``, ``beta1``, ``beta2``, ``adam_eps``, ``epochs``,
        ``log_every``, ``snapshot_every``, ``model`` and ``seed``; and SPEC §9's ``r_max``,
        ``tv``, ``tv_delta``, ``mse_norm``, ``scale_min`` and ``scale_p`` (multi-scale
        training, whose draws come from ``seed``). Unset keys take the defaults of
        ``specblur.settings.SETTINGS``.

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
    return _lockstep([_prepare(X, settings, sr, {})], device).run(callback)[0]


def fit_batch(inputs: Sequence, runs: Sequence[Mapping] | Mapping, *, sr: int = SR,
              device: str = "cpu", callback: Optional[Callable[[int], None]] = None
              ) -> list[FitResult]:
    """Learn several runs at once, in lockstep (one blur call per epoch for all of them).

    Each run is what ``fit(inputs[i], **runs[i])`` learns: the results equal those of
    separate fits up to rounding (1e-9 relative in float64; a float32 model rounds
    differently in a batch, and the optimiser can amplify that). The runs may differ in input
    (and its length), settings and number of epochs. Per epoch, the blur and its VJP run
    once on a ``(B, K, T_max)`` stack of the inputs (one call per boundary mode), on each
    run's own frames only, and the model once per group of runs with the same model and input
    length, on a B-first array, for models that take one (``supports_batch = True``: the
    built-in ones); a model with ``supports_lengths = True`` (the speaker encoder) takes
    runs of any lengths in one call, with ``lengths=`` and ignoring the padding. Other
    models are called per run. Padding never reaches a statistic: the objective's passes
    run on each run's own frames. A run that ends (its epochs are done, or it diverged)
    leaves the batch; the others go on.

    With ``device="cuda"`` the stacks, each run's parameters, optimiser state and
    gradients stay on the GPU, where the objective runs too (``specblur._cuda_lockstep``);
    the host waits for the GPU only at epochs where a run logs a row, takes a snapshot or
    ends. A run that diverges in between stops on the GPU and is recorded at the epoch it
    diverged. Models with ``supports_device = True`` (``identity``; the speaker encoder on
    a CUDA device) take and return CUDA arrays; others get host copies.

    Parameters
    ----------
    inputs : sequence of array_like (K, T) or Spectrogram, or array (B, K, T)
        One spectrogram per run, all with the same number of bins ``K``.
    runs : sequence of mappings, or one mapping
        Each run's settings, as :func:`fit` takes them; one mapping applies to every input.
    sr, device, callback
        As for :func:`fit`; ``callback(n)`` is called after the ``n``-th lockstep epoch.

    Returns
    -------
    list of FitResult
        In the order of ``inputs``.

    Raises
    ------
    SpecblurError
        As :func:`fit`, naming the run; and for inputs with different ``K``.

    Examples
    --------
    >>> import numpy as np
    >>> import specblur
    >>> X = np.random.default_rng(0).random((33, 20))
    >>> runs = [{"lam": lam, "epochs": 5, "model": {"kind": "identity"}} for lam in (1e-3, 1e-2)]
    >>> [res.status for res in specblur.fit_batch([X, X], runs)]
    ['done', 'done']
    """
    inputs = list(inputs)
    runs = [runs] * len(inputs) if isinstance(runs, Mapping) else list(runs)
    if len(runs) != len(inputs):
        raise SpecblurError(f"fit_batch got {len(inputs)} inputs and {len(runs)} settings")
    for i, settings in enumerate(runs):
        if not isinstance(settings, Mapping):
            raise SpecblurError(f"run {i}: settings must be a mapping, got "
                                f"{type(settings).__name__}")
    if not inputs:
        return []
    items, models = [], {}
    for i, (X, settings) in enumerate(zip(inputs, runs)):
        try:
            items.append(_prepare(X, dict(settings), sr, models))
        except SpecblurError as exc:
            raise SpecblurError(f"run {i}: {exc}") from None
    if len({item.X.shape[0] for item in items}) > 1:
        raise SpecblurError("fit_batch needs inputs with the same number of bins K, got "
                            f"{sorted({item.X.shape[0] for item in items})}")
    return _lockstep(items, device).run(callback)


def _lockstep(items, device):
    """The lockstep driver of ``device``: :class:`_Lockstep`, or the GPU's for ``"cuda"``."""
    check_device((item.cfg for item in items), device, "", "use device 'cpu' for it")
    if device == "cuda":
        from ._cuda_lockstep import CudaLockstep

        return CudaLockstep(items, _Descent)
    for_device(device)  # a SpecblurError naming the devices, for any other than the CPU
    return _Lockstep(items)


@dataclass
class _Prepared:
    """A run's checked input, settings and model, before any state is allocated."""

    X: np.ndarray
    r0: np.ndarray | float
    cfg: Settings
    model: object
    model_key: tuple
    r_max: Optional[float]


def _prepare(X, settings, sr, models):
    """Check one run's input and settings and build its model (:func:`fit`'s checks).

    ``models`` maps a model's key to the model built for it, so that runs that share a
    model (kind, options, sample rate, DFT length and seed) share one instance.
    """
    spec = X if isinstance(X, Spectrogram) else None
    X = _check_spectrogram(spec.mag if spec else X)
    r0 = settings.get("m_init", 1.0)
    field_init = np.ndim(r0) > 0
    if field_init:  # checked as a field below; None skips the scalar checks
        settings = {**settings, "m_init": None}
    cfg = resolve(settings, where="fit", m_init_field=field_init)
    r_max = resolved_r_max(cfg, X.shape[0])
    check_scale_min(cfg.scale_min, r_max, "fit")
    r0 = _check_field(r0, X.shape, cfg.param_kind, r_max) if field_init else cfg.m_init
    if not field_init:
        check_m_init(r0, cfg.param_kind, r_max, "fit")
    if spec is not None:
        check_model_input(cfg.model, sr=spec.sr, n_fft=spec.n_fft, hop=spec.hop, where="fit")
    model_sr = spec.sr if spec else int(sr)
    n_fft = spec.n_fft if spec else 2 * (X.shape[0] - 1)
    key = (repr(cfg.model), model_sr, n_fft, X.shape[0], cfg.seed)
    if key not in models:
        models[key] = make_model(cfg.model, sr=model_sr, n_fft=n_fft, n_bins=X.shape[0],
                                 seed=cfg.seed)
    return _Prepared(X, r0, cfg, models[key], key, r_max)


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


class _Descent:
    """State of one run's optimisation: parameters, buffers, optimiser moments, records.

    Fields are ``(K, T)`` arrays of the run's own frames; the objective kernels get flat
    views of them (``_f``). With ``buffers=False`` (the GPU driver, which keeps the
    fields on the device) only the initial ``m``, the reference output and the records
    are kept here. With ``raw`` and ``relu`` the radius is ``m`` itself. An epoch
    is three steps around the shared blur and model calls of :class:`_Lockstep`:
    :meth:`start` (the radius), :meth:`score` (the model output's MSE) and :meth:`finish`
    (gradients, statistics, the update).
    """

    def __init__(self, item: _Prepared, buffers: bool = True):
        X, cfg, model = item.X, item.cfg, item.model
        self.X, self.cfg, self.model, self.model_key = X, cfg, model, item.model_key
        self.T = X.shape[1]
        self.mode = mode_code(cfg.mode)
        self.param = cfg.param_kind
        self.code = int(self.param)
        self.r_max_used = item.r_max  # the bound actually used (SPEC §9.2), in the result
        self.r_max = np.inf if item.r_max is None else float(item.r_max)
        self.m = np.array(np.broadcast_to(
            objective.param_inverse(item.r0, self.param, self.r_max), X.shape),
            dtype=np.float64, order="C")  # writable
        self.c_mse, self.c_ent = cfg.weights
        self.h_scale = 1.0 / X.size if cfg.entropy_reduce == "mean" else 1.0
        self.ref = np.array(model.forward(X), dtype=np.float64, order="C")
        self.norm = 1.0  # D = mean((Φ(Y) - Φ(X))²) * norm (SPEC §9.4)
        if cfg.mse_norm == "ref":
            power = float(np.mean(self.ref ** 2))
            if not power > 0:
                raise SpecblurError("mse_norm 'ref' divides by mean(Φ(X)²), which is 0 here")
            self.norm = 1.0 / power
        self.tv = cfg.tv
        # multi-scale training (SPEC §9.6): each epoch blurs with r**exponent
        self.scales = None if cfg.scale_min is None else np.random.default_rng(cfg.seed)
        if self.scales is not None:  # the exponents' range, in logs (see _draw)
            self.log_range = (math.log(cfg.scale_min), math.log(self.r_max))
        self.exponent = 1.0
        self.x_total = float(X.sum())
        self.adam = cfg.optimizer == "adam"
        self.rows, self.snapshots, self.status = [], {}, "done"
        self.D = self.TV = 0.0
        self.out = None
        self.out_sum = 0.0  # sum of the model output, from the MSE's pass
        self.r = self.m
        if buffers:  # the CPU's working fields (the GPU driver keeps its own, on the device)
            self._buffers()

    def _buffers(self):
        X = self.X
        own_radius = not self.param.radius_is_m
        self.r = np.empty_like(X) if own_radius else self.m
        self.drdm = np.empty_like(X) if own_radius else self.m  # unused for raw and relu
        self.m_next = np.empty_like(self.m)  # the update's target; swapped with m after it
        self.g_mse = np.empty_like(X) if own_radius else None  # raw, relu: g_mse is dr
        self.g_ent = np.empty_like(X)  # written only for snapshots
        self.nothing = np.empty(0)
        self.m_finite = False  # known only after a step; start() checks the first state
        self.g_out = np.empty_like(self.ref)
        if self.tv > 0:  # the smoothness term (SPEC §9.3)
            self.u, self.g_tv = np.empty_like(X), np.empty_like(X)
        else:
            self.g_tv = np.empty(0)
        self.stats = np.empty(len(STATS))
        if self.scales is not None:
            self.r_scaled, self.dr_scaled = np.empty_like(X), np.empty_like(X)
        if self.adam:
            self.mom1, self.mom2 = np.zeros_like(X), np.zeros_like(X)

    def plan(self, n):
        """What epoch ``n`` does: ``(last, project, update, log, snapshot)``."""
        cfg = self.cfg
        last = n == cfg.epochs
        return (last, self.param is Param.RELU and not last, not last,
                n % cfg.log_every == 0 or last,
                n > 0 and (n % cfg.snapshot_every == 0 or last))

    def start(self, project, full=False):
        """Prepare the radius of the current state; False if ``m`` or ``r`` is not finite.

        With multi-scale training it also draws this epoch's exponent (:meth:`_draw`); an
        epoch with ``full`` (one that takes a snapshot, or the last) blurs with ``r`` itself.
        """
        # raw and relu use m as the radius; the last step already counted non-finite m
        if project or not self.param.radius_is_m or not self.m_finite:
            if objective.radius(_f(self.m), self.code, project, self.r_max, _f(self.r),
                                _f(self.drdm)):
                return False
        if self.scales is not None:
            self.exponent = self._draw(full)
            if self.exponent != 1.0:
                np.power(self.r, self.exponent, out=self.r_scaled)
        return True

    def _draw(self, full):
        """The exponent ``e`` of this epoch's radii ``r**e`` (SPEC §9.6).

        Two uniform draws per epoch, used or not, so the sequence does not depend on which
        epochs are ``full``: with probability ``scale_p`` the run's own radii (``e = 1``),
        else ``e = log ρ / log r_max`` for ``ρ`` log-uniform in ``[scale_min, r_max]``, which
        maps 1 to 1 and ``r_max`` to ``ρ`` and keeps the order of the radii.
        """
        u, v = self.scales.random(2)
        if full or u < self.cfg.scale_p:
            return 1.0
        lo, hi = self.log_range
        return (lo + v * (hi - lo)) / hi

    @property
    def r_blur(self):
        """The radii this epoch blurs with: ``r``, or ``r**e`` in multi-scale training."""
        return self.r if self.exponent == 1.0 else self.r_scaled

    def score(self, out):
        """The MSE of model output ``out`` (and the TV term) and ``g_out``; False if not finite."""
        cfg = self.cfg
        self.out = out
        mse, self.out_sum = objective.mse_and_grad(_f(out), _f(self.ref), self.c_mse * self.norm,
                                                   _f(self.g_out))
        self.D = self.norm * mse
        if not np.isfinite(self.D):
            return False
        self.TV = 0.0
        if self.tv > 0:
            self.TV = objective.total_variation(self.r, self.drdm, self.param.radius_is_m,
                                                cfg.tv_delta, self.tv, self.u, self.g_tv)
            if not np.isfinite(self.TV):
                return False
        return True

    def finish(self, n, Y, dr, update, log, snapshot):
        """The rest of epoch ``n`` from the blurred ``Y`` and ``dr = dL_mse/dr``.

        Returns ``(history values, snapshot or None)``, or None if the entropy or the loss
        is not finite. Makes update ``n + 1`` if ``update``.
        """
        f, cfg = _f, self.cfg
        unit = self.param.radius_is_m
        if self.exponent != 1.0:  # dD/dr = dD/dr_blur e r**(e - 1) = dD/dr_blur e r_blur / r
            np.multiply(dr, self.r_scaled, out=self.dr_scaled)  # 0 where r <= 1 (no blur)
            np.divide(self.dr_scaled, self.r, out=self.dr_scaled, where=self.r > 1.0)
            self.dr_scaled *= self.exponent
            dr = self.dr_scaled
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
            loss = self.c_mse * self.D - self.c_ent * H + self.tv * self.TV
            if not np.isfinite(loss):
                return None
        gtv = (float(self.g_tv.mean()), float(self.g_tv.var())) if self.tv > 0 and log \
            else (0.0, 0.0) if self.tv == 0 else (np.nan, np.nan)
        # the identity model's output is Y itself, whose total score() already has
        y_total = (self.out_sum if self.out is Y else float(Y.sum())) if log else np.nan
        values = (loss, self.D, H, *self.stats, y_total / self.x_total if self.x_total else np.nan,
                  self.TV, *gtv)
        snap = self.snapshot(self.m.copy(), self.r.copy(), Y, g_mse, self.out) if snapshot \
            else None
        if update:  # the epoch is accepted: the updated parameter becomes the state
            self.m, self.m_next = self.m_next, self.m
            if unit:
                self.r = self.drdm = self.m
            self.m_finite = bad == 0
        return values, snap

    def record(self, n, state, seconds, logged):
        """Keep epoch ``n``'s history row and snapshot; False once the run diverged."""
        if state is None:
            self.rows.append((n, *[np.nan] * (len(HISTORY_COLUMNS) - 2), seconds))
            self.status = "diverged"
            return False
        values, snap = state
        if logged:
            self.rows.append((n, *values, self.exponent, seconds))
        if snap is not None:
            self.snapshots[n] = snap
        return True

    def snapshot(self, m, r, Y, g_mse, out, g_ent=None):
        """A snapshot's dict; ``g_ent`` is the run's own buffer unless given."""
        out = np.asarray(out, dtype=np.float64)
        q = np.quantile(out, [0.05, 0.5, 0.95], axis=1)
        outputs = pd.DataFrame({"dim": np.arange(out.shape[0]), "mean": out.mean(axis=1),
                                "std": out.std(axis=1), "q05": q[0], "q50": q[1], "q95": q[2]})
        return {"m": m, "r": r, "Y": np.array(Y, dtype=np.float64), "g_mse": np.array(g_mse),
                "g_ent": self.g_ent.copy() if g_ent is None else g_ent, "outputs": outputs}

    def result(self):
        history = pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS))
        history["epoch"] = history["epoch"].astype(np.int64)
        return FitResult(m=self.m.copy(), r=self.r.copy(), history=history,
                         snapshots=self.snapshots, status=self.status,
                         settings=self.cfg.replace(r_max=self.r_max_used))


class _Lockstep:
    """Runs that go through their epochs together, sharing the blur and model calls (CPU).

    The inputs sit in a ``(B, K, T_max)`` stack ordered by boundary mode, then longest
    first; each run owns a slot, and the kernels work on its first ``T`` frames only
    (``frames``), so the padding after them costs nothing and changes nothing. Per epoch
    the blur and its VJP run once per mode on that mode's slots, and the model once per
    group of runs that share it (:func:`_model_forward`). The blurred stack's padding is
    kept zero, so that a model can take a slice of it. A run that ends leaves its slot to
    the last run of its mode, so the slots in use stay contiguous.
    """

    def __init__(self, items):
        self.runs = [_Descent(item) for item in items]
        K = items[0].X.shape[0]
        self.T = max(run.T for run in self.runs)
        shape = (len(self.runs), K, self.T)
        self.X, self.Y = np.zeros(shape), np.zeros(shape)
        self.R, self.G, self.dR = np.empty(shape), np.empty(shape), np.empty(shape)
        self.dX = np.empty((0, 0, 0))  # dL/dX is never read: the kernel skips it
        self.frames = np.zeros(shape[0], np.int64)  # each slot's own frames
        self.stale = set()  # slots whose padding in Y a longer run wrote
        self.groups = {}  # mode code -> the runs of that mode, in slot order
        # longest first within a mode: the order in which the speaker encoder runs them
        for run in sorted(self.runs, key=lambda run: (run.mode, -run.T)):
            group = self.groups.setdefault(run.mode, [])
            group.append(run)
        slot = 0
        for group in self.groups.values():
            for run in group:
                self._place(run, slot)
                slot += 1

    def _place(self, run, slot):
        if self.frames[slot] > run.T:
            self.stale.add(slot)  # zeroed before the next forward pass (a model may hold Y)
        run.slot = slot
        self.frames[slot] = run.T
        self.X[slot, :, :run.T] = run.X

    def _leave(self, run):
        """Take ``run`` out of its group; the group's last run moves into its slot."""
        group = self.groups[run.mode]  # in slot order
        last = group[-1]
        group.remove(run)
        if last is not run:
            self._place(last, run.slot)
            group.sort(key=lambda other: other.slot)

    def _spans(self):
        """``(mode, first slot, runs)`` for each mode with runs left."""
        return [(mode, group[0].slot, group) for mode, group in self.groups.items() if group]

    def _forward(self):
        for slot in self.stale:
            self.Y[slot, :, self.frames[slot]:] = 0.0
        self.stale.clear()
        self.filled = {}  # run -> the slot whose radii this epoch's forward pass copied
        for mode, lo, group in self._spans():
            hi = lo + len(group)
            if len(group) == 1 and group[0].T == self.T:  # no copy for a lone run
                R = group[0].r_blur[None]
            else:
                for run in group:
                    self.R[run.slot, :, :run.T] = run.r_blur
                    self.filled[run] = run.slot
                R = self.R[lo:hi]
            cpu.blur_forward(self.X[lo:hi], R, mode, self.Y[lo:hi], self.frames[lo:hi])
        return self.Y

    def _backward(self, grads):
        for mode, lo, group in self._spans():
            hi = lo + len(group)
            if len(group) == 1 and group[0].T == self.T:
                run = group[0]
                R, G = run.r_blur[None], np.ascontiguousarray(grads[run], dtype=np.float64)[None]
            else:
                for run in group:
                    if self.filled.get(run) != run.slot:  # moved since the forward pass
                        self.R[run.slot, :, :run.T] = run.r_blur
                    self.G[run.slot, :, :run.T] = grads[run]
                R, G = self.R[lo:hi], self.G[lo:hi]
            cpu.blur_backward(self.X[lo:hi], R, G, mode, self.dX[lo:hi], self.dR[lo:hi],
                              self.frames[lo:hi])
        return self.dR

    def run(self, callback):
        active = list(self.runs)
        start = time.perf_counter()
        n = 0

        def end(run, state=None):  # a diverged run (state None) gets its row of NaN
            run.record(n, state, time.perf_counter() - start, True)
            active.remove(run)
            self._leave(run)

        with np.errstate(all="ignore"):
            while active:
                plans = {run: run.plan(n) for run in active}
                for run in [run for run in active
                            if not run.start(plans[run][1], plans[run][0] or plans[run][4])]:
                    end(run)
                Y = self._forward()
                views = {run: Y[run.slot, :, :run.T] for run in active}
                calls = _model_forward(active, views, Y)
                for run in [run for run in active if not run.score(run.out)]:
                    end(run)
                dR = self._backward(_model_vjp(calls, set(active)))
                # read before any run leaves: a run that leaves hands its slot on
                grads = {run: dR[run.slot, :, :run.T] if run.T == self.T else
                         np.ascontiguousarray(dR[run.slot, :, :run.T]) for run in active}
                for run in list(active):
                    last, _, update, log, snapshot = plans[run]
                    state = run.finish(n, views[run], grads[run], update, log, snapshot)
                    if state is None or last:
                        end(run, state)
                    else:
                        run.record(n, state, time.perf_counter() - start, log)
                if active and callback is not None:
                    callback(n + 1)
                n += 1
        return [run.result() for run in self.runs]


def _model_forward(runs, views, stack):
    """Call each model once per group of its runs; set each run's ``out``.

    A model with ``supports_batch = True`` takes a ``(B, K, T)`` stack of the runs with
    the same length; one that also has ``supports_lengths = True`` takes the runs of any
    lengths, zero-padded, with ``lengths=``. Other models, and a group of one run, are
    called on each run's ``(K, T)`` array. A group whose slots of the lockstep's ``stack``
    are consecutive and whose longest run fills the stack's ``T_max`` frames gets a slice
    of the stack itself (so a model must not write into ``Y``), other groups a zero-padded
    copy. Returns ``[(runs, Y, lengths)]`` per call, for :func:`_model_vjp`.
    """
    groups = {}
    for run in runs:
        groups.setdefault(call_key(run.model, run.T, id(run)), []).append(run)
    calls = []
    for group in groups.values():
        model = group[0].model
        if len(group) == 1:
            Y, lengths = views[group[0]], None
            group[0].out = model.forward(Y)
        else:
            group = sorted(group, key=lambda run: run.slot)
            lengths = [run.T for run in group]
            T, lo = max(lengths), group[0].slot
            if T == stack.shape[2] and group[-1].slot - lo == len(group) - 1:
                Y = stack[lo:lo + len(group)]
            else:
                Y = np.zeros((len(group),) + stack.shape[1:2] + (T,))
                for i, run in enumerate(group):
                    Y[i, :, :run.T] = views[run]
            if min(lengths) == T:
                lengths = None
            out = model.forward(Y) if lengths is None else model.forward(Y, lengths=lengths)
            for i, run in enumerate(group):
                run.out = out[i]
        calls.append((group, Y, lengths))
    return calls


def _model_vjp(calls, live):
    """The cotangents ``{run: model.vjp(Y, run.g_out)}`` of the runs in ``live``.

    Each call repeats a forward call of :func:`_model_forward` on the same ``Y`` (a model
    may keep what its forward computed for the VJP); runs that left meanwhile pull back 0.
    """
    grads = {}
    for group, Y, lengths in calls:
        if not live.intersection(group):
            continue
        model = group[0].model
        if Y.ndim == 2:
            grads[group[0]] = model.vjp(Y, group[0].g_out)
            continue
        g = np.stack([run.g_out if run in live else np.zeros_like(run.g_out) for run in group])
        G = model.vjp(Y, g) if lengths is None else model.vjp(Y, g, lengths=lengths)
        for i, run in enumerate(group):
            if run in live:
                grads[run] = G[i, :, :run.T]
    return grads


def _f(a):
    """A flat float64 view of ``a`` (a copy only if ``a`` is not C-contiguous float64)."""
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
