"""keras_explr: Li & Arora's exponential learning-rate schedules for Keras 3."""

from keras_explr import callbacks, invariance, layers, models, optimizers, probe, schedules, theory

__version__ = "0.1.0"

__all__ = ["callbacks", "invariance", "layers", "models", "optimizers", "probe", "schedules", "theory", "__version__"]
