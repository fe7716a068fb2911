"""Tests of specblur.fit against an independent NumPy reference (SPEC sections 7-8).

The reference below is written from the SPEC alone: the blur and its radius gradient
come from the dense loops of ``tests/naive.py``, the parameterisations, the entropy
term, the two placements of lambda, the optimisers and the history statistics are
spelled out here again.
"""

import itertools
import zlib

import numpy as np
import pytest
import soundfile as sf

import naive
import specblur
from specblur.errors import SpecblurError

SR = 8000
PARAMS = ("raw", "relu", "softplus", "exp")
MODES = ("truncate", "conserve")
HISTORY_COLUMNS = [
    "epoch", "loss", "mse", "entropy", "gmse_mean", "gmse_var", "gent_mean", "gent_var",
    "m_mean", "m_std", "m_min", "m_max", "frac_identity", "frac_negative", "energy_ratio",
    "tv", "gtv_mean", "gtv_var", "blur_exponent", "seconds",
]
OUTPUT_COLUMNS = ["dim", "mean", "std", "q05", "q50", "q95"]
LOGMEL = {"kind": "logmel", "n_mels": 4, "eps": 1e-3}


# --------------------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------------------

def sigmoid(m):
    return 1.0 / (1.0 + np.exp(-m))


def param_forward(m, param):
    """``r = param(m)`` and ``dr/dm``."""
    if param in ("raw", "relu"):
        return m.copy(), np.ones_like(m)
    if param == "softplus":
        return np.log1p(np.exp(m)), sigmoid(m)
    if param == "exp":
        return np.exp(m), np.exp(m)
    raise AssertionError(param)


def param_inverse(r0, param):
    r0 = np.asarray(r0, dtype=np.float64)
    if param == "raw":
        return r0.copy()
    if param == "relu":
        return np.maximum(r0, 0.0)  # the initial projection
    if param == "softplus":
        return np.log(np.expm1(r0))
    if param == "exp":
        return np.log(r0)
    raise AssertionError(param)


def entropy_terms(m, r, param, eps):
    """``h(m)`` and ``dh/dm`` per bin (the table of SPEC section 7)."""
    if param in ("raw", "relu"):
        return np.log(np.abs(m) + eps), np.sign(m) / (np.abs(m) + eps)
    if param == "softplus":
        return np.log(r + eps), sigmoid(m) / (r + eps)
    if param == "exp":
        return m.copy(), np.ones_like(m)
    raise AssertionError(param)


class IdentityPhi:
    def forward(self, Y):
        return Y

    def vjp(self, Y, g):
        return g


class LogMelPhi:
    """log(M @ Y + eps) with librosa's mel filterbank, computed here."""

    def __init__(self, K, n_mels, eps, sr=SR):
        import librosa

        self.M = librosa.filters.mel(sr=sr, n_fft=2 * (K - 1), n_mels=n_mels,
                                     dtype=np.float64)
        assert (self.M.sum(axis=1) > 0).all(), "an empty mel filter makes a weak test"
        self.eps = eps

    def forward(self, Y):
        return np.log(self.M @ Y + self.eps)

    def vjp(self, Y, g):
        return self.M.T @ (g / (self.M @ Y + self.eps))


def make_phi(model, K):
    if model["kind"] == "identity":
        return IdentityPhi()
    return LogMelPhi(K, model["n_mels"], model["eps"])


def coefficients(s):
    if s["lambda_on"] == "entropy":
        return 1.0, s["lam"]
    return s["lam"], 1.0


