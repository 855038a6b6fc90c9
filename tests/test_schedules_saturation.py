"""Every schedule saturates at any step a Keras `iterations` counter can hold (int64;
int32 on JAX without x64), given as a Python number, an integer or float tensor, or a
variable, eagerly or compiled, in float32 and float64: never a wrapped step."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_explr import _precision, schedules
from tests.conftest import precision

pytestmark = pytest.mark.backends

BIG = (2 ** 31 - 1, 2 ** 31, 2 ** 31 + 5, 2 ** 40, 2 ** 62, 2 ** 63 - 1)
BIG_FLOATS = (2.0 ** 31, 1e12, 2.0 ** 63, 1e30)


def _schedules():
    return [schedules.ExpLR(0.1, 1.001),
            schedules.TEXP([400, 900], [0.1, 0.01, 0.001], 5e-4, 0.9),
            schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, gradient_accumulation_steps=4)]


def _wide():
    return keras.backend.backend() != "jax" or _precision.compute_dtype() == "float64"


def _steps():
    """(step, description) pairs: what the backend's integer and float tensors can hold."""
    out = [(s, "python int") for s in BIG if _wide() or s < 2 ** 31]
    out += [(f, "python float") for f in BIG_FLOATS]
    out += [(np.int64(s), "numpy int64") for s in BIG if _wide() or s < 2 ** 31]
    out += [(ops.convert_to_tensor(f, "float32"), "float32 tensor") for f in BIG_FLOATS]
    if _wide():
        out += [(ops.convert_to_tensor(s, "int64"), "int64 tensor") for s in BIG]
        out += [(ops.convert_to_tensor(f, "float64"), "float64 tensor") for f in BIG_FLOATS]
    return out


def _compiled(schedule):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(schedule)
    if backend == "jax":
        import jax

        return jax.jit(schedule)
    return schedule  # eager PyTorch evaluates on the host; the compiled torch path is the traced one


@pytest.mark.parametrize("floatx", ["float32", "float64"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_saturates_at_every_representable_step(floatx, compiled):
    with precision(floatx):
        for s in _schedules():
            call = _compiled(s) if compiled else s
            for step, kind in _steps():
                if compiled and not hasattr(step, "shape"):
                    step = ops.convert_to_tensor(step)  # (a jit argument is a tensor)
                lr = ops.convert_to_numpy(call(step))
                assert lr == np.finfo(lr.dtype).max, (type(s).__name__, kind, step, lr)
                assert lr.dtype == floatx or floatx == "float64" and _precision.compute_dtype() == "float32"


def test_the_step_counter_itself_saturates_the_schedule():
    """The optimizer's own `iterations`, at the largest count its dtype holds."""
    opt = keras.optimizers.SGD(schedules.ExpLR(0.1, 1.001))
    opt.build([keras.Variable(np.zeros((2, 2), "float32"))])
    opt.iterations.assign(np.iinfo(keras.backend.standardize_dtype(opt.iterations.dtype)).max)
    assert float(ops.convert_to_numpy(opt.learning_rate)) == float(np.finfo("float32").max)
