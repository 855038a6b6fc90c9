"""keras_explr.optimizers.SGD against a plain numpy implementation of the paper's rule."""

import math

import keras
import numpy as np
import pytest

from keras_explr import optimizers, schedules
from tests.conftest import precision

pytestmark = pytest.mark.backends


def _numpy_sgd(w0, X, Y, lrs, momentum, weight_decay, nesterov, batch):
    """v ← γv + g + λθ; θ ← θ − η_t v  (nesterov: θ ← θ − η_t(g + λθ + γv)),
    for the loss mean((Xθ − Y)²) over consecutive batches."""
    w, v = w0.copy(), np.zeros_like(w0)
    for t, eta in enumerate(lrs):
        i = (t * batch) % len(X)
        xb, yb = X[i:i + batch], Y[i:i + batch]
        g = 2.0 * xb.T @ (xb @ w - yb) / (xb.shape[0] * yb.shape[1])
        d = g + weight_decay * w
        v = momentum * v + d
        w = w - eta * ((d + momentum * v) if nesterov else v)
    return w


def _fit(opt, X, Y, w0, steps, batch):
    model = keras.Sequential([keras.Input((X.shape[1],)),
                              keras.layers.Dense(Y.shape[1], use_bias=False)])
    model.layers[0].kernel.assign(w0)
    model.compile(opt, "mse")
    model.fit(X, Y, batch_size=batch, epochs=steps * batch // len(X), shuffle=False, verbose=0)
    return keras.ops.convert_to_numpy(model.layers[0].kernel)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, None), (0.9, False, 1e-2),
                                                  (0.9, True, 1e-2), (0.5, True, None)])
def test_matches_the_paper_rule_in_numpy(momentum, nesterov, wd):
    float64 = keras.backend.backend() == "tensorflow"
    with precision("float64" if float64 else "float32"):
        rng = np.random.default_rng(0)
        X, Y = rng.standard_normal((64, 5)), rng.standard_normal((64, 3))
        w0 = rng.standard_normal((5, 3))
        sched = keras.optimizers.schedules.PiecewiseConstantDecay([20], [np.float64(0.05), np.float64(0.01)])
        opt = optimizers.SGD(sched, momentum=momentum, nesterov=nesterov, weight_decay=wd)
        got = _fit(opt, X.astype(keras.config.floatx()), Y.astype(keras.config.floatx()), w0, 40, 16)
        lrs = [0.05] * 21 + [0.01] * 19
        ref = _numpy_sgd(w0, X, Y, lrs, momentum, wd or 0.0, nesterov, 16)
        np.testing.assert_allclose(got, ref, rtol=1e-13 if float64 else 1e-5, atol=1e-13 if float64 else 1e-5)


def test_zero_gradient_coupled_decay_goes_through_the_buffer():
    w = keras.Variable(np.ones(4, dtype="float32"))
    opt = optimizers.SGD(0.1, momentum=0.9, weight_decay=0.5)
    zero = keras.ops.zeros(4)
    opt.apply([zero], [w])  # v = 0.5θ = 0.5; θ = 1 − 0.05
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), 0.95, rtol=1e-6)
    opt.apply([zero], [w])  # v = 0.9·0.5 + 0.5·0.95 = 0.925; θ = 0.95 − 0.0925
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), 0.8575, rtol=1e-6)


def test_exclude_from_weight_decay():
    a, b = keras.Variable(np.ones(2, "float32"), name="kernel"), keras.Variable(np.ones(2, "float32"), name="bias")
    opt = optimizers.SGD(0.1, weight_decay=1.0)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.apply([keras.ops.zeros(2), keras.ops.zeros(2)], [a, b])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), 0.9, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b), 1.0)


def test_config_round_trip_with_schedule():
    sched = schedules.TEXP([10, 20], [0.1, 0.01, 0.001], 5e-4, 0.9)
    opt = optimizers.SGD(sched, momentum=0.9, nesterov=True, weight_decay=1e-4, clipnorm=1.0)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is optimizers.SGD
    assert again.get_config() == opt.get_config()
    assert again.weight_decay == 1e-4 and again.momentum == 0.9 and again.nesterov
    assert isinstance(again._learning_rate, schedules.TEXP)


@pytest.mark.parametrize("lr", [-0.1, 0.0, math.nan, math.inf])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number > 0"):
        optimizers.SGD(lr)


@pytest.mark.parametrize("mom", [-0.1, 1.0, math.nan])
def test_bad_momentum(mom):
    with pytest.raises(ValueError, match=r"`momentum` must be in the range \[0, 1\)"):
        optimizers.SGD(0.1, momentum=mom)


@pytest.mark.parametrize("wd", [-1e-4, math.nan, math.inf])
def test_bad_weight_decay(wd):
    with pytest.raises(ValueError, match=r"`weight_decay` must be a finite number >= 0"):
        optimizers.SGD(0.1, weight_decay=wd)


def test_bad_learning_rate_type_and_nesterov():
    with pytest.raises(ValueError, match="`learning_rate` must be a float > 0, a LearningRateSchedule"):
        optimizers.SGD("fast")
    with pytest.raises(ValueError, match="`nesterov` must be True or False"):
        optimizers.SGD(0.1, nesterov="yes")
