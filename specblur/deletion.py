"""Faithfulness of a radius map: the energy-matched deletion test (SPEC §9.5).

A learned radius field ``r`` claims that the bins with large radii are the ones the model
does not need. The test takes that claim at its word: blur the bins the map calls most
blurrable, up to a fixed share ``F`` of the spectrogram's magnitude, at a test radius
``R``, and measure how far the model's output moves. A faithful map moves it little. To
say how little, the same amount of magnitude is blurred in the order given by other scores
(the map reversed, random, the quietest bins first, one gradient, optionally occlusion),
and the distances are compared.

All the radius fields for one ``R`` are evaluated as ``(B, K, T)`` stacks, ``batch``
items at a time: one :func:`specblur.blur` call and one model forward per chunk.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._checks import check_keys, suggest, to_int, to_positive_int
from .blur_api import blur, blur_vjp
from .errors import SpecblurError
from .kernels import mode_code
from .schema import SR

__all__ = ["BASELINES", "SCORES", "COLUMNS", "OPTIONS", "check_options", "faithfulness",
           "faithfulness_summary", "select_bins"]

#: Scores that can be compared with the map (``map`` itself is always evaluated).
BASELINES = ("anti", "random", "energy", "gradient", "occlusion")
#: Every score, in the order of the rows of :func:`faithfulness`'s table.
SCORES = ("map",) + BASELINES
#: Columns of :func:`faithfulness`'s table.
COLUMNS = ("score", "R", "F", "d", "d_std", "n_bins", "energy_share")
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The test's options: keyword arguments of :func:`faithfulness` that :func:`check_options`
#: checks, and that a sweep's ``evaluate: {faithfulness: {...}}`` section may set.
OPTIONS = ("radii", "fractions", "baselines", "mode", "n_random", "seed", "occlusion", "patch",
           "batch")


# --- selection -----------------------------------------------------------------------------


def _order(scores: np.ndarray) -> np.ndarray:
    """Flat bin indices by score, descending; a stable sort, so ties stay row-major."""
    return np.argsort(-scores.reshape(-1), kind="stable")


def _cuts(mag: np.ndarray, order: np.ndarray, fractions: np.ndarray):
    """How many bins of ``order`` each fraction takes, and the magnitude share they hold.

    Bins are taken in order until their magnitudes sum to at least ``F`` times the total;
    the bin that crosses the threshold is included, and ``F = 0`` takes nothing. The total
    is the cumulative sum's own last value, so ``F = 1`` always reaches it exactly.
    """
    cum = np.cumsum(mag.reshape(-1)[order], dtype=np.float64)
    total = cum[-1]
    counts = np.searchsorted(cum, fractions * total, side="left") + 1
    counts = np.where(fractions > 0, np.minimum(counts, cum.size), 0)
    shares = np.where(counts > 0, cum[np.maximum(counts - 1, 0)] / total, 0.0)
    return counts.astype(np.int64), shares


def select_bins(X: Any, scores: Any, F: float | Sequence[float]) -> np.ndarray:
    """The bins the deletion test blurs for a score field and a magnitude share.

    Parameters
    ----------
    X : array_like, shape (K, T)
        Non-negative magnitude spectrogram, not all zero.
    scores : array_like, shape (K, T)
        Finite scores; higher means more blurrable.
    F : float or sequence of float
        Share(s) of the total magnitude, in [0, 1].

    Returns
    -------
    numpy.ndarray of bool
        Shape ``(K, T)`` for a scalar ``F``, else ``(len(F), K, T)``: the bins taken in
        order of descending score (a stable sort, ties in row-major order) until their
        magnitudes sum to at least ``F * X.sum()``, the crossing bin included.

    Raises
    ------
    SpecblurError
        For a bad shape, non-finite or negative values, an all-zero ``X`` or an ``F``
        outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from specblur.deletion import select_bins
    >>> X = np.array([[1.0, 1.0], [2.0, 4.0]])
    >>> select_bins(X, -X, 0.25)          # quietest first: 1 + 1 >= 0.25 * 8
    array([[ True,  True],
           [False, False]])
    """
    X = _check_mag(X)
    s = _check_field("scores", scores, X.shape)
    scalar = np.ndim(F) == 0
    fractions = _check_fractions(np.atleast_1d(F))
    order = _order(s)
    counts, _ = _cuts(X, order, fractions)
    masks = np.zeros((fractions.size, X.size), dtype=bool)
    for j, n in enumerate(counts):
        masks[j, order[:n]] = True
    masks = masks.reshape((fractions.size,) + X.shape)
    return masks[0] if scalar else masks


# --- checks --------------------------------------------------------------------------------


def _real(name: str, a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise SpecblurError(f"{name} must have a real dtype, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


def _check_mag(X: Any) -> np.ndarray:
    X = _real("X", X)
    if X.ndim != 2 or X.size == 0:
        raise SpecblurError(f"X must be a non-empty 2-D (K, T) spectrogram, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise SpecblurError("X has non-finite values (NaN or infinity)")
    if (X < 0).any():
        raise SpecblurError("X has negative values; the deletion test needs magnitudes")
    if not X.sum() > 0:
        raise SpecblurError("X is all zero: there is no magnitude to share out, so the "
                            "energy-matched deletion test is undefined")
    return X


def _check_field(name: str, a: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = _real(name, a)
    if a.shape != shape:
        raise SpecblurError(f"shape mismatch: {name} has shape {a.shape} but X has shape {shape}")
    if not np.isfinite(a).all():
        raise SpecblurError(f"{name} has non-finite values (NaN or infinity)")
    return a


def _numbers(name: str, values: Any, what: str, ok) -> np.ndarray:
    """``values`` as a flat float array, non-empty, finite, each passing ``ok``."""
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SpecblurError(f"{name} must be {what}, got {values!r}") from None
    if a.size == 0:
        raise SpecblurError(f"{name} is empty")
    if not (np.isfinite(a).all() and ok(a).all()):
        raise SpecblurError(f"{name} must be {what}, got {values!r}")
    return a


def _check_fractions(fractions: Any, name: str = "fractions") -> np.ndarray:
    return _numbers(name, fractions, "numbers in [0, 1]", lambda f: (f >= 0) & (f <= 1))


def _check_radii(radii: Any, name: str = "radii") -> np.ndarray:
    return _numbers(name, radii, "finite numbers > 1 (r <= 1 blurs nothing)", lambda R: R > 1)


def _check_baselines(baselines: Any, occlusion: bool, name: str = "baselines") -> list[str]:
    """The baselines to run, in the order of :data:`SCORES`, without ``map``."""
    if isinstance(baselines, str):
        baselines = (baselines,)
    if baselines is None:
        baselines = ()
    if isinstance(baselines, Mapping) or not hasattr(baselines, "__iter__"):
        raise SpecblurError(f"{name} must be a list of names from {', '.join(BASELINES)}; "
                            f"got {baselines!r}")
    names = {"occlusion"} if occlusion else set()
    for item in baselines:
        if item == "map":
            continue
        if not isinstance(item, str) or item not in BASELINES:
            raise SpecblurError(f"{name}: unknown baseline {item!r}; valid baselines are "
                                f"{', '.join(BASELINES)}{suggest(item, BASELINES)}")
        names.add(item)
    return [s for s in BASELINES if s in names]


def _check_patch(patch: Any, name: str = "patch") -> tuple[int, int]:
    if np.ndim(patch) == 0:
        patch = (patch, patch)
    if len(patch) != 2:
        raise SpecblurError(f"{name} must be (patch_bins, patch_frames), got {patch!r}")
    return (to_positive_int(patch[0], f"{name}[0] (patch_bins)", strict_type=True),
            to_positive_int(patch[1], f"{name}[1] (patch_frames)", strict_type=True))


def check_options(options: Mapping[str, Any] | None = None, where: str = "") -> dict[str, Any]:
    """Check the deletion test's options and resolve them to plain values.

    :func:`faithfulness` checks its keyword arguments with this function, and so does a
    sweep file's ``evaluate: {faithfulness: {...}}`` section, so both accept the same
    values and give the same messages.

    Parameters
    ----------
    options : mapping, optional
        Some of :data:`OPTIONS`; the others take :func:`faithfulness`'s defaults.
    where : str
        How messages name the options: ``""`` names them alone (``radii must be ...``);
        ``"grid.yaml: evaluate.faithfulness"`` gives ``grid.yaml:
        evaluate.faithfulness.radii must be ...``.

    Returns
    -------
    dict
        Every option, in the order of :data:`OPTIONS`, as YAML- and JSON-friendly values:
        ``radii`` and ``fractions`` (lists of float), ``baselines`` (list of str in the
        order of :data:`SCORES`, with ``occlusion`` when ``occlusion`` is set), ``mode``
        (str), ``n_random``, ``seed``, ``batch`` (int), ``occlusion`` (bool: whether
        ``occlusion`` is among the baselines) and ``patch`` (two ints).

    Raises
    ------
    SpecblurError
        For an unknown option or baseline (with the closest name), radii <= 1, fractions
        outside [0, 1], an unknown mode, a non-positive ``n_random``, ``batch`` or patch
        size, a negative ``seed`` or a non-boolean ``occlusion``.

    Examples
    --------
    >>> from specblur.deletion import check_options
    >>> opts = check_options({"radii": [16], "baselines": ["random", "anti"]})
    >>> opts["radii"], opts["baselines"], opts["mode"]
    ([16.0], ['anti', 'random'], 'conserve')
    >>> check_options({"radius": [16]}, where="grid.yaml: evaluate.faithfulness")
    Traceback (most recent call last):
    ...
    specblur.errors.SpecblurError: grid.yaml: evaluate.faithfulness: unknown option 'radius'; did you mean 'radii'?
    """
    options = {} if options is None else options
    if where:
        check_keys(options, OPTIONS, where, what="option")

    def name(key):
        return f"{where}.{key}" if where else key

    given = {**_DEFAULTS, **options}
    occlusion = given["occlusion"]
    if not isinstance(occlusion, (bool, np.bool_)):
        raise SpecblurError(f"{name('occlusion')} must be true or false, got {occlusion!r}")
    try:
        mode_code(given["mode"])  # an unknown mode fails here, naming the valid ones
    except SpecblurError as exc:
        raise SpecblurError(f"{name('mode')}: {exc}" if where else str(exc)) from None
    seed = to_int(given["seed"], name("seed"))
    if seed < 0:
        raise SpecblurError(f"{name('seed')} must be a non-negative integer, got {seed}")
    baselines = _check_baselines(given["baselines"], bool(occlusion), name("baselines"))
    return {
        "radii": _check_radii(given["radii"], name("radii")).tolist(),
        "fractions": _check_fractions(given["fractions"], name("fractions")).tolist(),
        "baselines": baselines,
        "mode": given["mode"],
        "n_random": to_positive_int(given["n_random"], name("n_random"), strict_type=True),
        "seed": seed,
        "occlusion": "occlusion" in baselines,
        "patch": list(_check_patch(given["patch"], name("patch"))),
        "batch": to_positive_int(given["batch"], name("batch"), strict_type=True),
    }


# --- the model -----------------------------------------------------------------------------


def _build_model(model: Any, *, sr: int, n_fft: int, n_bins: int, seed: int, spec=None):
    if isinstance(model, (Mapping, str)):
        from .models import check_model_input, make_model

        if spec is not None:
            check_model_input(model, sr=spec.sr, n_fft=spec.n_fft, hop=spec.hop,
                              where="faithfulness")
        return make_model(model, sr=sr, n_fft=n_fft, n_bins=n_bins, seed=seed)
    if not callable(getattr(model, "forward", None)):
        raise SpecblurError(f"model must be a model spec (a mapping with 'kind') or an object "
                            f"with forward(Y) and vjp(Y, g_out); got {type(model).__name__}")
    return model


class _Phi:
    """The model with its reference output ``Φ(X)``, batched when the model allows it.

    The built-in models take a ``(B, K, T)`` stack (their ``supports_batch`` is True). A
    plug-in says so with the same boolean attribute; without one, a two-item stack is tried once and its
    outputs compared with per-item calls, and any exception, wrong shape or mismatch means
    per-item calls from then on.
    """

    def __init__(self, model: Any, X: np.ndarray):
        self.model = model
        self.ref = np.asarray(model.forward(X), dtype=np.float64)
        if not np.isfinite(self.ref).all():
            raise SpecblurError("the model's output at X has non-finite values")
        flag = getattr(model, "supports_batch", None)
        if isinstance(flag, (bool, np.bool_)):
            self.batched = bool(flag)
        else:
            self.batched = self._probe(X)
        self.calls = 0

    def _probe(self, X: np.ndarray) -> bool:
        other = X[::-1].copy()  # any second input with the same shape
        try:
            single = np.asarray(self.model.forward(other), dtype=np.float64)
            both = np.asarray(self.model.forward(np.stack([X, other])), dtype=np.float64)
        except Exception:
            return False
        if both.shape != (2,) + self.ref.shape:
            return False
        scale = max(float(np.abs(self.ref).max()), float(np.abs(single).max()), 1e-300)
        return bool(np.allclose(both[0], self.ref, rtol=1e-5, atol=1e-6 * scale)
                    and np.allclose(both[1], single, rtol=1e-5, atol=1e-6 * scale))

    def distances(self, Y: np.ndarray) -> np.ndarray:
        """``mean((Φ(Y_b) - Φ(X))**2)`` for each item of a ``(B, K, T)`` stack."""
        if self.batched:
            self.calls += 1
            outs = np.asarray(self.model.forward(Y), dtype=np.float64)
            if outs.shape != (Y.shape[0],) + self.ref.shape:
                raise SpecblurError(
                    f"the model returned shape {outs.shape} for a batch of {Y.shape[0]}; "
                    f"expected {(Y.shape[0],) + self.ref.shape}. Set supports_batch = False "
                    "on a model that takes only (K, T)")
            diff = outs - self.ref
            return np.mean(diff.reshape(Y.shape[0], -1) ** 2, axis=1)
        d = np.empty(Y.shape[0])
        for b in range(Y.shape[0]):
            self.calls += 1
            out = np.asarray(self.model.forward(Y[b]), dtype=np.float64)
            d[b] = np.mean((out - self.ref) ** 2)
        return d


# --- evaluation ----------------------------------------------------------------------------


def _evaluate(X, phi, R, items, mode, device, batch):
    """Distances for fields that are 1 everywhere and ``R`` on each item's flat indices.

    Items with no indices are the identity and get ``d = 0`` without a model call.
    """
    K, T = X.shape
    d = np.zeros(len(items))
    todo = [j for j, idx in enumerate(items) if len(idx)]
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        B = len(chunk)
        fields = np.ones((B, K * T))
        for b, j in enumerate(chunk):
            fields[b, items[j]] = R
        Y = blur(np.broadcast_to(X, (B, K, T)), fields.reshape(B, K, T), mode=mode,
                 device=device)
        d[chunk] = phi.distances(np.asarray(Y))
    if not np.isfinite(d).all():
        raise SpecblurError(f"the model's output distance is not finite at R={R:g}")
    return d


def _gradient_scores(X, phi, R, mode, device):
    """``-|∂D/∂r|`` at the uniform field ``r = R``: one forward, the model VJP, blur_vjp."""
    if not callable(getattr(phi.model, "vjp", None)):
        raise SpecblurError("the gradient baseline needs a model with vjp(Y, g_out)")
    r = np.full_like(X, R)
    Y = np.asarray(blur(X, r, mode=mode, device=device))
    phi.calls += 1
    out = np.asarray(phi.model.forward(Y), dtype=np.float64)
    g_out = 2.0 * (out - phi.ref) / out.size
    g_Y = np.asarray(phi.model.vjp(Y, g_out), dtype=np.float64)
    _, dr = blur_vjp(X, r, g_Y.reshape(X.shape), mode=mode, device=device)
    dr = np.asarray(dr, dtype=np.float64)
    if not np.isfinite(dr).all():
        raise SpecblurError(f"the gradient baseline is not finite at R={R:g}")
    return -np.abs(dr)


def _patches(shape, patch):
    K, T = shape
    pk, pt = patch
    flat = np.arange(K * T).reshape(K, T)
    return [flat[k:k + pk, t:t + pt].reshape(-1) for k in range(0, K, pk)
            for t in range(0, T, pt)]


def _occlusion_scores(X, phi, R, patch, mode, device, batch):
    """Each patch blurred alone at ``R``; a patch's score is ``-d``, shared by its bins."""
    patches = _patches(X.shape, patch)
    d = _evaluate(X, phi, R, patches, mode, device, batch)
    s = np.empty(X.size)
    for idx, dj in zip(patches, d):
        s[idx] = -dj
    return s.reshape(X.shape)


