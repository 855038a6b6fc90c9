"""`keras_explr.tuning.hp_optimizer`: the LR/WD search space of a user's own build_model(hp)."""

import os

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from keras_explr import optimizers as kx  # noqa: E402
from keras_explr.tuning import hp_optimizer  # noqa: E402


def _decay_of_one_step(opt, value=2.0):
    """The fraction one apply() with a zero gradient removes from a 1×1 kernel (numpy truth: 1 − θ₁/θ₀)."""
    w = keras.Variable(np.full((1, 1), value, dtype="float32"))
    opt.apply([keras.ops.zeros((1, 1))], [w])
    return 1.0 - float(keras.ops.convert_to_numpy(w)[0, 0]) / value


@pytest.mark.parametrize("optimizer, parameterization, decay, cls, inner_cls", [
    ("sgd", "new", "decoupled", kx.ReparamWeightDecay, keras.optimizers.SGD),
    ("sgd", "new", "coupled", kx.ReparamWeightDecay, kx.SGD),
    ("sgd", "old", "decoupled", keras.optimizers.SGD, None),
    ("sgd", "old", "coupled", kx.SGD, None),
    ("adam", "new", "decoupled", kx.ReparamWeightDecay, keras.optimizers.Adam),
    ("adam", "old", "decoupled", keras.optimizers.AdamW, None),
    (keras.optimizers.Lion, "new", "decoupled", kx.ReparamWeightDecay, keras.optimizers.Lion),
    (keras.optimizers.Lion, "old", "decoupled", keras.optimizers.Lion, None),
])
def test_search_space_and_decay_per_step(optimizer, parameterization, decay, cls, inner_cls):
    hp = keras_tuner.HyperParameters()
    opt = hp_optimizer(hp, optimizer, learning_rate=(1e-3, 1e-1), weight_decay=(1e-4, 1e-2),
                       parameterization=parameterization, decay=decay)
    assert type(opt) is cls
    if inner_cls is not None:
        assert type(opt.inner_optimizer) is inner_cls
    wd_name = "weight_decay_new" if parameterization == "new" else "weight_decay"
    assert sorted(hp.values) == sorted(["learning_rate", wd_name])
    for name, (lo, hi) in (("learning_rate", (1e-3, 1e-1)), (wd_name, (1e-4, 1e-2))):
        p = hp.get_config()["space"][[s["config"]["name"] for s in hp.get_config()["space"]].index(name)]
        assert p["config"]["sampling"] == "log" and (p["config"]["min_value"], p["config"]["max_value"]) == (lo, hi)
    eta, lam = hp.values["learning_rate"], hp.values[wd_name]
    # Fresh optimizer with the same draws: one step on a zero gradient removes λ_new (new) or η·λ (old).
    # (Lion moves by η·sign(0) = 0, Adam by 0/(√0 + ε) = 0, so only the decay acts.)
    fixed = hp_optimizer(keras_tuner.HyperParameters(), optimizer, learning_rate=eta, weight_decay=lam,
                         parameterization=parameterization, decay=decay)
    expected = lam if parameterization == "new" else eta * lam
    assert _decay_of_one_step(fixed) == pytest.approx(expected, rel=2e-3, abs=2e-7)


def test_fixed_values_are_not_hyperparameters_and_inner_kwargs_pass_through():
    hp = keras_tuner.HyperParameters()
    opt = hp_optimizer(hp, "sgd", learning_rate=0.1, weight_decay=(1e-5, 1e-3), momentum=0.9, nesterov=True)
    assert list(hp.values) == ["weight_decay_new"]
    assert opt.inner_optimizer.momentum == 0.9 and opt.inner_optimizer.nesterov
    assert float(opt.inner_optimizer.learning_rate) == pytest.approx(0.1)


def test_exclude_vectors_leaves_biases_undecayed_in_both_parameterizations():
    for parameterization in ("new", "old"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
        opt = hp_optimizer(keras_tuner.HyperParameters(), "sgd", learning_rate=0.5, weight_decay=0.01,
                           parameterization=parameterization)
        before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
        opt.apply([keras.ops.zeros(v.shape) for v in model.trainable_variables], model.trainable_variables)
        after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        for v, b, a in zip(model.trainable_variables, before, after):
            if len(v.shape) < 2:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, 0.99 * b if parameterization == "new" else 0.995 * b, rtol=1e-6)


