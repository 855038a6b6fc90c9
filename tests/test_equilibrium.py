"""Equilibrium-aware training: the ε alarm, the timescale parameterization, corrected decay
on the invariant group, time to equilibrium, and warm-up–stable–decay with its exact twin.

Oracles: brute-force float64 numpy (the WSD formulas written out here, the
two-layer BatchNorm network of `tests.numpy_oracle`, variances with np.var).
"""

import math
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_explr import callbacks, data, invariance, models, optimizers, schedules, theory
from tests import numpy_oracle as toy
from tests.conftest import precision

BACKEND = keras.backend.backend()


# ----------------------------------------------------------------- the timescale
def test_timescale_round_trip_is_exact_to_rounding():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(2000):
        lam = 10 ** rng.uniform(-7, -1)
        lr = 10 ** rng.uniform(-5, 0)
        spe = int(rng.integers(1, 5000))
        for convention, momentum in (("torch_adamw", 0.0), ("keras", 0.0), ("independent", 0.0),
                                     ("torch_sgd", 0.9), ("optax_adamw", 0.0)):
            tau = theory.weight_decay_timescale(lam, lr, convention, momentum, steps_per_epoch=spe)
            back = theory.weight_decay_from_timescale(tau.epochs, lr, convention, steps_per_epoch=spe,
                                                      momentum=momentum)
            worst = max(worst, abs(back / lam - 1.0))
            back = theory.weight_decay_from_timescale(tau.iterations, lr, convention, unit="steps",
                                                      momentum=momentum)
            worst = max(worst, abs(back / lam - 1.0))
    assert worst <= 4 * np.finfo(np.float64).eps, worst


def test_four_times_the_data_at_fixed_epoch_timescale_is_a_quarter_of_lambda():
    for tau, lr, spe in ((5.0, 1e-3, 391), (0.37, 0.1, 17), (123.0, 3e-4, 1)):
        small = theory.weight_decay_from_timescale(tau, lr, steps_per_epoch=spe)
        big = theory.weight_decay_from_timescale(tau, lr, steps_per_epoch=4 * spe)
        assert big == small / 4  # exactly
        a = optimizers.ReparamWeightDecay(keras.optimizers.Adam(lr), timescale=tau, steps_per_epoch=spe)
        b = optimizers.ReparamWeightDecay(keras.optimizers.Adam(lr), timescale=tau, steps_per_epoch=4 * spe)
        assert b.weight_decay == a.weight_decay / 4
        assert a.weight_decay == 1.0 / (tau * spe)


def test_timescale_units_and_bad_inputs():
    assert theory.weight_decay_from_timescale(0.25, 1e-3, unit="fraction", total_steps=4000) == 1.0
    assert theory.weight_decay_from_timescale(1000, 1.0, "independent", unit="steps") == 1e-3
    with pytest.raises(ValueError, match="steps_per_epoch"):
        theory.weight_decay_from_timescale(5, 1e-3)
    with pytest.raises(ValueError, match="total_steps"):
        theory.weight_decay_from_timescale(0.5, 1e-3, unit="fraction")
    with pytest.raises(ValueError, match="unit"):
        theory.weight_decay_from_timescale(5, 1e-3, unit="hours", steps_per_epoch=3)
    with pytest.raises(ValueError, match="timescale"):
        theory.weight_decay_from_timescale(0.0, 1e-3, steps_per_epoch=3)
    with pytest.raises(ValueError, match="not both"):
        optimizers.ReparamWeightDecay(keras.optimizers.Adam(), 1e-4, timescale=3, steps_per_epoch=5)
    with pytest.raises(ValueError, match="neither"):
        optimizers.ReparamWeightDecay(keras.optimizers.Adam())
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optimizers.ReparamWeightDecay(keras.optimizers.Adam(), 1e-4, steps_per_epoch=5)


