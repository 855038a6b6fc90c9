"""Renormalize: Lemma 2's equivalent rescaling keeps ExpLR runs in range, exactly."""

import math

import keras
import numpy as np
import pytest

from keras_explr import callbacks, models, optimizers, schedules, theory
from tests.conftest import precision


# Keras 3.15 on PyTorch and JAX (x64 on or off) computes a float64 model's BatchNormalization
# (and Dense) in float32 (keras-team/keras#23704: `result_type` maps float64 to float32 off
# TensorFlow), so a float64 twin there is a float32 twin whose round-off the training dynamics
# amplify: 1.3e-7 at the first renormalization, 0.05 after 300 steps of this ReLU net. The canary
# at the end of this file fails once Keras computes float64 BN in float64; then these run there too.
NEEDS_FLOAT64_BN = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="Keras computes float64 BatchNormalization in float32 "
    "off TensorFlow (keras-team/keras#23704); see test_keras_float64_batchnorm_off_tensorflow_is_float32")


def _run(make_opt, digits, renorm=None, epochs=30, smooth=False, batch=64, init=None):
    x, y = digits
    dtype = keras.config.floatx()
    keras.utils.set_random_seed(1)
    if smooth:
        model = models.bn_convnet(bn_epsilon=1e-30 if dtype == "float64" else 1e-12,
                                  activation="tanh", pooling="average")
    else:
        model = models.bn_convnet(bn_epsilon=1e-30)
    if init is not None:  # the same initial weights in another precision
        model.set_weights([w.astype(dtype) for w in init])
    opt = make_opt()
    if renorm:
        if keras.backend.backend() == "jax":  # no BN statistics under jit: give the group
            opt = optimizers.Renormalize(opt, variables=model.trainable_variables, **renorm)
        else:
            opt = optimizers.Renormalize(opt, model=model, **renorm)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rec = callbacks.FunctionRecorder(x[:128].astype(dtype))
    hist = model.fit(x.astype(dtype), y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=[rec])
    return rec.outputs, model, hist.history["loss"]


def _save_and_load(model, tmp_path):
    """Saves and reloads `model`; asserts the optimizer comes back with all its state."""
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    return loaded


def _norm(model):
    return math.sqrt(sum(float(np.sum(keras.ops.convert_to_numpy(v).astype("float64") ** 2))
                         for v in model.trainable_variables))


@NEEDS_FLOAT64_BN
@pytest.mark.parametrize("convention", ["paper", "keras"])
def test_renormalized_run_is_the_same_run(float64, digits, convention):
    sched = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)  # LR ×21 in 300 steps
    sgd = optimizers.SGD if convention == "paper" else keras.optimizers.SGD

    def make():
        return sgd(sched, momentum=0.9)

    plain, m_plain, _ = _run(make, digits)
    renorm, m_renorm, _ = _run(make, digits, renorm={"every_n_steps": 25})
    assert callbacks.max_relative_difference(plain, renorm) <= 1e-12
    scale = math.exp(float(keras.ops.convert_to_numpy(m_renorm.optimizer.log_scale)))
    assert _norm(m_plain) / _norm(m_renorm) == pytest.approx(scale, rel=1e-12)
    assert _norm(m_plain) > 3 * _norm(m_renorm)  # it did keep the weights small
    # BN moving statistics were rescaled with the weights: inference agrees too.
    for layer in ("bn0", "bn1"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(m_renorm.get_layer(layer).moving_variance) * scale ** 2,
            keras.ops.convert_to_numpy(m_plain.get_layer(layer).moving_variance), rtol=1e-12)
    x = digits[0][:128].astype("float64")
    a = keras.ops.convert_to_numpy(m_plain(x, training=False))
    b = keras.ops.convert_to_numpy(m_renorm(x, training=False))
    assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-12


def test_max_norm_trigger(float64, digits):
    sched = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
    plain, _, _ = _run(lambda: optimizers.SGD(sched, momentum=0.9), digits, epochs=20)
    renorm, model, _ = _run(lambda: optimizers.SGD(sched, momentum=0.9), digits,
                            renorm={"max_norm": 12.0, "target_norm": 8.0}, epochs=20)
    assert callbacks.max_relative_difference(plain, renorm) <= 1e-12
    assert _norm(model) <= 12.0


