"""The Keras schedules: values against theory, every backend, graph/jit, config, bad input."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_explr import schedules, theory

PAPER = (0.1, 5e-4, 0.9)


def _all_schedules():
    base = keras.optimizers.schedules.PiecewiseConstantDecay([50], [0.1, 0.02])
    return [
        schedules.ExpLR(0.1, 1.001),
        schedules.ExpLR.from_weight_decay(*PAPER),
        schedules.ExpLR.from_weight_decay(*PAPER, exact=False, steps_per_epoch=391),
        schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, convention="keras", exact=False),
        schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, convention="keras",
                                          weight_decay_mode="decoupled"),
        schedules.TEXP([400, 900], [0.1, 0.01, 0.001], 5e-4, 0.9),
        schedules.TEXP([400, 900], [0.1, 0.01, 0.001], 5e-4, 0.9, exact=False),
        schedules.EquivalentSchedule(base, 5e-4, 0.9, total_steps=100),
    ]


def _values(s, steps, dtype):
    return np.array([float(ops.convert_to_numpy(s(ops.convert_to_tensor(i, dtype)))) for i in steps])


@pytest.mark.backends
@pytest.mark.parametrize("step_dtype", ["int32", "int64"])
def test_eager_values_match_theory(step_dtype):
    if step_dtype == "int64" and keras.backend.backend() == "jax":
        pytest.skip("JAX without x64 has no int64")
    steps = [0, 1, 2, 7, 99, 100, 101, 250, 400, 401, 402, 650, 900, 901, 1200, 5000, 77777]
    # float32 output here (the default floatx); the LR is computed in float64
    # where the backend can (TF, torch), in float32 log space otherwise.
    rtol = 1.5e-7 if keras.backend.backend() != "jax" else 2e-5  # float32 output rounding; float32 log space on JAX
    for s in _all_schedules():
        np.testing.assert_allclose(_values(s, steps, step_dtype), s.learning_rates(steps),
                                   rtol=rtol, err_msg=s.name)


@pytest.mark.backends
def test_float64_values_are_float64_exact(float64):
    if keras.backend.backend() == "jax":
        pytest.skip("JAX computes in float64 only with JAX_ENABLE_X64")
    steps = [0, 1, 5, 99, 100, 101, 401, 402, 901, 5000, 77777]
    for s in _all_schedules():
        got = _values(s, steps, "int64")
        np.testing.assert_allclose(got, s.learning_rates(steps), rtol=1e-13, err_msg=s.name)
        assert keras.backend.standardize_dtype(s(5).dtype) == "float64"


def test_log_space_beats_float32_pow():
    # docs/math.md#numerical-range: pow(float32(α), −2t−1) is off by 2.6e-3 at t = 78 199; we are not.
    s = schedules.ExpLR.from_weight_decay(*PAPER, exact=False)
    t = 78199
    truth = theory.explr_closed_form(*PAPER, [t])[0]
    got = float(ops.convert_to_numpy(s(ops.convert_to_tensor(t, "int64"))))
    assert abs(got / truth - 1) < 1e-6
    naive = np.float32(0.1) * np.float32(theory.growth_root(*PAPER)) ** np.float32(-2 * t - 1)
    assert abs(naive / truth - 1) > 1e-3


def test_graph_and_jit_compile_match_eager():
    import tensorflow as tf

    for s in _all_schedules():
        eager = [float(s(tf.constant(i, tf.int64))) for i in (0, 401, 5000)]
        graph = tf.function(lambda t: s(t))
        xla = tf.function(lambda t: s(t), jit_compile=True)
        for i, e in zip((0, 401, 5000), eager):
            assert float(graph(tf.constant(i, tf.int64))) == pytest.approx(e, rel=1e-7)
            assert float(xla(tf.constant(i, tf.int64))) == pytest.approx(e, rel=1e-6)


def test_no_retracing_per_step():
    import tensorflow as tf

    s = schedules.TEXP([10, 20], [0.1, 0.01, 0.001], 5e-4, 0.9)
    f = tf.function(lambda t: s(t))
    for i in range(30):
        f(tf.constant(i, tf.int64))
    assert f.experimental_get_tracing_count() == 1


@pytest.mark.backends
def test_saturates_instead_of_overflowing():
    s = schedules.ExpLR.from_weight_decay(*PAPER, exact=False)
    assert s.float32_horizon == 90591
    before = float(ops.convert_to_numpy(s(90590)))
    for step in (90591, 90600, 10**6, 2**31 - 1):
        v = float(ops.convert_to_numpy(s(step)))
        assert math.isfinite(v) and v >= before
        assert v <= float(np.finfo(np.float32).max)


def test_total_steps_past_the_horizon_is_rejected():
    schedules.ExpLR.from_weight_decay(*PAPER, exact=False, total_steps=90591)
    with pytest.raises(ValueError, match=r"step 90591.*total_steps <= 90591.*renormalize"):
        schedules.ExpLR.from_weight_decay(*PAPER, exact=False, total_steps=90592)
    with pytest.raises(ValueError, match="step 90600"):
        schedules.ExpLR.from_weight_decay(*PAPER, total_steps=200_000)
    with pytest.raises(ValueError, match="`total_steps` must be an integer >= 1"):
        schedules.ExpLR(0.1, 1.001, total_steps=0)


def test_paper_growth_and_attributes():
    s = schedules.ExpLR.from_weight_decay(*PAPER, exact=False, steps_per_epoch=391)
    assert round(s.growth_per_epoch, 6) == 1.481233
    assert s.momentum == 0.9
    assert s.initial_learning_rate == pytest.approx(0.1 / theory.growth_root(*PAPER), rel=1e-14)
    exact = schedules.ExpLR.from_weight_decay(*PAPER)
    assert exact.initial_learning_rate == pytest.approx(0.1 / (1 - 0.1 * 5e-4), rel=1e-14)
    k = schedules.ExpLR.from_weight_decay(*PAPER, convention="keras", exact=False)
    assert k.momentum == pytest.approx(0.9 / theory.growth_root(*PAPER) ** 2, rel=1e-15)
    assert k.momentum == pytest.approx(0.9009048, abs=1e-7)


def test_keras_convention_exact_raises_and_names_alternatives():
    with pytest.raises(ValueError, match=r"convention='paper'.*exact=False.*decoupled"):
        schedules.ExpLR.from_weight_decay(*PAPER, convention="keras")


@pytest.mark.backends
def test_config_round_trips():
    for s in _all_schedules():
        config = s.get_config()
        clone = type(s).from_config(config)
        assert clone.get_config() == config
        steps = [0, 3, 401, 2000]
        np.testing.assert_array_equal(clone.learning_rates(steps), s.learning_rates(steps))
        again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
        assert type(again) is type(s) and again.get_config() == config
        assert again.momentum == s.momentum


def test_equivalent_schedule_reads_what_the_optimizer_sees():
    base = keras.optimizers.schedules.CosineDecay(0.01, 90, warmup_target=0.1, warmup_steps=10)
    twin = schedules.EquivalentSchedule(base, 5e-4, 0.9, total_steps=100)
    seen = np.array([float(ops.convert_to_numpy(base(i))) for i in range(100)])
    np.testing.assert_array_equal(twin.base_learning_rates, seen)  # float32 values, exactly
    np.testing.assert_allclose(twin.learning_rates(np.arange(100)),
                               theory.exact_conversion(seen, 5e-4, 0.9).learning_rate, rtol=1e-12)
    # A plain sequence of LRs and a constant work too.
    seq = schedules.EquivalentSchedule(list(seen), 5e-4, 0.9, total_steps=100)
    np.testing.assert_array_equal(seq.learning_rates(np.arange(100)), twin.learning_rates(np.arange(100)))
    const = schedules.EquivalentSchedule(0.1, 5e-4, 0.9, total_steps=50)
    np.testing.assert_allclose(const.learning_rates(np.arange(200)),
                               schedules.ExpLR.from_weight_decay(*PAPER).learning_rates(np.arange(200)),
                               rtol=1e-12)


# ---------------------------------------------------------------- bad input: one test per case
@pytest.mark.parametrize("lr", [-0.1, 0.0, math.nan, math.inf])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number > 0"):
        schedules.ExpLR.from_weight_decay(lr, 5e-4, 0.9)


@pytest.mark.parametrize("lr", [-0.1, 0.0, math.nan, math.inf])
def test_bad_initial_learning_rate(lr):
    with pytest.raises(ValueError, match=r"`initial_learning_rate` must be a finite number > 0"):
        schedules.ExpLR(lr, 1.001)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_bad_growth_rate(rate):
    with pytest.raises(ValueError, match=r"`growth_rate` must be a finite number > 0"):
        schedules.ExpLR(0.1, rate)


@pytest.mark.parametrize("wd", [-1e-4, math.nan, math.inf])
def test_bad_weight_decay(wd):
    with pytest.raises(ValueError, match=r"`weight_decay` must be a finite number >= 0"):
        schedules.ExpLR.from_weight_decay(0.1, wd, 0.9)
    with pytest.raises(ValueError, match=r"`weight_decay` must be a finite number >= 0"):
        schedules.TEXP([10], [0.1, 0.01], wd, 0.9)


@pytest.mark.parametrize("mom", [-0.5, 1.0, 2.0])
def test_bad_momentum(mom):
    with pytest.raises(ValueError, match=r"`momentum` must be in the range \[0, 1\)"):
        schedules.ExpLR.from_weight_decay(0.1, 5e-4, mom)
    with pytest.raises(ValueError, match=r"`momentum` must be in the range \[0, 1\)"):
        schedules.TEXP([10], [0.1, 0.01], 5e-4, mom)


def test_beyond_the_real_root_bound():
    with pytest.raises(ValueError, match=r"<= \(1 - sqrt\(momentum\)\)\*\*2 = 0.00263"):
        schedules.ExpLR.from_weight_decay(1.0, 3e-3, 0.9)
    with pytest.raises(ValueError, match=r"values\[1\].*\(1 - sqrt\(momentum\)\)\*\*2"):
        schedules.TEXP([10], [0.1, 1.0], 3e-3, 0.9)


@pytest.mark.parametrize("b", [[10, 5], [10, 10], [2.5], ["a"], [-3]])
def test_bad_boundaries(b):
    with pytest.raises(ValueError, match=r"`boundaries` must be"):
        schedules.TEXP(b, [0.1] * (len(b) + 1), 5e-4, 0.9)


@pytest.mark.parametrize("n_values", [1, 3])
def test_values_length(n_values):
    with pytest.raises(ValueError, match=r"len\(boundaries\) \+ 1"):
        schedules.TEXP([10], [0.1] * n_values, 5e-4, 0.9)


def test_bad_convention():
    with pytest.raises(ValueError, match="`convention` must be one of"):
        schedules.ExpLR.from_weight_decay(*PAPER, convention="torch")
    with pytest.raises(ValueError, match="`weight_decay_mode` must be"):
        schedules.ExpLR.from_weight_decay(*PAPER, weight_decay_mode="both")


def test_zero_lr_warmup_is_accepted_and_bad_sequences_are_rejected():
    # A warm-up from 0 has an exact twin (tests/test_schedules_warmup.py); the twin stands still at step 0.
    base = keras.optimizers.schedules.CosineDecay(0.0, 90, warmup_target=0.1, warmup_steps=10)
    twin = schedules.EquivalentSchedule(base, 5e-4, 0.9, total_steps=100)
    assert float(twin.learning_rates(0)) == 0.0 and float(ops.convert_to_numpy(twin(0))) == 0.0
    assert twin.momentum == 0.9 and np.all(twin.learning_rates(np.arange(1, 200)) > 0)
    with pytest.raises(ValueError, match=r"at step 1 it gives -0.1"):
        schedules.EquivalentSchedule([0.1, -0.1], 5e-4, 0.9, total_steps=2)
    with pytest.raises(ValueError, match=r"exactly total_steps=10 entries"):
        schedules.EquivalentSchedule([0.1] * 9, 5e-4, 0.9, total_steps=10)
