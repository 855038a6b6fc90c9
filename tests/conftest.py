import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

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


@pytest.fixture
def float64():
    """Runs a test with keras.config.floatx() == 'float64', then restores it."""
    old = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(old)


def backend():
    return keras.backend.backend()
