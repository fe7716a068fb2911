"""Public blur API: ``blur`` and ``blur_vjp`` with input checks and device dispatch (SPEC §6)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import SpecblurError
from .kernels import DEVICES, MODES, for_device, mode_code
from .kernels._cuda import is_device_array

__all__ = ["MODES", "DEVICES", "blur", "blur_vjp"]


def blur(X: ArrayLike, r: ArrayLike, mode: str = "truncate", device: str = "cpu") -> ArrayLike:
    """Blur each frame of a spectrogram along frequency with per-bin triangular kernels.

    Parameters
    ----------
    X : array_like or CUDA device array, shape (K, T) or (B, K, T)
        Magnitude spectrogram (frequency bins first, frames second), or a batch of them.
    r : array_like or CUDA device array, same shape as ``X``
        Radius of every source bin. ``r <= 1`` leaves the bin as it is.
    mode : {"truncate", "conserve", "renormalize"}
        What happens to energy that would land outside ``[0, K)``: dropped, kept by
        the source bin, or spread over the in-range bins by rescaled weights (the last
        two preserve every frame's total).
    device : {"cpu", "cuda"}
        Where to compute.

    Returns
    -------
    Y : ndarray or CUDA device array, shape of ``X``
        ``Y[:, t] = W_t @ X[:, t]`` (SPEC §3-4), in ``numpy.result_type`` of the
        inputs and float32: float32 stays float32, float64 and int32/int64 give float64,
        and smaller types give float32. A device array exactly when ``X`` is one.

    Raises
    ------
    SpecblurError
        (a ``ValueError``) on a shape mismatch, an ndim other than 2 or 3, an unknown mode
        or device, non-finite values or a non-real dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import specblur
    >>> X = np.zeros((7, 1)); X[3] = 9.0
    >>> specblur.blur(X, np.full_like(X, 3.0)).ravel()
    array([0., 1., 2., 3., 2., 1., 0.])
    """
    code = mode_code(mode)
    xp = _Inputs(device, X=X, r=r)
    Y = xp.empty()
    xp.checked(xp.kernels.blur_forward(xp["X"], xp["r"], code, Y))
    return xp.result(Y)


def blur_vjp(X: ArrayLike, r: ArrayLike, G: ArrayLike, mode: str = "truncate",
             device: str = "cpu") -> tuple[ArrayLike, ArrayLike]:
    """Vector-Jacobian products of :func:`blur` with respect to ``X`` and ``r``.

    Parameters
    ----------
    X, r : array_like or CUDA device array, shape (K, T) or (B, K, T)
        As for :func:`blur`.
    G : array_like or CUDA device array, same shape
        Cotangent ``dL/dY``.
    mode, device : str
        As for :func:`blur`.

    Returns
    -------
    dX : ndarray or CUDA device array
        ``dL/dX[p, t] = sum_i W_t[i, p] G[i, t]``.
    dr : ndarray or CUDA device array
        ``dL/dr[p, t] = X[p, t] sum_i G[i, t] dW_t[i, p]/dr[p, t]``, with the left
        derivative at integer radii and 0 for ``r <= 1`` (SPEC §3, §5).

    Raises
    ------
    SpecblurError
        As for :func:`blur`.

    Examples
    --------
    >>> import numpy as np
    >>> import specblur
    >>> X = np.zeros((7, 1)); X[3] = 9.0
    >>> dX, dr = specblur.blur_vjp(X, np.full_like(X, 3.0), np.ones_like(X), mode="conserve")
    >>> dX.ravel()  # conserve mode keeps every total, so each source's weights sum to 1
    array([1., 1., 1., 1., 1., 1., 1.])
    """
    code = mode_code(mode)
    xp = _Inputs(device, X=X, r=r, G=G)
    dX = xp.empty()
    dr = xp.empty()
    xp.checked(xp.kernels.blur_backward(xp["X"], xp["r"], xp["G"], code, dX, dr))
    return xp.result(dX), xp.result(dr)


class _Inputs:
    """Checked, C-contiguous ``(B, K, T)`` copies or views of the inputs, on one device.

    C-ordered float64 (or float32) NumPy input is used as it is, a view and no copy. On
    the CPU the kernels count non-finite input as they read it, and :meth:`checked`
    rejects it after the call; on the GPU each array is checked before it is used.
    """

    def __init__(self, device, **arrays):
        self.backend = for_device(device)
        self.device = device
        arrays = {name: a if is_device_array(a) else np.asarray(a) for name, a in arrays.items()}
        first = next(iter(arrays.values()))
        self.on_device = is_device_array(first)
        self.kernels = self.backend.kernels
        self.shape = _check_shapes(arrays)
        self.dtype = _common_dtype(arrays)
        self.arrays = {name: self._place(name, a) for name, a in arrays.items()}

    def __getitem__(self, name):
        return self.arrays[name]

    def _place(self, name, a):
        if self.device == "cpu":
            if is_device_array(a):
                a = a.copy_to_host()
            return np.ascontiguousarray(a, dtype=self.dtype).reshape(self._shape3)
        if not is_device_array(a):
            host = np.ascontiguousarray(a, dtype=self.dtype).reshape(self._shape3)
            if not np.isfinite(host).all():
                raise SpecblurError(f"{name} has non-finite values (NaN or infinity)")
            return self.backend.send(host)
        if a.dtype != self.dtype:
            raise SpecblurError(
                f"{name} is a device array of dtype {a.dtype}; device arrays must all share one "
                f"dtype ({self.dtype})"
            )
        if not a.is_c_contiguous():
            raise SpecblurError(f"{name} is a non-contiguous device array; pass a C-contiguous one")
        a = a.reshape(self._shape3)
        if not self.kernels.all_finite(a.reshape(a.size)):
            raise SpecblurError(f"{name} has non-finite values (NaN or infinity)")
        return a

    def checked(self, non_finite):
        """Raise for the first input with non-finite values, given the CPU kernels' count.

        The GPU kernels return None: their inputs were checked before the call.
        """
        if non_finite:
            for name, a in self.arrays.items():
                if not np.isfinite(a).all():
                    raise SpecblurError(f"{name} has non-finite values (NaN or infinity)")

    @property
    def _shape3(self):
        return self.shape if len(self.shape) == 3 else (1,) + self.shape

    def empty(self):
        return self.backend.empty(self._shape3, dtype=self.dtype)

    def result(self, out):
        if self.device == "cuda" and not self.on_device:
            out = self.backend.fetch(out)
        elif self.device == "cpu" and self.on_device:
            out = for_device("cuda").send(out)
        return out.reshape(self.shape)


def _check_shapes(arrays):
    names = list(arrays)
    shape = tuple(arrays[names[0]].shape)
    if len(shape) not in (2, 3):
        raise SpecblurError(
            f"{names[0]} must have shape (K, T) or (B, K, T); got ndim {len(shape)} with shape {shape}"
        )
    for name in names[1:]:
        other = tuple(arrays[name].shape)
        if other != shape:
            raise SpecblurError(
                f"shape mismatch: {name} has shape {other} but {names[0]} has shape {shape}"
            )
    return shape


def _common_dtype(arrays):
    for name, a in arrays.items():
        kind = np.dtype(a.dtype).kind
        if kind not in "fiu":
            raise SpecblurError(
                f"{name} has dtype {a.dtype}; a real (float or integer) dtype is required"
            )
    dtype = np.result_type(*(np.dtype(a.dtype) for a in arrays.values()), np.float32)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)
