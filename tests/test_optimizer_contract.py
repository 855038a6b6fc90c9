"""One contract for every wrapper × inner optimizer × training mode (in the
manner of optax's alias_test.py).

Wrappers: ReparamWeightDecay (decoupled, coupled), Partitioned, and
Renormalize (SGD only; the rest must be refused). Inner optimizers and modes:
tests/factories.py. Each case asserts, against an independent run of the bare
inner optimizer (never against the wrapper itself):
- decay once per real update: a zero-gradient update gives exactly (1 − λ)θ on
  a decayed kernel, only on the call that completes an update, never on a step
  a LossScaleOptimizer skips; with a gradient, the wrapper's result is the bare
  inner optimizer's update from (1 − λ)θ (decoupled) or on g + (λ/η)θ (coupled);
- get_config → from_config gives an optimizer that continues bit-identically;
- `apply` and `stateless_apply` agree bit for bit where Keras supports
  `stateless_apply` (JAX).
"""

import copy

import keras
import numpy as np
import pytest
from keras import ops

from keras_explr import optimizers
from tests.factories import INNER, MODES, gradients, value, variables

pytestmark = pytest.mark.backends

LAM = 0.01
WRAPPERS = ("decoupled", "coupled", "partitioned")
CASES = [(w, i, m) for w in WRAPPERS for i in INNER for m in MODES]


def _steps(mode):
    return MODES[mode].get("gradient_accumulation_steps", 1)


def _wrap(wrapper, inner_name, mode, lso=False):
    inner = INNER[inner_name](**MODES[mode])
    if wrapper == "partitioned":
        return optimizers.Partitioned(inner, INNER[inner_name](**MODES[mode]), group=["kernel"])
    opt = optimizers.ReparamWeightDecay(inner, LAM, mode=wrapper)
    return keras.optimizers.LossScaleOptimizer(opt) if lso else opt


def _skip_unsupported(wrapper, inner_name, mode):
    if inner_name == "muon" and mode == "accumulation" and keras.backend.backend() == "tensorflow":
        pytest.skip("Keras's Muon has no gradient accumulation path on TF (its own limitation)")


def _bare_reference(inner_name, mode, theta, grads, calls, split=False):
    """The bare inner optimizer on fresh copies of the variables (with `split`,
    one optimizer per variable, as Partitioned's group and rest)."""
    vs = variables()
    for v, t in zip(vs, theta):
        v.assign(t)
    parts = [[0], [1]] if split else [[0, 1]]
    for part in parts:
        opt = INNER[inner_name](**MODES[mode])
        for _ in range(calls):
            opt.apply([ops.convert_to_tensor(grads[i]) for i in part], [vs[i] for i in part])
    return [value(v) for v in vs]


@pytest.mark.parametrize("wrapper,inner_name,mode", CASES)
def test_decay_once_per_real_update(wrapper, inner_name, mode):
    _skip_unsupported(wrapper, inner_name, mode)
    steps = _steps(mode)
    vs = variables()
    theta = [value(v) for v in vs]
    opt = _wrap(wrapper, inner_name, mode)
    zeros = [np.zeros_like(t) for t in theta]
    for call in range(steps):
        opt.apply([ops.convert_to_tensor(z) for z in zeros], vs)
        if call < steps - 1:  # a micro-step: nothing moves
            np.testing.assert_array_equal(value(vs[0]), theta[0])
    if wrapper == "decoupled":
        np.testing.assert_array_equal(value(vs[0]), theta[0] * np.float32(1 - LAM))
        np.testing.assert_array_equal(value(vs[1]), theta[1])  # vectors are not decayed
    elif wrapper == "partitioned" or inner_name not in ("keras_sgd", "explr_sgd"):
        # No decay of its own: the bare inner optimizer's result on the same gradients.
        expected = (_bare_reference(inner_name, mode, theta, zeros, steps, split=True)
                    if wrapper == "partitioned" else None)
        if expected is not None:
            for v, e in zip(vs, expected):
                np.testing.assert_array_equal(value(v), e)
    else:  # coupled SGD, first update: v = (λ/η)θ, θ ← θ − η v = (1 − λ)θ
        np.testing.assert_allclose(value(vs[0]), theta[0] * (1 - LAM), rtol=1e-6)
    # The same with a gradient, against the bare inner optimizer run independently.
    grads = gradients()
    vs = variables()
    opt = _wrap(wrapper, inner_name, mode)
    for _ in range(steps):
        opt.apply([ops.convert_to_tensor(g) for g in grads], vs)
    start = [value(v) for v in variables()]
    ref_grads = [g.copy() for g in grads]
    if wrapper == "decoupled":
        start[0] = start[0] * np.float32(1 - LAM)
    elif wrapper == "coupled":
        clip = {k: v for k, v in MODES[mode].items() if "clip" in k}
        ref_grads = _clip(ref_grads, **clip)
        ref_grads[0] = ref_grads[0] + np.float32(LAM / _lr(inner_name)) * start[0]
        mode = "plain" if clip else mode  # the wrapper clipped; the bare optimizer must not
    expected = _bare_reference(inner_name, mode, start, ref_grads, steps, split=wrapper == "partitioned")
    rtol = 0 if wrapper != "coupled" else 2e-6
    for v, e in zip(vs, expected):
        np.testing.assert_allclose(value(v), e, rtol=rtol, atol=rtol * 1e-3)


