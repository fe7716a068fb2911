"""Checks of the dense reference in naive.py against hand-worked values (SPEC 3-5)."""

import numpy as np
import pytest

import naive


def test_r3_spreads_9_as_1_2_3_2_1():
    X = np.zeros((7, 1))
    X[3] = 9.0
    r = np.full_like(X, 3.0)
    for mode in naive.MODES:
        np.testing.assert_allclose(naive.blur(X, r, mode)[:, 0], [0, 1, 2, 3, 2, 1, 0])


@pytest.mark.parametrize(
    "r, expected",
    [
        (1.5, [0.2, 0.6, 0.2]),  # n = 1, S = 2.5
        (2.0, [0.25, 0.5, 0.25]),  # n = 1, S = 4
        (2.5, np.array([0.5, 1.5, 2.5, 1.5, 0.5]) / 6.5),  # n = 2, S = 6.5
        (3.0, np.array([1, 2, 3, 2, 1]) / 9),
    ],
)
def test_weight_hand_values(r, expected):
    n = len(expected) // 2
    got = [naive.weight(d, r) for d in range(-n, n + 1)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    assert naive.weight(n + 1, r) == naive.weight(-n - 1, r) == 0.0


@pytest.mark.parametrize("r", [-3.0, -0.0, 0.0, 0.5, 1.0])
def test_r_le_1_is_identity(r):
    assert naive.weight(0, r) == 1.0
    assert naive.weight(1, r) == naive.weight(-1, r) == 0.0
    assert naive.dweight(0, r) == naive.dweight(1, r) == 0.0
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 5, 3))
    for mode in naive.MODES:
        np.testing.assert_array_equal(naive.weight_matrix(np.full(5, r), mode), np.eye(5))
        np.testing.assert_array_equal(naive.blur(X, np.full_like(X, r), mode), X)


@pytest.mark.parametrize("k", range(1, 30))
def test_S_and_w_continuous_across_integers(k):
    for eps in (1e-9, 1e-12):
        lo, hi = k - eps, k + eps
        assert naive._S(lo, naive._n(lo)) == pytest.approx(k * k, rel=1e-7)
        assert naive._S(hi, naive._n(hi)) == pytest.approx(k * k, rel=1e-7)
        for d in range(0, k + 1):
            assert naive.weight(d, lo) == pytest.approx(naive.weight(d, hi), abs=1e-7)
    assert naive._S(k, naive._n(k)) == k * k


@pytest.mark.parametrize("r", [1.2, 2.0, 2.5, 3.0, 7.3, 40.0, 123.456])
def test_weights_sum_to_one_and_derivatives_to_zero(r):
    n = naive._n(r)
    ds = range(-n - 2, n + 3)
    assert sum(naive.weight(d, r) for d in ds) == pytest.approx(1.0, rel=1e-14)
    assert sum(naive.dweight(d, r) for d in ds) == pytest.approx(0.0, abs=1e-14)


def test_dweight_hand_values():
    # r = 2.5: n = 2, S = 6.5; (S - (r - |d|)(2n + 1)) / S^2
    assert naive.dweight(0, 2.5) == pytest.approx(-6 / 42.25, rel=1e-15)
    assert naive.dweight(2, 2.5) == pytest.approx(4 / 42.25, rel=1e-15)
    # r = 3 is a kink: the formula is the left derivative, d/dr r/(5r - 6) = -6/81;
    # from the right, w(0) = r/(7r - 12) with derivative -12/81.
    assert naive.dweight(0, 3.0) == pytest.approx(-6 / 81, rel=1e-15)
    assert naive.dweight(3, 3.0) == 0.0
    # r = 1: the left derivative is 0.
    assert naive.dweight(0, 1.0) == naive.dweight(1, 1.0) == 0.0


@pytest.mark.parametrize("r", [1.3, 2.7, 3.0, 5.0, 9.999])
def test_dweight_matches_left_finite_difference(r):
    h = 1e-7
    for d in range(-10, 11):
        fd = (naive.weight(d, r - h) - naive.weight(d, r - 3 * h)) / (2 * h)
        assert naive.dweight(d, r) == pytest.approx(fd, abs=1e-6)


