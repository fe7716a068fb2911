"""device="cuda" against device="cpu" under the CUDA simulator (SPEC section 6).

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py``.
"""

import os
from pathlib import Path

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 in its own process", allow_module_level=True)

import numpy as np  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from numba import cuda  # noqa: E402

import specblur  # noqa: E402
from conftest import MODES, blur_inputs, modes  # noqa: E402

pytestmark = pytest.mark.cudasim

small = blur_inputs(max_K=12, max_T=4, max_B=2)
RTOL = {np.float64: 1e-10, np.float32: 1e-5}


def assert_agree(a, b, dtype):
    """``max|a - b| <= rtol * max(1e-3, max|b|)`` with the SPEC's per-dtype rtol.

    The floor keeps outputs whose exact value is 0 (say dr for K = 1 in conserve mode)
    from comparing two devices' rounding noise of order 1e-17; the inputs are O(1).
    """
    assert isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == b.shape
    a, b = a.astype(np.float64), b.astype(np.float64)
    err, scale = np.max(np.abs(a - b)), max(1e-3, np.max(np.abs(b)))
    assert err <= RTOL[dtype] * scale, f"max|a-b| = {err:.3g} > {RTOL[dtype]:g} * {scale:.3g}"


@settings(max_examples=15)
@given(case=small, mode=modes)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_cuda_matches_cpu(dtype, case, mode):
    X, r, _ = (a.astype(dtype) for a in case)
    Y = specblur.blur(X, r, mode=mode, device="cuda")
    assert_agree(Y, specblur.blur(X, r, mode=mode, device="cpu"), dtype)


@settings(max_examples=15)
@given(case=small, mode=modes)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vjp_cuda_matches_cpu(dtype, case, mode):
    X, r, G = (a.astype(dtype) for a in case)
    got = specblur.blur_vjp(X, r, G, mode=mode, device="cuda")
    ref = specblur.blur_vjp(X, r, G, mode=mode, device="cpu")
    assert len(got) == 2
    for a, b in zip(got, ref):
        assert_agree(a, b, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3)])