def _lr(inner_name):
    return float(value(INNER[inner_name]().learning_rate))


def _clip(grads, clipnorm=None, global_clipnorm=None):
    if clipnorm:
        return [g * np.float32(min(1.0, clipnorm / np.linalg.norm(g))) for g in grads]
    if global_clipnorm:
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
        return [g * np.float32(min(1.0, global_clipnorm / norm)) for g in grads]
    return grads


@pytest.mark.parametrize("wrapper", ["decoupled", "coupled"])
@pytest.mark.parametrize("inner_name", list(INNER))
def test_no_decay_on_a_step_the_loss_scale_optimizer_skips(wrapper, inner_name):
    if keras.backend.backend() == "jax":
        pytest.skip("Keras's LossScaleOptimizer.apply does not run eagerly on JAX (its own traced cond); "
                    "model.fit goes through stateless_apply: test_mixed_float16_fit_decays_once_per_step")
    vs = variables()
    theta = [value(v) for v in vs]
    opt = _wrap(wrapper, inner_name, "plain", lso=True)
    bad = [np.full_like(theta[0], np.inf), np.zeros_like(theta[1])]
    opt.apply([ops.convert_to_tensor(g) for g in bad], vs)
    for v, t in zip(vs, theta):
        np.testing.assert_array_equal(value(v), t)
    assert int(value(opt.iterations)) == 0 or wrapper  # LSO counts its own calls
    zeros = [np.zeros_like(t) for t in theta]
    opt.apply([ops.convert_to_tensor(z) for z in zeros], vs)
    if wrapper == "decoupled":
        np.testing.assert_array_equal(value(vs[0]), theta[0] * np.float32(1 - LAM))


@pytest.mark.parametrize("wrapper", ["decoupled", "coupled"])
@pytest.mark.parametrize("inner_name", list(INNER))
def test_loss_scale_optimizer_inside_skips_without_decay(wrapper, inner_name):
    if keras.backend.backend() == "jax":
        with pytest.raises(ValueError, match="LossScaleOptimizer.apply cannot run inside"):
            optimizers.ReparamWeightDecay(keras.optimizers.LossScaleOptimizer(INNER[inner_name]()), LAM)
        return
    vs = variables()
    theta = [value(v) for v in vs]
    opt = optimizers.ReparamWeightDecay(
        keras.optimizers.LossScaleOptimizer(INNER[inner_name]()), LAM, mode=wrapper)
    opt.apply([ops.convert_to_tensor(np.full_like(t, np.nan)) for t in theta], vs)
    for v, t in zip(vs, theta):
        np.testing.assert_array_equal(value(v), t)
    opt.apply([ops.convert_to_tensor(np.zeros_like(t)) for t in theta], vs)
    if wrapper == "decoupled":
        np.testing.assert_array_equal(value(vs[0]), theta[0] * np.float32(1 - LAM))
    elif inner_name in ("keras_sgd", "explr_sgd"):
        np.testing.assert_allclose(value(vs[0]), theta[0] * (1 - LAM), rtol=1e-6)


@pytest.mark.parametrize("wrapper,inner_name,mode", CASES)
def test_config_round_trip_continues_bit_identically(wrapper, inner_name, mode):
    _skip_unsupported(wrapper, inner_name, mode)
    grads = [ops.convert_to_tensor(g) for g in gradients()]
    a_vars, b_vars = variables(), variables()
    a = _wrap(wrapper, inner_name, mode)
    config = keras.saving.serialize_keras_object(a)
    b = keras.saving.deserialize_keras_object(copy.deepcopy(config))
    assert type(b) is type(a)
    for _ in range(2 * _steps(mode)):
        a.apply(grads, a_vars)
        b.apply(grads, b_vars)
    for x, y in zip(a_vars, b_vars):
        np.testing.assert_array_equal(value(x), value(y))