@pytest.mark.parametrize("mode,seed", [("conserve", 1), ("renormalize", 4)])
def test_column_sums_are_one(mode, seed):
    """Conserve and renormalize (SPEC 4, 9.1) keep every source's total."""
    rng = np.random.default_rng(seed)
    for K in (1, 2, 5, 17):
        r = np.concatenate([rng.uniform(-2, 4 * K, size=K - 1), [10.0 * K]])
        W = naive.weight_matrix(r, mode)
        np.testing.assert_allclose(W.sum(axis=0), 1.0, rtol=0, atol=1e-14)
        assert (W >= 0).all()
        np.testing.assert_allclose(naive.dweight_matrix(r, mode).sum(axis=0), 0.0, atol=1e-14)


def test_truncate_column_sums_shrink_at_edges():
    W = naive.weight_matrix(np.full(9, 3.0), "truncate")
    sums = W.sum(axis=0)
    np.testing.assert_allclose(sums, [6 / 9, 8 / 9, 1, 1, 1, 1, 1, 8 / 9, 6 / 9], rtol=1e-15)
    assert (sums <= 1 + 1e-15).all()


def test_conserve_source_keeps_what_falls_outside():
    X = np.zeros((5, 1))
    X[0] = 9.0
    r = np.full_like(X, 3.0)
    np.testing.assert_allclose(naive.blur(X, r, "truncate")[:, 0], [3, 2, 1, 0, 0])
    np.testing.assert_allclose(naive.blur(X, r, "conserve")[:, 0], [6, 2, 1, 0, 0])


@pytest.mark.parametrize("mode", naive.MODES)
def test_reference_vjp_matches_finite_differences(mode):
    rng = np.random.default_rng(2)
    X, G = rng.normal(size=(2, 6, 3))
    r = rng.uniform(-1, 9, size=X.shape)
    r = np.where(np.abs(r - np.round(r)) < 1e-2, r + 0.1, r)
    dX, dr = naive.blur_vjp(X, r, G, mode)
    h = 1e-6
    for idx in np.ndindex(X.shape):
        E = np.zeros_like(X)
        E[idx] = h
        fd_r = np.sum((naive.blur(X, r + E, mode) - naive.blur(X, r - E, mode)) * G) / (2 * h)
        fd_x = np.sum((naive.blur(X + E, r, mode) - naive.blur(X - E, r, mode)) * G) / (2 * h)
        assert dr[idx] == pytest.approx(fd_r, abs=1e-7)
        assert dX[idx] == pytest.approx(fd_x, abs=1e-7)


def test_batch_is_per_item():
    rng = np.random.default_rng(3)
    X, G = rng.normal(size=(2, 3, 4, 2))
    r = rng.uniform(-1, 6, size=X.shape)
    for mode in naive.MODES:
        Y = naive.blur(X, r, mode)
        dX, dr = naive.blur_vjp(X, r, G, mode)
        for b in range(3):
            np.testing.assert_array_equal(Y[b], naive.blur(X[b], r[b], mode))
            np.testing.assert_array_equal(dX[b], naive.blur_vjp(X[b], r[b], G[b], mode)[0])
            np.testing.assert_array_equal(dr[b], naive.blur_vjp(X[b], r[b], G[b], mode)[1])


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="truncate"):
        naive.weight_matrix(np.ones(3), "reflect")


# ---------------------------------------------------------------- renormalize (SPEC 9.1)


def test_renormalize_hand_values():
    X = np.zeros((5, 1))
    X[0] = 9.0
    r = np.full_like(X, 3.0)
    # A = 0, B = 2: weights 3, 2, 1 over S_p = 6
    np.testing.assert_allclose(naive.blur(X, r, "renormalize")[:, 0], [4.5, 3, 1.5, 0, 0])
    X = np.zeros((4, 1))
    X[1] = 7.0
    r = np.full_like(X, 2.5)
    # n = 2, A = 1, B = 2: weights 1.5, 2.5, 1.5, 0.5 over S_p = 6
    np.testing.assert_allclose(naive.blur(X, r, "renormalize")[:, 0],
                               7 * np.array([1.5, 2.5, 1.5, 0.5]) / 6, rtol=1e-15)


