"""get_config/from_config round trips for every public class, by every path Keras
(and KerasTuner) uses: `cls.from_config`, `keras.saving.serialize_keras_object` /
`deserialize_keras_object`, `keras.optimizers.schedules.serialize/deserialize`,
`keras.optimizers.serialize/deserialize`, and a `.keras` file for the layer.

A round trip passes when the copy has the same class and config *and* the same
behaviour: the same schedule values (bit for bit) at several steps, the same
variables after several optimizer steps, the same layer outputs.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_explr import layers, optimizers, probe, schedules

STEPS = [0, 1, 2, 7, 50, 51, 121, 1000, 10 ** 5, 10 ** 8]
PAPER = (0.1, 5e-4, 0.9)


def _schedules():
    cosine = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=60, warmup_target=0.1, warmup_steps=20)
    return {
        "ExpLR": lambda: schedules.ExpLR(0.05, 1.002, total_steps=1000, name="mine"),
        "ExpLR.from_weight_decay": lambda: schedules.ExpLR.from_weight_decay(*PAPER, steps_per_epoch=391),
        "ExpLR.from_weight_decay closed": lambda: schedules.ExpLR.from_weight_decay(
            0.2, 1e-3, 0.5, exact=False, total_steps=5000),
        "ExpLR.from_weight_decay keras": lambda: schedules.ExpLR.from_weight_decay(
            *PAPER, exact=False, convention="keras"),
        "ExpLR.from_weight_decay decoupled": lambda: schedules.ExpLR.from_weight_decay(
            *PAPER, convention="keras", weight_decay_mode="decoupled"),
        "TEXP": lambda: schedules.TEXP([50, 120], [0.1, 0.01, 0.001], 5e-4, 0.9),
        "TEXP closed": lambda: schedules.TEXP([50, 120], [0.1, 0.01, 0.001], 5e-4, 0.9, exact=False,
                                              total_steps=2000, name="t"),
        "EquivalentSchedule float": lambda: schedules.EquivalentSchedule(0.1, 5e-4, 0.9, total_steps=30),
        "EquivalentSchedule list": lambda: schedules.EquivalentSchedule(
            list(np.linspace(0.1, 0.01, 40)), 5e-4, 0.9, total_steps=40),
        "EquivalentSchedule CosineDecay": lambda: schedules.EquivalentSchedule(cosine, 5e-4, 0.9, total_steps=80),
        "ScaledSchedule ExpLR": lambda: probe.ScaledSchedule(schedules.ExpLR.from_weight_decay(*PAPER), 4.0),
        "ScaledSchedule TEXP": lambda: probe.ScaledSchedule(
            schedules.TEXP([50], [0.1, 0.01], 5e-4, 0.9), 0.25),
        "ScaledSchedule Keras": lambda: probe.ScaledSchedule(
            keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5), 3.0),
    }


SCHEDULE_PATHS = {
    "from_config": lambda s: type(s).from_config(s.get_config()),
    "serialize_keras_object": lambda s: keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(s)),
    "schedules.serialize": lambda s: keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(s)),
}


def _values(s):
    return [float(ops.convert_to_numpy(s(ops.convert_to_tensor(t, "int64")))) for t in STEPS]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.backends) if p == "serialize_keras_object"
                                  else p for p in sorted(SCHEDULE_PATHS)])  # one path on every backend
@pytest.mark.parametrize("name", sorted(_schedules()))
def test_schedule_round_trip(name, path):
    original = _schedules()[name]()
    copy = SCHEDULE_PATHS[path](original)
    assert type(copy) is type(original)
    assert copy is not original
    assert copy.get_config() == original.get_config()
    assert _values(copy) == _values(original)  # bit for bit
    for attr in ("momentum", "total_steps", "float32_horizon", "growth_per_epoch", "name"):
        assert getattr(copy, attr, None) == getattr(original, attr, None), attr
    # The copy is itself serializable to the same config (a fixed point).
    assert SCHEDULE_PATHS[path](copy).get_config() == original.get_config()


def test_schedule_round_trip_is_not_vacuous():
    """Negative control: a different hyperparameter changes both the config and the values."""
    a = schedules.TEXP([50, 120], [0.1, 0.01, 0.001], 5e-4, 0.9)
    config = a.get_config()
    config["weight_decay"] = 4e-4
    b = schedules.TEXP.from_config(config)
    assert b.get_config() != a.get_config() and _values(b) != _values(a)


# ---------------------------------------------------------------- optimizers
def _variables():
    rng = np.random.default_rng(0)
    return [keras.Variable(rng.standard_normal((4, 3)), name="g"),
            keras.Variable(rng.standard_normal((3,)), name="r"),
            keras.Variable(rng.standard_normal((3, 2)), name="h")]


def _optimizers():
    def explr():
        return schedules.ExpLR.from_weight_decay(0.1, 1e-3, 0.9)

    return {
        "SGD": lambda: optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3, name="sgd"),
        "SGD nesterov clipnorm": lambda: optimizers.SGD(0.05, momentum=0.5, nesterov=True, clipnorm=1.0),
        "SGD ExpLR": lambda: optimizers.SGD(explr(), momentum=0.9),
        "SGD TEXP": lambda: optimizers.SGD(schedules.TEXP([2], [0.1, 0.01], 1e-3, 0.9), momentum=0.9),
        "ReparamWeightDecay keras SGD": lambda: optimizers.ReparamWeightDecay(
            keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=0.01),
        "ReparamWeightDecay coupled": lambda: optimizers.ReparamWeightDecay(
            optimizers.SGD(0.1, momentum=0.9), weight_decay=0.01, mode="coupled", exclude_vectors=False),
        "ReparamWeightDecay Adam follow": lambda: optimizers.ReparamWeightDecay(
            keras.optimizers.Adam(keras.optimizers.schedules.PiecewiseConstantDecay([2], [1e-2, 1e-3])),
            weight_decay=0.02, lr_exponent=1, name="rwd"),
        "Renormalize every": lambda: optimizers.Renormalize(
            optimizers.SGD(explr(), momentum=0.9), every_n_steps=2),
        "Renormalize max_norm group": lambda: optimizers.Renormalize(
            keras.optimizers.SGD(0.5, momentum=0.9), max_norm=3.0, target_norm=2.0,
            variables=None),
        "Partitioned": lambda: optimizers.Partitioned(
            optimizers.SGD(explr(), momentum=0.9),
            optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3), group=["g", "h"]),
    }


OPTIMIZER_PATHS = {
    "from_config": lambda o: type(o).from_config(o.get_config()),
    "serialize_keras_object": lambda o: keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(o)),
    "optimizers.serialize": lambda o: keras.optimizers.deserialize(keras.optimizers.serialize(o)),
}


def _train(opt, steps=5):
    variables = _variables()
    rng = np.random.default_rng(1)
    for _ in range(steps):
        grads = [ops.convert_to_tensor(rng.standard_normal(tuple(v.shape)), v.dtype) for v in variables]
        opt.apply(grads, variables)
    return [ops.convert_to_numpy(v) for v in variables]


def _deep_config(opt):
    """The config with nested optimizers expanded (the comparison key)."""
    return keras.saving.serialize_keras_object(opt)["config"]


@pytest.mark.parametrize("path", sorted(OPTIMIZER_PATHS))
@pytest.mark.parametrize("name", sorted(_optimizers()))
def test_optimizer_round_trip(name, path):
    original = _optimizers()[name]()
    copy = OPTIMIZER_PATHS[path](original)
    assert type(copy) is type(original) and copy is not original
    assert _deep_config(copy) == _deep_config(original)
    before = _deep_config(original)
    want, got = _train(original), _train(copy)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)
    assert not all(np.array_equal(w, v) for w, v in zip(want, [ops.convert_to_numpy(v) for v in _variables()]))
    # After training (Renormalize now records its group by path) both still agree, and
    # the trained copy round-trips again to the same config.
    after = _deep_config(original)
    assert _deep_config(copy) == after
    assert {k: v for k, v in after.items() if k != "group"} == {
        k: v for k, v in before.items() if k != "group"}
    assert _deep_config(OPTIMIZER_PATHS[path](copy)) == after


def test_optimizer_round_trip_is_not_vacuous():
    a = optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3)
    config = a.get_config()
    config["weight_decay"] = 2e-3
    b = optimizers.SGD.from_config(config)
    assert any(not np.array_equal(x, y) for x, y in zip(_train(a), _train(b)))


# ---------------------------------------------------------------- ScaleProbe
LAYER_PATHS = {
    "from_config": lambda p: layers.ScaleProbe.from_config(p.get_config()),
    "serialize_keras_object": lambda p: keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(p)),
    "layers.serialize": lambda p: keras.layers.deserialize(keras.layers.serialize(p)),
}


@pytest.mark.backends
@pytest.mark.parametrize("path", sorted(LAYER_PATHS))
@pytest.mark.parametrize("inner", ["dense", "batchnorm"])
def test_scale_probe_round_trip(inner, path):
    x = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
    wrapped = (keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.01)) if inner == "dense"
               else keras.layers.BatchNormalization())
    original = layers.ScaleProbe(wrapped, scale=8.0, name="probe")
    original(x)
    copy = LAYER_PATHS[path](original)
    assert type(copy) is layers.ScaleProbe and copy.scale == 8.0
    assert copy.get_config() == original.get_config()
    copy(x)
    copy.set_weights(original.get_weights())
    np.testing.assert_array_equal(ops.convert_to_numpy(copy(x, training=True)),
                                  ops.convert_to_numpy(original(x, training=True)))
    np.testing.assert_array_equal(sum(ops.convert_to_numpy(v).sum() for v in copy.losses) if copy.losses else 0,
                                  sum(ops.convert_to_numpy(v).sum() for v in original.losses)
                                  if original.losses else 0)
    # Stored variables are k·w: the unscaled values are what the layer computes with.
    for i in range(len(copy._stored)):
        np.testing.assert_array_equal(ops.convert_to_numpy(copy.unscaled(i)),
                                      ops.convert_to_numpy(original.unscaled(i)))


def test_scale_probe_model_file_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    h = layers.ScaleProbe(keras.layers.Dense(4, use_bias=False), scale=4.0)(inputs)
    h = layers.ScaleProbe(keras.layers.BatchNormalization(), scale=0.5)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = np.random.default_rng(1).standard_normal((6, 3)).astype("float32")
    model.compile(optimizers.SGD(schedules.ExpLR.from_weight_decay(*PAPER), momentum=0.9), "mse")
    model.fit(x, np.ones((6, 2), "float32"), epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x, training=False)),
                                  ops.convert_to_numpy(model(x, training=False)))
    assert type(loaded.optimizer) is optimizers.SGD
    assert type(loaded.optimizer._learning_rate) is schedules.ExpLR
    assert loaded.optimizer._learning_rate.get_config() == model.optimizer._learning_rate.get_config()
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == 1