def faithfulness(X: Any, r: Any, *, model: Any = None, sr: int = SR,
                 n_fft: int | None = None, radii: Sequence[float] = (16, 64),
                 fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 baselines: Sequence[str] = ("anti", "random", "energy", "gradient"),
                 mode: str = "conserve", n_random: int = 8, seed: int = 0,
                 occlusion: bool = False, patch: tuple[int, int] = (8, 8), device: str = "cpu",
                 batch: int = 16) -> pd.DataFrame:
    """Energy-matched deletion test of a radius map against baseline scores (SPEC §9.5).

    For each score field ``s`` (higher = more blurrable), each test radius ``R`` and each
    magnitude share ``F``: order the bins by ``s``, descending (a stable sort, ties in
    row-major order); take them in that order until their magnitudes sum to at least
    ``F * X.sum()``, the crossing bin included; blur exactly those bins at radius ``R``
    (every other bin at ``r = 1``) in ``mode``; and measure the model's output distance
    ``d = mean((Φ(Y) - Φ(X))**2)``.

    Parameters
    ----------
    X : array_like (K, T) or Spectrogram
        Non-negative magnitude spectrogram. A :class:`~specblur.audio.Spectrogram` also
        gives ``sr`` and ``n_fft`` (and, for a model spec, its input settings are checked).
    r : array_like (K, T) or FitResult
        The map: a radius field, or a :class:`~specblur.FitResult` (its ``r``).
    model : mapping, str or object, optional
        A model spec for :func:`specblur.models.make_model` (built with ``seed``), or an
        object with ``forward(Y)`` and ``vjp(Y, g_out)``. Default: the model and seed of
        ``r`` when it is a FitResult, else ``{"kind": "identity"}``.
    sr : int
        Sample rate, for model specs, when ``X`` is an array.
    n_fft : int, optional
        DFT length, for model specs, when ``X`` is an array; default ``2 * (K - 1)``.
    radii : sequence of float
        Test radii ``R``, each > 1.
    fractions : sequence of float
        Magnitude shares ``F`` in [0, 1]. ``F = 0`` blurs nothing (``d = 0``).
    baselines : sequence of str
        Scores to compare with the map, from ``anti`` (``-r``), ``random`` (uniform random
        scores, ``n_random`` seeded draws), ``energy`` (``-X``, the quietest bins first),
        ``gradient`` (``-|∂D/∂r|`` at the uniform field ``r = R``) and ``occlusion``.
    mode : str
        Boundary mode of the test blur (SPEC §4); ``conserve`` by default whatever mode
        the map was learned in.
    n_random : int
        Number of random draws. The same draws serve every ``R`` and ``F``.
    seed : int
        Seed of the random draws (``numpy.random.default_rng(seed)``), and of the model
        when ``model`` is a spec.
    occlusion : bool
        Also run the occlusion baseline (costly: one model call per patch and ``R``).
    patch : (int, int)
        Occlusion patch size, ``(patch_bins, patch_frames)``. Edge patches are smaller.
    device : {"cpu", "cuda"}
        Where the blur runs.
    batch : int
        Radius fields per blur call and model forward. Memory grows with it.

    Returns
    -------
    pandas.DataFrame
        One row per score, ``R`` and ``F`` (scores in the order of :data:`SCORES`), with
        columns :data:`COLUMNS`:

        * ``score``: ``map``, ``anti``, ``random``, ``energy``, ``gradient``, ``occlusion``;
        * ``R``, ``F``: the test radius and the requested magnitude share;
        * ``d``: the output distance (for ``random``, the mean over the draws);
        * ``d_std``: the standard deviation (ddof 0) over the random draws; NaN otherwise;
        * ``n_bins``: how many bins were blurred (for ``random``, the mean over draws);
        * ``energy_share``: the exact share of ``X.sum()`` those bins hold (>= ``F``).

        ``df.attrs`` holds ``seconds`` (wall time), ``model_calls`` (forward calls, batched
        or not, after the reference ``Φ(X)``), ``batched`` and ``n_random``.

    Raises
    ------
    SpecblurError
        For a bad shape, non-finite values (in ``X`` or ``r``), a negative or all-zero
        ``X``, an unknown baseline (with the closest name), radii <= 1, fractions outside
        [0, 1], an unknown mode, a non-boolean ``occlusion`` (see :func:`check_options`),
        or a model whose outputs are not finite.

    See Also
    --------
    faithfulness_summary : the headline ratios per ``R``.
    select_bins : the selection alone.

    Notes
    -----
    Readings of SPEC §9.5 where it is silent:

    * The total is the cumulative sum's own last value (``X.sum()`` up to rounding), so
      ``F = 1`` reaches it exactly and takes every bin with magnitude; zero-magnitude bins
      after the last such bin in score order are not taken. ``F = 0`` takes nothing.
    * ``d`` is the plain distance of SPEC §7 (no ``mse_norm``, no λ).
    * The gradient is taken with the blur's left derivative at an integer ``R`` (SPEC §3),
      and the gradient score is recomputed for every ``R``.
    * The same ``n_random`` draws serve every ``R`` and ``F``, so each draw gives one
      nested deletion curve.
    * The map is only an order: its radii are never used as blur radii, so a runaway map
      whose huge radii blur nothing in conserve mode is still tested at ``R``.

    Examples
    --------
    >>> import numpy as np
    >>> from specblur.deletion import faithfulness, faithfulness_summary
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((32, 10))
    >>> class Band:                       # the model only sees rows 12..19
    ...     def forward(self, Y):
    ...         return Y[..., 12:20, :]
    ...     def vjp(self, Y, g):
    ...         G = np.zeros(np.shape(Y))
    ...         G[..., 12:20, :] = g
    ...         return G
    >>> rows = np.arange(32)[:, None]
    >>> r = np.broadcast_to(1.0 + np.maximum(12 - rows, rows - 19).clip(0), X.shape)
    >>> df = faithfulness(X, r, model=Band(), radii=(4,), fractions=(0.3, 0.5))
    >>> sorted(df.columns) == sorted(["score", "R", "F", "d", "d_std", "n_bins",
    ...                               "energy_share"])
    True
    >>> summary = faithfulness_summary(df)
    >>> bool(summary.loc[4.0, "map/random"] < 0.1)
    True
    """
    start = time.perf_counter()
    from .audio import Spectrogram

    spec = X if isinstance(X, Spectrogram) else None
    if spec is not None:
        X, sr, n_fft = spec.mag, spec.sr, spec.n_fft
    X = _check_mag(X)
    fit_settings = None
    if hasattr(r, "r") and hasattr(r, "settings"):  # a FitResult
        fit_settings = r.settings or {}
        r = r.r
    r = _check_field("r", r, X.shape)
    if model is None:
        if fit_settings:
            model = fit_settings.get("model", {"kind": "identity"})
            model_seed = int(fit_settings.get("seed", seed))
        else:
            model, model_seed = {"kind": "identity"}, seed
    else:
        model_seed = seed
    opts = check_options({"radii": radii, "fractions": fractions, "baselines": baselines,
                          "mode": mode, "n_random": n_random, "seed": seed,
                          "occlusion": occlusion, "patch": patch, "batch": batch})
    R_all, fractions = np.asarray(opts["radii"]), np.asarray(opts["fractions"])
    scores = ["map", *opts["baselines"]]
    n_random, seed, patch, batch = opts["n_random"], opts["seed"], opts["patch"], opts["batch"]
    n_fft = 2 * (X.shape[0] - 1) if n_fft is None else to_positive_int(n_fft, "n_fft",
                                                                           strict_type=True)
    model = _build_model(model, sr=int(sr), n_fft=n_fft, n_bins=X.shape[0], seed=model_seed,
                         spec=spec)
    phi = _Phi(model, X)

    # Orders that do not depend on R: one argsort per score field.
    fixed = {"map": [_order(r)], "anti": [_order(-r)], "energy": [_order(-X)]}
    if "random" in scores:
        rng = np.random.default_rng(seed)
        fixed["random"] = [_order(rng.random(X.shape)) for _ in range(n_random)]

    rows = []
    for R in R_all:
        orders = {s: fixed[s] for s in scores if s in fixed}
        if "gradient" in scores:
            orders["gradient"] = [_order(_gradient_scores(X, phi, R, mode, device))]
        if "occlusion" in scores:
            orders["occlusion"] = [_order(_occlusion_scores(X, phi, R, patch, mode, device,
                                                            batch))]
        items, where = [], []  # where[i] = (score, draw, counts, shares)
        for s in scores:
            for draw in orders[s]:
                counts, shares = _cuts(X, draw, fractions)
                where.append((s, len(items), counts, shares))
                items.extend(draw[:n] for n in counts)
        d = _evaluate(X, phi, R, items, mode, device, batch)
        per_score: dict[str, list] = {}
        for s, first, counts, shares in where:
            per_score.setdefault(s, []).append((d[first:first + fractions.size], counts,
                                                shares))
        for s in scores:
            runs = per_score[s]
            ds = np.array([x[0] for x in runs])
            ns = np.array([x[1] for x in runs], dtype=np.float64)
            es = np.array([x[2] for x in runs])
            for j, F in enumerate(fractions):
                rows.append((s, float(R), float(F), ds[:, j].mean(),
                             ds[:, j].std() if s == "random" else np.nan,
                             ns[:, j].mean(), es[:, j].mean()))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df.attrs.update(seconds=time.perf_counter() - start, model_calls=phi.calls,
                    batched=phi.batched, n_random=n_random)
    return df


