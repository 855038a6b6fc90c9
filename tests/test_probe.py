"""ScaleProbe, scale_model and equivalent_optimizer (docs/math.md#scale-probe).

Bit-identity: two real `model.fit` runs, one at scale 1 and one at scale k with
`equivalent_optimizer`, compared with ``np.array_equal`` on the effective
weights and the outputs. TF CPU is deterministic for a fixed thread count.
"""

import contextlib

import keras
import numpy as np
import pytest

from keras_explr import optimizers as kx_optimizers
from keras_explr.data import load_digits
from keras_explr.layers import ScaleProbe
from keras_explr.probe import ScaledSchedule, equivalent_optimizer, scale_model
from tests.conftest import backend

STEPS_PER_EPOCH, EPOCHS = 16, 7  # 112 steps
(X, Y), _ = load_digits(num_train=256)


def bn_net(seed=1):
    """Conv + BN + ReLU + a trainable head, with no zero-initialized variable
    (Keras's Lamb uses trust ratio 1 for a zero variable, which is not
    scale-covariant, see equivalent_optimizer's docstring)."""
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=0.1)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(6, 3, padding="same", bias_initializer=init),
        keras.layers.BatchNormalization(beta_initializer=init),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, bias_initializer=init),
    ])


def tanh_mlp(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(10)])


@contextlib.contextmanager
def no_grappler_arithmetic():
    """TF's graph arithmetic optimizer rewrites Keras SGD's momentum + weight
    decay update in a way that rounds differently for different constants
    (measured: 3.3e-6 at k=2 in graph mode, 0 eagerly and with it off)."""
    if backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    saved = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"arithmetic_optimization": saved.get("arithmetic_optimization", True)})


def fit(model, optimizer):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, batch_size=len(X) // STEPS_PER_EPOCH, epochs=EPOCHS, shuffle=False, verbose=0)
    assert int(optimizer.iterations) == STEPS_PER_EPOCH * EPOCHS
    return model.predict(X[:64], verbose=0)


def effective_weights(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, ScaleProbe):
            out += [keras.ops.convert_to_numpy(layer.unscaled(i)) for i in range(len(layer._stored))]
        else:
            out += [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights]
    return out


def twin_runs(make_optimizer, k, net=bn_net, rescale=None):
    a_model = net()
    a_out = fit(a_model, make_optimizer())
    b_model = (rescale or scale_model)(net(), k)
    b_out = fit(b_model, equivalent_optimizer(make_optimizer(), k))
    return (a_out, effective_weights(a_model)), (b_out, effective_weights(b_model))


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-3, epsilon=1e-4),
    "adamw": lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.05),
    "lion": lambda: keras.optimizers.Lion(1e-4, weight_decay=0.1),
    "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-3),
    "lamb": lambda: keras.optimizers.Lamb(1e-3, epsilon=1e-4),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("k", [2.0, 8.0])
def test_rescaled_run_is_bit_identical(name, k):
    with no_grappler_arithmetic():
        (a_out, a_w), (b_out, b_w) = twin_runs(OPTIMIZERS[name], k)
    assert np.array_equal(a_out, b_out), np.max(np.abs(a_out - b_out))
    assert all(np.array_equal(a, b) for a, b in zip(a_w, b_w))


@pytest.mark.parametrize("make", [
    lambda: kx_optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-3),
    lambda: kx_optimizers.ReparamWeightDecay(keras.optimizers.Adam(1e-3, epsilon=1e-4), 1e-3),
    lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5, centered=True, epsilon=1e-4),
    lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9),
                                  epsilon=1e-4, clipnorm=0.5),
], ids=["keras_explr_sgd", "reparam_adam", "rmsprop", "adam_schedule_clipnorm"])
def test_more_optimizers_bit_identical(make):
    (a_out, _), (b_out, _) = twin_runs(make, 4.0)
    assert np.array_equal(a_out, b_out), np.max(np.abs(a_out - b_out))


def test_k10_agrees_to_round_off():
    # Default ε = 1e-7. On the BN/ReLU net round-off is amplified (measured
    # 4.3e-2 at k=10 with ε=1e-7, 9e-6 with ε=1e-4, after 112 steps); on a
    # smooth net it stays at round-off.
    (a_out, _), (b_out, _) = twin_runs(lambda: keras.optimizers.Adam(1e-3), 10.0, net=tanh_mlp)
    assert np.max(np.abs(a_out - b_out)) < 1e-5