@pytest.mark.parametrize("inner_name", list(INNER))
@pytest.mark.parametrize("mode", list(MODES))
def test_renormalize_takes_sgd_only_and_no_clipping(inner_name, mode):
    inner = INNER[inner_name](**MODES[mode])
    if inner_name not in ("keras_sgd", "explr_sgd"):
        with pytest.raises(ValueError, match="equivalence for SGD only"):
            optimizers.Renormalize(inner, every_n_steps=2)
        return
    if "clip" in mode:
        with pytest.raises(ValueError, match="clips gradients"):
            optimizers.Renormalize(inner, every_n_steps=2)
        return
    vs = variables()
    opt = optimizers.Renormalize(inner, every_n_steps=2)
    twin_vars = variables()
    twin = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(opt))
    grads = [ops.convert_to_tensor(g) for g in gradients()]
    for _ in range(4 * _steps(mode)):
        opt.apply(grads, vs)
        twin.apply(grads, twin_vars)
    for x, y in zip(vs, twin_vars):
        np.testing.assert_array_equal(value(x), value(y))
    # Renormalized once per 2 real updates, back to the norm after the first update.
    assert float(value(opt.log_scale)) != 0.0


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="Keras supports stateless_apply on JAX only (TF raises, torch mutates in place)")
@pytest.mark.parametrize("wrapper,inner_name,mode", CASES)
def test_apply_and_stateless_apply_agree_bit_for_bit(wrapper, inner_name, mode):
    grads = [ops.convert_to_tensor(g) for g in gradients()]
    a_vars, b_vars = variables(), variables()
    a, b = _wrap(wrapper, inner_name, mode), _wrap(wrapper, inner_name, mode)
    a.build(a_vars)
    b.build(b_vars)
    opt_values = [v.value for v in b.variables]
    train_values = [v.value for v in b_vars]
    for _ in range(2 * _steps(mode)):
        a.apply(grads, a_vars)
        train_values, opt_values = b.stateless_apply(opt_values, grads, train_values)
    for x, y in zip(a_vars, train_values):
        np.testing.assert_array_equal(value(x), np.asarray(y))
    for x, y in zip(a.variables, opt_values):
        np.testing.assert_array_equal(value(x), np.asarray(y))


def _model(seed=0):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, name="hidden", kernel_initializer=keras.initializers.GlorotNormal(seed))(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head",
                                                  kernel_initializer=keras.initializers.GlorotNormal(seed + 1))(h))


def _zero_loss(y_true, y_pred):
    return 0.0 * ops.mean(y_pred)


@pytest.mark.parametrize("inner_name", list(INNER))
def test_mixed_float16_fit_decays_once_per_step(inner_name):
    """In model.fit under mixed_float16 (Keras wraps the optimizer in a
    LossScaleOptimizer by itself): a zero-gradient step gives exactly (1 − λ)θ."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _model()
        model.compile(optimizer=optimizers.ReparamWeightDecay(INNER[inner_name](), LAM), loss=_zero_loss)
        kernel = model.get_layer("hidden").kernel
        assert kernel.dtype == "float32"
        theta = value(kernel)
        x = np.ones((8, 4), "float32")
        model.fit(x, np.zeros((8, 3), "float32"), batch_size=8, epochs=1, verbose=0)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        np.testing.assert_array_equal(value(kernel), theta * np.float32(1 - LAM))
    finally:
        keras.config.set_dtype_policy(saved)


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("inner_name", [n for n in ("explr_sgd", "adam", "lion", "muon") if n in INNER])
def test_keras_file_round_trip_continues_bit_identically(tmp_path, wrapper, inner_name):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)

    def compiled():
        model = _model()
        inner = INNER[inner_name]
        if wrapper == "partitioned":
            opt = optimizers.Partitioned(inner(), inner(), group=["hidden/kernel"])
        else:
            opt = optimizers.ReparamWeightDecay(inner(), LAM, mode=wrapper)
        model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    straight = compiled()
    straight.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    first = compiled()
    first.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    first.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is type(first.optimizer)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(straight.weights, loaded.weights):
        np.testing.assert_array_equal(value(a), value(b))
    for a, b in zip(straight.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(value(a), value(b))
