"""ReparamWeightDecay: the new parameterization θ ← (1−λ_new)θ − η·update."""

import math

import keras
import numpy as np
import pytest

from keras_explr import callbacks, models, optimizers, schedules, theory
from tests.conftest import precision


def _value(v):
    return keras.ops.convert_to_numpy(v)


def _apply(opt, grads, variables):
    """opt.apply, or on JAX the stateless path that model.fit takes (Keras's
    eager LossScaleOptimizer.apply does not run on JAX)."""
    if keras.backend.backend() != "jax":
        return opt.apply(grads, variables)
    if not opt.built:
        opt.build(variables)
    new_vars, new_opt = opt.stateless_apply([v.value for v in opt.variables], grads,
                                            [v.value for v in variables])
    for v, x in zip(variables, new_vars):
        v.assign(x)
    for v, x in zip(opt.variables, new_opt):
        v.assign(x)


def _vars():
    return keras.Variable(np.full((3, 2), 2.0, "float32")), keras.Variable(np.full((2,), 2.0, "float32"))


@pytest.mark.backends
@pytest.mark.parametrize("lr", [0.1, 0.0, "schedule"])
def test_zero_gradient_step_is_exactly_one_minus_lambda(lr):
    if lr == "schedule":
        lr = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    w, b = _vars()
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(lr, momentum=0.9), weight_decay=0.01)
    opt.apply([keras.ops.zeros((3, 2)), keras.ops.zeros(2)], [w, b])
    np.testing.assert_array_equal(_value(w), np.float32(2.0) * np.float32(1 - 0.01))
    np.testing.assert_array_equal(_value(b), 2.0)  # vectors are not decayed by default
    # Keras's built-in decay rides on the LR: (1 − ηλ)θ.
    w2, _ = _vars()
    keras.optimizers.SGD(0.1, weight_decay=0.01).apply([keras.ops.zeros((3, 2))], [w2])
    np.testing.assert_allclose(_value(w2), 2.0 * (1 - 0.1 * 0.01), rtol=1e-6)


@pytest.mark.backends
def test_coupled_mode_adds_lambda_over_eta_theta_to_the_gradient():
    w, _ = _vars()
    opt = optimizers.ReparamWeightDecay(optimizers.SGD(0.1, momentum=0.9), 0.01, mode="coupled")
    g = keras.ops.ones((3, 2))
    opt.apply([g], [w])  # v = 1 + (0.01/0.1)·2 = 1.2; θ = 2 − 0.1·1.2
    np.testing.assert_allclose(_value(w), 1.88, rtol=1e-6)
    opt.apply([g], [w])  # v = 0.9·1.2 + 1 + 0.1·1.88 = 2.268; θ = 1.88 − 0.2268
    np.testing.assert_allclose(_value(w), 1.6532, rtol=1e-6)


@pytest.mark.backends
def test_lr_exponent_one_scales_lambda_with_the_lr():
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.01])
    w, _ = _vars()
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(lr), 0.01, lr_exponent=1)
    z = keras.ops.zeros((3, 2))
    opt.apply([z], [w])  # step 0: η_0/η_0 = 1
    np.testing.assert_allclose(_value(w), 2.0 * 0.99, rtol=1e-6)
    opt.apply([z], [w])  # step 1: λ·0.01/0.1
    np.testing.assert_allclose(_value(w), 2.0 * 0.99 * (1 - 0.001), rtol=1e-6)


@pytest.mark.backends
def test_gradient_accumulation_decays_once_per_real_update():
    w, _ = _vars()
    inner = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    opt = optimizers.ReparamWeightDecay(inner, 0.1)
    for _ in range(4):
        opt.apply([keras.ops.zeros((3, 2))], [w])
    np.testing.assert_allclose(_value(w), 2.0 * 0.9 ** 2, rtol=1e-6)


