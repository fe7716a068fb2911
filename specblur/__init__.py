"""specblur: learn how far each spectrogram bin can be blurred along frequency."""

from .errors import SpecblurError
from .kernels import own_cache_dir

with own_cache_dir():  # compile-cache the jitted modules under a digest of their sources
    from .kernels import cpu as _cpu  # noqa: F401
    from . import objective as _objective  # noqa: F401
from .blur_api import MODES, blur, blur_vjp
from .audio import Spectrogram
from .fit import FitResult, fit
from .results import load
from .segments import segments

__all__ = ["MODES", "FitResult", "Spectrogram", "SpecblurError", "blur", "blur_vjp", "fit", "load",
           "segments"]
__version__ = "0.1.0"
