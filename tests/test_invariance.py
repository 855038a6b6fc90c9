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


# ---------------------------------------------------------------- issue 12: never wrong in the unsafe direction
def _dense_bn(middle, **dense_kw):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = layers.Dense(16, use_bias=False, name="d", **dense_kw)(inp)
    h = middle(h)
    h = layers.BatchNormalization(name="bn")(h)
    out = layers.Dense(3, name="head")(h)
    return keras.Model(inp, out)


XD = np.random.default_rng(2).standard_normal((16, 8)).astype("float32")


@pytest.mark.parametrize("middle, why", [
    (lambda: layers.ReLU(max_value=6.0), "clips or thresholds"),
    (lambda: layers.ReLU(threshold=0.5), "clips or thresholds"),
    (lambda: layers.Activation("relu6"), "relu6"),
    (lambda: layers.Activation("hard_sigmoid"), "hard_sigmoid"),
    (lambda: layers.Lambda(lambda t: keras.ops.clip(t, -1.0, 1.0)), "numeric check"),
])
def test_clipping_and_thresholds_break_the_chain(middle, why):
    m = _dense_bn(middle())
    kernel = m.get_layer("d").kernel
    assert invariance.invariant_group(m) == []
    found, decisions = invariance.scale_invariant_variables(m, XD, report=True, num_checks=(0.5, 2.0))
    assert found == [] and why in decisions[0].reason
    with pytest.raises(ValueError, match=r"not jointly scale-invariant[\s\S]*d/kernel[\s\S]*" + why):
        invariance.confirm_group(m, [kernel])
    # Brute force: ×2^10 really changes the output (the old ×0.5/×2 probes never reached ReLU6's clip).
    before = keras.ops.convert_to_numpy(m(XD, training=True))
    kernel.assign(kernel * 1024.0)
    after = keras.ops.convert_to_numpy(m(XD, training=True))
    assert np.max(np.abs(after - before)) > 1e-3


def test_homogeneous_lambda_and_leaky_relu_pass_after_a_numeric_check():
    m = _dense_bn(lambda t: layers.Lambda(lambda z: 3.0 * keras.ops.maximum(z, 0.0))(layers.LeakyReLU(0.2)(t)))
    assert _paths(invariance.invariant_group(m)) == ["d/kernel"]
    assert invariance.confirm_group(m, ["d/kernel"]).output_change == 0.0  # exact powers of two: bit-equal


def test_kernel_regularizer_counts_in_the_loss():
    m = _dense_bn(layers.ReLU(), kernel_regularizer=keras.regularizers.L2(1e-3))
    assert invariance.invariant_group(m) == []
    with pytest.raises(ValueError, match=r"d/kernel[\s\S]*regularizer"):
        invariance.confirm_group(m, [m.get_layer("d").kernel])
    found, decisions = invariance.scale_invariant_variables(m, XD, report=True)
    assert found == [] and "regularizer" in decisions[0].reason
    # The structural check agrees with the numbers: the penalty moves with the scale.
    assert invariance.output_degree(m, [m.get_layer("d").kernel]) == [0]


def test_activity_regularizer_and_constraint():
    m = _dense_bn(layers.ActivityRegularization(l2=1e-2))
    assert invariance.invariant_group(m) == []
    m = _dense_bn(layers.ReLU(), kernel_constraint=keras.constraints.MaxNorm(1.0))
    assert invariance.invariant_group(m) == []
    m = _dense_bn(layers.ReLU(), kernel_constraint=keras.constraints.NonNeg())
    assert _paths(invariance.invariant_group(m)) == ["d/kernel"]


def test_renormalize_refuses_the_threshold_relu_of_the_issue():
    from keras_explr import optimizers

    m = _dense_bn(layers.ReLU(threshold=0.5))
    with pytest.raises(ValueError):
        optimizers.Renormalize(optimizers.SGD(0.1), every_n_steps=1, model=m)
    with pytest.raises(ValueError, match="d/kernel"):
        optimizers.Renormalize(optimizers.SGD(0.1), every_n_steps=1, model=m,
                               variables=[m.get_layer("d").kernel])


def test_biased_depthwise_separable_and_groupnorm():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(8, 3, padding="same", name="c")(inp)                  # biased, before BN: jointly
    h = layers.ReLU()(layers.BatchNormalization(center=True, scale=True)(h))
    h = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = layers.ReLU()(layers.GroupNormalization(groups=4)(h))
    h = layers.SeparableConv2D(8, 3, padding="same", name="sep")(h)          # both kernels + bias: degree 2 ≠ 1
    h = layers.LayerNormalization()(h)
    out = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D()(h))
    m = keras.Model(inp, out)
    group = _paths(invariance.invariant_group(m))
    assert {"c/kernel", "c/bias", "dw/kernel", "sep/bias"} <= set(group)
    # Exactly one of the separable conv's two kernels can join its bias.
    assert len({"sep/depthwise_kernel", "sep/pointwise_kernel"} & set(group)) == 1 and len(group) == 5
    with pytest.raises(ValueError, match="sep/bias"):
        invariance.confirm_group(m, ["sep/depthwise_kernel", "sep/pointwise_kernel", "sep/bias"])
    d = invariance.normalization_input_degrees(m, invariance.invariant_group(m))
    assert sorted(d.values()) == [1, 1, 1]


def test_decisions_do_not_depend_on_the_batch_size():
    keras.utils.set_random_seed(3)
    m = models.preact_resnet(scale_invariant=False, blocks_per_stage=2)
    rng = np.random.default_rng(5)
    answers = {n: _paths(invariance.scale_invariant_variables(m, rng.standard_normal((n, 8, 8, 1)).astype("float32")))
               for n in (1, 2, 64)}
    assert answers[1] == answers[2] == answers[64] and answers[1]
    groups = {n: _paths(invariance.invariant_group(m, rng.standard_normal((n, 8, 8, 1)).astype("float32")))
              for n in (1, 2, 64)}
    assert groups[1] == groups[2] == groups[64] == _paths([v for v in m.trainable_variables if "kernel" in v.path
                                                           and "head" not in v.path])


def test_largest_group_with_gamma_beta_candidates():
    # γ/β may join when offered: BN(γ, β) → ReLU → conv → BN scales away their common factor.
    m = models.bn_convnet(scale_invariant=False)
    bn0 = [v for v in m.trainable_variables if v.path.startswith("bn0/")]
    group = _paths(invariance.invariant_group(m, candidates=m.trainable_variables))
    assert set(_paths(bn0)) <= set(group) and "head/kernel" not in group
    invariance.confirm_group(m, group)
    with pytest.raises(ValueError, match="affine parameter"):
        invariance.confirm_group(m, [bn0[0]])