@pytest.mark.backends
def test_loss_scale_skipped_steps_do_not_decay():
    for outer_lso in (True, False):
        w, _ = _vars()
        if outer_lso:  # what model.compile does under mixed_float16
            opt = keras.optimizers.LossScaleOptimizer(
                optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 0.1))
        elif keras.backend.backend() == "jax":  # Keras's LSO cannot run inside another optimizer on JAX
            with pytest.raises(ValueError, match="Put it outside instead"):
                optimizers.ReparamWeightDecay(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), 0.1)
            continue
        else:
            opt = optimizers.ReparamWeightDecay(
                keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), 0.1)
        bad = keras.ops.convert_to_tensor(np.full((3, 2), np.inf, "float32"))
        _apply(opt, [bad], [w])
        np.testing.assert_array_equal(_value(w), 2.0)
        _apply(opt, [keras.ops.zeros((3, 2))], [w])
        np.testing.assert_allclose(_value(w), 1.8, rtol=1e-6)


def test_global_clipnorm_clips_before_the_coupled_term():
    w = keras.Variable(np.ones((2, 2), "float32"))
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.5, global_clipnorm=1.0), 0.1, mode="coupled")
    g = np.full((2, 2), 100.0, "float32")
    opt.apply([keras.ops.convert_to_tensor(g)], [w])
    clipped = g / np.linalg.norm(g)
    np.testing.assert_allclose(_value(w), 1.0 - 0.5 * (clipped + (0.1 / 0.5) * 1.0), rtol=1e-6)


def test_exclusions_and_properties():
    w, b = _vars()
    other = keras.Variable(np.full((2, 2), 2.0, "float32"), name="skip_me")
    opt = optimizers.ReparamWeightDecay(keras.optimizers.Adam(1e-3), 0.1, exclude_vectors=False)
    opt.exclude_from_weight_decay(var_names=["skip_me"])
    opt.apply([keras.ops.zeros((3, 2)), keras.ops.zeros(2), keras.ops.zeros((2, 2))], [w, b, other])
    np.testing.assert_allclose(_value(w), 1.8, rtol=1e-6)
    np.testing.assert_allclose(_value(b), 1.8, rtol=1e-6)
    np.testing.assert_array_equal(_value(other), 2.0)
    assert opt.inner_optimizer.learning_rate is not None
    assert int(_value(opt.iterations)) == 1
    assert opt.variables == opt.inner_optimizer.variables


@pytest.mark.parametrize("inner,msg", [
    (lambda: keras.optimizers.SGD(0.1, weight_decay=1e-4), "would decay twice"),
    (lambda: optimizers.SGD(0.1, weight_decay=1e-4), "would decay twice"),
    (lambda: keras.optimizers.AdamW(1e-3), "would decay twice"),
    (lambda: "sgd", "must be a keras.optimizers.Optimizer"),
])
def test_rejects_bad_inner(inner, msg):
    with pytest.raises(ValueError, match=msg):
        optimizers.ReparamWeightDecay(inner(), 1e-4)


@pytest.mark.parametrize("wd", [-1e-3, 1.0, 2.0, math.nan, math.inf])
def test_rejects_bad_weight_decay(wd):
    with pytest.raises(ValueError, match=r"`weight_decay`"):
        optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), wd)


def test_rejects_bad_mode_and_nesting():
    with pytest.raises(ValueError, match="`mode` must be 'decoupled' or 'coupled'"):
        optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 1e-4, mode="l2")
    inner = optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 1e-4)
    with pytest.raises(ValueError, match="already a ReparamWeightDecay"):
        optimizers.ReparamWeightDecay(inner, 1e-4)


def test_serialization_round_trip():
    opt = optimizers.ReparamWeightDecay(optimizers.SGD(schedules.TEXP([5], [0.1, 0.01], 0.0, 0.9), momentum=0.9),
                                        3e-4, mode="coupled", lr_exponent=1)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is optimizers.ReparamWeightDecay
    assert again.get_config() == opt.get_config()
    assert isinstance(again.inner_optimizer, optimizers.SGD)


