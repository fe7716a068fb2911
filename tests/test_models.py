"""Tests for specblur.models: forward passes, analytic VJPs and spec validation."""

import textwrap

import numpy as np
import pytest

from specblur.errors import SpecblurError
from specblur.models import MODEL_KEYS, make_model, validate_model_spec

SR, N_FFT, K, T = 8000, 64, 33, 3


def fd_check(model, seed=0, h=1e-6):
    """Compare vjp with central differences of <forward(Y), g> in float64."""
    rng = np.random.default_rng(seed)
    Y = rng.uniform(0.1, 2.0, (K, T))
    out = model.forward(Y)
    assert out.ndim == 2 and out.shape[1] == T and out.dtype == np.float64
    g = rng.standard_normal(out.shape)
    analytic = model.vjp(Y, g)
    assert analytic.shape == (K, T)
    numeric = np.empty((K, T))
    for idx in np.ndindex(K, T):
        Yp, Ym = Y.copy(), Y.copy()
        Yp[idx] += h
        Ym[idx] -= h
        numeric[idx] = (np.sum(model.forward(Yp) * g) - np.sum(model.forward(Ym) * g)) / (2 * h)
    scale = np.max(np.abs(numeric))
    assert scale > 0
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6 * scale)
    return Y, out


def build(spec, seed=0):
    return make_model(spec, sr=SR, n_fft=N_FFT, n_bins=K, seed=seed)


def test_identity():
    Y, out = fd_check(build({"kind": "identity"}))
    np.testing.assert_array_equal(out, Y)


def test_logmel_forward_and_vjp():
    import librosa
    model = build({"kind": "logmel", "n_mels": 8, "eps": "1e-6"})
    Y, out = fd_check(model)
    M = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=8, dtype=np.float64)
    np.testing.assert_allclose(out, np.log(M @ Y + 1e-6), rtol=1e-14)
    assert out.shape == (8, T)


def test_logmel_fmin_fmax():
    fd_check(build({"kind": "logmel", "n_mels": 6, "fmin": 200, "fmax": 3000.0}))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_vjp(activation):
    spec = {"kind": "mlp", "n_mels": 8, "hidden": [7, 5], "out": 4, "activation": activation}
    _, out = fd_check(build(spec), seed=1)
    assert out.shape == (4, T)