def _max_diff(pair):
    (a_out, _), (b_out, _) = pair
    return float(np.max(np.abs(a_out - b_out)))


def test_negative_control_epsilon_unscaled():
    k = 8.0

    class KeepEpsilon:
        def __call__(self):
            return keras.optimizers.Adam(1e-3, epsilon=1e-4)

    a = fit(bn_net(), KeepEpsilon()())
    b = fit(scale_model(bn_net(), k), keras.optimizers.Adam(1e-3 * k, epsilon=1e-4))
    assert np.max(np.abs(a - b)) > 1e-3


def test_negative_control_weight_decay_unscaled():
    k = 8.0
    a = fit(bn_net(), keras.optimizers.AdamW(1e-3, weight_decay=0.05))
    b = fit(scale_model(bn_net(), k), keras.optimizers.AdamW(1e-3 * k, weight_decay=0.05))
    assert np.max(np.abs(a - b)) > 1e-3


def test_negative_control_one_layer_rescaled():
    def first_layer_only(model, k):
        layers = [ScaleProbe(model.layers[0].__class__.from_config(model.layers[0].get_config()), k)]
        layers += [lay.__class__.from_config(lay.get_config()) for lay in model.layers[1:]]
        new = keras.Sequential([keras.Input((8, 8, 1))] + layers)
        layers[0].set_unscaled_weights([keras.ops.convert_to_numpy(w) for w in model.layers[0].weights])
        for old, lay in zip(model.layers[1:], layers[1:]):
            lay.set_weights(old.get_weights())
        return new

    diff = _max_diff(twin_runs(OPTIMIZERS["adam"], 8.0, rescale=first_layer_only))
    assert diff > 1e-3


def test_scale_model_same_function_not_mutated():
    model = bn_net()
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    scaled = scale_model(model, 8.0)
    assert np.array_equal(model.predict(X[:32], verbose=0), scaled.predict(X[:32], verbose=0))
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(before, model.weights))
    stored = {v.path: keras.ops.convert_to_numpy(v) for v in scaled.trainable_variables}
    assert len(stored) == len(model.trainable_variables)
    kernel = [v for p, v in stored.items() if p.endswith("scaled_kernel")][0]
    np.testing.assert_array_equal(kernel, 8.0 * keras.ops.convert_to_numpy(model.layers[0].kernel))


def test_scale_model_recurses_into_nested_models_and_skips_frozen():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="inner")
    frozen = keras.layers.Dense(3, name="frozen")
    frozen.trainable = False
    inputs = keras.Input((4,))
    model = keras.Model(inputs, frozen(inner(inputs)))
    scaled = scale_model(model, 2.0)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), scaled.predict(x, verbose=0))
    assert len(scaled.trainable_variables) == 2
    assert all("scaled_" in v.path for v in scaled.trainable_variables)


def test_scale_probe_serializes_and_saves(tmp_path):
    model = scale_model(bn_net(), 4.0)
    model.compile(optimizer=equivalent_optimizer(keras.optimizers.Adam(1e-3), 4.0), loss="mse")
    model.fit(X[:32], np.zeros((32, 10)), verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(X[:16], verbose=0), loaded.predict(X[:16], verbose=0))
    assert isinstance(loaded.layers[0], ScaleProbe) and loaded.layers[0].scale == 4.0
    assert isinstance(loaded.optimizer.learning_rate, type(model.optimizer.learning_rate))
    np.testing.assert_allclose(float(loaded.optimizer.learning_rate), 4e-3, rtol=1e-6)
    cfg = model.layers[0].get_config()
    again = ScaleProbe.from_config(cfg)
    assert again.scale == 4.0 and isinstance(again.layer, keras.layers.Conv2D)


@pytest.mark.backends
def test_scale_probe_under_mixed_float16_does_not_overflow():
    # w′ = 2^20·w would overflow float16 if the stored variable were autocast.
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        probe = ScaleProbe(keras.layers.Dense(4), scale=2.0 ** 20)
        y = probe(np.ones((2, 3), "float32"))
        assert probe._stored[0].dtype == "float32"
        assert probe._stored[0]._autocast is False
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))
        assert float(np.max(np.abs(keras.ops.convert_to_numpy(probe._stored[0])))) > 65504
    finally:
        keras.config.set_dtype_policy(saved)