# ---------------------------------------------------------------- inside model.fit, float64
def _run(opt, digits, scale=1.0, epochs=30):
    x, y = digits
    keras.utils.set_random_seed(1)
    model = models.bn_convnet(bn_epsilon=1e-30)
    if scale != 1.0:  # θ_0 → kθ_0 on the scale-invariant kernels (the head stays)
        for v in model.trainable_variables:
            v.assign(v * scale)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rec = callbacks.FunctionRecorder(x[:128].astype("float64"))
    model.fit(x.astype("float64"), y, batch_size=64, epochs=epochs, shuffle=False, verbose=0, callbacks=[rec])
    return rec.outputs


@pytest.mark.parametrize("mode,lam", [("decoupled", 2e-3), ("coupled", 5e-4)])
def test_wrapper_with_constant_lr_equals_its_explr_twin(float64, digits, mode, lam):
    lr, gamma = 0.1, 0.9  # λ_new; λ_old = λ_new/η
    base = _run(optimizers.ReparamWeightDecay(optimizers.SGD(lr, momentum=gamma), lam, mode=mode), digits)
    twin = schedules.ExpLR.from_weight_decay(
        lr, theory.standard_weight_decay(lam, lr), gamma,
        weight_decay_mode="decoupled" if mode == "decoupled" else "coupled")
    assert twin.learning_rates(300) / lr > 3  # the LR grows
    other = _run(optimizers.SGD(twin, momentum=twin.momentum), digits)
    assert callbacks.max_relative_difference(base, other) <= 1e-9


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_collapse_theorem(float64, digits, mode):
    # (θ_0, η) and (kθ_0, k²η) with the same λ_new give the same function (docs/math.md#collapse).
    lr, lam = 0.05, 5e-4
    ref = _run(optimizers.ReparamWeightDecay(optimizers.SGD(lr, momentum=0.9), lam, mode=mode), digits, epochs=20)
    for k in (0.5, 3.0):
        run = _run(optimizers.ReparamWeightDecay(optimizers.SGD(k * k * lr, momentum=0.9), lam, mode=mode),
                   digits, scale=k, epochs=20)
        assert callbacks.max_relative_difference(ref, run) <= 1e-9


def test_collapse_fails_in_the_standard_parameterization(float64, digits):
    # Negative control: λ_old fixed, (θ_0, η) vs (3θ_0, 9η) are different runs.
    ref = _run(optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-2), digits, epochs=20)
    run = _run(optimizers.SGD(0.45, momentum=0.9, weight_decay=1e-2), digits, scale=3.0, epochs=20)
    assert callbacks.max_relative_difference(ref, run) > 1e-3


def test_save_load_restores_wrapper_and_state_bit_identically(tmp_path, digits):
    x, y = digits

    def compiled():
        keras.utils.set_random_seed(3)
        model = models.bn_convnet()
        sched = schedules.TEXP([15, 30], [0.1, 0.03, 0.01], 5e-3, 0.9)
        opt = optimizers.ReparamWeightDecay(optimizers.SGD(sched, momentum=0.9), 5e-4, mode="coupled")
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    fit = dict(batch_size=64, shuffle=False, verbose=0)
    straight = compiled()
    straight.fit(x, y, epochs=4, **fit)
    first = compiled()
    first.fit(x, y, epochs=2, **fit)
    path = str(tmp_path / "m.keras")
    first.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is optimizers.ReparamWeightDecay
    assert isinstance(loaded.optimizer.inner_optimizer._learning_rate, schedules.TEXP)
    assert int(_value(loaded.optimizer.iterations)) == 20
    for a, b in zip(first.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(_value(a), _value(b))
    loaded.fit(x, y, epochs=2, **fit)
    for a, b in zip(straight.weights, loaded.weights):
        np.testing.assert_array_equal(_value(a), _value(b))


def test_tensorboard_logs_the_inner_learning_rate(tmp_path, digits):
    x, y = digits
    model = models.bn_convnet()
    sched = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
    model.compile(optimizers.ReparamWeightDecay(optimizers.SGD(sched, momentum=0.9), 1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(tmp_path), update_freq="epoch")])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    tag = next(t for t in acc.Tags()["tensors"] if "learning_rate" in t)
    logged = [float(make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
    np.testing.assert_allclose(logged[-1], sched.learning_rates(20), rtol=1e-6)


def test_use_ema_averages_the_decayed_weights():
    w, _ = _vars()
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), 0.1)
    for _ in range(2):  # Keras starts the average at the first step's weights
        opt.apply([keras.ops.zeros((3, 2))], [w])
    np.testing.assert_allclose(_value(w), 1.62, rtol=1e-6)
    average = opt.inner_optimizer._model_variables_moving_average[0]
    np.testing.assert_allclose(_value(average), 0.5 * 1.8 + 0.5 * 1.62, rtol=1e-6)


