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
SGDS = ("keras_sgd", "explr_sgd")


def _steps(mode):
    return MODES[mode].get("gradient_accumulation_steps", 1)


def _refusal(wrapper, inner_name, mode):
    """The error a refused combination raises at construction (a regex), or None."""
    if wrapper == "decoupled" and inner_name == "ftrl":
        return "Ftrl recomputes the weights"
    if wrapper == "coupled" and inner_name == "multi":
        return "several optimizers, each with its own learning rate"
    return None


def _wrap(wrapper, inner_name, mode, lso=False, lam=LAM):
    inner = INNER[inner_name](**MODES[mode])
    if wrapper == "partitioned":
        return optimizers.Partitioned(inner, INNER[inner_name](**MODES[mode]), group=["kernel"])
    opt = optimizers.ReparamWeightDecay(inner, lam, mode=wrapper)
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


def _expected(wrapper, inner_name, mode, grads):
    """The contract's result, from the bare inner optimizer run independently: decoupled, its
    update from (1 − λ)θ; coupled, its update on clip(g) + (λ/η)θ; Partitioned, one
    optimizer per part."""
    start = [value(v) for v in variables()]
    ref_grads = [g.copy() for g in grads]
    if wrapper == "decoupled":
        start[0] = start[0] * np.float32(1 - LAM)
    elif wrapper == "coupled":
        clip = {k: v for k, v in MODES[mode].items() if "clip" in k}
        ref_grads = _clip(ref_grads, **clip)
        # (λ/η)θ as the wrapper forms it: float32(λ) / float32(η), in float32
        ref_grads[0] = ref_grads[0] + (np.float32(LAM) / np.float32(_lr(inner_name))) * start[0]
        mode = "plain" if clip else mode  # the wrapper clipped; the bare optimizer must not
    return _bare_reference(inner_name, mode, start, ref_grads, _steps(mode), split=wrapper == "partitioned")


def check_contract(wrapper, inner_name, mode):
    """Every assertion of one cell (also run, mutated, by test_a_perturbed_decay_fails_the_contract)."""
    refusal = _refusal(wrapper, inner_name, mode)
    if refusal:
        with pytest.raises(ValueError, match=refusal):
            _wrap(wrapper, inner_name, mode)
        return
    steps = _steps(mode)
    # Bit for bit, but where the wrapper clips with Keras's code and the oracle in numpy.
    rtol = 2e-6 if wrapper == "coupled" and "clip" in mode else 0
    for grads in ([np.zeros_like(g) for g in gradients()], gradients()):
        vs = variables()
        theta = [value(v) for v in vs]
        opt = _wrap(wrapper, inner_name, mode)
        for call in range(steps):
            opt.apply([ops.convert_to_tensor(g) for g in grads], vs)
            if call < steps - 1 and not grads[0].any():  # a micro-step: nothing moves
                np.testing.assert_array_equal(value(vs[0]), theta[0])
        expected = _expected(wrapper, inner_name, mode, grads)
        for v, e in zip(vs, expected):
            np.testing.assert_allclose(value(v), e, rtol=rtol, atol=rtol * 5e-2)
        if grads[0].any():
            continue
        # The zero-gradient statement itself, where the contract states a number:
        if wrapper == "decoupled":  # exactly (1 − λ)θ, vectors undecayed
            exact = 1e-6 if inner_name == "schedule_free" else 0  # (its bare zero step is y·β/β)
            np.testing.assert_allclose(value(vs[0]), theta[0] * np.float32(1 - LAM), rtol=exact)
            np.testing.assert_allclose(value(vs[1]), theta[1], rtol=exact)
        elif wrapper == "coupled" and inner_name in SGDS:  # v = (λ/η)θ, θ − ηv = (1 − λ)θ
            np.testing.assert_allclose(value(vs[0]), theta[0] * (1 - LAM), rtol=1e-6)


