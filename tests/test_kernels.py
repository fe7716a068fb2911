"""Property tests of specblur.blur and specblur.blur_vjp on the CPU (SPEC sections 2-6)."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import naive
import specblur
from conftest import MODES, blur_inputs, modes


def blur(X, r, mode):
    return specblur.blur(X, r, mode=mode, device="cpu")


def vjp(X, r, G, mode):
    return specblur.blur_vjp(X, r, G, mode=mode, device="cpu")


def assert_close(a, b, rtol, floor=1.0):
    """``max|a - b| <= rtol * max(floor, max|b|)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b))
    scale = max(floor, np.max(np.abs(b)))
    assert err <= rtol * scale, f"max|a-b| = {err:.3g} > {rtol:g} * {scale:.3g}"


def frame_sums(A):
    return np.sum(A, axis=-2)


# ---------------------------------------------------------------- dense reference

K1 = (np.array([[2.0, -1.0]]), np.array([[50.0, 0.5]]), np.array([[1.0, 3.0]]))


@given(case=blur_inputs(grad=False), mode=modes)
@example(case=K1, mode="truncate")
@example(case=K1, mode="conserve")
def test_forward_matches_reference(case, mode):
    X, r, _ = case
    Y = blur(X, r, mode)
    assert isinstance(Y, np.ndarray) and Y.dtype == np.float64 and Y.shape == X.shape
    assert_close(Y, naive.blur(X, r, mode), 1e-9)


