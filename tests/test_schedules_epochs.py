"""Epochs: TEXP(steps_per_epoch=S) reads boundaries as epochs (epoch e ↦ step e·S − 1)."""

import keras
import numpy as np
import pytest

from keras_explr import schedules, theory

PAPER = (0.1, 5e-4, 0.9)


def test_epoch_boundaries_are_the_step_boundaries_of_piecewise_constant_decay():
    S = 391
    by_epoch = schedules.TEXP([80, 120], [0.1, 0.01, 0.001], 5e-4, 0.9, steps_per_epoch=S)
    by_step = schedules.TEXP([80 * S - 1, 120 * S - 1], [0.1, 0.01, 0.001], 5e-4, 0.9)
    assert by_epoch.boundaries == [80, 120] and by_epoch.step_boundaries == by_step.boundaries == [31279, 46919]
    steps = np.arange(0, 60000, 7)
    np.testing.assert_array_equal(by_epoch.learning_rates(steps), by_step.learning_rates(steps))
    # What the boundaries mean: values[0] for the first 80 epochs (steps 0..80·S−1), values[1] from epoch 80.
    base = keras.optimizers.schedules.PiecewiseConstantDecay(by_epoch.step_boundaries, [0.1, 0.01, 0.001])
    at = [float(keras.ops.convert_to_numpy(base(s))) for s in (80 * S - 1, 80 * S, 120 * S - 1, 120 * S)]
    np.testing.assert_allclose(at, [0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_epoch_texp_is_the_twin_of_epoch_step_decay():
    S, b, v = 10, [3, 7], [np.float64(x) for x in (0.2, 0.05, 0.01)]
    texp = schedules.TEXP(b, v, 3e-3, 0.9, steps_per_epoch=S)
    lrs = np.repeat(v, [3 * S, 4 * S, 3 * S])  # 3 epochs at 0.2, 4 at 0.05, the rest at 0.01
    conv = theory.exact_conversion(lrs, 3e-3, 0.9)
    np.testing.assert_allclose(texp.learning_rates(np.arange(lrs.size)), conv.learning_rate, rtol=1e-12)


def test_config_round_trip_keeps_the_unit():
    s = schedules.TEXP([2, 5], [0.1, 0.01, 0.001], 5e-4, 0.9, steps_per_epoch=100, total_steps=900)
    cfg = s.get_config()
    assert cfg["boundaries"] == [2, 5] and cfg["steps_per_epoch"] == 100 and cfg["total_steps"] == 900
    again = schedules.TEXP.from_config(cfg)
    np.testing.assert_array_equal(again.learning_rates(np.arange(900)), s.learning_rates(np.arange(900)))
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert restored.step_boundaries == [199, 499]


def test_explr_steps_per_epoch_only_names_the_epoch():
    S = 391
    closed = schedules.ExpLR.from_weight_decay(*PAPER, exact=False, steps_per_epoch=S)
    assert closed.growth_per_epoch == pytest.approx(theory.growth_per_epoch(*PAPER, S), rel=1e-12)
    assert closed.growth_per_epoch == pytest.approx(1.481233, abs=1e-6)
    exact = schedules.ExpLR.from_weight_decay(*PAPER, steps_per_epoch=S)
    np.testing.assert_array_equal(exact.learning_rates(np.arange(2000)),
                                  schedules.ExpLR.from_weight_decay(*PAPER).learning_rates(np.arange(2000)))
    lr = exact.learning_rates([10 * S, 11 * S])  # asymptotically the same growth per epoch
    assert lr[1] / lr[0] == pytest.approx(exact.growth_per_epoch, rel=1e-10)


def test_theory_epoch_boundaries():
    assert theory.epoch_boundaries([1, 2, 3], 1) == [0, 1, 2]
    assert theory.epoch_boundaries([], 5) == []
    assert theory.epoch_boundaries(np.array([80, 120]), np.int64(391)) == [31279, 46919]
