"""Blur kernels: one set of per-bin formulas (``_scalar``) compiled for the CPU and the GPU.

``cpu`` runs ``numba`` parallel loops over tiles of frames, ``gpu`` runs ``numba.cuda``
kernels with one thread per frame. Both take C-ordered ``(B, K, T)`` arrays and a mode
code from :data:`MODE_CODES`. :func:`for_device` picks one and says how arrays move to
and from it; ``_numba`` holds the shared Numba options, ``_cuda`` the one CUDA import.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from .._checks import suggest
from ..errors import SpecblurError

#: Boundary modes (SPEC §4, §9.1) and the integer codes the kernels take.
MODE_CODES = {"truncate": 0, "conserve": 1, "renormalize": 2}
MODES = tuple(MODE_CODES)
#: Parameterisations of the radius (SPEC §7, §9.2) and the integer codes the objective's
#: kernels take (``settings.Param`` has these values).
PARAM_CODES = {"raw": 0, "relu": 1, "softplus": 2, "exp": 3, "sigmoid": 4}
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """The kernels of one device and how arrays reach them.

    Attributes
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``.
    kernels : module
        ``blur_forward(X, R, mode_code, Y)`` and ``blur_backward(X, R, G, mode_code, dX, dR)``;
        the CPU's return a count that is non-zero exactly when an input has a non-finite
        value (the forward kernel counts frames, the backward kernel values), the GPU's None.
        Both also take ``frames=``, each item's own number of frames (``fit_batch``'s
        padded stacks; a device array on the GPU).
    send, fetch : callable
        Host array to the device's array type, and back (identities on the CPU).
    empty : callable
        ``empty(shape, dtype)`` on the device.
    """

    device: str
    kernels: ModuleType
    send: Callable
    fetch: Callable
    empty: Callable


def for_device(device: str) -> Backend:
    """The :class:`Backend` of ``device`` (``"cpu"`` or ``"cuda"``).

    Raises
    ------
    SpecblurError
        For another device, or ``"cuda"`` on a machine without a usable GPU.
    """
    import numpy as np

    if device == "cpu":
        from . import cpu

        return Backend("cpu", cpu, _same, _same, np.empty)
    if device == "cuda":
        from ._cuda import require_cuda

        cuda = require_cuda()
        from . import gpu

        return Backend("cuda", gpu, cuda.to_device, _to_host, cuda.device_array)
    raise SpecblurError(f"unknown device {device!r}; valid devices are {', '.join(DEVICES)}")


def mode_code(mode: str) -> int:
    """The kernels' code of a boundary mode, or a SpecblurError naming the valid ones."""
    try:
        return MODE_CODES[mode]
    except (KeyError, TypeError):
        raise SpecblurError(f"unknown mode {mode!r}; valid modes are {', '.join(MODES)}"
                            f"{suggest(mode, MODES)}") from None


def _same(a):
    return a


def _to_host(a):
    return a.copy_to_host()
