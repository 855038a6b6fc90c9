import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

# On GPUs, float32 matmuls and convolutions default to TF32 (10-bit mantissa),
# which turns two equivalent float32 runs into runs that differ by ~1e-3; the
# equivalence tests need real float32.
if keras.backend.backend() == "jax":
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
elif keras.backend.backend() == "torch":
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # cuDNN's default convolution algorithms are not deterministic run to run.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class precision:
    """Sets floatx *and* the global dtype policy, restoring both on exit.

    Keras caches the global dtype policy from floatx the first time a layer is
    built, so set_floatx alone does not change the dtype of later layers.
    """

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx(self.dtype)
        keras.config.set_dtype_policy(self.dtype)

    def __exit__(self, *exc):
        keras.config.set_floatx(self.saved[0])
        keras.config.set_dtype_policy(self.saved[1])


@pytest.fixture
def float64():
    """Runs a test in float64 (floatx and dtype policy), then restores both."""
    with precision("float64"):
        yield


def backend():
    return keras.backend.backend()


@pytest.fixture
def float64_on_tensorflow():
    """float64 on TensorFlow (which computes every float64 layer in float64), float32 on JAX and
    PyTorch; restores floatx and the dtype policy."""
    with precision("float64" if backend() == "tensorflow" else "float32"):
        yield


@pytest.fixture(scope="module")
def digits():
    """640 training digits (x, y) for the tests that train inside model.fit (loaded once per module)."""
    from keras_explr import data

    (x, y), _ = data.load_digits(num_train=640)
    return x, y
