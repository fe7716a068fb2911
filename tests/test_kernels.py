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
@example(case=K1, mode="renormalize")
def test_forward_matches_reference(case, mode):
    X, r, _ = case
    Y = blur(X, r, mode)
    assert isinstance(Y, np.ndarray) and Y.dtype == np.float64 and Y.shape == X.shape
    assert_close(Y, naive.blur(X, r, mode), 1e-9)


@given(case=blur_inputs(), mode=modes)
@example(case=K1, mode="truncate")
@example(case=K1, mode="conserve")
@example(case=K1, mode="renormalize")
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


# ---------------------------------------------------------------- conserve and renormalize

TOTAL_KEEPING = ("conserve", "renormalize")


@pytest.mark.parametrize("mode", TOTAL_KEEPING)
@given(case=blur_inputs(grad=False), nonneg=st.booleans())
def test_frame_totals_kept(mode, case, nonneg):
    X, r, _ = case
    if nonneg:
        X = np.abs(X)
    Y = blur(X, r, mode)
    err = np.abs(frame_sums(Y) - frame_sums(X))
    assert (err <= 1e-12 * frame_sums(np.abs(X))).all(), err.max()


@pytest.mark.parametrize("mode", TOTAL_KEEPING)
@pytest.mark.parametrize("K", [2049, 4097])
@pytest.mark.parametrize("r_hi", [3.0, "2K"])
def test_frame_totals_kept_at_large_K(mode, K, r_hi):
    # the running sums round like K^2 eps (5e-12 at K = 4097 before the mass rescale)
    rng = np.random.default_rng(K)
    X = rng.uniform(0.0, 1e3, (K, 24))
    r = rng.uniform(-1.0, 2.0 * K if r_hi == "2K" else r_hi, X.shape)
    Y = blur(X, r, mode)
    err = np.abs(frame_sums(Y) - frame_sums(X))
    assert (err <= 1e-12 * frame_sums(X)).all(), (err / frame_sums(X)).max()


@pytest.mark.parametrize("mode", TOTAL_KEEPING)
def test_cancelling_signed_input_is_not_rescaled(mode):
    # a frame whose signed values nearly cancel: the mass rescale must not turn rounding
    # noise relative to the tiny net mass into errors in every bin
    rng = np.random.default_rng(5)
    K = 1024
    X = np.where(np.arange(K)[:, None] % 2 == 0, 1e3, -1e3) * np.ones((K, 3))
    X[0] += 0.5
    r = rng.uniform(0.0, 2.0 * K, X.shape)
    Y = blur(X, r, mode)
    want = naive.blur(X, r, mode)
    assert np.abs(Y - want).max() <= 1e-10 * np.abs(want).max()
    # the guard itself: a gap of rounding size is closed, unless the values cancel
    from specblur.kernels.cpu import mass_scale

    assert mass_scale(1.0 + 1e-9, 1.0, 1.5) == pytest.approx(1.0 + 1e-9, rel=1e-15)
    assert mass_scale(1.0 + 1e-9, 1.0, 2.5) == 1.0


@pytest.mark.parametrize("mode", TOTAL_KEEPING)
@given(case=blur_inputs(nonneg=True, grad=False))
def test_nonnegative_kept(mode, case):
    X, r, _ = case
    Y = blur(X, r, mode)
    tol = 1e-12 * frame_sums(X)[..., None, :]
    assert (Y >= -tol).all(), Y.min()


# ---------------------------------------------------------------- huge radii

HUGE = st.sampled_from([1e12, 1e15, 1e16, 1e100, 1e300, float(np.finfo(np.float64).max)])


@given(case=blur_inputs(), mode=modes, huge=HUGE, share=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**32 - 1))
def test_huge_radii_stay_finite(case, mode, huge, share, seed):
    """Radii up to the largest float give finite outputs and gradients, and no overflow."""
    X, r, G = case
    r = np.where(np.random.default_rng(seed).random(X.shape) < share, huge, r)
    Y = blur(X, r, mode)
    dX, dr = vjp(X, r, G, mode)
    for a in (Y, dX, dr):
        assert np.isfinite(a).all()
    scale = np.max(np.abs(X)) * np.max(np.abs(G))
    assert (np.abs(dr[r >= 1e12]) <= 1e-9 * max(scale, 1e-300)).all()