@pytest.mark.parametrize("wrapper,inner_name,mode", CASES)
def test_decay_once_per_real_update(wrapper, inner_name, mode):
    _skip_unsupported(wrapper, inner_name, mode)
    check_contract(wrapper, inner_name, mode)


# (decoupled: the decay is skipped whole at λ = 0; coupled: the wrapper still clips, in every clipping mode)
@pytest.mark.parametrize("wrapper,inner_name,mode", [
    (w, i, m) for w in ("decoupled", "coupled") for i in INNER for m in MODES
    if w == "coupled" or m in ("plain", "accumulation")])
def test_zero_weight_decay_is_the_bare_inner_optimizer_bit_for_bit(wrapper, inner_name, mode):
    _skip_unsupported(wrapper, inner_name, mode)
    if _refusal(wrapper, inner_name, mode):
        return  # (refused whatever λ: test_decay_once_per_real_update)
    grads = gradients()
    vs = variables()
    opt = _wrap(wrapper, inner_name, mode, lam=0.0)
    for _ in range(2 * _steps(mode)):
        opt.apply([ops.convert_to_tensor(g) for g in grads], vs)
    expected = _bare_reference(inner_name, mode, [value(v) for v in variables()], grads, 2 * _steps(mode))
    for v, e in zip(vs, expected):
        np.testing.assert_array_equal(value(v), e)


@pytest.mark.parametrize("wrapper,inner_name", [("coupled", "adagrad"), ("coupled", "keras_sgd"),
                                                ("decoupled", "adam"), ("decoupled", "schedule_free")])
def test_a_perturbed_decay_fails_the_contract(monkeypatch, wrapper, inner_name):
    """The mutation check: λ_t off by 0.1 % must fail the contract above. (Adam-like rules
    normalize each coordinate of the gradient, so a coupled term off by 0.1 % moves their first
    steps by far less than an ulp: the coupled check uses Adagrad, whose accumulator does not.)"""
    if inner_name not in INNER:
        pytest.skip(f"no {inner_name} in this Keras")
    original = optimizers.ReparamWeightDecay._lambda_t

    def perturbed(self, dtype, variable=None):
        return original(self, dtype, variable) * 1.001

    check_contract(wrapper, inner_name, "plain")  # (passes unperturbed)
    monkeypatch.setattr(optimizers.ReparamWeightDecay, "_lambda_t", perturbed)
    with pytest.raises(AssertionError):
        check_contract(wrapper, inner_name, "plain")


def _lr(inner_name):
    return float(value(INNER[inner_name]().learning_rate))


def _clip(grads, clipnorm=None, global_clipnorm=None, clipvalue=None):
    """Keras's clipping rules, in numpy."""
    if clipnorm:
        return [g * np.float32(min(1.0, clipnorm / np.linalg.norm(g))) for g in grads]
    if global_clipnorm:
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
        return [g * np.float32(min(1.0, global_clipnorm / norm)) for g in grads]
    if clipvalue:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


@pytest.mark.parametrize("wrapper", ["decoupled", "coupled"])
@pytest.mark.parametrize("inner_name", list(INNER))
def test_no_decay_on_a_step_the_loss_scale_optimizer_skips(wrapper, inner_name):
    if keras.backend.backend() == "jax":
        pytest.skip("Keras's LossScaleOptimizer.apply does not run eagerly on JAX (its own traced cond); "
                    "model.fit goes through stateless_apply: test_mixed_float16_fit_decays_once_per_step")
    if _refusal(wrapper, inner_name, "plain"):
        return
    vs = variables()
    theta = [value(v) for v in vs]
    opt = _wrap(wrapper, inner_name, "plain", lso=True)
    bad = [np.full_like(theta[0], np.inf), np.zeros_like(theta[1])]
    opt.apply([ops.convert_to_tensor(g) for g in bad], vs)
    for v, t in zip(vs, theta):
        np.testing.assert_array_equal(value(v), t)
    assert int(value(opt.inner_optimizer.iterations)) == 0  # the skipped step is no update
    zeros = [np.zeros_like(t) for t in theta]
    opt.apply([ops.convert_to_tensor(z) for z in zeros], vs)
    expected = _expected(wrapper, inner_name, "plain", zeros)
    for v, e in zip(vs, expected):
        np.testing.assert_array_equal(value(v), e)


