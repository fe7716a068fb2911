"""Multi-scale training (SPEC §9.6): each epoch blurs with ``r**e`` at a random scale."""
import math

import numpy as np
import pytest

import specblur
from specblur.errors import SpecblurError
from test_batch import assert_same_result
from test_batch import spectrogram as batch_spectrogram
from test_cli import write_wav
from test_objective_terms import param_forward, param_inverse

R_MAX = 24.0
BASE = dict(param="sigmoid", r_max=R_MAX, m_init=3.0, lam=50.0, lambda_on="mse",
            mode="conserve", optimizer="sgd", lr=0.5, model={"kind": "identity"},
            scale_min=2.0, scale_p=0.0)


def spectrogram(seed=0, K=20, T=9):
    return batch_spectrogram(seed, T, K)


def exponents(seed, epochs, p, lo=2.0, r_max=R_MAX):
    """The exponents a run draws (two uniforms per epoch), before any forced full scale."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs + 1):
        u, v = rng.random(2)
        out.append(1.0 if u < p else (math.log(lo) + v * (math.log(r_max) - math.log(lo)))
                   / math.log(r_max))
    return out


def sigmoid_radius(m):
    return param_forward(m, "sigmoid", R_MAX)[:2]


def reference_step(X, m, e, settings):
    """One SGD step of λ D(blur(X, r**e)) - Σ log(r + eps), written with the public API."""
    r, drdm = sigmoid_radius(m)
    rb = r ** e
    Y = specblur.blur(X, rb, mode=settings["mode"])
    G = 2.0 * settings["lam"] * (Y - X) / X.size
    _, dr_blur = specblur.blur_vjp(X, rb, G, mode=settings["mode"])
    dr = dr_blur * e * r ** (e - 1.0)
    g = dr * drdm - drdm / (r + 1e-8)
    return m - settings["lr"] * g


def test_first_updates_follow_the_chain_rule_through_r_to_the_e():
    X = spectrogram()
    res = specblur.fit(X, epochs=3, **BASE)
    es = exponents(0, 3, 0.0)
    m = np.full(X.shape, param_inverse(3.0, "sigmoid", R_MAX))
    for n in range(3):
        m = reference_step(X, m, es[n], BASE)
    np.testing.assert_allclose(res.m, m, rtol=1e-10, atol=1e-12)
    hist = res.history.set_index("epoch")
    np.testing.assert_allclose(hist.loc[[0, 1, 2], "blur_exponent"], es[:3], rtol=1e-15)
    assert hist.loc[3, "blur_exponent"] == 1.0  # the last row is at the run's own radii


def test_fit_gradient_at_a_scale_matches_finite_differences():
    # one SGD step of fit at a drawn exponent e, against central differences of the loss
    # lam D(blur(X, r(m)**e)) - sum log(r(m) + eps) in m, at radii whose powers stay away
    # from the blur's kinks (integers)
    X = spectrogram(3, K=16, T=4)
    r0 = np.random.default_rng(1).uniform(2.0, 9.0, X.shape)
    e = exponents(0, 1, 0.0)[0]
    r0 = np.where(np.abs(r0 ** e - np.round(r0 ** e)) < 0.05, r0 + 0.3, r0)
    settings = dict(BASE, m_init=r0, epochs=1, lr=1e-3)
    res = specblur.fit(X, **settings)
    m0 = param_inverse(r0, "sigmoid", R_MAX)
    grad = (m0 - res.m) / settings["lr"]

    def loss(m):
        r, _ = sigmoid_radius(m)
        Y = specblur.blur(X, r ** e, mode=settings["mode"])
        return settings["lam"] * np.mean((Y - X) ** 2) - np.log(r + 1e-8).sum()

    h = 1e-6
    for k, t in [(3, 0), (8, 2), (12, 3), (0, 1)]:
        up, down = m0.copy(), m0.copy()
        up[k, t] += h
        down[k, t] -= h
        numeric = (loss(up) - loss(down)) / (2 * h)
        assert numeric == pytest.approx(grad[k, t], rel=1e-5, abs=1e-9)


def test_scale_p_and_full_scale_epochs():
    X = spectrogram(1)
    res = specblur.fit(X, epochs=400, snapshot_every=100, **dict(BASE, scale_p=0.3, lr=0.05))
    hist = res.history.set_index("epoch")["blur_exponent"]
    want = exponents(0, 400, 0.3)
    for n in (100, 200, 300, 400):  # snapshot epochs and the last: the run's own radii
        want[n] = 1.0
    np.testing.assert_allclose(hist.to_numpy(), want, rtol=1e-15)
    # off: every epoch at the run's own radii
    plain = specblur.fit(X, epochs=5, **dict(BASE, scale_min=None))
    assert (plain.history["blur_exponent"] == 1.0).all()


def test_batched_multiscale_runs_equal_separate_fits():
    X1, X2 = spectrogram(4), spectrogram(5, T=6)
    runs = [dict(BASE, epochs=6, scale_p=0.5, seed=s) for s in (0, 7)]
    batch = specblur.fit_batch([X1, X2], runs)
    for X, settings, res in zip((X1, X2), runs, batch):
        assert_same_result(res, specblur.fit(X, **settings))
    assert batch[0].history["blur_exponent"].tolist() != batch[1].history["blur_exponent"].tolist()


@pytest.mark.parametrize("changes, message", [
    ({"param": "raw", "r_max": None, "m_init": 2.0}, "needs a bounded radius"),
    ({"param": "exp", "r_max": None}, "without r_max"),
    ({"scale_min": 1.0}, "scale_min must be > 1"),
    ({"scale_min": 30.0}, "must not exceed r_max"),
    ({"scale_p": 1.5}, "scale_p must be in [0, 1]"),
])
def test_bad_multiscale_settings_are_refused(changes, message):
    with pytest.raises(SpecblurError, match=message.replace("[", r"\[").replace("]", r"\]")):
        specblur.fit(spectrogram(), epochs=2, **dict(BASE, **changes))


def test_sigmoid_default_bound_is_checked_in_fit():
    # r_max unset: sigmoid's bound is 4 K = 80 here, known only in fit
    settings = dict(BASE, r_max=None, scale_min=100.0)
    with pytest.raises(SpecblurError, match="must not exceed r_max = 80"):
        specblur.fit(spectrogram(), epochs=2, **settings)


def test_multiscale_is_refused_on_cuda():
    with pytest.raises(SpecblurError, match="CPU only"):
        specblur.fit(spectrogram(), epochs=2, device="cuda", **BASE)


def test_sweep_files_check_multiscale_before_any_run(tmp_path):
    from specblur.sweep.config import load_sweep
    from specblur.sweep.runner import run_sweep

    write_wav(tmp_path / "a.wav", seconds=0.5, sr=8000)
    text = ("name: ms\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}\n"
            "base: {param: sigmoid, m_init: 2.0, epochs: 2, scale_min: %s}\nruns: [{}]\n")
    (tmp_path / "big.yaml").write_text(text % "200")  # K = 33: sigmoid's bound is 132
    with pytest.raises(SpecblurError, match="scale_min must not exceed r_max = 132"):
        load_sweep(tmp_path / "big.yaml")
    (tmp_path / "ok.yaml").write_text(text % "4")
    with pytest.raises(SpecblurError, match="CPU only"):
        run_sweep(load_sweep(tmp_path / "ok.yaml"), out=tmp_path / "out", device="cuda")
    assert not (tmp_path / "out").exists()


def test_scale_p_alone_does_not_change_the_run_id():
    import hashlib

    from specblur.settings import resolve
    from specblur.sweep.config import make_run_id

    sha = hashlib.sha256(b"x").hexdigest()
    inp = {"sr": 16000, "n_fft": 512, "hop": 128}
    plain = make_run_id(resolve({}), sha, inp)
    assert make_run_id(resolve({"scale_p": 0.2}), sha, inp) == plain
    on = dict(param="sigmoid", m_init=2.0, scale_min=4.0)
    ids = {plain, make_run_id(resolve(on), sha, inp),
           make_run_id(resolve(dict(on, scale_p=0.2)), sha, inp)}
    assert len(ids) == 3