@given(case=blur_inputs(), huge=HUGE)
def test_renormalize_huge_radii_spread_uniformly(case, huge):
    """As r grows without bound, every source spreads evenly over its frame (SPEC 9.1)."""
    X, r, G = case
    r = np.full_like(X, huge)
    K = X.shape[-2]
    mean_X = np.broadcast_to(X.mean(axis=-2, keepdims=True), X.shape)
    mean_G = np.broadcast_to(G.mean(axis=-2, keepdims=True), X.shape)
    assert_close(blur(X, r, "renormalize"), mean_X, 1e-10 * K)
    dX, dr = vjp(X, r, G, "renormalize")
    assert_close(dX, mean_G, 1e-10 * K)
    assert np.isfinite(dr).all()


@pytest.mark.parametrize("K", [1, 5, 64])
def test_renormalize_approaches_uniform_as_r_grows(K):
    """max|Y - mean| shrinks like 1 / r towards the frame's mean.

    With r >= K every window covers the frame, and ``W[i, p] - 1/K = (M_p - K|i - p|) /
    (K S_p)`` with ``M_p = sum_d |d| <= K^2 / 2`` and ``S_p = K r - M_p``, so
    ``|Y[i] - mean| <= max|X| K / (r - K/2)``.
    """
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 5, size=(K, 4))
    mean = np.broadcast_to(X.mean(axis=0), X.shape)
    errs = []
    for c in (2.0, 20.0, 200.0, 2e4, 2e7):
        r = c * K + 0.5
        Y = blur(X, np.full_like(X, r), "renormalize")
        errs.append(np.max(np.abs(Y - mean)))
        assert errs[-1] <= np.max(X) * K / (r - K / 2) + 1e-13
    if K > 1:
        assert errs[0] > 1e-3  # a real blur, yet not uniform
    assert all(b <= 0.2 * a + 1e-13 for a, b in zip(errs, errs[1:]))


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
        assert all(name in str(info.value) for name in ("truncate", "conserve", "renormalize"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", [(1, 2), (0, 0), (4, 69), (2, 33)])
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_rejected(bad, which, dtype, where, mode):
    """The kernels see one bad value anywhere, in the first, a middle or the last
    (partial) tile of frames."""
    args = [a.astype(dtype) for a in _ok((5, 70))]
    args[which][where] = bad
    X, r, G = args
    with pytest.raises(ValueError, match="(?i)finite|nan|inf"):
        specblur.blur_vjp(X, r, G, mode=mode, device="cpu")
    if which < 2:
        with pytest.raises(ValueError, match="(?i)finite|nan|inf"):
            specblur.blur(X, r, mode=mode, device="cpu")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("radius", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_seen_in_any_batch_item(bad, radius, mode):
    """A bad value in the second item of a (B, K, T) stack, also at a radius <= 1 (no blur)."""
    from specblur.kernels import MODE_CODES, cpu

    X, R = np.ones((2, 5, 70)), np.full((2, 5, 70), radius)
    X[1, 3, 40] = bad
    assert cpu.blur_forward(X, R, MODE_CODES[mode], np.empty_like(X)) > 0
    assert cpu.blur_backward(X, R, np.ones_like(X), MODE_CODES[mode], np.empty_like(X),
                             np.empty_like(X)) > 0
    X[1, 3, 40] = 1.0
    R[1, 0, 69] = bad
    assert cpu.blur_forward(X, R, MODE_CODES[mode], np.empty_like(X)) > 0


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


@pytest.mark.parametrize("mode", MODES)
def test_long_inputs_use_wide_tiles_with_the_same_results(mode):
    # from WIDE_FROM frames on the CPU kernels take wider tiles; every frame's result is
    # the one that a short input (narrow tiles) gives
    from specblur.kernels._numba import WIDE_FROM

    rng = np.random.default_rng(3)
    T = WIDE_FROM + 37
    X, G = rng.random((2, 19, T)), rng.standard_normal((2, 19, T))
    r = rng.uniform(0.0, 40.0, (2, 19, T))
    Y = specblur.blur(X, r, mode=mode)
    dX, dr = specblur.blur_vjp(X, r, G, mode=mode)
    for lo in range(0, T, 500):
        part = slice(lo, lo + 500)
        args = (X[..., part], r[..., part])
        np.testing.assert_allclose(Y[..., part], specblur.blur(*args, mode=mode), rtol=1e-13, atol=0)
        for got, want in zip((dX, dr), specblur.blur_vjp(*args, G[..., part], mode=mode)):
            np.testing.assert_allclose(got[..., part], want, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("mode", MODES)
def test_forward_results_do_not_depend_on_the_tile_width(mode):
    # the forward kernel's tiles are 32 to 128 frames wide (cpu.forward_tile); 300 frames
    # leave a partial last tile at every width
    from specblur.kernels import MODE_CODES, cpu

    rng = np.random.default_rng(5)
    X = rng.random((2, 23, 300))
    R = rng.uniform(0.0, 50.0, X.shape)
    R[:, :, ::7] = rng.uniform(0.0, 1.0, (2, 23, 43))
    outputs = []
    for tile in (32, 64, 128):
        Y = np.empty_like(X)
        assert cpu._forward(X, R, MODE_CODES[mode], Y, tile, cpu.item_frames(None, 2, 300)) == 0
        outputs.append(Y)
    for Y in outputs[1:]:
        np.testing.assert_array_equal(Y, outputs[0])


def _per_item(X, R, G, code, frames, tile=None):
    """The kernels on a stack with ``frames`` (forward tiles of ``tile`` frames, or the
    kernel's choice), against each item alone: ``(stacked, alone)``, each the outputs
    ``Y, dX, dR`` and the two non-finite counts."""
    from specblur.kernels import cpu

    frames = np.array(frames)
    Y, dX, dR = (np.full(X.shape, 7.0) for _ in range(3))
    if tile is None:
        bad_fwd = cpu.blur_forward(X, R, code, Y, frames)
    else:
        bad_fwd = cpu._forward(X, R, code, Y, tile, frames)
    bad_bwd = cpu.blur_backward(X, R, G, code, dX, dR, frames)
    alone = [np.full(X.shape, 7.0) for _ in range(3)]
    bad_alone = [0, 0]
    for b, n in enumerate(frames):
        own = [a[b:b + 1, :, :n].copy() for a in (X, R, G)]
        outs = [np.empty_like(own[0]) for _ in range(3)]
        bad_alone[0] += cpu.blur_forward(own[0], own[1], code, outs[0])
        bad_alone[1] += cpu.blur_backward(*own, code, outs[1], outs[2])
        for whole, out in zip(alone, outs):
            whole[b, :, :n] = out[0]
    return (Y, dX, dR, bad_fwd, bad_bwd), (*alone, *bad_alone)


@settings(max_examples=30, deadline=None)
@given(K=st.integers(1, 30), frames=st.lists(st.integers(0, 300), min_size=1, max_size=4),
       mode=modes, seed=st.integers(0, 2**32 - 1), tile=st.sampled_from([None, 32, 64, 128]))
def test_kernels_with_frames_work_on_each_items_own_frames_only(K, frames, mode, seed, tile):
    # the lockstep fit's stack: item b is its first frames[b] frames, the rest padding that
    # is neither read (NaN there would count as non-finite) nor written (the 7s stay)
    from specblur.kernels import MODE_CODES

    rng = np.random.default_rng(seed)
    shape = (len(frames), K, max(frames) + 33)
    X, G = rng.random(shape), rng.standard_normal(shape)
    R = rng.uniform(0, 2 * K, shape)
    padding = np.broadcast_to(np.arange(shape[2]) >= np.array(frames)[:, None, None], shape)
    for a in (X, R, G):
        a[padding] = np.nan
    stacked, alone = _per_item(X, R, G, MODE_CODES[mode], frames, tile)
    for got, want in zip(stacked, alone):
        np.testing.assert_array_equal(got, want)
    assert stacked[3] == stacked[4] == 0


@pytest.mark.parametrize("mode", MODES)
def test_kernels_with_frames_count_non_finite_values_in_the_frames_as_alone(mode):
    # long items (the backward kernel's wide tiles from 1024 frames on), an empty one, and
    # NaN and infinity inside the frames: the counts add up over the items
    from specblur.kernels import MODE_CODES

    rng = np.random.default_rng(11)
    frames = [1100, 0, 1030, 5]
    shape = (4, 6, 1100)
    X, G = rng.random(shape), rng.standard_normal(shape)
    R = rng.uniform(0, 12, shape)
    X[0, 2, 1099], R[2, 0, 17], G[2, 5, 1029], X[3, 1, 4] = np.nan, np.inf, np.nan, -np.inf
    X[2, 3, 1050] = np.nan  # in the padding: not counted
    stacked, alone = _per_item(X, R, G, MODE_CODES[mode], frames)
    for got, want in zip(stacked[:3], alone[:3]):
        np.testing.assert_array_equal(got[np.isfinite(want)], want[np.isfinite(want)])
    assert stacked[3:] == alone[3:]
    assert alone[3] == 3 and alone[4] == 4


def test_kernels_reject_frames_that_do_not_fit_the_stack():
    from specblur.kernels import cpu

    X = np.zeros((2, 3, 5))
    wraps = np.array([2**63, 1], dtype=np.uint64)  # negative once cast to int64
    for frames in ([1], [1, 6], [-1, 2], [[1, 2]], 2, wraps):
        with pytest.raises(ValueError, match="0..5 frames for each of 2 items"):
            cpu.blur_forward(X, X, 0, np.empty_like(X), frames)
    with pytest.raises(ValueError, match="frames must be integers"):
        cpu.blur_forward(X, X, 0, np.empty_like(X), [1.5, 2.0])
    empty = np.zeros((0, 3, 5))  # no items: nothing to do, and no complaint
    assert cpu.blur_forward(empty, empty, 0, np.empty_like(empty), np.zeros(0, int)) == 0


def test_forward_tiles_are_wide_while_every_thread_gets_two():
    from specblur.kernels import cpu

    def tile(frames, threads):
        return cpu.forward_tile(np.array(frames), threads)

    assert tile([300], 1) == 128   # 3 tiles for 1 thread
    assert tile([300], 2) == 64    # 128 would give 3 tiles for 2 threads
    assert tile([300] * 4, 2) == 128
    assert tile([40], 1) == 32     # never below TILE
    assert tile([5000], 16) == 128
    assert tile([300, 0, 0], 2) == 64  # items without frames have no tiles


@pytest.mark.parametrize("mode", MODES)
def test_backward_kernel_skips_an_empty_dx(mode):
    # fit passes an empty dX: the radius gradient must be the same, bit for bit
    from specblur.kernels import MODE_CODES, cpu

    rng = np.random.default_rng(3)
    X, G = rng.random((2, 9, 70)), rng.standard_normal((2, 9, 70))
    R = rng.uniform(0, 12, X.shape)
    dX, dR, dR_alone = np.empty_like(X), np.empty_like(X), np.empty_like(X)
    cpu.blur_backward(X, R, G, MODE_CODES[mode], dX, dR)
    sentinel = np.full((3,) + X.shape[1:], 7.0)  # an unchecked write into dX would land here
    assert cpu.blur_backward(X, R, G, MODE_CODES[mode], sentinel[:0], dR_alone) == 0
    np.testing.assert_array_equal(dR_alone, dR)
    assert (sentinel == 7.0).all()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":")[1].split() for line in info
                         if line.startswith("flags")), [])
    except OSError:
        return []


@pytest.mark.skipif("sse" not in _cpu_flags(), reason="checks x86 instructions")
def test_fetch_row_compiles_to_prefetch_instructions():
    # the forward kernel's prefetches (kernels._prefetch) must reach the machine code:
    # an intrinsic that lowered to nothing would pass every result test
    import numba
    from specblur.kernels._prefetch import fetch_row

    @numba.njit
    def read_rows(A):
        for row in range(A.shape[1] + 3):  # rows past the last are skipped
            fetch_row(A, 0, row, 2, A.shape[2] - 2, False)
        return A.sum()

    @numba.njit
    def write_rows(A):
        for row in range(A.shape[1]):
            fetch_row(A, 1, row, 0, A.shape[2], True)
        return A.sum()

    A = np.arange(2 * 5 * 40.0).reshape(2, 5, 40)
    assert read_rows(A) == write_rows(A) == A.sum()
    # the prefetched address: flat_index of A[b, row, t]
    from specblur.kernels._prefetch import flat_index

    @numba.njit
    def flat(A, b, row, t):
        return flat_index(A, b, row, t)

    for b, row, t in [(0, 0, 0), (1, 0, 0), (1, 4, 39), (0, 3, 7)]:
        assert A.reshape(-1)[flat(A, b, row, t)] == A[b, row, t]
    read = read_rows.inspect_asm(read_rows.signatures[0])
    write = write_rows.inspect_asm(write_rows.signatures[0])
    assert "prefetcht0" in read and "prefetchw" not in read
    if "3dnowprefetch" in _cpu_flags():  # the CPU has PREFETCHW
        assert "prefetchw" in write