def test_mlp_weights_follow_seed():
    spec = {"kind": "mlp", "n_mels": 8, "hidden": [6], "out": 3}
    Y = np.random.default_rng(2).uniform(0.1, 1.0, (K, T))
    a, b, c = (build(spec, seed=s).forward(Y) for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    model = build(spec, seed=5)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(model.weights[0], rng.standard_normal((6, 8)) / np.sqrt(8))


def test_mlp_without_hidden_layers_is_affine_in_logmel():
    model = build({"kind": "mlp", "n_mels": 8, "hidden": [], "out": 2})
    fd_check(model)


def test_batched_input():
    model = build({"kind": "mlp", "n_mels": 8, "hidden": [5], "out": 3})
    Y = np.random.default_rng(3).uniform(0.1, 1.0, (2, K, T))
    out = model.forward(Y)
    np.testing.assert_allclose(out[1], model.forward(Y[1]), rtol=1e-14)
    g = np.ones_like(out)
    np.testing.assert_allclose(model.vjp(Y, g)[0], model.vjp(Y[0], g[0]), rtol=1e-14)


PLUGIN = textwrap.dedent('''
    import numpy as np

    class Square:
        def __init__(self, scale):
            self.scale = scale

        def forward(self, Y):
            return self.scale * Y ** 2

        def vjp(self, Y, g_out):
            return 2 * self.scale * Y * g_out

    def make(sr, n_fft, n_bins, seed, scale=1.0):
        assert n_bins == n_fft // 2 + 1
        return Square(scale)

    def broken(sr, n_fft, n_bins, seed):
        return object()
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_phi_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_phi_plugin"


def test_python_plugin(plugin):
    model = build({"kind": "python", "factory": f"{plugin}:make", "scale": 3.0})
    Y, out = fd_check(model)
    np.testing.assert_allclose(out, 3.0 * Y ** 2)


def test_python_plugin_errors(plugin):
    with pytest.raises(SpecblurError, match="no_such_module_xyz:make"):
        build({"kind": "python", "factory": "no_such_module_xyz:make"})
    with pytest.raises(SpecblurError, match=f"{plugin}:missing"):
        build({"kind": "python", "factory": f"{plugin}:missing"})
    with pytest.raises(SpecblurError, match="forward or vjp"):
        build({"kind": "python", "factory": f"{plugin}:broken"})
    with pytest.raises(SpecblurError, match=f"{plugin}:make.*failed"):
        build({"kind": "python", "factory": f"{plugin}:make", "bogus": 1})
    with pytest.raises(SpecblurError, match="package.module:function"):
        build({"kind": "python", "factory": "no_colon"})
    with pytest.raises(SpecblurError, match="factory"):
        build({"kind": "python"})
    with pytest.raises(SpecblurError, match="seed"):
        build({"kind": "python", "factory": f"{plugin}:make", "seed": 1})


def test_validate_fills_defaults_and_casts():
    spec = validate_model_spec({"kind": "mlp", "n_mels": 20.0, "eps": "1e-5",
                                "hidden": ["8", 4.0], "fmin": 50})
    assert spec == {"kind": "mlp", "n_mels": 20, "eps": 1e-5, "hidden": [8, 4],
                    "fmin": 50.0, "out": 16, "activation": "tanh", "fmax": None}
    assert isinstance(spec["fmin"], float) and isinstance(spec["n_mels"], int)
    assert validate_model_spec({"kind": "logmel"}) == {
        "kind": "logmel", "n_mels": 40, "fmin": 0.0, "fmax": None, "eps": 1e-6}
    assert validate_model_spec("identity") == {"kind": "identity"}
    assert set(MODEL_KEYS) == {"identity", "logmel", "mlp", "python", "speaker_encoder"}
    assert MODEL_KEYS["logmel"]["n_mels"] == (int, 40)


@pytest.mark.parametrize("spec,pattern", [
    ({}, "no 'kind'.*identity, logmel, mlp, python"),
    ({"kind": "logmell"}, "unknown model kind 'logmell'.*did you mean 'logmel'"),
    ({"kind": "logmel", "n_mel": 40}, "model.n_mel.*did you mean 'n_mels'"),
    ({"kind": "identity", "n_mels": 40}, "model.n_mels"),
    ({"kind": "logmel", "n_mels": 40.5}, "model.n_mels must be an integer"),
    ({"kind": "logmel", "n_mels": True}, "model.n_mels must be an integer"),
    ({"kind": "logmel", "eps": "tiny"}, "model.eps must be a number"),
    ({"kind": "logmel", "eps": 0}, "model.eps must be positive"),
    ({"kind": "logmel", "fmin": 500, "fmax": 100}, "model.fmax"),
    ({"kind": "mlp", "activation": "sigmoid"}, "sigmoid.*tanh, relu"),
    ({"kind": "mlp", "hidden": [8, 0]}, "model.hidden"),
    ({"kind": "mlp", "hidden": "wide"}, "model.hidden"),
    ({"kind": "python", "factory": 3}, "model.factory must be a string"),
    ("nothing", "unknown model kind"),
    (5, "mapping"),
])
def test_bad_specs(spec, pattern):
    with pytest.raises(SpecblurError, match=pattern):
        validate_model_spec(spec)


def test_make_model_checks_bins_and_nyquist():
    with pytest.raises(SpecblurError, match="n_bins"):
        make_model({"kind": "logmel"}, sr=SR, n_fft=N_FFT, n_bins=K + 1)
    with pytest.raises(SpecblurError, match="Nyquist"):
        make_model({"kind": "logmel", "fmax": 6000}, sr=SR, n_fft=N_FFT, n_bins=K)
    assert make_model({"kind": "identity"}, sr=SR, n_fft=N_FFT, n_bins=7) is not None
