"""ScaleMonitor: statistics through the optimizer, checked against theory (docs/math.md#monitor-quantities)."""

import os

import keras
import numpy as np
import pytest

import keras_explr
import keras_explr.plots
from keras_explr import optimizers as K
from keras_explr.callbacks import ScaleMonitor
from keras_explr.data import load_digits
from keras_explr.models import bn_convnet
from tests.conftest import precision

(X, Y), _ = load_digits()
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train(optimizer, epochs, monitor=None, model=None, **fit_kwargs):
    keras.utils.set_random_seed(0)
    model = model or bn_convnet(scale_invariant=True)
    model.compile(optimizer=optimizer, loss=LOSS)
    cbs = [monitor] if monitor is not None else []
    history = model.fit(X, Y, batch_size=32, epochs=epochs, verbose=0, callbacks=cbs, **fit_kwargs)
    return model, history


def rms_late(monitor, path):
    """RMS angular update over the records past clock 0.5, and the prediction."""
    _, angles = monitor.series(path, "angular_update")
    _, predicted = monitor.series(path, "predicted_angular_update")
    _, clock = monitor.series(path, "clock")
    late = clock >= 0.5
    assert late.sum() >= 50
    return float(np.sqrt(np.mean(angles[late] ** 2))), float(predicted[-1])


# Measured (TF, 1,720 steps, digits, clock 0.86): paper SGD 0.987/0.977 of the
# prediction, wrapper around Keras SGD 1.071/1.018, wrapper (coupled) around
# paper SGD 0.994/0.982, Keras SGD(weight_decay) 1.060/1.015, AdamW 0.954/1.056.
@pytest.mark.parametrize("make, rule", [
    (lambda: K.SGD(0.1, momentum=0.9, weight_decay=5e-3), "sgd_coupled"),
    (lambda: K.ReparamWeightDecay(keras.optimizers.SGD(0.1, momentum=0.9), 5e-4), "sgd_decoupled"),
    (lambda: K.ReparamWeightDecay(K.SGD(0.1, momentum=0.9), 5e-4, mode="coupled"), "sgd_coupled"),
], ids=["paper_sgd", "reparam_keras_sgd", "reparam_coupled_paper_sgd"])
def test_equilibrium_angular_update_matches_theory(make, rule):
    monitor = ScaleMonitor(every_n_steps=5)
    train(make(), epochs=40, monitor=monitor)
    expected = keras_explr.theory.equilibrium_angular_update(rule, 5e-4, momentum=0.9)
    assert monitor.monitored_paths == ["conv0/kernel", "conv1/kernel"]
    for path in monitor.monitored_paths:
        measured, predicted = rms_late(monitor, path)
        assert predicted == pytest.approx(expected, rel=1e-7)  # η is read back as float32
        assert abs(measured / predicted - 1) < 0.15, (path, measured, predicted)


def test_equilibrium_depends_on_lambda_new_only():
    """Under ReparamWeightDecay the prediction does not move with η."""
    preds = []
    for lr in (0.05, 0.2):
        monitor = ScaleMonitor(every_n_steps=20)
        train(K.ReparamWeightDecay(keras.optimizers.SGD(lr, momentum=0.9), 5e-4), 1, monitor)
        preds.append(monitor.series("conv0/kernel", "predicted_angular_update")[1][-1])
    assert preds[0] == preds[1]


def test_grad_cosine_vanishes_on_invariant_kernels_not_on_head():
    with precision("float64"):
        keras.utils.set_random_seed(0)
        model = bn_convnet(scale_invariant=False, bn_epsilon=1e-12)
        monitor = ScaleMonitor(every_n_steps=5, variables=["conv0/kernel", "conv1/kernel", "head/kernel"])
        train(keras.optimizers.SGD(0.05, momentum=0.9), 2, monitor, model=model)
    for path in ("conv0/kernel", "conv1/kernel"):
        cos = monitor.series(path, "grad_cosine")[1]
        assert np.max(np.abs(cos)) < 1e-6, (path, np.max(np.abs(cos)))
    head = np.abs(monitor.series("head/kernel", "grad_cosine")[1])
    assert np.median(head) > 1e-3


