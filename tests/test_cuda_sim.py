"""device="cuda" against device="cpu" under the CUDA simulator (SPEC section 6).

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py``.
"""

import os

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