def test_hp_optimizer_searches_learning_rate_and_timescale():
    keras_tuner = pytest.importorskip("keras_tuner")
    from keras_explr.tuning import hp_optimizer

    hp = keras_tuner.HyperParameters()
    opt = hp_optimizer(hp, "adam", parameterization="timescale", learning_rate=(1e-4, 1e-2),
                       timescale=(1.0, 50.0), steps_per_epoch=100)
    assert sorted(hp.values) == ["learning_rate", "timescale"]
    assert isinstance(opt, optimizers.ReparamWeightDecay)
    assert opt.weight_decay == 1.0 / (hp.values["timescale"] * 100)
    assert isinstance(opt.inner_optimizer, keras.optimizers.Adam)
    with pytest.raises(ValueError, match="timescale"):
        hp_optimizer(keras_tuner.HyperParameters(), "sgd", parameterization="timescale", weight_decay=(1e-5, 1e-3))


# ----------------------------------------------------------------- time to equilibrium
def test_equilibration_steps_inverts_the_clock():
    d = 0.1 * 5e-4
    n = theory.equilibration_steps(5e-4, 0.1, "torch_adamw", clock=3.0)
    assert n == 3.0 / d and theory.equilibration_clock(n, d) == pytest.approx(3.0, rel=1e-15)
    # torch_sgd with momentum γ: d = ηλ/(1 − γ)
    assert theory.equilibration_steps(5e-4, 0.1, "torch_sgd", momentum=0.9) == pytest.approx(0.1 / d, rel=1e-12)
    # a schedule: brute-force cumulative sum
    lrs = np.r_[np.full(50, 0.1), np.full(100, 0.01)]
    n = theory.equilibration_steps(0.01, lrs, "composer", clock=0.6)
    total = np.cumsum(0.01 * lrs / 0.1)
    assert total[n - 1] >= 0.6 - 1e-12 > total[n - 2]
    assert theory.equilibration_steps(0.01, lrs, "composer", clock=5.0) is None
    assert theory.equilibration_steps(0.0, 0.1, "keras") == math.inf


# ----------------------------------------------------------------- WSD
def _wsd_oracle(t, peak, w, s, d, decay, final):
    """Warm-up–stable–decay written out step by step (the textbook formulas)."""
    out = []
    for k in t:
        if k < w:
            out.append(peak * k / w)
        elif k <= w + s:
            out.append(peak)
        elif k >= w + s + d:
            out.append(final)
        else:
            u = (k - w - s) / d
            shape = {"linear": 1 - u, "cosine": 0.5 * (1 + math.cos(math.pi * u)), "1-sqrt": 1 - math.sqrt(u)}[decay]
            out.append(final + (peak - final) * shape)
    return np.array(out)


@pytest.mark.parametrize("decay", theory.WSD_DECAYS)
def test_wsd_matches_the_textbook_formula(decay):
    t = np.arange(0, 400)
    for args in ((0.1, 20, 200, 150, decay, 0.0), (3e-4, 0, 10, 1, decay, 1e-5), (1.0, 7, 0, 300, decay, 0.2)):
        got = theory.wsd_learning_rates(t, *args)
        np.testing.assert_allclose(got, _wsd_oracle(t, *args), rtol=1e-13, atol=1e-15 * args[0])


@pytest.mark.backends
@pytest.mark.parametrize("decay", theory.WSD_DECAYS)
def test_wsd_float32_within_a_few_ulp_on_every_backend(decay):
    lr = schedules.WarmupStableDecay(0.1, 100, 800, 2000, decay, final_learning_rate=0.0)
    steps = np.r_[np.arange(0, 3000), [2899, 2900, 2901, 10**6, 2**31 - 1]]
    truth = lr.learning_rates(steps)
    got = np.array([float(lr(ops.convert_to_tensor(int(t), "int64"))) for t in steps[::37]])
    sub = truth[::37]
    vec = ops.convert_to_numpy(lr(ops.convert_to_tensor(steps, "int64"))) if BACKEND != "torch" else None
    for values, ref in ((got, sub),) + (((vec.astype(np.float64), truth),) if vec is not None else ()):
        pos = ref > 0
        ulp = np.abs(values[pos] - ref[pos]) / np.spacing(ref[pos].astype(np.float32)).astype(np.float64)
        assert ulp.max() <= 6.0, (decay, ulp.max())  # measured (TF, JAX): linear 2.1, 1-sqrt 3.0, cosine 4.5
        assert np.all(values[~pos] == 0.0)
    assert str(ops.dtype(lr(ops.convert_to_tensor(5, "int64")))) == "float32"


