"""keras_explr: Li & Arora's exponential learning-rate schedules for Keras 3."""

from keras_explr._version import __version__
from keras_explr import callbacks, invariance, layers, models, optimizers, probe, schedules, theory

__all__ = ["callbacks", "invariance", "layers", "models", "optimizers", "probe", "schedules", "theory", "__version__"]