@pytest.mark.backends
def test_schedule_over_ten_million_steps_stays_finite_and_exact():
    # With renormalization the LR used is η̃_t·S_t^-2, formed in log space: keep
    # S_t² ≈ η̃_t/η (what rescaling to a fixed norm does) and the LR never leaves range.
    if keras.backend.backend() == "jax":
        pytest.skip("JAX without x64 forms the log-LR in float32 (~1e-4 at 1e7 steps)")
    sched = schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9)
    steps = np.unique(np.concatenate([np.arange(0, 200), np.geomspace(200, 1e7, 400).astype(np.int64)]))
    log_truth = sched._pieces.log_learning_rate(steps)
    # renormalize every 1000 steps: log S² is piecewise constant
    log_s2 = sched._pieces.log_learning_rate((steps // 1000) * 1000) - math.log(0.1)
    got = np.array([float(keras.ops.convert_to_numpy(sched.scaled(int(t), -ls)))
                    for t, ls in zip(steps, log_s2)])
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    np.testing.assert_allclose(got, np.exp(log_truth - log_s2), rtol=1e-6)
    # Unrenormalized, the same schedule saturates from step 90,600 on.
    assert float(keras.ops.convert_to_numpy(sched(10**7))) == pytest.approx(np.finfo(np.float32).max, rel=1e-6)


@NEEDS_FLOAT64_BN
def test_float32_run_that_overflows_stays_finite_with_renormalization(digits):
    # λη = 2.5e-3 (near the real-root bound 2.63e-3), γ = 0.9: the LR passes
    # float32's max at step 1139 and the weights' squares overflow with it.
    eta, lam = 0.1, 0.025
    assert theory.float32_horizon(eta, lam, 0.9, exact=True) == 1139
    sched = schedules.ExpLR.from_weight_decay(eta, lam, 0.9)

    def make():
        return optimizers.SGD(sched, momentum=0.9)

    kw = dict(epochs=70, smooth=True, batch=32)  # 20 steps per epoch, 1400 steps
    plain, _, _ = _run(make, digits, **kw)
    assert not all(np.isfinite(o).all() for o in plain)
    renorm, model, loss32 = _run(make, digits, renorm={"every_n_steps": 20}, **kw)
    assert all(np.isfinite(o).all() for o in renorm) and np.isfinite(loss32).all()
    keras.utils.set_random_seed(1)
    init = models.bn_convnet(activation="tanh", pooling="average").get_weights()
    with precision("float64"):
        ref, _, loss64 = _run(make, digits, init=init, **kw)
    # Step for step it is the float64 run until round-off is amplified by the
    # training dynamics (λη this large makes them chaotic after ~100 steps) ...
    early = [np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in zip(ref[:5], renorm[:5])]
    assert max(early) <= 1e-4
    # ... and statistically the same run to the end.
    assert abs(np.mean(loss32[-10:]) - np.mean(loss64[-10:])) <= 0.2 * np.mean(loss64[-10:])


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="on JAX Renormalize takes variables=, "
                    "not model= (no BatchNorm statistics to re-attach)")
def test_save_and_load_restore_the_log_scale(tmp_path, digits, float64):
    sched = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
    _, model, _ = _run(lambda: optimizers.SGD(sched, momentum=0.9), digits,
                       renorm={"every_n_steps": 7}, epochs=3)
    loaded = _save_and_load(model, tmp_path)
    assert float(keras.ops.convert_to_numpy(loaded.optimizer.log_scale)) > 0
    # The BatchNorm statistics it rescaled live in the model: re-attach it to train on.
    x, y = digits
    with pytest.raises(ValueError, match="set_model"):
        loaded.fit(x.astype("float64"), y, epochs=1, verbose=0)
    loaded.optimizer.set_model(loaded)
    loaded.fit(x.astype("float64"), y, epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs,msg", [
    ({}, "Give `every_n_steps`"),
    ({"every_n_steps": 0}, "`every_n_steps` must be an integer >= 1"),
    ({"max_norm": -1.0}, "`max_norm` must be a finite number > 0"),
    ({"every_n_steps": 5, "target_norm": 0.0}, "`target_norm` must be a finite number > 0"),
])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        optimizers.Renormalize(optimizers.SGD(0.1), **kwargs)


def test_rejects_optimizers_it_cannot_rescale():
    with pytest.raises(ValueError, match="SGD only"):
        optimizers.Renormalize(keras.optimizers.Adam(), every_n_steps=5)
    with pytest.raises(ValueError, match="has weight decay"):
        optimizers.Renormalize(optimizers.SGD(0.1, weight_decay=1e-4), every_n_steps=5)
    with pytest.raises(ValueError, match="not invariant|no trainable variable"):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizers.Renormalize(optimizers.SGD(0.1), every_n_steps=5, model=model)


# ---------------------------------------------------------------- the invariant group and the rest
def _fit_trainable_head(opt, digits, epochs=30):
    x, y = digits
    keras.utils.set_random_seed(2)
    model = models.bn_convnet(bn_epsilon=1e-30, scale_invariant=False)  # BN γ/β and head train
    if callable(opt):
        opt = opt(model)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rec = callbacks.FunctionRecorder(x[:128].astype("float64"))
    model.fit(x.astype("float64"), y, batch_size=64, epochs=epochs, shuffle=False, verbose=0, callbacks=[rec])
    return rec.outputs, model