def reference(X, m, s, phi):
    """Loss parts, gradient parts and history statistics at ``m`` (SPEC section 7)."""
    eps = s.get("eps", 1e-8)
    c_D, c_H = coefficients(s)
    reduce = 1.0 / X.size if s["entropy_reduce"] == "mean" else 1.0
    r, drdm = param_forward(m, s["param"])
    h, dhdm = entropy_terms(m, r, s["param"], eps)
    H = reduce * h.sum()
    Y = naive.blur(X, r, s["mode"])
    out, ref = phi.forward(Y), phi.forward(X)
    D = np.mean((out - ref) ** 2)
    G = c_D * phi.vjp(Y, 2.0 * (out - ref) / out.size)
    dr = naive.blur_vjp(X, r, G, s["mode"])[1]
    g_mse = dr * drdm
    g_ent = -c_H * reduce * dhdm
    row = {
        "loss": c_D * D - c_H * H, "mse": D, "entropy": H,
        "gmse_mean": g_mse.mean(), "gmse_var": g_mse.var(),
        "gent_mean": g_ent.mean(), "gent_var": g_ent.var(),
        "m_mean": m.mean(), "m_std": m.std(), "m_min": m.min(), "m_max": m.max(),
        "frac_identity": np.mean(r <= 1.0), "frac_negative": np.mean(m < 0.0),
        "energy_ratio": Y.sum() / X.sum(),
    }
    return {"r": r, "Y": Y, "g_mse": g_mse, "g_ent": g_ent, "g": g_mse + g_ent, "row": row}


def sgd_reference(X, r0, s, phi, epochs):
    """Plain SGD, with the relu projection at the start of every epoch."""
    m = param_inverse(r0, s["param"])
    for _ in range(epochs):
        if s["param"] == "relu":
            m = np.maximum(m, 0.0)
        m = m - s["lr"] * reference(X, m, s, phi)["g"]
    return m