def test_device_arrays_in_device_arrays_out(mode, shape):
    rng = np.random.default_rng(0)
    X, G = rng.normal(size=(2,) + shape)
    r = rng.uniform(-1, 8, size=shape)
    dX_, r_, G_ = (cuda.to_device(a) for a in (X, r, G))
    Y = specblur.blur(dX_, r_, mode=mode, device="cuda")
    grads = specblur.blur_vjp(dX_, r_, G_, mode=mode, device="cuda")
    for out in (Y, *grads):
        assert hasattr(out, "copy_to_host") and not isinstance(out, np.ndarray)
    assert_agree(Y.copy_to_host(), specblur.blur(X, r, mode=mode, device="cpu"), np.float64)
    for out, ref in zip(grads, specblur.blur_vjp(X, r, G, mode=mode, device="cpu")):
        assert_agree(out.copy_to_host(), ref, np.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("K", [1, 9])
def test_huge_radii_cuda_matches_cpu(mode, K):
    """Radii far beyond K (up to 1e300) and K = 1 give the same finite values on both devices."""
    rng = np.random.default_rng(1)
    X, G = rng.normal(size=(2, K, 4))
    r = rng.uniform(-1, 3 * K, size=X.shape)
    r[::2, 0] = 1e300
    r[1::3, 1] = 1e15
    r[:, 2] = 1e300
    r[:, 3] = 10.0 * K
    Y = specblur.blur(X, r, mode=mode, device="cuda")
    assert np.isfinite(Y).all()
    assert_agree(Y, specblur.blur(X, r, mode=mode, device="cpu"), np.float64)
    got = specblur.blur_vjp(X, r, G, mode=mode, device="cuda")
    for a, b in zip(got, specblur.blur_vjp(X, r, G, mode=mode, device="cpu")):
        assert np.isfinite(a).all()
        assert_agree(a, b, np.float64)


@pytest.mark.parametrize("mode", ["conserve", "renormalize"])
def test_large_K_totals_cuda_match_cpu(mode):
    """The GPU forward rescales each frame's blurred mass as the CPU does (K^2 eps otherwise)."""
    rng = np.random.default_rng(2)
    K = 2049
    X = rng.uniform(0.0, 1e3, (K, 3))
    r = rng.uniform(0.0, 2.0 * K, X.shape)
    Y = specblur.blur(X, r, mode=mode, device="cuda")
    err = np.abs(Y.sum(0) - X.sum(0))
    assert (err <= 1e-12 * X.sum(0)).all(), (err / X.sum(0)).max()
    assert_agree(Y, specblur.blur(X, r, mode=mode, device="cpu"), np.float64)


@pytest.mark.parametrize("mode", MODES)
def test_backward_kernel_skips_an_empty_dx(mode):
    """The GPU lockstep passes an empty dX: dR must be the same, and nothing lands behind it."""
    from specblur.kernels import MODE_CODES, gpu

    rng = np.random.default_rng(4)
    X, G = rng.random((2, 6, 5)), rng.standard_normal((2, 6, 5))
    R = rng.uniform(0, 8, X.shape)
    args = [cuda.to_device(a) for a in (X, R, G)]
    dX, dR, dR_alone = (cuda.device_array(X.shape) for _ in range(3))
    gpu.blur_backward(*args, MODE_CODES[mode], dX, dR)
    sentinel = cuda.to_device(np.full((3,) + X.shape[1:], 7.0))
    gpu.blur_backward(*args, MODE_CODES[mode], sentinel[:0], dR_alone)
    np.testing.assert_array_equal(dR_alone.copy_to_host(), dR.copy_to_host())
    assert (sentinel.copy_to_host() == 7.0).all()


@pytest.mark.parametrize("mode", MODES)
def test_kernels_with_frames_compute_each_item_alone_and_skip_the_padding(mode):
    """Items of 5, 0 and 2 of 5 frames: each equals the item blurred alone, and the
    padding is neither read (NaN there) nor written (sentinels stay)."""
    from specblur.kernels import MODE_CODES, gpu

    rng = np.random.default_rng(5)
    frames = np.array([5, 0, 2])
    X, G = rng.random((3, 7, 5)), rng.standard_normal((3, 7, 5))
    R = rng.uniform(0, 9, X.shape)
    for b, count in enumerate(frames):
        for a in (X, R, G):
            a[b, :, count:] = np.nan
    args = [cuda.to_device(a) for a in (X, R)]
    Y, dX, dR = (cuda.to_device(np.full(X.shape, 7.0)) for _ in range(3))
    on_device = cuda.to_device(frames)
    gpu.blur_forward(*args, MODE_CODES[mode], Y, frames=on_device)
    gpu.blur_backward(*args, cuda.to_device(G), MODE_CODES[mode], dX, dR, frames=on_device)
    got = [a.copy_to_host() for a in (Y, dX, dR)]
    for b, count in enumerate(frames):
        for a in got:
            assert (a[b, :, count:] == 7.0).all()
        if count:
            alone = (X[b, :, :count], R[b, :, :count])
            want = (specblur.blur(*alone, mode=mode),
                    *specblur.blur_vjp(*alone, G[b, :, :count], mode=mode))
            for a, w in zip(got, want):
                assert_agree(a[b, :, :count], w, np.float64)
    with pytest.raises(ValueError, match="one count for each of 3 items"):
        gpu.blur_forward(*args, MODE_CODES[mode], Y, frames=on_device[:2])


# --- fits on the device (issue 12 part 4): the whole epoch on the GPU --------------------

from test_batch import assert_same_result, spectrogram  # noqa: E402

IDENTITY = {"kind": "identity"}


def _run(param, optimizer, i):
    # m_init is no integer: at an integer radius the radius gradient is one-sided, so a
    # 1-ulp difference in exp (the CPU's kernels._vexp, the GPU's libdevice) would flip it
    run = {"m_init": 3.3, "lam": 1e-2, "epochs": 3, "param": param, "optimizer": optimizer,
           "lr": 0.05 if optimizer == "adam" else 0.5, "mode": MODES[i % 3],
           "snapshot_every": 2, "model": IDENTITY}
    if param == "sigmoid":
        run["r_max"] = 9.0
    if param == "relu":  # some m cross 0 and are projected
        run.update(m_init=1.5, lam=1e-4 if optimizer == "adam" else 1e3,
                   lr=30.0 if optimizer == "adam" else 3.0)
    if i % 2:
        run.update(tv=0.01, lambda_on="mse", entropy_reduce="mean")
    return run


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("param", ["raw", "relu", "softplus", "exp", "sigmoid"])
def test_fit_on_the_device_equals_the_cpu(param, optimizer):
    i = ["raw", "relu", "softplus", "exp", "sigmoid"].index(param) + (optimizer == "adam")
    X = spectrogram(i, 4, K=9)
    run = _run(param, optimizer, i)
    got = specblur.fit(X, device="cuda", **run)
    want = specblur.fit(X, **run)
    if param == "relu":  # the projection was reached: a projected state has m_min 0
        assert (want.history["m_min"] == 0.0).any()
    assert_same_result(got, want)


def test_fit_batch_on_the_device_equals_the_cpu():
    """Mixed lengths, modes, settings and epochs (runs leave, slots move), a divergence
    found only at the next logged epoch, and the row it leaves."""
    inputs = [spectrogram(i, T, K=9) for i, T in enumerate((4, 3, 4, 2, 4))]
    runs = [
        {"m_init": 3.0, "lam": 1e-2, "epochs": 4, "mode": "conserve", "model": IDENTITY},
        {"m_init": 2.0, "lam": 1e-3, "epochs": 2, "param": "softplus", "optimizer": "adam",
         "lr": 0.1, "log_every": 2, "model": IDENTITY, "mse_norm": "ref"},
        {"m_init": 2.5, "param": "exp", "lam": 1.0, "lr": 1e3, "epochs": 6, "log_every": 4,
         "model": IDENTITY},  # r = e^m overflows at epoch 2, seen at epoch 4
        {"m_init": 1.5, "lam": 1e3, "lambda_on": "mse", "mode": "renormalize",
         "param": "sigmoid", "r_max": 9.0, "optimizer": "adam", "lr": 0.2, "epochs": 3,
         "tv": 0.01, "model": IDENTITY},
        {"m_init": 0.5, "param": "relu", "lam": 1.0, "lr": 0.4, "epochs": 5,
         "mode": "conserve", "snapshot_every": 2, "model": IDENTITY},
    ]
    batch = specblur.fit_batch(inputs, runs, device="cuda")
    assert [res.status for res in batch] == ["done", "done", "diverged", "done", "done"]
    for X, run, got in zip(inputs, runs, batch):
        assert got.r.shape == X.shape
        assert_same_result(got, specblur.fit(X, **run))


def test_a_longer_run_that_moves_into_a_shorter_runs_slot_is_blurred_whole():
    """The blur kernels take each slot's frames: after the short run ends, the long run
    moves into its slot and all of its frames must still be blurred and learnt."""
    inputs = [spectrogram(1, 2, K=9), spectrogram(2, 4, K=9)]
    runs = [{"m_init": 3.0, "lam": 1e-2, "epochs": 1, "model": IDENTITY},
            {"m_init": 2.5, "lam": 1e-2, "epochs": 4, "model": IDENTITY}]
    for X, run, got in zip(inputs, runs, specblur.fit_batch(inputs, runs, device="cuda")):
        assert_same_result(got, specblur.fit(X, **run))


def test_a_divergence_between_logged_epochs_is_recorded_where_it_happened():
    """With no row to log, the host reads nothing: the run dies on the device at epoch 1
    and the host finds out at epoch 3, with that epoch's fields."""
    X = spectrogram(4, 3, K=9)
    runs = [{"m_init": 2.5, "param": "exp", "lam": 1.0, "lr": 1e3, "epochs": 5,
             "log_every": 3, "model": IDENTITY},
            {"m_init": 2.0, "lam": 1e-2, "epochs": 5, "log_every": 3, "model": IDENTITY}]
    batch = specblur.fit_batch([X, X], runs, device="cuda")
    assert list(batch[0].history["epoch"]) == [0, 1] and batch[0].status == "diverged"
    for run, got in zip(runs, batch):
        assert_same_result(got, specblur.fit(X, **run))


def test_host_models_get_host_copies():
    """A model without supports_device (logmel) is called on host copies, per length."""
    model = {"kind": "logmel", "n_mels": 4}
    inputs = [spectrogram(1, 3, K=9), spectrogram(2, 3, K=9), spectrogram(3, 2, K=9)]
    runs = [{"m_init": 2.0 + i, "lam": 1e-2, "lambda_on": "mse", "epochs": 2,
             "optimizer": "adam", "lr": 0.1, "model": model} for i in range(3)]
    for X, run, got in zip(inputs, runs, specblur.fit_batch(inputs, runs, sr=8000,
                                                            device="cuda")):
        assert_same_result(got, specblur.fit(X, sr=8000, **run))


def test_speaker_encoder_without_a_gpu_gets_host_copies():
    """Under the simulator the encoder stays on the CPU (to_device is a no-op there) and
    gets host copies of a stack of runs of different lengths (supports_lengths)."""
    from specblur.speaker import missing_requirements

    if missing_requirements():
        pytest.skip(missing_requirements())
    from specblur.audio import Spectrogram

    spec = Spectrogram.from_audio(Path(__file__).resolve().parent.parent / "data" /
                                  "arctic_a0007.wav", sr=16000, n_fft=400, hop=160)
    inputs = [spec.mag[:, 40:43], spec.mag[:, 60:62]]
    runs = [{"m_init": 3.0, "lam": 1e-3, "lambda_on": "mse", "param": "softplus", "lr": 0.1,
             "epochs": 2, "optimizer": "adam",
             "model": {"kind": "speaker_encoder", "dtype": "float64"}}] * 2
    got = specblur.fit_batch(inputs, runs, sr=16000, device="cuda")
    for X, run, res in zip(inputs, runs, got):
        assert_same_result(res, specblur.fit(X, sr=16000, **run))


def test_objective_kernels_equal_the_cpu_ones():
    """radius, mse, total_variation and descend on a stack of two runs of different
    lengths against specblur.objective on each run's own fields."""
    from specblur import objective
    from specblur.kernels import gpu_objective as k

    rng = np.random.default_rng(5)
    B, K, T = 2, 7, 4
    lengths = (4, 3)
    table = np.stack([k.table_row(code=code, eps=1e-3, ent_scale=0.3, r_max=r_max,
                                  optimizer=opt, lr=0.1, beta1=0.9, beta2=0.999,
                                  adam_eps=1e-8, c_mse=0.7, c_ent=0.3, h_scale=1.0, norm=2.0,
                                  tv=0.05, tv_delta=0.1, epochs=9, log_every=1,
                                  snapshot_every=1, T=L, x_total=3.0)
                      for code, r_max, opt, L in ((2, 12.0, k.ADAM, 4), (4, 7.0, k.SGD, 3))])
    state = k.new_state(B)
    state[:, k.S_DEAD] = k.ALIVE
    M = rng.normal(1.0, 1.5, (B, K, T))
    dev = {name: cuda.to_device(np.zeros((B, K, T))) for name in
           ("M_next", "R", "DRDM", "U", "G_tv", "G_mse", "G_ent")}
    DR, Y, mom1, mom2 = rng.normal(size=(4, B, K, T))
    mom2 = np.abs(mom2)
    M_d, table_d, state_d = cuda.to_device(M), cuda.to_device(table), cuda.to_device(state)
    mom1_d, mom2_d = cuda.to_device(mom1), cuda.to_device(mom2)
    n = 2
    k.radius(n, M_d, dev["M_next"], dev["R"], dev["DRDM"], table_d, state_d, B)
    out = rng.normal(size=(B, 3, T))
    ref = rng.normal(size=(B, 3, T))
    g_out = cuda.device_array((B, 3, T))
    k.mse(n, cuda.to_device(out), cuda.to_device(ref), g_out,
          cuda.to_device(np.arange(B)), table_d, state_d)
    k.total_variation(n, dev["R"], dev["DRDM"], dev["U"], dev["G_tv"], table_d, state_d, B)
    k.descend(n, M_d, dev["R"], dev["DRDM"], cuda.to_device(DR), dev["G_tv"], mom1_d,
              mom2_d, cuda.to_device(Y), dev["G_mse"], dev["G_ent"], dev["M_next"], table_d,
              state_d, B)
    got = {name: a.copy_to_host() for name, a in dev.items()}
    got_state = state_d.copy_to_host()
    got_mom1 = mom1_d.copy_to_host()
    for b, L in enumerate(lengths):
        own = (b, slice(None), slice(None, L))
        code, r_max = int(table[b, k.P_CODE]), table[b, k.P_R_MAX]
        m = np.ascontiguousarray(M[own])
        r, drdm = np.empty_like(m), np.empty_like(m)
        assert objective.radius(m.reshape(-1), code, False, r_max, r.reshape(-1),
                                drdm.reshape(-1)) == 0
        np.testing.assert_allclose(got["R"][own], r, rtol=1e-14)
        np.testing.assert_allclose(got["DRDM"][own], drdm, rtol=1e-14)
        g = np.empty_like(out[b])
        D = 2.0 * objective.mse_and_grad(out[b].reshape(-1), ref[b].reshape(-1), 0.7 * 2.0,
                                         g.reshape(-1))[0]
        np.testing.assert_allclose(got_state[b, k.S_D], D, rtol=1e-12)
        np.testing.assert_allclose(g_out.copy_to_host()[b], g, rtol=1e-14)
        u, g_tv = np.empty_like(m), np.empty_like(m)
        TV = objective.total_variation(r, drdm, False, 0.1, 0.05, u, g_tv)
        np.testing.assert_allclose(got_state[b, k.S_TV], TV, rtol=1e-12)
        np.testing.assert_allclose(got["G_tv"][own], g_tv, rtol=1e-12, atol=1e-15)
        stats, m_next = np.empty(len(specblur.schema.STATS)), np.empty_like(m)
        g_mse, g_ent = np.empty_like(m), np.empty_like(m)
        m1, m2 = np.ascontiguousarray(mom1[own]), np.ascontiguousarray(mom2[own])
        opt = int(table[b, k.P_OPTIMIZER])
        zero, h, bad = objective.descend(
            m.reshape(-1), r.reshape(-1), np.ascontiguousarray(DR[own]).reshape(-1),
            drdm.reshape(-1), g_tv.reshape(-1), code, 1e-3, 0.3, r_max, True, opt, 0.1, 0.9,
            0.999, 1e-8, n + 1, m1.reshape(-1), m2.reshape(-1), g_mse.reshape(-1),
            g_ent.reshape(-1), m_next.reshape(-1), stats)
        assert zero == 0
        row = got_state[b, k.S_ROW:]
        want = [0.7 * D - 0.3 * h + 0.05 * TV, D, h, *stats, Y[own].sum() / 3.0, TV,
                g_tv.mean(), g_tv.var()]
        np.testing.assert_allclose(row, want, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(got["M_next"][own], m_next, rtol=1e-14)
        np.testing.assert_allclose(got["G_mse"][own], g_mse, rtol=1e-14)
        np.testing.assert_allclose(got["G_ent"][own], g_ent, rtol=1e-14)
        if opt == k.ADAM:
            np.testing.assert_allclose(got_mom1[own], m1, rtol=1e-14)
        assert got_state[b, k.S_ACCEPT] == 1.0 and got_state[b, k.S_DEAD] == k.ALIVE