def test_mixed_float16_fit_wraps_it_in_a_loss_scale_optimizer(digits):
    x, y = digits
    with precision("float32"):
        keras.config.set_dtype_policy("mixed_float16")
        keras.utils.set_random_seed(0)
        model = models.bn_convnet(scale_invariant=False)
        model.compile(optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.05, momentum=0.9), 1e-4),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        loss = model.fit(x, y, batch_size=64, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
    assert model.get_layer("conv0").kernel.dtype == "float32"  # variables stay float32


# ------------------------------------------- lr_exponent p, schedule-valued λ (issue 13)
@pytest.mark.backends
@pytest.mark.parametrize("p", [0, 1, 2])
def test_lr_exponent_scales_the_decay_by_the_lr_ratio_to_the_power_p(p):
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.01])
    w, _ = _vars()
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(lr), 0.01, lr_exponent=p)
    z = keras.ops.zeros((3, 2))
    opt.apply([z], [w])  # step 0: (η_0/η_0)^p = 1
    opt.apply([z], [w])  # step 1: λ·(0.01/0.1)^p
    np.testing.assert_allclose(_value(w), 2.0 * 0.99 * (1 - 0.01 * 0.1 ** p), rtol=1e-6)


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["schedule", "callable"])
def test_weight_decay_as_a_function_of_the_step(kind):
    if kind == "schedule":
        lam = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.02])
    else:
        def lam(step):
            return keras.ops.where(keras.ops.greater(step, 1), 0.02, 0.1)
    w, _ = _vars()
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1, momentum=0.9), lam)
    for _ in range(3):
        opt.apply([keras.ops.zeros((3, 2))], [w])
    np.testing.assert_allclose(_value(w), 2.0 * 0.9 * 0.9 * 0.98, rtol=1e-6)


def test_reference_learning_rate_default_and_explicit():
    sched = keras.optimizers.schedules.PolynomialDecay(0.2, 10, 0.02)
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(sched), 0.01, lr_exponent=2)
    assert math.isclose(opt.reference_learning_rate, 0.2, rel_tol=1e-6)
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(sched), 0.01, lr_exponent=2,
                                        reference_learning_rate=0.5)
    w, _ = _vars()
    opt.apply([keras.ops.zeros((3, 2))], [w])
    np.testing.assert_allclose(_value(w), 2.0 * (1 - 0.01 * (0.2 / 0.5) ** 2), rtol=1e-6)


def test_new_arguments_round_trip_and_old_configs_load():
    for kwargs in ({"lr_exponent": 2, "reference_learning_rate": 0.3}, {"lr_exponent": 0.5},
                   {"lr_exponent": 1}):
        opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 1e-3, **kwargs)
        again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
        assert again.get_config() == opt.get_config()
        assert again.lr_exponent == opt.lr_exponent and again.reference_learning_rate == opt.reference_learning_rate
    sched = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    opt = optimizers.ReparamWeightDecay(keras.optimizers.Adam(1e-3), sched, lr_exponent=1)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again.weight_decay, keras.optimizers.schedules.ExponentialDecay)
    assert again.get_config() == opt.get_config()
    # A config without lr_exponent loads with the default p = 0; the removed alias
    # follow_schedule (lr_exponent=1 before the first release) is refused by name.
    old = keras.optimizers.serialize(optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 1e-3))
    cfg = dict(old["config"])
    for key in ("lr_exponent", "reference_learning_rate"):
        cfg.pop(key)
    again = keras.optimizers.deserialize(dict(old, config=cfg))
    assert again.lr_exponent == 0.0 and again.reference_learning_rate is None
    for flag in (True, False):
        with pytest.raises(TypeError, match="`follow_schedule=True` is `lr_exponent=1`"):
            keras.optimizers.deserialize(dict(old, config=dict(cfg, follow_schedule=flag)))