#: :func:`faithfulness`'s defaults of :data:`OPTIONS`, read from its signature.
_DEFAULTS = {key: p.default for key, p in inspect.signature(faithfulness).parameters.items()
             if key in OPTIONS}


# --- summary -------------------------------------------------------------------------------


def faithfulness_summary(df: pd.DataFrame, F: float = 0.5,
                         curve: tuple[float, float] = (0.1, 0.9)) -> pd.DataFrame:
    """Headline ratios of a :func:`faithfulness` table, one row per test radius ``R``.

    Parameters
    ----------
    df : pandas.DataFrame
        A table returned by :func:`faithfulness`.
    F : float
        The magnitude share of the point ratios (SPEC's headline: 0.5). It must be one of
        ``df``'s fractions (compared to within 1e-9).
    curve : (float, float)
        The range of ``F`` that makes up the deletion curve (inclusive).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``R``. For every score ``s`` other than ``random`` in ``df``:

        * ``s/random``: ``d_s / d_random`` at ``F`` (``map/random``, ``anti/random``, ...);
        * ``curve s/random``: the deletion curve's mean normalised by random's, i.e. the
          mean over the fractions in ``curve`` of ``d_s`` divided by the mean over the same
          fractions of ``d_random`` (a ratio of areas under the two curves);

        and ``map/gradient`` at ``F`` when both scores are present. A faithful map has
        ``map/random`` and ``map/gradient`` well below 1 and ``anti/random`` above 1.
        A zero denominator gives NaN or infinity.

    Examples
    --------
    >>> import pandas as pd
    >>> from specblur.deletion import faithfulness_summary
    >>> df = pd.DataFrame({"score": ["map", "random", "map", "random"], "R": 16.0,
    ...                    "F": [0.5, 0.5, 0.7, 0.7], "d": [1.0, 4.0, 3.0, 6.0]})
    >>> faithfulness_summary(df).round(3).to_dict("records")
    [{'map/random': 0.25, 'curve map/random': 0.4}]
    """
    missing = {"score", "R", "F", "d"} - set(df.columns)
    if missing:
        raise SpecblurError(f"df lacks the column(s) {', '.join(sorted(missing))}; pass a "
                            "table from faithfulness()")
    fractions = df["F"].to_numpy(dtype=np.float64)
    at_F = np.isclose(fractions, F, rtol=0, atol=1e-9)
    if not at_F.any():
        raise SpecblurError(f"F={F!r} is not among the table's fractions "
                            f"{sorted(set(fractions.tolist()))}")
    lo, hi = curve
    in_curve = (fractions >= lo - 1e-9) & (fractions <= hi + 1e-9)
    point = df[at_F].pivot_table(index="R", columns="score", values="d", aggfunc="mean")
    area = df[in_curve].pivot_table(index="R", columns="score", values="d", aggfunc="mean")
    present = [s for s in SCORES if s in point.columns]
    out = pd.DataFrame(index=point.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        if "random" in point.columns:
            for s in present:
                if s != "random":
                    out[f"{s}/random"] = point[s] / point["random"]
        if "map" in point.columns and "gradient" in point.columns:
            out["map/gradient"] = point["map"] / point["gradient"]
        if "random" in area.columns:
            for s in present:
                if s != "random" and s in area.columns:
                    out[f"curve {s}/random"] = area[s] / area["random"]
    out.columns.name = None
    return out
