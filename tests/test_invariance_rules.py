"""invariance.register_rule: a user's rule overrides the default treatment of a layer class,
and the walk over the graph is iterative."""

import inspect
import sys

import keras
import numpy as np
import pytest
from keras import layers

from keras_explr import invariance

pytestmark = pytest.mark.backends


class MyRMSNorm(layers.Layer):
    """x / sqrt(mean(x²) + ε): its ε (1e-3) defeats the default numeric check at c = 2^-10."""

    def __init__(self, epsilon=1e-3, **kw):
        super().__init__(**kw)
        self.epsilon = epsilon

    def call(self, x):
        return x * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + self.epsilon)


class WSDense(layers.Dense):
    """A weight-standardized Dense: the kernel is divided by its norm, so its scale never matters."""

    def call(self, x):
        k = self.kernel / keras.ops.sqrt(keras.ops.sum(self.kernel * self.kernel))
        return keras.ops.matmul(x, k) + self.bias


@pytest.fixture
def registry():
    yield invariance.register_rule
    for cls in (MyRMSNorm, WSDense, _OpaqueBN):
        invariance.register_rule(cls, None)


def _rms_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = layers.Dense(8, use_bias=False, name="d")(inp)
    return keras.Model(inp, layers.Dense(2, name="head")(MyRMSNorm(name="rms")(h)))


def test_registered_rmsnorm_opaque_keeps_the_kernel_out_normalizing_puts_it_in(registry):
    m = _rms_model()
    kernel = m.get_layer("d").kernel
    assert invariance.invariant_group(m) == []  # default: the numeric check sees ε at c = 2^-10
    registry(MyRMSNorm, "opaque")
    assert invariance.invariant_group(m) == []
    with pytest.raises(ValueError, match="registered as opaque"):
        invariance.confirm_group(m, [kernel])
    registry(MyRMSNorm, "normalizing")
    assert [v.path for v in invariance.invariant_group(m)] == ["d/kernel"]
    # Confirmed numerically: ε taken out, exact powers of two, bit-equal outputs.
    assert invariance.confirm_group(m, [kernel]).output_change == 0.0
    assert m.get_layer("rms").epsilon == 1e-3  # restored
    assert invariance.reaches_normalization(m, kernel)
    assert [v.path for v in invariance.scale_invariant_variables(m, np.ones((4, 8), "float32"))] == ["d/kernel"]
    # Brute force, independent of the analysis: with ε → 0 the outputs do not move when the kernel does.
    m.get_layer("rms").epsilon = 0.0
    x = np.random.default_rng(1).standard_normal((4, 8)).astype("float32")
    before = keras.ops.convert_to_numpy(m(x))
    kernel.assign(kernel * 8.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m(x)), before, rtol=1e-5, atol=1e-6)


class _OpaqueBN(layers.BatchNormalization):
    pass


def test_a_registered_subclass_overrides_the_built_in_rule(registry):
    inp = keras.Input((8,))
    h = layers.Dense(8, use_bias=False, name="d")(inp)
    m = keras.Model(inp, layers.Dense(2, name="head")(_OpaqueBN()(h)))
    assert [v.path for v in invariance.invariant_group(m)] == ["d/kernel"]  # BatchNormalization's rule
    registry(_OpaqueBN, "opaque")
    assert invariance.invariant_group(m) == []


def test_a_callable_rule_for_a_weight_standardized_layer(registry):
    inp = keras.Input((8,))
    h = WSDense(8, name="ws")(layers.Dense(8, use_bias=False, name="d")(inp))
    m = keras.Model(inp, layers.Dense(2, name="head")(layers.LayerNormalization()(h)))
    ws, d = m.get_layer("ws"), m.get_layer("d")
    # A Dense subclass gets Dense's rule: the kernel adds a degree, so ws/kernel cannot join (its bias
    # would have to scale as c^(1 + 1)); d/kernel joins with ws/bias.
    assert [v.path for v in invariance.invariant_group(m)] == ["d/kernel", "ws/bias"]
    with pytest.raises(ValueError, match="ws/kernel"):
        invariance.confirm_group(m, [ws.kernel])

    def ws_rule(call):  # the output scales with the input; the kernel's scale is divided out
        call.require(call.variable(call.layer.bias), equals=call.inputs[0], why="the bias is added to x·k̂")
        return call.inputs[0]

    registry(WSDense, ws_rule)
    assert [v.path for v in invariance.invariant_group(m)] == ["d/kernel", "ws/kernel", "ws/bias"]
    assert invariance.confirm_group(m, [ws.kernel]).output_change == 0.0
    with pytest.raises(ValueError, match="the bias is added"):
        invariance.confirm_group(m, [d.kernel])
    # A wrong rule ("homogeneous" ignores the bias) can only shrink the group: the numeric check drops it.
    registry(WSDense, lambda call: "homogeneous")
    assert invariance.output_degree(m, [d.kernel]) == [0]
    assert invariance.invariant_group(m) == []


def test_register_rule_refuses_bad_arguments():
    with pytest.raises(ValueError, match="layer_class"):
        invariance.register_rule(int, "opaque")
    with pytest.raises(ValueError, match="layer_class"):
        invariance.register_rule(layers.Dense(2), "opaque")
    with pytest.raises(ValueError, match=r"`rule` must be one of \('normalizing', 'homogeneous', 'opaque'\)"):
        invariance.register_rule(MyRMSNorm, "normalising")


def test_the_walk_needs_no_recursion():
    """A 300-layer chain is analysed with the interpreter's stack limited to 150 frames above the
    caller (a walk that recursed per layer would need several hundred)."""
    inp = keras.Input((4,))
    h = layers.Dense(4, use_bias=False, name="d")(inp)
    for _ in range(300):
        h = layers.ReLU()(h)
    m = keras.Model(inp, layers.Dense(2, name="head")(layers.LayerNormalization()(h)))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 150)
    try:
        degrees = invariance.output_degree(m, [m.get_layer("d").kernel])
        d = invariance.normalization_input_degrees(m, [m.get_layer("d").kernel])
    finally:
        sys.setrecursionlimit(limit)
    assert degrees == [0] and list(d.values()) == [1]
    assert sys.getrecursionlimit() == limit