@pytest.mark.backends
def test_scale_probe_gradient_is_g_over_k_on_every_backend():
    model = bn_net()
    scaled = scale_model(model, 4.0)
    for m in (model, scaled):
        m.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    # Same outputs, BN moving statistics updated through the probe, on every backend.
    np.testing.assert_allclose(model.predict(X[:16], verbose=0), scaled.predict(X[:16], verbose=0), atol=1e-6)
    probe_bn = scaled.layers[1]
    before = keras.ops.convert_to_numpy(probe_bn.layer.moving_mean).copy()
    scaled.fit(X[:32], np.zeros((32, 10)), batch_size=32, verbose=0)
    assert not np.array_equal(before, keras.ops.convert_to_numpy(probe_bn.layer.moving_mean))
    # One Adam step equals its rescaled twin on this backend too (float32 atol).
    a = fit(bn_net(), keras.optimizers.Adam(1e-3, epsilon=1e-4))
    b = fit(scale_model(bn_net(), 4.0), equivalent_optimizer(keras.optimizers.Adam(1e-3, epsilon=1e-4), 4.0))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_equivalent_optimizer_mapping_table():
    k = 4.0
    adam = equivalent_optimizer(keras.optimizers.AdamW(1e-3, weight_decay=0.1, epsilon=1e-6,
                                                       clipnorm=1.0, global_clipnorm=None), k)
    assert type(adam) is keras.optimizers.AdamW
    assert adam.epsilon == pytest.approx(1e-6 / k) and adam.weight_decay == pytest.approx(0.1 / k)
    assert adam.clipnorm == pytest.approx(1.0 / k)
    assert float(adam.learning_rate) == pytest.approx(4e-3, rel=1e-6)
    sgd = equivalent_optimizer(keras.optimizers.SGD(0.1, weight_decay=1e-2), k)
    assert float(sgd.learning_rate) == pytest.approx(1.6, rel=1e-6) and sgd.weight_decay == pytest.approx(1e-2 / 16)
    lamb = equivalent_optimizer(keras.optimizers.Lamb(1e-3), k)
    assert float(lamb.learning_rate) == pytest.approx(1e-3, rel=1e-6) and lamb.epsilon == pytest.approx(1e-7 / k)
    rms = equivalent_optimizer(keras.optimizers.RMSprop(1e-3, epsilon=1e-6), k)
    assert rms.epsilon == pytest.approx(1e-6 / 16)
    paper = equivalent_optimizer(kx_optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4), k)
    assert paper.weight_decay == pytest.approx(5e-4 / 16) and paper.momentum == 0.9
    sched = keras.optimizers.schedules.CosineDecay(1e-3, 100)
    lion = equivalent_optimizer(keras.optimizers.Lion(sched), k)
    assert isinstance(lion._learning_rate, ScaledSchedule) and lion._learning_rate.factor == k
    lso = equivalent_optimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), k)
    assert isinstance(lso, keras.optimizers.LossScaleOptimizer)
    assert lso.inner_optimizer.epsilon == pytest.approx(1e-7 / k)


@pytest.mark.parametrize("bad, match", [
    (lambda: keras.optimizers.Adadelta(1.0), "cannot map Adadelta"),
    (lambda: keras.optimizers.Ftrl(0.1), "cannot map Ftrl"),
    (lambda: kx_optimizers.Renormalize(kx_optimizers.SGD(0.1), every_n_steps=10), "cannot map Renormalize"),
    (lambda: type("MyAdam", (keras.optimizers.Adam,), {})(1e-3), "cannot map MyAdam"),
])
def test_equivalent_optimizer_refuses_what_it_cannot_map(bad, match):
    with pytest.raises(ValueError, match=match):
        equivalent_optimizer(bad(), 2.0)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), "two"])
def test_bad_scale_is_rejected(scale):
    with pytest.raises((ValueError, TypeError), match="scale"):
        ScaleProbe(keras.layers.Dense(2), scale=scale)
    with pytest.raises((ValueError, TypeError), match="scale"):
        scale_model(bn_net(), scale)
    with pytest.raises((ValueError, TypeError), match="scale"):
        equivalent_optimizer(keras.optimizers.Adam(), scale)


def test_bad_layers_and_models_are_rejected():
    with pytest.raises(ValueError, match="`layer` must be"):
        ScaleProbe("dense")
    with pytest.raises(ValueError, match="no trainable variables"):
        ScaleProbe(keras.layers.ReLU())(np.ones((1, 2), "float32"))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.ones((1, 2), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        scale_model(sub, 2.0)
    with pytest.raises(ValueError, match="must be built"):
        scale_model(keras.Sequential([keras.layers.Dense(2)]), 2.0)