@pytest.mark.parametrize("wrapper", ["decoupled", "coupled"])
@pytest.mark.parametrize("inner_name", list(INNER))
def test_loss_scale_optimizer_inside_skips_without_decay(wrapper, inner_name):
    if keras.backend.backend() == "jax":
        with pytest.raises(ValueError, match="LossScaleOptimizer.apply cannot run inside"):
            optimizers.ReparamWeightDecay(keras.optimizers.LossScaleOptimizer(INNER[inner_name]()), LAM)
        return
    if _refusal(wrapper, inner_name, "plain"):
        with pytest.raises(ValueError, match=_refusal(wrapper, inner_name, "plain")):
            optimizers.ReparamWeightDecay(keras.optimizers.LossScaleOptimizer(INNER[inner_name]()), LAM,
                                          mode=wrapper)
        return
    vs = variables()
    theta = [value(v) for v in vs]
    opt = optimizers.ReparamWeightDecay(
        keras.optimizers.LossScaleOptimizer(INNER[inner_name]()), LAM, mode=wrapper)
    opt.apply([ops.convert_to_tensor(np.full_like(t, np.nan)) for t in theta], vs)
    for v, t in zip(vs, theta):
        np.testing.assert_array_equal(value(v), t)
    zeros = [np.zeros_like(t) for t in theta]
    opt.apply([ops.convert_to_tensor(z) for z in zeros], vs)
    expected = _expected(wrapper, inner_name, "plain", zeros)
    for v, e in zip(vs, expected):
        np.testing.assert_array_equal(value(v), e)


@pytest.mark.parametrize("wrapper,inner_name,mode", [c for c in CASES if c[2] in ("plain", "accumulation", "clipnorm")])
def test_config_round_trip_continues_bit_identically(wrapper, inner_name, mode):
    _skip_unsupported(wrapper, inner_name, mode)
    if _refusal(wrapper, inner_name, mode):
        return  # (asserted in test_decay_once_per_real_update)
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
    if inner_name == "multi":
        with pytest.raises(ValueError, match="delegates to other optimizers"):
            optimizers.Renormalize(inner, every_n_steps=2)
        return
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
    if _refusal(wrapper, inner_name, mode):
        return
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
        if _refusal("decoupled", inner_name, "plain"):
            with pytest.raises(ValueError, match=_refusal("decoupled", inner_name, "plain")):
                optimizers.ReparamWeightDecay(INNER[inner_name](), LAM)
            return
        model.compile(optimizer=optimizers.ReparamWeightDecay(INNER[inner_name](), LAM), loss=_zero_loss)
        kernel = model.get_layer("hidden").kernel
        assert kernel.dtype == "float32"
        theta = value(kernel)
        x = np.ones((8, 4), "float32")
        model.fit(x, np.zeros((8, 3), "float32"), batch_size=8, epochs=1, verbose=0)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        expected = theta
        if inner_name == "schedule_free":
            # Keras's own ScheduleFreeAdamW in `fit` may lose the copy of θ it makes in `build`
            # (Keras 3.15 on TF: the bare optimizer's zero-gradient step gives 0): the contract is
            # (1 − λ) times what the bare optimizer does there.
            bare = _model()
            bare.compile(optimizer=INNER[inner_name](), loss=_zero_loss)
            bare.fit(x, np.zeros((8, 3), "float32"), batch_size=8, epochs=1, verbose=0)
            expected = value(bare.get_layer("hidden").kernel)
        np.testing.assert_allclose(value(kernel), expected * np.float32(1 - LAM),
                                   rtol=1e-6 if inner_name == "schedule_free" else 0)
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
