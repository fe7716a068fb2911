"""The one place that imports ``numba.cuda``.

A machine without CUDA still imports specblur; asking for ``device="cuda"`` there raises
one clear error. With ``NUMBA_ENABLE_CUDASIM=1`` the CUDA simulator stands in for a GPU.
"""
from types import ModuleType

from ..errors import SpecblurError


def require_cuda() -> ModuleType:
    """Return the ``numba.cuda`` module, or raise if no CUDA device can be used.

    Raises
    ------
    SpecblurError
        If numba's CUDA support is missing or finds no usable GPU.
    """
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - depends on the numba build
        raise SpecblurError(
            f"device='cuda' needs numba's CUDA support ({exc}); "
            "install it with: pip install 'specblur[gpu]'"
        ) from None
    if not cuda.is_available():
        raise SpecblurError(
            "device='cuda' was requested but no CUDA GPU is available on this machine "
            "(use device='cpu', or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA simulator)"
        )
    return cuda


def is_device_array(a: object) -> bool:
    """True for a CUDA device array, or the CUDA simulator's stand-in for one."""
    return hasattr(a, "__cuda_array_interface__") or hasattr(a, "__cuda_ndarray__")
