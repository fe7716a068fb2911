"""specblur: learn how far each spectrogram bin can be blurred along frequency."""

from .errors import SpecblurError
from .blur_api import MODES, blur, blur_vjp

__all__ = ["MODES", "SpecblurError", "blur", "blur_vjp"]
__version__ = "0.1.0"