@NEEDS_FLOAT64_BN
def test_explr_on_the_invariant_group_and_the_original_lr_wd_on_the_rest(float64, digits, tmp_path):
    lr, wd, momentum = 0.1, 5e-3, 0.9
    base, _ = _fit_trainable_head(optimizers.SGD(lr, momentum=momentum, weight_decay=wd), digits)
    twin, model = _fit_trainable_head(
        lambda m: optimizers.Partitioned.explr_twin(m, lr, wd, momentum), digits)
    assert sorted(model.optimizer._refs.paths) == ["conv0/kernel", "conv1/kernel"]
    assert callbacks.max_relative_difference(base, twin) <= 1e-9
    # ExpLR on every variable (head and BN γ/β included) is not the same run.
    sched = schedules.ExpLR.from_weight_decay(lr, wd, momentum)
    wrong, _ = _fit_trainable_head(optimizers.SGD(sched, momentum=momentum), digits)
    assert callbacks.max_relative_difference(base, wrong) > 1e-3
    # Saved and loaded, its state (both inner optimizers') is restored exactly.
    _save_and_load(model, tmp_path)


def test_partitioned_bad_arguments():
    sgd = optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="two different optimizers"):
        optimizers.Partitioned(sgd, sgd, group=["x"])
    with pytest.raises(ValueError, match="Give `group`"):
        optimizers.Partitioned(optimizers.SGD(0.1), optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="`rest_optimizer` must be"):
        optimizers.Partitioned(optimizers.SGD(0.1), "sgd", group=["x"])
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no trainable variable"):
        optimizers.Partitioned.explr_twin(plain, 0.1, 5e-4, 0.9)


@pytest.mark.backends
def test_renormalize_and_partitioned_on_every_backend(digits):
    # float32 on every backend (smooth net): renormalizing is the same run to round-off.
    sched = schedules.ExpLR.from_weight_decay(0.05, 2e-3, 0.9)

    def make():
        return optimizers.SGD(sched, momentum=0.9)

    kw = dict(epochs=10, smooth=True)
    plain, m_plain, _ = _run(make, digits, **kw)
    renorm, m_renorm, _ = _run(make, digits, renorm={"every_n_steps": 10, "target_norm": 1.0}, **kw)
    assert callbacks.max_relative_difference(plain, renorm) <= 1e-4
    assert _norm(m_renorm) == pytest.approx(1.0, rel=0.2) and _norm(m_plain) > 3
    x, y = digits
    keras.utils.set_random_seed(2)
    model = models.bn_convnet(scale_invariant=False)
    model.compile(optimizers.Partitioned.explr_twin(model, 0.05, 2e-3, 0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.fit(x, y, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all() and loss[-1] < loss[0]


@NEEDS_FLOAT64_BN
def test_preact_resnet_group_twin_and_renormalization(float64, digits):
    # No single conv of a pre-activation ResNet is invariant; all of them jointly are.
    x, y = digits
    lr, wd, momentum = 0.1, 5e-3, 0.9

    def fit(opt_fn, scale_invariant, epochs=15):
        keras.utils.set_random_seed(4)
        model = models.preact_resnet(bn_epsilon=1e-30, scale_invariant=scale_invariant)
        model.compile(opt_fn(model), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rec = callbacks.FunctionRecorder(x[:128].astype("float64"))
        model.fit(x.astype("float64"), y, batch_size=64, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[rec])
        return rec.outputs, model

    _, probe = fit(lambda m: optimizers.SGD(lr), True, epochs=1)
    from keras_explr import invariance

    group = invariance.invariant_group(probe)
    convs = [v for v in probe.trainable_variables if "kernel" in v.path]
    assert sorted(v.path for v in group) == sorted(v.path for v in convs) and len(convs) == 6
    assert all(invariance.output_degree(probe, [v]) == [None] for v in group if "conv2" in v.path)
    # Trainable head and BN γ/β: ExpLR on the convs, LR + WD on the rest == SGD with WD on all.
    base, _ = fit(lambda m: optimizers.SGD(lr, momentum=momentum, weight_decay=wd), False)
    twin, _ = fit(lambda m: optimizers.Partitioned.explr_twin(m, lr, wd, momentum), False)
    assert callbacks.max_relative_difference(base, twin) <= 1e-9
    # Frozen head: renormalizing the joint group is the same run.
    sched = schedules.ExpLR.from_weight_decay(lr, wd, momentum)
    plain, _ = fit(lambda m: optimizers.SGD(sched, momentum=momentum), True)
    renorm, _ = fit(lambda m: optimizers.Renormalize(optimizers.SGD(sched, momentum=momentum),
                                                     every_n_steps=20, model=m), True)
    assert callbacks.max_relative_difference(plain, renorm) <= 1e-12


@pytest.mark.backends
@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="a JAX/PyTorch-backend property of Keras")
def test_keras_float64_batchnorm_off_tensorflow_is_float32():
    """Canary for keras-team/keras#23704: when it fails, Keras computes float64 BN in float64 off
    TensorFlow: remove NEEDS_FLOAT64_BN and the note in docs/guides/schedules.md#precision-and-range."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.read("jax_enable_x64"):
            pytest.skip("JAX without x64 has no float64 at all")
    with precision("float64"):
        x = np.random.RandomState(0).randn(64, 8, 8, 4)
        out = keras.ops.convert_to_numpy(keras.layers.BatchNormalization(epsilon=1e-30)(x, training=True))
    exact = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)))
    assert out.dtype == np.float64
    assert np.max(np.abs(out - exact)) > 1e-9  # measured 5.4e-7 (torch), 4.5e-7 (JAX x64): float32 inside
