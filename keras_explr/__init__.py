"""keras_explr: Li & Arora's exponential learning-rate schedules for Keras 3.

The submodules load on first use (PEP 562), so ``import keras_explr`` and the
pure-math ``keras_explr.theory`` load no framework, and the command line answers
at once. When Keras is already imported, ``import keras_explr`` also imports the
modules whose objects Keras saves (``schedules``, ``optimizers``, ``layers``), so
``keras.saving.load_model`` finds them; otherwise importing any of them (or
using a name from it) registers them.
"""

import importlib
import sys

from keras_explr._version import __version__

_SUBMODULES = ("callbacks", "invariance", "layers", "models", "optimizers", "probe", "schedules", "theory",
               "data", "monitor", "plots", "tuning")
__all__ = ["callbacks", "invariance", "layers", "models", "optimizers", "probe", "schedules", "theory", "__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


if "keras" in sys.modules:  # Keras is loaded already: register the saveable objects now (costs no framework import)
    from keras_explr import layers, optimizers, schedules