def test_adamw_and_reparam_adam_are_the_same_runs_at_a_constant_lr():
    """old AdamW(η, λ) ≡ ReparamWeightDecay(Adam(η), λ_new = ηλ): the coordinates change, not the run."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 5)).astype("float32"), rng.standard_normal((64, 1)).astype("float32")
    eta, lam = 3e-2, 0.5
    finals = []
    for parameterization, wd in (("old", lam), ("new", eta * lam)):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False)])
        model.compile(hp_optimizer(keras_tuner.HyperParameters(), "adam", learning_rate=eta, weight_decay=wd,
                                   parameterization=parameterization), "mse")
        model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
        finals.append(keras.ops.convert_to_numpy(model.trainable_variables[0]))
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)
    keras.utils.set_random_seed(1)  # control: AdamW with λ_new as its λ is another run
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.AdamW(eta, weight_decay=eta * lam), "mse")
    model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(model.trainable_variables[0]) - finals[0]).max() > 1e-3


def _build_model(hp):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    model.compile(hp_optimizer(hp, "sgd", learning_rate=(1e-2, 0.5), weight_decay=(1e-5, 1e-3), momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_random_search_saves_and_reloads(tmp_path):
    """A real KerasTuner RandomSearch of 3 trials; a reloaded tuner and a saved model keep the optimizer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5)
    kw = dict(objective="val_accuracy", max_trials=3, seed=0, directory=str(tmp_path), project_name="p")
    tuner = keras_tuner.RandomSearch(_build_model, overwrite=True, **kw)
    tuner.search(x, y, validation_split=0.25, epochs=2, batch_size=16, verbose=0)
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) == 3
    draws = {(t.hyperparameters.values["learning_rate"], t.hyperparameters.values["weight_decay_new"])
             for t in trials}
    assert len(draws) == 3 and all(1e-2 <= a <= 0.5 and 1e-5 <= b <= 1e-3 for a, b in draws)
    best = tuner.get_best_hyperparameters(1)[0].values

    again = keras_tuner.RandomSearch(_build_model, overwrite=False, **kw)  # reloads the finished trials
    assert again.get_best_hyperparameters(1)[0].values == best
    model = again.hypermodel.build(again.get_best_hyperparameters(1)[0])
    assert float(model.optimizer.weight_decay) == pytest.approx(best["weight_decay_new"])
    assert float(model.optimizer.inner_optimizer.learning_rate) == pytest.approx(best["learning_rate"], rel=1e-6)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = os.path.join(str(tmp_path), "best.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is kx.ReparamWeightDecay
    assert float(loaded.optimizer.weight_decay) == pytest.approx(best["weight_decay_new"])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(hp={"learning_rate": 0.1}), TypeError, "`hp`"),
    (dict(optimizer="rmsprop"), ValueError, "`optimizer`"),
    (dict(optimizer=keras.optimizers.SGD(0.1)), TypeError, "`optimizer`"),
    (dict(optimizer=int), TypeError, "`optimizer`"),
    (dict(optimizer=keras.optimizers.AdamW), ValueError, "`optimizer`"),
    (dict(optimizer=kx.ReparamWeightDecay), ValueError, "`optimizer`"),
    (dict(learning_rate=(0.1, 0.01)), ValueError, "`learning_rate`"),
    (dict(learning_rate=(0.0, 0.1)), ValueError, "`learning_rate`"),
    (dict(learning_rate="fast"), ValueError, "`learning_rate`"),
    (dict(learning_rate=(1e-3, 1e-2, 1e-1)), ValueError, "`learning_rate`"),
    (dict(learning_rate=-1.0), ValueError, "`learning_rate`"),
    (dict(weight_decay=(1e-3, 2.0)), ValueError, "`weight_decay`"),
    (dict(weight_decay=1.5), ValueError, "`weight_decay`"),
    (dict(weight_decay=(float("nan"), 1e-3)), ValueError, "`weight_decay`"),
    (dict(parameterization="keras"), ValueError, "`parameterization`"),
    (dict(decay="l2"), ValueError, "`decay`"),
    (dict(optimizer="adam", decay="coupled"), ValueError, "`decay`"),
    (dict(exclude_vectors="yes"), TypeError, "`exclude_vectors`"),
    (dict(mode="coupled"), TypeError, "`mode`"),
])
def test_bad_input_names_the_argument_and_registers_nothing(kwargs, error, match):
    hp = keras_tuner.HyperParameters()
    args = dict(hp=hp)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        hp_optimizer(**args)
    assert hp.values == {}