def assert_close(a, b, rtol=1e-9, floor=1e-12, what=""):
    """``max|a - b| <= rtol * max|b| + floor``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, what
    err = np.max(np.abs(a - b)) if a.size else 0.0
    tol = rtol * (np.max(np.abs(b)) if b.size else 0.0) + floor
    assert err <= tol, f"{what}: max|a-b| = {err:.3g} > {tol:.3g}"


def assert_row(row, expected, rtol=1e-9, what=""):
    for key, value in expected.items():
        assert_close(row[key], value, rtol=rtol, floor=1e-13, what=f"{what} {key}")


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

def spectrogram(K, T, seed):
    rng = np.random.default_rng(seed)
    return rng.gamma(0.7, 2.0, size=(K, T)) + 0.01


def radius_field(K, T, seed, allow_negative):
    """Radii away from integers: identity ones, small, medium and beyond K."""
    rng = np.random.default_rng(seed)
    bands = [(0.2, 0.8), (1.2, 1.8), (2.2, 2.8), (3.3, 3.7), (K + 0.3, K + 0.7)]
    if allow_negative:
        bands.append((-0.8, -0.2))
    pick = rng.integers(len(bands), size=(K, T))
    lo = np.array([b[0] for b in bands])[pick]
    hi = np.array([b[1] for b in bands])[pick]
    return rng.uniform(lo, hi)


LAM = {("entropy", "sum"): 0.1, ("entropy", "mean"): 5.0,
       ("mse", "sum"): 10.0, ("mse", "mean"): 0.2}


def fit(X, **settings):
    return specblur.fit(X, sr=SR, device="cpu", **settings)


# --------------------------------------------------------------------------------------
# 1. One SGD epoch against the reference, and history rows 0 and 1
# --------------------------------------------------------------------------------------

CASES = [(p, mo, on, red, {"kind": "identity"})
         for p, mo, on, red in itertools.product(PARAMS, MODES, ("entropy", "mse"),
                                                 ("sum", "mean"))]
CASES += [(p, mo, "mse", "sum", LOGMEL) for p, mo in itertools.product(PARAMS, MODES)]
CASES += [("raw", "truncate", "entropy", "mean", LOGMEL)]
# renormalize (SPEC 9.1): every param with the MSE-side lambda, and one logmel case
CASES += [(p, "renormalize", "mse", "sum", {"kind": "identity"}) for p in PARAMS]
CASES += [("softplus", "renormalize", "entropy", "mean", LOGMEL)]


@pytest.mark.parametrize("param,mode,lambda_on,reduce,model", CASES,
                         ids=lambda v: v["kind"] if isinstance(v, dict) else str(v))
def test_one_sgd_epoch_matches_reference(param, mode, lambda_on, reduce, model):
    K = 17 if model["kind"] == "logmel" else 13
    T = 4
    seed = zlib.crc32(f"{param}-{mode}-{lambda_on}-{reduce}-{model['kind']}".encode())
    X = spectrogram(K, T, seed)
    r0 = radius_field(K, T, seed + 1, allow_negative=param in ("raw", "relu"))
    lam = LAM[lambda_on, reduce]
    if model["kind"] == "logmel":  # its MSE gradients are smaller
        lam = lam * 10 if lambda_on == "mse" else lam / 10
    s = dict(param=param, mode=mode, lambda_on=lambda_on, entropy_reduce=reduce,
             lam=lam, lr=0.3, optimizer="sgd", model=model)
    phi = make_phi(model, K)

    res = fit(X, m_init=r0, epochs=1, **s)
    assert res.status == "done"

    m0 = param_inverse(r0, param)
    ref0 = reference(X, m0, s, phi)
    # Both parts of the gradient matter in this set-up, so neither can hide the other.
    assert np.max(np.abs(ref0["g_mse"])) > 1e-1 * np.median(np.abs(ref0["g_ent"]))
    assert np.max(np.abs(ref0["g_ent"])) > 1e-1 * np.median(np.abs(ref0["g_mse"]))
    m1 = m0 - 0.3 * ref0["g"]

    assert res.m.shape == X.shape and res.r.shape == X.shape
    assert_close(res.m, m1, what="m after one epoch")
    ref1 = reference(X, m1, s, phi)
    assert_close(res.r, ref1["r"], what="r after one epoch")

    hist = res.history
    assert list(hist["epoch"]) == [0, 1]
    assert_row(hist.iloc[0], ref0["row"], what="row 0")
    assert_row(hist.iloc[1], ref1["row"], what="row 1")
    assert hist.iloc[0]["loss"] == pytest.approx(
        hist.iloc[0]["mse"] * coefficients(s)[0] - coefficients(s)[1] * hist.iloc[0]["entropy"],
        rel=1e-12, abs=1e-12)

    snap = res.snapshots[1]
    assert_close(snap["m"], m1, what="snapshot m")
    assert_close(snap["r"], ref1["r"], what="snapshot r")
    assert_close(snap["Y"], ref1["Y"], what="snapshot Y")
    assert_close(snap["g_mse"], ref1["g_mse"], rtol=1e-8, what="snapshot g_mse")
    assert_close(snap["g_ent"], ref1["g_ent"], rtol=1e-8, what="snapshot g_ent")


def test_float32_input_gives_the_float64_result():
    X = spectrogram(11, 3, 5).astype(np.float32)
    r0 = radius_field(11, 3, 6, allow_negative=False)
    s = dict(param="softplus", mode="conserve", lambda_on="entropy", entropy_reduce="sum",
             lam=0.1, lr=0.3, model={"kind": "identity"})
    res = fit(X, m_init=r0, epochs=2, **s)
    m2 = sgd_reference(X.astype(np.float64), r0, s, IdentityPhi(), 2)
    assert_close(res.m, m2, rtol=1e-6)


# --------------------------------------------------------------------------------------
# 2. Finite differences of the logged loss
# --------------------------------------------------------------------------------------

def param_of(m, param):
    return param_forward(np.asarray(m, dtype=np.float64), param)[0]


@pytest.mark.parametrize("param,mode,model", [
    ("raw", "truncate", {"kind": "identity"}),
    ("raw", "conserve", LOGMEL),
    ("softplus", "truncate", LOGMEL),
    ("exp", "conserve", {"kind": "identity"}),
    ("exp", "renormalize", LOGMEL),
])
def test_loss_finite_differences(param, mode, model):
    K, T = 13 if model["kind"] == "identity" else 17, 3
    X = spectrogram(K, T, 11)
    r0 = radius_field(K, T, 12, allow_negative=param == "raw")
    s = dict(param=param, mode=mode, lambda_on="mse", entropy_reduce="sum", lam=20.0,
             lr=0.3, model=model)
    m0 = param_inverse(r0, param)

    def loss(m):
        # m_init is a radius; the radii here stay >= 1e-3 away from integers.
        return fit(X, m_init=param_of(m, param), epochs=1, **s).history.iloc[0]["loss"]

    res = fit(X, m_init=r0, epochs=1, **s)
    g = (m0 - res.m) / 0.3  # the gradient that the first update used

    phi = make_phi(model, K)
    ref = reference(X, m0, s, phi)
    assert res.history.iloc[0]["loss"] == pytest.approx(ref["row"]["loss"], rel=1e-10)

    rng = np.random.default_rng(13)
    r_active = np.argwhere(r0 > 1.0)
    picks = [tuple(r_active[i]) for i in rng.choice(len(r_active), 4, replace=False)]
    h = 1e-5
    for idx in picks:
        assert abs(r0[idx] - np.round(r0[idx])) > 0.1
        e = np.zeros_like(m0)
        e[idx] = h
        fd = (loss(m0 + e) - loss(m0 - e)) / (2 * h)
        assert fd == pytest.approx(g[idx], rel=1e-5, abs=1e-7), idx
        assert fd == pytest.approx(ref["g"][idx], rel=1e-5, abs=1e-7), idx


# --------------------------------------------------------------------------------------
# 3. Adam
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("param,mode,model", [
    ("raw", "truncate", {"kind": "identity"}),
    ("softplus", "conserve", LOGMEL),
])
def test_adam_three_epochs(param, mode, model):
    K, T = 13 if model["kind"] == "identity" else 17, 4
    X = spectrogram(K, T, 21)
    r0 = radius_field(K, T, 22, allow_negative=param == "raw")
    lr, b1, b2, aeps = 0.05, 0.8, 0.95, 0.03
    s = dict(param=param, mode=mode, lambda_on="entropy", entropy_reduce="mean", lam=2.0,
             optimizer="adam", lr=lr, beta1=b1, beta2=b2, adam_eps=aeps, model=model)
    phi = make_phi(model, K)
    res = fit(X, m_init=r0, epochs=3, **s)
    assert res.status == "done"

    m = param_inverse(r0, param)
    mom1 = np.zeros_like(m)
    mom2 = np.zeros_like(m)
    rows = []
    for t in range(1, 4):
        ref = reference(X, m, s, phi)
        rows.append(ref["row"])
        g = ref["g"]
        mom1 = b1 * mom1 + (1 - b1) * g
        mom2 = b2 * mom2 + (1 - b2) * g * g
        mhat = mom1 / (1 - b1**t)
        vhat = mom2 / (1 - b2**t)
        m = m - lr * mhat / (np.sqrt(vhat) + aeps)
    rows.append(reference(X, m, s, phi)["row"])
    # adam_eps must matter here, else its placement is not tested.
    assert np.median(np.sqrt(vhat)) < 10 * aeps

    assert_close(res.m, m, rtol=1e-9)
    assert list(res.history["epoch"]) == [0, 1, 2, 3]
    for e, row in enumerate(rows):
        assert_row(res.history.iloc[e], row, rtol=1e-8, what=f"adam row {e}")


# --------------------------------------------------------------------------------------
# 4. relu and raw
# --------------------------------------------------------------------------------------

def test_relu_projects_the_initial_field():
    K, T = 11, 3
    X = spectrogram(K, T, 31)
    r0 = radius_field(K, T, 32, allow_negative=True)
    assert (r0 < 0).any()
    s = dict(param="relu", mode="truncate", lambda_on="entropy", entropy_reduce="sum",
             lam=0.1, lr=0.3, model={"kind": "identity"})
    res = fit(X, m_init=r0, epochs=2, **s)
    row0 = res.history.iloc[0]
    assert row0["frac_negative"] == 0.0
    assert row0["m_min"] >= 0.0
    assert row0["m_mean"] == pytest.approx(np.maximum(r0, 0).mean(), rel=1e-12)
    # The projection happens again before the second update.
    assert_close(res.m, sgd_reference(X, r0, s, IdentityPhi(), 2))


@pytest.mark.parametrize("param", ["raw", "relu"])
def test_zero_m_gets_zero_entropy_gradient(param):
    K, T = 9, 3
    X = spectrogram(K, T, 41)
    r0 = np.zeros((K, T))
    if param == "relu":
        r0[::2] = -0.5  # projected to exactly 0
    res = fit(X, m_init=r0, epochs=1, param=param, lam=1.0, lr=1.0,
              model={"kind": "identity"})
    assert res.status == "done"
    assert (res.m == 0.0).all()
    row0 = res.history.iloc[0]
    assert row0["gent_mean"] == 0.0 and row0["gent_var"] == 0.0
    assert row0["gmse_mean"] == 0.0 and row0["mse"] == 0.0
    assert row0["frac_identity"] == 1.0
    assert row0["entropy"] == pytest.approx(K * T * np.log(1e-8), rel=1e-12)


def test_raw_keeps_negative_m():
    K, T = 9, 3
    X = spectrogram(K, T, 51)
    r0 = radius_field(K, T, 52, allow_negative=True)
    neg = r0 < 0
    assert neg.any()
    s = dict(param="raw", mode="truncate", lambda_on="entropy", entropy_reduce="sum",
             lam=0.1, lr=0.3, model={"kind": "identity"})
    res = fit(X, m_init=r0, epochs=1, **s)
    assert res.history.iloc[0]["frac_negative"] == pytest.approx(neg.mean())
    # The entropy pushes |m| up: negative bins get more negative.
    assert (res.m[neg] < r0[neg]).all()
    assert_close(res.m, sgd_reference(X, r0, s, IdentityPhi(), 1))


@pytest.mark.parametrize("epochs", [1, 2])
def test_relu_final_update_is_not_projected(epochs):
    K, T = 11, 3
    X = spectrogram(K, T, 61)
    r0 = np.full((K, T), 1.5)
    s = dict(param="relu", mode="truncate", lambda_on="entropy", entropy_reduce="sum",
             lam=1e-6, lr=100.0, model={"kind": "identity"})
    res = fit(X, m_init=r0, epochs=epochs, **s)
    expected = sgd_reference(X, r0, s, IdentityPhi(), epochs)
    assert (expected < 0).any(), "the set-up must drive some m below 0"
    if epochs == 2:  # the projection between the two updates matters here
        unprojected = sgd_reference(X, r0, dict(s, param="raw"), IdentityPhi(), epochs)
        assert np.max(np.abs(unprojected - expected)) > 1.0
    assert (res.m < 0).any()
    assert_close(res.m, expected)
    assert res.history.iloc[-1]["frac_negative"] == pytest.approx(np.mean(expected < 0))
    assert res.history.iloc[0]["frac_negative"] == 0.0
    assert_close(res.snapshots[epochs]["m"], expected)


# --------------------------------------------------------------------------------------
# 5. History and snapshots
# --------------------------------------------------------------------------------------

def test_history_every_epoch():
    X = spectrogram(9, 3, 71)
    res = fit(X, m_init=2.5, epochs=4, lam=0.1, lr=0.1)
    hist = res.history
    assert list(hist.columns) == HISTORY_COLUMNS
    assert list(hist["epoch"]) == [0, 1, 2, 3, 4]
    assert np.issubdtype(hist["epoch"].dtype, np.integer)
    assert (hist["seconds"] >= 0).all() and hist["seconds"].is_monotonic_increasing
    assert np.isfinite(hist.drop(columns="epoch").to_numpy(dtype=float)).all()
    assert sorted(res.snapshots) == [4]  # snapshot_every defaults to epochs


def test_history_log_every_and_snapshots():
    K, T = 9, 3
    X = spectrogram(K, T, 72)
    r0 = radius_field(K, T, 73, allow_negative=False)
    s = dict(param="raw", mode="conserve", lambda_on="mse", entropy_reduce="sum", lam=10.0,
             lr=0.05, model={"kind": "identity"})
    res = fit(X, m_init=r0, epochs=7, log_every=3, snapshot_every=2, **s)
    assert list(res.history.columns) == HISTORY_COLUMNS
    assert list(res.history["epoch"]) == [0, 3, 6, 7]
    assert sorted(res.snapshots) == [2, 4, 6, 7]

    res5 = fit(X, m_init=r0, epochs=5, snapshot_every=2, **s)
    assert sorted(res5.snapshots) == [2, 4, 5]

    # Logged rows and snapshots are those of the same run logged every epoch.
    full = fit(X, m_init=r0, epochs=7, **s)
    for col in HISTORY_COLUMNS[:-1]:
        np.testing.assert_array_equal(
            res.history[col].to_numpy(), full.history[col].to_numpy()[[0, 3, 6, 7]], col)

    # And each snapshot is consistent with the reference at its own m.
    phi = IdentityPhi()
    m = param_inverse(r0, "raw")
    for n in range(1, 8):
        m = m - 0.05 * reference(X, m, s, phi)["g"]
        if n in res.snapshots:
            snap, ref = res.snapshots[n], reference(X, m, s, phi)
            assert set(snap) == {"m", "r", "Y", "g_mse", "g_ent", "outputs"}
            assert_close(snap["m"], m, rtol=1e-8)
            assert_close(snap["Y"], ref["Y"], rtol=1e-8)
            assert_close(snap["g_mse"], ref["g_mse"], rtol=1e-7)
            assert_close(snap["g_ent"], ref["g_ent"], rtol=1e-7)
            out = snap["outputs"]
            assert list(out.columns) == OUTPUT_COLUMNS
            assert list(out["dim"]) == list(range(K))


def test_snapshot_outputs_logmel():
    K, T = 17, 5
    X = spectrogram(K, T, 81)
    res = fit(X, m_init=2.5, epochs=2, snapshot_every=1, lam=0.01, lr=0.1, model=LOGMEL)
    assert sorted(res.snapshots) == [1, 2]
    phi = LogMelPhi(K, 4, 1e-3)
    for snap in res.snapshots.values():
        out = snap["outputs"]
        assert list(out.columns) == OUTPUT_COLUMNS
        assert len(out) == 4
        assert list(out["dim"]) == [0, 1, 2, 3]
        F = phi.forward(snap["Y"])
        assert_close(out["mean"], F.mean(axis=1), rtol=1e-10)
        assert_close(out["q50"], np.median(F, axis=1), rtol=1e-10)
        assert_close(out["q05"], np.quantile(F, 0.05, axis=1), rtol=1e-10)
        assert_close(out["q95"], np.quantile(F, 0.95, axis=1), rtol=1e-10)
        # std: the SPEC does not fix ddof; accept either.
        std = out["std"].to_numpy()
        assert (np.allclose(std, F.std(axis=1), rtol=1e-10)
                or np.allclose(std, F.std(axis=1, ddof=1), rtol=1e-10))


# --------------------------------------------------------------------------------------
# 6. Divergence
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    dict(param="exp", m_init=2.5, lam=1.0, lr=1e3),             # r = e^m overflows
    dict(param="raw", m_init=2.5, lam=1e308, lr=1e10),           # the loss overflows
    dict(param="softplus", m_init=2.5, lam=1e300, lr=1e300),     # m overflows
])
def test_divergence_is_a_status(settings):
    X = spectrogram(9, 3, 91)
    with np.errstate(all="raise"):
        res = fit(X, epochs=10, **settings)
    assert res.status == "diverged"
    hist = res.history
    assert list(hist.columns) == HISTORY_COLUMNS
    assert len(hist) >= 1
    assert hist.iloc[-1]["epoch"] < 10
    assert res.m.shape == X.shape


def test_finite_run_is_done():
    X = spectrogram(9, 3, 92)
    res = fit(X, param="exp", m_init=2.5, lam=1.0, lr=1e-3, epochs=3)
    assert res.status == "done"
    assert res.history.iloc[-1]["epoch"] == 3


# --------------------------------------------------------------------------------------
# 7. Bad settings
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("param", ["softplus", "exp"])
@pytest.mark.parametrize("m_init", [0.0, -1.0, "field"])
def test_nonpositive_m_init_is_rejected(param, m_init):
    X = spectrogram(9, 3, 101)
    if m_init == "field":
        m_init = np.full(X.shape, 2.0)
        m_init[3, 1] = 0.0
    with pytest.raises(ValueError):
        fit(X, param=param, m_init=m_init, epochs=1)
    with pytest.raises(SpecblurError):
        fit(X, param=param, m_init=m_init, epochs=1)


def test_unknown_setting_is_rejected():
    assert issubclass(SpecblurError, ValueError)
    X = spectrogram(9, 3, 102)
    with pytest.raises(ValueError, match="learning_rate"):
        fit(X, learning_rate=0.1, epochs=1)


# --------------------------------------------------------------------------------------
# 8. Audio round trip
# --------------------------------------------------------------------------------------

def _write_test_signal(path, sr=16000):
    rng = np.random.default_rng(111)
    t = np.arange(sr // 2) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1230 * t + 0.4)
    y += 0.02 * rng.standard_normal(t.size)
    sf.write(path, y, sr, subtype="FLOAT")
    return y


def test_audio_round_trip_at_the_identity(tmp_path):
    src = tmp_path / "in.wav"
    _write_test_signal(src)
    spec = specblur.Spectrogram.from_audio(src, sr=16000, n_fft=256, hop=64)
    assert spec.mag.shape == (129, 1 + 8000 // 64)
    res = specblur.fit(spec, m_init=0.5, lam=1e-3, lambda_on="entropy", lr=1.0, epochs=2,
                       device="cpu")
    assert res.status == "done"
    assert (res.r <= 1.0).all()
    snap = res.snapshots[2]
    np.testing.assert_array_equal(snap["Y"], spec.mag)  # every radius is the identity
    out = tmp_path / "out.wav"
    spec.write_audio(out, snap["Y"])
    y_out, sr_out = sf.read(out, dtype="float64")
    y_in, sr_in = sf.read(src, dtype="float64")
    assert sr_out == sr_in == 16000
    assert y_out.shape == y_in.shape
    assert np.max(np.abs(y_out - y_in)) <= 1e-4


def test_spectrogram_input_supplies_sr_and_n_fft(tmp_path):
    src = tmp_path / "in.wav"
    _write_test_signal(src)
    spec = specblur.Spectrogram.from_audio(src, sr=8000, n_fft=32, hop=64)
    s = dict(m_init=2.5, lam=1.0, lambda_on="mse", lr=0.1, epochs=1, model=LOGMEL)
    a = specblur.fit(spec, device="cpu", **s)
    b = specblur.fit(spec.mag, sr=8000, device="cpu", **s)
    c = specblur.fit(spec.mag, sr=16000, device="cpu", **s)
    np.testing.assert_array_equal(a.m, b.m)
    assert not np.array_equal(a.m, c.m)
