"""Keras's stock `MultiOptimizer` as a first-class citizen: the ExpLR twin built from it
(group → SGD(ExpLR), rest → the original rule) reproduces the weight-decay run exactly
(float64, TensorFlow) and equals `Partitioned.explr_twin`; ScaleMonitor reads it; the
probe and Renormalize refuse it with a message that says what to do."""

import re

import keras
import numpy as np
import pytest

from keras_explr import optimizers, probe, schedules
from keras_explr.callbacks import ScaleMonitor
from tests.conftest import precision
from tests.factories import invariant_mlp

pytestmark = pytest.mark.skipif(not hasattr(keras.optimizers, "MultiOptimizer"),
                                reason="keras.optimizers.MultiOptimizer is new in Keras 3.15")

LR, WD, MOMENTUM = 0.1, 5e-3, 0.9


def _data(dtype):
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 16)).astype(dtype), rng.integers(0, 4, 64)


def _model():
    return invariant_mlp(trainable_rest=True, widths=(12,), inputs=16, classes=4, activation="tanh")


def multi_twin(model, group):
    """The recipe of docs/guides/weight-decay.md: a MultiOptimizer whose map sends the
    invariant group to SGD(ExpLR) and everything else to the original rule."""
    sched = schedules.ExpLR.from_weight_decay(LR, WD, MOMENTUM)
    rest = optimizers.SGD(LR, momentum=MOMENTUM, weight_decay=WD, name="rest")
    pattern = "|".join(re.escape(p) for p in group)
    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        rest, {pattern: optimizers.SGD(sched, momentum=sched.momentum, name="group")}))


def _run(make, steps_epochs=3, callbacks=()):
    model = _model()
    model.compile(optimizer=make(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(keras.config.floatx())
    model.fit(x, y, batch_size=16, epochs=steps_epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    # (batch statistics: the moving averages mix the scales of different steps)
    return model, keras.ops.convert_to_numpy(model(x, training=True))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="float64 end to end: TensorFlow")
def test_multi_optimizer_explr_twin_is_exact_float64():
    with precision("float64"):
        _, wd_run = _run(lambda m: optimizers.SGD(LR, momentum=MOMENTUM, weight_decay=WD))
        group = optimizers.Partitioned.explr_twin(_model(), LR, WD, MOMENTUM).group
        assert group == ["hidden0/kernel"]
        _, twin = _run(lambda m: multi_twin(m, group))
        _, partitioned = _run(lambda m: optimizers.Partitioned.explr_twin(m, LR, WD, MOMENTUM))
        _, control = _run(lambda m: optimizers.SGD(LR, momentum=MOMENTUM))  # no decay at all
    scale = np.abs(wd_run).max()
    assert np.abs(twin - wd_run).max() / scale < 1e-9
    np.testing.assert_allclose(twin, partitioned, rtol=0, atol=1e-12 * scale)  # (the same rule; ~1e-16 apart)
    assert np.abs(control - wd_run).max() / scale > 1e-4  # (the comparison can fail)


@pytest.mark.backends
def test_scale_monitor_reads_a_multi_optimizer():
    group = ["hidden0/kernel"]
    monitor = ScaleMonitor(every_n_steps=1, variables=["hidden0/kernel", "head/kernel"])
    model, _ = _run(lambda m: multi_twin(m, group), steps_epochs=1, callbacks=[monitor])
    _, lrs = monitor.series("hidden0/kernel", "learning_rate")
    sched = schedules.ExpLR.from_weight_decay(LR, WD, MOMENTUM)
    np.testing.assert_allclose(lrs, [float(sched(t)) for t in range(len(lrs))], rtol=1e-6)  # the group's ExpLR
    _, head = monitor.series("head/kernel", "learning_rate")
    np.testing.assert_allclose(head, LR, rtol=1e-6)  # the rest's constant LR
    assert len(lrs) == 4


@pytest.mark.backends
def test_probe_and_renormalize_refuse_a_multi_optimizer_clearly():
    opt = multi_twin(_model(), ["hidden0/kernel"])
    with pytest.raises(ValueError, match="MultiOptimizer.*Partitioned"):
        probe.equivalent_optimizer(opt, 2.0)
    with pytest.raises(ValueError, match="delegates to other optimizers"):
        optimizers.Renormalize(opt, every_n_steps=10)


@pytest.mark.backends
def test_reparam_weight_decay_around_a_multi_optimizer():
    """Decoupled, λ constant: every decayed variable loses exactly λ per zero-gradient step,
    whichever sub-optimizer updates it; the coupled mode (one LR) is refused."""
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    other = keras.Variable(np.full((2, 2), 2.0, "float32"), name="other")
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.Adam(1e-2), {"kernel": keras.optimizers.SGD(0.1, momentum=0.9)}))
    opt = optimizers.ReparamWeightDecay(multi, 0.01)
    opt.apply([keras.ops.zeros((2, 2)), keras.ops.zeros((2, 2))], [kernel, other])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel), np.float32(0.99))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(other), np.float32(2.0) * np.float32(0.99))
    with pytest.raises(ValueError, match="several optimizers"):
        optimizers.ReparamWeightDecay(keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
            keras.optimizers.Adam(1e-2), {"kernel": keras.optimizers.SGD(0.1)})), 0.01, mode="coupled")


@pytest.mark.backends
@pytest.mark.parametrize("factor", [None, 4.0])
def test_a_wrapper_inside_a_multi_optimizer_unscales_once(factor):
    """MultiOptimizer sets its `loss_scale_factor` on each sub-optimizer: a wrapper passes it on
    to the optimizer that divides it out, so both variables take the same unscaled step."""
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    other = keras.Variable(np.ones((2, 2), "float32"), name="other")
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(keras.optimizers.SGD(0.1), {
        "kernel": optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1), 0.0)}), loss_scale_factor=factor)
    g = keras.ops.ones((2, 2)) * (factor or 1.0)
    multi.apply([g, g], [kernel, other])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel), np.float32(0.9))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(other), np.float32(0.9))