def test_renormalize_interior_equals_truncate():
    """A source whose window fits in [0, K) has S_p = S: the same column as truncate."""
    r = np.array([0.5, 2.3, 3.0, 3.9, 2.0, 1.7, 1.0, 0.2])
    Wr = naive.weight_matrix(r, "renormalize")
    Wt = naive.weight_matrix(r, "truncate")
    for p in (2, 3, 4, 5):  # n <= min(p, K - 1 - p)
        np.testing.assert_allclose(Wr[:, p], Wt[:, p], rtol=1e-15)


@pytest.mark.parametrize("r", [-3.0, -0.0, 0.0, 0.5, 1.0])
def test_renormalize_identity_at_r_le_1(r):
    for K in (1, 4):
        np.testing.assert_array_equal(naive.weight_matrix(np.full(K, r), "renormalize"), np.eye(K))
        np.testing.assert_array_equal(naive.dweight_matrix(np.full(K, r), "renormalize"), 0.0)


@pytest.mark.parametrize("K", [1, 2, 7, 16])
def test_renormalize_spreads_uniformly_as_r_grows(K):
    errs = []
    for r in (10.0 * K, 1e3 * K, 1e6 * K):
        W = naive.weight_matrix(np.full(K, r), "renormalize")
        errs.append(np.max(np.abs(W - 1.0 / K)))
    assert errs[-1] < 1e-5
    assert errs[0] >= errs[1] >= errs[2]


def _off_integers(r):
    return np.where(np.abs(r - np.round(r)) < 1e-2, r + 0.1, r)


def test_renormalize_dweight_matches_finite_differences():
    rng = np.random.default_rng(5)
    h = 1e-7
    for K in (1, 3, 8, 13):
        r = _off_integers(rng.uniform(-1, 3 * K, size=K))
        D = naive.dweight_matrix(r, "renormalize")
        for p in range(K):
            E = np.zeros(K)
            E[p] = h
            fd = (naive.weight_matrix(r + E, "renormalize")[:, p]
                  - naive.weight_matrix(r - E, "renormalize")[:, p]) / (2 * h)
            np.testing.assert_allclose(D[:, p], fd, rtol=0, atol=1e-7)
    # at integer radii the reference gives the derivative from the left (SPEC 3)
    for K, rr in ((6, 5.0), (9, 3.0), (9, 2.0)):
        r = np.full(K, rr)
        D = naive.dweight_matrix(r, "renormalize")
        for p in range(K):
            E = np.zeros(K)
            E[p] = h
            fd = (naive.weight_matrix(r - E, "renormalize")[:, p]
                  - naive.weight_matrix(r - 3 * E, "renormalize")[:, p]) / (2 * h)
            np.testing.assert_allclose(D[:, p], fd, rtol=0, atol=1e-6)


def test_renormalize_spec_vjp_formula():
    """SPEC 9.1: dr[p] = X[p] (s0 - (A + B + 1) dx) / S_p, with s0 the window sum of G."""
    rng = np.random.default_rng(6)
    for K in (1, 2, 6, 11):
        X, G = rng.normal(size=(2, K, 3))
        r = rng.uniform(-1, 3 * K, size=X.shape)
        r[::3] = np.round(r[::3])  # integers too: both sides use the left derivative
        dX, dr = naive.blur_vjp(X, r, G, "renormalize")
        for p, t in np.ndindex(X.shape):
            rr = r[p, t]
            if rr <= 1:
                assert dr[p, t] == 0.0 and dX[p, t] == G[p, t]
                continue
            A, B = naive._reach(rr, p, K)
            S_p = naive._S_p(rr, p, K)
            window = G[p - A:p + B + 1, t]
            s0 = window.sum()
            dx = sum((rr - abs(d)) * G[p + d, t] for d in range(-A, B + 1)) / S_p
            assert dX[p, t] == pytest.approx(dx, rel=1e-12, abs=1e-14)
            assert dr[p, t] == pytest.approx(X[p, t] * (s0 - (A + B + 1) * dx) / S_p,
                                             rel=1e-10, abs=1e-14)