def test_statistics_are_the_definitions():
    """One monitored step recomputed from the weights before and after it."""

    class Snap(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.w = []

        def on_train_batch_begin(self, batch, logs=None):
            self.w.append(keras.ops.convert_to_numpy(self.model.get_layer("conv0").kernel).astype(np.float64))

    snap = Snap()
    monitor = ScaleMonitor(every_n_steps=3)
    keras.utils.set_random_seed(0)
    model = bn_convnet(scale_invariant=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-2), loss=LOSS)
    model.fit(X[:320], Y[:320], batch_size=32, epochs=1, verbose=0, shuffle=False, callbacks=[monitor, snap])
    steps, norms = monitor.series("conv0/kernel", "norm")
    np.testing.assert_array_equal(steps, [0, 3, 6, 9])
    _, rel = monitor.series("conv0/kernel", "relative_update")
    _, ang = monitor.series("conv0/kernel", "angular_update")
    for i, s in enumerate(steps[:-1]):
        w0, w1 = snap.w[s], snap.w[s + 1]
        assert norms[i] == pytest.approx(np.linalg.norm(w0), rel=1e-5)
        assert rel[i] == pytest.approx(np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rel=1e-4)
        cos = np.sum(w0 * w1) / np.linalg.norm(w0) / np.linalg.norm(w1)
        assert ang[i] == pytest.approx(np.arccos(min(cos, 1.0)), rel=2e-2)
    _, eff = monitor.series("conv0/kernel", "effective_learning_rate")
    assert eff[0] == pytest.approx(0.1 / norms[0] ** 2, rel=1e-6)
    _, clock = monitor.series("conv0/kernel", "clock")
    assert clock[-1] == pytest.approx(9 * 0.1 * 1e-2, rel=1e-6)


@pytest.mark.backends
def test_monitor_on_every_backend_leaves_optimizer_state_alone(tmp_path):
    opt = keras.optimizers.AdamW(1e-2, weight_decay=0.05)
    monitor = ScaleMonitor(every_n_steps=10, per_neuron=True)
    model, history = train(opt, 2, monitor)
    n_vars = len(opt.variables)
    assert len(monitor.records) == -(-2 * int(np.ceil(len(X) / 32)) // 10)
    rec = monitor.records[-1]["variables"]["conv1/kernel"]
    assert rec["per_neuron"]["norm"].shape == (16,)
    np.testing.assert_allclose(np.sqrt(np.sum(rec["per_neuron"]["norm"] ** 2)), rec["norm"], rtol=1e-5)
    assert rec["predicted_angular_update"] == pytest.approx(
        keras_explr.theory.equilibrium_angular_update("adamw", float(rec["learning_rate"]) * 0.05), rel=1e-6)
    assert rec["predicted_norm"] > 0
    key = "scale/conv1/kernel/angular_update"
    assert len(history.history[key]) == len(history.history["loss"]) == 2
    # No optimizer variables added (checkpoints unchanged), the hook is gone after fit,
    # and a later fit without the monitor records nothing.
    assert "apply" not in vars(opt) and "apply" not in vars(keras_explr.optimizers._wrapper.unscaled(opt))
    count = len(monitor.records)
    model.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    assert len(monitor.records) == count and len(opt.variables) == n_vars
    path = keras_explr.plots.scale_monitor(str(tmp_path / "scale.png"), monitor)
    assert os.path.getsize(path) > 10_000


def test_tensorboard_and_wrapped_optimizers(tmp_path):
    opt = keras.optimizers.LossScaleOptimizer(K.ReparamWeightDecay(keras.optimizers.Lion(1e-4), 1e-3))
    monitor = ScaleMonitor(every_n_steps=4, log_dir=tmp_path / "tb")
    train(opt, 1, monitor)
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))
    rec = monitor.records[-1]["variables"]["conv0/kernel"]
    assert rec["predicted_angular_update"] == pytest.approx(
        keras_explr.theory.equilibrium_angular_update("lion", 1e-3, beta_1=0.9, beta_2=0.99))


def test_monitor_rejects_bad_input():
    with pytest.raises(ValueError, match="every_n_steps"):
        ScaleMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="variables"):
        ScaleMonitor(variables="conv0/kernel")
    model = bn_convnet()
    model.compile(optimizer="sgd", loss=LOSS)
    with pytest.raises(ValueError, match="not a trainable variable"):
        model.fit(X[:32], Y[:32], verbose=0, callbacks=[ScaleMonitor(variables=["nope/kernel"])])
    monitor = ScaleMonitor()
    with pytest.raises(ValueError, match="not a monitored variable"):
        monitor.series("conv0/kernel", "norm")
    with pytest.raises(ValueError, match="no records"):
        keras_explr.plots.scale_monitor("/tmp/never.png", monitor)