@pytest.mark.backends
@pytest.mark.skipif(BACKEND == "torch", reason="torch has no HLO (the check is for XLA: TF, JAX)")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_wsd_compiled_step_has_no_float64(policy):
    from tests.test_no_float64 import F64, _hlo

    hlo = _hlo(lambda m: optimizers.SGD(schedules.WarmupStableDecay(0.1, 10, 50, 40, "cosine"), momentum=0.9),
               policy)
    assert "f32" in hlo and not F64.search(hlo)


def test_wsd_serializes_and_rejects_bad_inputs():
    lr = schedules.WarmupStableDecay(0.1, 10, 20, 30, "1-sqrt", final_learning_rate=1e-3, name="wsd")
    back = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert isinstance(back, schedules.WarmupStableDecay) and back.get_config() == lr.get_config()
    opt = keras.optimizers.deserialize(keras.optimizers.serialize(keras.optimizers.SGD(lr)))
    assert opt.get_config()["learning_rate"]["config"] == lr.get_config()
    for kwargs, name in (({"peak_learning_rate": 0.0}, "peak_learning_rate"), ({"warmup_steps": -1}, "warmup_steps"),
                         ({"decay": "exp"}, "decay"), ({"final_learning_rate": 0.5}, "final_learning_rate"),
                         ({"decay_steps": 2.5}, "decay_steps")):
        args = {"peak_learning_rate": 0.1, "warmup_steps": 10, "stable_steps": 20, "decay_steps": 30, **kwargs}
        with pytest.raises(ValueError, match=name):
            schedules.WarmupStableDecay(**args)


@pytest.mark.parametrize("decay", theory.WSD_DECAYS)
def test_wsd_twin_is_exact_on_the_numpy_oracle(decay):
    """SGD with WSD and weight decay vs EquivalentSchedule(WarmupStableDecay(...)) without it, on the
    numpy oracle's scale-invariant network (float64, ε = 0), the schedule read as a float64 model reads it."""
    steps, lam, gamma = 120, 5e-3, 0.9
    with precision("float64"):
        base = schedules.WarmupStableDecay(0.2, 10, 60, 50, decay, final_learning_rate=0.0)
        twin = schedules.EquivalentSchedule(base, lam, gamma, total_steps=steps)
    lrs = _wsd_oracle(range(steps), 0.2, 10, 60, 50, decay, 0.0)
    np.testing.assert_allclose(twin.base_learning_rates, lrs, rtol=1e-14, atol=1e-17)
    wd_run = toy.train(twin.base_learning_rates, gamma, weight_decay=lam)
    distance = toy.discrepancy(wd_run, toy.train(twin.learning_rates(np.arange(steps)), twin.momentum))
    assert distance <= 1e-12, distance  # measured: 5.4e-16
    assert toy.discrepancy(wd_run, toy.train(lrs, gamma)) > 0.1  # the decay matters


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a float64 fit (JAX needs x64; torch reduces in float32)")
def test_wsd_twin_in_a_float64_fit():
    (x, y), _ = data.load_digits(num_train=320)
    x = x.astype("float64")

    def run(optimizer):
        keras.utils.set_random_seed(1)
        model = models.bn_convnet(bn_epsilon=1e-30)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rec = callbacks.FunctionRecorder(x[:64])
        model.fit(x, y, batch_size=64, epochs=20, shuffle=False, verbose=0, callbacks=[rec])
        return rec.outputs

    with precision("float64"):
        wsd = schedules.WarmupStableDecay(0.2, 10, 50, 40, "1-sqrt", final_learning_rate=0.0)
        wd_run = run(optimizers.SGD(wsd, momentum=0.9, weight_decay=3e-3))
        twin = schedules.EquivalentSchedule(wsd, 3e-3, 0.9, total_steps=100)
        distance = callbacks.max_relative_difference(wd_run, run(optimizers.SGD(twin, momentum=twin.momentum)))
    assert distance <= 1e-12, distance


