"""Optimizer factories and small helpers shared by the test modules."""

import inspect

import keras
import numpy as np
from keras import ops

from keras_explr import optimizers

# Keras 3.10's Muon has no separate decay for its Adam-updated variables.
_MUON_ADAM_WD = ({"adam_weight_decay": None}
                 if "adam_weight_decay" in inspect.signature(keras.optimizers.Muon.__init__).parameters else {})

# Inner optimizers of the contract matrix (none with weight decay of its own).
INNER = {
    "keras_sgd": lambda **kw: keras.optimizers.SGD(0.1, momentum=0.9, **kw),
    "explr_sgd": lambda **kw: optimizers.SGD(0.1, momentum=0.9, **kw),
    "adam": lambda **kw: keras.optimizers.Adam(1e-2, **kw),
    "nadam": lambda **kw: keras.optimizers.Nadam(1e-2, **kw),
    "lion": lambda **kw: keras.optimizers.Lion(1e-3, **kw),
    "lamb": lambda **kw: keras.optimizers.Lamb(1e-2, **kw),
    "rmsprop": lambda **kw: keras.optimizers.RMSprop(1e-2, **kw),
    "adafactor": lambda **kw: keras.optimizers.Adafactor(1e-2, **kw),
    "muon": lambda **kw: keras.optimizers.Muon(1e-2, weight_decay=None, **_MUON_ADAM_WD, **kw),
    "adamw": lambda **kw: keras.optimizers.AdamW(1e-2, weight_decay=0.0, **kw),  # (None is refused by Keras)
    "adagrad": lambda **kw: keras.optimizers.Adagrad(1e-2, **kw),
    "adadelta": lambda **kw: keras.optimizers.Adadelta(1.0, **kw),
    "adamax": lambda **kw: keras.optimizers.Adamax(1e-2, **kw),
    "ftrl": lambda **kw: keras.optimizers.Ftrl(1e-2, **kw),
}
# Keras >= 3.11 / 3.15: the schedule-free optimizer, and the stock multi-optimizer (the
# kernel by momentum SGD, everything else by Adam).
if hasattr(keras.optimizers, "ScheduleFreeAdamW"):
    INNER["schedule_free"] = lambda **kw: keras.optimizers.ScheduleFreeAdamW(1e-2, **kw)
if hasattr(keras.optimizers, "MultiOptimizer"):
    INNER["multi"] = lambda **kw: keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.Adam(1e-2, **kw), {"kernel": keras.optimizers.SGD(0.1, momentum=0.9, **kw)}))
# Keras 3.10's Muon fails on its own on TensorFlow ('ResourceVariable' object has no attribute 'path').
if tuple(int(x) for x in keras.__version__.split(".")[:2]) < (3, 11) and keras.backend.backend() == "tensorflow":
    del INNER["muon"]

# Training modes that touch the optimizer: keyword arguments of the inner optimizer.
MODES = {
    "plain": {},
    "accumulation": {"gradient_accumulation_steps": 2},
    "ema": {"use_ema": True, "ema_momentum": 0.5},
    "clipnorm": {"clipnorm": 0.5},
    "global_clipnorm": {"global_clipnorm": 0.5},
    "clipvalue": {"clipvalue": 0.5},
}


def value(x):
    """A variable's or tensor's value as a numpy array."""
    return np.asarray(ops.convert_to_numpy(x.value if isinstance(x, keras.Variable) else x))


def variables(seed=0, dtype="float32"):
    """A (4, 3) kernel and a (3,) bias with fixed random values."""
    rng = np.random.default_rng(seed)
    kernel = keras.Variable(rng.normal(size=(4, 3)).astype(dtype), name="kernel")
    bias = keras.Variable(rng.normal(size=(3,)).astype(dtype), name="bias")
    return [kernel, bias]


def gradients(seed=1, dtype="float32"):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)).astype(dtype), rng.normal(size=(3,)).astype(dtype)]


def invariant_mlp(trainable_rest=False, widths=(32,), inputs=64, classes=10, seed=7, activation="relu"):
    """A small float-exact model: [Dense (no bias) → BatchNorm (ε = 1e-30) → activation] per width → Dense head.

    With ``trainable_rest=False`` BatchNorm has no γ/β and the head is frozen, so the loss is
    scale-invariant in each hidden kernel (every trainable variable: the paper's setting).
    Otherwise BatchNorm's γ/β and the head train too, and only the kernels form the invariant
    group (`Partitioned`'s setting). Built in the current floatx from a fixed seed. ReLU's
    derivative jumps at 0; "tanh" is smooth, which float32 comparisons need.
    """
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((inputs,))
    for i, width in enumerate(widths):
        x = keras.layers.Dense(width, use_bias=False, name=f"hidden{i}")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-30, center=trainable_rest, scale=trainable_rest,
                                            name=f"bn{i}")(x)
        x = keras.layers.Activation(activation, name=f"act{i}")(x)
    head = keras.layers.Dense(classes, name="head")
    out = head(x)
    head.trainable = trainable_rest
    return keras.Model(inp, out)
