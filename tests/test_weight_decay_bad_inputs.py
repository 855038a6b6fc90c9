"""Bad inputs to the weight-decay conventions (theory) and to ReparamWeightDecay's
lr_exponent / schedule-valued weight_decay / reference_learning_rate: a ValueError
naming the argument, raised before any state changes."""

import math

import keras
import numpy as np
import pytest

from keras_explr import optimizers, theory

GOOD = dict(weight_decay=5e-4, learning_rate=0.1, source="torch_adamw", target="keras")


@pytest.mark.parametrize("override,name", [
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"weight_decay": math.nan}, "weight_decay"),
    ({"weight_decay": "5e-4"}, "weight_decay"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"learning_rate": math.inf}, "learning_rate"),
    ({"learning_rate": []}, "learning_rate"),
    ({"learning_rate": [[0.1, 0.2]]}, "learning_rate"),
    ({"learning_rate": [0.1, -0.1]}, "learning_rate"),
    ({"learning_rate": [0.1, math.nan]}, "learning_rate"),
    ({"learning_rate": ["a"]}, "learning_rate"),
    ({"source": "pytorch"}, "source"),
    ({"target": "adamw"}, "target"),
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.1}, "momentum"),
    ({"reference_learning_rate": 0.0}, "reference_learning_rate"),
    ({"reference_learning_rate": -1.0}, "reference_learning_rate"),
    ({"approximate": "yes"}, "approximate"),
])
def test_convert_weight_decay_bad_inputs(override, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        theory.convert_weight_decay(**{**GOOD, **override})


def test_composer_and_corrected_need_a_positive_reference():
    for target in ("composer", "corrected"):
        with pytest.raises(ValueError, match="reference_learning_rate"):
            theory.convert_weight_decay(5e-4, [0.0, 0.0], "keras", target)


@pytest.mark.parametrize("kwargs,name", [
    ({"convention": "torch"}, "convention"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ({"steps_per_epoch": 3.5}, "steps_per_epoch"),
    ({"momentum": 1.5}, "momentum"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_timescale_bad_inputs(kwargs, name):
    args = {"weight_decay": 5e-4, "learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        theory.weight_decay_timescale(**args)


@pytest.mark.parametrize("p", [-0.1, 2.5, math.nan, "1", [1.0]])
def test_scheduled_weight_decay_exponent_range(p):
    with pytest.raises(ValueError, match="`lr_exponent` must be in the range \\[0, 2\\]"):
        theory.check_lr_exponent(p)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr_exponent": -1}, r"`lr_exponent` must be in the range \[0, 2\]"),
    ({"lr_exponent": 3}, r"`lr_exponent` must be in the range \[0, 2\]"),
    ({"lr_exponent": "two"}, "`lr_exponent`"),
    ({"reference_learning_rate": 0.0}, "`reference_learning_rate` must be a finite number > 0"),
    ({"reference_learning_rate": -0.1}, "`reference_learning_rate` must be a finite number > 0"),
    ({"reference_learning_rate": math.inf}, "`reference_learning_rate`"),
    ({"weight_decay": "0.1"}, "`weight_decay`"),
    ({"weight_decay": 1.0}, r"range \[0, 1\), or a LearningRateSchedule"),
])
def test_reparam_bad_inputs_change_nothing(kwargs, match):
    inner = keras.optimizers.SGD(0.1, clipnorm=1.0)
    args = {"weight_decay": 1e-3, "mode": "coupled", **kwargs}
    with pytest.raises(ValueError, match=match):
        optimizers.ReparamWeightDecay(inner, **args)
    assert inner.clipnorm == 1.0  # coupled mode takes clipping over only once valid


@pytest.mark.parametrize("p", [1, 2, 0.5])
def test_zero_learning_rate_at_step_zero_names_reference_learning_rate(p):
    warmup = keras.optimizers.schedules.PolynomialDecay(0.0, 10, 0.1, power=1.0)  # 0 → 0.1
    with pytest.raises(ValueError,
                       match="`reference_learning_rate`.*initial learning rate \\(at step 0\\), which is 0.0"):
        optimizers.ReparamWeightDecay(keras.optimizers.SGD(warmup), 1e-3, lr_exponent=p)
    with pytest.raises(ValueError, match="`reference_learning_rate`"):
        optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.0), 1e-3, lr_exponent=1)
    # With p = 0 or an explicit reference it is fine.
    optimizers.ReparamWeightDecay(keras.optimizers.SGD(warmup), 1e-3, lr_exponent=0)
    opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(warmup), 1e-3, lr_exponent=p,
                                        reference_learning_rate=0.1)
    w = keras.Variable(np.full((2, 2), 2.0, "float32"))
    opt.apply([keras.ops.zeros((2, 2))], [w])  # η_0 = 0: (0/0.1)^p = 0, nothing decays
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), 2.0)


@pytest.mark.parametrize("flag", [True, False])
def test_removed_follow_schedule_names_lr_exponent(flag):
    inner = keras.optimizers.SGD(0.1, clipnorm=1.0)
    with pytest.raises(TypeError, match=r"`follow_schedule=True` is `lr_exponent=1`.*`lr_exponent=0`"):
        optimizers.ReparamWeightDecay(inner, 1e-3, mode="coupled", follow_schedule=flag)
    assert inner.clipnorm == 1.0
