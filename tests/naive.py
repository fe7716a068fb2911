"""Dense, slow, obviously correct reference for the blur kernels (SPEC sections 3-5).

Everything is written straight from the formulas, with loops and float64, so that the
fast kernels in ``specblur`` can be checked against it. It is slow by design.
"""

import math

import numpy as np

MODES = ("truncate", "conserve", "renormalize")


def _n(r):
    """Half-width ``n(r) = ceil(r) - 1`` for ``r > 1``, else 0."""
    return math.ceil(r) - 1 if r > 1 else 0


def _S(r, n):
    """Normaliser ``S(r) = (2n + 1) r - n (n + 1)``."""
    return (2 * n + 1) * r - n * (n + 1)


def weight(d, r):
    """Weight that a source with radius ``r`` gives to the bin at offset ``d``.

    Parameters
    ----------
    d : int
        Offset ``i - p`` from the source bin ``p`` to the receiving bin ``i``.
    r : float
        Radius of the source.

    Returns
    -------
    float
        ``w(d; r) = (r - |d|) / S(r)`` for ``|d| <= n(r)``, else 0. ``r <= 1`` is the
        identity: ``w(0) = 1`` and every other offset gets 0.
    """
    r = float(r)
    if r <= 1:
        return 1.0 if d == 0 else 0.0
    n = _n(r)
    if abs(d) > n:
        return 0.0
    return (r - abs(d)) / _S(r, n)


def dweight(d, r):
    """Derivative of :func:`weight` with respect to ``r`` (from the left at integers).

    Parameters
    ----------
    d : int
        Offset ``i - p``.
    r : float
        Radius of the source.

    Returns
    -------
    float
        ``(S - (r - |d|)(2n + 1)) / S**2`` for ``|d| <= n`` and ``r > 1``, else 0.
    """
    r = float(r)
    if r <= 1:
        return 0.0
    n = _n(r)
    if abs(d) > n:
        return 0.0
    S = _S(r, n)
    return (S - (r - abs(d)) * (2 * n + 1)) / S**2


def _reach(r, p, K):
    """In-range reach ``(A, B) = (min(n, p), min(n, K - 1 - p))`` of source ``p`` (SPEC 9.1)."""
    n = _n(r)
    return min(n, p), min(n, K - 1 - p)


def _S_p(r, p, K):
    """Renormalize mode's normaliser ``S_p(r) = sum_{d=-A..B} (r - |d|)``, summed term by term."""
    A, B = _reach(r, p, K)
    return sum(r - abs(d) for d in range(-A, B + 1))


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def weight_matrix(r_col, mode):
    """Dense weight matrix of one frame.

    Parameters
    ----------
    r_col : array_like, shape (K,)
        Radii of the K source bins of the frame.
    mode : {"truncate", "conserve", "renormalize"}
        Boundary mode (SPEC sections 4 and 9.1).

    Returns
    -------
    W : ndarray, shape (K, K)
        ``W[i, p]``, the weight from source ``p`` to bin ``i``. In conserve mode
        ``W[p, p] = 1 - sum_{i != p} W[i, p]``. In renormalize mode
        ``W[i, p] = (r - |i - p|) / S_p(r)`` for ``-A <= i - p <= B`` (identity for ``r <= 1``).
    """
    _check_mode(mode)
    r_col = np.asarray(r_col, dtype=np.float64)
    K = r_col.shape[0]
    W = np.zeros((K, K))
    for p in range(K):
        r = float(r_col[p])
        if mode == "renormalize" and r > 1:
            A, B = _reach(r, p, K)
            S_p = _S_p(r, p, K)
            for i in range(p - A, p + B + 1):
                W[i, p] = (r - abs(i - p)) / S_p
            continue
        for i in range(K):
            W[i, p] = weight(i - p, r)
        if mode == "conserve":
            W[p, p] = 1.0 - sum(W[i, p] for i in range(K) if i != p)
    return W


