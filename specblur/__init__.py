"""specblur: learn how far each spectrogram bin can be blurred along frequency.

The public names load on first use (as in librosa), so ``import specblur`` does not pay
for Numba, pandas or SciPy until they are needed.

The pipeline, module by module: ``kernels`` (the blur and its gradients, CPU and CUDA),
``blur_api`` (checked public kernels), ``audio`` (STFT in and out), ``settings``,
``models``, ``objective`` and ``fitting`` (learning), ``deletion`` (the deletion test
of a map against baselines), ``segmentation`` (labels of the input), ``sweep`` (YAML
grids, runner, results folder) and ``report`` (plots and HTML page).
"""
from __future__ import annotations

import importlib

from .errors import SpecblurError

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_EXPORTS = {
    "MODES": "blur_api",
    "blur": "blur_api",
    "blur_vjp": "blur_api",
    "Spectrogram": "audio",
    "FitResult": "fitting",
    "fit": "fitting",
    "fit_batch": "fitting",
    "Settings": "settings",
    "load": "sweep.results",
    "Results": "sweep.results",
    "segments": "segmentation",
    "faithfulness": "deletion",
    "faithfulness_summary": "deletion",
}
_SUBMODULES = ("audio", "blur_api", "fitting", "kernels", "models", "objective", "report", "schema",
               "deletion", "segmentation", "settings", "speaker", "sweep")

__all__ = ["SpecblurError", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'specblur' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