@given(case=blur_inputs(), mode=modes)
@example(case=K1, mode="truncate")
@example(case=K1, mode="conserve")
def test_vjp_matches_reference(case, mode):
    X, r, G = case
    dX, dr = vjp(X, r, G, mode)
    ref_dX, ref_dr = naive.blur_vjp(X, r, G, mode)
    for got in (dX, dr):
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == X.shape
    assert_close(dX, ref_dX, 1e-9)
    assert_close(dr, ref_dr, 1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_large_radii_match_reference(mode):
    """K = 257 with radii up to 800, as in the reference experiments."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 5, size=(257, 2))
    G = rng.normal(size=X.shape)
    r = rng.uniform(0, 800, size=X.shape)
    r[::7] = np.round(r[::7])
    assert_close(blur(X, r, mode), naive.blur(X, r, mode), 1e-9)
    for got, ref in zip(vjp(X, r, G, mode), naive.blur_vjp(X, r, G, mode)):
        assert_close(got, ref, 1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("r0", [1.0, 5.0, 3.0])
def test_integer_radius_uses_left_derivative(mode, r0):
    """At an integer radius, dr is the derivative from the left (SPEC 3)."""
    rng = np.random.default_rng(1)
    X, G = rng.normal(size=(2, 12, 3))
    r = np.full_like(X, r0)
    _, dr = vjp(X, r, G, mode)
    _, ref = naive.blur_vjp(X, r, G, mode)
    assert_close(dr, ref, 1e-9)
    h = 1e-6
    for idx in [(0, 0), (5, 1), (11, 2)]:
        E = np.zeros_like(X)
        E[idx] = h
        left = np.sum((blur(X, r - E, mode) - blur(X, r - 3 * E, mode)) * G) / (2 * h)
        assert dr[idx] == pytest.approx(left, abs=1e-5 * max(1, abs(left)))


# ---------------------------------------------------------------- dtypes


@given(case=blur_inputs(), mode=modes)
def test_float32_in_float32_out(case, mode):
    X, r, G = (a.astype(np.float32) for a in case)
    X64, r64, G64 = (a.astype(np.float64) for a in (X, r, G))
    Y = blur(X, r, mode)
    dX, dr = vjp(X, r, G, mode)
    for got in (Y, dX, dr):
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == X.shape
    ref_dX, ref_dr = naive.blur_vjp(X64, r64, G64, mode)
    for got, ref in ((Y, naive.blur(X64, r64, mode)), (dX, ref_dX), (dr, ref_dr)):
        assert_close(got, ref, 1e-4, floor=1e-3)


# ---------------------------------------------------------------- conserve mode


@given(case=blur_inputs(grad=False), nonneg=st.booleans())
def test_conserve_keeps_frame_totals(case, nonneg):
    X, r, _ = case
    if nonneg:
        X = np.abs(X)
    Y = blur(X, r, "conserve")
    err = np.abs(frame_sums(Y) - frame_sums(X))
    assert (err <= 1e-12 * frame_sums(np.abs(X))).all(), err.max()


@given(case=blur_inputs(nonneg=True, grad=False))
def test_conserve_keeps_nonnegative(case):
    X, r, _ = case
    Y = blur(X, r, "conserve")
    tol = 1e-12 * frame_sums(X)[..., None, :]
    assert (Y >= -tol).all(), Y.min()


# ---------------------------------------------------------------- gradients


@given(case=blur_inputs(), mode=modes)
def test_adjointness(case, mode):
    X, r, G = case
    Y = blur(X, r, mode)
    dX, _ = vjp(X, r, G, mode)
    lhs, rhs = np.sum(Y * G), np.sum(X * dX)
    scale = np.sum(np.abs(Y * G)) + np.sum(np.abs(X * dX))
    assert abs(lhs - rhs) <= 1e-10 * scale, (lhs, rhs)


@settings(max_examples=25)
@given(case=blur_inputs(max_K=12, max_T=3, max_B=2, fd_safe=True), mode=modes)
def test_dr_matches_finite_differences(case, mode):
    X, r, G = case
    _, dr = vjp(X, r, G, mode)
    h = 1e-6
    fd = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        E = np.zeros_like(X)
        E[idx] = h
        fd[idx] = np.sum((blur(X, r + E, mode) - blur(X, r - E, mode)) * G) / (2 * h)
    assert_close(dr, fd, 1e-6)


@given(
    case=blur_inputs(grad=False),
    mode=modes,
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_in_X(case, mode, a, b, seed):
    X1, r, _ = case
    X2 = np.random.default_rng(seed).normal(size=X1.shape)
    Y1, Y2 = blur(X1, r, mode), blur(X2, r, mode)
    assert_close(blur(a * X1 + b * X2, r, mode), a * Y1 + b * Y2, 1e-10)


# ---------------------------------------------------------------- validation


def _ok(shape=(4, 3)):
    X = np.ones(shape)
    return X, np.full(shape, 2.5), np.ones(shape)


@pytest.mark.parametrize("mode", MODES)
def test_shape_mismatch_rejected(mode):
    X, r, G = _ok()
    for r_bad in (np.ones((4, 4)), np.ones((3, 4)), np.ones((1, 4, 3))):
        with pytest.raises(ValueError, match="(?i)shape"):
            specblur.blur(X, r_bad, mode=mode, device="cpu")
        with pytest.raises(ValueError, match="(?i)shape"):
            specblur.blur_vjp(X, r_bad, G, mode=mode, device="cpu")
    with pytest.raises(ValueError, match="(?i)shape"):
        specblur.blur_vjp(X, r, np.ones((4, 2)), mode=mode, device="cpu")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 2)])
def test_wrong_ndim_rejected(shape):
    X, r, G = _ok(shape)
    with pytest.raises(ValueError, match="(?i)dim|shape"):
        specblur.blur(X, r, device="cpu")
    with pytest.raises(ValueError, match="(?i)dim|shape"):
        specblur.blur_vjp(X, r, G, device="cpu")


@pytest.mark.parametrize("mode", ["reflect", "", "truncate "])
def test_unknown_mode_rejected(mode):
    X, r, G = _ok()
    for call in (lambda: specblur.blur(X, r, mode=mode, device="cpu"),
                 lambda: specblur.blur_vjp(X, r, G, mode=mode, device="cpu")):
        with pytest.raises(ValueError) as info:
            call()
        assert "truncate" in str(info.value) and "conserve" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rejected(bad, which, dtype):
    args = [a.astype(dtype) for a in _ok()]
    args[which][1, 2] = bad
    X, r, G = args
    with pytest.raises(ValueError, match="(?i)finite|nan|inf"):
        specblur.blur_vjp(X, r, G, device="cpu")
    if which < 2:
        with pytest.raises(ValueError, match="(?i)finite|nan|inf"):
            specblur.blur(X, r, device="cpu")


@pytest.mark.parametrize("which", [0, 1, 2])
def test_complex_rejected(which):
    args = list(_ok())
    args[which] = args[which].astype(np.complex128)
    X, r, G = args
    with pytest.raises(ValueError, match="(?i)complex|real"):
        specblur.blur_vjp(X, r, G, device="cpu")
    if which < 2:
        with pytest.raises(ValueError, match="(?i)complex|real"):
            specblur.blur(X, r, device="cpu")


# ---------------------------------------------------------------- memory layout


@given(case=blur_inputs(), mode=modes)
def test_inputs_not_modified(case, mode):
    for dtype in (np.float64, np.float32):
        X, r, G = (a.astype(dtype) for a in case)
        before = [a.copy() for a in (X, r, G)]
        blur(X, r, mode)
        vjp(X, r, G, mode)
        for a, a0 in zip((X, r, G), before):
            np.testing.assert_array_equal(a, a0)


def _transposed(A):
    """Same values, reversed memory order (a transposed view)."""
    return np.ascontiguousarray(A.T).T


def _strided(A):
    """Same values, every other element of a bigger buffer along the last two axes."""
    big = np.zeros(A.shape[:-2] + (2 * A.shape[-2], 2 * A.shape[-1]), dtype=A.dtype)
    big[..., ::2, ::2] = A
    return big[..., ::2, ::2]


@given(case=blur_inputs(), mode=modes)
def test_non_contiguous_inputs(case, mode):
    X, r, G = case
    Y = blur(X, r, mode)
    dX, dr = vjp(X, r, G, mode)
    for view in (_transposed, _strided):
        Xv, rv, Gv = view(X), view(r), view(G)
        if min(X.shape[-2:]) > 1:
            assert not Xv.flags.c_contiguous
        assert_close(blur(Xv, rv, mode), Y, 1e-13)
        dXv, drv = vjp(Xv, rv, Gv, mode)
        assert_close(dXv, dX, 1e-13)
        assert_close(drv, dr, 1e-13)