def _linear_twin(p, mode, weight_decay, numpy_p=None, steps_per_epoch=4, epochs=6):
    """model.fit of a linear model with MSE (float64) vs the same run in numpy.

    `weight_decay`: a float, or (what the wrapper gets, λ(t) for numpy)."""
    numpy_p = p if numpy_p is None else numpy_p
    keras_wd, numpy_wd = weight_decay if isinstance(weight_decay, tuple) else (weight_decay, weight_decay)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16 * steps_per_epoch, 4)), rng.standard_normal((16 * steps_per_epoch, 3))
    w0 = rng.standard_normal((4, 3))
    lr = keras.optimizers.schedules.ExponentialDecay(np.float64(0.1), 4, np.float64(0.7))
    inner = (keras.optimizers.SGD(lr, momentum=np.float64(0.9)) if mode == "decoupled"
             else optimizers.SGD(lr, momentum=0.9))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    model.layers[0].kernel.assign(w0)
    model.compile(optimizers.ReparamWeightDecay(inner, keras_wd, mode=mode, lr_exponent=p),
                  keras.losses.MeanSquaredError())
    kernels = []
    rec = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: kernels.append(_value(model.layers[0].kernel).copy()))
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[rec])
    w, buf, ref = w0.copy(), np.zeros_like(w0), []
    t = 0
    for _ in range(epochs):
        for i in range(steps_per_epoch):
            xb, yb = x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]
            g = 2.0 * xb.T @ (xb @ w - yb) / (16 * 3)
            eta = 0.1 * 0.7 ** (t / 4)
            lam = numpy_wd(t) if callable(numpy_wd) else numpy_wd
            d = lam * (eta / 0.1) ** numpy_p
            if mode == "decoupled":   # θ ← (1 − d)θ, then Keras SGD: m ← γm − ηg, θ ← θ + m
                w = w * (1 - d)
                buf = 0.9 * buf - eta * g
                w = w + buf
            else:                     # v ← γv + g + (d/η)θ, θ ← θ − ηv
                buf = 0.9 * buf + g + (d / eta) * w
                w = w - eta * buf
            ref.append(w.copy())
            t += 1
    return float(np.max(np.abs(np.asarray(kernels) - np.asarray(ref))) / np.max(np.abs(ref)))


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
@pytest.mark.parametrize("p", [0, 1, 2])
def test_lr_exponent_in_fit_equals_a_numpy_brute_force(float64, p, mode):
    dist = _linear_twin(p, mode, 0.05)
    print(f"p={p} {mode}: {dist:.2e}")
    assert dist <= 1e-12
    # Control: numpy at the neighbouring exponent is a different run.
    assert _linear_twin(p, mode, 0.05, numpy_p=(p + 1) % 3) > 1e-4


def test_schedule_valued_weight_decay_in_fit_equals_a_numpy_brute_force(float64):
    sched = keras.optimizers.schedules.PiecewiseConstantDecay(
        [5, 12], [np.float64(0.05), np.float64(0.02), np.float64(0.005)])

    def lam(t):  # PiecewiseConstantDecay: values[i] while step <= boundaries[i]
        return 0.05 if t <= 5 else 0.02 if t <= 12 else 0.005

    for p in (0, 2):
        dist = _linear_twin(p, "decoupled", (sched, lam))
        print(f"schedule λ(t), p={p}: {dist:.2e}")
        assert dist <= 1e-12
    assert _linear_twin(0, "decoupled", (sched, lambda t: 0.05)) > 1e-4  # control: λ(t) matters
