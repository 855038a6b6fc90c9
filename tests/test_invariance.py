"""scale_invariant_variables: structure found, numbers confirmed, decisions explained."""

import keras
import numpy as np
import pytest
from keras import layers

from keras_explr import invariance, models

pytestmark = pytest.mark.backends

X = np.random.default_rng(0).standard_normal((32, 8, 8, 1)).astype("float32")
Y = np.random.default_rng(1).integers(0, 10, 32)


def _paths(vs):
    return sorted(v.path for v in vs)


def test_plain_bn_convnet():
    m = models.bn_convnet(scale_invariant=False)
    m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    found, decisions = invariance.scale_invariant_variables(m, (X, Y), report=True)
    assert _paths(found) == ["conv0/kernel", "conv1/kernel"]
    by_path = {d.variable.path: d for d in decisions}
    assert len(decisions) == len(m.trainable_variables)
    assert "affine parameter" in by_path["bn0/gamma"].reason
    assert "bias" in by_path["head/bias"].reason
    for p in ("conv0/kernel", "conv1/kernel"):
        d = by_path[p]
        assert d.output_change <= 1e-5 and d.grad_cosine <= 1e-5
        assert 1e-6 < d.output_change_with_eps < 1e-1  # BN's ε = 1e-3 makes it approximate
    assert "scale-invariant" in invariance.explain(decisions)


def test_residual_layernorm_groupnorm_blocks():
    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    r = layers.Conv2D(8, 3, padding="same", use_bias=False, name="branch")(h)
    r = layers.BatchNormalization()(r)
    h = layers.ReLU()(layers.Add()([h, r]))
    h = layers.Conv2D(8, 3, padding="same", use_bias=False, name="gn_conv")(h)
    h = layers.GroupNormalization(groups=2)(h)
    h = layers.Conv2D(8, 3, padding="same", name="biased")(h)  # bias: not invariant alone
    h = layers.GroupNormalization(groups=2)(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(16, use_bias=False, name="ln_dense")(h)
    h = layers.LayerNormalization()(h)
    out = layers.Dense(10, name="head")(h)
    m = keras.Model(inp, out)
    found = invariance.scale_invariant_variables(m, X)
    assert _paths(found) == ["branch/kernel", "gn_conv/kernel", "ln_dense/kernel", "stem/kernel"]
    # The stem's scale is normalised away before the residual sum: degree 0.
    assert invariance.output_degree(m, [m.get_layer("stem").kernel]) == [0]
    # The head adds a bias to its scaled kernel: not homogeneous at all.
    assert invariance.output_degree(m, [m.get_layer("head").kernel]) == [None]
    # Jointly, every invariant kernel scales away too.
    assert invariance.output_degree(m, found) == [0]


def test_no_normalization_gives_nothing():
    m = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, use_bias=False), layers.ReLU(),
                          layers.Flatten(), layers.Dense(10, use_bias=False)])
    found, decisions = invariance.scale_invariant_variables(m, X, report=True)
    assert found == []
    assert all("c^" in d.reason for d in decisions)


def test_tanh_after_a_kernel_breaks_it_and_state_is_untouched():
    m = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, use_bias=False, activation="tanh"),
                          layers.BatchNormalization(), layers.Flatten(), layers.Dense(10)])
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in m.weights]
    eps = m.layers[1].epsilon
    found, decisions = invariance.scale_invariant_variables(m, X, report=True)
    # conv → tanh → BN: tanh(cz) is not c·tanh(z), but the BN after it still normalises;
    # the structure cannot prove it, and says why.
    assert found == []
    assert "not homogeneous" in decisions[0].reason
    for b, v in zip(before, m.weights):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(v))
    assert m.layers[1].epsilon == eps


def test_needs_a_graph():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or Sequential"):
        invariance.scale_invariant_variables(Sub(), X)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_preact_resnet_any_activation_keeps_the_joint_invariance(activation):
    # The activation sees BN's scale-free output, so GELU (smooth, no ReLU kink) keeps the group.
    m = models.preact_resnet(activation=activation, bn_epsilon=1e-30)
    convs = [v for v in m.trainable_variables if "kernel" in v.path]
    assert _paths(invariance.invariant_group(m)) == _paths(convs) and len(convs) == 6
    before = keras.ops.convert_to_numpy(m(X, training=True))
    for v in convs:
        v.assign(v * 3.0)
    after = keras.ops.convert_to_numpy(m(X, training=True))
    assert np.max(np.abs(after - before)) <= 1e-5 * np.max(np.abs(before))
    assert [layer.name for layer in m.layers if isinstance(layer, layers.Activation)][-1] == "final_act"