# ----------------------------------------------------------------- corrected decay on the group
def _bn_model(epsilon=1e-3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, use_bias=False, name="c1"),
        keras.layers.BatchNormalization(epsilon=epsilon, name="bn1"), keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, use_bias=False, name="c2"),
        keras.layers.BatchNormalization(epsilon=epsilon, name="bn2"), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="head")])


def test_corrected_decay_on_the_invariant_group_only():
    with precision("float64"):
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, use_bias=False, name="d1")(inp)
        h = keras.layers.BatchNormalization(epsilon=1e-9, center=False, scale=False)(h)
        model = keras.Model(inp, keras.layers.Dense(3, name="head")(h))
        assert [v.path for v in invariance.invariant_group(model)] == ["d1/kernel"]
        lam, eta0, total = 0.01, 0.1, 100
        sched = keras.optimizers.schedules.CosineDecay(eta0, total)
        opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(sched), lam, lr_exponent=2, model=model)
        opt.build(model.trainable_variables)
        kernels = {v.path: v for v in model.trainable_variables if len(v.shape) == 2}
        assert all(v.dtype == "float64" for v in kernels.values())
        for t in (30, 70):
            opt.inner_optimizer.iterations.assign(t)
            before = {p: np.array(v.numpy()) for p, v in kernels.items()}
            eta = float(ops.convert_to_numpy(opt.inner_optimizer.learning_rate))  # η_t as the optimizer sees it
            assert eta == pytest.approx(eta0 * 0.5 * (1 + math.cos(math.pi * t / total)), rel=1e-6)
            opt.apply([ops.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
            removed = {p: 1 - kernels[p].numpy() / before[p] for p in kernels}
            ref = opt.reference_learning_rate  # η_0 as the optimizer saw it at step 0 (CosineDecay's float32)
            assert ref == pytest.approx(eta0, rel=1e-7)
            np.testing.assert_allclose(removed["d1/kernel"], lam * (eta / ref) ** 2, rtol=1e-12)
            np.testing.assert_allclose(removed["head/kernel"], lam * eta / ref, rtol=1e-12)
        config = opt.get_config()
        assert config["invariant_group"] == ["d1/kernel"]
        clone = optimizers.ReparamWeightDecay.from_config(config)
        assert clone.get_config()["invariant_group"] == ["d1/kernel"] and clone.lr_exponent == 2.0
        assert clone.lr_exponent_for(model.get_layer("head").kernel) == 1.0
    with pytest.raises(ValueError, match="lr_exponent=1"):
        optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 0.01, lr_exponent=1, model=model)


# ----------------------------------------------------------------- the ε alarm
def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 4, n)


def _fit(optimizer, epochs=3, epsilon=1e-3, **monitor_kwargs):
    x, y = _data()
    model = _bn_model(epsilon)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = callbacks.ScaleMonitor(every_n_steps=4, **monitor_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[monitor])
    alarms = [w for w in caught if issubclass(w.category, callbacks.EpsilonDominanceWarning)]
    return model, monitor, alarms