def dweight_matrix(r_col, mode):
    """Dense matrix of ``dW[i, p] / dr_p`` for one frame.

    Parameters
    ----------
    r_col : array_like, shape (K,)
        Radii of the K source bins of the frame.
    mode : {"truncate", "conserve", "renormalize"}
        Boundary mode.

    Returns
    -------
    D : ndarray, shape (K, K)
        ``D[i, p] = dW[i, p] / dr_p`` (from the left at integer radii, 0 for ``r <= 1``).
        In conserve mode the diagonal is ``-sum_{i != p} D[i, p]`` over in-range bins. In
        renormalize mode, by the quotient rule with ``n``, ``A``, ``B`` fixed (they are
        constant on ``(n, n + 1]``) and ``dS_p/dr = A + B + 1``:
        ``D[i, p] = (S_p - (r - |i - p|)(A + B + 1)) / S_p**2`` for ``-A <= i - p <= B``.
    """
    _check_mode(mode)
    r_col = np.asarray(r_col, dtype=np.float64)
    K = r_col.shape[0]
    D = np.zeros((K, K))
    for p in range(K):
        r = float(r_col[p])
        if mode == "renormalize" and r > 1:
            A, B = _reach(r, p, K)
            S_p = _S_p(r, p, K)
            for i in range(p - A, p + B + 1):
                D[i, p] = (S_p - (r - abs(i - p)) * (A + B + 1)) / S_p**2
            continue
        for i in range(K):
            D[i, p] = dweight(i - p, r)
        if mode == "conserve":
            D[p, p] = -sum(D[i, p] for i in range(K) if i != p)
    return D


def _as_batch(A):
    """View a (K, T) array as (1, K, T) and return it with a flag to undo."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 2:
        return A[None], True
    if A.ndim == 3:
        return A, False
    raise ValueError(f"expected a 2-D or 3-D array, got ndim={A.ndim}")


def blur(X, r, mode="truncate"):
    """Reference forward blur ``Y[:, t] = W_t @ X[:, t]`` along axis -2.

    Parameters
    ----------
    X : array_like, shape (K, T) or (B, K, T)
        Input spectrogram(s).
    r : array_like, same shape as X
        Radius field.
    mode : {"truncate", "conserve", "renormalize"}
        Boundary mode.

    Returns
    -------
    Y : ndarray, float64, same shape as X
    """
    Xb, squeeze = _as_batch(X)
    rb, _ = _as_batch(r)
    assert Xb.shape == rb.shape
    Y = np.zeros_like(Xb)
    B, K, T = Xb.shape
    for b in range(B):
        for t in range(T):
            W = weight_matrix(rb[b, :, t], mode)
            Y[b, :, t] = W @ Xb[b, :, t]
    return Y[0] if squeeze else Y


def blur_vjp(X, r, G, mode="truncate"):
    """Reference vector-Jacobian product of :func:`blur` (SPEC section 5).

    Parameters
    ----------
    X : array_like, shape (K, T) or (B, K, T)
        Input spectrogram(s).
    r : array_like, same shape as X
        Radius field.
    G : array_like, same shape as X
        Upstream gradient ``dL/dY``.
    mode : {"truncate", "conserve", "renormalize"}
        Boundary mode.

    Returns
    -------
    dX : ndarray, float64, same shape as X
        ``dX[p, t] = sum_i W_t[i, p] G[i, t]``.
    dr : ndarray, float64, same shape as X
        ``dr[p, t] = X[p, t] sum_i G[i, t] dW_t[i, p] / dr[p, t]``.
    """
    Xb, squeeze = _as_batch(X)
    rb, _ = _as_batch(r)
    Gb, _ = _as_batch(G)
    assert Xb.shape == rb.shape == Gb.shape
    dX = np.zeros_like(Xb)
    dr = np.zeros_like(Xb)
    B, K, T = Xb.shape
    for b in range(B):
        for t in range(T):
            W = weight_matrix(rb[b, :, t], mode)
            D = dweight_matrix(rb[b, :, t], mode)
            g = Gb[b, :, t]
            dX[b, :, t] = W.T @ g
            dr[b, :, t] = Xb[b, :, t] * (D.T @ g)
    if squeeze:
        return dX[0], dr[0]
    return dX, dr