def test_epsilon_alarm_fires_on_the_collapse():
    x, _ = _data()
    opt = optimizers.ReparamWeightDecay(keras.optimizers.Adam(1e-3), weight_decay=0.056)
    model, monitor, alarms = _fit(opt, epsilon_data=x[:64])
    paths = [str(w.message).split(":")[0] for w in alarms]
    assert len(paths) == len(set(paths)) >= 1  # once per layer
    message = str(alarms[0].message)
    assert "epsilon" in message and "Renormalize" in message and "smaller epsilon" in message
    steps, ratio = monitor.series(paths[0], "prenorm_variance_over_epsilon")
    _, worst = monitor.series(paths[0], "prenorm_variance_over_epsilon_worst")
    assert ratio[0] > 100 > ratio[-1] and np.all(worst <= ratio) and steps[-1] == 24
    assert issubclass(callbacks.EpsilonDominanceWarning, UserWarning)
    assert model.history.history[f"scale/{paths[0]}/prenorm_variance_over_epsilon"][-1] == ratio[-1]


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_epsilon_alarm_is_silent_on_ordinary_training(kind):
    x, _ = _data()
    opt = (optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4) if kind == "sgd"
           else keras.optimizers.AdamW())
    _, monitor, alarms = _fit(opt, epsilon_data=x[:64])
    assert alarms == []
    assert all(min(m for m, _ in r["layers"].values()) > 100 for r in monitor.normalization_records)
    _, monitor, alarms = _fit(opt.__class__.from_config(opt.get_config()))  # BatchNorm's moving variance
    assert alarms == [] and len(monitor.normalization_records) == 4


def test_epsilon_margin_matches_numpy_variances():
    x = np.random.default_rng(1).normal(size=(32, 6, 6, 3)).astype("float32")
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="c"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.GroupNormalization(groups=2, epsilon=1e-4, name="gn"),
                              keras.layers.Flatten(), keras.layers.LayerNormalization(epsilon=1e-5, name="ln")])
    z = np.asarray(model.get_layer("c")(x), np.float64)
    zb = (z - z.mean(axis=(0, 1, 2))) / np.sqrt(z.var(axis=(0, 1, 2)) + 1e-3)  # training mode: batch statistics
    g = zb.reshape(32, -1, 2, 2)  # GroupNorm: 2 groups of 2 channels, γ = 1, β = 0 at init
    zg = ((g - g.mean(axis=(1, 3), keepdims=True)) / np.sqrt(g.var(axis=(1, 3), keepdims=True) + 1e-4)).reshape(32, -1)
    got = invariance.epsilon_margin(model, x)
    worst = invariance.epsilon_margin(model, x, reduce="min")
    var_bn = z.reshape(-1, 4).var(axis=0) / 1e-3
    var_gn = np.stack([zb[..., :2].reshape(32, -1).var(axis=1), zb[..., 2:].reshape(32, -1).var(axis=1)]) / 1e-4
    var_ln = zg.var(axis=1) / 1e-5
    for path, ref in (("bn", var_bn), ("gn", var_gn), ("ln", var_ln)):
        (key,) = [k for k in got if k.endswith("/" + path)]
        np.testing.assert_allclose(got[key], ref.mean(), rtol=2e-4)
        np.testing.assert_allclose(worst[key], ref.min(), rtol=2e-4)
    with pytest.raises(ValueError, match="reduce"):
        invariance.epsilon_margin(model, x, reduce="max")


# ----------------------------------------------------------------- time to equilibrium, measured
def test_monitor_measures_the_time_back_to_equilibrium():
    x, y = _data(512)
    model = _bn_model(epsilon=1e-8)
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([np.int64(95)], [np.float64(0.2), np.float64(0.05)])
    model.compile(optimizers.ReparamWeightDecay(keras.optimizers.SGD(lr, momentum=0.9), weight_decay=0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = model.get_layer("c2").kernel.path
    monitor = callbacks.ScaleMonitor(every_n_steps=1, variables=[path])
    model.fit(x, y, batch_size=32, epochs=12, verbose=0, callbacks=[monitor])
    result = monitor.equilibration(path)
    (event,) = result["events"]
    assert event["step"] == 96 and event["learning_rate"] == pytest.approx(0.05)
    assert event["predicted_steps"] == pytest.approx(1 / 0.02)  # λ_new per step: 1/λ_new
    assert event["measured_steps"] is not None and 0 <= event["measured_steps"] < 96
    (phase,) = result["decay_phases"]
    assert phase["clock"] < 1 and "before one" in phase["note"]
